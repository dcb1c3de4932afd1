"""Trends, KPIs and engagement scores in plain Python, to check the SQL against.

Written from the module docs of ``footfall.analytics.trends``, ``.kpis`` and
``.engagement`` (not from their SQL): one stored event at a time, local times
from ``zoneinfo``, no SQL machinery. The tests run both over the same stored
events, on both engines, and compare.

The rows are events as stored, after identity resolution and sessions: each
has its person (merged persons already moved to the surviving id), session,
name, time, properties and other columns. ``traits`` are the persons' stored
traits, for person filters (a person without a row matches none).

>>> from datetime import UTC, datetime
>>> from footfall.analytics.common import DateRange
>>> from footfall.analytics.trends import TrendSpec
>>> rows = [EventRow("p", "s", "view", datetime(2024, 3, 30, 23, 30, tzinfo=UTC)),
...         EventRow("q", "t", "view", datetime(2024, 3, 31, 1, 30, tzinfo=UTC))]
>>> spec = TrendSpec(DateRange.parse("2024-03-31", "2024-04-01"), interval="hour", time_zone="Europe/Berlin")
>>> [(point.bucket[11:], point.value) for point in trend(spec, rows)[0].points][:3]  # no 02:00 that night
[('00:00', 1.0), ('01:00', 0.0), ('03:00', 1.0)]
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from footfall.analytics.common import DateRange
from footfall.analytics.conditions import COLUMNS, MISSING, Filter, lookup, parse_field
from footfall.analytics.engagement import Band, EngagementResult, EngagementSpec, PersonEngagement
from footfall.analytics.kpis import PAGE_VIEW, CohortValue, KpiResult, KpiSpec
from footfall.analytics.trends import Interval, LifecyclePoint, TrendPoint, TrendSeries, TrendSpec
from footfall.events.record import SYSTEM_EVENTS

if TYPE_CHECKING:
    from footfall.store.database import Database

Traits = Mapping[str, Mapping[str, Any]]

# Every offset of the zones in use is a whole number of quarter hours, so a
# local hour (hence day, week, month) can only begin at a quarter hour of UTC.
QUARTER_HOUR = timedelta(minutes=15)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ROLLING_DAYS = {"dau": 1, "wau": 7, "mau": 30}
_QUANTILES = {"per_person_median": 0.5, "per_person_p90": 0.9}


@dataclass(frozen=True)
class EventRow:
    """One stored event, as the references see it."""

    person_id: str
    session_id: str
    event: str
    timestamp: datetime  # aware
    properties: Mapping[str, Any] = field(default_factory=dict)
    columns: Mapping[str, Any] = field(default_factory=dict)  # event columns by name (path, country, ...)


def stored(database: Database) -> tuple[list[EventRow], dict[str, dict[str, Any]]]:
    """The project's stored events as rows, and its persons' traits."""
    columns = ", ".join(COLUMNS)
    project = database.backend.quote(database.project_id)
    table = database.query_arrow(
        f"SELECT person_id, session_id, timestamp, properties, {columns} FROM events WHERE project_id = {project}"
    )
    rows = [
        EventRow(row["person_id"], row["session_id"], row["event"], row["timestamp"].astimezone(UTC),
                 json.loads(row["properties"]), {name: row[name] for name in COLUMNS})
        for row in table.to_pylist()
    ]
    traits = {row["person_id"]: json.loads(row["traits"]) for row in database.persons_arrow().to_pylist()}
    return rows, traits


# -- shared pieces --------------------------------------------------------------------


def kept(filters: Sequence[Filter], row: EventRow, traits: Traits) -> bool:
    """Whether an event passes a spec's filters (person filters read the person's traits)."""
    person = traits.get(row.person_id)
    for condition in filters:
        if condition.is_person_filter and person is None:
            return False
        if not condition.matches(row.properties, {**row.columns, "event": row.event}, person or {}):
            return False
    return True


def json_number(value: object) -> float | None:
    """A JSON number as a float; None for anything else (strings, booleans, null, missing)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def breakdown_value(field_name: str, row: EventRow) -> str | None:
    """An event's breakdown value: strings as they are, other values as JSON text, None when missing."""
    target = parse_field(field_name, "breakdown")
    if target.kind == "column":
        value = row.event if target.column == "event" else row.columns.get(target.column)
        return None if value is None else str(value)
    found = lookup(row.properties, target.path)
    if found is MISSING:
        return None
    return found if isinstance(found, str) else json.dumps(found, separators=(",", ":"))


def interpolated(values: Sequence[float], q: float) -> float:
    """The q-quantile of values, linearly interpolated between the closest ranks.

    >>> interpolated([4, 1, 3, 2], 0.5), interpolated([1, 2, 10], 0.9)
    (2.5, 8.4)
    """
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    if below == len(ordered) - 1:
        return float(ordered[below])
    return ordered[below] + (ordered[below + 1] - ordered[below]) * (position - below)


# -- trends ---------------------------------------------------------------------------


def bucket_label(moment: datetime, interval: Interval, time_zone: str) -> str:
    """The local start of the bucket holding an instant: 'YYYY-MM-DD HH:MM'."""
    local = moment.astimezone(ZoneInfo(time_zone))
    if interval == "hour":
        return local.strftime("%Y-%m-%d %H:00")
    day = local.date()
    if interval == "week":
        day -= timedelta(days=day.weekday())
    elif interval == "month":
        day = day.replace(day=1)
    return f"{day:%Y-%m-%d} 00:00"


def _moments(start: datetime, end: datetime) -> Iterator[datetime]:
    """``start``, then every quarter hour after it and before ``end``: the local
    clock can turn to a new hour only at one of them."""
    yield start
    after = _EPOCH + ((start - _EPOCH) // QUARTER_HOUR + 1) * QUARTER_HOUR
    while after < end:
        yield after
        after += QUARTER_HOUR


def bucket_labels(date_range: DateRange, interval: Interval, time_zone: str) -> list[str]:
    """Every bucket some instant of the range falls in, in time order: a local
    hour skipped by summer time is no bucket, one lived twice is one."""
    start, end = date_range.resolve(time_zone)
    return sorted({bucket_label(moment, interval, time_zone) for moment in _moments(start, end)})


# Far enough back to hold the whole bucket before the one a range starts in.
_LOOKBACK = {"hour": timedelta(hours=3), "day": timedelta(days=3), "week": timedelta(days=15), "month": timedelta(days=63)}


def _bucket_before(date_range: DateRange, interval: Interval, time_zone: str) -> str:
    """The bucket the clocks showed last before the one the range starts in."""
    start, _ = date_range.resolve(time_zone)
    first = bucket_label(start, interval, time_zone)
    return max(label for moment in _moments(start - _LOOKBACK[interval], start)
               if (label := bucket_label(moment, interval, time_zone)) < first)


def _events(spec: TrendSpec, rows: Iterable[EventRow], traits: Traits) -> list[EventRow]:
    """The spec's events (or all) in the range that pass its filters."""
    start, end = spec.date_range.resolve(spec.time_zone)
    return [
        row for row in rows
        if start <= row.timestamp < end and (spec.event is None or row.event == spec.event) and kept(spec.filters, row, traits)
    ]


def _measure(spec: TrendSpec, rows: list[EventRow]) -> float:
    """The spec's measure over the events of one bucket (and breakdown value)."""
    if spec.measure == "count":
        return float(len(rows))
    if spec.measure == "persons":
        return float(len({row.person_id for row in rows}))
    if spec.measure in ("sum", "avg"):
        assert spec.property is not None
        path = tuple(spec.property.split(".")[1:])
        numbers = [n for row in rows if (n := json_number(lookup(row.properties, path))) is not None]
        if spec.measure == "sum":
            return math.fsum(numbers)
        return math.fsum(numbers) / len(numbers) if numbers else 0.0
    per_person: dict[str, int] = defaultdict(int)
    for row in rows:
        per_person[row.person_id] += 1
    if not per_person:
        return 0.0
    counts = list(per_person.values())
    if spec.measure == "per_person_avg":
        return sum(counts) / len(counts)
    return interpolated(counts, _QUANTILES[spec.measure])


def _last_day(label: str, interval: Interval) -> date:
    first = date.fromisoformat(label[:10])
    if interval == "day":
        return first
    if interval == "week":
        return first + timedelta(days=6)
    following = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return following - timedelta(days=1)


def trend(spec: TrendSpec, rows: Iterable[EventRow], traits: Traits | None = None) -> tuple[TrendSeries, ...]:
    """The series of a trend: one, or one per breakdown value, largest total
    first (equal totals: by value, None last). Without any event to break
    down, one series (None) of zeros."""
    events = _events(spec, rows, traits or {})
    labels = bucket_labels(spec.date_range, spec.interval, spec.time_zone)
    if spec.measure in _ROLLING_DAYS:
        width = _ROLLING_DAYS[spec.measure]
        tz = ZoneInfo(spec.time_zone)
        points = []
        for label in labels:
            last = _last_day(label, spec.interval)
            first = last - timedelta(days=width - 1)
            active = {row.person_id for row in events if first <= row.timestamp.astimezone(tz).date() <= last}
            points.append(TrendPoint(label, float(len(active))))
        return (TrendSeries(None, tuple(points)),)
    groups: dict[str | None, dict[str, list[EventRow]]] = defaultdict(lambda: defaultdict(list))
    for row in events:
        group = None if spec.breakdown is None else breakdown_value(spec.breakdown, row)
        groups[group][bucket_label(row.timestamp, spec.interval, spec.time_zone)].append(row)
    if not groups:
        groups[None] = defaultdict(list)
    series = [
        TrendSeries(group, tuple(TrendPoint(label, _measure(spec, by_bucket.get(label, []))) for label in labels))
        for group, by_bucket in groups.items()
    ]
    return tuple(sorted(series, key=lambda entry: (-entry.total, entry.breakdown is None, entry.breakdown or "")))


def stickiness(spec: TrendSpec, rows: Iterable[EventRow], traits: Traits | None = None) -> dict[int, int]:
    """How many persons did the event on exactly N distinct local days of the range, for each N."""
    tz = ZoneInfo(spec.time_zone)
    days: dict[str, set[date]] = defaultdict(set)
    for row in _events(spec, rows, traits or {}):
        days[row.person_id].add(row.timestamp.astimezone(tz).date())
    persons: dict[int, int] = defaultdict(int)
    for active_days in days.values():
        persons[len(active_days)] += 1
    return dict(sorted(persons.items()))


def lifecycle(spec: TrendSpec, rows: Iterable[EventRow], traits: Traits | None = None) -> tuple[LifecyclePoint, ...]:
    """New, returning, resurrecting and dormant persons per bucket.

    The module docs leave open what counts as activity at the range's edges;
    this reads whole buckets, the bucket before the range's first one included
    (for the first one's ``returning`` and ``dormant``), up to the range's end
    (the last one may be cut short, as for every measure). So the first bucket
    counts from its own beginning, which may lie before the range's start. A
    bucket is its local label: an hour the clocks showed twice is one bucket,
    and one they skipped is none. A person is new in the first bucket (in the
    order they are listed) that holds any event of theirs; that is the bucket
    of their first event, but where the clocks went back an hour ago an event
    may fall in an hour listed before the one of an earlier event. A new
    person is an active one (new, returning and resurrecting together are the
    bucket's active persons).
    """
    rows = list(rows)
    _, end = spec.date_range.resolve(spec.time_zone)
    labels = bucket_labels(spec.date_range, spec.interval, spec.time_zone)
    previous = _bucket_before(spec.date_range, spec.interval, spec.time_zone)
    active: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row.timestamp < end and (spec.event is None or row.event == spec.event) and kept(spec.filters, row, traits or {}):
            active[bucket_label(row.timestamp, spec.interval, spec.time_zone)].add(row.person_id)
    first_bucket: dict[str, str] = {}
    for row in rows:  # any event at all, filtered or not
        label = bucket_label(row.timestamp, spec.interval, spec.time_zone)
        first_bucket[row.person_id] = min(first_bucket.get(row.person_id, label), label)
    before = active[previous]
    points = []
    for label in labels:
        now = active[label]
        new = {person for person in now if first_bucket[person] == label}
        returning = now & before
        resurrecting = now - before - new
        points.append(LifecyclePoint(label, len(new), len(returning), len(resurrecting), -len(before - now)))
        before = now
    return tuple(points)


# -- sessions and KPIs -------------------------------------------------------------------


def kpis(spec: KpiSpec, rows: Iterable[EventRow], traits: Traits | None = None) -> KpiResult:
    """Sessions, rates and CLV by cohort, as the kpis module docs define them
    (CLV values unrounded)."""
    rows = list(rows)
    start, end = spec.date_range.resolve(spec.time_zone)
    # Membership changes are not something the person did: they open no
    # session and make no one active (they still count towards CLV's first seen).
    events = [
        row for row in rows
        if start <= row.timestamp < end and row.event not in SYSTEM_EVENTS and kept(spec.filters, row, traits or {})
    ]

    sessions: dict[str, list[EventRow]] = defaultdict(list)
    for row in events:
        sessions[row.session_id].append(row)
    durations = [max(r.timestamp for r in s) - min(r.timestamp for r in s) for s in sessions.values()]
    engaged = sum(
        1 for session, duration in zip(sessions.values(), durations, strict=True)
        if duration >= spec.engaged_after
        or sum(row.event == PAGE_VIEW for row in session) >= 2
        or any(row.event == spec.conversion_event for row in session)
    )
    page_views = sum(row.event == PAGE_VIEW for row in events)

    active = {row.person_id for row in events}

    def share(event: str) -> float:
        return len({row.person_id for row in events if row.event == event}) / len(active) if active else 0.0

    first_seen: dict[str, datetime] = {}
    revenue: dict[str, float] = defaultdict(float)
    for row in rows:
        if row.timestamp >= end:
            continue
        first_seen[row.person_id] = min(first_seen.get(row.person_id, row.timestamp), row.timestamp)
        revenue[row.person_id] += json_number(row.properties.get(spec.revenue_property)) or 0.0
    cohorts: dict[str, list[str]] = defaultdict(list)
    tz = ZoneInfo(spec.time_zone)
    for person, first in first_seen.items():
        cohorts[first.astimezone(tz).strftime("%Y-%m")].append(person)
    clv = []
    for cohort, persons in sorted(cohorts.items()):
        total = math.fsum(revenue[person] for person in persons)
        clv.append(CohortValue(cohort, len(persons), total, total / len(persons)))

    count = len(sessions)
    return KpiResult(
        spec=spec,
        active_persons=len(active),
        sessions=count,
        average_session_duration=sum(durations, timedelta()) / count if count else None,
        engagement_rate=engaged / count if count else 0.0,
        bounce_rate=(count - engaged) / count if count else 0.0,
        pages_per_session=page_views / count if count else 0.0,
        conversion_rate=share(spec.conversion_event) if spec.conversion_event else None,
        adoption={feature: share(feature) for feature in spec.features},
        clv=tuple(clv),
    )


# -- engagement score ------------------------------------------------------------------------

HOUR = timedelta(hours=1)


def _hour_of(moment: datetime) -> datetime:
    return _EPOCH + (moment - _EPOCH) // HOUR * HOUR


def engagement_scores(
    spec: EngagementSpec, as_of: datetime, rows: Iterable[EventRow], traits: Traits | None = None
) -> dict[str, tuple[float, int]]:
    """Each person with an event in the window: (score, events in the window).

    The window runs from the start of ``as_of``'s hour minus ``window`` on (and
    takes events timed after ``as_of``, as live profiles do); an event's age is
    the whole hours from its hour to ``as_of``'s, at least 0. ``spec`` must
    name its settings (no ``"project"``)."""
    window, weights, passive_weight, half_life = spec.window, spec.weights, spec.passive_weight, spec.half_life
    assert isinstance(window, timedelta), "give the window"
    assert isinstance(weights, Mapping), "give the weights"
    assert isinstance(passive_weight, int | float), "give the passive weight"
    assert half_life is None or isinstance(half_life, timedelta), "give the half-life, or None"
    now_hour = _hour_of(as_of)
    since = now_hour - window
    scores: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row.timestamp < since or not kept(spec.filters, row, traits or {}):
            continue
        weight = weights.get(row.event, 0.0) * (passive_weight if row.properties.get("signal") == "passive" else 1.0)
        if half_life is not None:
            age = max(timedelta(0), now_hour - _hour_of(row.timestamp))
            weight *= 0.5 ** (age / half_life)
        scores[row.person_id].append(weight)
    return {person: (math.fsum(counted), len(counted)) for person, counted in scores.items()}


def band(score: float, low_cut: float, high_cut: float) -> Band:
    """``high`` at or above the upper cut, ``low`` at or below the lower one, else ``medium``."""
    if score >= high_cut:
        return "high"
    return "low" if score <= low_cut else "medium"


def engagement(
    spec: EngagementSpec, as_of: datetime, rows: Iterable[EventRow], traits: Traits | None = None
) -> EngagementResult:
    """Scores, cuts and bands. For the bands, scores equal to 9 decimals are
    equal (the same weights summed in another order may differ in the last
    bits); the top persons go by score, then person id."""
    scored = engagement_scores(spec, as_of, rows, traits)
    if not scored:
        return EngagementResult(spec, as_of, 0, 0.0, 0.0, {"high": 0, "medium": 0, "low": 0})
    rounded = {person: round(score, 9) for person, (score, _) in scored.items()}
    low_cut, high_cut = (interpolated(list(rounded.values()), q) for q in spec.bands)
    bands: dict[Band, int] = {"high": 0, "medium": 0, "low": 0}
    for score in rounded.values():
        bands[band(score, low_cut, high_cut)] += 1
    ranked = sorted(scored, key=lambda person: (-scored[person][0], person))
    top = tuple(PersonEngagement(person, scored[person][0], band(rounded[person], low_cut, high_cut), scored[person][1])
                for person in ranked[: spec.limit])
    return EngagementResult(
        spec, as_of, len(scored), low_cut, high_cut, bands,
        mean=statistics.fmean(rounded.values()), median=statistics.median(rounded.values()), top=top,
    )
