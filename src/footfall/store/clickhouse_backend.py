"""The scale-out store: ClickHouse through clickhouse-connect.

``clickhouse://user:password@host:8123/database`` reaches a server;
``chdb:///path/to/dir`` runs the same engine in-process (tests, laptops).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa

from footfall.errors import StoreError
from footfall.store.backend import QueryResult
from footfall.store.dialects import final_table, quote_literal


def _import_client() -> Any:
    try:
        import clickhouse_connect
    except ImportError:
        raise StoreError(
            "the ClickHouse backend needs clickhouse-connect: pip install 'footfall[clickhouse]'"
        ) from None
    return clickhouse_connect


class ClickHouseBackend:
    dialect = "clickhouse"

    def __init__(self, dsn: str, *, database: str | None = None) -> None:
        clickhouse_connect = _import_client()
        parts = urlsplit(dsn)
        if parts.scheme not in ("chdb", "clickhouse", "http", "https"):
            raise StoreError(
                f"bad ClickHouse DSN {dsn!r}: use clickhouse://host:8123/database or chdb:///path"
            )
        self.description = f"clickhouse:{dsn.split('@')[-1]}"
        try:
            self._scratch_dir: Path | None = None
            if parts.scheme == "chdb":
                self._scratch_dir = Path(tempfile.mkdtemp(prefix="footfall-chdb-insert-"))
                # The in-process engine has one data path per process; projects
                # and tests are kept apart by database instead.
                self.database = database or "footfall"
                bootstrap = clickhouse_connect.get_client(dsn=dsn, tz_mode="aware")
                bootstrap.command(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
                bootstrap.close()
                self._client = clickhouse_connect.get_client(dsn=dsn, database=self.database, tz_mode="aware")
            else:
                self._client = clickhouse_connect.get_client(dsn=dsn, tz_mode="aware")
                if database:
                    self._client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
                    self._client = clickhouse_connect.get_client(dsn=dsn, database=database, tz_mode="aware")
                self.database = self._client.database
        except Exception as exc:
            raise StoreError(f"cannot connect to ClickHouse at {self.description}: {exc}") from None
        # The in-process client is not safe for concurrent use; serialise calls.
        self._lock = threading.Lock()
        self._check_version()

    def _check_version(self) -> None:
        """The analyses declare the CTEs they read more than once MATERIALIZED
        and turn on ``enable_materialized_cte``, which ClickHouse has from 26.3."""
        found = self._client.query(
            "SELECT version(), countIf(name = 'enable_materialized_cte') FROM system.settings"
        ).result_rows[0]
        if not found[1]:
            raise StoreError(
                f"ClickHouse at {self.description} runs version {found[0]}; Footfall needs 26.3 or later"
                " (materialized CTEs): upgrade the server, or pip install -U chdb for the in-process engine"
            )

    def execute(self, sql: str) -> None:
        with self._lock:
            self._client.command(sql, settings={"mutations_sync": 2})

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """ClickHouse has no multi-statement transactions; writes are ordered so a
        replay repairs a partial batch (identities and persons are upserts)."""
        yield

    def query(
        self, sql: str, *, read_only: bool = False, tables: Mapping[str, pa.Table] | None = None
    ) -> QueryResult:
        """Run a query; ``tables`` (string columns) are loaded into scratch Memory
        tables the SQL may read by name, and dropped afterwards."""
        settings = {"readonly": 2} if read_only else None
        with self._lock:
            for name, table in (tables or {}).items():
                self._load_scratch(name, table)
            try:
                result = self._client.query(sql, settings=settings)
            finally:
                for name in tables or {}:
                    self._client.command(f"DROP TABLE IF EXISTS `{name}`")
        return QueryResult(list(result.column_names), [tuple(row) for row in result.result_rows])

    def _load_scratch(self, name: str, table: pa.Table) -> None:
        if any(not pa.types.is_string(field.type) for field in table.schema):
            raise StoreError(f"scratch table {name!r}: only string columns are supported")
        columns = ", ".join(f"`{field.name}` String" for field in table.schema)
        self._client.command(f"DROP TABLE IF EXISTS `{name}`")
        self._client.command(f"CREATE TABLE `{name}` ({columns}) ENGINE = Memory")
        self._client.insert_arrow(name, table)

    def query_arrow(self, sql: str, *, read_only: bool = False) -> pa.Table:
        settings = {"readonly": 2} if read_only else None
        with self._lock:
            return self._client.query_arrow(sql, settings=settings)

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        if data.num_rows == 0:
            return
        with self._lock:
            if self._scratch_dir is None:
                self._client.insert_arrow(table, data)
                return
            # The in-process engine reads an Arrow file about 1.5x faster than
            # the client's insert (which serialises, copies and re-parses).
            path = self._scratch_dir / f"insert-{uuid.uuid4().hex}.arrow"
            try:
                with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, data.schema) as writer:
                    writer.write_table(data)
                columns = ", ".join(f"`{name}`" for name in data.column_names)
                self._client.command(
                    f"INSERT INTO `{table}` ({columns}) SELECT {columns} FROM file({quote_literal(self.dialect, str(path))}, Arrow)"
                )
            finally:
                path.unlink(missing_ok=True)

    def upsert_arrow(self, table: str, data: pa.Table, key: Sequence[str]) -> None:
        # ReplacingMergeTree keeps the newest version per sorting key; readers use FINAL.
        self.insert_arrow(table, data)

    def final(self, table: str) -> str:
        return final_table(self.dialect, table)

    def quote(self, value: str) -> str:
        return quote_literal(self.dialect, value)

    def close(self) -> None:
        with self._lock:
            self._client.close()
            if self._scratch_dir is not None:
                shutil.rmtree(self._scratch_dir, ignore_errors=True)
