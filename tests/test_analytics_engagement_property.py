"""Engagement scores three ways: golden timelines with the answer beside them,
the same bodies on DuckDB and ClickHouse, and random journeys (see
``test_analytics_trends_property``) against the pure-Python reference."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from footfall.analytics import engagement
from footfall.analytics import reference_metrics as reference
from footfall.analytics.conditions import Filter
from footfall.analytics.engagement import EngagementResult, EngagementSpec
from footfall.analytics.errors import SpecError
from footfall.events import Event
from footfall.pipeline import Pipeline
from footfall.store.database import Database

from .test_analytics_trends_property import (
    BACKENDS,
    FILTERS,
    NAMES,
    SETTINGS,
    Journeys,
    at,
    empty,
    expected_spec_error,
    ingest,
    journeys,
    message,
    open_store,
)


@pytest.fixture(scope="module", params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    yield from open_store(request, tmp_path_factory)


@pytest.fixture
def database(store: Database) -> Database:
    return empty(store)


def assert_same_engagement(actual: EngagementResult, expected: EngagementResult, scores: dict[str, tuple[float, int]]) -> None:
    """The same summary and top persons; ``scores`` are the reference's. Two
    persons whose scores differ by float noise alone may come in either order."""
    assert (actual.persons, dict(actual.bands)) == (expected.persons, dict(expected.bands))
    numbers = ("low_cut", "high_cut", "mean", "median")
    assert [getattr(actual, name) for name in numbers] == pytest.approx([getattr(expected, name) for name in numbers], abs=1e-9)
    assert [p.score for p in actual.top] == pytest.approx([p.score for p in expected.top], abs=1e-9)
    assert [p.score for p in actual.top] == pytest.approx([scores[p.person_id][0] for p in actual.top], abs=1e-9)
    assert [(p.band, p.events) for p in actual.top] == [
        (reference.band(round(scores[p.person_id][0], 9), expected.low_cut, expected.high_cut), scores[p.person_id][1])
        for p in actual.top]
    for found, wanted in zip(actual.top, expected.top, strict=True):
        near_ties = [person for person, (score, _) in scores.items() if abs(score - wanted.score) <= 1e-9]
        assert found.person_id == wanted.person_id or (len(near_ties) > 1 and found.person_id in near_ties)


def checked(database: Database, spec: EngagementSpec) -> EngagementResult:
    """The analysis and the reference on the stored events; ``spec`` names every setting."""
    rows, traits = reference.stored(database)
    result = engagement.run(database, spec)
    assert spec.as_of is not None
    scores = reference.engagement_scores(spec, spec.as_of, rows, traits)
    assert_same_engagement(result, reference.engagement(spec, spec.as_of, rows, traits), scores)
    found = engagement.scores(database, spec)
    assert {person: events for person, (_, events) in found.items()} == {person: events for person, (_, events) in scores.items()}
    assert {person: score for person, (score, _) in found.items()} == pytest.approx(
        {person: score for person, (score, _) in scores.items()}, abs=1e-9)
    return result


# -- random journeys --------------------------------------------------------------------------

HOUR = timedelta(hours=1)


@st.composite
def engagement_specs(draw: st.DrawFn, data: Journeys) -> EngagementSpec:
    offsets = (timedelta(0), timedelta(milliseconds=1), timedelta(milliseconds=-1), timedelta(minutes=35), 2 * HOUR, timedelta(days=3))
    return EngagementSpec(
        as_of=draw(st.sampled_from(data.moments)) + draw(st.sampled_from(offsets)),
        window=draw(st.sampled_from((HOUR, 5 * HOUR, 24 * HOUR, 48 * HOUR, timedelta(days=30)))),
        weights=draw(st.dictionaries(st.sampled_from((*NAMES, "identify")), st.sampled_from((0, 0.1, 0.5, 0.7, 1, 3, 5)))),
        passive_weight=draw(st.sampled_from((0.0, 0.3, 0.5, 1.0))),
        half_life=draw(st.sampled_from((None, HOUR, 6 * HOUR, 24 * HOUR))),
        filters=draw(st.sampled_from(FILTERS)),
        bands=draw(st.sampled_from(((0.4, 0.8), (0.25, 0.5), (0.1, 0.9)))),
        limit=draw(st.sampled_from((0, 2, 100))),
    )


def _check_random_scores(database: Database, data: st.DataObject) -> None:
    journey = data.draw(journeys(), label="journeys")
    ingest(empty(database), journey.events, journey.batches)
    rows, traits = reference.stored(database)
    for _ in range(3):
        spec = data.draw(engagement_specs(journey), label="engagement")
        if expected_spec_error(rows, filters=spec.filters):
            event("engagement: refused (unknown name)")
            with pytest.raises(SpecError):
                engagement.run(database, spec)
            continue
        assert spec.as_of is not None
        scores = reference.engagement_scores(spec, spec.as_of, rows, traits)
        event(f"engagement: {min(len(scores), 3)}{'+' if len(scores) >= 3 else ''} persons scored")
        event(f"engagement: {len({round(score, 9) for score, _ in scores.values()})} distinct scores")
        assert_same_engagement(engagement.run(database, spec), reference.engagement(spec, spec.as_of, rows, traits), scores)


@settings(max_examples=20, **SETTINGS)  # type: ignore[arg-type]
@given(data=st.data())
def test_random_scores_agree_with_the_reference(store: Database, data: st.DataObject) -> None:
    _check_random_scores(store, data)


@pytest.mark.slow
@settings(max_examples=150, **SETTINGS)  # type: ignore[arg-type]
@given(data=st.data())
def test_many_random_scores_agree_with_the_reference(store: Database, data: st.DataObject) -> None:
    _check_random_scores(store, data)


# -- golden timelines -------------------------------------------------------------------------

T0 = at("0s")  # 2024-03-01 12:00 UTC
WEIGHTS = {"page_view": 1.0, "add_to_cart": 3.0, "purchase": 5.0}


def spec(**options: object) -> EngagementSpec:
    defaults = {"as_of": T0, "window": timedelta(days=30), "weights": WEIGHTS, "passive_weight": 0.5, "half_life": None}
    return EngagementSpec(**{**defaults, **options})  # type: ignore[arg-type]


def track(name: str, when: str | datetime, who: str, number: int, **properties: object) -> Event:
    moment = at(when) if isinstance(when, str) else when
    return message("track", moment, anon=who, event=name, number=number, properties=properties)


def scores_by_anon(database: Database, result: EngagementResult) -> dict[str, float]:
    anon = {str(person): str(value) for person, value in database.query(
        "SELECT person_id, value FROM identities WHERE kind = 'anonymous'").rows}
    return {anon[entry.person_id]: entry.score for entry in result.top}


def test_same_timestamp_events_all_count(database: Database) -> None:
    ingest(database, [
        track("purchase", "-1h", "ann", 0), track("purchase", "-1h", "ann", 1), track("page_view", "-1h", "ann", 2, signal="passive"),
        track("purchase", "-1h", "bob", 3),
    ])
    result = checked(database, spec())
    assert scores_by_anon(database, result) == {"ann": 10.5, "bob": 5.0}
    assert [entry.events for entry in result.top] == [3, 1]


def test_events_out_of_order_in_the_input(database: Database) -> None:
    events = [track("page_view", f"-{hours}h", "ann", hours) for hours in range(1, 7)] + [track("add_to_cart", "-30m", "bob", 9)]
    random.Random(11).shuffle(events)
    ingest(database, events, batches=(2, 5))
    # with a half-life of 2 h, ann's views 1 to 6 hours old count 2^-(h/2) each;
    # bob's cart at 11:30 is in the hour before 12:00, an hour old too
    result = checked(database, spec(half_life=2 * HOUR))
    assert scores_by_anon(database, result) == pytest.approx({"ann": sum(0.5 ** (h / 2) for h in range(1, 7)), "bob": 3 * 0.5 ** 0.5})


def test_persons_merged_by_identify_score_once(database: Database) -> None:
    pipeline = Pipeline(database)
    pipeline.ingest_events([track("add_to_cart", "-3h", "laptop", 0), message("track", at("-2h"), user="u1", event="purchase", number=1)])
    assert checked(database, spec()).persons == 2
    pipeline.ingest_events([message("identify", at("-1h"), anon="laptop", user="u1", number=2)])
    result = checked(database, spec())
    # the cart (3), the purchase (5) and the identify (0) are one person's now
    assert (result.persons, [(entry.score, entry.events) for entry in result.top]) == (1, [(8.0, 3)])


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "Pacific/Chatham"])
def test_windows_and_ages_are_whole_hours_in_any_zone(database: Database, zone: str) -> None:
    as_of = datetime(2024, 3, 1, 14, 35, tzinfo=UTC)
    ingest(database, [
        track("purchase", as_of.replace(minute=0) - timedelta(days=1), "ann", 0),  # the window's first instant: counts
        track("purchase", as_of.replace(minute=0) - timedelta(days=1, milliseconds=1), "bob", 1),  # a millisecond before
        track("purchase", as_of.replace(minute=10) - HOUR, "cyd", 2),  # 13:10: an hour old
        track("purchase", as_of.replace(minute=1), "dan", 3),  # 14:01: this hour, no age
        track("purchase", as_of + timedelta(hours=2), "eve", 4),  # after as_of: counts, no age (as live profiles do)
    ])
    # the same instant written in another zone: hours are hours of the instant, not of a local clock
    result = checked(database, spec(as_of=as_of.astimezone(ZoneInfo(zone)), window=timedelta(days=1), half_life=HOUR))
    assert scores_by_anon(database, result) == pytest.approx({"ann": 5 * 0.5 ** 24, "cyd": 2.5, "dan": 5.0, "eve": 5.0})


def test_empty_windows(database: Database) -> None:
    ingest(database, [track("purchase", "-3d", "ann", 0)])
    nobody = checked(database, spec(window=timedelta(days=2)))
    assert (nobody.persons, nobody.top, nobody.bands) == (0, (), {"high": 0, "medium": 0, "low": 0})
    ingest(database, [message("identify", at("-3d"), anon="ann", user="u1", number=1, traits={"tier": "gold"})])
    silver = checked(database, spec(filters=(Filter("traits.tier", "eq", "silver"),)))
    assert silver.persons == 0
    gold = checked(database, spec(filters=(Filter("traits.tier", "eq", "gold"),)))
    assert [(entry.score, entry.events, entry.band) for entry in gold.top] == [(5.0, 2, "high")]
