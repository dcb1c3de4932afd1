"""Bulk write rate into each store backend, against the engine's own Parquet load.

For each size, simulated events are written once to Parquet. Then, in the same
run and on the same machine:

- footfall store: Arrow batches read from the Parquet file and written with
  ``Database.insert`` (the store's bulk path);
- footfall pipeline: the same batches through ``Pipeline.ingest`` (identity
  resolution, sessions, persons, then the same write);
- peer: the engine loading the same file itself, ``INSERT INTO events SELECT *
  FROM <parquet>``, into an identical table.

The ratio footfall/peer (events per second) is the figure to quote; absolute
numbers move with the machine.

    python bench/ingest_store.py                      # 1M and 10M, both backends
    python bench/ingest_store.py --sizes 1000000 --backends duckdb
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from footfall.events.record import EVENT_SCHEMA
from footfall.pipeline import Pipeline
from footfall.simulate import Simulation, SimulationSpec
from footfall.store.clickhouse_backend import ClickHouseBackend
from footfall.store.database import Database
from footfall.store.duckdb_backend import DuckDBBackend
from footfall.store.schema import EVENTS, create_table_sql

BATCH_ROWS = 250_000


SEED = 11
DAYS = 30


def users_for(events: int) -> int:
    """How many simulated users produce about ``events`` events (measured on a sample)."""
    sample_users = 5_000
    sample = sum(batch.num_rows for batch in Simulation(SimulationSpec(users=sample_users, days=DAYS, seed=SEED)).batches())
    return max(1, round(events * sample_users / sample))


def write_parquet(events: int, path: Path) -> int:
    simulation = Simulation(SimulationSpec(users=users_for(events), days=DAYS, seed=SEED))
    written = 0
    with pq.ParquetWriter(path, EVENT_SCHEMA) as writer:
        for batch in simulation.batches():
            writer.write_table(batch)
            written += batch.num_rows
    return written


def batches(path: Path) -> Iterator[pa.Table]:
    for record_batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS):
        yield pa.Table.from_batches([record_batch])


def timed(action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


class Scenario:
    """Fresh stores of one backend kind, so each measurement writes into an empty table."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.workdir = workdir

    def database(self) -> Database:
        if self.kind == "duckdb":
            backend = DuckDBBackend(self.workdir / f"{uuid.uuid4().hex}.duckdb")
        else:
            backend = ClickHouseBackend(f"chdb://{self.workdir / 'chdb'}", database=f"b_{uuid.uuid4().hex[:10]}")
        database = Database(backend)
        database.migrate()
        return database

    def peer_load(self, parquet: Path) -> float:
        """The engine's own bulk load of the same file into an identical table."""
        if self.kind == "duckdb":
            import duckdb

            connection = duckdb.connect(str(self.workdir / f"peer-{uuid.uuid4().hex}.duckdb"))
            connection.execute("SET TimeZone = 'UTC'")
            connection.execute(create_table_sql(EVENTS, "duckdb"))
            seconds = timed(lambda: connection.execute(f"INSERT INTO events SELECT * FROM read_parquet('{parquet}')"))
            connection.close()
            return seconds
        database = self.database()
        seconds = timed(lambda: database.backend.execute(f"INSERT INTO events SELECT * FROM file('{parquet}', Parquet)"))
        database.close()
        return seconds


def measure(kind: str, parquet: Path, rows: int, workdir: Path) -> list[tuple[str, float]]:
    scenario = Scenario(kind, workdir)

    store = scenario.database()
    store_seconds = timed(lambda: [store.insert("events", batch) for batch in batches(parquet)])
    assert store.query("SELECT count(*) FROM events").rows[0][0] == rows
    store.close()

    fresh = scenario.database()
    pipeline = Pipeline(fresh)
    pipeline_seconds = timed(lambda: [pipeline.ingest(batch) for batch in batches(parquet)])
    assert fresh.query("SELECT count(*) FROM events").rows[0][0] == rows
    fresh.close()

    peer_seconds = scenario.peer_load(parquet)
    return [("footfall store", store_seconds), ("footfall pipeline", pipeline_seconds), ("peer INSERT…SELECT", peer_seconds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,10000000", help="comma-separated event counts (approximate)")
    parser.add_argument("--backends", default="duckdb,clickhouse")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a temporary one)")
    options = parser.parse_args()

    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="footfall-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        print(f"{'events':>11} {'backend':<11} {'path':<19} {'seconds':>8} {'events/s':>12} {'vs peer':>8}")
        for size in (int(text) for text in options.sizes.split(",")):
            parquet = workdir / f"events-{size}.parquet"
            started = time.perf_counter()
            rows = write_parquet(size, parquet)
            generation = time.perf_counter() - started
            print(f"# simulated {rows:,} events in {generation:.1f} s ({rows / generation:,.0f} events/s)")
            for kind in options.backends.split(","):
                results = measure(kind, parquet, rows, workdir)
                peer_rate = rows / results[-1][1]
                for name, seconds in results:
                    rate = rows / seconds
                    print(f"{rows:>11,} {kind:<11} {name:<19} {seconds:>8.2f} {rate:>12,.0f} {rate / peer_rate:>8.2f}")
    finally:
        if options.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
