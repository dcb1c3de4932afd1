"""The pipeline end to end on every backend: identity, sessions, persons, replays."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from footfall.errors import IngestError
from footfall.events import Event
from footfall.pipeline import Pipeline
from footfall.store.database import Database

from .timeline import T0, at, identify, msg, track


def rows(database: Database, sql: str) -> list[tuple[object, ...]]:
    return database.query(sql).rows


def person_of(database: Database, event: str) -> str:
    found = {row[0] for row in rows(database, f"SELECT person_id FROM events WHERE event = '{event}'")}
    assert len(found) == 1, found
    return str(found.pop())


def test_anonymous_browsing_then_sign_up_is_one_person(database: Database) -> None:
    # anon a1: page@0, view@5m; identify a1→u1 @6m; u1: purchase@100m (other session)
    Pipeline(database).ingest_events(
        [
            msg("page", at_="0s", anon="a1", properties={"path": "/"}),
            track("view_product", "5m", anon="a1"),
            identify("6m", anon="a1", user="u1", traits={"plan": "pro", "email": "u1@x.io"}),
            track("purchase", "100m", user="u1", properties={"revenue": 9.5}),
        ]
    )
    assert rows(database, "SELECT count(DISTINCT person_id) FROM events") == [(1,)]
    sessions = rows(database, "SELECT event, session_id FROM events ORDER BY timestamp")
    assert sessions[0][1] == sessions[1][1] == sessions[2][1] != sessions[3][1]
    [(user_id, traits, first_seen, last_seen)] = rows(database, f"SELECT user_id, traits, first_seen, last_seen FROM {database.backend.final('persons')}")
    assert user_id == "u1"
    assert json.loads(str(traits)) == {"plan": "pro", "email": "u1@x.io"}
    assert (first_seen, last_seen) == (T0, at("100m"))


def test_second_device_history_moves_to_the_user_across_batches(database: Database) -> None:
    pipeline = Pipeline(database)
    pipeline.ingest_events([identify("0s", anon="laptop", user="u1"), track("on_laptop", "1m", user="u1")])
    pipeline.ingest_events([track("on_phone", "2d", anon="phone")])
    assert person_of(database, "on_phone") != person_of(database, "on_laptop")
    report = pipeline.ingest_events([identify("2d1m", anon="phone", user="u1")])
    assert report.merges == 1
    assert person_of(database, "on_phone") == person_of(database, "on_laptop")
    assert rows(database, f"SELECT count(*) FROM {database.backend.final('persons')}") == [(1,)]
    assert rows(database, "SELECT count(*) FROM person_merges") == [(1,)]


def test_two_users_on_one_browser_stay_apart(database: Database) -> None:
    Pipeline(database).ingest_events(
        [
            identify("0s", anon="shared", user="alice"),
            track("alice_buys", "1m", anon="shared", user="alice"),
            identify("1h", anon="shared", user="bob"),
            track("bob_buys", "61m", anon="shared", user="bob"),
        ]
    )
    assert person_of(database, "alice_buys") != person_of(database, "bob_buys")


def test_alias_joins_old_and_new_ids(database: Database) -> None:
    Pipeline(database).ingest_events(
        [
            track("before", "0s", user="old@example.com"),
            msg("alias", at_="1m", user="new@example.com", previousId="old@example.com"),
            track("after", "2m", user="new@example.com"),
        ]
    )
    assert person_of(database, "before") == person_of(database, "after")


def test_state_survives_a_new_pipeline(database: Database) -> None:
    Pipeline(database).ingest_events([track("first", "0s", anon="a1"), identify("1m", anon="a1", user="u1")])
    # A new pipeline (a restart) loads identities and session tails from the store.
    Pipeline(database).ingest_events([track("second", "10m", user="u1"), track("third", "2h", anon="a1")])
    assert len({person_of(database, name) for name in ("first", "second", "third")}) == 1
    session = dict(rows(database, "SELECT event, session_id FROM events"))
    assert session["first"] == session["second"] != session["third"]


def test_replay_into_a_fresh_store_gives_identical_ids(database: Database, tmp_path: object) -> None:
    events = [
        track("a", "0s", anon="x"),
        identify("1m", anon="x", user="u"),
        track("b", "3h", anon="y"),
        identify("3h1m", anon="y", user="u"),
    ]
    Pipeline(database).ingest_events(events)
    from footfall.store.duckdb_backend import DuckDBBackend

    fresh = Database(DuckDBBackend(tmp_path / "replay.duckdb"))  # type: ignore[operator]
    fresh.migrate()
    Pipeline(fresh).ingest_events(events[:2])
    Pipeline(fresh).ingest_events(events[2:])
    query = "SELECT event_id, person_id, session_id FROM events ORDER BY event_id"
    assert rows(fresh, query) == rows(database, query)
    fresh.close()


def test_project_mismatch_is_refused(database: Database) -> None:
    event = track("e", "0s", anon="a")
    other = Event(**{**{f: getattr(event, f) for f in event.__struct_fields__}, "project_id": "other"})
    with pytest.raises(IngestError, match="this pipeline writes project 'default'"):
        Pipeline(database).ingest_events([other])


def test_empty_batch_is_a_no_op(database: Database) -> None:
    assert Pipeline(database).ingest(pa.table({"event_id": pa.array([], pa.string())})).events == 0


def test_a_failed_write_leaves_the_store_consistent_and_a_retry_succeeds(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = Pipeline(database)
    pipeline.ingest_events([track("first", "0s", anon="a1")])
    batch = [identify("1m", anon="a1", user="u1"), track("second", "2m", user="u1")]

    real_insert = database.insert

    def failing_insert(table: str, data: pa.Table) -> None:
        if table == "events":
            raise OSError("disk full")
        real_insert(table, data)

    monkeypatch.setattr(database, "insert", failing_insert)
    with pytest.raises(OSError, match="disk full"):
        pipeline.ingest_events(batch)
    monkeypatch.setattr(database, "insert", real_insert)
    assert rows(database, "SELECT count(*) FROM events") == [(1,)]

    pipeline.ingest_events(batch)
    assert rows(database, "SELECT count(*) FROM events") == [(3,)]
    assert len({person_of(database, name) for name in ("first", "second")}) == 1


def test_retries_and_replays_are_stored_once(database: Database) -> None:
    pipeline = Pipeline(database)
    first = [track("view", "0s", anon="a", messageId="m1"), track("cart", "1m", anon="a", messageId="m2")]
    assert pipeline.ingest_events(first).events == 2
    # A client retry of m2 plus a new message; m3 sent twice in one batch.
    again = [track("cart", "1m", anon="a", messageId="m2"), track("buy", "2m", anon="a", messageId="m3"),
             track("buy", "2m", anon="a", messageId="m3")]
    report = pipeline.ingest_events(again)
    assert (report.events, report.duplicates) == (1, 2)
    # A restarted pipeline replaying everything stores nothing new.
    replay = Pipeline(database).ingest_events(first + again)
    assert (replay.events, replay.duplicates) == (0, 5)
    assert rows(database, "SELECT count(*), count(DISTINCT event_id) FROM events") == [(3, 3)]


def test_device_first_seen_and_merged_in_one_batch(database: Database) -> None:
    pipeline = Pipeline(database)
    pipeline.ingest_events([track("on_laptop", "0s", user="u1")])
    report = pipeline.ingest_events([track("on_phone", "1d", anon="phone"), identify("1d1m", anon="phone", user="u1")])
    assert report.merges == 1
    assert person_of(database, "on_phone") == person_of(database, "on_laptop")
    assert rows(database, f"SELECT count(*) FROM {database.backend.final('persons')}") == [(1,)]


def test_retries_are_dropped_whether_remembered_or_looked_up(database: Database) -> None:
    pipeline = Pipeline(database, remember_ids=True)
    first = [track("a", "0s", anon="x", messageId="m1"), track("b", "1s", anon="x", messageId="m2")]
    second = [track("c", "2s", anon="x", messageId="m3"), track("d", "3s", anon="x", messageId="m4")]
    assert pipeline.ingest_events(first).events == 2
    assert pipeline.ingest_events(second).events == 2
    # These events are timed before the pipeline loaded its hashes, so the
    # store answers for them; the retries are dropped all the same.
    assert pipeline.ingest_events(first + second).duplicates == 4
    # A restarted worker loads the hashes of what the store holds.
    restarted = Pipeline(database, remember_ids=True)
    assert restarted.ingest_events([*first, track("e", "4s", anon="x", messageId="m5")]).duplicates == 2
    assert Pipeline(database).ingest_events(second).duplicates == 2  # without memory: always the store
    assert rows(database, "SELECT count(*) FROM events") == [(5,)]


def test_remembered_ids_spare_the_store_and_still_catch_retries(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.now(UTC)
    stored_before = [track("old", "0s", anon="y", messageId="early")]
    stored_before[0].timestamp = stored_before[0].received_at = now - timedelta(hours=1)
    Pipeline(database).ingest_events(stored_before)
    pipeline = Pipeline(database, remember_ids=True)
    asked: list[list[str]] = []
    real = database.stored_event_ids

    def spy(ids: pa.Array, since: datetime, until: datetime) -> set[str]:
        asked.append(sorted(ids.to_pylist()))
        return real(ids, since, until)

    monkeypatch.setattr(database, "stored_event_ids", spy)

    def live(message_id: str, seconds: int) -> Event:
        event = track("view", "0s", anon="y", messageId=message_id)
        event.timestamp = event.received_at = now + timedelta(seconds=seconds)
        return event

    assert pipeline.ingest_events([live("n1", 1), live("n2", 2)]).events == 2
    assert asked == []  # new ids, timed after the hashes were loaded: no store query
    retry = live("n1", 1)
    late_retry = stored_before[0]  # stored before the pipeline started, known from its hashes
    late_retry.timestamp = now - timedelta(hours=1)
    report = pipeline.ingest_events([retry, late_retry, live("n3", 3)])
    assert (report.events, report.duplicates) == (1, 2)
    assert asked == [["early", "n1"]]  # only the ids whose hashes matched
    assert rows(database, "SELECT count(*) FROM events") == [(4,)]
