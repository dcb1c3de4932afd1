"""The store: schema, migrations, writes and reads, on every backend."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from footfall.errors import StoreError
from footfall.events import EVENT_SCHEMA, events_to_table
from footfall.events.record import Event
from footfall.store.database import Database, DeadLetter
from footfall.store.schema import (
    PAGE_EVENT_NAMES,
    SCHEMA_VERSION,
    TABLES,
    create_table_sql,
    derived_tables,
)

from .conftest import make_clickhouse_database
from .timeline import T0, track


def test_migrations_create_every_table_and_are_idempotent(database: Database) -> None:
    assert database.schema_version() == SCHEMA_VERSION
    assert database.migrate() == SCHEMA_VERSION
    versions = database.query("SELECT count(*) FROM schema_version").rows[0][0]
    assert versions == SCHEMA_VERSION
    for table in TABLES:
        assert database.query(f"SELECT count(*) FROM {table}").rows[0][0] == 0


def test_event_rows_round_trip_every_column(database: Database) -> None:
    event = track(
        "click",
        "90s",
        anon="a1",
        user="u1",
        properties={"x": 10, "y": 20, "viewport_width": 800, "viewport_height": 600, "label": "Ünïcode ✓"},
        context={"page": {"url": "https://s.example/a?utm_source=ads", "title": "A"}, "ip": "1.2.3.4"},
    )
    event.person_id, event.session_id = "p1", "p1:0"
    database.insert("events", events_to_table([event]))
    stored = database.query_arrow("SELECT * FROM events").select(EVENT_SCHEMA.names)
    row = stored.to_pylist()[0]
    assert row["timestamp"] == T0.replace(second=30, minute=1)
    assert json.loads(row["properties"])["label"] == "Ünïcode ✓"
    assert (row["x"], row["y"], row["viewport_width"], row["path"], row["utm_source"]) == (10.0, 20.0, 800, "/a", "ads")
    assert (row["person_id"], row["session_id"], row["ip"], row["title"]) == ("p1", "p1:0", "1.2.3.4", "A")


def test_upsert_keeps_one_row_per_key(database: Database) -> None:
    schema = TABLES["identities"].schema
    first = pa.table(
        {"project_id": ["default"], "kind": ["user"], "value": ["u1"], "person_id": ["p1"],
         "updated_at": pa.array([T0], schema.field("updated_at").type)},
        schema=schema,
    )
    second = first.set_column(3, "person_id", pa.array(["p2"]))
    second = second.set_column(4, "updated_at", pa.array([T0.replace(hour=13)], schema.field("updated_at").type))
    database.upsert("identities", first)
    database.upsert("identities", second)
    assert database.identity_rows() == [("user", "u1", "p2")]


def test_user_sql_is_read_only(database: Database) -> None:
    assert database.read_only_query("SELECT 1 + 1 AS two").rows == [(2,)]
    for statement in (
        "DROP TABLE events",
        "INSERT INTO events SELECT * FROM events",
        "DELETE FROM events",
        "WITH doomed AS (SELECT 1) DELETE FROM events",
        "SELECT 1; DELETE FROM events",
        "",
    ):
        with pytest.raises(StoreError):
            database.read_only_query(statement)
    assert database.query("SELECT count(*) FROM events").rows == [(0,)]


def test_bad_sql_is_a_one_line_store_error(database: Database) -> None:
    with pytest.raises(StoreError, match="query failed") as caught:
        database.read_only_query("SELECT no_such_column FROM events")
    assert "\n" not in str(caught.value)


def test_summary_of_an_empty_store(database: Database) -> None:
    summary = database.summary()
    assert (summary.events, summary.persons, summary.top_events, summary.first_event) == (0, 0, [], None)


def test_reassign_persons_moves_events(database: Database) -> None:
    events = [track("a", "0s", anon="x"), track("b", "1s", anon="y")]
    events[0].person_id, events[1].person_id = "old", "keep"
    database.insert("events", events_to_table(events))
    database.reassign_persons([("old", "middle"), ("middle", "new")])
    rows = database.query("SELECT event, person_id FROM events ORDER BY event").rows
    assert rows == [("a", "new"), ("b", "keep")]


@pytest.mark.parametrize("dialect", ["duckdb", "clickhouse"])
def test_ddl_is_generated_from_the_schema(dialect: str) -> None:
    sql = create_table_sql(TABLES["events"], dialect)
    for name in EVENT_SCHEMA.names:
        assert f"\n    {name} " in sql
    if dialect == "clickhouse":
        assert "ORDER BY (project_id, person_id, timestamp)" in sql
        assert "event LowCardinality(String)" in sql


def test_unknown_dialect_is_named() -> None:
    with pytest.raises(StoreError, match="unknown SQL dialect 'oracle'"):
        create_table_sql(TABLES["events"], "oracle")


def test_open_read_only_without_a_store_explains(tmp_path: object) -> None:
    with pytest.raises(StoreError, match="footfall demo"):
        Database.open(tmp_path / "nothing-here", read_only=True)  # type: ignore[operator]


def test_the_embedded_store_writes_small_row_groups(tmp_path: object) -> None:
    """Small row groups keep the checkpoint that completes one short (the
    intake worker's pauses); the store stays a plain DuckDB file."""
    import duckdb

    from footfall.store.duckdb_backend import ROW_GROUP_ROWS

    data_dir = str(tmp_path)
    rows = 3 * ROW_GROUP_ROWS + 10
    with Database.open(data_dir) as database:
        path = database.backend.path  # type: ignore[attr-defined]
        database.backend.execute(f"CREATE TABLE numbers AS SELECT range AS n FROM range({rows})")
        groups = database.query("SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('numbers')").rows
        assert groups == [(4,)]
        spill = database.query("SELECT current_setting('temp_directory')").rows[0][0]
        assert spill == f"{path}.tmp"  # beside the store, as DuckDB does for a file it opens
    with Database.open(data_dir, read_only=True) as reader:
        assert reader.query("SELECT count(*) FROM numbers").rows == [(rows,)]
    with duckdb.connect(path, read_only=True) as plain:
        assert plain.execute("SELECT count(*), max(n) FROM numbers").fetchone() == (rows, rows - 1)


def test_second_writer_gets_a_clear_lock_error(tmp_path: object) -> None:
    import subprocess
    import sys

    data_dir = str(tmp_path)
    Database.open(data_dir).close()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from footfall.store.database import Database; "
         f"db = Database.open({data_dir!r}); print('open', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "open"
        from footfall.errors import StoreLockedError

        with pytest.raises(StoreLockedError, match="open for writing by another process"):
            Database.open(data_dir, read_only=True)
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()


def test_dead_letters_keep_payload_and_reason(database: Database) -> None:
    stored = database.dead_letter(
        "import:orders.csv", [DeadLetter("timestamp", "line 7: bad timestamp 'soon'", "7,soon,buy")]
    )
    assert stored == 1
    rows = database.query("SELECT source, field, reason, payload FROM dead_letters").rows
    assert rows == [("import:orders.csv", "timestamp", "line 7: bad timestamp 'soon'", "7,soon,buy")]
    assert database.summary().dead_letters == 1


def test_upsert_within_one_batch_keeps_the_last_row(database: Database) -> None:
    schema = TABLES["identities"].schema
    when = pa.array([T0, T0], schema.field("updated_at").type)
    batch = pa.table(
        {"project_id": ["default"] * 2, "kind": ["user"] * 2, "value": ["u1", "u1"], "person_id": ["first", "last"], "updated_at": when},
        schema=schema,
    )
    database.upsert("identities", batch)
    assert database.identity_rows() == [("user", "u1", "last")]


@pytest.mark.clickhouse
def test_a_clickhouse_without_materialized_ctes_is_refused(chdb_dsn: str) -> None:
    from footfall.store.clickhouse_backend import ClickHouseBackend

    backend = ClickHouseBackend(chdb_dsn, database="version_check")
    try:
        # The real engine (chdb) has the setting; an older server is played by
        # a client whose settings table lacks it: no old ClickHouse runs here.
        real = backend._client

        class OldServer:
            def query(self, sql: str, **options: object) -> object:
                return real.query(sql.replace("'enable_materialized_cte'", "'no_such_setting'"), **options)

        backend._client = OldServer()
        with pytest.raises(StoreError, match=r"runs version 2\d\.\d+.*needs 26\.3 or later .*materialized CTEs.*upgrade"):
            backend._check_version()
        backend._client = real
        backend._check_version()  # the engine in use passes
    finally:
        backend.close()


def _page_events(database: Database) -> set[tuple[str, str, str]]:
    return set(database.query("SELECT event_id, person_id, path FROM page_events").rows)


def _expected_page_events(database: Database) -> set[tuple[str, str, str]]:
    names = ", ".join(f"'{name}'" for name in PAGE_EVENT_NAMES)
    return set(
        database.query(f"SELECT event_id, person_id, path FROM events WHERE event IN ({names}) AND path IS NOT NULL").rows
    )


def _sample_events() -> list[Event]:
    shapes = [("click", "/", "old"), ("page_view", "/a", "old"), ("click", None, "old"),  # no page: not copied
              ("purchase", "/", "old"), ("scroll", "/a", "keep"), ("rage_click", "/", "keep")]
    events = []
    for number, (name, path, person) in enumerate(shapes):
        event = track(name, f"{number}s", anon=person)
        event.event_id, event.path, event.person_id, event.session_id = f"e{number}", path, person, "s"
        events.append(event)
    return events


def test_clickhouse_keeps_its_page_events_with_the_events(chdb_dsn: str) -> None:
    database = make_clickhouse_database(chdb_dsn)
    try:
        database.insert("events", events_to_table(_sample_events()))
        assert _page_events(database) == _expected_page_events(database) == {
            ("e0", "old", "/"), ("e1", "old", "/a"), ("e4", "keep", "/a"), ("e5", "keep", "/")}
        # A merged person's events move in both tables.
        database.reassign_persons([("old", "new")])
        assert _page_events(database) == _expected_page_events(database) == {
            ("e0", "new", "/"), ("e1", "new", "/a"), ("e4", "keep", "/a"), ("e5", "keep", "/")}
    finally:
        database.backend.execute(f"DROP DATABASE IF EXISTS `{database.backend.database}`")  # type: ignore[attr-defined]
        database.close()


def test_the_page_events_migration_copies_the_stored_events_once(chdb_dsn: str) -> None:
    database = make_clickhouse_database(chdb_dsn)
    try:
        # A store from before the page events: their table, view and version gone.
        database.backend.execute("DROP VIEW page_events_feed")
        database.backend.execute("DROP TABLE page_events")
        database.backend.execute("DELETE FROM schema_version WHERE version >= 4")
        events = _sample_events()
        database.insert("events", events_to_table(events[:4]))
        assert database.migrate() == SCHEMA_VERSION
        assert _page_events(database) == _expected_page_events(database) == {("e0", "old", "/"), ("e1", "old", "/a")}
        database.insert("events", events_to_table(events[4:]))  # and the view copies what comes after
        assert _page_events(database) == _expected_page_events(database)
        assert database.query("SELECT count(*) FROM page_events").rows == [(4,)]
    finally:
        database.backend.execute(f"DROP DATABASE IF EXISTS `{database.backend.database}`")  # type: ignore[attr-defined]
        database.close()


def _codecs(database: Database) -> dict[str, set[str]]:
    rows = database.query(
        "SELECT table, compression_codec FROM system.columns"
        " WHERE database = currentDatabase() AND table IN ('events', 'page_events')"
    ).rows
    found: dict[str, set[str]] = {}
    for table, codec in rows:
        found.setdefault(table, set()).add(codec)
    return found


def test_clickhouse_compresses_the_scanned_tables_with_lz4(chdb_dsn: str) -> None:
    database = make_clickhouse_database(chdb_dsn)
    try:
        assert _codecs(database) == {"events": {"CODEC(LZ4)"}, "page_events": {"CODEC(LZ4)"}}
        # A store from before migration 5: its columns on the default codec.
        for table in ("events", "page_events"):
            for name in database.query(f"SELECT name FROM system.columns WHERE database = currentDatabase() AND table = '{table}'").rows:
                database.backend.execute(f"ALTER TABLE {table} MODIFY COLUMN {name[0]} REMOVE CODEC")
        database.backend.execute("DELETE FROM schema_version WHERE version = 5")
        assert _codecs(database) == {"events": {""}, "page_events": {""}}
        database.insert("events", events_to_table(_sample_events()))
        assert database.migrate() == SCHEMA_VERSION
        assert _codecs(database) == {"events": {"CODEC(LZ4)"}, "page_events": {"CODEC(LZ4)"}}
        assert database.query("SELECT count(*) FROM events").rows == [(6,)]
    finally:
        database.backend.execute(f"DROP DATABASE IF EXISTS `{database.backend.database}`")  # type: ignore[attr-defined]
        database.close()


def test_derived_tables_are_emptied_with_the_events() -> None:
    assert derived_tables("clickhouse") == ("page_events",)
    assert derived_tables("duckdb") == ()
