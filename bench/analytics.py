"""Every analysis on simulated traffic, on DuckDB and on chdb, against ClickHouse's own windowFunnel.

The events are simulated once (``footfall.simulate``; about 18,000 users give
1M events over 30 days, 180,000 users 10M, 1,800,000 users 100M) and written to Parquet. Simulated
events carry neither persons nor sessions, so they go through the pipeline
once, into the DuckDB store; the store's events are then written to Parquet
again and bulk-loaded into chdb (``INSERT ... SELECT FROM file()``), so both
engines hold the same rows. None of that is timed; ``--keep`` keeps it in a
cache directory for the next run.

Then, in the same run, each analysis is timed through its ``run`` function
(best of ``--rounds`` after a warm-up): funnels (ordered, strict, unordered,
and ordered with an exclusion and a breakdown), trends (count, persons, WAU),
stickiness, lifecycle, KPIs, engagement, and retention, paths and heatmaps
when their modules are there. The peer is ClickHouse's ``windowFunnel`` over
the same events for the same 3-step ordered funnel, on chdb; its step counts
must equal ours. It runs after each timed run of our funnels on DuckDB, so
that each ratio compares runs made side by side (a shared machine's load
moves). Funnels skip their event-name check (``known_events_only``), which
is a query of its own.

The figures to quote are the ratio of our ordered funnel on DuckDB (the
embedded default) to windowFunnel on chdb (target: at most 1.0), and the
analyses over 1 s on 10M events (target: none); absolute times move with the
machine.

    python bench/analytics.py                 # 10M events (generating them takes minutes)
    python bench/analytics.py --quick --keep  # 1M events, stores kept for the next run
    python bench/analytics.py --events 100M --rounds 1 --keep  # how it scales (no target)
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from footfall.analytics import engagement, funnels, kpis, trends
from footfall.analytics.common import DateRange
from footfall.analytics.engagement import EngagementSpec
from footfall.analytics.funnels import Exclusion, FunnelSpec, FunnelStep
from footfall.analytics.kpis import KpiSpec
from footfall.analytics.trends import TrendSpec
from footfall.events.record import EVENT_SCHEMA
from footfall.pipeline import Pipeline
from footfall.simulate import Simulation, SimulationSpec
from footfall.store.clickhouse_backend import ClickHouseBackend
from footfall.store.database import Database
from footfall.store.duckdb_backend import DuckDBBackend
from footfall.store.schema import SCHEMA_VERSION, derived_tables

SIZES = {"1M": 18_000, "10M": 180_000, "100M": 1_800_000}  # simulated users for about that many events over DAYS
DAYS = 30
SEED = 11
START = SimulationSpec().start
PERIOD = DateRange(START, START + timedelta(days=DAYS))
BATCH_ROWS = 250_000
SLOW = 1.0  # seconds: the target for every analysis on 10M events

FUNNEL_STEPS = ("view_product", "add_to_cart", "purchase")
FUNNEL_WINDOW = timedelta(hours=1)


# -- the data, prepared once ---------------------------------------------------------


def simulate(users: int, path: Path) -> int:
    simulation = Simulation(SimulationSpec(users=users, days=DAYS, seed=SEED))
    written = 0
    with pq.ParquetWriter(path, EVENT_SCHEMA) as writer:
        for batch in simulation.batches(BATCH_ROWS):
            writer.write_table(batch)
            written += batch.num_rows
    return written


def batches(path: Path) -> Iterator[pa.Table]:
    for record_batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS):
        yield pa.Table.from_batches([record_batch])


def stage(label: str, action: Callable[[], object]) -> None:
    started = time.perf_counter()
    action()
    print(f"# {label} in {time.perf_counter() - started:.0f} s", flush=True)


def duckdb_store(raw: Path, path: Path) -> Database:
    """The simulated events through the pipeline (persons, sessions) into a DuckDB store."""
    if not path.exists():
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        database = Database(DuckDBBackend(partial))
        database.migrate()
        pipeline = Pipeline(database)
        stage("pipeline into DuckDB", lambda: [pipeline.ingest(batch) for batch in batches(raw)])
        database.close()
        partial.rename(path)
    return Database(DuckDBBackend(path, read_only=True))


def chdb_store(duckdb: Database, directory: Path, size: str) -> Database:
    """The DuckDB store's events and persons, bulk-loaded into chdb."""
    database = Database(ClickHouseBackend(f"chdb://{directory / 'chdb'}", database=f"bench_{size.lower()}"))
    # A kept store of an older schema has its parts rewritten below, so that
    # they follow the tables' new settings (such as their codecs).
    older = database.schema_version() < SCHEMA_VERSION
    database.migrate()
    stored = int(database.query("SELECT count() FROM events").rows[0][0])
    wanted = int(duckdb.query("SELECT count(*) FROM events").rows[0][0])
    if stored != wanted:
        for table in ("events", "persons"):
            parquet = directory / f"{table}-{size}.parquet"
            if not parquet.exists():
                duckdb.backend.execute(f"COPY {table} TO '{parquet}' (FORMAT parquet)")
            for emptied in (table, *(derived_tables("clickhouse") if table == "events" else ())):
                database.backend.execute(f"TRUNCATE TABLE {emptied}")
            load = f"INSERT INTO {table} SELECT * FROM file('{parquet}', Parquet)"
            stage(f"{table} into chdb", partial(database.backend.execute, load))
    # One part per table, as a store that has had time to merge; and no
    # merge running in the background while we time.
    skip_merged = "" if older else " SETTINGS optimize_skip_merged_partitions = 1"
    for table in ("events", *derived_tables("clickhouse")):
        database.backend.execute(f"OPTIMIZE TABLE {table} FINAL{skip_merged}")
    return database


# -- what is timed ------------------------------------------------------------------------


def funnel(mode: funnels.FunnelMode = "ordered", **options: Any) -> FunnelSpec:
    return FunnelSpec(
        steps=tuple(FunnelStep(name) for name in FUNNEL_STEPS), conversion_window=FUNNEL_WINDOW, mode=mode, **options
    )


def run_funnel(spec: FunnelSpec) -> Callable[[Database], Any]:
    return lambda database: funnels.run(database, spec, known_events_only=False)


def analyses() -> list[tuple[str, Callable[[Database], Any]]]:
    page_views = TrendSpec(date_range=PERIOD, event="page_view")
    chosen: list[tuple[str, Callable[[Database], Any]]] = [
        ("funnel ordered", run_funnel(funnel())),
        ("funnel strict", run_funnel(funnel("strict"))),
        ("funnel unordered", run_funnel(funnel("unordered"))),
        (
            "funnel excl.+breakdown",
            run_funnel(funnel(exclusions=(Exclusion("search", 1, 2),), breakdown="device_type")),
        ),
        ("trend count", lambda db: trends.run(db, page_views)),
        ("trend persons", lambda db: trends.run(db, TrendSpec(date_range=PERIOD, event="page_view", measure="persons"))),
        ("trend wau", lambda db: trends.run(db, TrendSpec(date_range=PERIOD, event="page_view", measure="wau"))),
        ("stickiness", lambda db: trends.stickiness(db, page_views)),
        ("lifecycle", lambda db: trends.lifecycle(db, TrendSpec(date_range=PERIOD, event="page_view", interval="week"))),
        (
            "kpis",
            lambda db: kpis.run(db, KpiSpec(date_range=PERIOD, conversion_event="purchase", features=("search", "add_to_cart"))),
        ),
        ("engagement", lambda db: engagement.run(db, EngagementSpec(as_of=START + timedelta(days=DAYS)))),
    ]
    return chosen + optional_analyses()


def optional_analyses() -> list[tuple[str, Callable[[Database], Any]]]:
    """Retention, paths and heatmaps, if their modules are there."""
    found: list[tuple[str, Callable[[Database], Any]]] = []
    try:
        retention = importlib.import_module("footfall.analytics.retention")
        weekly = retention.RetentionSpec(date_range=PERIOD, period="week")
        purchases = retention.RetentionSpec(
            start_event=retention.RetentionEvent("sign_up"), return_event=retention.RetentionEvent("purchase"),
            date_range=PERIOD, period="day", periods=14,
        )
        found.append(("retention first seen", lambda db: retention.run(db, weekly, known_events_only=False)))
        found.append(("retention sign-up→buy", lambda db: retention.run(db, purchases, known_events_only=False)))
    except (ImportError, AttributeError, TypeError) as exc:
        print(f"# retention skipped: {exc}")
    try:
        paths = importlib.import_module("footfall.analytics.paths")
        spec = paths.PathSpec(date_range=PERIOD)
        found.append(("paths", lambda db: paths.run(db, spec, known_events_only=False)))
    except (ImportError, AttributeError, TypeError) as exc:
        print(f"# paths skipped: {exc}")
    try:
        heatmaps = importlib.import_module("footfall.analytics.heatmaps")
        heatmap = heatmaps.HeatmapSpec(date_range=PERIOD)
        found.append(("heatmaps", lambda db: heatmaps.run(db, heatmap)))
    except (ImportError, AttributeError, TypeError) as exc:
        print(f"# heatmaps skipped: {exc}")
    return found


def window_funnel_counts(database: Database) -> list[int]:
    """Persons per step from ClickHouse's windowFunnel, for the same ordered funnel."""
    conditions = ", ".join(f"event = '{name}'" for name in FUNNEL_STEPS)
    names = ", ".join(f"'{name}'" for name in FUNNEL_STEPS)
    window = FUNNEL_WINDOW // timedelta(milliseconds=1)
    rows = database.query(
        f"SELECT level, count() FROM (SELECT windowFunnel({window})(toUInt64(toUnixTimestamp64Milli(timestamp)),"
        f" {conditions}) AS level FROM events WHERE project_id = '{database.project_id}' AND event IN ({names})"
        " GROUP BY person_id) GROUP BY level"
    ).rows
    return [sum(int(count) for level, count in rows if int(level) > k) for k in range(len(FUNNEL_STEPS))]


@dataclass
class Timing:
    seconds: float
    result: Any


class Best:
    """The shortest of several timed runs of one action, and its last result."""

    def __init__(self, action: Callable[[], Any]) -> None:
        self.action = action
        self.seconds = float("inf")
        self.result: Any = None

    def run(self) -> None:
        started = time.perf_counter()
        self.result = self.action()
        self.seconds = min(self.seconds, time.perf_counter() - started)


def best_of(rounds: int, action: Callable[[], Any], peer: Best | None = None) -> Timing:
    """Best of ``rounds`` runs after a warm-up. With a ``peer``, each run is
    followed by one of the peer's, so that both see the machine alike (its
    load moves); the peer keeps its own best."""
    action()
    timed = Best(action)
    for _ in range(rounds):
        timed.run()
        if peer is not None:
            peer.run()
    return Timing(timed.seconds, timed.result)


def counts(result: funnels.FunnelResult) -> list[int]:
    return [step.count for step in result.overall.steps]


# -- the table -------------------------------------------------------------------------------


def report(size: str, events: int, stores: dict[str, Database], rounds: int) -> None:
    print(
        f"\n{events:,} events ({SIZES[size]:,} simulated users, {DAYS} days), {os.cpu_count()} cores;"
        f" best of {rounds} after a warm-up"
    )
    print(f"{'analysis':<24} {'DuckDB s':>9} {'chdb s':>9}  {'DuckDB / windowFunnel':>21}")
    timings: dict[tuple[str, str], Timing] = {}
    peer: Best | None = None
    if "chdb" in stores:
        peer = Best(partial(window_funnel_counts, stores["chdb"]))
        peer.run()  # warm-up
    for name, action in analyses():
        cells = []
        ratio = ""
        for backend in ("duckdb", "chdb"):
            if backend not in stores:
                cells.append(f"{'-':>9}")
                continue
            if backend == "duckdb" and name.startswith("funnel") and peer is not None:
                # windowFunnel runs between ours: the ratio compares runs made side by side.
                alongside = Best(peer.action)
                timings[name, backend] = timing = best_of(rounds, partial(action, stores[backend]), alongside)
                peer.seconds = min(peer.seconds, alongside.seconds)
                peer.result = alongside.result
                ratio = f"{timing.seconds / alongside.seconds:>21.2f}"
            else:
                timings[name, backend] = timing = best_of(rounds, partial(action, stores[backend]))
            cells.append(f"{timing.seconds:>9.3f}")
        print(f"{name:<24} {cells[0]} {cells[1]}  {ratio}", flush=True)
    if peer is not None:
        print(f"{'windowFunnel (ClickHouse)':<24} {'-':>9} {peer.seconds:>9.3f}  {1.0:>21.2f}")

    slow = [
        f"{name} ({backend} {timing.seconds:.2f} s)"
        for (name, backend), timing in timings.items()
        if timing.seconds > SLOW
    ]
    if size == "10M":  # the size the target is set for
        print(f"over {SLOW:.0f} s: {', '.join(slow) if slow else 'none'}")
    if peer is not None:
        ours = {backend: counts(timings["funnel ordered", backend].result) for backend in stores}
        agree = all(found == peer.result for found in ours.values())
        listed = ", ".join(f"{backend} {found}" for backend, found in ours.items())
        print(f"ordered funnel step counts: windowFunnel {peer.result}, {listed}: {'equal' if agree else 'DIFFERENT'}")
        if not agree:
            raise SystemExit("the ordered funnel disagrees with windowFunnel")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", choices=sorted(SIZES), default="10M", help="how many simulated events (default 10M)")
    parser.add_argument("--quick", action="store_true", help="1M events (same as --events 1M)")
    parser.add_argument("--keep", action="store_true", help="keep the generated stores in --cache-dir for the next run")
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "footfall-bench-analytics",
        help="where --keep keeps the stores (default: %(default)s)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per analysis, after one warm-up (default 3)")
    parser.add_argument("--backends", default="duckdb,chdb", help="comma-separated: duckdb, chdb")
    options = parser.parse_args()
    size = "1M" if options.quick else options.events
    backends = options.backends.split(",")

    directory = options.cache_dir if options.keep else Path(tempfile.mkdtemp(prefix="footfall-bench-"))
    directory.mkdir(parents=True, exist_ok=True)
    stores: dict[str, Database] = {}
    try:
        raw = directory / f"simulated-{size}.parquet"
        if not raw.exists():
            partial = raw.with_suffix(".partial")
            stage(f"simulated {SIZES[size]:,} users", lambda: simulate(SIZES[size], partial))
            partial.rename(raw)
        stores["duckdb"] = duckdb_store(raw, directory / f"store-{size}.duckdb")
        events = int(stores["duckdb"].query("SELECT count(*) FROM events").rows[0][0])
        if "chdb" in backends:
            stores["chdb"] = chdb_store(stores["duckdb"], directory, size)
        if "duckdb" not in backends:
            stores.pop("duckdb").close()
        report(size, events, stores, options.rounds)
    finally:
        for database in stores.values():
            database.close()
        if not options.keep:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
