"""Live profile and segment updates per second with 100 active segments, the
p99 time to evaluate one event, and, in the same run, the time to compute the
same memberships from scratch in SQL.

Simulated shop traffic goes through the pipeline into a store once (not
timed), keeping the batches the store took (events with resolved persons and
sessions, merges, person rows). Then, on the same batches:

- profiles: ``LiveProfiles.record`` alone;
- segments: ``SegmentEngine.on_batch`` alone (100 segments from the five
  templates with varied parameters, the due queue, time-based changes);
- both, as the pipeline will run them; then with the state file the
  server keeps (``segments.sqlite3``), committed once a second as the
  server does, and, for comparison, after every batch;
- per event: the last events fed one at a time to warmed profiles and engine
  (a one-row batch each), giving p50 / p99 / max;
- peer: ``members_sql`` for the 100 segments on the store (DuckDB, and
  ClickHouse with --backends), and a fresh engine's ``backfill`` (state
  loaded with SQL, everyone evaluated).

The memberships of both ways are checked to agree. Targets: >= 50,000
events/s and p99 < 1 ms.

    python bench/segments.py                       # 3,000 users, 30 days, DuckDB
    python bench/segments.py --users 10000 --backends duckdb,clickhouse
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from footfall.pipeline import Pipeline
from footfall.profiles import LiveProfiles
from footfall.segments import SegmentDefinition, SegmentEngine, SegmentSet, StateFile, run_members
from footfall.segments.live import COMMIT_EVERY
from footfall.segments.templates import (
    active_recent,
    cart_abandoners,
    engaged_high_frequency,
    high_intent_browsers,
    lapsed,
)
from footfall.simulate import Simulation, SimulationSpec
from footfall.store.clickhouse_backend import ClickHouseBackend
from footfall.store.database import Database
from footfall.store.duckdb_backend import DuckDBBackend

Batch = tuple[pa.Table, list[tuple[str, str]], pa.Table]


def hundred_segments() -> list[SegmentDefinition]:
    """20 variants of each template: windows, counts and waits varied."""
    windows = ["1d", "2d", "3d", "5d", "7d", "10d", "14d", "21d", "30d", "12h"]
    waits = ["1h", "2h", "6h", "12h", "24h", "36h", "48h", "3h", "18h", "30h"]
    definitions = []
    for variant, (window, wait) in enumerate(itertools.islice(itertools.cycle(zip(windows, waits, strict=True)), 20)):
        count = 2 + variant % 5
        definitions += [
            active_recent(window, segment_id=f"active_recent_{variant}"),
            lapsed(window, segment_id=f"lapsed_{variant}"),
            engaged_high_frequency(count, window, segment_id=f"engaged_high_frequency_{variant}"),
            cart_abandoners(wait, window, segment_id=f"cart_abandoners_{variant}"),
            high_intent_browsers(count, window, segment_id=f"high_intent_browsers_{variant}"),
        ]
    return definitions


class Recorder:
    """The pipeline's profiles hook, keeping every stored batch."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def load(self) -> Recorder:
        return self

    def record(self, events: pa.Table, persons: pa.Table, merges: Sequence[tuple[str, str]]) -> None:
        self.batches.append((events, list(merges), persons))


def open_store(kind: str, workdir: Path) -> Database:
    if kind == "duckdb":
        database = Database(DuckDBBackend(workdir / "store.duckdb"))
    else:
        database = Database(ClickHouseBackend(f"chdb://{workdir / 'chdb'}", database=f"bench_{uuid.uuid4().hex[:8]}"))
    database.migrate()
    return database


def clock_of(batches: list[Batch]) -> list[datetime]:
    """Each batch's time: its latest event (never going back)."""
    times, latest = [], None
    for events, _, _ in batches:
        newest = max(events["timestamp"].to_pylist())
        latest = newest if latest is None else max(latest, newest)
        times.append(latest)
    return times


def run(
    database: Database, batches: list[Batch], segments: SegmentSet, *, profiles: bool, engine: bool, state: Path | None,
    commit_every: float = 0.0,
) -> tuple[float, float]:
    """Wall and CPU seconds to feed every batch (CPU time is the steadier
    figure on a shared machine)."""
    book = LiveProfiles(database)
    live = SegmentEngine(
        segments, engagement=database.config.engagement, state=StateFile(state) if state else None, commit_every=commit_every
    )
    times = clock_of(batches)
    started, cpu = time.perf_counter(), time.process_time()
    for (events, merges, persons), now in zip(batches, times, strict=True):
        if profiles:
            book.record(events, persons, merges)
        if engine:
            live.on_batch(events, merges, persons, now=now)
    return time.perf_counter() - started, time.process_time() - cpu


def per_event(
    database: Database, batches: list[Batch], segments: SegmentSet, events: int
) -> tuple[list[float], list[float], list[float], float]:
    """Warm profiles and engine on all but the last ``events`` events, then feed
    those one at a time: the time of each profile update and of each segment
    evaluation (wall and CPU), and the total time of the scheduler's re-evaluations as the
    clock moved from one event to the next (``advance``, not timed per event)."""
    book = LiveProfiles(database)
    live = SegmentEngine(segments, engagement=database.config.engagement)
    times = clock_of(batches)
    total = sum(batch[0].num_rows for batch in batches)
    warm_until = total - events
    seen = 0
    profile_times, segment_times, segment_cpu = [], [], []
    scheduler = 0.0
    for (table, merges, persons), now in zip(batches, times, strict=True):
        if seen + table.num_rows <= warm_until:
            book.record(table, persons, merges)
            live.on_batch(table, merges, persons, now=now)
            seen += table.num_rows
            continue
        for row in range(table.num_rows):
            one = table.slice(row, 1)
            who = persons.filter(pc.equal(persons["person_id"], one["person_id"][0]))
            merged = merges if row == 0 else []
            moment = datetime.fromtimestamp(
                max(live.now_ms or 0, int(one["timestamp"][0].as_py().timestamp() * 1000)) / 1000, UTC
            )
            started = time.perf_counter()
            live.advance(moment)
            scheduler += time.perf_counter() - started
            started = time.perf_counter()
            book.record(one, who, merged)
            profiled, cpu = time.perf_counter(), time.process_time()
            live.on_batch(one, merged, who, now=moment)
            segment_cpu.append(time.process_time() - cpu)
            profile_times.append(profiled - started)
            segment_times.append(time.perf_counter() - profiled)
    return profile_times, segment_times, segment_cpu, scheduler


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--batch-rows", type=int, default=1000)
    parser.add_argument("--latency-events", type=int, default=5000)
    parser.add_argument("--backends", default="duckdb")
    args = parser.parse_args()

    segments = SegmentSet(hundred_segments())
    workdir = Path(tempfile.mkdtemp(prefix="footfall-bench-segments-"))
    try:
        for kind in args.backends.split(","):
            database = open_store(kind, workdir)
            recorder = Recorder()
            pipeline = Pipeline(database, profiles=recorder)  # type: ignore[arg-type]
            simulation = Simulation(SimulationSpec(users=args.users, days=args.days, seed=11))
            for table in simulation.batches(max_rows=args.batch_rows):
                pipeline.ingest(table)
            batches = recorder.batches
            events = sum(batch[0].num_rows for batch in batches)
            persons = len(database.persons_arrow())
            print(f"\n{kind}: {events:,} events, {persons:,} persons, {len(segments)} segments, batches of {args.batch_rows}")

            for label, profiles, engine, state, every in (
                ("profiles only", True, False, None, 0.0),
                ("segments only", False, True, None, 0.0),
                ("profiles + segments", True, True, None, 0.0),
                ("  + state file, as the server", True, True, workdir / f"{kind}-{uuid.uuid4().hex[:6]}.sqlite3", COMMIT_EVERY),
                ("  + state file, every batch", True, True, workdir / f"{kind}-{uuid.uuid4().hex[:6]}.sqlite3", 0.0),
            ):
                wall, cpu = run(database, batches, segments, profiles=profiles, engine=engine, state=state, commit_every=every)
                print(f"  {label:<34} {events / wall:>10,.0f} events/s   ({wall:.2f} s; by CPU time {events / cpu:,.0f}/s)")

            profile_times, segment_times, segment_cpu, scheduler = per_event(database, batches, segments, args.latency_events)
            both = [first + second for first, second in zip(profile_times, segment_times, strict=True)]
            print(f"  per event, one-row batches ({len(both):,} events):")
            for label, latencies in (
                ("segments", segment_times), ("  by CPU", segment_cpu), ("profiles", profile_times), ("both", both)
            ):
                print(
                    f"    {label:<10} p50 {statistics.median(latencies) * 1e3:.3f} ms   p99 {percentile(latencies, 0.99) * 1e3:.3f} ms"
                    f"   max {max(latencies) * 1e3:.3f} ms"
                )
            print(f"    (the scheduler's re-evaluations as the clock moved meanwhile: {scheduler:.2f} s in all)")

            engine = SegmentEngine(segments, engagement=database.config.engagement)
            times = clock_of(batches)
            for (table, merges, persons_table), now in zip(batches, times, strict=True):
                engine.on_batch(table, merges, persons_table, now=now)
            end = times[-1]
            started = time.perf_counter()
            from_sql = {definition.id: set(run_members(database, definition.condition, end, segments=segments)) for definition in segments}
            sql_seconds = time.perf_counter() - started
            print(f"  peer: members_sql for {len(segments)} segments      {sql_seconds:.2f} s  ({sql_seconds / len(segments) * 1e3:.1f} ms each)")
            started = time.perf_counter()
            fresh = SegmentEngine(segments, engagement=database.config.engagement)
            fresh.backfill(database, end)
            print(f"  peer: backfill (state by SQL, all evaluated) {time.perf_counter() - started:.2f} s")
            assert from_sql == engine.memberships() == fresh.memberships(), "incremental and SQL memberships differ"
            sizes = sorted(len(members) for members in from_sql.values())
            print(f"  memberships agree; segment sizes: min {sizes[0]}, median {sizes[len(sizes) // 2]}, max {sizes[-1]}")
            database.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
