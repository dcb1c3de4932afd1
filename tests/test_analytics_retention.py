"""Retention and cohorts, three ways and on real data: golden timelines with
the table written beside them, the same bodies on DuckDB and ClickHouse,
random event sets against the pure-Python reference, and CDNOW's monthly
cohorts of first purchase against an independent pandas computation.

Timelines read ``ann: signup@2024-03-04T10:00, buy@2024-03-11T09:00{"plan": "pro"}``:
one person per line (the name is their user id), events at UTC times,
properties in braces. Events go through the pipeline, so identity
resolution runs. Expected tables read ``(cohort, size, [returned in period
0, 1, ...])``, None where a period was not observed.

2024-03-04 is a Monday: weeks in these timelines start there.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from footfall.analytics import retention as retention_module
from footfall.analytics import retention_reference as reference
from footfall.analytics.common import DateRange
from footfall.analytics.conditions import COLUMNS, Filter
from footfall.analytics.errors import SpecError, UnsupportedFeature
from footfall.analytics.reference import EventRow
from footfall.analytics.retention import (
    ANY_EVENT,
    PERIOD_INDEX_SQL,
    CohortRow,
    Counting,
    Period,
    RetentionEvent,
    RetentionMode,
    RetentionResult,
    RetentionSpec,
    compile,
    format_table,
    period_index,
    period_start,
    run,
)
from footfall.events import Event, parse_message
from footfall.events.record import conform
from footfall.importers.datasets import CDNOW_MASTER, read_cdnow
from footfall.importers.runner import run_import
from footfall.importers.source import SourceError
from footfall.pipeline import Pipeline
from footfall.store.database import Database
from footfall.store.duckdb_backend import DuckDBBackend
from footfall.store.schema import PERSONS, derived_tables

from .conftest import make_clickhouse_database

# -- fixtures and helpers -------------------------------------------------------

_TABLES = ("events", "persons", "identities", "person_merges")
_BACKENDS = ["duckdb", pytest.param("clickhouse", marks=pytest.mark.clickhouse)]


def _open(kind: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Database:
    if kind == "duckdb":
        db = Database(DuckDBBackend(tmp_path_factory.mktemp("retention") / "store.duckdb"))
        db.migrate()
        return db
    return make_clickhouse_database(request.getfixturevalue("chdb_dsn"))


def _close(db: Database) -> None:
    if db.backend.dialect == "clickhouse":
        db.backend.execute(f"DROP DATABASE IF EXISTS `{db.backend.database}`")  # type: ignore[attr-defined]
    db.close()


@pytest.fixture(scope="module", params=_BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """One store per backend for the module; each test starts from empty tables."""
    db = _open(request.param, request, tmp_path_factory)
    yield db
    _close(db)


def _empty(database: Database) -> None:
    for table in (*_TABLES, *derived_tables(database.backend.dialect)):
        database.backend.execute(f"TRUNCATE TABLE {table}")


@pytest.fixture
def database(store: Database) -> Database:
    _empty(store)
    return store


_EVENT = re.compile(r"(\w+)@(\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d+)?)?)(\{[^}]*\})?")


def message(kind: str, when: str, **fields: Any) -> Event:
    """A message at a UTC time written ``2024-03-04T10:00`` (seconds optional)."""
    stamp = datetime.fromisoformat(when.removesuffix("Z")).replace(tzinfo=UTC)
    body = {"type": kind, "timestamp": stamp.isoformat(), **fields}
    return parse_message(body, received_at=datetime(2024, 6, 1, tzinfo=UTC))


def journeys(text: str) -> list[Event]:
    events = []
    for line in text.strip().splitlines():
        user, _, timeline = line.partition(":")
        user = user.strip()
        for position, (name, when, properties) in enumerate(_EVENT.findall(timeline)):
            events.append(
                message(
                    "track", when, userId=user, event=name,
                    properties=json.loads(properties) if properties else {}, messageId=f"{user}-{position:02d}",
                )
            )
    return events


def ingest(database: Database, text: str) -> None:
    Pipeline(database).ingest_events(journeys(text))


def retention(start: str | None = "signup", returning: str | None = "buy", **options: Any) -> RetentionSpec:
    """A spec; ``returning="same"`` leaves the return event as the start event."""
    start_event = ANY_EVENT if start is None else RetentionEvent(start)
    return_event = None if returning == "same" else (ANY_EVENT if returning is None else RetentionEvent(returning))
    return RetentionSpec(start_event=start_event, return_event=return_event, **options)


Table = list[tuple[str | None, int, list[int | None]]]


def table(result: RetentionResult, *, rates: bool = False) -> Table:
    """Rows as (cohort start or breakdown value, size, returned per period; None: not observed)."""

    def label(row: CohortRow) -> str | None:
        return row.start.isoformat() if row.start is not None else row.group

    def value(row: CohortRow, n: int) -> Any:
        cell = row.cells[n]
        if not cell.observed:
            return None
        return round(cell.rate, 4) if rates and cell.rate is not None else cell.returned

    return [(label(row), row.size, [value(row, n) for n in range(len(row.cells))]) for row in result.rows]


def cells(row: CohortRow) -> list[tuple[int, int]]:
    """(returned, denominator) per period: breakdown rows mix cohorts, so each period has its own."""
    return [(cell.returned, cell.size) for cell in row.cells]


def checked(database: Database, spec: RetentionSpec, *, known_events_only: bool = True) -> RetentionResult:
    """Run on the engine and on the reference over the same stored events; they must agree."""
    result = run(database, spec, known_events_only=known_events_only)
    assert result == reference.retention(spec, stored_rows(database), stored_traits(database))
    return result


def stored_rows(database: Database) -> list[EventRow]:
    columns = ", ".join(COLUMNS)
    stored = database.query_arrow(f"SELECT person_id, event_id, timestamp, properties, {columns} FROM events")
    rows = []
    for row in stored.to_pylist():
        stamp: datetime = row["timestamp"]
        rows.append(
            EventRow(
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

SHOP = """
ann: signup@2024-03-04T10:00, buy@2024-03-04T09:00, buy@2024-03-12T08:00, buy@2024-03-27T08:00
bob: signup@2024-03-05T10:00, buy@2024-03-05T10:00
cyd: signup@2024-03-06T10:00, buy@2024-03-20T10:00
dan: signup@2024-03-12T10:00, buy@2024-03-13T10:00, buy@2024-03-19T10:00
eve: signup@2024-03-14T10:00
fay: buy@2024-03-05T10:00
"""
# Weeks of 4, 11, 18 and 25 March. ann bought an hour before signing up (not a
# return), then in weeks 1 and 3 of her cohort; bob bought in the very
# millisecond he signed up (a week-0 return); cyd in week 2 only; dan, of the
# cohort of 11 March, in weeks 0 and 1; eve never; fay bought but never
# signed up. The latest event is ann's of 27 March: observation ends just
# after it, so weeks from 25 March are not over, and 1 April's never began.


def test_weekly_cohorts_on_and_on_or_after(database: Database) -> None:
    ingest(database, SHOP)
    on = checked(database, retention(period="week", periods=3))
    assert table(on) == [
        ("2024-03-04", 3, [1, 1, 1, 1]),
        ("2024-03-11", 2, [1, 1, 0, None]),
    ]
    assert table(on, rates=True) == [
        ("2024-03-04", 3, [0.3333, 0.3333, 0.3333, 0.3333]),
        ("2024-03-11", 2, [0.5, 0.5, 0.0, None]),
    ]
    assert [cell.complete for cell in on.rows[0].cells] == [True, True, True, False]
    assert [cell.complete for cell in on.rows[1].cells] == [True, True, False, False]
    # overall sums the cohorts that reached each period
    assert cells(on.overall) == [(2, 5), (2, 5), (1, 5), (1, 3)]
    assert on.overall.size == 5
    assert on.observed_until == datetime(2024, 3, 27, 8, 0, 0, 1000, tzinfo=UTC)

    # cumulative: ann (furthest: week 3) counts in weeks 0-3, cyd in 0-2, bob in 0
    later = checked(database, retention(period="week", periods=3, counting="on_or_after"))
    assert table(later) == [
        ("2024-03-04", 3, [3, 2, 2, 1]),
        ("2024-03-11", 2, [1, 1, 0, None]),
    ]


def test_period_zero_is_everyone_when_the_return_is_the_start(database: Database) -> None:
    ingest(database, SHOP)
    # cohorts of first purchase: ann (her 09:00 buy), bob and fay; dan; cyd
    result = checked(database, retention("buy", "same", period="week", periods=1))
    assert table(result) == [
        ("2024-03-04", 3, [3, 1]),
        ("2024-03-11", 1, [1, 1]),
        ("2024-03-18", 1, [1, 0]),
    ]
    assert [row.rates[0] for row in result.rows] == [1.0, 1.0, 1.0]


def test_first_seen_with_any_event_as_return(database: Database) -> None:
    ingest(database, SHOP)
    # cohort by first event of any kind, any event a return (active persons):
    # ann, bob, cyd, fay first seen in week 0 (ann back in week 1); dan and
    # eve in the next (dan back a week later)
    result = checked(database, retention(None, None, period="week", periods=1))
    assert table(result) == [
        ("2024-03-04", 4, [4, 1]),
        ("2024-03-11", 2, [2, 1]),
    ]


def test_first_time_and_recurring(database: Database) -> None:
    ingest(
        database,
        """
        ann: login@2024-03-04T10:00, login@2024-03-05T10:00, login@2024-03-12T10:00, login@2024-03-26T10:00
        bob: login@2024-03-12T10:00, login@2024-03-19T10:00
        cyd: login@2024-02-26T10:00, login@2024-03-19T10:00
        """,
    )
    march = DateRange.parse("2024-03-04", "2024-04-01")
    # first time: cyd first logged in before the range, so she is in no cohort
    first = checked(database, retention("login", "same", period="week", periods=3, date_range=march))
    assert table(first) == [
        ("2024-03-04", 1, [1, 1, 0, 1]),
        ("2024-03-11", 1, [1, 1, 0, None]),
    ]
    # recurring: a person is in the cohort of every week they logged in
    again = checked(database, retention("login", "same", period="week", periods=3, date_range=march, mode="recurring"))
    assert table(again) == [
        ("2024-03-04", 1, [1, 1, 0, 1]),  # ann
        ("2024-03-11", 2, [2, 1, 1, None]),  # ann (back in week 2), bob (week 1)
        ("2024-03-18", 2, [2, 0, None, None]),  # bob, cyd
        ("2024-03-25", 1, [1, None, None, None]),  # ann
    ]
    assert cells(again.overall) == [(6, 6), (2, 5), (1, 3), (1, 1)]


def test_the_range_bounds_cohorts_and_returns(database: Database) -> None:
    ingest(database, SHOP)
    two_weeks = DateRange.parse("2024-03-04", "2024-03-18")
    # returns after the range do not count, and its last day ends observation
    on = checked(database, retention(period="week", periods=3, date_range=two_weeks))
    assert table(on) == [
        ("2024-03-04", 3, [1, 1, None, None]),
        ("2024-03-11", 2, [1, None, None, None]),
    ]
    assert on.observed_until == datetime(2024, 3, 18, tzinfo=UTC)
    assert all(cell.complete for row in on.rows for cell in row.cells if cell.observed)
    later = checked(database, retention(period="week", periods=3, date_range=two_weeks, counting="on_or_after"))
    assert table(later) == [
        ("2024-03-04", 3, [2, 1, None, None]),  # ann's week-3 and cyd's week-2 buys are after the range
        ("2024-03-11", 2, [1, None, None, None]),
    ]
    # a range reaching past the data ends observation at the latest event
    long = checked(database, retention(period="week", periods=3, date_range=DateRange.parse("2024-03-11", "2024-06-01")))
    assert long.observed_until == datetime(2024, 3, 27, 8, 0, 0, 1000, tzinfo=UTC)
    assert table(long) == [("2024-03-11", 2, [1, 1, 0, None])]


def test_a_range_starting_mid_period(database: Database) -> None:
    ingest(
        database,
        """
        ann: visit@2024-03-04T10:00, buy@2024-03-05T10:00, visit@2024-03-07T10:00
        bob: visit@2024-03-05T10:00, buy@2024-03-06T12:00
        """,
    )
    from_wednesday = DateRange.parse("2024-03-06", "2024-03-20")
    # recurring: ann's visit of Thursday is her first in the range, so it
    # anchors her in the week of 4 March; her Tuesday buy came before it.
    # bob visited only before the range.
    recurring = checked(database, retention("visit", "buy", period="week", periods=1, date_range=from_wednesday, mode="recurring"))
    assert table(recurring) == [("2024-03-04", 1, [0, None])]
    # first time: both first visited before the range
    assert checked(database, retention("visit", "buy", period="week", periods=1, date_range=from_wednesday)).rows == ()


@pytest.mark.parametrize(
    ("period", "timeline", "expected"),
    [
        (
            "day",
            # one minute later is the next day; a millisecond before midnight
            # the same; 47 hours later the second day after
            """
            ann: signup@2024-03-04T23:59, buy@2024-03-05T00:00
            bob: signup@2024-03-04T00:00, buy@2024-03-04T23:59:59.999
            cyd: signup@2024-03-04T12:00, buy@2024-03-06T11:00
            """,
            [("2024-03-04", 3, [1, 1, 1])],
        ),
        (
            "week",
            # Sunday night to Monday morning is the next week; Monday 00:00 to
            # Sunday 23:59 is the same one
            """
            ann: signup@2024-03-10T23:00, buy@2024-03-11T01:00
            bob: signup@2024-03-11T00:00, buy@2024-03-17T23:59
            """,
            [("2024-03-04", 1, [0, 1, None]), ("2024-03-11", 1, [1, None, None])],
        ),
        (
            "month",
            # 31 January to 1 February; the leap day; two months to the day
            """
            ann: signup@2024-01-31T23:00, buy@2024-02-01T00:30
            bob: signup@2024-02-01T00:00, buy@2024-02-29T23:59
            cyd: signup@2024-01-01T00:00, buy@2024-03-01T00:00
            """,
            [("2024-01-01", 2, [0, 1, 1]), ("2024-02-01", 1, [1, 0, None])],
        ),
    ],
)
def test_period_edges(database: Database, period: Period, timeline: str, expected: Table) -> None:
    ingest(database, timeline)
    assert table(checked(database, retention(period=period, periods=2))) == expected


# ann signed up at 23:30 UTC on Sunday 3 March: 00:30 on Monday 4 March in
# Berlin; she bought 23 hours later. bob signed up at 23:30 UTC on 30 March,
# 00:30 on 31 March in Berlin, the day its clocks went forward (a 23-hour
# day); his buy at 22:30 UTC on 31 March is 00:30 on 1 April there.
TIME_ZONES = """
ann: signup@2024-03-03T23:30, buy@2024-03-04T22:30
bob: signup@2024-03-30T23:30, buy@2024-03-31T22:30
"""


@pytest.mark.parametrize(
    ("zone", "period", "expected"),
    [
        ("UTC", "day", [("2024-03-03", 1, [0, 1]), ("2024-03-30", 1, [0, 1])]),
        ("Europe/Berlin", "day", [("2024-03-04", 1, [1, 0]), ("2024-03-31", 1, [0, 1])]),
        ("America/Los_Angeles", "day", [("2024-03-03", 1, [0, 1]), ("2024-03-30", 1, [0, 1])]),
        ("UTC", "week", [("2024-02-26", 1, [0, 1]), ("2024-03-25", 1, [1, None])]),
        ("Europe/Berlin", "week", [("2024-03-04", 1, [1, 0]), ("2024-03-25", 1, [0, 1])]),
        # April begins at 22:00 UTC on 31 March in Berlin, before observation ends
        ("UTC", "month", [("2024-03-01", 2, [2, None])]),
        ("Europe/Berlin", "month", [("2024-03-01", 2, [1, 1])]),
    ],
)
def test_periods_follow_the_time_zone(database: Database, zone: str, period: Period, expected: Table) -> None:
    ingest(database, TIME_ZONES)
    assert table(checked(database, retention(period=period, periods=1, time_zone=zone))) == expected


def test_date_ranges_follow_the_time_zone(database: Database) -> None:
    ingest(database, TIME_ZONES)
    # the days from 4 March: ann is in them in Berlin, not in UTC
    days = DateRange.parse("2024-03-04", "2024-03-06")
    assert table(checked(database, retention(period="day", periods=1, date_range=days, time_zone="Europe/Berlin"))) == [
        ("2024-03-04", 1, [1, 0])
    ]
    assert table(checked(database, retention(period="day", periods=1, date_range=days))) == []


def test_same_timestamp_events(database: Database) -> None:
    ingest(
        database,
        """
        ann: signup@2024-03-04T10:00{"n": 1}, signup@2024-03-04T10:00{"n": 2}, buy@2024-03-04T10:00
        bob: buy@2024-03-04T10:00, signup@2024-03-04T10:00
        """,
    )
    # a buy in the signup's millisecond is a week-0 return, whichever was
    # written first; ann's two signups make one entry, anchored on the
    # lower event id (ann-00: n = 1)
    result = checked(database, retention(period="week", periods=1, breakdown="properties.n"))
    assert [(row.group, cells(row)) for row in result.rows] == [("1", [(1, 1), (0, 0)]), (None, [(1, 1), (0, 0)])]
    recurring = checked(database, retention(period="day", periods=1, mode="recurring"))
    assert table(recurring) == [("2024-03-04", 2, [2, None])]


def test_events_out_of_order_in_the_input(database: Database) -> None:
    events = journeys(SHOP)
    random.Random(5).shuffle(events)
    pipeline = Pipeline(database)
    for start in range(0, len(events), 3):  # and spread over batches
        pipeline.ingest_events(events[start : start + 3])
    assert table(checked(database, retention(period="week", periods=3))) == [
        ("2024-03-04", 3, [1, 1, 1, 1]),
        ("2024-03-11", 2, [1, 1, 0, None]),
    ]


def test_persons_merged_by_identify_count_once(database: Database) -> None:
    pipeline = Pipeline(database)
    pipeline.ingest_events([message("track", "2024-03-04T10:00", anonymousId="laptop", event="signup", messageId="l1")])
    pipeline.ingest_events(
        [
            message("identify", "2024-03-12T10:00", anonymousId="phone", userId="u1", messageId="p1"),
            message("track", "2024-03-12T10:05", userId="u1", event="buy", messageId="p2"),
        ]
    )
    signup_buy = retention(period="week", periods=1)
    first_seen = retention(None, None, period="week", periods=1)
    # two persons: the laptop's signed up, the phone's bought
    assert table(checked(database, signup_buy)) == [("2024-03-04", 1, [0, 0])]
    assert table(checked(database, first_seen)) == [("2024-03-04", 1, [1, 0]), ("2024-03-11", 1, [1, None])]
    # the laptop signs in as u1: its person merges into u1's, events and all
    report = pipeline.ingest_events([message("identify", "2024-03-12T11:00", anonymousId="laptop", userId="u1", messageId="l2")])
    assert report.merges == 1
    assert table(checked(database, signup_buy)) == [("2024-03-04", 1, [0, 1])]
    assert table(checked(database, first_seen)) == [("2024-03-04", 1, [1, 1])]
    assert len({row[0] for row in database.query("SELECT DISTINCT person_id FROM events").rows}) == 1


def test_filters_on_start_return_events_and_persons(database: Database) -> None:
    Pipeline(database).ingest_events(
        [
            message("identify", "2024-03-01T09:00", userId="ann", traits={"tier": "gold"}, messageId="ann-id"),
            *journeys(
                """
                ann: signup@2024-03-04T10:00{"test": true}, buy@2024-03-12T10:00{"plan": "pro"}
                bob: signup@2024-03-04T11:00, buy@2024-03-12T10:00{"plan": "free"}
                cyd: signup@2024-03-04T12:00{"source": "ads"}, buy@2024-03-05T10:00{"plan": "pro"}, buy@2024-03-13T10:00{"plan": "pro", "test": true}
                """
            ),
        ]
    )
    pro = RetentionEvent("buy", (Filter("properties.plan", "eq", "pro"),))
    signup = RetentionEvent("signup")
    # only pro buys are returns: cyd in week 0; ann and cyd in week 1
    assert table(checked(database, RetentionSpec(signup, pro, period="week", periods=1))) == [("2024-03-04", 3, [1, 2])]
    # only signups from ads start a cohort
    ads = RetentionEvent("signup", (Filter("properties.source", "eq", "ads"),))
    assert table(checked(database, RetentionSpec(ads, pro, period="week", periods=1))) == [("2024-03-04", 1, [1, 1])]
    # test events are left out altogether: ann's signup, cyd's second buy
    no_tests = (Filter("properties.test", "is_not_set"),)
    assert table(checked(database, RetentionSpec(signup, pro, period="week", periods=1, filters=no_tests))) == [
        ("2024-03-04", 2, [1, 0])
    ]
    # person traits: gold persons only
    gold = (Filter("traits.tier", "eq", "gold"),)
    assert table(checked(database, RetentionSpec(signup, pro, period="week", periods=1, filters=gold))) == [
        ("2024-03-04", 1, [0, 1])
    ]


def test_breakdown_by_a_person_trait(database: Database) -> None:
    Pipeline(database).ingest_events(
        [
            *(
                message("identify", "2024-03-01T09:00", userId=user, traits={"plan": plan}, messageId=f"{user}-id")
                for user, plan in (("ann", "pro"), ("bob", "free"), ("cyd", "pro"), ("dan", "pro"))
            ),
            *journeys(SHOP),
        ]
    )
    result = checked(database, retention(period="week", periods=3, breakdown="traits.plan"))
    # rows are trait values, each person measured from their own cohort week:
    # pro is ann and cyd (of 4 March) and dan (of 11 March, whose week 3 has
    # not begun); eve has no plan
    assert [(row.group, row.size, cells(row)) for row in result.rows] == [
        ("pro", 3, [(1, 3), (2, 3), (1, 3), (1, 2)]),
        ("free", 1, [(1, 1), (0, 1), (0, 1), (0, 1)]),
        (None, 1, [(0, 1), (0, 1), (0, 1), (0, 0)]),
    ]
    assert [row.start for row in result.rows] == [None, None, None]
    # the overall row is the same as without the breakdown
    assert result.overall == checked(database, retention(period="week", periods=3)).overall


def test_both_counting_plans_agree(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    # ClickHouse counts by arrays; DuckDB's joins are plain SQL for it too, so
    # on ClickHouse both are held to the reference.
    Pipeline(database).ingest_events([
        *(message("identify", "2024-03-01T09:00", userId=user, traits={"plan": plan}, messageId=f"{user}-id")
          for user, plan in (("ann", "pro"), ("bob", "free"), ("dan", "pro"))),
        *journeys(SHOP),
    ])
    dialect = database.backend.dialect
    march = DateRange.parse("2024-03-05", "2024-03-26")
    for plan in dict.fromkeys((retention_module._COUNTS[dialect], retention_module._joined_counts)):
        monkeypatch.setitem(retention_module._COUNTS, dialect, plan)
        for options in (
            {}, {"counting": "on_or_after"}, {"mode": "recurring", "date_range": march},
            {"mode": "recurring", "counting": "on_or_after", "breakdown": "traits.plan"},
            {"breakdown": "traits.plan", "date_range": march}, {"breakdown": "event", "counting": "on_or_after"},
        ):
            checked(database, retention(period="week", periods=3, **options))


def test_breakdown_by_acquisition_channel(database: Database) -> None:
    def visit(user: str, when: str, source: str | None, properties: dict[str, Any], number: int) -> Event:
        context = {"campaign": {"source": source}} if source else {}
        return message("page", when, userId=user, properties=properties, context=context, messageId=f"{user}-{number}")

    Pipeline(database).ingest_events(
        [
            visit("ann", "2024-03-04T10:00", "ads", {"ref": "mail"}, 0),
            visit("ann", "2024-03-12T10:00", "seo", {"ref": "blog"}, 1),
            visit("bob", "2024-03-05T10:00", "seo", {"ref": 2}, 0),
            visit("cyd", "2024-03-12T10:00", None, {}, 0),
            visit("cyd", "2024-03-19T10:00", "ads", {}, 1),
        ]
    )
    # the channel of the first event a person was seen with
    by_source = checked(database, retention(None, None, period="week", periods=1, breakdown="utm_source"))
    assert [(row.group, cells(row)) for row in by_source.rows] == [
        ("ads", [(1, 1), (1, 1)]),
        ("seo", [(1, 1), (0, 1)]),
        (None, [(1, 1), (1, 1)]),
    ]
    by_ref = checked(database, retention(None, None, period="week", periods=1, breakdown="properties.ref"))
    assert [row.group for row in by_ref.rows] == ["2", "mail", None]
    assert format_table(by_source).splitlines() == [
        "utm_source  size  week 0  week 1",
        "ads            1    100%    100%",
        "seo            1    100%      0%",
        "(none)         1    100%    100%*",
        "overall        3    100%     67%*",
        "* the period is not over yet: its count can still grow",
    ]


def test_empty_store_and_empty_ranges(database: Database) -> None:
    empty = checked(database, retention(period="week", periods=2))
    assert (empty.rows, empty.observed_until, empty.overall.size) == ((), None, 0)
    assert [cell.rate for cell in empty.overall.cells] == [None, None, None]
    assert format_table(empty) == "cohort   size  week 0  week 1  week 2\noverall     0"
    ingest(database, SHOP)
    later = checked(database, retention(period="week", periods=2, date_range=DateRange.parse("2025-01-01", "2025-02-01")))
    assert later.rows == ()
    assert later.overall.size == 0


def test_the_text_table(database: Database) -> None:
    ingest(database, SHOP)
    result = checked(database, retention(period="week", periods=3))
    assert format_table(result) == "\n".join(
        [
            "cohort      size  week 0  week 1  week 2  week 3",
            "2024-03-04     3     33%     33%     33%     33%*",
            "2024-03-11     2     50%     50%      0%*",
            "overall        5     40%     40%     20%*    33%*",
            "* the period is not over yet: its count can still grow",
        ]
    )
    assert format_table(result, "count").splitlines()[1:3] == [
        "2024-03-04     3       1       1       1       1*",
        "2024-03-11     2       1       1       0*",
    ]
    assert result.labels() == ["2024-03-04", "2024-03-11"]
    assert result.counts() == [[1, 1, 1, 1], [1, 1, 0, None]]
    assert result.rates()[1] == [0.5, 0.5, 0.0, None]


def test_unknown_events_are_refused_with_a_suggestion(database: Database) -> None:
    ingest(database, "ann: signup@2024-03-04T10:00, purchase@2024-03-05T10:00")
    with pytest.raises(SpecError) as caught:
        run(database, retention("signup", "purchse"))
    assert caught.value.field == "return_event.event"
    assert "did you mean 'purchase'?" in caught.value.problem
    with pytest.raises(SpecError, match=r"start_event.event"):
        run(database, retention("sigup", "purchase"))
    # asked not to check, it is a table nobody is in
    assert run(database, retention("sigup", "purchase"), known_events_only=False).rows == ()


@pytest.mark.parametrize(
    ("build", "field", "message"),
    [
        (lambda: retention(period="fortnight"), "period", "day, week, month"),
        (lambda: retention(periods=0), "periods", "1 to 400"),
        (lambda: retention(periods=401), "periods", "1 to 400"),
        (lambda: retention(periods=True), "periods", "1 to 400"),
        (lambda: retention(mode="returning"), "mode", "'first_time' or 'recurring'"),
        (lambda: retention(counting="after"), "counting", "'on'"),
        (lambda: retention(time_zone="Mars/Olympus"), "time_zone", "unknown time zone"),
        (lambda: retention(breakdown="propertys.plan"), "breakdown", "unknown field"),
        (lambda: retention(breakdown="viewport_width"), "breakdown", "holds numbers"),
        (lambda: RetentionSpec(start_event="signup"), "start_event", "give a RetentionEvent"),  # type: ignore[arg-type]
        (lambda: RetentionSpec(return_event="buy"), "return_event", "give a RetentionEvent"),  # type: ignore[arg-type]
        (lambda: RetentionEvent(""), "RetentionEvent.event", "event name, or None"),
        (lambda: RetentionEvent("buy", (Filter("traits.plan", "eq", "pro"),)), "RetentionEvent.filters[0].field", "person trait"),
        (lambda: retention(filters=(("properties.a", "eq", 1),)), "filters[0]", "give a Filter"),
        (lambda: retention(date_range=DateRange(datetime(2024, 3, 2, tzinfo=UTC), datetime(2024, 3, 2, 0, 30)), time_zone="Asia/Tokyo"), "date_range", "the range is empty"),
        (lambda: format_table(None, "percent"), "show", "'rate' or 'count'"),  # type: ignore[arg-type]
    ],
)
def test_bad_specs_name_the_field(build: Any, field: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        build()
    assert caught.value.field == field
    assert message in caught.value.problem


def test_compile_needs_no_database_and_is_per_dialect() -> None:
    spec = retention(
        period="month", counting="on_or_after", breakdown="traits.plan", time_zone="Europe/Berlin",
        date_range=DateRange.parse("2024-01-01", "2024-07-01"),
    )
    duckdb_sql = compile(spec, "duckdb", project_id="shop")
    clickhouse_sql = compile(spec, "clickhouse", project_id="shop")
    assert duckdb_sql == compile(spec, "duckdb", project_id="shop")  # deterministic
    assert "timezone('Europe/Berlin', timestamp)" in duckdb_sql
    assert "toDate(timestamp, 'Europe/Berlin')" in clickhouse_sql
    assert "FROM range(0, 9)" in duckdb_sql
    # ClickHouse computes a CTE again where it is read: it counts by arrays, not joins.
    assert "ARRAY JOIN" in clickhouse_sql
    assert "ARRAY JOIN" not in duckdb_sql
    assert "persons FINAL" in clickhouse_sql
    assert "persons FINAL" not in duckdb_sql
    assert "project_id = 'shop'" in duckdb_sql
    with pytest.raises(UnsupportedFeature, match="sqlite"):
        compile(spec, "sqlite")


def test_period_arithmetic_agrees_with_the_engines(database: Database) -> None:
    # a day a week from 1995 to 2030, and the edges: the engines' period
    # index of each (the SQL every query uses) against period_index
    days = [date(1995, 1, 1) + timedelta(days=n) for n in range(0, 13_000, 7)] + [date(2024, 2, 29), date(2030, 12, 31)]
    periods: tuple[Period, ...] = ("day", "week", "month")
    for period in periods:
        sql_day = "CAST(d AS DATE)" if database.backend.dialect == "duckdb" else "toDate(d)"
        values = ", ".join(f"('{day.isoformat()}')" for day in days)
        source = f"(SELECT * FROM (VALUES {values}) AS v(d))" if database.backend.dialect == "duckdb" else (
            f"(SELECT arrayJoin([{', '.join(repr(day.isoformat()) for day in days)}]) AS d)"
        )
        rows = database.query(f"SELECT d, {PERIOD_INDEX_SQL[period].format(day=sql_day)} FROM {source} AS s").rows
        found = {str(d): int(index) for d, index in rows}
        assert found == {day.isoformat(): period_index(day, period) for day in days}
    for day in days:
        assert period_start(period_index(day, "day"), "day") == day
        monday = period_start(period_index(day, "week"), "week")
        assert (monday.weekday(), (day - monday).days < 7) == (0, True)
        assert period_start(period_index(day, "month"), "month") == day.replace(day=1)


# -- random event sets: the engine against the reference -----------------------------

BASE = datetime(2024, 3, 1, tzinfo=UTC)
NAMES = ("a", "b", "c")
PROPERTIES = ({}, {"plan": "pro"}, {"plan": "free"}, {"n": 1}, {"plan": "pro", "n": 2}, {"plan": None})
EVENT_FILTERS = ((), (Filter("properties.plan", "eq", "pro"),), (Filter("properties.n", "is_set"),))
GLOBAL_FILTERS = ((), (Filter("properties.plan", "neq", "free"),), (Filter("traits.vip", "eq", True),), (Filter("utm_source", "neq", "seo"),))
TRAITS: dict[str, dict[str, Any]] = {"p0": {"vip": True}, "p1": {"vip": False}, "p2": {}}  # p3 has no person row
ZONES = ("UTC", "Europe/Berlin", "America/Los_Angeles", "Asia/Kolkata")

# Times on a 7-hour grid, some half an hour past, over five weeks: they fall
# on every hour of the local day, across two clock changes and two months.
random_events = st.lists(
    st.tuples(
        st.sampled_from(("p0", "p1", "p2", "p3")),
        st.sampled_from(NAMES),
        st.integers(0, 120),
        st.sampled_from((0, 30)),
        st.sampled_from(PROPERTIES),
        st.sampled_from((None, "ads", "seo")),
    ),
    min_size=10,
    max_size=40,
)


@st.composite
def matchers(draw: st.DrawFn) -> RetentionEvent:
    # Mostly plain events, so that most tables have someone in them.
    filters = draw(st.sampled_from(((), (), *EVENT_FILTERS)))
    return RetentionEvent(draw(st.sampled_from((None, *NAMES, NAMES[0]))), filters)


@st.composite
def retention_specs(draw: st.DrawFn) -> RetentionSpec:
    period: Period = draw(st.sampled_from(("day", "week", "month")))
    mode: RetentionMode = draw(st.sampled_from(("first_time", "recurring")))
    counting: Counting = draw(st.sampled_from(("on", "on_or_after")))
    # Ranges of local days, or between any two hours: most begin and end mid-period.
    date_range = None
    kind = draw(st.sampled_from(("none", "days", "hours")))
    if kind == "days":
        first = date(2024, 3, 1) + timedelta(days=draw(st.integers(0, 30)))
        date_range = DateRange(first, first + timedelta(days=draw(st.integers(1, 30))))
    elif kind == "hours":
        start = BASE + timedelta(hours=draw(st.integers(0, 700)))
        date_range = DateRange(start, start + timedelta(hours=draw(st.integers(1, 700))))
    return RetentionSpec(
        start_event=draw(matchers()),
        return_event=draw(st.one_of(st.none(), matchers())),
        period=period,
        periods=draw(st.integers(1, 6)),
        mode=mode,
        counting=counting,
        date_range=date_range,
        time_zone=draw(st.sampled_from(ZONES)),
        filters=draw(st.sampled_from(GLOBAL_FILTERS)),
        breakdown=draw(st.sampled_from((None, None, "traits.vip", "utm_source", "properties.plan", "properties.n"))),
    )


def load_random(database: Database, rows: list[tuple[str, str, int, int, dict[str, Any], str | None]], ids: list[int]) -> None:
    """Events straight into the store (person ids as given), and the persons' traits."""
    _empty(database)
    if rows:
        times = [BASE + timedelta(hours=7 * tick, minutes=minutes) for _, _, tick, minutes, _, _ in rows]
        events = pa.table(
            {
                "event_id": [f"id{i:03d}" for i in ids],
                "project_id": [database.project_id] * len(rows),
                "type": ["track"] * len(rows),
                "event": [row[1] for row in rows],
                "person_id": [row[0] for row in rows],
                "session_id": ["s"] * len(rows),
                "timestamp": pa.array(times, pa.timestamp("ms", tz="UTC")),
                "received_at": pa.array(times, pa.timestamp("ms", tz="UTC")),
                "properties": [json.dumps(row[4]) for row in rows],
                "utm_source": [row[5] for row in rows],
            }
        )
        database.insert("events", conform(events))
    moment = pa.array([BASE] * len(TRAITS), PERSONS.schema.field("first_seen").type)
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


def _check_against_reference(database: Database, data: st.DataObject) -> None:
    rows = data.draw(random_events, label="events")
    ids = data.draw(st.permutations(range(len(rows))), label="event id order")
    spec = data.draw(retention_specs(), label="spec")
    load_random(database, rows, ids)
    result = run(database, spec, known_events_only=False)
    assert result == reference.retention(spec, stored_rows(database), TRAITS)
    # the two countings describe the same returns
    for row in result.rows:
        assert all(cell.returned <= cell.size for cell in row.cells)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_tables_agree_with_the_reference(database: Database, data: st.DataObject) -> None:
    _check_against_reference(database, data)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_many_random_tables_agree_with_the_reference(database: Database, data: st.DataObject) -> None:
    _check_against_reference(database, data)


# -- real data: CDNOW's monthly cohorts of first purchase ------------------------------


def _cdnow_file() -> Path:
    try:
        return CDNOW_MASTER.locate()
    except SourceError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module", params=_BACKENDS)
def cdnow(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """CDNOW imported once per backend (about 2 s each)."""
    _cdnow_file()
    db = _open(request.param, request, tmp_path_factory)
    run_import(Pipeline(db), read_cdnow())
    yield db
    _close(db)


Expected = dict[tuple[str, int], int]  # (cohort month, month N; -1 for the size) -> persons


def _tables(pairs: pd.DataFrame, last: pd.Period) -> dict[str, Expected]:
    """From (customer, cohort, month bought) pairs with the month bought at or
    after the cohort's: sizes, and per cohort and month N how many bought in
    exactly month N ("on") and in month N or later ("on_or_after"), for the
    months the data covers."""
    pairs = pairs.assign(offset=(pairs["bought"] - pairs["cohort"]).map(lambda offset: offset.n))
    sizes = pairs.groupby("cohort")["customer_id"].nunique()
    on = pairs.groupby(["cohort", "offset"])["customer_id"].nunique()
    furthest = pairs.groupby(["cohort", "customer_id"])["offset"].max()
    answer: dict[str, Expected] = {"on": {}, "on_or_after": {}}
    for cohort, size in sizes.items():
        label = cohort.start_time.date().isoformat()
        reach = furthest.loc[cohort]
        for table in answer.values():
            table[(label, -1)] = int(size)
        for n in range((last - cohort).n + 1):
            answer["on"][(label, n)] = int(on.get((cohort, n), 0))
            answer["on_or_after"][(label, n)] = int((reach >= n).sum())
    return answer


@pytest.fixture(scope="module")
def cdnow_pandas() -> dict[tuple[str, str], Expected]:
    """Monthly cohorts of purchase computed with pandas straight from the raw
    file, per (mode, counting): first purchase (first_time), and every month
    with a purchase (recurring); returns are purchases."""
    raw = pd.read_csv(_cdnow_file(), sep=r"\s+", dtype={"customer_id": str, "date": str})
    assert (len(raw), raw["customer_id"].nunique()) == (69_659, 23_570)
    raw["month"] = pd.to_datetime(raw["date"], format="%Y%m%d").dt.to_period("M")
    active = raw[["customer_id", "month"]].drop_duplicates()
    last = raw["month"].max()
    first = active.groupby("customer_id")["month"].min().rename("cohort").reset_index()
    first_time = first.merge(active.rename(columns={"month": "bought"}), on="customer_id")
    every = active.rename(columns={"month": "cohort"}).merge(active.rename(columns={"month": "bought"}), on="customer_id")
    every = every[every["bought"] >= every["cohort"]]
    expected = {}
    for mode, pairs in (("first_time", first_time), ("recurring", every)):
        for counting, table in _tables(pairs, last).items():
            expected[(mode, counting)] = table
    return expected


@pytest.mark.parametrize(
    ("mode", "counting"), [("first_time", "on"), ("first_time", "on_or_after"), ("recurring", "on"), ("recurring", "on_or_after")]
)
def test_cdnow_monthly_cohorts_agree_with_pandas(
    cdnow: Database, cdnow_pandas: dict[tuple[str, str], Expected], mode: RetentionMode, counting: Counting
) -> None:
    spec = RetentionSpec(start_event=RetentionEvent("purchase"), period="month", periods=17, mode=mode, counting=counting)
    started = time.perf_counter()
    result = run(cdnow, spec)
    elapsed = time.perf_counter() - started
    found: Expected = {}
    for row in result.rows:
        assert row.start is not None
        found[(row.start.isoformat(), -1)] = row.size
        found.update({(row.start.isoformat(), cell.period): cell.returned for cell in row.cells if cell.observed})
    assert found == cdnow_pandas[(mode, counting)]
    assert result.observed_until == datetime(1998, 6, 30, 0, 0, 0, 1000, tzinfo=UTC)
    if mode == "first_time":
        # CDNOW's customers all made their first purchase in the first quarter of 1997
        assert [(row.start, row.size) for row in result.rows] == [
            (date(1997, 1, 1), 7846), (date(1997, 2, 1), 8476), (date(1997, 3, 1), 7248),
        ]  # fmt: skip
    assert elapsed < 5
