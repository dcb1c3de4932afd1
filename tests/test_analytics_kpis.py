"""Sessions and KPIs: a hand-checked timeline, and a Python recount of the
stored events, on both backends."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec
import pytest

from footfall.analytics import DateRange, Filter
from footfall.analytics import kpis as kpi
from footfall.analytics import reference_metrics as reference
from footfall.analytics.errors import SpecError
from footfall.analytics.kpis import KpiCounts, KpiSpec
from footfall.events import Event
from footfall.events.record import events_to_table
from footfall.pipeline import Pipeline
from footfall.simulate import Simulation, SimulationSpec
from footfall.store.database import Database

from .timeline import msg, track

DAY = DateRange.parse("2024-03-01", "2024-03-02")  # T0 is 2024-03-01 12:00 UTC


def page(when: str, anon: str) -> object:
    return msg("page", at_=when, anon=anon, name="Home")


def test_a_day_of_sessions(database: Database) -> None:
    Pipeline(database).ingest_events([
        # a: one session, two page views and a purchase of 30: engaged, converted
        page("0s", "a"), page("2m", "a"), track("purchase", "3m", anon="a", properties={"revenue": 30}),
        # a again, 2 hours later: a single page view lasting 0 s: a bounce
        page("2h", "a"),
        # b: one page view, then a search 5 s later: 5 s, one page: a bounce; used search
        page("1h", "b"), track("search", "1h5s", anon="b"),
        # c: one page view and a click 20 s later: engaged by duration
        page("3h", "c"), track("click", "3h20s", anon="c", properties={"revenue": "12"}),
        # d: the day before: outside the range, but counted in CLV (revenue 7, first seen in February)
        track("purchase", "-1d", anon="d", properties={"revenue": 7}),
    ])
    result = kpi.run(database, KpiSpec(DAY, conversion_event="purchase", features=("search", "click")))
    assert (result.active_persons, result.sessions) == (3, 4)
    assert result.average_session_duration == timedelta(seconds=(180 + 0 + 5 + 20) / 4)
    assert (result.engagement_rate, result.bounce_rate) == (0.5, 0.5)
    assert result.pages_per_session == 5 / 4
    assert result.conversion_rate == pytest.approx(1 / 3)
    assert result.adoption == {"search": pytest.approx(1 / 3), "click": pytest.approx(1 / 3)}
    assert [(c.cohort, c.persons, c.revenue) for c in result.clv] == [("2024-02", 1, 7.0), ("2024-03", 3, 30.0)]
    assert result.clv[1].revenue_per_person == 10.0
    # Filters narrow the events, hence the sessions and persons.
    narrowed = kpi.run(database, KpiSpec(DAY, filters=(Filter("event", "neq", "search"),)))
    assert (narrowed.active_persons, narrowed.sessions, narrowed.conversion_rate) == (3, 4, None)
    assert narrowed.average_session_duration == timedelta(seconds=(180 + 0 + 0 + 20) / 4)


def test_an_empty_range(database: Database) -> None:
    result = kpi.run(database, KpiSpec(DateRange.parse("2030-01-01", "2030-01-02"), conversion_event="purchase"))
    assert (result.active_persons, result.sessions, result.average_session_duration) == (0, 0, None)
    assert (result.bounce_rate, result.conversion_rate, result.clv) == (0.0, 0.0, ())


def test_kpis_agree_with_a_recount_of_the_stored_events(database: Database) -> None:
    pipeline = Pipeline(database)
    for table in Simulation(SimulationSpec(users=120, days=20, seed=4)).batches():
        pipeline.ingest(table)
    spec = KpiSpec(DateRange.parse("2026-01-05", "2026-01-12"), time_zone="America/New_York",
                   conversion_event="purchase", features=("search", "add_to_cart"))
    result = kpi.run(database, spec)
    start, end = spec.date_range.resolve(spec.time_zone)
    rows = database.query("SELECT person_id, session_id, event, timestamp, properties FROM events").rows
    in_range = [row for row in rows if start <= row[3] < end]
    sessions: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for _, session, event, when, _ in in_range:
        sessions[session].append((when, event))
    durations = [max(t for t, _ in s) - min(t for t, _ in s) for s in sessions.values()]
    engaged = sum(
        1 for s, d in zip(sessions.values(), durations, strict=True)
        if d >= timedelta(seconds=10) or sum(e == "page_view" for _, e in s) >= 2 or any(e == "purchase" for _, e in s)
    )
    active = {row[0] for row in in_range}
    assert result.sessions == len(sessions) > 50
    assert result.average_session_duration == pytest.approx(sum(durations, timedelta()) / len(durations), abs=timedelta(milliseconds=1))
    assert result.engagement_rate == pytest.approx(engaged / len(sessions))
    assert result.pages_per_session == pytest.approx(sum(e == "page_view" for *_, e, _, _ in in_range) / len(sessions))
    assert result.active_persons == len(active)
    assert result.conversion_rate == pytest.approx(len({r[0] for r in in_range if r[2] == "purchase"}) / len(active))
    for feature in spec.features:
        assert result.adoption[feature] == pytest.approx(len({r[0] for r in in_range if r[2] == feature}) / len(active))
    first: dict[str, datetime] = {}
    revenue: dict[str, float] = defaultdict(float)
    for person, _, _, when, properties in rows:
        if when >= end:
            continue
        first[person] = min(first.get(person, when), when)
        value = json.loads(properties).get("revenue")
        if isinstance(value, int | float) and not isinstance(value, bool):
            revenue[person] += value
    cohorts: dict[str, list[str]] = defaultdict(list)
    for person, when in first.items():
        cohorts[when.astimezone(ZoneInfo(spec.time_zone)).strftime("%Y-%m")].append(person)
    expected = [(month, len(people), round(sum(revenue[p] for p in people), 4)) for month, people in sorted(cohorts.items())]
    assert [(c.cohort, c.persons, round(c.revenue, 4)) for c in result.clv] == expected
    assert any(c.revenue > 0 for c in result.clv)


def stored(person: str, session: str, event: str, when: str, properties: str = "{}") -> Event:
    """An event as stored, its person, session and JSON text given: what the
    pipeline would not write (a session of two persons) is written all the same."""
    return msgspec.structs.replace(
        track(event, when, anon=person), person_id=person, session_id=session, properties=properties
    )


def assert_same_counts(first: KpiCounts, second: KpiCounts) -> None:
    """Equal, revenue up to float noise (summed in another order)."""
    assert replace(first, cohorts=()) == replace(second, cohorts=())
    assert [cohort[:2] for cohort in first.cohorts] == [cohort[:2] for cohort in second.cohorts]
    assert [cohort[2] for cohort in first.cohorts] == pytest.approx([cohort[2] for cohort in second.cohorts])


def test_both_plans_count_the_same_on_both_engines(database: Database) -> None:
    # Each engine runs its own plan (three scans, or one); both are plain SQL
    # for either engine, so each is checked here on both, against the reference.
    database.insert("events", events_to_table([
        # s1 is a's two page views and purchase, and b's click: a session of two persons
        stored("a", "s1", "page_view", "0s"), stored("a", "s1", "page_view", "1m"),
        stored("a", "s1", "purchase", "2m", '{"revenue": 30}'), stored("b", "s1", "click", "3m"),
        # b's search has revenue under an escaped key (in JSON, "\u0072evenue" is "revenue")
        stored("b", "s2", "search", "1h", '{"\\u0072evenue": 12}'),
        stored("b", "s2", "page_view", "1h5s", '{"revenue": "12"}'),  # a string: no revenue
        # c: before the range only (CLV of February), and d: a session of one event
        stored("c", "s3", "purchase", "-1d", '{"revenue": 7.5}'), stored("d", "s4", "page_view", "5h"),
    ]))
    rows, traits = reference.stored(database)
    for spec in (
        KpiSpec(DAY, conversion_event="purchase", features=("search", "click")),
        KpiSpec(DAY, filters=(Filter("event", "neq", "click"),), features=("search",)),
        KpiSpec(DateRange.parse("2024-03-01", "2024-03-02"), time_zone="America/New_York", conversion_event="click"),
    ):
        at_once = kpi.count_at_once(database, spec)
        assert_same_counts(kpi.count_separately(database, spec), at_once)
        expected = reference.kpis(spec, rows, traits)
        assert (at_once.active, at_once.sessions) == (expected.active_persons, expected.sessions)
        assert [(c[0], c[1]) for c in at_once.cohorts] == [(c.cohort, c.persons) for c in expected.clv]
        assert [c[2] for c in at_once.cohorts] == pytest.approx([c.revenue for c in expected.clv])
        result = kpi.run(database, spec)
        assert result.engagement_rate == pytest.approx(expected.engagement_rate)
        assert result.average_session_duration is not None
        assert expected.average_session_duration is not None
        assert abs(result.average_session_duration - expected.average_session_duration) <= timedelta(microseconds=1)
        assert result.adoption == pytest.approx(expected.adoption)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"date_range": "2026-01"}, "date_range"),
        ({"conversion_event": ""}, "conversion_event"),
        ({"features": ("search", "")}, "features[1]"),
        ({"engaged_after": timedelta(seconds=-1)}, "engaged_after"),
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
    ],
)
def test_bad_specs_name_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as error:
        KpiSpec(**{"date_range": DAY, **options})  # type: ignore[arg-type]
    assert error.value.field == field


def test_the_sql_is_printable_without_a_database() -> None:
    sql = kpi.compile(KpiSpec(DAY, conversion_event="purchase"), "duckdb")
    assert sql.count("SELECT") >= 3
    assert datetime(2024, 3, 1, tzinfo=UTC).strftime("%Y-%m-%d") in sql
    # ClickHouse reads the events once, grouped by session and person at once.
    one_scan = kpi.compile(KpiSpec(DAY, conversion_event="purchase"), "clickhouse")
    assert ";" not in one_scan
    assert "GROUPING SETS" in one_scan
