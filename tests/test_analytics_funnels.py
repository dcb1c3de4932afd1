"""Funnels, three ways: golden timelines with the answer beside them, the same
bodies on DuckDB and ClickHouse, and random event sets against the pure-Python
reference (and, on ClickHouse, against its own windowFunnel).

Timelines read ``ann: view@0s, cart@10s{"plan": "pro"}, buy@1h``: one person
per line (the name is their user id), events at offsets from T0, properties
in braces. Events go through the pipeline, so identity resolution runs.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from footfall import analytics
from footfall.analytics import reference
from footfall.analytics.common import DateRange
from footfall.analytics.conditions import COLUMNS, Filter
from footfall.analytics.errors import SpecError, UnsupportedFeature
from footfall.analytics.funnels import (
    Exclusion,
    FunnelMode,
    FunnelResult,
    FunnelSpec,
    FunnelStep,
    HistogramBin,
    Outcome,
    compile,
    compile_persons,
    persons,
    run,
)
from footfall.durations import parse_duration
from footfall.events import Event
from footfall.events.record import conform
from footfall.pipeline import Pipeline
from footfall.store.database import Database
from footfall.store.duckdb_backend import DuckDBBackend
from footfall.store.schema import PERSONS, derived_tables

from .conftest import make_clickhouse_database
from .timeline import T0, identify, track

# -- fixtures and helpers -------------------------------------------------------

_TABLES = ("events", "persons", "identities", "person_merges")


@pytest.fixture(scope="module", params=["duckdb", pytest.param("clickhouse", marks=pytest.mark.clickhouse)])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """One store per backend for the module (creating a ClickHouse database
    costs about a second); each test starts from empty tables."""
    if request.param == "duckdb":
        db = Database(DuckDBBackend(tmp_path_factory.mktemp("funnels") / "store.duckdb"))
        db.migrate()
    else:
        db = make_clickhouse_database(request.getfixturevalue("chdb_dsn"))
    yield db
    if request.param == "clickhouse":
        db.backend.execute(f"DROP DATABASE IF EXISTS `{db.backend.database}`")  # type: ignore[attr-defined]
    db.close()


def _empty(database: Database) -> None:
    for table in (*_TABLES, *derived_tables(database.backend.dialect)):
        database.backend.execute(f"TRUNCATE TABLE {table}")


@pytest.fixture
def database(store: Database) -> Database:
    _empty(store)
    return store


_EVENT = re.compile(r"(\w+)@([\d.a-z]+)(\{[^}]*\})?")


def journeys(text: str) -> list[Event]:
    events = []
    for line in text.strip().splitlines():
        user, _, timeline = line.partition(":")
        user = user.strip()
        for position, (name, when, properties) in enumerate(_EVENT.findall(timeline)):
            events.append(
                track(name, when, user=user, properties=json.loads(properties) if properties else {}, messageId=f"{user}-{position:02d}")
            )
    return events


def ingest(database: Database, text: str) -> None:
    Pipeline(database).ingest_events(journeys(text))


def steps(*names: str) -> tuple[FunnelStep, ...]:
    return tuple(FunnelStep(name) for name in names)


def funnel(*names: str, window: str = "1h", **options: Any) -> FunnelSpec:
    return FunnelSpec(steps=steps(*names), conversion_window=parse_duration(window), **options)


def counts(result: FunnelResult) -> list[int]:
    return [step.count for step in result.overall.steps]


def users(database: Database, person_ids: list[str]) -> list[str]:
    """The user ids of these persons, in the same order."""
    by_person = {row["person_id"]: row["user_id"] for row in database.persons_arrow().to_pylist()}
    return [by_person[person] for person in person_ids]


def checked(database: Database, spec: FunnelSpec) -> FunnelResult:
    """Run on the engine and on the reference over the same stored events; they must agree."""
    result = run(database, spec)
    assert result == reference.funnel(spec, stored_rows(database), stored_traits(database))
    return result


def stored_rows(database: Database) -> list[reference.EventRow]:
    columns = ", ".join(COLUMNS)
    table = database.query_arrow(f"SELECT person_id, event_id, timestamp, properties, {columns} FROM events")
    rows = []
    for row in table.to_pylist():
        stamp: datetime = row["timestamp"]
        rows.append(
            reference.EventRow(
                person_id=row["person_id"],
                event_id=row["event_id"],
                event=row["event"],
                timestamp_ms=round(stamp.timestamp() * 1000),
                properties=json.loads(row["properties"]),
                columns={name: row[name] for name in COLUMNS},
            )
        )
    return rows


def stored_traits(database: Database) -> dict[str, dict[str, Any]]:
    return {row["person_id"]: json.loads(row["traits"]) for row in database.persons_arrow().to_pylist()}


# -- golden timelines ---------------------------------------------------------------


def test_ordered_funnel_counts_each_person_once_at_their_furthest_step(database: Database) -> None:
    ingest(
        database,
        """
        ann: view@0s, cart@10s, buy@20m
        bob: view@0s, view@5m, cart@10m
        cyd: view@0s
        dan: cart@0s, buy@1m
        eve: view@0s, buy@1m, cart@2m
        """,
    )
    # ann 3 steps; bob 2; cyd 1; dan never viewed (not in the funnel);
    # eve 2 (her buy came before the cart, and none after)
    result = checked(database, funnel("view", "cart", "buy"))
    assert counts(result) == [4, 3, 1]
    assert [step.dropped for step in result.overall.steps] == [0, 1, 2]
    assert [step.conversion_rate for step in result.overall.steps] == [1.0, 0.75, 0.25]
    assert (result.overall.entered, result.overall.converted, result.overall.conversion_rate) == (4, 1, 0.25)
    assert result.groups == ()

    spec = funnel("view", "cart", "buy")
    entered = persons(database, spec, step=0)
    assert entered == sorted(entered)  # person ids, sorted
    assert set(users(database, entered)) == {"ann", "bob", "cyd", "eve"}
    assert set(users(database, persons(database, spec, step=2))) == {"ann"}
    assert set(users(database, persons(database, spec, step=1, outcome="dropped"))) == {"cyd"}
    assert set(users(database, persons(database, spec, step=2, outcome="dropped"))) == {"bob", "eve"}
    assert set(users(database, persons(database, spec, step=1))) == {"ann", "bob", "eve"}
    assert len(persons(database, spec, step=0, limit=2)) == 2


def test_step_reference_previous(database: Database) -> None:
    ingest(
        database,
        """
        ann: view@0s, cart@10s, buy@20m
        bob: view@0s, cart@10m
        cyd: view@0s, cart@10m
        dan: view@0s
        """,
    )
    result = checked(database, funnel("view", "cart", "buy", step_reference="previous"))
    assert counts(result) == [4, 3, 1]
    assert [round(step.conversion_rate, 4) for step in result.overall.steps] == [1.0, 0.75, 0.3333]


def test_the_window_edge_counts(database: Database) -> None:
    ingest(
        database,
        """
        ann: view@0s, cart@30m, buy@1h
        bob: view@0s, cart@30m, buy@1h1ms
        cyd: view@0s, cart@1h, buy@1h
        """,
    )
    # ann's buy is exactly at view + 1h: it counts; bob's is 1 ms late;
    # cyd does both later steps at the limit itself
    result = checked(database, funnel("view", "cart", "buy"))
    assert counts(result) == [3, 3, 2]
    assert set(users(database, persons(database, funnel("view", "cart", "buy"), step=2))) == {"ann", "cyd"}


def test_same_timestamp_events_are_taken_in_funnel_order(database: Database) -> None:
    ingest(
        database,
        """
        ann: view@0s, cart@0s, buy@0s
        bob: buy@0s, cart@0s, view@0s
        cyd: view@1m, cart@0s
        """,
    )
    # ann and bob did all three in the same millisecond, written in either
    # order: ties go the funnel's way. cyd's cart came a minute before the view.
    result = checked(database, funnel("view", "cart", "buy"))
    assert counts(result) == [3, 2, 2]
    assert result.overall.time_to_convert.median == timedelta(0)


def test_ties_within_a_step_go_by_event_id(database: Database) -> None:
    ingest(
        database,
        """
        ann: view@0s{"src": "ads"}, view@0s{"src": "seo"}, cart@1m
        bob: view@0s{"src": "seo"}, cart@1m
        dan: view@0s{"src": "seo"}, view@0s{"src": "ads"}, cart@1m
        """,
    )
    # ann's and dan's two views share a millisecond: the one with the smaller
    # event id (the first written here) starts the earlier attempt, which
    # counts. bob has no tie: persons with and without one, in one query.
    spec = funnel("view", "cart", breakdown="properties.src")
    result = checked(database, spec)
    assert [(g.breakdown, g.entered, g.converted) for g in result.groups] == [("seo", 2, 2), ("ads", 1, 1)]
    assert set(users(database, persons(database, spec, step=1, breakdown="ads"))) == {"ann"}


def test_ties_are_settled_by_event_id_only_where_they_can_change_the_answer(database: Database) -> None:
    ingest(
        database,
        """
        ann: view@0s{"src": "ads"}, view@0s{"src": "seo"}, cart@0s, buy@0s
        bob: cart@0s, cart@0s, view@0s
        cyd: view@0s, view@0s
        """,
    )
    dialect = database.backend.dialect
    settled = "person_id IN (SELECT person_id FROM walked WHERE tied)"
    # Distinct events, no breakdown: tied events share a sort key, so one walk
    # without event ids gives the answer.
    for spec, expected in [
        (funnel("view", "cart", "buy"), [3, 2, 1]),
        (funnel("view", "cart", "buy", mode="unordered"), [3, 2, 1]),
        # an excluded event of the same millisecond sorts after the steps: ann
        # converts; bob's cart after his view discards his only attempt
        (funnel("view", "buy", exclusions=(Exclusion("cart", 0, 1),)), [2, 1]),
    ]:
        assert "tied" not in compile(spec, dialect)
        assert counts(checked(database, spec)) == expected
    # Where the order within a millisecond can matter, persons with a tie are walked again with event ids.
    for spec, expected in [
        (funnel("view", "view"), [3, 2]),  # two views of one millisecond fill both steps (ann, cyd)
        (funnel("view", "cart", breakdown="properties.src"), [3, 2]),
        (funnel("view", "cart", mode="strict"), [3, 2]),
    ]:
        assert settled in compile(spec, dialect)
        assert counts(checked(database, spec)) == expected


def test_one_event_never_fills_two_steps(database: Database) -> None:
    ingest(
        database,
        """
        ann: view@0s
        bob: view@0s, view@0s
        cyd: view@0s, view@2h
        """,
    )
    # a funnel that repeats a step needs two distinct events, which may share a
    # millisecond (bob), within the window (not cyd)
    result = checked(database, funnel("view", "view"))
    assert counts(result) == [3, 1]
    assert set(users(database, persons(database, funnel("view", "view"), step=1))) == {"bob"}


def test_events_out_of_order_in_the_input(database: Database) -> None:
    events = journeys(
        """
        ann: view@0s, cart@10s, buy@20m
        bob: view@0s, view@5m, cart@10m
        cyd: cart@0s, view@1m, cart@2m, buy@2h
        """
    )
    random.Random(7).shuffle(events)
    pipeline = Pipeline(database)
    for start in range(0, len(events), 3):  # and spread over batches
        pipeline.ingest_events(events[start : start + 3])
    result = checked(database, funnel("view", "cart", "buy"))
    assert counts(result) == [3, 3, 1]


@pytest.mark.parametrize(
    ("mode", "expected", "converted"),
    [
        # ann: all three in order; bob: asked for help in between; cyd: cart
        # before view; dan: a second view before the cart; eve: only a buy
        ("ordered", [4, 3, 2], {"ann", "bob"}),
        ("strict", [4, 2, 1], {"ann"}),
        ("unordered", [5, 4, 3], {"ann", "bob", "cyd"}),
    ],
)
def test_strict_ordered_and_unordered_differ(
    database: Database, mode: FunnelMode, expected: list[int], converted: set[str]
) -> None:
    ingest(
        database,
        """
        ann: view@0s, cart@1m, buy@2m
        bob: view@0s, help@1m, cart@2m, buy@3m
        cyd: cart@0s, view@1m, buy@2m
        dan: view@0s, view@1m, cart@2m
        eve: buy@0s
        """,
    )
    spec = funnel("view", "cart", "buy", mode=mode)
    result = checked(database, spec)
    assert counts(result) == expected
    assert set(users(database, persons(database, spec, step=2))) == converted


def test_strict_funnels_restart_at_every_first_step(database: Database) -> None:
    ingest(
        database,
        """
        ann: view@0s, help@1m, view@2m, cart@3m
        bob: view@0s, help@1m, cart@1m
        """,
    )
    # ann's second view starts a clean attempt; bob's help shares a
    # millisecond with the cart, and step events come first in a tie
    result = checked(database, funnel("view", "cart", mode="strict"))
    assert counts(result) == [2, 2]


def test_strict_funnels_see_every_event_in_between(database: Database) -> None:
    # DuckDB lists the funnel's events only and looks up the others between
    # neighbours; these are the edges of that lookup
    ingest(
        database,
        """
        ann: view@0s, help@0s, cart@1m{"plan": "pro"}
        bob: view@0s, cart@1m{"plan": "pro"}, help@1m
        cyd: view@0s, cart@1m{"plan": "free"}, cart@2m{"plan": "pro"}
        dan: view@0s, cart@30m{"plan": "pro"}
        eve: view@0s, help@30s, view@1m, cart@2m{"plan": "pro"}, buy@3m
        fay: view@0s, cart@1m{"plan": "pro"}, help@1m30s, buy@2m
        """,
    )
    # ann: help shares the view's millisecond, and comes after it; bob: help
    # comes after the cart; cyd: a cart that fails the step's filter is an
    # event in between; dan: the cart is out of the window; eve: a clean
    # second attempt; fay: help between the second and third steps
    spec = FunnelSpec(
        steps=(FunnelStep("view"), FunnelStep("cart", (Filter("properties.plan", "eq", "pro"),)), FunnelStep("buy")),
        conversion_window=timedelta(minutes=10),
        mode="strict",
    )
    assert counts(checked(database, spec)) == [6, 3, 1]
    assert users(database, persons(database, spec, step=2)) == ["eve"]


def test_the_best_attempt_counts_and_gives_the_time(database: Database) -> None:
    ingest(
        database,
        """
        ann: view@0s, cart@2h, view@3h, cart@3h10m, buy@3h40m
        bob: view@0s, cart@5m, view@2h, cart@2h1m
        """,
    )
    # ann's first attempt stalls (cart after the window); her second converts
    # in 40 minutes. bob reaches the cart in both attempts: the first counts.
    result = checked(database, funnel("view", "cart", "buy"))
    assert counts(result) == [2, 2, 1]
    assert result.overall.time_to_convert.median == timedelta(minutes=40)
    cart = result.overall.steps[1]
    assert (cart.median_time, cart.average_time) == (timedelta(minutes=7, seconds=30), timedelta(minutes=7, seconds=30))


def test_time_to_convert(database: Database) -> None:
    ingest(
        database,
        """
        ann: view@0s, cart@30s, buy@1m
        bob: view@0s, cart@1m, buy@2m
        cyd: view@0s, cart@5m, buy@10m
        dan: view@0s, cart@1m
        eve: view@0s, cart@1m, buy@1h
        """,
    )
    result = checked(database, funnel("view", "cart", "buy"))
    time = result.overall.time_to_convert
    # completed: 1m, 2m, 10m, 1h (dan did not finish, so he is not timed)
    assert time.converted == 4
    assert time.median == timedelta(minutes=6)
    assert time.average == timedelta(minutes=18, seconds=15)
    assert [b for b in time.histogram if b.count] == [
        HistogramBin(timedelta(minutes=1), timedelta(minutes=2), 1),
        HistogramBin(timedelta(minutes=2), timedelta(minutes=5), 1),
        HistogramBin(timedelta(minutes=10), timedelta(minutes=15), 1),
        HistogramBin(timedelta(minutes=30), timedelta(hours=1), 1),  # the last bin holds the window itself
    ]
    edges = [b.start for b in time.histogram] + [time.histogram[-1].end]
    assert edges == [parse_duration(t) if t != "0" else timedelta(0) for t in ["0", "1s", "5s", "10s", "30s", "1m", "2m", "5m", "10m", "15m", "30m", "1h"]]
    view_to_cart = result.overall.steps[1]  # 30s, 1m, 5m, 1m, 1m
    assert (view_to_cart.median_time, view_to_cart.average_time) == (timedelta(minutes=1), timedelta(seconds=102))
    cart_to_buy = result.overall.steps[2]  # 30s, 1m, 5m, 59m
    assert (cart_to_buy.median_time, cart_to_buy.average_time) == (timedelta(minutes=3), timedelta(seconds=982, microseconds=500000))
    assert result.overall.steps[0].median_time is None


def test_exclusions_discard_an_attempt(database: Database) -> None:
    ingest(
        database,
        """
        ann: view@0s, support@1m, cart@2m, buy@3m
        bob: view@0s, cart@1m, support@2m, buy@3m
        cyd: view@0s, support@1m
        dan: view@0s, support@2h
        eve: view@0s, support@1m, view@2m, cart@3m
        """,
    )
    # support between view and cart discards the attempt: ann and cyd are out
    # (cyd never reached the cart, but asked for support within the window);
    # dan asked after his window; eve's second attempt is clean
    between_view_and_cart = funnel("view", "cart", "buy", exclusions=(Exclusion("support", 0, 1),))
    result = checked(database, between_view_and_cart)
    assert counts(result) == [3, 2, 1]
    assert set(users(database, persons(database, between_view_and_cart, step=0))) == {"bob", "dan", "eve"}

    # between cart and buy: only bob, who asked after his cart, drops out
    between_cart_and_buy = funnel("view", "cart", "buy", exclusions=(Exclusion("support", 1, 2),))
    assert counts(checked(database, between_cart_and_buy)) == [4, 2, 1]

    # between view and buy (skipping a step): ann and bob (and cyd) are out
    across = funnel("view", "cart", "buy", exclusions=(Exclusion("support", 0, 2),))
    assert counts(checked(database, across)) == [2, 1, 0]

    # strict: ann and cyd are out as before; bob reaches the cart (his support
    # then breaks the order before the buy); dan 1; eve's second attempt 2
    strict = funnel("view", "cart", "buy", mode="strict", exclusions=(Exclusion("support", 0, 1),))
    assert counts(checked(database, strict)) == [3, 2, 0]


def test_exclusions_with_filters(database: Database) -> None:
    ingest(
        database,
        """
        ann: view@0s, support@1m{"topic": "refund"}, cart@2m
        bob: view@0s, support@1m{"topic": "sizes"}, cart@2m
        """,
    )
    refunds = Exclusion("support", 0, 1, filters=(Filter("properties.topic", "eq", "refund"),))
    assert counts(checked(database, funnel("view", "cart", exclusions=(refunds,)))) == [1, 1]


def test_step_filters_global_filters_and_person_traits(database: Database) -> None:
    Pipeline(database).ingest_events(
        [
            identify("-1m", anon="a-ann", user="ann", traits={"tier": "gold"}),
            identify("-1m", anon="a-bob", user="bob", traits={"tier": "silver"}),
            *journeys(
                """
                ann: view@0s, cart@1m{"plan": "free"}, cart@2m{"plan": "pro"}, buy@3m
                bob: view@0s, cart@1m{"plan": "free"}, buy@2m
                cyd: view@0s{"test": true}, cart@1m{"plan": "pro"}, buy@2m
                """
            ),
        ]
    )
    pro_cart = (FunnelStep("view"), FunnelStep("cart", (Filter("properties.plan", "eq", "pro"),)), FunnelStep("buy"))
    hour = timedelta(hours=1)
    # only a pro cart counts: ann's second cart does, bob's does not
    assert counts(checked(database, FunnelSpec(steps=pro_cart, conversion_window=hour))) == [3, 2, 2]
    # test events are left out altogether: cyd never viewed
    no_tests = (Filter("properties.test", "is_not_set"),)
    assert counts(checked(database, FunnelSpec(steps=pro_cart, conversion_window=hour, filters=no_tests))) == [2, 1, 1]
    # person traits: only gold persons
    gold = (Filter("traits.tier", "eq", "gold"),)
    assert counts(checked(database, FunnelSpec(steps=pro_cart, conversion_window=hour, filters=gold))) == [1, 1, 1]


def test_persons_merged_by_identify_count_once(database: Database) -> None:
    pipeline = Pipeline(database)
    pipeline.ingest_events([track("view", "0s", anon="laptop"), track("cart", "1m", anon="laptop")])
    pipeline.ingest_events([identify("2m", anon="phone", user="u1"), track("buy", "5m", user="u1")])
    spec = funnel("view", "cart", "buy")
    # two persons so far: the laptop's viewed and carted, the phone's bought
    assert counts(checked(database, spec)) == [1, 1, 0]
    # the laptop signs in as u1: its person merges into u1's, events and all
    report = pipeline.ingest_events([identify("10m", anon="laptop", user="u1")])
    assert report.merges == 1
    result = checked(database, spec)
    assert counts(result) == [1, 1, 1]
    assert result.overall.time_to_convert.median == timedelta(minutes=5)
    [person] = persons(database, spec, step=2)
    assert users(database, [person]) == ["u1"]
    assert {row[0] for row in database.query("SELECT DISTINCT person_id FROM events").rows} == {person}


@pytest.mark.parametrize(
    ("zone", "expected", "who"),
    [
        # the range is the day of 2024-03-02 in each zone; ann viewed at
        # 23:30 UTC on 1 March (00:30 on 2 March in Berlin), bob a day later
        ("UTC", [1, 0], "bob"),
        ("Europe/Berlin", [1, 1], "ann"),
        ("America/Los_Angeles", [1, 0], "bob"),
    ],
)
def test_date_ranges_follow_the_time_zone(database: Database, zone: str, expected: list[int], who: str) -> None:
    ingest(
        database,
        """
        ann: view@11h30m, cart@11h35m
        bob: view@1d11h30m
        """,
    )
    spec = funnel("view", "cart", date_range=DateRange.parse("2024-03-02", "2024-03-03"), time_zone=zone)
    assert counts(checked(database, spec)) == expected
    assert users(database, persons(database, spec, step=0)) == [who]


def test_later_steps_may_fall_after_the_range(database: Database) -> None:
    ingest(
        database,
        """
        ann: view@0s, cart@10m
        bob: view@6m, cart@7m
        cyd: view@-1m, cart@1m
        """,
    )
    # attempts start in [T0, T0 + 5m); their later steps may come after 5m.
    # bob started after the range, cyd before it
    spec = funnel("view", "cart", date_range=DateRange(T0, T0 + timedelta(minutes=5)))
    assert counts(checked(database, spec)) == [1, 1]


def test_empty_store_and_empty_ranges(database: Database) -> None:
    spec = funnel("view", "cart", breakdown="properties.src")
    empty = checked(database, spec)
    assert counts(empty) == [0, 0]
    assert empty.groups == ()
    assert empty.overall.time_to_convert.median is None
    assert empty.overall.time_to_convert.average is None
    assert all(b.count == 0 for b in empty.overall.time_to_convert.histogram)
    assert empty.overall.conversion_rate == 0.0
    ingest(database, "ann: view@0s, cart@1m")
    later = funnel("view", "cart", date_range=DateRange.parse("2025-01-01", "2025-02-01"))
    assert counts(checked(database, later)) == [0, 0]
    assert persons(database, later, step=0) == []


def test_breakdown_is_first_touch_of_the_counted_attempt(database: Database) -> None:
    ingest(
        database,
        """
        ann: view@0s{"src": "ads"}, view@2h{"src": "seo"}, cart@2h5m, buy@2h10m
        bob: view@0s{"src": "ads"}, cart@1m
        cyd: view@0s{"src": "ads"}, cart@1m{"src": "seo"}, buy@2m
        dan: view@0s
        eve: view@0s{"src": "seo"}, view@5m{"src": "ads"}, cart@10m
        """,
    )
    # ann converts in her second attempt, which began on seo; cyd's value is
    # her view's; eve's two attempts tie, the earlier (seo) counts; dan has none
    spec = funnel("view", "cart", "buy", breakdown="properties.src")
    result = checked(database, spec)
    assert counts(result) == [5, 4, 2]
    assert [(g.breakdown, [s.count for s in g.steps]) for g in result.groups] == [
        ("ads", [2, 2, 1]),
        ("seo", [2, 2, 1]),
        (None, [1, 0, 0]),
    ]
    assert set(users(database, persons(database, spec, step=0, breakdown="ads"))) == {"bob", "cyd"}
    assert set(users(database, persons(database, spec, step=0, breakdown=None))) == {"dan"}
    assert set(users(database, persons(database, spec, step=2, breakdown="seo"))) == {"ann"}
    assert set(users(database, persons(database, spec, step=2, outcome="dropped", breakdown="seo"))) == {"eve"}


def test_breakdown_by_a_column_and_a_number_property(database: Database) -> None:
    ingest(
        database,
        """
        ann: view@0s{"path": "/home", "variant": 2}, cart@1m
        bob: view@0s{"path": "/home", "variant": 10}
        cyd: view@0s{"path": "/sale", "variant": 2}, cart@1m
        """,
    )
    by_path = checked(database, funnel("view", "cart", breakdown="path"))
    assert [(g.breakdown, g.entered, g.converted) for g in by_path.groups] == [("/home", 2, 1), ("/sale", 1, 1)]
    by_variant = checked(database, funnel("view", "cart", breakdown="properties.variant"))
    assert [(g.breakdown, g.entered, g.converted) for g in by_variant.groups] == [("2", 2, 2), ("10", 1, 0)]


@pytest.mark.parametrize(
    ("build", "field", "message"),
    [
        (lambda: funnel("view"), "steps", "2 to 20 steps; got 1"),
        (lambda: funnel(*["view"] * 21), "steps", "2 to 20 steps; got 21"),
        (lambda: funnel("view", "buy", window="0s"), "conversion_window", "positive duration"),
        (lambda: FunnelSpec(steps=steps("v", "b"), conversion_window=timedelta(microseconds=1500)), "conversion_window", "whole milliseconds"),
        (lambda: FunnelSpec(steps=steps("v", "b"), conversion_window=3600), "conversion_window", "positive duration"),  # type: ignore[arg-type]
        (lambda: funnel("view", "buy", mode="loose"), "mode", "ordered, strict, unordered"),
        (lambda: funnel("view", "buy", step_reference="first"), "step_reference", "'total' or 'previous'"),
        (lambda: funnel("view", "buy", time_zone="Mars/Olympus"), "time_zone", "unknown time zone"),
        (lambda: funnel("view", "buy", exclusions=(Exclusion("x", 0, 2),)), "exclusions[0].to_step", "last step is 1"),
        (lambda: Exclusion("x", 1, 1), "Exclusion.to_step", "after from_step"),
        (lambda: Exclusion("x", -1, 1), "Exclusion.from_step", "step index"),
        (lambda: funnel("view", "buy", "view", mode="unordered"), "steps[2].event", "distinct step events"),
        (lambda: funnel("view", "buy", mode="unordered", exclusions=(Exclusion("x"),)), "exclusions", "no step order"),
        (lambda: funnel("view", "buy", breakdown="traits.plan"), "breakdown", "person traits"),
        (lambda: funnel("view", "buy", breakdown="propertys.plan"), "breakdown", "unknown field"),
        (lambda: FunnelStep(""), "FunnelStep.event", "name of the event"),
        (lambda: FunnelStep("view", (Filter("traits.plan", "eq", "pro"),)), "FunnelStep.filters[0].field", "person trait"),
        (lambda: FunnelSpec(steps=("view", "buy")), "steps[0]", "give a FunnelStep"),  # type: ignore[arg-type]
        (lambda: funnel("view", "buy", filters=(("properties.a", "eq", 1),)), "filters[0]", "give a Filter"),
        (
            lambda: funnel("view", "buy", date_range=DateRange(datetime(2024, 3, 2, tzinfo=UTC), datetime(2024, 3, 2, 0, 30)), time_zone="Asia/Tokyo"),
            "date_range",
            "the range is empty",
        ),
        (lambda: compile_persons(funnel("view", "buy"), "duckdb", step=0, outcome="dropped"), "step", "nobody drops at the first step"),
        (lambda: compile_persons(funnel("view", "buy"), "duckdb", step=2), "step", "from 0 to 1"),
        (lambda: compile_persons(funnel("view", "buy"), "duckdb", step=1, outcome="left"), "outcome", "'converted' or 'dropped'"),  # type: ignore[arg-type]
        (lambda: compile_persons(funnel("view", "buy"), "duckdb", step=1, limit=0), "limit", "positive"),
    ],
)
def test_bad_specs_name_the_field(build: Any, field: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        build()
    assert caught.value.field == field
    assert message in caught.value.problem


def test_unknown_events_are_refused_with_a_suggestion(database: Database) -> None:
    ingest(database, "ann: view@0s, cart@1m, purchase@2m")
    with pytest.raises(SpecError) as caught:
        run(database, funnel("view", "cart", "purchse"))
    assert caught.value.field == "steps[2].event"
    assert "did you mean 'purchase'?" in caught.value.problem
    with pytest.raises(SpecError, match=r"exclusions\[0\].event"):
        run(database, funnel("view", "cart", exclusions=(Exclusion("suport", 0, 1),)))
    # asked not to check, it is a funnel nobody went through
    assert counts(run(database, funnel("view", "cart", "purchse"), known_events_only=False)) == [1, 1, 0]


def test_compile_needs_no_database_and_is_per_dialect() -> None:
    spec = funnel("view", "cart", "buy", exclusions=(Exclusion("help", 0, 1),), breakdown="properties.src")
    duckdb_sql = analytics.compile(spec, "duckdb", project_id="shop")
    clickhouse_sql = analytics.compile(spec, "clickhouse", project_id="shop")
    assert duckdb_sql == compile(spec, "duckdb", project_id="shop")  # deterministic
    # one plan, in each dialect's list functions: each person's events gathered
    # and walked without event ids, then again with them for the persons with
    # ties; the first walk is computed once
    assert "GROUP BY person_id" in duckdb_sql
    assert "GROUP BY person_id" in clickhouse_sql
    assert "list_transform(" in duckdb_sql
    assert "arrayMap(" in clickhouse_sql
    for sql in (duckdb_sql, clickhouse_sql):
        assert "walked AS MATERIALIZED (" in sql
        assert "person_id IN (SELECT person_id FROM walked WHERE tied)" in sql
    assert "json_extract_string(properties" in duckdb_sql
    assert "JSONExtractString(properties" in clickhouse_sql
    assert clickhouse_sql.endswith("SETTINGS join_use_nulls = 1, enable_materialized_cte = 1")
    assert "SETTINGS" not in duckdb_sql
    assert "project_id = 'shop'" in duckdb_sql
    with pytest.raises(UnsupportedFeature, match="sqlite"):
        analytics.compile(spec, "sqlite")
    with pytest.raises(SpecError, match="not an analysis spec"):
        analytics.compile("funnel", "duckdb")  # type: ignore[arg-type]


def test_the_package_entry_runs_a_funnel(database: Database) -> None:
    ingest(database, "ann: view@0s, cart@1m")
    assert counts(analytics.run(database, funnel("view", "cart"))) == [1, 1]


# -- random event sets: the engine against the reference -----------------------------

NAMES = ("a", "b", "c", "d")
PROPERTIES: tuple[dict[str, Any], ...] = ({}, {"plan": "pro"}, {"plan": "free"}, {"plan": "pro", "n": 2}, {"n": 1}, {"n": "2"}, {"plan": None})
STEP_FILTERS = ((), (Filter("properties.plan", "eq", "pro"),), (Filter("properties.n", "gte", 2),), (Filter("properties.plan", "neq", "pro"),))
GLOBAL_FILTERS = ((), (Filter("properties.plan", "neq", "free"),), (Filter("traits.vip", "eq", True),), (Filter("properties.n", "is_not_set"),))
TRAITS = {"p0": {"vip": True}, "p1": {"vip": False}, "p2": {}}  # p3 has no person row

random_events = st.lists(
    st.tuples(st.sampled_from(("p0", "p1", "p2", "p3")), st.sampled_from(NAMES), st.integers(0, 40), st.sampled_from(PROPERTIES)),
    max_size=40,
)


@st.composite
def funnel_specs(draw: st.DrawFn) -> FunnelSpec:
    mode: FunnelMode = draw(st.sampled_from(("ordered", "strict", "unordered")))
    n = draw(st.integers(2, 4))
    if mode == "unordered":
        names = draw(st.lists(st.sampled_from(NAMES), min_size=n, max_size=n, unique=True))
    else:
        names = draw(st.lists(st.sampled_from(NAMES[:3]), min_size=n, max_size=n))
    exclusions: tuple[Exclusion, ...] = ()
    if mode != "unordered" and draw(st.booleans()):
        start = draw(st.integers(0, n - 2))
        exclusions = (Exclusion(draw(st.sampled_from(NAMES)), start, draw(st.integers(start + 1, n - 1)), draw(st.sampled_from(STEP_FILTERS))),)
    date_range = draw(st.sampled_from((None, (5, 15), (0, 1), (20, 60))))
    return FunnelSpec(
        steps=tuple(FunnelStep(name, draw(st.sampled_from(STEP_FILTERS))) for name in names),
        conversion_window=timedelta(milliseconds=draw(st.sampled_from((1, 500, 2000, 5000, 12000)))),
        mode=mode,
        date_range=None if date_range is None else DateRange(T0 + timedelta(seconds=date_range[0] / 2), T0 + timedelta(seconds=date_range[1] / 2)),
        filters=draw(st.sampled_from(GLOBAL_FILTERS)),
        exclusions=exclusions,
        breakdown=draw(st.sampled_from((None, "properties.plan", "properties.n"))),
        step_reference=draw(st.sampled_from(("total", "previous"))),
    )


def load_random(database: Database, rows: list[tuple[str, str, int, dict[str, Any]]], ids: list[int]) -> None:
    """Events straight into the store (person ids as given), and the persons' traits."""
    _empty(database)
    if rows:
        times = [T0 + timedelta(milliseconds=500 * tick) for _, _, tick, _ in rows]
        table = pa.table(
            {
                "event_id": [f"id{i:03d}" for i in ids],
                "project_id": [database.project_id] * len(rows),
                "type": ["track"] * len(rows),
                "event": [name for _, name, _, _ in rows],
                "person_id": [person for person, _, _, _ in rows],
                "session_id": ["s"] * len(rows),
                "timestamp": pa.array(times, pa.timestamp("ms", tz="UTC")),
                "received_at": pa.array(times, pa.timestamp("ms", tz="UTC")),
                "properties": [json.dumps(properties) for _, _, _, properties in rows],
            }
        )
        database.insert("events", conform(table))
    moment = pa.array([T0] * len(TRAITS), PERSONS.schema.field("first_seen").type)
    database.upsert(
        "persons",
        pa.table(
            {
                "project_id": [database.project_id] * len(TRAITS),
                "person_id": list(TRAITS),
                "user_id": [None] * len(TRAITS),
                "traits": [json.dumps(traits) for traits in TRAITS.values()],
                "first_seen": moment,
                "last_seen": moment,
                "last_session_id": ["s"] * len(TRAITS),
                "last_session_start": moment,
                "updated_at": moment,
            },
            schema=PERSONS.schema,
        ),
    )


# No two events of a person in the same millisecond: no ties to settle by event id.
untied_events = st.lists(
    st.tuples(st.sampled_from(("p0", "p1", "p2", "p3")), st.sampled_from(NAMES), st.integers(0, 40), st.sampled_from(PROPERTIES)),
    max_size=40,
    unique_by=lambda row: (row[0], row[2]),
)


def _check_against_reference(
    database: Database, data: st.DataObject, events: st.SearchStrategy[list[tuple[str, str, int, dict[str, Any]]]] = random_events
) -> None:
    rows = data.draw(events, label="events")
    ids = data.draw(st.permutations(range(len(rows))), label="event id order")
    spec = data.draw(funnel_specs(), label="spec")
    load_random(database, rows, ids)
    stored = stored_rows(database)
    result = run(database, spec, known_events_only=False)
    assert result == reference.funnel(spec, stored, TRAITS)
    step = data.draw(st.integers(0, len(spec.steps) - 1), label="step")
    outcome: Outcome = "dropped" if step and data.draw(st.booleans(), label="dropped") else "converted"
    assert persons(database, spec, step=step, outcome=outcome) == reference.funnel_persons(
        spec, stored, TRAITS, step=step, outcome=outcome
    )


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_funnels_agree_with_the_reference(database: Database, data: st.DataObject) -> None:
    _check_against_reference(database, data)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_many_random_funnels_agree_with_the_reference(database: Database, data: st.DataObject) -> None:
    _check_against_reference(database, data)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_funnels_without_ties_agree_with_the_reference(database: Database, data: st.DataObject) -> None:
    # (DuckDB walks persons without ties apart from those with some.)
    _check_against_reference(database, data, untied_events)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_many_random_funnels_without_ties_agree_with_the_reference(database: Database, data: st.DataObject) -> None:
    _check_against_reference(database, data, untied_events)


# -- ClickHouse's own windowFunnel ------------------------------------------------------


@pytest.fixture(scope="module")
def clickhouse(chdb_dsn: str) -> Iterator[Database]:
    db = make_clickhouse_database(chdb_dsn)
    yield db
    db.backend.execute(f"DROP DATABASE IF EXISTS `{db.backend.database}`")  # type: ignore[attr-defined]
    db.close()


def window_funnel_counts(database: Database, spec: FunnelSpec, modes: tuple[str, ...] = ()) -> list[int]:
    """Step counts from windowFunnel over the same events and range."""
    names = [step.event for step in spec.steps]
    stamp = "toUnixTimestamp64Milli(timestamp)"
    first = f"event = '{names[0]}'"
    where = "1"
    bounds = spec.range_utc()
    if bounds:
        start, end = (round(b.timestamp() * 1000) for b in bounds)
        first += f" AND {stamp} >= {start} AND {stamp} < {end}"
        where = f"{stamp} >= {start} AND {stamp} <= {end + spec.window_ms}"
    conditions = ", ".join([first, *(f"event = '{name}'" for name in names[1:])])
    parameters = ", ".join([str(spec.window_ms), *(f"'{mode}'" for mode in modes)])
    levels = database.query(
        f"SELECT windowFunnel({parameters})(toUInt64({stamp}), {conditions}) AS level FROM events"
        f" WHERE {where} GROUP BY person_id"
    ).rows
    return [sum(1 for (level,) in levels if level > k) for k in range(len(names))]


def _check_against_window_funnel(clickhouse: Database, data: st.DataObject) -> None:
    # Where the semantics coincide: ordered, distinct step events, no filters,
    # no exclusions. Ties agree too: windowFunnel sorts by (time, condition).
    rows = data.draw(random_events, label="events")
    load_random(clickhouse, rows, data.draw(st.permutations(range(len(rows)))))
    names = data.draw(st.lists(st.sampled_from(NAMES), min_size=2, max_size=4, unique=True), label="steps")
    window = data.draw(st.sampled_from((1, 500, 2000, 5000, 12000)), label="window ms")
    date_range = data.draw(st.sampled_from((None, DateRange(T0 + timedelta(seconds=3), T0 + timedelta(seconds=9)))))
    spec = FunnelSpec(steps=steps(*names), conversion_window=timedelta(milliseconds=window), date_range=date_range)
    assert counts(run(clickhouse, spec, known_events_only=False)) == window_funnel_counts(clickhouse, spec)


@pytest.mark.clickhouse
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_ordered_counts_agree_with_window_funnel(clickhouse: Database, data: st.DataObject) -> None:
    _check_against_window_funnel(clickhouse, data)


@pytest.mark.clickhouse
@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_many_ordered_counts_agree_with_window_funnel(clickhouse: Database, data: st.DataObject) -> None:
    _check_against_window_funnel(clickhouse, data)


@pytest.mark.clickhouse
def test_where_window_funnel_differs(clickhouse: Database) -> None:
    _empty(clickhouse)
    Pipeline(clickhouse).ingest_events(journeys("ann: view@0s, help@1m, view@2m, cart@3m"))
    # One event fills two steps in windowFunnel; here a repeated step needs a second event.
    repeated = funnel("help", "help")
    assert window_funnel_counts(clickhouse, repeated) == [1, 1]
    assert counts(run(clickhouse, repeated)) == [1, 0]
    # strict_order stops the person at the first event in between; a strict
    # funnel here starts a new attempt at the next first step.
    strict = funnel("view", "cart", mode="strict")
    assert window_funnel_counts(clickhouse, strict, ("strict_order",)) == [1, 0]
    assert counts(run(clickhouse, strict)) == [1, 1]


def test_the_reference_alone_on_a_timeline() -> None:
    # the reference is importable and usable without a store
    rows = [reference.EventRow("p", f"e{i}", name, i * 1000) for i, name in enumerate(["view", "cart", "buy"])]
    assert [s.count for s in reference.funnel(funnel("view", "cart", "buy"), rows).overall.steps] == [1, 1, 1]

