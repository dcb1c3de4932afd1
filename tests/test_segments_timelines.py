"""Segments on hand-written timelines: per condition kind, who is in the
segment when, with the answer beside the events. Every expectation is
checked twice, on both backends: the incremental engine (fed by the
pipeline, moved by a controllable clock) and the SQL compiler at that time.

Persons are named by their user id; T0 is 2024-03-01 12:00 UTC and offsets
like ``-6d`` or ``1d1h`` are relative to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa

from footfall.config import EngagementSettings, ProjectConfig
from footfall.events import Event
from footfall.pipeline import Pipeline
from footfall.profiles import LiveProfiles
from footfall.segments import (
    MembershipChange,
    SegmentDefinition,
    SegmentEngine,
    SegmentSet,
    parse_definition,
    run_members,
)
from footfall.segments.templates import cart_abandoners
from footfall.store.database import Database

from .timeline import T0, at, identify, track


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class World:
    """A store, the pipeline, and an engine fed by it, on a clock tests move."""

    def __init__(self, database: Database, definitions: Sequence[SegmentDefinition], *, scores_table: str | None = None) -> None:
        self.database = database
        self.clock = Clock()
        self.segments = SegmentSet(definitions)
        self.engine = SegmentEngine(self.segments, engagement=database.config.engagement, clock=self.clock)
        self.pipeline = Pipeline(database, profiles=self)  # type: ignore[arg-type]
        self.changes: list[MembershipChange] = []
        self.scores_table = scores_table

    # The pipeline's profiles hook: it hands over each stored batch.
    def load(self) -> World:
        return self

    def record(self, events: pa.Table, persons: pa.Table, merges: Sequence[tuple[str, str]]) -> None:
        self.changes += self.engine.on_batch(events, merges, persons)

    def ingest(self, events: Iterable[Event], *, now: str = "0s") -> list[MembershipChange]:
        self.clock.now = max(self.clock.now, at(now))
        before = len(self.changes)
        self.pipeline.ingest_events(list(events))
        return self.changes[before:]

    def advance(self, offset: str) -> list[MembershipChange]:
        self.clock.now = at(offset)
        changes = self.engine.advance()
        self.changes += changes
        return changes

    def names(self, persons: Iterable[str]) -> set[str]:
        rows = self.database.query("SELECT person_id, value FROM identities WHERE kind = 'user'").rows
        by_person = {str(person): str(user) for person, user in rows}
        return {by_person.get(person, person) for person in persons}

    def expect(self, offset: str, **expected: set[str]) -> None:
        """Advance the engine to ``offset``; each segment's members, by the
        engine and by SQL at that time, are the expected users."""
        self.advance(offset)
        for segment, users in expected.items():
            incremental = self.names(self.engine.members(segment))
            batch = self.names(
                run_members(self.database, self.segments[segment].condition, at(offset), segments=self.segments, scores_table=self.scores_table)
            )
            assert (incremental, batch) == (users, users), f"{segment} at {offset}"


def segment(segment_id: str, condition: dict[str, Any]) -> SegmentDefinition:
    return parse_definition({"id": segment_id, "condition": condition})


def moves(changes: Iterable[MembershipChange], world: World) -> list[tuple[str, str, str, datetime, str]]:
    return [
        (change.kind.removeprefix("segment_"), change.segment_id, next(iter(world.names([change.person_id]))), change.at, change.reason)
        for change in changes
    ]


# -- event counts in a window --------------------------------------------------------------

BROWSERS = segment(
    "browsers",
    {
        "performed": {
            "event": "view_product",
            "where": [{"field": "properties.category", "op": "eq", "value": "shoes"}],
            "count": {"gte": 3},
            "in_last": "7d",
        }
    },
)


def test_viewed_a_product_3_times_in_7_days_enters_and_leaves_on_the_hour(database: Database) -> None:
    world = World(database, [BROWSERS])
    shoes = {"category": "shoes"}
    world.ingest([
        # ann: three shoe views within the week.
        track("view_product", "-6d", user="ann", properties=shoes),
        track("view_product", "-3d", user="ann", properties=shoes),
        track("view_product", "-1h", user="ann", properties=shoes),
        # bob: three views, one of hats.
        track("view_product", "-2d", user="bob", properties=shoes),
        track("view_product", "-1d", user="bob", properties=shoes),
        track("view_product", "-1h", user="bob", properties={"category": "hats"}),
        # cyd: the first view is 7 days and 30 minutes old: before the window's 12:00 start.
        track("view_product", "-7d30m", user="cyd", properties=shoes),
        track("view_product", "-2d", user="cyd", properties=shoes),
        track("view_product", "-1h", user="cyd", properties=shoes),
    ])
    world.expect("0s", browsers={"ann"})
    # Windows are whole hours: ann's view at 12:00 six days ago stays in the
    # 7-day window until 13:00 tomorrow.
    world.expect("1d59m", browsers={"ann"})
    assert moves(world.advance("1d1h"), world) == [("exited", "browsers", "ann", at("1d1h"), "time")]
    world.expect("1d1h", browsers=set())
    # A fourth view brings ann back in, at once.
    entered = world.ingest([track("view_product", "1d2h", user="ann", properties=shoes)], now="1d2h")
    assert moves(entered, world) == [("entered", "browsers", "ann", at("1d2h"), "event")]


def test_no_login_in_30_days_with_and_without_those_who_never_logged_in(database: Database) -> None:
    never_included = segment("no_login", {"performed": {"event": "login", "count": {"eq": 0}, "in_last": "30d"}})
    logged_in_before = segment("lapsed_login", {"last_performed": {"event": "login", "more_than": "30d"}})
    world = World(database, [never_included, logged_in_before])
    world.ingest([
        track("login", "-40d", user="ann"),
        track("page_view", "-1d", user="ann"),
        track("login", "-2d", user="bob"),
        track("page_view", "-1h", user="cyd"),  # never logged in
    ])
    world.expect("0s", no_login={"ann", "cyd"}, lapsed_login={"ann"})
    world.expect("28d", no_login={"ann", "cyd"}, lapsed_login={"ann"})
    # bob's login at 12:00 two days ago leaves the 30-day window at 13:00 in 28 days.
    world.expect("28d1h", no_login={"ann", "bob", "cyd"}, lapsed_login={"ann", "bob"})
    world.ingest([track("login", "28d2h", user="ann")], now="28d2h")
    world.expect("28d2h", no_login={"bob", "cyd"}, lapsed_login={"bob"})


def test_recency_last_and_first_seen(database: Database) -> None:
    world = World(database, [
        segment("recent", {"last_seen": {"within": "7d"}}),
        segment("lapsed", {"last_seen": {"more_than": "7d"}}),
        segment("new", {"first_seen": {"within": "2d"}}),
        segment("old_hands", {"first_seen": {"more_than": "30d"}}),
    ])
    world.ingest([
        track("page_view", "-60d", user="ann"),
        track("page_view", "-6d", user="ann"),
        track("page_view", "-10d", user="bob"),
        track("page_view", "-1d", user="cyd"),
    ])
    world.expect("0s", recent={"ann", "cyd"}, lapsed={"bob"}, new={"cyd"}, old_hands={"ann"})
    # Windows end on the hour: at 12:00 a day later, the events of 12:00 are still in.
    world.expect("1d", recent={"ann", "cyd"}, lapsed={"bob"}, new={"cyd"}, old_hands={"ann"})
    world.expect("1d1h", recent={"cyd"}, lapsed={"ann", "bob"}, new=set(), old_hands={"ann"})
    world.expect("29d", recent=set(), lapsed={"ann", "bob", "cyd"}, old_hands={"ann", "bob"})
    world.expect("29d1h", old_hands={"ann", "bob", "cyd"})


def test_sessions_in_the_last_week(database: Database) -> None:
    world = World(database, [segment("frequent", {"sessions": {"count": {"gte": 3}, "in_last": "7d"}})])
    world.ingest([
        # ann: three visits (sessions end after 30 minutes without events).
        track("page_view", "-5d", user="ann"),
        track("page_view", "-5d10m", user="ann"),
        track("page_view", "-2d", user="ann"),
        track("page_view", "-1h", user="ann"),
        # bob: many events in two visits.
        *(track("page_view", f"-{minutes}m", user="bob") for minutes in (200, 190, 180, 20, 10)),
    ])
    world.expect("0s", frequent={"ann"})
    world.expect("2d", frequent={"ann"})
    world.expect("2d1h", frequent=set())


# -- sequences, time limits and absence ------------------------------------------------------

ABANDONED_A = segment(
    "abandoned_a",
    {
        "sequence": {
            "steps": [
                {"event": "view_product", "where": [{"field": "properties.product_id", "op": "eq", "value": "A"}]},
                {"event": "add_to_cart", "within": "1h"},
            ],
            "then_not": {"event": "checkout_completed", "within": "24h"},
            "in_last": "7d",
        }
    },
)
A = {"product_id": "A"}


def test_viewed_a_then_added_to_cart_and_did_not_check_out_within_24_hours(database: Database) -> None:
    world = World(database, [ABANDONED_A])
    world.ingest([
        track("view_product", "-30h", user="ann", properties=A),
        track("add_to_cart", "-29h30m", user="ann"),  # 24 h passed at -5h30m: in
        track("view_product", "-2h", user="bob", properties=A),
        track("add_to_cart", "-1h30m", user="bob"),  # 24 h pass at 22h30m
        track("view_product", "-3h", user="cyd", properties=A),
        track("add_to_cart", "-2h50m", user="cyd"),
        track("checkout_completed", "-1h", user="cyd"),  # checked out in time: never in
        track("view_product", "-30h", user="dan", properties={"product_id": "B"}),
        track("add_to_cart", "-29h", user="dan"),  # viewed B, not A
        track("add_to_cart", "-30h", user="eve"),
        track("view_product", "-29h", user="eve", properties=A),  # cart before the view
        track("view_product", "-30h", user="fay", properties=A),
        track("add_to_cart", "-28h", user="fay"),  # two hours later: too late for the step
    ])
    world.expect("0s", abandoned_a={"ann"})
    world.expect("22h29m", abandoned_a={"ann"})
    # bob enters when his 24 hours are up, with no new event: a time-based entry.
    assert moves(world.advance("22h30m"), world) == [("entered", "abandoned_a", "bob", at("22h30m"), "time")]
    world.expect("22h30m", abandoned_a={"ann", "bob"})
    # A checkout that arrives late but happened within bob's 24 hours takes him out.
    exited = world.ingest([track("checkout_completed", "22h", user="bob")], now="23h")
    assert moves(exited, world) == [("exited", "abandoned_a", "bob", at("23h"), "event")]
    # ann's view at 06:00 yesterday leaves the 7-day window at 07:00 six days on.
    world.expect("5d18h59m", abandoned_a={"ann"})
    assert moves(world.advance("5d19h"), world) == [("exited", "abandoned_a", "ann", at("5d19h"), "time")]


def test_a_checkout_exactly_at_the_deadline_is_too_late(database: Database) -> None:
    world = World(database, [cart_abandoners(wait="24h", in_last="7d", purchase_event="checkout_completed")])
    world.ingest([
        track("add_to_cart", "-24h", user="ann"),
        track("checkout_completed", "0s", user="ann"),  # at cart + 24 h: the 24 h are over
        track("add_to_cart", "-24h", user="bob"),
        track("checkout_completed", "-1ms", user="bob"),
        track("add_to_cart", "-2h", user="cyd"),
        track("add_to_cart", "-1h", user="cyd"),
        track("checkout_completed", "-30m", user="cyd"),  # covers both carts... but only 1.5 h after the first
    ])
    world.expect("0s", cart_abandoners={"ann"})
    # cyd's first cart had a checkout within its 24 hours too: never in.
    world.expect("2d", cart_abandoners={"ann"})


def test_completed_onboarding_within_48_hours_of_sign_up_and_its_negation(database: Database) -> None:
    onboarded = segment("onboarded", {"sequence": {"steps": [{"event": "sign_up"}, {"event": "onboarding_completed", "within": "48h"}]}})
    stuck = segment("stuck", {"sequence": {"steps": [{"event": "sign_up"}], "then_not": {"event": "onboarding_completed", "within": "48h"}}})
    world = World(database, [onboarded, stuck])
    world.ingest([
        track("sign_up", "-10d", user="ann"),
        track("onboarding_completed", "-8d1h", user="ann"),  # 47 h later
        track("sign_up", "-10d", user="bob"),
        track("onboarding_completed", "-7d23h", user="bob"),  # 49 h later
        track("onboarding_completed", "-5d", user="cyd"),
        track("sign_up", "-4d", user="cyd"),  # onboarding before sign-up
        track("sign_up", "-1d", user="dan"),
    ])
    world.expect("0s", onboarded={"ann"}, stuck={"bob", "cyd"})
    # dan's 48 hours end tomorrow at noon; sequences without in_last never expire.
    world.expect("23h59m", stuck={"bob", "cyd"})
    world.expect("1d", onboarded={"ann"}, stuck={"bob", "cyd", "dan"})
    world.expect("400d", onboarded={"ann"}, stuck={"bob", "cyd", "dan"})


# -- traits, properties, scores ---------------------------------------------------------------


def test_trait_and_property_conditions_with_the_filter_operators(database: Database) -> None:
    world = World(database, [
        segment("pro", {"trait": {"field": "traits.plan", "op": "eq", "value": "pro"}}),
        segment("paying", {"trait": {"field": "traits.plan", "op": "in", "value": ["pro", "team"]}}),
        segment("company_mail", {"trait": {"field": "traits.email", "op": "contains", "value": "@acme."}}),
        segment("numbered", {"trait": {"field": "traits.email", "op": "regex", "value": "^[a-z]+[0-9]+@"}}),
        segment("twenties", {"and": [
            {"trait": {"field": "traits.age", "op": "gte", "value": 20}},
            {"trait": {"field": "traits.age", "op": "lt", "value": 30}},
        ]}),
        segment("has_company", {"trait": {"field": "traits.company.name", "op": "is_set"}}),
        segment("big_german_carts", {"performed": {"event": "add_to_cart", "where": [
            {"field": "properties.price", "op": "gt", "value": 100},
            {"field": "country", "op": "eq", "value": "DE"},
        ]}}),
    ])
    world.ingest([
        identify("-3d", anon="a1", user="ann", traits={"plan": "pro", "email": "ann7@acme.com", "age": 29}),
        identify("-3d", anon="b1", user="bob", traits={"plan": "team", "email": "bob@acme.org", "age": "25", "company": {"name": "Acme"}}),
        identify("-3d", anon="c1", user="cyd", traits={"plan": "free", "email": "cyd@mail.example", "age": 30, "company": {"name": None}}),
        track("add_to_cart", "-2d", user="ann", properties={"price": 120.5}, context={"locale": "de-DE", "location": {"country": "DE"}}),
        track("add_to_cart", "-2d", user="bob", properties={"price": "150"}, context={"location": {"country": "DE"}}),
        track("add_to_cart", "-2d", user="cyd", properties={"price": 300}, context={"location": {"country": "FR"}}),
    ])
    world.expect(
        "0s",
        pro={"ann"},
        paying={"ann", "bob"},
        company_mail={"ann", "bob"},
        numbered={"ann"},
        twenties={"ann"},  # bob's age is a string: no number filter matches it
        has_company={"bob"},  # a null is not set
        big_german_carts={"ann"},
    )
    # Traits change with the next identify (last write wins).
    world.ingest([identify("1h", anon="a1", user="ann", traits={"plan": "free"})], now="1h")
    world.expect("1h", pro=set(), paying={"bob"}, company_mail={"ann", "bob"})


def test_engagement_score_thresholds_follow_the_profiles_definition(database: Database) -> None:
    database.config = ProjectConfig(engagement=EngagementSettings(window="7d", weights={"purchase": 5.0, "page_view": 1.0}))
    world = World(database, [segment("engaged", {"score": {"name": "engagement", "value": {"gte": 6}}})])
    profiles = LiveProfiles(database)
    world.ingest([
        track("purchase", "-6d", user="ann"),
        track("page_view", "-1d", user="ann", properties={"signal": "passive"}),  # counts 0.5
        track("page_view", "-2h", user="ann"),
        track("purchase", "-1h", user="bob"),
    ])
    world.expect("0s", engaged={"ann"})  # 5 + 0.5 + 1
    person = next(iter(world.engine.members("engaged")))
    view = profiles.load(now=T0).view(person, now=T0)
    assert view is not None
    assert view.engagement_score == 6.5
    # The purchase six days ago leaves the 7-day window at 13:00 tomorrow.
    world.expect("1d59m", engaged={"ann"})
    world.expect("1d1h", engaged=set())


def test_engagement_with_recency_decay_leaves_when_the_score_decays_below(database: Database) -> None:
    database.config = ProjectConfig(engagement=EngagementSettings(window="30d", recency_half_life="1d", weights={"purchase": 8.0}))
    world = World(database, [segment("engaged", {"score": {"name": "engagement", "value": {"gte": 2}}})])
    world.ingest([track("purchase", "-30m", user="ann")])
    world.expect("0s", engaged={"ann"})  # 8 at an age of 0 hours (its hour is 11:00, now 12:00: 1 h) ~ 7.77
    # 8 * 0.5 ** (age / 24 h) >= 2 until the age passes 48 h: at 11:00 two days on.
    world.expect("1d23h", engaged={"ann"})
    world.expect("2d", engaged=set())
    assert world.changes[-1].at == at("1d23h") + timedelta(hours=1)


def test_model_score_thresholds(database: Database) -> None:
    database.backend.execute("CREATE TABLE model_scores (project_id VARCHAR, person_id VARCHAR, name VARCHAR, value DOUBLE)" if database.backend.dialect == "duckdb"
                             else "CREATE TABLE model_scores (project_id String, person_id String, name String, value Float64) ENGINE = MergeTree ORDER BY person_id")
    world = World(database, [segment("at_risk", {"score": {"name": "churn_risk", "value": {"gte": 0.7}}})], scores_table="model_scores")
    world.ingest([track("page_view", "-1h", user="ann"), track("page_view", "-1h", user="bob")])
    ann, bob = sorted(world.engine.persons, key=lambda person: next(iter(world.names([person]))))
    world.expect("0s", at_risk=set())
    changes = world.engine.set_scores(ann, {"churn_risk": 0.9})
    world.engine.set_scores(bob, {"churn_risk": 0.2})
    database.backend.execute(f"INSERT INTO model_scores VALUES ('default', '{ann}', 'churn_risk', 0.9), ('default', '{bob}', 'churn_risk', 0.2)")
    assert [(change.kind, change.reason) for change in changes] == [("segment_entered", "scores")]
    world.expect("0s", at_risk={"ann"})


# -- segments of segments, and / or / not; merges ------------------------------------------------


def test_membership_of_other_segments_with_and_or_not(database: Database) -> None:
    world = World(database, [
        segment("recent", {"last_seen": {"within": "1d"}}),
        segment("buyers", {"performed": {"event": "purchase", "in_last": "30d"}}),
        segment("recent_non_buyers", {"and": [{"in_segment": "recent"}, {"not": {"in_segment": "buyers"}}]}),
        segment("either", {"or": [{"in_segment": "recent_non_buyers"}, {"trait": {"field": "traits.vip", "op": "eq", "value": True}}]}),
    ])
    world.ingest([
        track("page_view", "-1h", user="ann"),
        track("purchase", "-2h", user="bob"),
        track("page_view", "-3d", user="cyd"),
        identify("-3d", anon="d1", user="dan", traits={"vip": True}),
    ])
    world.expect("0s", recent={"ann", "bob"}, buyers={"bob"}, recent_non_buyers={"ann"}, either={"ann", "dan"})
    # bob's "recent" ends at 11:00 tomorrow, ann's at 12:00: the segments
    # reading hers follow at the same moment.
    changes = world.advance("1d")
    assert moves(changes, world) == [
        ("exited", "recent", "bob", at("23h"), "time"),
        ("exited", "recent", "ann", at("1d"), "time"),
        ("exited", "recent_non_buyers", "ann", at("1d"), "time"),
        ("exited", "either", "ann", at("1d"), "time"),
    ]
    world.expect("1d", recent=set(), recent_non_buyers=set(), either={"dan"})


def test_merged_persons_leave_their_segments_and_the_survivor_is_evaluated(database: Database) -> None:
    world = World(database, [segment("carts", {"performed": {"event": "add_to_cart", "count": {"gte": 2}}})])
    world.ingest([track("add_to_cart", "-2h", anon="anon-1"), track("add_to_cart", "-1h", user="ann")])
    world.expect("0s", carts=set())
    anonymous = world.pipeline.person_for("anonymous", "anon-1")
    # The visitor logs in: their person merges into ann's, whose two carts now count.
    changes = world.ingest([identify("-30m", anon="anon-1", user="ann")])
    assert anonymous is not None
    assert anonymous not in world.engine.persons
    assert moves(changes, world) == [("entered", "carts", "ann", T0, "event")]
    world.expect("0s", carts={"ann"})
