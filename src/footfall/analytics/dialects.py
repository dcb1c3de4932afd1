"""What differs between DuckDB and ClickHouse in the SQL the analyses write.

One table of templates per dialect; the compilers write everything else once.
A template is filled with already-rendered SQL fragments:

>>> DUCKDB.render("epoch_ms", x="timestamp")
'epoch_ms(timestamp)'
>>> CLICKHOUSE.render("epoch_ms", x="timestamp")
'toUnixTimestamp64Milli(timestamp)'
>>> DUCKDB.json_path(("plan", "tier")), CLICKHOUSE.json_path(("plan", "tier"))
('\\'$."plan"."tier"\\'', "'plan', 'tier'")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from footfall.analytics.errors import UnsupportedFeature
from footfall.store.dialects import quote_literal


@dataclass(frozen=True)
class Dialect:
    name: str
    templates: Mapping[str, str]
    # How a JSON path (keys from the root) is written as function arguments.
    json_path: Callable[[Sequence[str]], str]
    # Appended to every analysis query (engine settings the SQL relies on).
    query_suffix: str = ""

    def render(self, template: str, **parts: str) -> str:
        try:
            text = self.templates[template]
        except KeyError:
            raise UnsupportedFeature(self.name, template) from None
        return text.format(**parts)

    def quote(self, value: str) -> str:
        return quote_literal(self.name, value)

    def timestamp(self, value: datetime) -> str:
        """A UTC timestamp literal comparable with the events' ``timestamp`` column."""
        text = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        return self.render("timestamp", text=text)


def _duckdb_json_path(keys: Sequence[str]) -> str:
    return quote_literal("duckdb", "$" + "".join(f'."{key}"' for key in keys))


def _clickhouse_json_path(keys: Sequence[str]) -> str:
    return ", ".join(quote_literal("clickhouse", key) for key in keys)


DUCKDB = Dialect(
    "duckdb",
    {
        "timestamp": "TIMESTAMPTZ '{text}+00'",
        "epoch_ms": "epoch_ms({x})",
        # JSON: kinds are tested first so the value functions never see a
        # value of the wrong kind (a failed cast would be an error).
        "json_is_string": "coalesce(json_type({doc}, {path}) = 'VARCHAR', false)",
        "json_is_number": "coalesce(json_type({doc}, {path}) IN ('BIGINT', 'UBIGINT', 'DOUBLE'), false)",
        "json_is_bool": "coalesce(json_type({doc}, {path}) = 'BOOLEAN', false)",
        "json_is_set": "coalesce(json_type({doc}, {path}) <> 'NULL', false)",
        "json_string": "json_extract_string({doc}, {path})",
        "json_number": "TRY_CAST(json_extract_string({doc}, {path}) AS DOUBLE)",
        "json_bool": "(json_extract_string({doc}, {path}) = 'true')",
        # A JSON number, else NULL, from one parse: json_extract gives the value
        # as JSON text, and only a number's text casts (a string keeps its quotes).
        "json_number_or_null": "TRY_CAST(CAST(json_extract({doc}, {path}) AS VARCHAR) AS DOUBLE)",
        # A scalar as text (strings unquoted), NULL when missing or null.
        "json_text": "json_extract_string({doc}, {path})",
        "contains": "contains({s}, {needle})",
        "either": "({a} OR {b})",
        "as_double": "CAST({x} AS DOUBLE)",
        "regex": "regexp_matches({s}, {pattern})",
        "count_if": "count(*) FILTER (WHERE {condition})",
        # A constant IN list is checked after the scan has read the rows; a
        # comparison with a list constant is pushed into the scan (about twice
        # as fast on 10M events).
        "one_of": "{x} = ANY([{values}])",
        "avg_if": "avg({x}) FILTER (WHERE {condition})",
        "sum_if": "sum({x}) FILTER (WHERE {condition})",
        # Interpolated median (the mean of the two middle values for even counts).
        "median_if": "quantile_cont({x}, 0.5) FILTER (WHERE {condition})",
        "sorted_at": "list_sort([{items}])[{position}]",
        "local_date": "CAST(timezone({zone}, {x}) AS DATE)",
    },
    _duckdb_json_path,
)

CLICKHOUSE = Dialect(
    "clickhouse",
    {
        "timestamp": "toDateTime64('{text}', 3, 'UTC')",
        "epoch_ms": "toUnixTimestamp64Milli({x})",
        # JSONType is 'Null' both for a missing key and a JSON null.
        "json_is_string": "(JSONType({doc}, {path}) = 'String')",
        "json_is_number": "(JSONType({doc}, {path}) IN ('Int64', 'UInt64', 'Double'))",
        "json_is_bool": "(JSONType({doc}, {path}) = 'Bool')",
        "json_is_set": "(JSONType({doc}, {path}) != 'Null')",
        "json_string": "JSONExtractString({doc}, {path})",
        "json_number": "JSONExtractFloat({doc}, {path})",
        "json_bool": "(JSONExtractBool({doc}, {path}) = 1)",
        "json_number_or_null": (
            "if(JSONType({doc}, {path}) IN ('Int64', 'UInt64', 'Double'), JSONExtractFloat({doc}, {path}), NULL)"
        ),
        "json_text": (
            "multiIf(JSONType({doc}, {path}) = 'Null', NULL,"
            " JSONType({doc}, {path}) = 'String', JSONExtractString({doc}, {path}),"
            " JSONExtractRaw({doc}, {path}))"
        ),
        "contains": "(position({s}, {needle}) > 0)",
        # Two costly tests, either true. Not OR: ClickHouse tests b only where
        # a failed, by first copying those rows (for a text search, the text
        # of nearly every event); the sum tests both in one pass.
        "either": "(({a}) + ({b}) > 0)",
        # NULL stays NULL (a CAST to Float64 throws on it; ClickHouse may
        # test a condition of an AND on rows the other part has ruled out).
        "as_double": "toFloat64({x})",
        "regex": "match({s}, {pattern})",
        "count_if": "countIf({condition})",
        "one_of": "{x} IN ({values})",
        "avg_if": "avgIf({x}, {condition})",
        "sum_if": "sumIf({x}, {condition})",
        # quantileExactInclusive interpolates like DuckDB's quantile_cont.
        "median_if": "quantileExactInclusiveIf(0.5)({x}, {condition})",
        "sorted_at": "arraySort([{items}])[{position}]",
        "local_date": "toDate({x}, {zone})",
    },
    _clickhouse_json_path,
    # LEFT and ASOF LEFT joins give NULL (not a default value) where nothing
    # matched. ClickHouse computes a CTE again wherever it is read, unless it
    # is declared MATERIALIZED and this setting (ClickHouse 26.3 and later,
    # which the backend checks for) is on.
    query_suffix="\nSETTINGS join_use_nulls = 1, enable_materialized_cte = 1",
)

DIALECTS: Mapping[str, Dialect] = {dialect.name: dialect for dialect in (DUCKDB, CLICKHOUSE)}


def dialect_named(name: str) -> Dialect:
    try:
        return DIALECTS[name]
    except KeyError:
        raise UnsupportedFeature(name, "this SQL dialect (use 'duckdb' or 'clickhouse')") from None
