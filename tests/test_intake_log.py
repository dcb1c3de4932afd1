"""The intake log: round trips, recovery from torn tails, group commit, and real crashes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from footfall.errors import FootfallError
from footfall.intake.log import (
    HEADER_BYTES,
    IntakeClosedError,
    IntakeError,
    IntakeLocked,
    IntakeLog,
)


def payload_for(position: int) -> bytes:
    return f"record-{position}|".encode() + bytes([position % 251]) * (position % 97)


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def fill(log: IntakeLog, count: int) -> list[int]:
    return [log.append(payload_for((log.last_position or 0) + 1)) for _ in range(count)]


def test_append_read_round_trip_in_order(tmp_path: Path) -> None:
    with IntakeLog(tmp_path) as log:
        assert log.last_position is None
        assert list(log.read()) == []
        positions = fill(log, 5)
        assert positions == [1, 2, 3, 4, 5]
        assert log.last_position == 5
        records = list(log.read())
        assert [r.position for r in records] == positions
        assert all(r.payload == payload_for(r.position) for r in records)
        assert [r.position for r in log.read(after=2)] == [3, 4, 5]
        assert [r.position for r in log.read(after=1, limit=2)] == [2, 3]
        assert list(log.read(after=5)) == []
        assert log.append(b"") == 6
        assert next(iter(log.read(after=5))).payload == b""


def test_reopen_continues_positions_and_resumes_after_checkpoint(tmp_path: Path) -> None:
    with IntakeLog(tmp_path) as log:
        fill(log, 4)
        log.checkpoint(3)
    with IntakeLog(tmp_path) as log:
        assert log.last_position == 4
        assert log.checkpointed == 3
        assert [r.position for r in log.read(after=log.checkpointed)] == [4]
        assert fill(log, 2) == [5, 6]
        assert [r.payload for r in log.read(after=3)] == [payload_for(p) for p in (4, 5, 6)]
        stats = log.stats()
        assert (stats.last_position, stats.checkpointed, stats.lag) == (6, 3, 3)


def test_checkpoint_rules(tmp_path: Path) -> None:
    with IntakeLog(tmp_path) as log:
        fill(log, 3)
        with pytest.raises(IntakeError, match="last durable record is 3"):
            log.checkpoint(4)
        log.checkpoint(2)
        log.checkpoint(2)  # repeating is harmless
        with pytest.raises(IntakeError, match="backwards from 2 to 1"):
            log.checkpoint(1)
        with pytest.raises(IntakeError, match=">= 1"):
            log.checkpoint(0)
        assert not (tmp_path / "checkpoint.tmp").exists()


def test_segment_rollover_and_truncate_only_behind_checkpoint(tmp_path: Path) -> None:
    record_bytes = HEADER_BYTES + 100
    with IntakeLog(tmp_path, segment_bytes=3 * record_bytes) as log:
        for _ in range(10):
            log.append(b"p" * 100)
        # Three records per segment: 1-3, 4-6, 7-9, 10.
        assert [p.name[:20] for p in segment_files(tmp_path)] == [
            f"{first:020d}" for first in (1, 4, 7, 10)
        ]
        assert log.truncate() == 0  # no checkpoint yet
        log.checkpoint(5)  # segment 4-6 is not finished with
        assert log.truncate() == 1
        assert [p.name[:20] for p in segment_files(tmp_path)] == [
            f"{first:020d}" for first in (4, 7, 10)
        ]
        assert [r.position for r in log.read(after=5)] == [6, 7, 8, 9, 10]
        assert next(iter(log.read())).position == 4
        with pytest.raises(IntakeError, match="deleted by truncate"):
            list(log.read(after=1))
        log.checkpoint(10)
        assert log.truncate() == 2  # never the active segment
        assert log.stats().segments == 1
        assert log.append(b"q") == 11
    with IntakeLog(tmp_path, segment_bytes=3 * record_bytes) as log:
        assert [r.position for r in log.read()] == [10, 11]


def test_payload_larger_than_segment_is_refused(tmp_path: Path) -> None:
    with IntakeLog(tmp_path, segment_bytes=1000) as log:
        with pytest.raises(IntakeError, match="does not fit a segment"):
            log.append(b"x" * 1000)
        assert log.append(b"x" * (1000 - HEADER_BYTES)) == 1


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data + b"\x07" * 5, id="partial-header"),
        pytest.param(lambda data: data + (500).to_bytes(4, "little") + b"\0" * 30, id="short"),
        pytest.param(lambda data: data[:-7], id="cut-payload"),
        pytest.param(lambda data: data[:-20] + b"X" + data[-19:], id="bad-crc"),
    ],
)
def test_torn_tail_is_cut_and_appends_continue(
    tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    with IntakeLog(tmp_path) as log:
        fill(log, 3)
    segment = segment_files(tmp_path)[-1]
    intact = segment.read_bytes()
    with IntakeLog(tmp_path) as log:
        fill(log, 1)  # record 4 is the one we tear (or follow with garbage)
    segment.write_bytes(damage(segment.read_bytes()))
    with IntakeLog(tmp_path) as log:
        survivors = [r.position for r in log.read()]
        assert survivors[:3] == [1, 2, 3]
        next_position = log.append(payload_for(len(survivors) + 1))
        assert next_position == len(survivors) + 1
        assert [r.payload for r in log.read()] == [
            payload_for(p) for p in range(1, next_position + 1)
        ]
    assert segment.read_bytes().startswith(intact)


def test_bad_crc_in_tail_record_is_treated_as_torn(tmp_path: Path) -> None:
    with IntakeLog(tmp_path) as log:
        fill(log, 3)
        log.append(b"z" * 1000)
    segment = segment_files(tmp_path)[-1]
    data = bytearray(segment.read_bytes())
    data[len(data) - 500] ^= 0xFF  # the middle of the last payload
    segment.write_bytes(bytes(data))
    with IntakeLog(tmp_path) as log:
        assert log.last_position == 3
        assert [r.position for r in log.read()] == [1, 2, 3]
        assert log.append(b"again") == 4
    assert segment.stat().st_size == len(data) - 1000 + len(b"again")


def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    threads, per_thread = 16, 200
    positions: list[list[int]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads)
    with IntakeLog(tmp_path) as log:

        def run(index: int) -> None:
            start.wait()
            for sequence in range(per_thread):
                position = log.append(f"{index}:{sequence}".encode())
                positions[index].append(position)

        workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

        everything = [p for ps in positions for p in ps]
        assert sorted(everything) == list(range(1, threads * per_thread + 1))
        assert all(ps == sorted(ps) for ps in positions)
        by_position = {r.position: r.payload for r in log.read()}
        for index, ps in enumerate(positions):
            assert [by_position[p] for p in ps] == [
                f"{index}:{s}".encode() for s in range(per_thread)
            ]
        stats = log.stats()
        assert stats.appends == threads * per_thread
        assert stats.commits < stats.appends / 2, stats


def test_wait_for_wakes_on_append_and_times_out(tmp_path: Path) -> None:
    with IntakeLog(tmp_path) as log:
        assert log.wait_for(0, timeout=0.01) is False
        timer = threading.Timer(0.05, lambda: log.append(b"late"))
        timer.start()
        assert log.wait_for(0, timeout=5) is True
        timer.join()
        assert log.wait_for(1, timeout=0.01) is False


def test_second_open_is_refused_and_closed_log_refuses_work(tmp_path: Path) -> None:
    log = IntakeLog(tmp_path)
    with pytest.raises(IntakeLocked, match="already open"):
        IntakeLog(tmp_path)
    log.close()
    log.close()
    with pytest.raises(IntakeClosedError):
        log.append(b"x")
    with pytest.raises(IntakeClosedError):
        log.read()
    IntakeLog(tmp_path).close()


def test_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(IntakeError, match="cannot open intake log directory") as info:
        IntakeLog(blocker / "log")
    assert isinstance(info.value, FootfallError)


def test_lost_records_behind_checkpoint_never_reuse_positions(tmp_path: Path) -> None:
    # Only possible with fsync=False and a power cut: the checkpoint survived,
    # the records it covers did not. New records must get fresh positions.
    with IntakeLog(tmp_path, fsync=False) as log:
        fill(log, 5)
        log.checkpoint(5)
    for segment in segment_files(tmp_path):
        segment.write_bytes(b"")
    with IntakeLog(tmp_path, fsync=False) as log:
        assert log.last_position == 5
        assert log.append(b"new") == 6
        assert [r.payload for r in log.read(after=log.checkpointed)] == [b"new"]


# -- crashes with a real process ------------------------------------------------

# The child appends from several threads (and checkpoints now and then) and
# prints "position thread sequence" for each acknowledged append. The payload
# is rebuilt from thread and sequence, so the parent can check every byte.
CHILD = r"""
import sys, threading
from pathlib import Path
from footfall.intake.log import IntakeLog

def payload(thread, sequence):
    head = f"{thread}:{sequence}:".encode()
    return head + bytes([sequence % 256]) * ((thread * 7919 + sequence * 104729) % 20000)

log = IntakeLog(Path(sys.argv[1]), segment_bytes=200_000)
run = sys.argv[2]
lock = threading.Lock()

def append_forever(thread):
    sequence = 0
    while True:
        position = log.append(payload(thread, sequence))
        with lock:
            sys.stdout.write(f"{position} {run} {thread} {sequence}\n")
            sys.stdout.flush()
        sequence += 1

def checkpoint_forever():
    import time
    while True:
        time.sleep(0.01)
        last = log.last_position
        if last and last > 3:
            log.checkpoint(max(last - 3, log.checkpointed or 0))

sys.stdout.write("ready\n")
sys.stdout.flush()
for thread in range(4):
    threading.Thread(target=append_forever, args=(thread,), daemon=True).start()
threading.Thread(target=checkpoint_forever, daemon=True).start()
threading.Event().wait()
"""


def expected_child_payload(thread: int, sequence: int) -> bytes:
    head = f"{thread}:{sequence}:".encode()
    return head + bytes([sequence % 256]) * ((thread * 7919 + sequence * 104729) % 20000)


def kill_child_at_random(directory: Path, run: int, rng: random.Random) -> list[str]:
    lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(directory), str(run)],
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        stdout = child.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: lines.extend(stdout))
        reader.start()
        try:
            deadline = time.monotonic() + 30
            while not lines and time.monotonic() < deadline:
                time.sleep(0.01)
            assert lines[:1] == ["ready\n"], "child did not start"
            time.sleep(rng.uniform(0.05, 0.4))
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            reader.join()
    # A line cut by the kill was never a whole acknowledgement.
    return [line for line in lines[1:] if line.endswith("\n")]


def crash_repeatedly(directory: Path, crashes: int, seed: int) -> None:
    rng = random.Random(seed)
    acknowledged: dict[int, tuple[int, int]] = {}
    for run in range(crashes):
        for line in kill_child_at_random(directory, run, rng):
            position, _run, thread, sequence = map(int, line.split())
            assert position not in acknowledged, f"position {position} handed out twice"
            acknowledged[position] = (thread, sequence)
        with IntakeLog(directory, segment_bytes=200_000) as log:
            records = {r.position: r.payload for r in log.read()}
            assert list(records) == list(range(1, len(records) + 1))
            assert log.checkpointed is None or log.checkpointed <= len(records)
            for position, (thread, sequence) in acknowledged.items():
                assert records.get(position) == expected_child_payload(thread, sequence), (
                    f"acknowledged record {position} lost or damaged after crash {run}"
                )
    assert len(acknowledged) > crashes  # the child really did work each time


def test_sigkill_never_loses_acknowledged_records(tmp_path: Path) -> None:
    crash_repeatedly(tmp_path, crashes=3, seed=1)


@pytest.mark.slow
def test_sigkill_many_times(tmp_path: Path) -> None:
    crash_repeatedly(tmp_path, crashes=25, seed=2)
