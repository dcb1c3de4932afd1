"""Trends, stickiness and lifecycle: hand-checked timelines and a Python
recount of the stored events, on both backends."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from footfall.analytics import DateRange
from footfall.analytics import trends as trend
from footfall.analytics.errors import SpecError
from footfall.analytics.trends import TrendSpec, bucket_start, per_person_quantile
from footfall.pipeline import Pipeline
from footfall.simulate import Simulation, SimulationSpec
from footfall.store.database import Database

from .timeline import track

WEEK = DateRange.parse("2024-03-01", "2024-03-08")  # T0 = 2024-03-01 12:00 UTC (a Friday)


def values(result: trend.TrendResult, breakdown: str | None = None) -> list[float]:
    [series] = [entry for entry in result.series if entry.breakdown == breakdown]
    return [point.value for point in series.points]


def test_counts_persons_and_properties_per_day(database: Database) -> None:
    Pipeline(database).ingest_events([
        track("purchase", "0s", anon="a", properties={"revenue": 10, "channel": "web"}),
        track("purchase", "1h", anon="a", properties={"revenue": 5.5, "channel": "web"}),
        track("purchase", "1d", anon="b", properties={"revenue": "n/a", "channel": "app"}),
        track("purchase", "2d", anon="a", properties={"channel": "app"}),
        track("view", "2d", anon="c"),
        track("purchase", "-1d", anon="z", properties={"revenue": 99}),  # before the range
        track("purchase", "11h59m", anon="c", properties={"revenue": 1}),  # 23:59 UTC on day 1
    ])
    count = trend.run(database, TrendSpec(WEEK, event="purchase"))
    assert [point.bucket for point in count.series[0].points][:2] == ["2024-03-01 00:00", "2024-03-02 00:00"]
    assert values(count) == [3, 1, 1, 0, 0, 0, 0]
    assert values(trend.run(database, TrendSpec(WEEK, event="purchase", measure="persons"))) == [2, 1, 1, 0, 0, 0, 0]
    assert values(trend.run(database, TrendSpec(WEEK, measure="persons"))) == [2, 1, 2, 0, 0, 0, 0]
    revenue = trend.run(database, TrendSpec(WEEK, event="purchase", measure="sum", property="revenue"))
    assert values(revenue) == [16.5, 0, 0, 0, 0, 0, 0]  # a string is not a number
    assert values(trend.run(database, TrendSpec(WEEK, event="purchase", measure="avg", property="revenue")))[0] == 5.5
    # In Berlin (UTC+1), c's purchase at 23:59 UTC falls on the next day.
    berlin = trend.run(database, TrendSpec(WEEK, event="purchase", time_zone="Europe/Berlin"))
    assert values(berlin)[:3] == [2, 2, 1]
    by_channel = trend.run(database, TrendSpec(WEEK, event="purchase", breakdown="properties.channel"))
    assert values(by_channel, "web") == [2, 0, 0, 0, 0, 0, 0]
    assert values(by_channel, "app") == [0, 1, 1, 0, 0, 0, 0]
    assert values(by_channel, None) == [1, 0, 0, 0, 0, 0, 0]
    per_person = trend.run(database, TrendSpec(WEEK, event="purchase", measure="per_person_avg"))
    assert values(per_person)[0] == 1.5


def test_active_users_stickiness_and_lifecycle(database: Database) -> None:
    Pipeline(database).ingest_events([
        track("visit", "-3d", anon="old"),  # first seen before the range
        track("visit", "0s", anon="a"), track("visit", "1d", anon="a"), track("visit", "2d", anon="a"),
        track("visit", "1d", anon="b"),
        track("visit", "2d", anon="old"),
        track("visit", "4d", anon="b"),
    ])
    assert values(trend.run(database, TrendSpec(WEEK, event="visit", measure="dau"))) == [1, 2, 2, 0, 1, 0, 0]
    assert values(trend.run(database, TrendSpec(WEEK, event="visit", measure="wau"))) == [1, 2, 3, 3, 3, 3, 3]
    assert values(trend.run(database, TrendSpec(WEEK, event="visit", measure="wau", interval="week"))) == [3, 1]
    assert trend.stickiness(database, TrendSpec(WEEK, event="visit")) == {1: 1, 2: 1, 3: 1}
    cycle = trend.lifecycle(database, TrendSpec(WEEK, event="visit"))
    day = {point.bucket[:10]: (point.new, point.returning, point.resurrecting, point.dormant) for point in cycle}
    assert day["2024-03-01"] == (1, 0, 0, 0)
    assert day["2024-03-02"] == (1, 1, 0, 0)
    assert day["2024-03-03"] == (0, 1, 1, -1)  # old comes back; b is gone
    assert day["2024-03-04"] == (0, 0, 0, -2)
    assert day["2024-03-05"] == (0, 0, 1, 0)  # b comes back
    assert day["2024-03-06"] == (0, 0, 0, -1)


def test_weeks_start_on_monday_and_months_on_the_first() -> None:
    friday = datetime(2024, 3, 1, 15, 30)
    assert bucket_start(friday, "week") == datetime(2024, 2, 26)
    assert bucket_start(friday, "month") == datetime(2024, 3, 1)
    assert [label[:10] for label in trend.buckets(TrendSpec(DateRange.parse("2024-01-31", "2024-03-02"), interval="month"))] == [
        "2024-01-01", "2024-02-01", "2024-03-01"]


@pytest.mark.parametrize("measure", ["count", "persons", "per_person_median", "per_person_p90", "sum", "wau"])
def test_trends_agree_with_a_recount_of_the_stored_events(database: Database, measure: str) -> None:
    pipeline = Pipeline(database)
    for table in Simulation(SimulationSpec(users=90, days=21, seed=8)).batches():
        pipeline.ingest(table)
    event = "purchase" if measure == "sum" else "page_view"
    spec = TrendSpec(DateRange.parse("2026-01-03", "2026-01-19"), event=event, measure=measure,  # type: ignore[arg-type]
                     interval="week" if measure == "wau" else "day", time_zone="Asia/Tokyo",
                     property="revenue" if measure == "sum" else None)
    result = trend.run(database, spec)
    tz = ZoneInfo(spec.time_zone)
    start, end = spec.date_range.resolve(spec.time_zone)
    rows = [row for row in database.query("SELECT person_id, event, timestamp, properties FROM events").rows
            if row[1] == event and start <= row[2] < end]
    assert len(rows) > (5 if measure == "sum" else 30)
    by_bucket: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for person, _, when, properties in rows:
        local = when.astimezone(tz).replace(tzinfo=None)
        by_bucket[bucket_start(local, spec.interval).strftime("%Y-%m-%d %H:%M")].append((person, properties))
    expected = []
    for label in trend.buckets(spec):
        entries = by_bucket.get(label, [])
        if measure == "count":
            expected.append(float(len(entries)))
        elif measure == "persons":
            expected.append(float(len({person for person, _ in entries})))
        elif measure == "sum":
            amounts = [json.loads(p).get("revenue") for _, p in entries]
            expected.append(float(sum(a for a in amounts if isinstance(a, int | float) and not isinstance(a, bool))))
        elif measure == "wau":
            last = datetime.strptime(label, "%Y-%m-%d %H:%M") + timedelta(days=7)
            expected.append(float(len({person for person, _, when, _ in rows
                                        if last - timedelta(days=7) <= when.astimezone(tz).replace(tzinfo=None) < last})))
        else:
            counts: dict[str, int] = defaultdict(int)
            for person, _ in entries:
                counts[person] += 1
            q = 0.5 if measure == "per_person_median" else 0.9
            expected.append(per_person_quantile(list(counts.values()), q) if counts else 0.0)
    assert values(result) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"measure": "total"}, "measure"),
        ({"interval": "year"}, "interval"),
        ({"measure": "sum"}, "property"),
        ({"measure": "count", "property": "revenue"}, "property"),
        ({"measure": "dau", "interval": "hour"}, "interval"),
        ({"measure": "wau", "breakdown": "properties.channel"}, "breakdown"),
        ({"event": ""}, "event"),
    ],
)
def test_bad_specs_name_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as error:
        TrendSpec(WEEK, **options)  # type: ignore[arg-type]
    assert error.value.field == field
