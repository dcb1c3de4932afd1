"""Saved segments in the pipeline: memberships kept as batches are stored and
as time passes, written to the store as segment_entered / segment_exited
events, surviving a restart and following changes of the saved definitions."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from starlette.testclient import TestClient

from footfall.api.app import create_app
from footfall.api.service import Service
from footfall.pipeline import Pipeline
from footfall.profiles import LiveProfiles
from footfall.segments import live as live_module
from footfall.segments import parse_definition, ready_made, run_members
from footfall.segments.catalog import SegmentCatalog
from footfall.segments.live import LiveSegments
from footfall.simulate import Simulation, SimulationSpec
from footfall.store.database import Database
from footfall.store.duckdb_backend import DuckDBBackend


class Clock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


def batches() -> list[pa.Table]:
    return list(Simulation(SimulationSpec(users=150, days=20, seed=5)).batches(max_rows=1500))


def changes_in_store(database: Database) -> dict[str, set[str]]:
    """Members per segment as the stored change events tell it: entered once
    more than exited, and never entered twice in a row."""
    rows = database.query(
        "SELECT event, person_id, properties FROM events WHERE event IN ('segment_entered', 'segment_exited')"
    ).rows
    balance: Counter[tuple[str, str]] = Counter()
    for event, person, properties in rows:
        balance[json.loads(properties)["segment_id"], person] += 1 if event == "segment_entered" else -1
    assert set(balance.values()) <= {0, 1}, "a person entered a segment twice without leaving it"
    members: dict[str, set[str]] = {}
    for (segment, person), count in balance.items():
        if count:
            members.setdefault(segment, set()).add(person)
    return members


def live_members(live: LiveSegments) -> dict[str, set[str]]:
    assert live.engine is not None
    return {segment: group for segment, group in live.engine.memberships().items() if group}


def sql_members(database: Database, catalog: SegmentCatalog, at: datetime) -> dict[str, set[str]]:
    segments = catalog.definitions()
    found = {item.id: set(run_members(database, item.condition, at, segments=segments)) for item in segments}
    return {segment: group for segment, group in found.items() if group}


def test_the_pipeline_keeps_saved_segments_and_stores_their_changes(database: Database, tmp_path: Path) -> None:
    catalog = SegmentCatalog(tmp_path)
    for definition in ready_made():
        catalog.save(definition)
    traffic = batches()
    clock = Clock(min(table["timestamp"][0].as_py() for table in traffic))
    live = LiveSegments(database, catalog, state_path=tmp_path / "segments.sqlite3", clock=clock)
    pipeline = Pipeline(database, profiles=LiveProfiles(database), segments=live)
    for table in traffic:
        clock.moment = max(clock.moment, max(table["timestamp"].to_pylist()))
        pipeline.ingest(table)
    end = clock.moment
    expected = sql_members(database, catalog, end)
    assert expected, "the simulated traffic put no one in any template"
    assert live_members(live) == expected
    assert changes_in_store(database) == expected

    # Time alone: ten days on, the recent become lapsed, carts expire.
    clock.moment = end + timedelta(days=10)
    assert live.tick()
    later = sql_members(database, catalog, clock.moment)
    assert later != expected
    assert live_members(live) == later
    assert changes_in_store(database) == later

    # The change events are not activity: profiles built from the store ignore them.
    person = next(iter(later["lapsed"]))
    profiles = LiveProfiles(database).load(now=clock.moment)
    [[last_seen]] = database.query(
        f"SELECT max(timestamp) FROM events WHERE person_id = '{person}' AND type <> 'segment'"
    ).rows
    view = profiles.view(person, now=clock.moment)
    assert view is not None
    assert view.last_seen == last_seen.astimezone(UTC)
    live.close()


def test_a_restart_resumes_without_repeating_changes_and_follows_new_definitions(tmp_path: Path) -> None:
    database = Database(DuckDBBackend(tmp_path / "store.duckdb"))
    database.migrate()
    catalog = SegmentCatalog(tmp_path, refresh_every=0)
    for definition in ready_made():
        catalog.save(definition)
    traffic = batches()
    clock = Clock(max(max(table["timestamp"].to_pylist()) for table in traffic))
    first = LiveSegments(database, catalog, clock=clock)
    pipeline = Pipeline(database, segments=first)
    for table in traffic[: len(traffic) // 2]:
        pipeline.ingest(table)
    written = first.changes_written
    assert written
    first.close()

    second = LiveSegments(database, catalog, clock=clock)
    pipeline = Pipeline(database, segments=second)
    pipeline.prepare()
    assert second.changes_written == 0, "a restart with nothing new re-reported changes"
    for table in traffic[len(traffic) // 2 :]:
        pipeline.ingest(table)
    assert live_members(second) == sql_members(database, catalog, clock.moment)
    assert changes_in_store(database) == live_members(second)

    # A new saved segment is picked up by the running engine and backfilled.
    catalog.save(parse_definition({"id": "buyers", "condition": {"performed": {"event": "purchase", "in_last": "30d"}}}))
    changes = second.tick()
    assert {change.segment_id for change in changes} == {"buyers"}
    assert live_members(second) == sql_members(database, catalog, clock.moment)
    assert changes_in_store(database) == live_members(second)

    # Deleted, its members leave it: the stored changes stay balanced.
    buyers = live_members(second)["buyers"]
    catalog.delete("buyers")
    changes = second.tick()
    assert {(change.kind, change.segment_id) for change in changes} == {("segment_exited", "buyers")}
    assert {change.person_id for change in changes} == buyers
    assert "buyers" not in changes_in_store(database)
    second.close()
    database.close()


def test_a_crash_between_commits_loses_nothing_and_repeats_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The state file is committed about once a second; a process killed in
    between restarts from the last commit and replays the change events the
    store took after it, so that no change is reported twice or missed.
    Time-based changes (re-evaluations that came due) happen after the
    commit too: the clock stands about at the end of the first half's
    traffic, and the due times follow the events."""
    monkeypatch.setattr(live_module, "COMMIT_EVERY", 3600.0)  # commits only when the test asks
    database = Database(DuckDBBackend(tmp_path / "store.duckdb"))
    database.migrate()
    catalog = SegmentCatalog(tmp_path, refresh_every=0)
    for definition in ready_made():
        catalog.save(definition)
    traffic = batches()
    half = len(traffic) // 2
    clock = Clock(max(max(table["timestamp"].to_pylist()) for table in traffic[:half]))
    first = LiveSegments(database, catalog, clock=clock)
    pipeline = Pipeline(database, segments=first)
    for number, table in enumerate(traffic[:half]):
        clock.moment += timedelta(seconds=1)  # as a wall clock moves: each batch's changes are dated apart
        pipeline.ingest(table)
        if number == half // 3:
            assert first.engine is not None
            first.engine.commit()  # as the server's timer would, a third of the way in
    assert first.engine is not None
    assert first.engine.state is not None
    committed = first.engine.state.load().changes_ms
    assert committed is not None
    after_commit = database.query(
        "SELECT count(*), count(DISTINCT properties) FROM events"
        f" WHERE type = 'segment' AND epoch_ms(received_at) > {committed}"
    ).rows[0]
    assert after_commit[0] > 20, "few changes came after the commit: the test shows little"
    assert after_commit[1] >= 4, "changes of few segments came after the commit"
    assert first._state is not None
    first._state.close()  # killed: no commit, the engine's memory is lost

    second = LiveSegments(database, catalog, clock=clock)
    pipeline = Pipeline(database, segments=second)
    pipeline.prepare()
    assert second.changes_written == 0, "a restart re-reported changes the store holds"
    assert live_members(second) == changes_in_store(database)
    clock.moment = max(max(table["timestamp"].to_pylist()) for table in traffic)
    for table in traffic[half:]:
        pipeline.ingest(table)
    clock.moment += timedelta(days=40)  # everyone lapses, nobody is still browsing
    second.tick()
    assert live_members(second) == sql_members(database, catalog, clock.moment)
    assert changes_in_store(database) == live_members(second)
    second.close()
    database.close()


def test_the_server_worker_writes_changes_and_lets_time_pass(tmp_path: Path) -> None:
    service = Service(tmp_path, fsync=False, start_worker=False)
    try:
        write_key, _ = service.keys.create("write", "web")
        service.catalog.save(
            parse_definition({"id": "carted", "condition": {"performed": {"event": "add_to_cart", "in_last": "1d"}}})
        )
        now = datetime.now(UTC)
        clock = Clock(now)
        service.segments.clock = clock  # before the worker first starts the engine
        with TestClient(create_app(service.database, "token", service=service)) as client:
            answer = client.post(
                "/v1/batch",
                json={"batch": [{"type": "track", "event": "add_to_cart", "anonymousId": "a1", "messageId": "m1",
                                 "timestamp": (now - timedelta(hours=1)).isoformat()}]},
                auth=(write_key, ""),
            )
            assert answer.status_code == 200
        service.worker.process_available()
        [[entered]] = service.database.query("SELECT count(*) FROM events WHERE event = 'segment_entered'").rows
        assert entered == 1
        # Two days on, with no new events, the worker's tick lets the person out.
        clock.moment = now + timedelta(days=2)
        service.worker.tick()
        [[exited]] = service.database.query("SELECT count(*) FROM events WHERE event = 'segment_exited'").rows
        assert exited == 1
    finally:
        service.close()


def test_a_person_merged_into_a_new_one_hands_over_its_segments() -> None:
    """The merged person leaves; the surviving person, new to the engine, enters
    (once found: the renamed state kept the old membership bits and the new
    person was never recorded as a member)."""
    from footfall.segments.engine import SegmentEngine

    active = parse_definition({"id": "active", "condition": {"last_seen": {"within": "1d"}}})
    moment = datetime(2024, 3, 1, 12, tzinfo=UTC)
    engine = SegmentEngine([active], clock=lambda: moment + timedelta(minutes=30))

    def batch(person: str) -> pa.Table:
        stamp = pa.array([moment], pa.timestamp("ms", tz="UTC"))
        return pa.table({"person_id": [person], "event": ["page_view"], "session_id": ["s1"], "timestamp": stamp,
                         "received_at": stamp, "properties": ["{}"]})

    engine.on_batch(batch("anonymous"))
    changes = engine.on_batch(batch("user"), merges=[("anonymous", "user")])
    assert [(change.kind, change.person_id) for change in changes] == [
        ("segment_exited", "anonymous"), ("segment_entered", "user")
    ]
    assert engine.memberships() == {"active": {"user"}}
    assert engine.member_since("active", "user") == moment + timedelta(minutes=30)


def test_clients_cannot_send_the_membership_event_names(tmp_path: Path) -> None:
    service = Service(tmp_path, fsync=False, start_worker=False)
    try:
        write_key, _ = service.keys.create("write", "web")
        with TestClient(create_app(service.database, "token", service=service)) as client:
            answer = client.post(
                "/v1/track", json={"type": "track", "event": "segment_entered", "anonymousId": "a1"}, auth=(write_key, "")
            )
        assert answer.status_code == 400
        assert answer.json()["error"]["field"] == "$.event"
        assert "reserved" in answer.json()["error"]["message"]
    finally:
        service.close()


def test_definitions_changed_between_batches_do_not_count_a_batch_twice(tmp_path: Path) -> None:
    """The engine restarts from the store when the saved segments change; the
    store already holds the batch that triggers it, which must not be fed
    again (counts would double)."""
    database = Database(DuckDBBackend(tmp_path / "store.duckdb"))
    database.migrate()
    catalog = SegmentCatalog(tmp_path, refresh_every=0)
    catalog.save(parse_definition({"id": "viewers", "condition": {"performed": {"event": "view_product", "in_last": "30d"}}}))
    traffic = batches()
    clock = Clock(max(max(table["timestamp"].to_pylist()) for table in traffic))
    live = LiveSegments(database, catalog, clock=clock)
    pipeline = Pipeline(database, segments=live)
    pipeline.ingest(traffic[0])
    # Exactly two views: a batch counted twice would put one-view persons in.
    catalog.save(parse_definition({"id": "two_views", "condition": {
        "performed": {"event": "view_product", "count": {"eq": 2}, "in_last": "30d"}}}))
    for table in traffic[1:]:
        pipeline.ingest(table)
    assert live_members(live) == sql_members(database, catalog, clock.moment)
    assert live_members(live)["two_views"]
    assert changes_in_store(database) == live_members(live)
    live.close()
    database.close()


def test_a_damaged_catalog_never_fails_the_pipeline(tmp_path: Path) -> None:
    database = Database(DuckDBBackend(tmp_path / "store.duckdb"))
    database.migrate()
    catalog = SegmentCatalog(tmp_path, refresh_every=0)
    catalog.save(parse_definition({"id": "viewers", "condition": {"performed": {"event": "view_product", "in_last": "30d"}}}))
    traffic = batches()
    clock = Clock(max(max(table["timestamp"].to_pylist()) for table in traffic))
    live = LiveSegments(database, catalog, clock=clock)
    pipeline = Pipeline(database, segments=live)
    pipeline.ingest(traffic[0])
    catalog.file.path.write_text("{not json")
    report = pipeline.ingest(traffic[1])
    assert report.events == traffic[1].num_rows, "the batch is stored whatever the segments do"
    assert live.failures == 1
    assert live.last_error is not None
    assert "segments.json is damaged" in live.last_error
    # Fixed (here: written again), the engine restarts from the store and catches up.
    catalog.file.path.unlink()
    catalog.save(parse_definition({"id": "viewers", "condition": {"performed": {"event": "view_product", "in_last": "30d"}}}))
    for table in traffic[2:]:
        pipeline.ingest(table)
    assert live_members(live) == sql_members(database, catalog, clock.moment)
    live.close()
    database.close()


def test_membership_changes_are_not_activity_in_analyses(database: Database, tmp_path: Path) -> None:
    """KPIs and trends over every event read the same before and after the
    server records a wave of time-based exits inside their range."""
    from footfall.analytics import kpis, trends
    from footfall.analytics.common import DateRange
    from footfall.analytics.kpis import KpiSpec
    from footfall.analytics.trends import TrendSpec

    catalog = SegmentCatalog(tmp_path)
    catalog.save_all(ready_made())
    traffic = batches()
    end = max(max(table["timestamp"].to_pylist()) for table in traffic)
    clock = Clock(end)
    live = LiveSegments(database, catalog, state_path=tmp_path / "segments.sqlite3", clock=clock)
    pipeline = Pipeline(database, segments=live)
    for table in traffic:
        pipeline.ingest(table)
    period = DateRange(end - timedelta(days=30), end + timedelta(days=30))
    measures = [
        lambda: kpis.run(database, KpiSpec(date_range=period, conversion_event="purchase")),
        lambda: trends.run(database, TrendSpec(date_range=period, measure="persons")),
        lambda: trends.run(database, TrendSpec(date_range=period)),
    ]
    before = [measure() for measure in measures]
    clock.moment = end + timedelta(days=20)
    assert [change for change in live.tick() if change.kind == "segment_exited"]
    assert [measure() for measure in measures] == before
    live.close()


@pytest.mark.parametrize("mode", ["ordered", "strict"])
def test_a_funnel_can_start_at_a_segment_entry(tmp_path: Path, mode: str) -> None:
    """Named, the membership changes read like any event; unnamed, they never
    interrupt a strict funnel."""
    from footfall.analytics import funnels
    from footfall.analytics.funnels import FunnelSpec, FunnelStep

    database = Database(DuckDBBackend(tmp_path / "store.duckdb"))
    database.migrate()
    catalog = SegmentCatalog(tmp_path)
    catalog.save(parse_definition({"id": "viewers", "condition": {"performed": {"event": "view_product", "in_last": "30d"}}}))
    from .timeline import T0, track

    clock = Clock(T0 + timedelta(minutes=1))
    pipeline = Pipeline(database, segments=LiveSegments(database, catalog, clock=clock))
    pipeline.ingest_events([track("view_product", "0s", anon="a1")])  # enters "viewers" at 1 min
    clock.moment = T0 + timedelta(minutes=3)
    pipeline.ingest_events([track("add_to_cart", "2m", anon="a1")])
    [[entered]] = database.query("SELECT count(*) FROM events WHERE event = 'segment_entered'").rows
    assert entered == 1
    spec = FunnelSpec(steps=(FunnelStep("segment_entered"), FunnelStep("add_to_cart")), mode=mode)
    started = funnels.run(database, spec, known_events_only=False).overall.steps[0].count
    assert started == 1
    plain = FunnelSpec(steps=(FunnelStep("view_product"), FunnelStep("add_to_cart")), mode=mode)
    assert [step.count for step in funnels.run(database, plain, known_events_only=False).overall.steps] == [1, 1]
    database.close()
