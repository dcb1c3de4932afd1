"""The Backend protocol: what the Database needs from an engine.

Backends execute SQL and move Arrow tables; they hold no business rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, Protocol

import pyarrow as pa


class QueryResult(NamedTuple):
    columns: list[str]
    rows: list[tuple[Any, ...]]


class Backend(Protocol):
    dialect: str
    description: str

    def execute(self, sql: str) -> None:
        """Run a statement that returns nothing (DDL, DML)."""

    def transaction(self) -> AbstractContextManager[None]:
        """Group writes so they land together where the engine can."""

    def query(
        self, sql: str, *, read_only: bool = False, tables: Mapping[str, pa.Table] | None = None
    ) -> QueryResult:
        """Run a query; with ``read_only`` the engine refuses writes. ``tables``
        are Arrow tables the SQL may read by name (e.g. ids to look up)."""

    def query_arrow(self, sql: str, *, read_only: bool = False) -> pa.Table: ...

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        """Append rows; columns are matched by name."""

    def upsert_arrow(self, table: str, data: pa.Table, key: Sequence[str]) -> None:
        """Insert rows, replacing any stored row with the same key."""

    def final(self, table: str) -> str:
        """The table's name as a reader must write it to see one row per key."""

    def quote(self, value: str) -> str:
        """A string literal in this dialect."""

    def close(self) -> None: ...
