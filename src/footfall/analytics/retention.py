"""Retention and cohorts: of the persons who started in a period, how many came back.

A ``RetentionSpec`` says what puts a person in a cohort (the start event, or
any event: first seen), what counts as coming back (the return event), the
period (day, week or month in the spec's time zone; weeks start on Monday),
the mode and the counting; ``compile(spec, dialect)`` writes the SQL (no
database needed); ``run(database, spec)`` executes it and returns a
``RetentionResult``: a cohort x period table of sizes, counts and rates, ready
for a heatmap (``format_table`` prints it). docs/retention.md has the exact
semantics; in short:

- **first_time**: a person's cohort is the period of their first start event
  ever (the whole history is searched); they are in the table when that event
  falls in the date range. **recurring**: a person is in the cohort of every
  period in the range in which they did the start event.
- The event that put the person in the cohort is its *anchor* (the first
  start event of the period, ties by event id). Period N of a cohort is the
  N-th period after the cohort's; a person *returned* in period N when they
  did the return event in it; in period 0, only at or after the anchor (the
  anchor itself counts when it also matches the return event, so period 0 is
  100% when the return event is the start event).
- **on** counts returns in exactly period N; **on_or_after** counts persons
  who returned in period N or any later one (cumulative).
- The date range bounds both: cohorts enter in it, returns count until its
  end. Observation ends at the range's end or just after the project's latest
  event, whichever is earlier; a period that begins after that is not
  observed (no rate), one that has begun but not ended is ``complete=False``.
- ``breakdown`` (a person trait, or an event column or property of the anchor
  event, e.g. ``utm_source`` of the first event: the acquisition channel)
  makes the rows groups instead of periods, each person measured from their
  own cohort period.

>>> from footfall.events import parse_message
>>> from footfall.pipeline import Pipeline
>>> from footfall.store.database import Database
>>> from footfall.store.duckdb_backend import DuckDBBackend
>>> database = Database(DuckDBBackend(":memory:")); _ = database.migrate()
>>> def track(user, event, day):
...     return parse_message({"type": "track", "userId": user, "event": event,
...                           "timestamp": f"2024-03-{day:02d}T12:00:00Z"})
>>> _ = Pipeline(database).ingest_events([
...     track("ann", "signup", 4), track("ann", "buy", 12), track("ann", "buy", 20),
...     track("bob", "signup", 5), track("bob", "buy", 5),
...     track("cyd", "signup", 13), track("cyd", "buy", 21),
... ])
>>> spec = RetentionSpec(start_event=RetentionEvent("signup"), return_event=RetentionEvent("buy"),
...                      period="week", periods=2)
>>> print(format_table(run(database, spec)))
cohort      size  week 0  week 1  week 2
2024-03-04     2     50%     50%     50%*
2024-03-11     1      0%    100%*
overall        3     33%     67%*    50%*
* the period is not over yet: its count can still grow
>>> RetentionSpec(period="fortnight")
Traceback (most recent call last):
...
footfall.analytics.errors.SpecError: period: use one of day, week, month; got 'fortnight'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal, get_args

from footfall.analytics.common import (
    DateRange,
    as_tuple,
    check_event_filters,
    check_names,
    check_range,
    epoch_ms,
    events_where,
    zone,
)
from footfall.analytics.conditions import FieldRef, Filter, Operand, parse_field
from footfall.analytics.dialects import Dialect, dialect_named
from footfall.analytics.errors import SpecError
from footfall.store.database import Database
from footfall.store.dialects import final_table

Period = Literal["day", "week", "month"]
RetentionMode = Literal["first_time", "recurring"]
Counting = Literal["on", "on_or_after"]
Shown = Literal["rate", "count"]

DEFAULT_PERIODS = 8
# Enough for a year of days; the cumulative count writes a row per period
# reached, so the bound also bounds the work.
MAX_PERIODS = 400

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DAY = date(1970, 1, 1)


# -- periods --------------------------------------------------------------------
#
# A period is numbered by an integer index, the same in SQL and in Python, so
# "period N after the cohort's" is a subtraction and never depends on how
# long a month or a day (23 or 25 hours around a clock change) is.

_DAY_NUMBER = "date_diff('day', DATE '1970-01-01', {day})"

# The index of the period holding a local date, in SQL both engines accept.
# 1970-01-01 was a Thursday: weeks are counted from Monday 1969-12-29.
PERIOD_INDEX_SQL: dict[Period, str] = {
    "day": _DAY_NUMBER,
    "week": f"CAST(floor(({_DAY_NUMBER} + 3) / 7) AS BIGINT)",
    "month": "CAST(year({day}) * 12 + month({day}) - 1 AS BIGINT)",
}

# What the two engines write differently here (candidates for the shared
# dialect tables).
_TEMPLATES: dict[str, dict[str, str]] = {
    "duckdb": {
        # Period offsets 0..count-1 as a one-column table ``n`` (cumulative counts).
        "offsets": "SELECT range AS n FROM range(0, {count})",
        "arg_min": "arg_min({x}, {key})",
        # x at the row of the smallest key, NULL included (arg_min skips NULL x).
        "first_by": "arg_min_null({x}, {key})",
        "first_by_if": "arg_min_null({x}, {key}) FILTER (WHERE {condition})",
        # The UTC date of a timestamp by arithmetic on epoch milliseconds
        # (fdiv rounds down, before 1970 too): the time-zone function goes
        # through ICU for every row, at about five times the cost.
        "utc_date": "(DATE '1970-01-01' + CAST(fdiv(epoch_ms({x}), 86400000) AS INTEGER))",
    },
    "clickhouse": {
        "offsets": "SELECT CAST(number AS BIGINT) AS n FROM numbers({count})",
        "arg_min": "argMin({x}, {key})",
        "first_by": "argMin(tuple({x}), {key}).1",
        "first_by_if": "argMinIf(tuple({x}), {key}, {condition}).1",
        # ClickHouse's own conversion is a table lookup already.
        "utc_date": "toDate({x}, 'UTC')",
    },
}

# Names of the zone that is UTC all year (tzdata's links to Etc/UTC).
_UTC_NAMES = frozenset(
    {"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Etc/Zulu", "Zulu",
     "Etc/GMT", "GMT", "Etc/Greenwich", "Greenwich", "Etc/GMT0", "GMT0", "Etc/GMT+0", "GMT+0", "Etc/GMT-0", "GMT-0"}
)


def local_date_sql(dialect: Dialect, time_zone: str, x: str = "timestamp") -> str:
    """The local date of a timestamp column in a time zone, as SQL."""
    if time_zone in _UTC_NAMES:
        return _render("utc_date", dialect, x=x)
    return dialect.render("local_date", zone=dialect.quote(time_zone), x=x)


def _render(template: str, dialect: Dialect, **parts: str) -> str:
    return _TEMPLATES[dialect.name][template].format(**parts)


def period_index(day: date, period: Period) -> int:
    """The number of the period holding a (local) date; weeks start on Monday.

    >>> period_index(date(1970, 1, 2), "day"), period_index(date(2024, 3, 4), "week") - period_index(date(2024, 3, 3), "week")
    (1, 1)
    >>> period_index(date(1998, 6, 30), "month") - period_index(date(1997, 1, 1), "month")
    17
    """
    if period == "day":
        return (day - _EPOCH_DAY).days
    if period == "week":
        return ((day - _EPOCH_DAY).days + 3) // 7
    return day.year * 12 + day.month - 1


def period_start(index: int, period: Period) -> date:
    """The first day of a period (a Monday for weeks).

    >>> period_start(period_index(date(2024, 3, 7), "week"), "week")
    datetime.date(2024, 3, 4)
    >>> period_start(period_index(date(2024, 2, 29), "month"), "month")
    datetime.date(2024, 2, 1)
    """
    if period == "day":
        return _EPOCH_DAY + timedelta(days=index)
    if period == "week":
        return _EPOCH_DAY + timedelta(days=7 * index - 3)
    return date(index // 12, index % 12 + 1, 1)


def local_period(timestamp_ms: int, period: Period, time_zone: str) -> int:
    """The index of the period an instant falls in, in a time zone.

    >>> at = epoch_ms(datetime(2024, 3, 31, 23, 30, tzinfo=UTC))
    >>> period_start(local_period(at, "month", "UTC"), "month"), period_start(local_period(at, "month", "Europe/Berlin"), "month")
    (datetime.date(2024, 3, 1), datetime.date(2024, 4, 1))
    """
    local = (_EPOCH + timedelta(milliseconds=timestamp_ms)).astimezone(zone(time_zone))
    return period_index(local.date(), period)


def _period_begins(index: int, period: Period, time_zone: str) -> datetime:
    """The UTC instant a period begins: local midnight of its first day."""
    return datetime.combine(period_start(index, period), time(0), tzinfo=zone(time_zone)).astimezone(UTC)


# -- the spec -------------------------------------------------------------------


@dataclass(frozen=True)
class RetentionEvent:
    """The events that start a cohort or count as a return: an event name
    (None: any event) narrowed by event filters (properties and columns)."""

    event: str | None = None
    filters: tuple[Filter, ...] = ()

    def __post_init__(self) -> None:
        if self.event is not None and (not isinstance(self.event, str) or not self.event):
            raise SpecError("RetentionEvent.event", "give an event name, or None for any event")
        object.__setattr__(self, "filters", as_tuple(self.filters, "RetentionEvent.filters", Filter))
        check_event_filters(self.filters, "RetentionEvent.filters")

    def matches(self, event: str, properties: dict[str, object], columns: dict[str, object]) -> bool:
        return (self.event is None or event == self.event) and all(
            f.matches(properties, columns, {}) for f in self.filters
        )

    def sql(self, dialect: Dialect) -> str:
        parts = [] if self.event is None else [f"event = {dialect.quote(self.event)}"]
        parts.extend(f.sql(dialect) for f in self.filters)
        return "(" + " AND ".join(parts) + ")" if parts else "true"


ANY_EVENT = RetentionEvent()


@dataclass(frozen=True)
class RetentionSpec:
    """A retention table. ``filters`` narrow every event considered (start and
    return alike) and the persons (``traits.<key>``); the events' own filters
    narrow what starts a cohort and what counts as a return.

    ``periods`` is how many periods after the start period to report: the
    table has columns 0..periods. ``return_event`` None means the same as
    ``start_event``; ``start_event`` ANY_EVENT (the default) cohorts persons
    by when they were first seen.
    """

    start_event: RetentionEvent = ANY_EVENT
    return_event: RetentionEvent | None = None
    period: Period = "week"
    periods: int = DEFAULT_PERIODS
    mode: RetentionMode = "first_time"
    counting: Counting = "on"
    date_range: DateRange | None = None
    time_zone: str = "UTC"
    filters: tuple[Filter, ...] = ()
    breakdown: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.start_event, RetentionEvent):
            raise SpecError("start_event", f"give a RetentionEvent (ANY_EVENT for first seen); got {self.start_event!r}")
        if self.return_event is not None and not isinstance(self.return_event, RetentionEvent):
            raise SpecError("return_event", f"give a RetentionEvent, or None for the start event; got {self.return_event!r}")
        if self.period not in get_args(Period):
            raise SpecError("period", f"use one of {', '.join(get_args(Period))}; got {self.period!r}")
        periods = self.periods
        if not isinstance(periods, int) or isinstance(periods, bool) or not 1 <= periods <= MAX_PERIODS:
            raise SpecError("periods", f"give how many periods after the start period to show, 1 to {MAX_PERIODS}; got {periods!r}")
        if self.mode not in get_args(RetentionMode):
            raise SpecError("mode", f"use 'first_time' or 'recurring'; got {self.mode!r}")
        if self.counting not in get_args(Counting):
            raise SpecError("counting", f"use 'on' (exactly period N) or 'on_or_after' (period N or later); got {self.counting!r}")
        zone(self.time_zone)
        check_range(self.date_range, self.time_zone)
        object.__setattr__(self, "filters", as_tuple(self.filters, "filters", Filter))
        check_grouping(self.breakdown)

    @property
    def returning(self) -> RetentionEvent:
        """The return event in effect."""
        return self.start_event if self.return_event is None else self.return_event

    def range_utc(self) -> tuple[datetime, datetime] | None:
        return check_range(self.date_range, self.time_zone)

    def observed_until(self, latest_event_ms: int | None) -> datetime | None:
        """Where observation ends (exclusive): the range's end or just after
        the project's latest event, whichever is earlier; None without events."""
        if latest_event_ms is None:
            return None
        end = _EPOCH + timedelta(milliseconds=latest_event_ms + 1)
        bounds = self.range_utc()
        return min(end, bounds[1]) if bounds else end


def check_grouping(field: str | None, at: str = "breakdown") -> FieldRef | None:
    """A retention breakdown: a person trait, an event property, or a text column."""
    if field is None:
        return None
    target = parse_field(field, at)
    if target.kind == "column" and target.column_kind != "string":
        raise SpecError(at, f"column {field!r} holds numbers; break down by a text column, a property or a trait")
    return target


# -- the result -------------------------------------------------------------------


@dataclass(frozen=True)
class RetentionCell:
    """Period ``period`` of a row.

    ``size`` is the denominator: the row's members for whom this period had
    begun when observation ended (for a cohort of one period: all of it, or
    none). ``returned`` is how many of them came back on (or on or after)
    it. ``complete`` is False while the period is not over for some of them.
    """

    period: int
    size: int
    returned: int
    complete: bool

    @property
    def observed(self) -> bool:
        return self.size > 0

    @property
    def rate(self) -> float | None:
        return self.returned / self.size if self.size else None


@dataclass(frozen=True)
class CohortRow:
    """One row: a start period's cohort (``start`` is its first local day), or a
    breakdown value (``group``; None: the value was missing), or overall."""

    start: date | None
    group: str | None
    size: int
    cells: tuple[RetentionCell, ...]

    @property
    def rates(self) -> list[float | None]:
        return [cell.rate for cell in self.cells]


@dataclass(frozen=True)
class RetentionResult:
    spec: RetentionSpec
    rows: tuple[CohortRow, ...]  # cohorts by start period, or by breakdown value (largest first)
    overall: CohortRow  # all rows summed (recurring: a person counts once per cohort)
    observed_until: datetime | None  # exclusive, UTC; None when the store has no events

    def labels(self) -> list[str]:
        return [row_label(self, row) for row in self.rows]

    def rates(self) -> list[list[float | None]]:
        """The heatmap: a rate per row and period (None: not observed)."""
        return [row.rates for row in self.rows]

    def counts(self) -> list[list[int | None]]:
        return [[cell.returned if cell.observed else None for cell in row.cells] for row in self.rows]


@dataclass(frozen=True)
class CohortCounts:
    """What the engine (or the reference) counts for one cohort: members of one
    start period (and breakdown value), and per period 0..periods how many
    returned on (or on or after) it."""

    group: str | None
    cohort: int  # period index
    size: int
    returned: tuple[int, ...]


def summarise(spec: RetentionSpec, cohorts: Iterable[CohortCounts], latest_event_ms: int | None) -> RetentionResult:
    """The table from per-cohort counts: which periods were observed, and the
    rows by period or by breakdown value."""
    cohorts = sorted(cohorts, key=lambda c: (c.group is None, c.group or "", c.cohort))
    until = spec.observed_until(latest_event_ms)
    width = spec.periods + 1
    begun: dict[int, datetime] = {}

    def begins(index: int) -> datetime:
        if index not in begun:
            begun[index] = _period_begins(index, spec.period, spec.time_zone)
        return begun[index]

    def cells_of(members: Sequence[CohortCounts]) -> tuple[RetentionCell, ...]:
        cells = []
        for n in range(width):
            size = returned = 0
            complete = True
            for member in members:
                if until is None or begins(member.cohort + n) >= until:
                    continue
                size += member.size
                returned += member.returned[n]
                complete = complete and begins(member.cohort + n + 1) <= until
            cells.append(RetentionCell(n, size, returned, complete and size > 0))
        return tuple(cells)

    rows: list[CohortRow]
    if spec.breakdown is None:
        rows = [
            CohortRow(period_start(c.cohort, spec.period), None, c.size, cells_of([c]))
            for c in sorted(cohorts, key=lambda c: c.cohort)
        ]
    else:
        by_group: dict[str | None, list[CohortCounts]] = {}
        for c in cohorts:
            by_group.setdefault(c.group, []).append(c)
        rows = [
            CohortRow(None, group, sum(m.size for m in members), cells_of(members))
            for group, members in by_group.items()
        ]
        rows.sort(key=lambda row: (-row.size, row.group is None, row.group or ""))
    overall = CohortRow(None, None, sum(row.size for row in rows), _sum_cells(rows, width))
    return RetentionResult(spec, tuple(rows), overall, until)


def _sum_cells(rows: Sequence[CohortRow], width: int) -> tuple[RetentionCell, ...]:
    cells = []
    for n in range(width):
        parts = [row.cells[n] for row in rows if row.cells[n].observed]
        size = sum(cell.size for cell in parts)
        cells.append(
            RetentionCell(n, size, sum(cell.returned for cell in parts), size > 0 and all(cell.complete for cell in parts))
        )
    return tuple(cells)


# -- the compiler -------------------------------------------------------------------


def _group_sql(dialect: Dialect, target: FieldRef | None) -> str | None:
    """The breakdown value of an event (None: no breakdown, or a person trait)."""
    if target is None or target.kind == "person_trait":
        return None
    return Operand(dialect, target).text()


def _period_ctes(spec: RetentionSpec, dialect: Dialect, project_id: str) -> list[tuple[str, str]]:
    """CTEs ending in ``periods`` (person_id, p, first_start, last_return[, grp]).

    The plan: one scan of the relevant events, each with its period index,
    grouped at once into one row per person and period: the first start
    event's time (and breakdown value) and the last return event's time in
    it. Both the cohort entries and the returns are read from those few rows,
    so the events themselves are read once and never kept."""
    bounds = spec.range_utc()
    start, returning = spec.start_event, spec.returning
    event_group = _group_sql(dialect, check_grouping(spec.breakdown))
    period = PERIOD_INDEX_SQL[spec.period].format(day=local_date_sql(dialect, spec.time_zone))
    names = None if start.event is None or returning.event is None else [start.event, returning.event]
    # first_time needs every earlier start event to know which one was the first.
    since = bounds[0] if bounds and spec.mode == "recurring" else None
    where = events_where(dialect, project_id, since=since, filters=spec.filters, events=names)
    if bounds:
        where += f"\n  AND timestamp < {dialect.timestamp(bounds[1])}"
    relevant = f"{start.sql(dialect)} OR {returning.sql(dialect)}"
    if bounds and spec.mode == "first_time":
        relevant = f"{start.sql(dialect)} OR ({returning.sql(dialect)} AND timestamp >= {dialect.timestamp(bounds[0])})"
    where += f"\n  AND ({relevant})"
    # (event ids only to settle which start event of a period is its first)
    group_columns = "" if event_group is None else f", event_id,\n  {event_group} AS grp"
    scoped = (
        f"SELECT person_id, {dialect.render('epoch_ms', x='timestamp')} AS ts{group_columns},\n"
        f"  {period} AS p,\n  {start.sql(dialect)} AS is_start,\n  {returning.sql(dialect)} AS is_return\n"
        f"FROM events\nWHERE {where}"
    )
    # Per person and period: the first start event (the anchor when the
    # period is the cohort's; its breakdown value, ties by event id) and the
    # last return (a period-0 return counts when it is at or after the anchor).
    first_group = (
        "" if event_group is None
        else f",\n  {_render('first_by_if', dialect, x='grp', key='(ts, event_id)', condition='is_start')} AS grp"
    )
    periods = (
        "SELECT person_id, p, min(CASE WHEN is_start THEN ts END) AS first_start,\n"
        f"  max(CASE WHEN is_return THEN ts END) AS last_return{first_group}\n"
        "FROM scoped GROUP BY person_id, p"
    )
    return [("scoped", scoped), ("periods", periods)]


def _trait_join(spec: RetentionSpec, dialect: Dialect, project_id: str) -> str | None:
    """The person trait a breakdown names, per person id: a table ``(person_id, grp)``."""
    target = check_grouping(spec.breakdown)
    if target is None or target.kind != "person_trait":
        return None
    trait = Operand(dialect, target, "traits").text()
    persons = final_table(dialect.name, "persons")
    return f"SELECT person_id, {trait} AS grp FROM {persons} WHERE project_id = {dialect.quote(project_id)}"


def _joined_counts(spec: RetentionSpec, dialect: Dialect, project_id: str) -> tuple[list[tuple[str, str]], str]:
    """The CTEs after ``periods``, and the rows ``grp, cohort, period, persons,
    latest`` of the sizes and returns, by joins: ``entries`` (person_id,
    cohort, anchor[, grp]: one row per person and cohort), and ``hits``
    (person_id, cohort, period[, grp]: one row per period in which the person
    returned, period 0 only from the anchor on)."""
    bounds = spec.range_utc()
    target = check_grouping(spec.breakdown)
    event_group = _group_sql(dialect, target)
    # The anchor: a person's first start event (first_time), or the first of
    # each period (recurring). (Aggregates, not a window: no sort of every start event.)
    if spec.mode == "first_time":
        grp = "" if event_group is None else f", {_render('first_by', dialect, x='grp', key='first_start')} AS grp"
        in_range = f"\nHAVING min(first_start) >= {epoch_ms(bounds[0])}" if bounds else ""
        entries = (
            f"SELECT person_id, {_render('arg_min', dialect, x='p', key='first_start')} AS cohort,"
            f" min(first_start) AS anchor{grp}\n"
            f"FROM periods WHERE first_start IS NOT NULL GROUP BY person_id{in_range}"
        )
    else:
        grp = "" if event_group is None else ", grp"
        entries = f"SELECT person_id, p AS cohort, first_start AS anchor{grp}\nFROM periods WHERE first_start IS NOT NULL"
    ctes = []
    traits = _trait_join(spec, dialect, project_id)
    if traits is not None:
        ctes.append(("firsts", entries))
        entries = (
            f"SELECT f.person_id AS person_id, f.cohort AS cohort, f.anchor AS anchor, t.grp AS grp\n"
            f"FROM firsts AS f LEFT JOIN ({traits}) AS t\n  ON f.person_id = t.person_id"
        )
    ctes.append(("entries", entries))
    hit_group = "" if target is None else ", e.grp AS grp"
    ctes.append(
        ("returned", "SELECT person_id, p, last_return AS last FROM periods WHERE last_return IS NOT NULL")
    )
    ctes.append(
        (
            "hits",
            f"SELECT e.person_id AS person_id, e.cohort AS cohort, r.p - e.cohort AS period{hit_group}\n"
            # (the larger side first: ClickHouse builds its hash table from the right)
            "FROM returned AS r INNER JOIN entries AS e ON r.person_id = e.person_id\n"
            "WHERE r.p > e.cohort OR (r.p = e.cohort AND r.last >= e.anchor)",
        )
    )
    grouped = spec.breakdown is not None
    grp = "grp, " if grouped else ""
    if spec.counting == "on":
        counted = f"SELECT {grp}cohort, period, count(*) AS persons FROM hits WHERE period <= {spec.periods} GROUP BY {grp}cohort, period"
    else:
        ctes.append(("furthest", f"SELECT person_id, {grp}cohort, max(period) AS reach FROM hits GROUP BY person_id, {grp}cohort"))
        ctes.append(("offsets", _render("offsets", dialect, count=str(spec.periods + 1))))
        counted = (
            f"SELECT {grp}cohort, n AS period, count(*) AS persons FROM furthest CROSS JOIN offsets\n"
            f"WHERE n <= reach GROUP BY {grp}cohort, n"
        )
    ctes.append(("counted", counted))
    group_value = "grp" if grouped else "NULL AS grp"
    rows = (
        f"SELECT {group_value}, cohort, period, persons, NULL AS latest FROM counted\n"
        f"UNION ALL SELECT {group_value}, cohort, NULL AS period, count(*) AS persons, NULL AS latest"
        f" FROM entries GROUP BY {grp}cohort"
    )
    return ctes, rows


def _array_counts(spec: RetentionSpec, dialect: Dialect, project_id: str) -> tuple[list[tuple[str, str]], str]:
    """What ``_joined_counts`` gives, by arrays: one grouping of ``periods`` by
    person into the person's entries (cohort, anchor, grp) and returns
    (period, last return), from which each entry's return periods are
    filtered, then all unnested and counted in one grouping (a size as period
    NULL). For ClickHouse, which computes a CTE again wherever it is read:
    the joins read ``periods``, and so the events, three times."""
    bounds = spec.range_utc()
    target = check_grouping(spec.breakdown)
    event_group = "" if _group_sql(dialect, target) is None else ", grp"
    entry = f"(p, assumeNotNull(first_start){event_group})"
    if spec.mode == "first_time":
        entries = f"[argMinIf({entry}, first_start, first_start IS NOT NULL)]"
        # (min skips NULLs: no start event at all gives NULL, never kept)
        having = f"min(first_start) >= {epoch_ms(bounds[0])}" if bounds else "min(first_start) IS NOT NULL"
    else:
        entries, having = f"groupArrayIf({entry}, first_start IS NOT NULL)", "countIf(first_start IS NOT NULL) > 0"
    per_person = (
        f"SELECT person_id, {entries} AS entries,\n"
        "  groupArrayIf((p, assumeNotNull(last_return)), last_return IS NOT NULL) AS returns\n"
        f"FROM periods GROUP BY person_id HAVING {having}"
    )
    traits = _trait_join(spec, dialect, project_id)
    source, grp = "per_person", ("NULL" if target is None else "entry.3")
    if traits is not None:
        source, grp = f"per_person AS f LEFT JOIN ({traits}) AS t ON f.person_id = t.person_id", "t.grp"
    hits = "arrayFilter(r -> r.1 > cohort OR (r.1 = cohort AND r.2 >= anchor), returns)"
    if spec.counting == "on":
        counted = f"arrayFilter(n -> n <= {spec.periods}, arrayMap(r -> r.1 - cohort, {hits}))"
    else:
        counted = f"range(if(empty({hits}), 0, least(arrayMax(r -> r.1, {hits}) - cohort, {spec.periods}) + 1))"
    by_entry = (
        f"SELECT {grp} AS grp, entry.1 AS cohort, entry.2 AS anchor, returns\n"
        f"FROM {source} ARRAY JOIN entries AS entry"
    )
    rows = (
        "SELECT grp, cohort, period, count(*) AS persons, NULL AS latest\n"
        f"FROM by_entry ARRAY JOIN arrayConcat([NULL], CAST({counted} AS Array(Nullable(Int64)))) AS period\n"
        "GROUP BY grp, cohort, period"
    )
    return [("per_person", per_person), ("by_entry", by_entry)], rows


# How each engine counts from ``periods``. The joins run on ClickHouse too (the
# tests hold both plans to the reference there), in over twice the time.
_COUNTS = {"duckdb": _joined_counts, "clickhouse": _array_counts}


def compile(spec: RetentionSpec, dialect: str, *, project_id: str = "default") -> str:
    """The SQL of a retention table: rows ``grp, cohort, period, persons,
    latest``. ``cohort`` is a period index (see ``period_start``). A row with
    ``period`` NULL holds a cohort's size; the others how many of its members
    returned on (or on or after) ``period`` (absent: none). One row with
    ``cohort`` NULL holds ``latest``, the project's latest event time in epoch
    ms (NULL: no events), where observation ends without a date range."""
    chosen = dialect_named(dialect)
    counts, rows = _COUNTS[chosen.name](spec, chosen, project_id)
    stamp = chosen.render("epoch_ms", x="max(timestamp)")
    body = (
        f"{rows}\n"
        # (ClickHouse's max of no rows is 0, not NULL. The latest timestamp,
        # then converted: not every event's.)
        "UNION ALL SELECT NULL AS grp, NULL AS cohort, NULL AS period, NULL AS persons,"
        f" CASE WHEN count(*) = 0 THEN NULL ELSE {stamp} END AS latest"
        f" FROM events WHERE project_id = {chosen.quote(project_id)}"
    )
    parts = ",\n".join(f"{name} AS (\n{sql}\n)" for name, sql in [*_period_ctes(spec, chosen, project_id), *counts])
    return f"WITH {parts}\n{body}{chosen.query_suffix}"


# -- running ----------------------------------------------------------------------


def check_events(database: Database, spec: RetentionSpec) -> None:
    """A SpecError for a start or return event, or an event property (in a
    filter or the breakdown), that the project has never seen (once it has
    events at all): most likely a typo."""
    events, filters = [], [(f"filters[{i}]", f) for i, f in enumerate(spec.filters)]
    for name, chosen in (("start_event", spec.start_event), ("return_event", spec.return_event)):
        if chosen is None:
            continue
        if chosen.event is not None:
            events.append((f"{name}.event", chosen.event))
        filters += [(f"{name}.filters[{i}]", f) for i, f in enumerate(chosen.filters)]
    check_names(
        database, events=events, filters=filters,
        properties=[("breakdown", spec.breakdown)] if spec.breakdown and spec.breakdown.startswith("properties.") else [],
    )


def run(database: Database, spec: RetentionSpec, *, known_events_only: bool = True) -> RetentionResult:
    """Compile for the database's dialect, run, and build the table.
    ``known_events_only`` refuses start and return events the project has never seen."""
    if known_events_only:
        check_events(database, spec)
    answer = database.query(compile(spec, database.backend.dialect, project_id=database.project_id))
    sizes: dict[tuple[str | None, int], int] = {}
    returned: dict[tuple[str | None, int], list[int]] = {}
    latest: int | None = None
    for row in answer.rows:
        values = dict(zip(answer.columns, row, strict=True))
        if values["cohort"] is None:
            latest = None if values["latest"] is None else int(values["latest"])
            continue
        key = (None if values["grp"] is None else str(values["grp"]), int(values["cohort"]))
        if values["period"] is None:
            sizes[key] = int(values["persons"])
        else:
            returned.setdefault(key, [0] * (spec.periods + 1))[int(values["period"])] = int(values["persons"])
    cohorts = [
        CohortCounts(group, cohort, size, tuple(returned.get((group, cohort), [0] * (spec.periods + 1))))
        for (group, cohort), size in sizes.items()
    ]
    return summarise(spec, cohorts, latest)


# -- a plain text table --------------------------------------------------------------


def row_label(result: RetentionResult, row: CohortRow) -> str:
    if row is result.overall:
        return "overall"
    if row.start is not None:
        return row.start.isoformat()
    if result.spec.breakdown is not None:
        return "(none)" if row.group is None else row.group
    return "overall"


def format_table(result: RetentionResult, show: Shown = "rate") -> str:
    """The table as text: a row per cohort (or breakdown value), a column per
    period, and the overall row. Rates are whole percent (``show="count"``: persons);
    an unobserved period is blank, one not over yet is marked ``*``."""
    if show not in get_args(Shown):
        raise SpecError("show", f"use 'rate' or 'count'; got {show!r}")
    first = result.spec.breakdown or "cohort"
    header = [first, "size", *(f"{result.spec.period} {n}" for n in range(result.spec.periods + 1))]
    lines = []
    partial = False
    for row in (*result.rows, result.overall):
        texts = []
        for cell in row.cells:
            if not cell.observed:
                texts.append("")
                continue
            value = f"{cell.rate:.0%}" if show == "rate" and cell.rate is not None else str(cell.returned)
            partial = partial or not cell.complete
            texts.append(value if cell.complete else value + "*")
        lines.append([row_label(result, row), str(row.size), *texts])
    widths = [max(len(line[i].rstrip("*")) for line in [header, *lines]) for i in range(len(header))]

    def render(line: list[str]) -> str:
        # Values align on their digits; a * hangs in the gap after its column.
        cells = [line[0].ljust(widths[0]) + " "]
        for text, width in zip(line[1:], widths[1:], strict=True):
            value = text.rstrip("*")
            cells.append(value.rjust(width) + ("*" if text.endswith("*") else " "))
        return " ".join(cells).rstrip()

    out = [render(header), *(render(line) for line in lines)]
    if partial:
        out.append("* the period is not over yet: its count can still grow")
    return "\n".join(out)
