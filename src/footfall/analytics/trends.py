"""Trends: a measure of one event (or of all events) per time bucket, and the
stickiness and lifecycle of the persons behind it.

Buckets are hours, days, weeks (starting Monday) or months in the spec's time
zone; every bucket of the range is listed, empty ones with 0. Measures:

- ``count``: events; ``persons``: distinct persons;
- ``dau`` / ``wau`` / ``mau``: distinct persons with the event in the 1 / 7 /
  30 local days ending with the bucket's last day (days of the range only, so
  the first days of a range see fewer);
- ``per_person_avg`` / ``per_person_median`` / ``per_person_p90``: of the
  events each active person did in the bucket (persons without any are not
  counted; the quantiles are interpolated);
- ``sum`` / ``avg`` of a numeric ``property`` (JSON numbers only).

A breakdown splits every bucket by an event property or text column.

**Stickiness**: for each N, the persons with the event on exactly N distinct
local days of the range. **Lifecycle** per bucket: ``new`` persons (their first
event ever, of any kind, falls in it), ``returning`` (active in it and in the
bucket before), ``resurrecting`` (active in it, not in the one before, and
not new), and ``dormant`` (active in the bucket before, not in it; given as a
negative count, the usual way to draw it).

>>> spec = TrendSpec(DateRange.parse("2026-01-01", "2026-01-08"), event="purchase", measure="sum", property="revenue")
>>> "revenue" in compile(spec, "duckdb")
True
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache, partial
from typing import Literal, get_args
from zoneinfo import ZoneInfo

from footfall.analytics.common import (
    DateRange,
    as_tuple,
    breakdown_sql,
    check_breakdown,
    check_names,
    check_range,
    events_where,
    zone,
)
from footfall.analytics.conditions import Filter, parse_field
from footfall.analytics.dialects import Dialect, dialect_named
from footfall.analytics.errors import SpecError
from footfall.store.database import Database

Interval = Literal["hour", "day", "week", "month"]
Measure = Literal["count", "persons", "dau", "wau", "mau", "per_person_avg", "per_person_median", "per_person_p90", "sum", "avg"]
_ROLLING = {"dau": 1, "wau": 7, "mau": 30}
_PER_PERSON = {"per_person_avg": None, "per_person_median": 0.5, "per_person_p90": 0.9}

_BUCKET = {
    "duckdb": {
        "hour": "strftime(date_trunc('hour', timezone({zone}, timestamp)), '%Y-%m-%d %H:00')",
        "other": "strftime(date_trunc('{unit}', timezone({zone}, timestamp)), '%Y-%m-%d 00:00')",
        "day_number": "(CAST(timezone({zone}, timestamp) AS DATE) - DATE '1970-01-01')",
        "quantile": "quantile_cont({x}, {q})",
        # Lifecycle (compile_lifecycle): a time in the zone, as a bucket's
        # start takes it; as a clock reading that orders like the clocks; in
        # a zone of one fixed offset, by arithmetic (timezone() on every
        # event costs more than the rest of the query). Then a bucket's
        # start, and its label, written once per distinct start.
        "local": "timezone({zone}, {x})",
        "clock": "timezone({zone}, {x})",
        "local_fixed": "make_timestamp(epoch_us({x}) + CAST({offset} AS BIGINT) * 1000000)",
        "start_other": "date_trunc('{unit}', {local})",
        "label": "strftime({start}, '%Y-%m-%d %H:%M')",
        "labels": "(VALUES {rows}) AS labels(position, bucket)",
    },
    "clickhouse": {
        # Not toStartOfHour: around Chatham's (UTC+12:45) changes of clocks it names the wrong hour.
        "hour": "formatDateTime(toTimeZone(timestamp, {zone}), '%Y-%m-%d %H:00')",
        "day": "formatDateTime(toDate(toTimeZone(timestamp, {zone})), '%Y-%m-%d 00:00')",
        "week": "formatDateTime(toMonday(toTimeZone(timestamp, {zone})), '%Y-%m-%d 00:00')",
        "month": "formatDateTime(toStartOfMonth(toTimeZone(timestamp, {zone})), '%Y-%m-%d 00:00')",
        "day_number": "toInt64(toDate(toTimeZone(timestamp, {zone})))",
        "quantile": "quantileExactInclusive({q})({x})",
        # Lifecycle: a time in the zone; a clock reading as the UTC time of
        # the same reading (its order is the clocks'; a DateTime in a zone
        # compares as an instant); a bucket's start as a date, written as its
        # label once per person and bucket; an hour's is its label already.
        "local": "toTimeZone({x}, {zone})",
        "clock": "addSeconds(toDateTime({x}, 'UTC'), timeZoneOffset(toTimeZone({x}, {zone})))",
        "local_fixed": "toTimeZone({x}, {zone})",
        "start_hour": "formatDateTime({local}, '%Y-%m-%d %H:00')",
        "start_day": "toDate({local})",
        "start_week": "toMonday({local})",
        "start_month": "toStartOfMonth({local})",
        "label": "formatDateTime({start}, '%Y-%m-%d 00:00')",
        "label_hour": "{start}",
        "labels": "values('position Int64, bucket String', {rows}) AS labels",
    },
}


@dataclass(frozen=True)
class TrendSpec:
    date_range: DateRange
    event: str | None = None  # None: every event
    measure: Measure = "count"
    interval: Interval = "day"
    property: str | None = None  # for sum / avg: properties.KEY or KEY
    time_zone: str = "UTC"
    filters: tuple[Filter, ...] = ()
    breakdown: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.date_range, DateRange):
            raise SpecError("date_range", "give the range, e.g. DateRange.parse('2026-01-01', '2026-02-01')")
        zone(self.time_zone)
        check_range(self.date_range, self.time_zone)
        if self.event is not None and (not isinstance(self.event, str) or not self.event):
            raise SpecError("event", "give an event name, or None for every event")
        if self.measure not in get_args(Measure):
            raise SpecError("measure", f"use one of {', '.join(get_args(Measure))}; got {self.measure!r}")
        if self.interval not in get_args(Interval):
            raise SpecError("interval", f"use one of {', '.join(get_args(Interval))}; got {self.interval!r}")
        if self.measure in ("sum", "avg"):
            if not isinstance(self.property, str) or not self.property:
                raise SpecError("property", f"{self.measure} needs the numeric property, e.g. 'revenue'")
            name = self.property if self.property.startswith("properties.") else f"properties.{self.property}"
            target = parse_field(name, "property")
            if target.kind != "event_property":
                raise SpecError("property", f"give an event property; got {self.property!r}")
            object.__setattr__(self, "property", name)
        elif self.property is not None:
            raise SpecError("property", f"only sum and avg take a property; {self.measure} counts events or persons")
        if self.measure in _ROLLING and self.interval == "hour":
            raise SpecError("interval", f"{self.measure} counts whole days; use day, week or month")
        object.__setattr__(self, "filters", as_tuple(self.filters, "filters", Filter))
        check_breakdown(self.breakdown)
        if self.breakdown is not None and self.measure in _ROLLING:
            raise SpecError("breakdown", f"{self.measure} has no breakdown (a person may appear under several values)")


@dataclass(frozen=True)
class TrendPoint:
    bucket: str  # 'YYYY-MM-DD HH:MM', local time of the bucket's start
    value: float


@dataclass(frozen=True)
class TrendSeries:
    breakdown: str | None
    points: tuple[TrendPoint, ...]

    @property
    def total(self) -> float:
        return sum(point.value for point in self.points)


@dataclass(frozen=True)
class TrendResult:
    spec: TrendSpec
    series: tuple[TrendSeries, ...]  # one, or one per breakdown value (largest total first)


# -- buckets -------------------------------------------------------------------


def _local(value: datetime, tz: ZoneInfo) -> datetime:
    return value.astimezone(tz).replace(tzinfo=None)


def bucket_start(moment: datetime, interval: Interval) -> datetime:
    """The start of the bucket holding a local time."""
    if interval == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "week":
        return day - timedelta(days=day.weekday())
    if interval == "month":
        return day.replace(day=1)
    return day


def _next(start: datetime, interval: Interval) -> datetime:
    if interval == "hour":
        return start + timedelta(hours=1)
    if interval == "day":
        return start + timedelta(days=1)
    if interval == "week":
        return start + timedelta(days=7)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def buckets(spec: TrendSpec) -> list[str]:
    """Every bucket the range touches, as local start times."""
    tz = ZoneInfo(spec.time_zone)
    start, end = spec.date_range.resolve(spec.time_zone)
    current, last = bucket_start(_local(start, tz), spec.interval), _local(end - timedelta(microseconds=1), tz)
    labels = []
    while current <= last:
        if spec.interval != "hour" or _lived(current, tz):
            labels.append(current.strftime("%Y-%m-%d %H:%M"))
        current = _next(current, spec.interval)
    return labels


def _lived(hour: datetime, tz: ZoneInfo) -> bool:
    """Whether the clocks showed this local hour at all (summer time skips one)."""
    quarters = (hour + timedelta(minutes=minutes) for minutes in (0, 15, 30, 45))
    return any(_local(moment.replace(tzinfo=tz).astimezone(UTC), tz) == moment for moment in quarters)


def _bucket_sql(dialect: Dialect, interval: Interval, time_zone: str) -> str:
    templates = _BUCKET[dialect.name]
    template = templates.get(interval) or templates["other"].replace("{unit}", interval)
    return template.format(zone=dialect.quote(time_zone))


def _where(spec: TrendSpec, dialect: Dialect, project_id: str, *, any_event: bool = False) -> str:
    start, end = spec.date_range.resolve(spec.time_zone)
    events = None if any_event or spec.event is None else [spec.event]
    return events_where(dialect, project_id, since=start, filters=spec.filters, events=events) + (
        f"\n  AND timestamp < {dialect.timestamp(end)}"
    )


# -- compilers -----------------------------------------------------------------


def compile(spec: TrendSpec, dialect_name: str, *, project_id: str = "default") -> str:
    """Rows of (bucket, breakdown, value); for dau/wau/mau, (person, local day number)."""
    dialect = dialect_named(dialect_name)
    where = _where(spec, dialect, project_id)
    if spec.measure in _ROLLING:
        day = _BUCKET[dialect.name]["day_number"].format(zone=dialect.quote(spec.time_zone))
        return f"SELECT DISTINCT person_id, {day} AS day FROM events\nWHERE {where}"
    bucket = _bucket_sql(dialect, spec.interval, spec.time_zone)
    group = breakdown_sql(dialect, check_breakdown(spec.breakdown))
    if spec.measure in _PER_PERSON:
        q = _PER_PERSON[spec.measure]
        value = "avg(n)" if q is None else _BUCKET[dialect.name]["quantile"].format(x="n", q=q)
        return (
            f"SELECT bucket, breakdown, {value} FROM (\n"
            f"  SELECT {bucket} AS bucket, {group} AS breakdown, person_id, count(*) AS n FROM events\n"
            f"  WHERE {where}\n  GROUP BY bucket, breakdown, person_id) AS per_person\n"
            f"GROUP BY bucket, breakdown"
        )
    if spec.measure in ("sum", "avg"):
        assert spec.property is not None
        path = dialect.json_path(tuple(spec.property.split(".")[1:]))
        number = dialect.render("json_number", doc="properties", path=path)
        is_number = dialect.render("json_is_number", doc="properties", path=path)
        value = (f"sum(CASE WHEN {is_number} THEN {number} ELSE 0 END)" if spec.measure == "sum"
                 else dialect.render("avg_if", x=number, condition=is_number))
    else:
        value = "count(*)" if spec.measure == "count" else "count(DISTINCT person_id)"
    return f"SELECT {bucket} AS bucket, {group} AS breakdown, {value}\nFROM events\nWHERE {where}\nGROUP BY bucket, breakdown"


def compile_activity(spec: TrendSpec, dialect_name: str, *, project_id: str = "default") -> str:
    """Distinct (person, local day number) with the spec's event in the range: stickiness."""
    dialect = dialect_named(dialect_name)
    day = _BUCKET[dialect.name]["day_number"].format(zone=dialect.quote(spec.time_zone))
    return f"SELECT person_id, count(DISTINCT {day}) AS days FROM events\nWHERE {_where(spec, dialect, project_id)}\nGROUP BY person_id"


def compile_lifecycle(spec: TrendSpec, dialect_name: str, *, project_id: str = "default") -> str:
    """Rows of (position, new, returning, resurrecting, dormant): position 1
    is the range's first bucket (0, the one before it, has no row).

    Each active person is counted in the engine, from a few hundred thousand
    (person, bucket) pairs rather than tens of millions of events:

    - ``active``: the distinct (person, bucket) pairs of the spec's events,
      from the bucket before the range on; a bucket's label is written once
      per pair, not once per event;
    - ``firsts``: each person's first bucket ever, the bucket of their
      earliest local time (a bucket never comes before the bucket of an
      earlier clock reading). In a zone of one fixed offset that is their
      earliest event's, so no event's time is converted; elsewhere only an
      event less than the zone's spread of offsets after the earliest can
      read an earlier clock time, so only those are converted;
    - ``states``: per person and bucket position, whether they were active
      in it, and in the one before (each active pair also marks the next
      one, so the pairs are read once: ClickHouse computes a CTE at each
      read), from which each bucket counts its four kinds of persons.

    ClickHouse gathers both from one scan instead (``_clickhouse_lifecycle``).
    """
    dialect = dialect_named(dialect_name)
    templates = _BUCKET[dialect.name]
    zone_sql = dialect.quote(spec.time_zone)
    tz = ZoneInfo(spec.time_zone)
    fixed = tz.utcoffset(None)  # None where the offset ever changes

    def local(x: str, template: str = "local") -> str:
        if fixed is None:
            return templates[template].format(x=x, zone=zone_sql)
        return templates["local_fixed"].format(x=x, zone=zone_sql, offset=fixed // timedelta(seconds=1))

    def first_local_times(project: str) -> str:
        """person_id, earliest: each person's earliest local time, over all their events."""
        if fixed is not None:
            return f"SELECT person_id, {local('min(timestamp)')} AS earliest FROM events WHERE project_id = {project} GROUP BY person_id"
        spread = _offset_spread(spec.time_zone) // timedelta(seconds=1)
        return (
            f"SELECT e.person_id AS person_id, min({local('e.timestamp', 'clock')}) AS earliest FROM events AS e\n"
            f"    JOIN (SELECT person_id, min(timestamp) AS first_time FROM events WHERE project_id = {project}"
            f" GROUP BY person_id) AS f ON e.person_id = f.person_id\n"
            f"    WHERE e.project_id = {project} AND e.timestamp < f.first_time + INTERVAL {spread} SECOND\n"
            f"    GROUP BY e.person_id"
        )

    def start_of(value: str) -> str:
        template = templates.get(f"start_{spec.interval}") or templates["start_other"].replace("{unit}", spec.interval)
        return template.format(local=value)

    def label(start: str) -> str:
        return templates.get(f"label_{spec.interval}", templates["label"]).format(start=start)

    start, end = spec.date_range.resolve(spec.time_zone)
    first = bucket_start(_local(start, tz), spec.interval)
    # An hour early: where the clocks skip part of an hour, its naive start reads late.
    previous = _previous(first, spec.interval, tz).replace(tzinfo=tz).astimezone(start.tzinfo) - timedelta(hours=1)
    events = "" if spec.event is None else f" AND event = {dialect.quote(spec.event)}"
    where = events_where(dialect, project_id, since=previous, filters=spec.filters)
    project = dialect.quote(project_id)
    in_range = buckets(spec)
    before = _previous(datetime.strptime(in_range[0], "%Y-%m-%d %H:%M"), spec.interval, tz)
    labels = [before.strftime("%Y-%m-%d %H:%M"), *in_range]
    if dialect.name == "clickhouse":
        earliest = local("min(timestamp)") if fixed is not None else f"min({local('timestamp', 'clock')})"
        return _clickhouse_lifecycle(
            dialect, project, f"{where}{events}\n    AND timestamp < {dialect.timestamp(end)}", labels,
            start=start_of(local("timestamp")), first=start_of(earliest), label=label,
        )
    rows = ", ".join(f"({position}, {dialect.quote(text)})" for position, text in enumerate(labels))
    count_if = partial(dialect.render, "count_if")
    return (
        f"WITH active AS (\n"
        f"  SELECT person_id, {label('start')} AS bucket FROM (\n"
        f"    SELECT DISTINCT person_id, {start_of(local('timestamp'))} AS start FROM events\n"
        f"    WHERE {where}{events}\n    AND timestamp < {dialect.timestamp(end)}) AS starts\n"
        f"), firsts AS (\n"
        f"  SELECT person_id, {label(start_of('earliest'))} AS first_bucket FROM (\n"
        f"    {first_local_times(project)}) AS every\n"
        f"), positioned AS (\n"
        f"  SELECT a.person_id AS person_id, labels.position AS position,"
        f" CASE WHEN a.bucket = f.first_bucket THEN 1 ELSE 0 END AS is_new\n"
        f"  FROM active AS a JOIN {templates['labels'].format(rows=rows)} ON a.bucket = labels.bucket\n"
        f"  JOIN firsts AS f ON a.person_id = f.person_id\n"
        f"), states AS (\n"
        f"  SELECT person_id, position, max(here) AS here, max(before) AS before, max(is_new) AS is_new FROM (\n"
        f"    SELECT p.person_id AS person_id, p.position + m.later AS position, 1 - m.later AS here, m.later AS before,\n"
        f"      p.is_new * (1 - m.later) AS is_new\n"
        f"    FROM positioned AS p CROSS JOIN (SELECT 0 AS later UNION ALL SELECT 1 AS later) AS m) AS marks\n"
        f"  GROUP BY person_id, position\n"
        f")\n"
        f"SELECT position, {count_if(condition='here = 1 AND is_new = 1')} AS new,\n"
        f"  {count_if(condition='here = 1 AND is_new = 0 AND before = 1')} AS returning,\n"
        f"  {count_if(condition='here = 1 AND is_new = 0 AND before = 0')} AS resurrecting,\n"
        f"  {count_if(condition='here = 0 AND before = 1')} AS dormant\n"
        f"FROM states WHERE position BETWEEN 1 AND {len(labels) - 1}\nGROUP BY position"
    )


def _clickhouse_lifecycle(
    dialect: Dialect, project: str, active: str, labels: Sequence[str], *, start: str, first: str, label: Callable[[str], str]
) -> str:
    """Lifecycle on ClickHouse, from one scan grouped by person (in storage
    order): the starts of the buckets they were ``active`` in (a WHERE
    condition), and the start of their first bucket ever; then their
    positions among ``labels`` (0 the bucket before the range, -1 none).
    Each position they were active in, and each one after it, is marked (as
    on DuckDB), and each position counts its four kinds of persons. Two
    scans joined, as on DuckDB, took twice the time on chdb.

    In a zone whose offset changes, ``first`` converts every event's time:
    one scan cannot limit that to the events near each person's earliest."""
    listed = f"[{', '.join(dialect.quote(text) for text in labels)}]"

    def position(start: str) -> str:
        return f"transform({label(start)}, {listed}, range({len(labels)}), -1)"

    return (
        f"WITH per_person AS (\n"
        f"  SELECT {first} AS first_start, groupUniqArrayIf({start}, {active}) AS starts\n"
        f"  FROM events WHERE project_id = {project} GROUP BY person_id\n"
        f"), placed AS (\n"
        f"  SELECT arrayMap(s -> {position('s')}, starts) AS positions, {position('first_start')} AS first_position\n"
        f"  FROM per_person WHERE notEmpty(starts)\n"
        f"), marked AS (\n"
        f"  SELECT position, position = first_position AS is_new, has(positions, position) AS here,"
        f" has(positions, position - 1) AS before\n"
        f"  FROM placed ARRAY JOIN arrayFilter(p -> p BETWEEN 1 AND {len(labels) - 1},"
        f" arrayDistinct(arrayConcat(positions, arrayMap(p -> p + 1, positions)))) AS position\n"
        f")\n"
        f"SELECT position, countIf(here AND is_new) AS new, countIf(here AND NOT is_new AND before) AS returning,\n"
        f"  countIf(here AND NOT is_new AND NOT before) AS resurrecting, countIf(NOT here AND before) AS dormant\n"
        f"FROM marked GROUP BY position\nSETTINGS optimize_aggregation_in_order = 1"
    )


@cache
def _offset_spread(time_zone: str) -> timedelta:
    """How far apart the zone's UTC offsets lie (from two samples a month,
    1900 to 2100): an event at least this much later than another reads a
    local time no earlier than the other's."""
    tz = ZoneInfo(time_zone)
    offsets = {
        datetime(year, month, day, tzinfo=UTC).astimezone(tz).utcoffset()
        for year in range(1900, 2101) for month in range(1, 13) for day in (1, 16)
    }
    known = [offset for offset in offsets if offset is not None]
    return max(known) - min(known)


def _previous(start: datetime, interval: Interval, tz: ZoneInfo) -> datetime:
    if interval == "hour":
        previous = start - timedelta(hours=1)
        while not _lived(previous, tz):
            previous -= timedelta(hours=1)
        return previous
    if interval == "day":
        return start - timedelta(days=1)
    if interval == "week":
        return start - timedelta(days=7)
    return (start - timedelta(days=1)).replace(day=1)


# -- running -------------------------------------------------------------------


def _series(spec: TrendSpec, rows: Iterable[tuple[str, str | None, float | None]]) -> tuple[TrendSeries, ...]:
    labels = buckets(spec)
    values: dict[str | None, dict[str, float]] = defaultdict(dict)
    for bucket, group, value in rows:
        number = float(value or 0)  # ClickHouse's avg of no rows is nan
        values[group if spec.breakdown is not None else None][str(bucket)] = 0.0 if math.isnan(number) else number
    if not values:
        values[None] = {}
    series = [TrendSeries(group, tuple(TrendPoint(label, by_bucket.get(label, 0.0)) for label in labels))
              for group, by_bucket in values.items()]
    series.sort(key=lambda entry: (-entry.total, entry.breakdown is None, entry.breakdown or ""))
    return tuple(series)


def _rolling(spec: TrendSpec, rows: Iterable[tuple[str, int]]) -> tuple[TrendSeries, ...]:
    days_of: dict[int, set[str]] = defaultdict(set)
    for person, day in rows:
        days_of[int(day)].add(str(person))
    width = _ROLLING[spec.measure]
    points = []
    epoch = date(1970, 1, 1)
    for label in buckets(spec):
        start = datetime.strptime(label, "%Y-%m-%d %H:%M")
        last_day = (_next(start, spec.interval) - timedelta(days=1)).date()
        end_number = (last_day - epoch).days
        active: set[str] = set()
        for number in range(end_number - width + 1, end_number + 1):
            active |= days_of.get(number, set())
        points.append(TrendPoint(label, float(len(active))))
    return (TrendSeries(None, tuple(points)),)


def check(database: Database, spec: TrendSpec) -> None:
    """A SpecError for an event or property no stored event has (a likely typo)."""
    properties = [("property", spec.property)] if spec.property else []
    if spec.breakdown and spec.breakdown.startswith("properties."):
        properties.append(("breakdown", spec.breakdown))
    check_names(database, events=[("event", spec.event)] if spec.event else [],
                filters=[(f"filters[{i}]", f) for i, f in enumerate(spec.filters)], properties=properties)


def run(database: Database, spec: TrendSpec) -> TrendResult:
    check(database, spec)
    rows = database.query(compile(spec, database.backend.dialect, project_id=database.project_id)).rows
    if spec.measure in _ROLLING:
        return TrendResult(spec, _rolling(spec, rows))
    return TrendResult(spec, _series(spec, rows))


def stickiness(database: Database, spec: TrendSpec) -> dict[int, int]:
    """Persons by the number of distinct local days of the range they did the event on."""
    check(database, spec)
    rows = database.query(compile_activity(spec, database.backend.dialect, project_id=database.project_id)).rows
    counts: dict[int, int] = defaultdict(int)
    for _, days in rows:
        counts[int(days)] += 1
    return dict(sorted(counts.items()))


@dataclass(frozen=True)
class LifecyclePoint:
    bucket: str
    new: int
    returning: int
    resurrecting: int
    dormant: int  # negative: persons who were active the bucket before and are not now


def lifecycle(database: Database, spec: TrendSpec) -> tuple[LifecyclePoint, ...]:
    check(database, spec)
    rows = database.query(compile_lifecycle(spec, database.backend.dialect, project_id=database.project_id)).rows
    counted = {int(position): [int(count) for count in counts] for position, *counts in rows}
    points = []
    for position, label in enumerate(buckets(spec), start=1):
        new, returning, resurrecting, dormant = counted.get(position, (0, 0, 0, 0))
        points.append(LifecyclePoint(label, new, returning, resurrecting, -dormant))
    return tuple(points)


def per_person_quantile(counts: list[int], q: float) -> float:
    """The interpolated quantile the engines compute (for the reference)."""
    ordered = sorted(counts)
    if q == 0.5:
        return float(statistics.median(ordered))
    position = q * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)
