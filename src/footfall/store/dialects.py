"""What differs between SQL dialects in the few places Footfall writes SQL by hand."""

from __future__ import annotations

from footfall.errors import StoreError

DIALECTS = ("duckdb", "clickhouse")


def _check(dialect: str) -> None:
    if dialect not in DIALECTS:
        raise StoreError(f"unknown SQL dialect {dialect!r}; expected 'duckdb' or 'clickhouse'")


def quote_literal(dialect: str, value: str) -> str:
    """A string literal. ClickHouse also treats backslash as an escape.

    >>> quote_literal("duckdb", "it's")
    "'it''s'"
    >>> quote_literal("clickhouse", "a\\\\b'c")
    "'a\\\\\\\\b\\\\'c'"
    """
    _check(dialect)
    if dialect == "clickhouse":
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return "'" + value.replace("'", "''") + "'"


def final_table(dialect: str, table: str) -> str:
    """How a reader names a table to see one row per key (ReplacingMergeTree needs FINAL)."""
    _check(dialect)
    return f"{table} FINAL" if dialect == "clickhouse" else table
