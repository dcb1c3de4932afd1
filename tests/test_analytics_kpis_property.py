"""Sessions and KPIs three ways: golden timelines with the answer beside them,
the same bodies on DuckDB and ClickHouse, and random journeys (see
``test_analytics_trends_property``) against the pure-Python reference."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from footfall.analytics import kpis as kpi
from footfall.analytics import reference_metrics as reference
from footfall.analytics.common import DateRange
from footfall.analytics.errors import SpecError
from footfall.analytics.kpis import KpiResult, KpiSpec
from footfall.events import Event
from footfall.events.record import events_to_table
from footfall.pipeline import Pipeline
from footfall.segments.live import SEGMENT_EVENT_TYPE
from footfall.store.database import Database

from .test_analytics_trends_property import (
    BACKENDS,
    FILTERS,
    NAMES,
    SETTINGS,
    Journeys,
    at,
    date_ranges,
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


def assert_same_kpis(actual: KpiResult, expected: KpiResult) -> None:
    assert (actual.active_persons, actual.sessions) == (expected.active_persons, expected.sessions)
    if expected.average_session_duration is None:
        assert actual.average_session_duration is None
    else:
        assert actual.average_session_duration is not None
        assert abs(actual.average_session_duration - expected.average_session_duration) <= timedelta(microseconds=1)
    rates = ("engagement_rate", "bounce_rate", "pages_per_session")
    assert [getattr(actual, name) for name in rates] == pytest.approx([getattr(expected, name) for name in rates])
    if expected.conversion_rate is None:
        assert actual.conversion_rate is None
    else:
        assert actual.conversion_rate == pytest.approx(expected.conversion_rate)
    assert actual.adoption == pytest.approx(expected.adoption)
    assert [(c.cohort, c.persons) for c in actual.clv] == [(c.cohort, c.persons) for c in expected.clv]
    assert [v for c in actual.clv for v in (c.revenue, c.revenue_per_person)] == pytest.approx(
        [v for c in expected.clv for v in (c.revenue, c.revenue_per_person)], abs=1e-6)


def checked(database: Database, spec: KpiSpec) -> KpiResult:
    rows, traits = reference.stored(database)
    result = kpi.run(database, spec)
    assert_same_kpis(result, reference.kpis(spec, rows, traits))
    return result


# -- random journeys ----------------------------------------------------------------------


@st.composite
def kpi_specs(draw: st.DrawFn, data: Journeys) -> KpiSpec:
    return KpiSpec(
        date_range=draw(date_ranges(data)),
        time_zone=data.zone,
        filters=draw(st.sampled_from(FILTERS)),
        conversion_event=draw(st.sampled_from((None, *NAMES))),
        features=tuple(draw(st.lists(st.sampled_from(NAMES), max_size=2, unique=True))),
        engaged_after=draw(st.sampled_from((timedelta(0), timedelta(seconds=10), timedelta(minutes=15), timedelta(hours=1)))),
    )


def _check_random_kpis(database: Database, data: st.DataObject) -> None:
    journey = data.draw(journeys(), label="journeys")
    ingest(empty(database), journey.events, journey.batches)
    rows, traits = reference.stored(database)
    for _ in range(3):
        spec = data.draw(kpi_specs(journey), label="kpis")
        if expected_spec_error(rows, events=[spec.conversion_event, *spec.features], filters=spec.filters):
            event("kpis: refused (unknown name)")
            with pytest.raises(SpecError):
                kpi.run(database, spec)
            continue
        expected = reference.kpis(spec, rows, traits)
        event(f"kpis: {min(expected.sessions, 3)}{'+' if expected.sessions >= 3 else ''} sessions")
        event(f"kpis: {'some' if 0 < expected.engagement_rate < 1 else 'no'} mix of engaged and bounced sessions")
        assert_same_kpis(kpi.run(database, spec), expected)


@settings(max_examples=20, **SETTINGS)  # type: ignore[arg-type]
@given(data=st.data())
def test_random_kpis_agree_with_the_reference(store: Database, data: st.DataObject) -> None:
    _check_random_kpis(store, data)


@pytest.mark.slow
@settings(max_examples=150, **SETTINGS)  # type: ignore[arg-type]
@given(data=st.data())
def test_many_random_kpis_agree_with_the_reference(store: Database, data: st.DataObject) -> None:
    _check_random_kpis(store, data)


# -- golden timelines ----------------------------------------------------------------------

DAY = DateRange.parse("2024-03-01", "2024-03-02")  # T0 is 2024-03-01 12:00 UTC


def page(when: str, who: str, number: int) -> Event:
    return message("page", at(when), anon=who, number=number)


def track(name: str, when: str, who: str, number: int, **properties: object) -> Event:
    return message("track", at(when), anon=who, event=name, number=number, properties=properties)


def test_same_timestamp_events(database: Database) -> None:
    ingest(database, [
        page("0s", "ann", 0), page("0s", "ann", 1),  # two page views in one millisecond: engaged
        page("0s", "bob", 2), track("purchase", "0s", "bob", 3, revenue=20),  # converted at once: engaged
        page("0s", "cyd", 4), track("click", "0s", "cyd", 5),  # one page, no time: a bounce
    ])
    result = checked(database, KpiSpec(DAY, conversion_event="purchase", features=("click",)))
    assert (result.active_persons, result.sessions, result.average_session_duration) == (3, 3, timedelta(0))
    assert (result.engagement_rate, result.bounce_rate) == pytest.approx((2 / 3, 1 / 3))
    assert result.pages_per_session == pytest.approx(4 / 3)
    assert (result.conversion_rate, result.adoption["click"]) == pytest.approx((1 / 3, 1 / 3))


def test_events_out_of_order_in_the_input(database: Database) -> None:
    # ann's three events come in three batches, latest first: they still make
    # one session of 20 minutes. bob's two page views an hour apart, sent in
    # reverse, are two sessions.
    ann = [page("20m", "ann", 0), page("0s", "ann", 1), track("click", "10m", "ann", 2)]
    bob = [page("1h", "bob", 3), page("0s", "bob", 4)]
    random.Random(3).shuffle(bob)
    ingest(database, [ann[0], *bob, ann[1], ann[2]], batches=(3, 4))
    result = checked(database, KpiSpec(DAY))
    assert (result.active_persons, result.sessions) == (2, 3)
    assert result.average_session_duration == timedelta(minutes=20) / 3
    assert (result.engagement_rate, result.pages_per_session) == pytest.approx((1 / 3, 4 / 3))


def test_persons_merged_by_identify(database: Database) -> None:
    pipeline = Pipeline(database)
    pipeline.ingest_events([page("0s", "laptop", 0), page("1m", "laptop", 1),
                            message("page", at("2m"), user="u1", number=2),
                            message("track", at("5m"), user="u1", event="purchase", number=3, properties={"revenue": 30})])
    spec = KpiSpec(DAY, conversion_event="purchase")
    before = checked(database, spec)
    assert (before.active_persons, before.sessions, before.conversion_rate) == (2, 2, 0.5)
    assert [(c.persons, c.revenue) for c in before.clv] == [(2, 30.0)]
    pipeline.ingest_events([message("identify", at("10m"), anon="laptop", user="u1", number=4)])
    # one person now; the laptop's session keeps its id, the identify joins u1's
    after = checked(database, spec)
    assert (after.active_persons, after.sessions, after.conversion_rate) == (1, 2, 1.0)
    assert [(c.persons, c.revenue, c.revenue_per_person) for c in after.clv] == [(1, 30.0, 30.0)]


def test_membership_changes_are_no_activity(database: Database) -> None:
    # The server records segment entries and exits as events without a
    # session. They open no session (all of them share the empty one) and
    # make no one active: cyd, with nothing but an entry, is not.
    ingest(database, [page("0s", "ann", 0), page("1m", "ann", 1), page("0s", "bob", 2)])
    persons = dict(database.query("SELECT anonymous_id, person_id FROM events").rows) | {"cyd": "cyd-person"}
    changes = [
        Event(event_id=f"change{number}", project_id=database.project_id, type=SEGMENT_EVENT_TYPE, event=kind,
              timestamp=at(when), received_at=at(when), person_id=persons[who], properties='{"segment_id": "fans"}')
        for number, (kind, when, who) in enumerate(
            [("segment_entered", "30s", "ann"), ("segment_exited", "2h", "bob"), ("segment_entered", "3h", "cyd")]
        )
    ]
    database.insert("events", events_to_table(changes))
    result = checked(database, KpiSpec(DAY, features=("page_view",)))
    assert (result.active_persons, result.sessions, result.average_session_duration) == (2, 2, timedelta(seconds=30))
    assert result.adoption == {"page_view": 1.0}


@pytest.mark.parametrize(
    ("zone", "sessions", "duration", "cohort"),
    [
        # page views at 22:55 and 23:05 UTC on 1 March; a purchase at 23:30 UTC on 29 February
        ("UTC", 1, timedelta(minutes=10), "2024-02"),
        ("Europe/Berlin", 1, timedelta(0), "2024-03"),  # 23:55 and 00:05: only the second is on 2 March
        ("Asia/Kolkata", 1, timedelta(minutes=10), "2024-03"),  # 04:25 and 04:35 on 2 March
        ("America/New_York", 0, None, "2024-02"),  # 17:55 and 18:05 on 1 March
    ],
)
def test_the_range_and_cohorts_follow_the_time_zone(
    database: Database, zone: str, sessions: int, duration: timedelta | None, cohort: str
) -> None:
    ingest(database, [page("10h55m", "ann", 0), page("11h5m", "ann", 1), track("purchase", "-12h30m", "ann", 2, revenue=9.5)])
    day = DateRange.parse("2024-03-01", "2024-03-02") if zone == "UTC" else DateRange.parse("2024-03-02", "2024-03-03")
    result = checked(database, KpiSpec(day, time_zone=zone))
    assert (result.sessions, result.average_session_duration) == (sessions, duration)
    assert [(c.cohort, c.revenue) for c in result.clv] == [(cohort, 9.5)]


def test_empty_ranges(database: Database) -> None:
    ingest(database, [page("0s", "ann", 0), track("purchase", "1m", "ann", 1, revenue=12.5), page("1d", "bob", 2)])
    # after every event: no sessions, but CLV still counts everyone seen before the end
    later = checked(database, KpiSpec(DateRange.parse("2024-04-01", "2024-04-02"), conversion_event="purchase", features=("page_view",)))
    assert (later.active_persons, later.sessions, later.average_session_duration) == (0, 0, None)
    assert (later.engagement_rate, later.bounce_rate, later.pages_per_session) == (0.0, 0.0, 0.0)
    assert (later.conversion_rate, later.adoption) == (0.0, {"page_view": 0.0})
    assert [(c.cohort, c.persons, c.revenue, c.revenue_per_person) for c in later.clv] == [("2024-03", 2, 12.5, 6.25)]
    # before every event: nobody at all
    earlier = checked(database, KpiSpec(DateRange(datetime(2024, 2, 1, tzinfo=UTC), at("-1ms"))))
    assert (earlier.active_persons, earlier.sessions, earlier.clv) == (0, 0, ())
