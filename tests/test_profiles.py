"""Live profiles: hand-checked timelines, and the incremental book agreeing with
one loaded from the store, on both backends."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import msgspec
import pyarrow as pa
import pytest

from footfall.config import EngagementSettings, ProfileSettings, ProjectConfig
from footfall.pipeline import Pipeline
from footfall.profiles import LiveProfiles, ProfileBook, ProfileView
from footfall.profiles.state import StoredEvent
from footfall.simulate import Simulation, SimulationSpec
from footfall.store.database import Database

from .timeline import T0, at, identify, msg, track

SETTINGS = ProfileSettings(windows=["1d", "7d"], properties=["plan", "product_id"])


def configure(database: Database, engagement: EngagementSettings | None = None) -> None:
    database.config = ProjectConfig(profiles=SETTINGS, engagement=engagement or EngagementSettings())


def person_of(database: Database, kind: str, value: str) -> str:
    """The person an identity belongs to now (ClickHouse may still hold its earlier row)."""
    [person] = [person for k, v, person in database.identity_rows() if (k, v) == (kind, value)]
    return person


def test_a_profile_counts_windows_revenue_latest_values_and_engagement(database: Database) -> None:
    configure(database)
    profiles = LiveProfiles(database)
    pipeline = Pipeline(database, profiles=profiles)
    pipeline.ingest_events([
        track("page_view", "-10d", anon="a1", properties={"signal": "passive", "plan": "basic"}),
        track("page_view", "-3d", anon="a1", properties={"signal": "passive"}),
        track("page_view", "-2h", anon="a1", properties={"signal": "passive", "product_id": "p-9"}),
        track("add_to_cart", "-90m", anon="a1", properties={"signal": "active", "product_id": "p-7"}),
    ])
    # A second visitor, identified as the same user later: two persons merge.
    pipeline.ingest_events([track("purchase", "-1h", anon="a2", properties={"revenue": 40.5, "plan": "free"})])
    pipeline.ingest_events([
        identify("-50m", anon="a1", user="u1", traits={"email": "u1@example.com"}),
        identify("-40m", anon="a2", user="u1"),
        track("purchase", "-30m", user="u1", properties={"revenue": 9, "plan": "pro"}),
        track("purchase", "-20m", user="u1", properties={"revenue": "12"}),  # a string is not revenue
        track("plan_viewed", "-20m", user="u1", properties={"plan": None}),  # null keeps the last value
    ])
    person = person_of(database, "user", "u1")
    assert person_of(database, "anonymous", "a2") == person
    view = profiles.view(person, now=T0)
    assert view is not None
    assert (view.user_id, view.traits) == ("u1", {"email": "u1@example.com"})
    assert (view.first_seen, view.last_seen) == (at("-10d"), at("-20m"))
    assert view.events == 10
    assert view.revenue == 49.5
    assert view.last_values == {"plan": "pro", "product_id": "p-7"}
    assert view.counts == {
        "1d": {"add_to_cart": 1, "identify": 2, "page_view": 1, "plan_viewed": 1, "purchase": 3},
        "7d": {"add_to_cart": 1, "identify": 2, "page_view": 2, "plan_viewed": 1, "purchase": 3},
    }
    # 30-day engagement: three passive views at 0.5, a cart add at 3, three purchases at 5.
    assert view.engagement_score == 3 * 0.5 + 3 + 3 * 5
    assert view.sessions >= 2
    # Windows are whole hours: at 12:59 the day still starts at 12:00 yesterday.
    later = profiles.view(person, now=T0 + timedelta(minutes=59))
    assert later is not None
    assert later.counts["1d"] == view.counts["1d"]
    # A day and an hour on, the events of the last day have left the 1-day window.
    assert profiles.view(person, now=T0 + timedelta(days=1, hours=1)).counts["1d"] == {}  # type: ignore[union-attr]
    # A restarted worker loads the same profile from the store.
    assert LiveProfiles(database).load(now=T0).view(person, now=T0) == view


def test_recency_decay_halves_an_event_per_half_life(database: Database) -> None:
    configure(database, EngagementSettings(window="30d", recency_half_life="1d", weights={"purchase": 4.0}))
    profiles = LiveProfiles(database)
    Pipeline(database, profiles=profiles).ingest_events(
        [track("purchase", "-2d", anon="d1"), track("purchase", "-30m", anon="d1"), track("page_view", "-1m", anon="d1")]
    )
    person = person_of(database, "anonymous", "d1")
    # Ages are whole hours: 12:00 two days ago is 48 h old (a quarter), 11:30 today 1 h old.
    expected = 4 * 0.25 + 4 * 0.5 ** (1 / 24)
    assert profiles.view(person, now=T0).engagement_score == pytest.approx(expected, abs=1e-6)  # type: ignore[union-attr]
    assert LiveProfiles(database).load(now=T0).view(person, now=T0).engagement_score == pytest.approx(expected, abs=1e-6)  # type: ignore[union-attr]


def _normalised(views: dict[str, ProfileView]) -> dict[str, dict[str, object]]:
    """Views as plain data, revenue rounded (float sums differ in the last bits by order)."""
    plain = msgspec.to_builtins(views)
    for view in plain.values():
        view["revenue"] = round(view["revenue"], 4)
        view["engagement_score"] = round(view["engagement_score"], 4)
    return plain  # type: ignore[no-any-return]


def test_profiles_kept_by_the_pipeline_equal_profiles_loaded_from_the_store(database: Database) -> None:
    database.config = ProjectConfig(
        profiles=ProfileSettings(windows=["1d", "7d", "30d"], properties=["product_id", "category"]),
        engagement=EngagementSettings(recency_half_life="7d"),
    )
    simulation = Simulation(SimulationSpec(users=60, days=12, seed=3))
    profiles = LiveProfiles(database)
    pipeline = Pipeline(database, profiles=profiles)
    latest = datetime(1970, 1, 1, tzinfo=UTC)
    for table in simulation.batches(max_rows=700):
        pipeline.ingest(table)
        latest = max(latest, table["timestamp"].to_pylist()[-1], *table["timestamp"].to_pylist())
    # The same identities merged along the way, and a few retries that must count once.
    retry = next(simulation.batches(max_rows=50))
    assert pipeline.ingest(retry).events == 0
    for now in (latest, latest - timedelta(days=3, minutes=17)):
        incremental = profiles.views(now)
        loaded = LiveProfiles(database).load(now).views(now)
        assert incremental.keys() == loaded.keys()
        assert len(incremental) > 40
        assert _normalised(incremental) == _normalised(loaded)
    assert any(view.last_values for view in incremental.values())
    assert any(view.engagement_score > 0 for view in incremental.values())


def test_profile_settings_name_what_is_wrong() -> None:
    for settings, problem in [
        ({"windows": ["90m"]}, "whole hours"),
        ({"windows": []}, "at least one window"),
        ({"windows": ["7d", "7d"]}, "listed twice"),
        ({"properties": ["a'b"]}, "not a property name"),
        ({"windows": ["2y"]}, "windows"),
    ]:
        with pytest.raises(msgspec.ValidationError, match=problem):
            msgspec.convert(settings, ProfileSettings)


def test_an_unknown_person_has_no_profile(database: Database) -> None:
    profiles = LiveProfiles(database).load()
    assert profiles.view("nobody") is None
    Pipeline(database, profiles=profiles).ingest_events([msg("page", anon="p1", name="Home")])
    assert profiles.view(person_of(database, "anonymous", "p1")) is not None


def test_batches_applied_by_groups_equal_events_applied_one_by_one(database: Database) -> None:
    database.config = ProjectConfig(profiles=ProfileSettings(properties=["product_id"]), engagement=EngagementSettings())
    profiles = LiveProfiles(database)
    pipeline = Pipeline(database, profiles=profiles)
    one_by_one = ProfileBook(database.config.profiles, database.config.engagement)
    for table in Simulation(SimulationSpec(users=40, days=5, seed=11)).batches(max_rows=400):
        pipeline.ingest(table)
    stored = database.query_arrow("SELECT * FROM events ORDER BY received_at, event_id").to_pylist()
    for row in stored:
        one_by_one.apply(StoredEvent(row["event_id"], row["person_id"], row["event"], row["session_id"],
                                     int(row["timestamp"].timestamp() * 1000), json.loads(row["properties"])))
    for row in database.persons_arrow().to_pylist():
        one_by_one.set_person(row["person_id"], row["user_id"], json.loads(row["traits"]))
    now = max(row["timestamp"] for row in stored)
    expected = {person: one_by_one.view(profile, now) for person, profile in one_by_one.profiles.items()}
    assert _normalised(profiles.views(now)) == _normalised(expected)


def test_small_batches_recorded_event_by_event_equal_batches_recorded_by_groups(database: Database) -> None:
    """Batches of up to 32 events take the event-by-event path; the profiles
    must be the same as those of the grouped path, merges included. The
    engine state (the profiles) is kept per pipeline; both read one store."""
    database.config = ProjectConfig(profiles=ProfileSettings(properties=["product_id"]), engagement=EngagementSettings())
    simulation = Simulation(SimulationSpec(users=30, days=4, seed=5))
    grouped = LiveProfiles(database)
    pipeline = Pipeline(database, profiles=grouped)
    tables = list(simulation.batches(max_rows=500))
    for table in tables:
        pipeline.ingest(table)
    stored = database.query_arrow("SELECT * FROM events ORDER BY received_at, event_id")
    # As the pipeline hands them over: times in milliseconds.
    stored = stored.set_column(
        stored.schema.get_field_index("timestamp"), "timestamp", stored["timestamp"].cast(pa.timestamp("ms", tz="UTC"))
    )
    persons, merges = database.persons_arrow(), []
    small = LiveProfiles(database)
    for start in range(0, stored.num_rows, 7):  # the same stored events, 7 at a time
        small.record(stored.slice(start, 7), persons.slice(0, 0), merges)
    small.record(stored.slice(0, 0), persons, merges)
    now = max(stored["timestamp"].to_pylist())
    assert len(small.views(now)) > 20
    assert _normalised(small.views(now)) == _normalised(grouped.views(now))
