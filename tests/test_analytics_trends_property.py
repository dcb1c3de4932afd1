"""Trends, stickiness and lifecycle three ways: golden timelines with the answer
beside them, the same bodies on DuckDB and ClickHouse, and random event sets
against the pure-Python reference (``footfall.analytics.reference_metrics``).

The random event sets are journeys of a few anonymous ids and user ids over
five days around a change of clocks (or of month): tracks, page views and
identifies (so persons merge), sent in shuffled batches through the pipeline,
so identity and sessions are the real ones. The reference reads the stored
rows back. This module also holds the journeys and store helpers that the KPI
and engagement property tests share.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any, get_args
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from footfall.analytics import reference_metrics as reference
from footfall.analytics import trends as trend
from footfall.analytics.common import DateRange
from footfall.analytics.conditions import MISSING, Filter, lookup, parse_field
from footfall.analytics.errors import SpecError
from footfall.analytics.trends import LifecyclePoint, TrendSeries, TrendSpec
from footfall.durations import parse_duration
from footfall.events import Event, parse_message
from footfall.pipeline import Pipeline
from footfall.store.database import Database
from footfall.store.duckdb_backend import DuckDBBackend
from footfall.store.schema import derived_tables

from .conftest import make_clickhouse_database

# -- stores: one per backend per module, emptied between examples -----------------------

TABLES = ("events", "persons", "identities", "person_merges")


def open_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """A store for the module's fixture (creating a ClickHouse database costs about a second)."""
    if request.param == "duckdb":
        db = Database(DuckDBBackend(tmp_path_factory.mktemp("metrics") / "store.duckdb"))
        db.migrate()
    else:
        db = make_clickhouse_database(request.getfixturevalue("chdb_dsn"))
    yield db
    if request.param == "clickhouse":
        db.backend.execute(f"DROP DATABASE IF EXISTS `{db.backend.database}`")  # type: ignore[attr-defined]
    db.close()


BACKENDS = ["duckdb", pytest.param("clickhouse", marks=pytest.mark.clickhouse)]


@pytest.fixture(scope="module", params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    yield from open_store(request, tmp_path_factory)


def empty(database: Database) -> Database:
    for table in (*TABLES, *derived_tables(database.backend.dialect)):
        database.backend.execute(f"TRUNCATE TABLE {table}")
    return database


@pytest.fixture
def database(store: Database) -> Database:
    return empty(store)


def message(kind: str, at: datetime, *, anon: str | None = None, user: str | None = None, event: str | None = None,
            number: int = 0, **fields: Any) -> Event:
    body: dict[str, Any] = {"type": kind, "timestamp": at.isoformat(), "messageId": f"m{number:03d}", **fields}
    body.update({key: value for key, value in (("anonymousId", anon), ("userId", user), ("event", event)) if value})
    return parse_message(body, received_at=datetime(2025, 1, 1, tzinfo=UTC))


def ingest(database: Database, events: Sequence[Event], batches: Sequence[int] = ()) -> None:
    """Through the pipeline, cut into batches at these positions."""
    pipeline = Pipeline(database)
    cuts = [0, *sorted(batches), len(events)]
    for start, stop in pairwise(cuts):
        if stop > start:
            pipeline.ingest_events(events[start:stop])


def expected_spec_error(rows: Sequence[reference.EventRow], *, events: Sequence[str | None] = (),
                        properties: Sequence[str | None] = (), filters: Sequence[Filter] = ()) -> bool:
    """Whether ``run`` refuses the spec as naming an event or property no stored event has."""
    if not rows:
        return False
    if any(name is not None and name not in {row.event for row in rows} for name in events):
        return True
    named = [name for name in properties if name] + [f.field for f in filters if f.op != "is_not_set"]
    for name in named:
        target = parse_field(name, "field")
        if target.kind == "event_property" and all(lookup(row.properties, target.path) is MISSING for row in rows):
            return True
    return False


# -- random journeys --------------------------------------------------------------------

ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Pacific/Chatham")
# Days after which the clocks change somewhere (and, for some, the month turns):
# New York 10 Mar, Berlin 31 Mar, Chatham 7 Apr and 29 Sep, Berlin 27 Oct, New York 3 Nov.
ANCHORS = (date(2024, 3, 9), date(2024, 3, 30), date(2024, 4, 6), date(2024, 9, 28), date(2024, 10, 26), date(2024, 11, 2))
SPAN_DAYS = 5
QUARTER = timedelta(minutes=15)
NAMES = ("page_view", "click", "purchase", "signup")
ANONS = ("a0", "a1", "a2", "a3")
USERS = ("u0", "u1")
PLANS = ("pro", "free", 2, True, None)
REVENUES = (10, 0, -3, 5.5, 19.99, "12", None, True)
JITTERS = (timedelta(0), timedelta(milliseconds=1), timedelta(milliseconds=-1), timedelta(minutes=7, seconds=30))
FILTERS: tuple[tuple[Filter, ...], ...] = (
    (),
    (Filter("properties.plan", "eq", "pro"),),
    (Filter("properties.plan", "neq", "pro"),),
    (Filter("properties.revenue", "gt", 1),),
    (Filter("properties.revenue", "is_not_set"),),
    (Filter("traits.tier", "eq", "gold"),),
    (Filter("event", "neq", "page_view"),),
)


@dataclass(frozen=True)
class Journeys:
    zone: str
    origin: datetime  # midnight UTC, a day before the anchor
    moments: tuple[datetime, ...]  # the instants events happen at (many share one)
    events: tuple[Event, ...]  # in the order sent
    batches: tuple[int, ...]

    def __repr__(self) -> str:
        sent = "\n".join(
            f"  {e.type} {e.event} at {e.timestamp.isoformat(timespec='milliseconds')} anon={e.anonymous_id}"
            f" user={e.user_id} {e.properties}" for e in self.events
        )
        return f"Journeys(zone={self.zone}, origin={self.origin:%Y-%m-%d}, batches={self.batches}, sent:\n{sent})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how hypothesis shows a failing example
        printer.text(repr(self))

    @property
    def first_day(self) -> date:
        return self.origin.date()


def clock_turns(zone: str, origin: datetime) -> list[datetime]:
    """Local midnights and changes of clocks in the five days from ``origin``."""
    tz = ZoneInfo(zone)
    turns = []
    moment = origin
    while moment < origin + timedelta(days=SPAN_DAYS):
        local = moment.astimezone(tz)
        before = (moment - QUARTER).astimezone(tz)
        if (local.hour, local.minute) == (0, 0) or local.utcoffset() != before.utcoffset():
            turns.append(moment)
        moment += QUARTER
    return turns


def _properties(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    optional: dict[str, st.SearchStrategy[Any]] = {
        "plan": st.sampled_from(PLANS), "revenue": st.sampled_from(REVENUES), "signal": st.just("passive"),
    }
    if kind == "page":
        optional["path"] = st.sampled_from(("/home", "/sale"))
    return st.fixed_dictionaries({}, optional=optional)


@st.composite
def journeys(draw: st.DrawFn, max_messages: int = 30) -> Journeys:
    zone = draw(st.sampled_from(ZONES), label="zone")
    origin = datetime.combine(draw(st.sampled_from(ANCHORS)), time(0), tzinfo=UTC) - timedelta(days=1)
    ticks = st.integers(0, SPAN_DAYS * 96 - 1).map(lambda tick: origin + tick * QUARTER)
    moments = tuple(draw(st.lists(st.one_of(ticks, st.sampled_from(clock_turns(zone, origin))), min_size=1, max_size=8, unique=True)))
    events = []
    count = draw(st.integers(0, max_messages), label="messages")
    for number in range(count):
        kind = draw(st.sampled_from(("track", "track", "page", "identify")))
        at = draw(st.sampled_from(moments)) + draw(st.sampled_from(JITTERS))
        anon = draw(st.sampled_from(ANONS))
        if kind == "identify":
            traits = draw(st.fixed_dictionaries({}, optional={"tier": st.sampled_from(("gold", "silver"))}))
            events.append(message("identify", at, anon=anon, user=draw(st.sampled_from(USERS)), number=number, traits=traits))
            continue
        who = draw(st.sampled_from(("anon", "anon", "user", "both")))
        user = draw(st.sampled_from(USERS)) if who != "anon" else None
        properties = draw(_properties(kind))
        if kind == "page":
            events.append(message("page", at, anon=anon if who != "user" else None, user=user, number=number, properties=properties))
        else:
            events.append(message("track", at, anon=anon if who != "user" else None, user=user, number=number,
                                  event=draw(st.sampled_from(NAMES)), properties=properties))
    order = draw(st.permutations(events), label="order sent")
    batches = tuple(draw(st.lists(st.integers(0, len(order)), max_size=2), label="batch cuts"))
    return Journeys(zone, origin, moments, tuple(order), batches)


@st.composite
def date_ranges(draw: st.DrawFn, data: Journeys) -> DateRange:
    """Whole local days, local times, instants events happen at, or a range with no event."""
    kind = draw(st.sampled_from(("days", "days", "local", "instants", "empty")), label="range kind")
    if kind == "days":
        start = data.first_day + timedelta(days=draw(st.integers(-1, SPAN_DAYS - 1)))
        return DateRange(start, start + timedelta(days=draw(st.integers(1, 4))))
    if kind == "local":
        day = data.first_day + timedelta(days=draw(st.integers(0, SPAN_DAYS - 1)))
        start = datetime.combine(day, time(draw(st.integers(0, 23)), draw(st.sampled_from((0, 30, 45)))))
        end = start + timedelta(hours=draw(st.integers(1, 60)))
    elif kind == "instants":
        start = draw(st.sampled_from(data.moments))
        end = start + draw(st.sampled_from((timedelta(milliseconds=1), timedelta(hours=5), timedelta(days=1), timedelta(days=3))))
    else:
        start = datetime.combine(data.first_day + timedelta(days=draw(st.sampled_from((-40, 60)))), time(0))
        end = start + timedelta(days=draw(st.integers(1, 3)))
    resolved = DateRange(start, end).resolve(data.zone)
    assume(resolved[0] < resolved[1])
    return DateRange(start, end)


@st.composite
def trend_specs(draw: st.DrawFn, data: Journeys) -> TrendSpec:
    measure = draw(st.sampled_from(get_args(trend.Measure)), label="measure")
    rolling = measure in ("dau", "wau", "mau")
    return TrendSpec(
        date_range=draw(date_ranges(data)),
        event=draw(st.sampled_from((None, *NAMES))),
        measure=measure,
        interval=draw(st.sampled_from(("day", "week", "month") if rolling else ("hour", "day", "week", "month"))),
        property="revenue" if measure in ("sum", "avg") else None,
        time_zone=data.zone,
        filters=draw(st.sampled_from(FILTERS)),
        breakdown=None if rolling else draw(st.sampled_from((None, None, "properties.plan", "event", "path"))),
    )


# -- comparing ---------------------------------------------------------------------------


def assert_same_series(actual: Sequence[TrendSeries], expected: Sequence[TrendSeries]) -> None:
    """The same series, points and values (to float noise), and in an order the
    reference allows: largest total first, equal totals by value, None last."""
    by_value = {series.breakdown: series for series in expected}
    assert sorted(map(str, (s.breakdown for s in actual))) == sorted(map(str, by_value))
    for series in actual:
        want = by_value[series.breakdown]
        assert [p.bucket for p in series.points] == [p.bucket for p in want.points], series.breakdown
        assert [p.value for p in series.points] == pytest.approx([p.value for p in want.points], rel=1e-9, abs=1e-9)
    for first, second in pairwise(actual):
        total, next_total = by_value[first.breakdown].total, by_value[second.breakdown].total
        if abs(total - next_total) > 1e-6:
            assert total > next_total
        else:
            assert (first.breakdown is None, first.breakdown or "") < (second.breakdown is None, second.breakdown or "")


def checked_trend(database: Database, spec: TrendSpec) -> trend.TrendResult:
    rows, traits = reference.stored(database)
    result = trend.run(database, spec)
    assert_same_series(result.series, reference.trend(spec, rows, traits))
    return result


def checked_stickiness(database: Database, spec: TrendSpec) -> dict[int, int]:
    rows, traits = reference.stored(database)
    found = trend.stickiness(database, spec)
    assert found == reference.stickiness(spec, rows, traits)
    return found


def checked_lifecycle(database: Database, spec: TrendSpec) -> tuple[LifecyclePoint, ...]:
    rows, traits = reference.stored(database)
    found = trend.lifecycle(database, spec)
    assert found == reference.lifecycle(spec, rows, traits)
    return found


def _check_random_trends(database: Database, data: st.DataObject) -> None:
    journey = data.draw(journeys(), label="journeys")
    ingest(empty(database), journey.events, journey.batches)
    rows, traits = reference.stored(database)
    for _ in range(3):
        spec = data.draw(trend_specs(journey), label="trend")
        if expected_spec_error(rows, events=[spec.event], properties=[spec.property, spec.breakdown], filters=spec.filters):
            event("trend: refused (unknown name)")
            with pytest.raises(SpecError):
                trend.run(database, spec)
            continue
        expected = reference.trend(spec, rows, traits)
        event(f"trend: {'some' if any(s.total for s in expected) else 'no'} events, {len(expected)} series")
        assert_same_series(trend.run(database, spec).series, expected)
    spec = data.draw(trend_specs(journey), label="stickiness and lifecycle")
    if expected_spec_error(rows, events=[spec.event], filters=spec.filters):
        return
    spec = TrendSpec(spec.date_range, event=spec.event, interval=spec.interval, time_zone=spec.time_zone, filters=spec.filters)
    assert trend.stickiness(database, spec) == reference.stickiness(spec, rows, traits)
    cycle = reference.lifecycle(spec, rows, traits)
    event(f"lifecycle: {'some' if any(p.returning or p.resurrecting or p.dormant for p in cycle) else 'no'} returns or losses")
    assert trend.lifecycle(database, spec) == cycle


SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]}


@settings(max_examples=20, **SETTINGS)  # type: ignore[arg-type]
@given(data=st.data())
def test_random_trends_agree_with_the_reference(store: Database, data: st.DataObject) -> None:
    _check_random_trends(store, data)


@pytest.mark.slow
@settings(max_examples=150, **SETTINGS)  # type: ignore[arg-type]
@given(data=st.data())
def test_many_random_trends_agree_with_the_reference(store: Database, data: st.DataObject) -> None:
    _check_random_trends(store, data)


# -- golden timelines --------------------------------------------------------------------

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)  # a Friday
WEEK = DateRange.parse("2024-03-01", "2024-03-08")


def at(offset: str) -> datetime:
    """``"1d2h"`` after T0, or ``"-3h"`` before."""
    delta = parse_duration(offset.lstrip("-"))
    return T0 - delta if offset.startswith("-") else T0 + delta


def track(name: str, when: str, who: str, number: int, **properties: Any) -> Event:
    return message("track", at(when), anon=who, event=name, number=number, properties=properties)


def values(result: trend.TrendResult, breakdown: str | None = None) -> list[float]:
    [series] = [entry for entry in result.series if entry.breakdown == breakdown]
    return [point.value for point in series.points]


def test_same_timestamp_events_all_count(database: Database) -> None:
    ingest(database, [
        track("buy", "0s", "ann", 0, revenue=10), track("buy", "0s", "ann", 1, revenue=5), track("buy", "0s", "bob", 2, revenue=1),
        track("buy", "1d", "bob", 3), track("buy", "1d", "bob", 4), track("buy", "1d", "bob", 5),
    ])
    day = {"date_range": WEEK, "event": "buy"}
    assert values(checked_trend(database, TrendSpec(**day)))[:2] == [3, 3]  # type: ignore[arg-type]
    assert values(checked_trend(database, TrendSpec(**day, measure="persons")))[:2] == [2, 1]  # type: ignore[arg-type]
    # per person on day 1: ann 2, bob 1: mean 1.5, median 1.5, p90 1 + 0.9 * (2 - 1)
    assert values(checked_trend(database, TrendSpec(**day, measure="per_person_avg")))[:2] == [1.5, 3]  # type: ignore[arg-type]
    assert values(checked_trend(database, TrendSpec(**day, measure="per_person_median")))[0] == 1.5  # type: ignore[arg-type]
    assert values(checked_trend(database, TrendSpec(**day, measure="per_person_p90")))[0] == pytest.approx(1.9)  # type: ignore[arg-type]
    assert values(checked_trend(database, TrendSpec(**day, measure="sum", property="revenue")))[:2] == [16, 0]  # type: ignore[arg-type]
    # the tie breaks no hour in two
    assert values(checked_trend(database, TrendSpec(**day, interval="hour")))[12] == 3  # type: ignore[arg-type]
    assert checked_stickiness(database, TrendSpec(**day)) == {1: 1, 2: 1}  # type: ignore[arg-type]


def test_events_out_of_order_in_the_input(database: Database) -> None:
    events = [
        track("visit", "0s", "ann", 0), track("visit", "1d", "ann", 1), track("visit", "3d", "ann", 2),
        track("visit", "1d", "bob", 3), track("visit", "1d1m", "bob", 4), track("visit", "2d", "cyd", 5),
    ]
    random.Random(5).shuffle(events)
    ingest(database, events, batches=(2, 4))  # late events in later batches
    spec = TrendSpec(WEEK, event="visit")
    assert values(checked_trend(database, spec)) == [1, 3, 1, 1, 0, 0, 0]
    assert values(checked_trend(database, TrendSpec(WEEK, event="visit", measure="wau"))) == [1, 2, 3, 3, 3, 3, 3]
    assert checked_stickiness(database, spec) == {1: 2, 3: 1}
    cycle = [(p.new, p.returning, p.resurrecting, p.dormant) for p in checked_lifecycle(database, spec)]
    assert cycle[:5] == [(1, 0, 0, 0), (1, 1, 0, 0), (1, 0, 0, -2), (0, 0, 1, -1), (0, 0, 0, -1)]


def test_persons_merged_by_identify_count_once(database: Database) -> None:
    pipeline = Pipeline(database)
    pipeline.ingest_events([message("track", at("0s"), anon="laptop", event="visit", number=0),
                            message("track", at("1d"), user="u1", event="visit", number=1)])
    spec = TrendSpec(WEEK, event="visit")
    assert checked_stickiness(database, spec) == {1: 2}  # two persons so far
    pipeline.ingest_events([message("identify", at("2d"), anon="laptop", user="u1", number=2)])
    # one person now, with both days; on day 2 they are returning (day 1's
    # visit moved to them), not new
    assert checked_stickiness(database, spec) == {2: 1}
    assert values(checked_trend(database, TrendSpec(WEEK, event="visit", measure="wau")))[1:3] == [1, 1]
    assert values(checked_trend(database, TrendSpec(WEEK, measure="persons")))[:3] == [1, 1, 1]  # the identify is an event
    cycle = [(p.new, p.returning, p.resurrecting, p.dormant) for p in checked_lifecycle(database, spec)]
    assert cycle[:3] == [(1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 0, -1)]


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        # ann at 23:30 UTC on 1 March, bob at 00:30 UTC on 2 March, cyd at 10:40 UTC on 2 March
        ("UTC", [1, 2]),
        ("Europe/Berlin", [0, 3]),  # 00:30, 01:30, 11:40 on 2 March
        ("America/New_York", [2, 1]),  # 18:30 and 19:30 on 1 March, 05:40 on 2 March
        ("Asia/Kolkata", [0, 3]),  # 05:00, 06:00 and 16:10 on 2 March
        ("Pacific/Chatham", [0, 2]),  # 13:15 and 14:15 on 2 March (+13:45); cyd at 00:25 on 3 March
    ],
)
def test_days_follow_the_time_zone(database: Database, zone: str, expected: list[int]) -> None:
    ingest(database, [track("visit", "11h30m", "ann", 0), track("visit", "12h30m", "bob", 1), track("visit", "22h40m", "cyd", 2)])
    spec = TrendSpec(DateRange.parse("2024-03-01", "2024-03-03"), event="visit", time_zone=zone)
    assert values(checked_trend(database, spec)) == expected


def test_hours_across_changes_of_clocks(database: Database) -> None:
    spring = datetime(2024, 3, 31, 0, 30, tzinfo=UTC)  # 01:30 in Berlin, 03:30 half an hour later
    autumn = datetime(2024, 10, 27, 0, 30, tzinfo=UTC)  # 02:30 summer time, then 02:30 winter time an hour later
    ingest(database, [
        message("track", spring, anon="ann", event="visit", number=0),
        message("track", spring + timedelta(minutes=30), anon="ann", event="visit", number=1),
        message("track", autumn, anon="bob", event="visit", number=2),
        message("track", autumn + timedelta(hours=1), anon="bob", event="visit", number=3),
    ])
    short = checked_trend(database, TrendSpec(DateRange.parse("2024-03-31", "2024-04-01"), event="visit", interval="hour",
                                              time_zone="Europe/Berlin"))
    # a 23-hour day: there is no 02:00 to list
    assert [(p.bucket[11:], p.value) for p in short.series[0].points][:3] == [("00:00", 0), ("01:00", 1), ("03:00", 1)]
    assert len(short.series[0].points) == 23
    long = checked_trend(database, TrendSpec(DateRange.parse("2024-10-27", "2024-10-28"), event="visit", interval="hour",
                                             time_zone="Europe/Berlin"))
    # a 25-hour day: the local hour 02:00 happened twice, and holds both visits
    assert [(p.bucket[11:], p.value) for p in long.series[0].points][1:4] == [("01:00", 0), ("02:00", 2), ("03:00", 0)]
    assert len(long.series[0].points) == 24
    lifecycle = checked_lifecycle(database, TrendSpec(DateRange.parse("2024-03-31", "2024-04-01"), event="visit",
                                                      interval="hour", time_zone="Europe/Berlin"))
    assert [(p.bucket[11:], p.new, p.returning) for p in lifecycle[1:3]] == [("01:00", 1, 0), ("03:00", 0, 1)]


def test_lifecycle_from_just_after_a_skipped_hour(database: Database) -> None:
    # Berlin skipped 02:00-03:00 on 31 March 2024: the bucket before 03:00 is 01:00
    spring = datetime(2024, 3, 31, 0, 30, tzinfo=UTC)  # 01:30
    ingest(database, [message("track", spring, anon="ann", event="visit", number=0),
                      message("track", spring + timedelta(hours=1), anon="ann", event="visit", number=1)])  # 03:30
    spec = TrendSpec(DateRange(datetime(2024, 3, 31, 3, 0), datetime(2024, 3, 31, 5, 0)), event="visit", interval="hour",
                     time_zone="Europe/Berlin")
    cycle = checked_lifecycle(database, spec)
    assert [(p.bucket[11:], p.new, p.returning, p.resurrecting, p.dormant) for p in cycle] == [
        ("03:00", 0, 1, 0, 0), ("04:00", 0, 0, 0, -1)]


def test_hours_in_a_zone_a_quarter_hour_off(database: Database) -> None:
    # Chatham (UTC+12:45, +13:45 in summer) at its changes of clocks
    autumn = datetime(2024, 4, 6, 14, 0, tzinfo=UTC)  # 03:45 summer time becomes 02:45
    spring = datetime(2024, 9, 28, 14, 0, tzinfo=UTC)  # 02:45 becomes 03:45 summer time
    ingest(database, [message("track", autumn - timedelta(milliseconds=1), anon="ann", event="visit", number=0),  # 03:44:59.999
                      message("track", autumn, anon="bob", event="visit", number=1),  # 02:45 again
                      message("track", spring - timedelta(milliseconds=1), anon="cyd", event="visit", number=2),  # 02:44:59.999
                      message("track", spring, anon="dan", event="visit", number=3),  # 03:45
                      message("track", spring + timedelta(minutes=5), anon="eve", event="visit", number=4),  # 03:50
                      message("track", spring + timedelta(minutes=20), anon="eve", event="visit", number=5)])  # 04:05
    for day, hours in (("2024-04-07", {"02:00": 1, "03:00": 1}), ("2024-09-29", {"02:00": 1, "03:00": 2, "04:00": 1})):
        spec = TrendSpec(DateRange.parse(day, f"{day}T06:00"), event="visit", interval="hour", time_zone="Pacific/Chatham")
        assert {p.bucket[11:]: p.value for p in checked_trend(database, spec).series[0].points if p.value} == hours
    cycle = checked_lifecycle(database, TrendSpec(DateRange(autumn, autumn + timedelta(hours=2)), event="visit",
                                                  interval="hour", time_zone="Pacific/Chatham"))
    # the range starts in the second 02:00; its bucket is the whole local hour 02:00 (both of them)
    assert [(p.bucket[11:], p.new, p.returning, p.dormant) for p in cycle] == [
        ("02:00", 1, 0, 0), ("03:00", 1, 0, -1), ("04:00", 0, 0, -1)]
    # the hour before 04:00 on 29 September began at 03:45: eve was active in it
    cycle = checked_lifecycle(database, TrendSpec(DateRange(datetime(2024, 9, 29, 4, 0), datetime(2024, 9, 29, 5, 0)),
                                                  event="visit", interval="hour", time_zone="Pacific/Chatham"))
    assert [(p.bucket[11:], p.new, p.returning, p.resurrecting, p.dormant) for p in cycle] == [("04:00", 0, 1, 0, -1)]


def test_lifecycle_in_a_zone_of_one_fixed_offset(database: Database) -> None:
    # Etc/GMT-5 is UTC+5 all year: lifecycle shifts times by arithmetic there
    # instead of converting each event. ann's visits are on 1 and 2 March in
    # UTC, 2 and 3 March in the zone; bob's first event (not a visit) is late
    # on 2 March in the zone, his visit early on 3 March: he resurrects.
    ingest(database, [message("track", datetime(2024, 3, 1, 20, 0, tzinfo=UTC), anon="ann", event="visit", number=0),
                      message("track", datetime(2024, 3, 2, 20, 0, tzinfo=UTC), anon="ann", event="visit", number=1),
                      message("track", datetime(2024, 3, 2, 18, 30, tzinfo=UTC), anon="bob", event="page", number=2),
                      message("track", datetime(2024, 3, 2, 19, 30, tzinfo=UTC), anon="bob", event="visit", number=3)])
    spec = TrendSpec(DateRange.parse("2024-03-02", "2024-03-04"), event="visit", time_zone="Etc/GMT-5")
    cycle = [(p.bucket, p.new, p.returning, p.resurrecting, p.dormant) for p in checked_lifecycle(database, spec)]
    assert cycle == [("2024-03-02 00:00", 1, 0, 0, 0), ("2024-03-03 00:00", 0, 1, 1, 0)]


def test_weeks_and_months_at_the_edges(database: Database) -> None:
    # Sunday 31 March 23:30 in New York is Monday 1 April 03:30 UTC: a new week and month in UTC only
    ingest(database, [message("track", datetime(2024, 4, 1, 3, 30, tzinfo=UTC), anon="ann", event="visit", number=0)])
    for zone, week, month in (("UTC", "2024-04-01", "2024-04-01"), ("America/New_York", "2024-03-25", "2024-03-01")):
        by_week = checked_trend(database, TrendSpec(DateRange.parse("2024-03-25", "2024-04-08"), event="visit", interval="week", time_zone=zone))
        assert [p.bucket[:10] for p in by_week.series[0].points if p.value] == [week]
        by_month = checked_trend(database, TrendSpec(DateRange.parse("2024-03-20", "2024-04-10"), event="visit", interval="month", time_zone=zone))
        assert [p.bucket[:10] for p in by_month.series[0].points if p.value] == [month]


def test_empty_ranges(database: Database) -> None:
    ingest(database, [track("visit", "0s", "ann", 0, plan="pro"), track("visit", "1d", "bob", 1)])
    later = DateRange.parse("2024-06-01", "2024-06-03")
    by_plan = checked_trend(database, TrendSpec(later, event="visit", breakdown="properties.plan"))
    assert [(s.breakdown, [p.value for p in s.points]) for s in by_plan.series] == [(None, [0, 0])]
    assert values(checked_trend(database, TrendSpec(later, event="visit", measure="mau"))) == [0, 0]
    assert values(checked_trend(database, TrendSpec(later, event="visit", measure="per_person_p90"))) == [0, 0]
    assert checked_stickiness(database, TrendSpec(later, event="visit")) == {}
    assert all((p.new, p.returning, p.resurrecting, p.dormant) == (0, 0, 0, 0)
               for p in checked_lifecycle(database, TrendSpec(later, event="visit")))
    # the day after the last visit: bob goes dormant in it
    after = checked_lifecycle(database, TrendSpec(DateRange.parse("2024-03-03", "2024-03-04"), event="visit"))
    assert [(p.new, p.returning, p.resurrecting, p.dormant) for p in after] == [(0, 0, 0, -1)]
    # a range of no time at all is a mistake, not an empty answer
    with pytest.raises(SpecError, match="empty"):
        TrendSpec(DateRange(datetime(2024, 3, 2, 1, 0), datetime(2024, 3, 2, 0, 30)), time_zone="Asia/Kolkata")
