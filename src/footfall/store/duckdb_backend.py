"""The embedded default: one DuckDB file."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from footfall.errors import StoreError, StoreLockedError
from footfall.store.backend import QueryResult
from footfall.store.dialects import final_table, quote_literal

# Rows per row group. At DuckDB's default (122,880) the checkpoint that
# completes a row group compresses all of its rows at once, inside the commit
# that triggers it: under steady ingest that stopped the writer for up to a
# second every few seconds, the intake worker's worst pause. Smaller groups
# spread the same work into short pauses; scans are as fast (bench/analytics.py).
ROW_GROUP_ROWS = 16_384
# The store is attached under this name (ATTACH is where the row group size is
# set) and made the default, so SQL names its tables without it.
CATALOG = "store"


class DuckDBBackend:
    dialect = "duckdb"

    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        self.path = str(path)
        self.description = f"duckdb:{self.path}"
        self._attached = self.path != ":memory:"
        try:
            if self._attached:
                self._con = duckdb.connect()
                # Spill beside the store, as DuckDB does for a file it opens itself.
                self._con.execute(f"SET temp_directory = {quote_literal('duckdb', self.path + '.tmp')}")
                options = f"ROW_GROUP_SIZE {ROW_GROUP_ROWS}" + (", READ_ONLY" if read_only else "")
                self._con.execute(f"ATTACH {quote_literal('duckdb', self.path)} AS {CATALOG} ({options})")
                self._con.execute(f"USE {CATALOG}")
            else:
                self._con = duckdb.connect(self.path, read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise StoreLockedError(
                    f"the store {self.path} is open for writing by another process"
                    " (is `footfall serve` or an import running?)"
                ) from None
            raise StoreError(f"cannot open {self.path}: {exc}") from None
        # Timestamps are stored and shown in UTC; analyses convert explicitly.
        self._con.execute("SET TimeZone = 'UTC'")
        # One connection object is not safe to share between threads; each
        # caller gets a cursor, and writes take this lock (one writer).
        self._lock = threading.RLock()
        self._transaction_depth = 0

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = self._con.cursor()
        cursor.execute("SET TimeZone = 'UTC'")
        if self._attached:
            cursor.execute(f"USE {CATALOG}")
        return cursor

    def execute(self, sql: str) -> None:
        with self._lock:
            self._con.execute(sql)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside land together or not at all. Nested use joins the
        outer transaction."""
        with self._lock:
            if self._transaction_depth:
                self._transaction_depth += 1
                try:
                    yield
                finally:
                    self._transaction_depth -= 1
                return
            self._con.execute("BEGIN TRANSACTION")
            self._transaction_depth = 1
            try:
                yield
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            else:
                self._con.execute("COMMIT")
            finally:
                self._transaction_depth = 0

    def query(
        self, sql: str, *, read_only: bool = False, tables: Mapping[str, pa.Table] | None = None
    ) -> QueryResult:
        """Run a query; ``tables`` are Arrow tables the SQL may read by name."""
        cursor = self._cursor()
        for name, table in (tables or {}).items():
            cursor.register(name, table)
        try:
            cursor.execute(sql)
            columns = [column[0] for column in cursor.description or []]
            rows: list[tuple[Any, ...]] = cursor.fetchall() if cursor.description else []
        finally:
            cursor.close()
        return QueryResult(columns, rows)

    def query_arrow(self, sql: str, *, read_only: bool = False) -> pa.Table:
        cursor = self._cursor()
        try:
            return cursor.sql(sql).to_arrow_table()
        finally:
            cursor.close()

    @contextmanager
    def registered(self, data: pa.Table) -> Iterator[str]:
        with self._lock:
            self._con.register("_footfall_batch", data)
            try:
                yield "_footfall_batch"
            finally:
                self._con.unregister("_footfall_batch")

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        if data.num_rows == 0:
            return
        with self.registered(data) as batch:
            self._con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {batch}")

    def upsert_arrow(self, table: str, data: pa.Table, key: Sequence[str]) -> None:
        # Delete-then-insert in one transaction. Key tables carry no PRIMARY KEY
        # index: maintaining it made INSERT OR REPLACE ~15x slower on stores
        # with many persons, and the single writer keeps keys unique.
        if data.num_rows == 0:
            return
        matches = " AND ".join(f"{table}.{column} = {{batch}}.{column}" for column in key)
        with self.transaction(), self.registered(data) as batch:
            self._con.execute(f"DELETE FROM {table} USING {batch} WHERE {matches.format(batch=batch)}")
            self._con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {batch}")

    def final(self, table: str) -> str:
        return final_table(self.dialect, table)

    def quote(self, value: str) -> str:
        return quote_literal(self.dialect, value)

    def close(self) -> None:
        with self._lock:
            self._con.close()
