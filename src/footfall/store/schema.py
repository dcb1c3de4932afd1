"""Logical tables and their DDL per dialect.

Each table is an Arrow schema plus the few physical choices a dialect needs
(key, engine, ordering). Column types map through one table per dialect, so
adding a column is one line here and both backends follow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from footfall.errors import StoreError
from footfall.events.record import EVENT_SCHEMA, TIMESTAMP


@dataclass(frozen=True)
class Table:
    name: str
    schema: pa.Schema
    # Upserts replace the stored row with the same key (no index enforces it:
    # the single writer does).
    key: tuple[str, ...] = ()
    # ClickHouse: sorting key, and the version column for ReplacingMergeTree
    # (tables with a key keep the newest row per key).
    order_by: tuple[str, ...] = ()
    version_column: str | None = None
    low_cardinality: frozenset[str] = field(default_factory=frozenset)
    # ClickHouse: every column's compression codec, where the server's
    # default will not do (chdb compresses large parts with ZSTD).
    codec: str | None = None


# LZ4 for the tables the analyses scan: on chdb it read the events' JSON
# properties and strings 10-20% faster than ZSTD(3) in bench/analytics.py,
# for about twice the disk. It is a ClickHouse server's own default.
_SCANNED_CODEC = "LZ4"

EVENTS = Table(
    "events",
    EVENT_SCHEMA,
    # Per-person time scans (funnels, paths, sessions) read contiguous ranges.
    order_by=("project_id", "person_id", "timestamp"),
    low_cardinality=frozenset(
        {"project_id", "type", "event", "library", "device_type", "os", "browser", "country",
         "locale", "utm_source", "utm_medium", "utm_campaign"}
    ),
    codec=_SCANNED_CODEC,
)

PERSONS = Table(
    "persons",
    pa.schema(
        [
            pa.field("project_id", pa.string(), nullable=False),
            pa.field("person_id", pa.string(), nullable=False),
            pa.field("user_id", pa.string()),  # set once the person is identified
            pa.field("traits", pa.string(), nullable=False),  # JSON object
            pa.field("first_seen", TIMESTAMP, nullable=False),
            pa.field("last_seen", TIMESTAMP, nullable=False),
            pa.field("last_session_id", pa.string(), nullable=False),
            pa.field("last_session_start", TIMESTAMP, nullable=False),
            pa.field("updated_at", TIMESTAMP, nullable=False),
        ]
    ),
    key=("project_id", "person_id"),
    order_by=("project_id", "person_id"),
    version_column="updated_at",
    low_cardinality=frozenset({"project_id"}),
)

IDENTITIES = Table(
    "identities",
    pa.schema(
        [
            pa.field("project_id", pa.string(), nullable=False),
            pa.field("kind", pa.string(), nullable=False),  # 'anonymous' or 'user'
            pa.field("value", pa.string(), nullable=False),
            pa.field("person_id", pa.string(), nullable=False),
            pa.field("updated_at", TIMESTAMP, nullable=False),
        ]
    ),
    key=("project_id", "kind", "value"),
    order_by=("project_id", "kind", "value"),
    version_column="updated_at",
    low_cardinality=frozenset({"project_id", "kind"}),
)

PERSON_MERGES = Table(
    "person_merges",
    pa.schema(
        [
            pa.field("project_id", pa.string(), nullable=False),
            pa.field("old_person_id", pa.string(), nullable=False),
            pa.field("new_person_id", pa.string(), nullable=False),
            pa.field("merged_at", TIMESTAMP, nullable=False),
        ]
    ),
    order_by=("project_id", "old_person_id"),
    low_cardinality=frozenset({"project_id"}),
)

DEAD_LETTERS = Table(
    "dead_letters",
    pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("project_id", pa.string(), nullable=False),
            pa.field("received_at", TIMESTAMP, nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("field", pa.string(), nullable=False),
            pa.field("reason", pa.string(), nullable=False),
            pa.field("payload", pa.string(), nullable=False),
        ]
    ),
    key=("id",),
    # Replacing: a replayed intake record rewrites its letters under the same id.
    order_by=("project_id", "id"),
    version_column="received_at",
    low_cardinality=frozenset({"project_id", "source"}),
)

# Messages a tracking plan in "warn" mode let through, with what was wrong.
PLAN_WARNINGS = Table(
    "plan_warnings",
    pa.schema(
        [
            pa.field("project_id", pa.string(), nullable=False),
            pa.field("event_id", pa.string(), nullable=False),
            pa.field("plan", pa.string(), nullable=False),
            pa.field("event", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("field", pa.string(), nullable=False),
            pa.field("reason", pa.string(), nullable=False),
            pa.field("received_at", TIMESTAMP, nullable=False),
        ]
    ),
    key=("project_id", "event_id", "plan"),
    order_by=("project_id", "event_id", "plan"),
    version_column="received_at",
    low_cardinality=frozenset({"project_id", "plan", "event", "source"}),
)

# Static cohorts: snapshot lists of persons (footfall.segments.catalog).
COHORT_MEMBERS = Table(
    "cohort_members",
    pa.schema(
        [
            pa.field("project_id", pa.string(), nullable=False),
            pa.field("cohort_id", pa.string(), nullable=False),
            pa.field("person_id", pa.string(), nullable=False),
            pa.field("added_at", TIMESTAMP, nullable=False),
        ]
    ),
    order_by=("project_id", "cohort_id", "person_id"),
    low_cardinality=frozenset({"project_id", "cohort_id"}),
)

TABLES = {
    table.name: table
    for table in (EVENTS, PERSONS, IDENTITIES, PERSON_MERGES, DEAD_LETTERS, PLAN_WARNINGS, COHORT_MEMBERS)
}

# ClickHouse only: the events heatmaps read, a second time, ordered by page.
# The events table is ordered by person, so one page's clicks are spread over
# every granule of it, and ClickHouse decompresses a whole granule to read one
# row: heatmaps on 10M events took 2.4 s there, and 0.8 s from this table
# (docs/analytics.md). A materialized view fills it on every insert into
# events; moving a merged person's events deletes from both (Database). Not
# written directly, so not in TABLES. The heavy text columns no heatmap reads
# (url, referrer, title, user agent, ip, ids other than person and session)
# are left out: a heatmap filtering on one of them reads events instead.
PAGE_EVENT_NAMES = ("click", "rage_click", "scroll", "page_leave", "page_view")
_NOT_ON_PAGE_EVENTS = frozenset({"anonymous_id", "user_id", "received_at", "url", "referrer", "title", "user_agent", "ip"})
PAGE_EVENTS = Table(
    "page_events",
    pa.schema(
        [
            field.with_nullable(False) if field.name == "path" else field
            for field in EVENT_SCHEMA
            if field.name not in _NOT_ON_PAGE_EVENTS
        ]
    ),
    order_by=("project_id", "path", "event", "person_id", "session_id", "timestamp"),
    low_cardinality=EVENTS.low_cardinality,
    codec=EVENTS.codec,
)
PAGE_EVENTS_FEED = "page_events_feed"


def derived_tables(dialect: str) -> tuple[str, ...]:
    """The tables a dialect's store fills from others: whoever empties the
    events (a test between examples) empties these with them."""
    return (PAGE_EVENTS.name,) if dialect == "clickhouse" else ()


def _page_events_select() -> str:
    """The page events of ``events``, as rows of ``page_events``."""
    columns = ", ".join("assumeNotNull(path) AS path" if name == "path" else name for name in PAGE_EVENTS.schema.names)
    names = ", ".join(f"'{name}'" for name in PAGE_EVENT_NAMES)
    # (events.path: a bare path would be the alias, never NULL)
    return f"SELECT {columns} FROM events WHERE event IN ({names}) AND events.path IS NOT NULL"

DUCKDB_TYPES = {
    pa.string(): "VARCHAR",
    TIMESTAMP: "TIMESTAMPTZ",
    pa.float64(): "DOUBLE",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.bool_(): "BOOLEAN",
}

CLICKHOUSE_TYPES = {
    pa.string(): "String",
    TIMESTAMP: "DateTime64(3, 'UTC')",
    pa.float64(): "Float64",
    pa.int32(): "Int32",
    pa.int64(): "Int64",
    pa.bool_(): "Bool",
}


def _type_for(table: Table, column: pa.Field, types: dict[pa.DataType, str]) -> str:
    try:
        return types[column.type]
    except KeyError:
        raise StoreError(f"{table.name}.{column.name}: no SQL type for {column.type}") from None


def create_table_sql(table: Table, dialect: str) -> str:
    if dialect == "duckdb":
        columns = [
            f"{column.name} {_type_for(table, column, DUCKDB_TYPES)}{'' if column.nullable else ' NOT NULL'}"
            for column in table.schema
        ]
        return f"CREATE TABLE IF NOT EXISTS {table.name} (\n    " + ",\n    ".join(columns) + "\n)"
    if dialect == "clickhouse":
        columns = []
        for column in table.schema:
            sql_type = _type_for(table, column, CLICKHOUSE_TYPES)
            if column.name in table.low_cardinality:
                sql_type = f"LowCardinality({sql_type})"
            if column.nullable:
                sql_type = (
                    "LowCardinality(Nullable(String))" if sql_type == "LowCardinality(String)"
                    else f"Nullable({sql_type})"
                )
            columns.append(f"{column.name} {sql_type}{_codec(table)}")
        engine = f"ReplacingMergeTree({table.version_column})" if table.version_column else "MergeTree"
        return (
            f"CREATE TABLE IF NOT EXISTS {table.name} (\n    " + ",\n    ".join(columns)
            + f"\n) ENGINE = {engine}\nORDER BY ({', '.join(table.order_by)})"
        )
    raise StoreError(f"unknown SQL dialect {dialect!r}; expected 'duckdb' or 'clickhouse'")


def _codec(table: Table) -> str:
    return f" CODEC({table.codec})" if table.codec else ""


def _set_codecs(*tables: Table) -> list[str]:
    """ClickHouse: give the tables' columns their codec. Only the metadata
    changes; parts written before keep theirs until merged."""
    return [
        f"ALTER TABLE {table.name} MODIFY COLUMN {name}{_codec(table)}" for table in tables for name in table.schema.names
    ]


# Each migration is a list of statements per dialect; the schema_version table
# records which have run. Migration 1 creates the first tables as defined above. A
# later change to a table edits its definition above *and* appends a migration
# with idempotent statements (ALTER TABLE ... ADD COLUMN IF NOT EXISTS, which
# both engines accept), so fresh stores and upgraded ones end up the same.
def _create(dialect: str, *tables: Table) -> list[str]:
    return [create_table_sql(table, dialect) for table in tables]


_FIRST_TABLES = (EVENTS, PERSONS, IDENTITIES, PERSON_MERGES, DEAD_LETTERS)

MIGRATIONS: list[dict[str, list[str]]] = [
    {"duckdb": _create("duckdb", *_FIRST_TABLES), "clickhouse": _create("clickhouse", *_FIRST_TABLES)},
    # 2: tracking-plan warnings (the collector's "warn" mode); on ClickHouse,
    # dead letters move to a ReplacingMergeTree keyed by id.
    {
        "duckdb": _create("duckdb", PLAN_WARNINGS),
        "clickhouse": [
            *_create("clickhouse", PLAN_WARNINGS),
            "DROP TABLE IF EXISTS dead_letters_v2",
            create_table_sql(DEAD_LETTERS, "clickhouse").replace(
                "CREATE TABLE IF NOT EXISTS dead_letters", "CREATE TABLE dead_letters_v2", 1
            ),
            "INSERT INTO dead_letters_v2 SELECT * FROM dead_letters",
            "DROP TABLE dead_letters",
            "RENAME TABLE dead_letters_v2 TO dead_letters",
        ],
    },
    # 3: static cohorts.
    {"duckdb": _create("duckdb", COHORT_MEMBERS), "clickhouse": _create("clickhouse", COHORT_MEMBERS)},
    # 4: ClickHouse's page events for heatmaps: the view first, then the
    # events stored before it (less any the view has copied since).
    {
        "duckdb": [],
        "clickhouse": [
            create_table_sql(PAGE_EVENTS, "clickhouse"),
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {PAGE_EVENTS_FEED} TO {PAGE_EVENTS.name} AS {_page_events_select()}",
            f"INSERT INTO {PAGE_EVENTS.name} {_page_events_select()}"
            f" AND event_id NOT IN (SELECT event_id FROM {PAGE_EVENTS.name})",
        ],
    },
    # 5: ClickHouse's scanned tables compress with LZ4.
    {"duckdb": [], "clickhouse": _set_codecs(EVENTS, PAGE_EVENTS)},
]

SCHEMA_VERSION = len(MIGRATIONS)
