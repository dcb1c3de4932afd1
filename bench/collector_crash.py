"""Durability under crashes, the long variant of tests/test_crash.py.

Clients send batches (and retry until they get a 200, as SDKs do) while the
server process is killed with SIGKILL at random moments and restarted. At the
end every acknowledged event must be in the store exactly once. Prints the
counts; exits 1 if anything was lost or doubled.

    python bench/collector_crash.py                       # 2,000 batches of 50, 30 kills
    python bench/collector_crash.py --batches 500 --kills 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.crash import run_crash_test  # the shared harness lives with the tests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="footfall-crash-") as directory:
        started = time.perf_counter()
        report = run_crash_test(
            Path(directory) / "data", batches=args.batches, batch_size=args.batch_size,
            kills=args.kills, senders=args.senders, seed=args.seed,
        )
        seconds = time.perf_counter() - started
    print(f"batches sent          {report.batches:,} of {args.batch_size} events ({report.events:,} events)")
    print(f"server kills          {report.kills} of {args.kills} asked (SIGKILL while clients send, then restart)")
    print(f"attempts              {report.attempts:,} ({report.failed_attempts:,} without a 200, retried)")
    print(f"acknowledged batches  {report.acknowledged:,}")
    print(f"stored events         {report.stored_events:,} ({report.distinct_stored:,} distinct)")
    print(f"acknowledged missing  {len(report.missing):,}")
    print(f"elapsed               {seconds:.1f} s")
    print("exactly once: " + ("yes" if report.exactly_once else "NO"))
    sys.exit(0 if report.exactly_once else 1)


if __name__ == "__main__":
    main()
