"""Funnels: how many persons go through a sequence of steps within a window.

A ``FunnelSpec`` says which steps, in which mode, within what conversion
window; ``compile(spec, dialect)`` writes the SQL (no database needed);
``run(database, spec)`` executes it and returns a ``FunnelResult``. The exact
semantics (attempts, ties, window edge, exclusions, attribution) are in
docs/analytics.md; in short:

- every event of the first step in the date range starts an *attempt*; an
  attempt takes, for each next step, the earliest matching event after the
  previous step's (``strict``: the very next event of the person must
  match), and reaches the steps whose events fall within
  ``conversion_window`` of its start (an event exactly at the limit counts);
- ``unordered``: every event of any step starts an attempt, which reaches as
  many steps as have an event within the window;
- a person counts once, with their best attempt (the furthest step; the
  earliest such attempt on a tie), which also gives the breakdown value
  (from its first event) and the time to convert;
- events at the same millisecond are ordered by the first step they match,
  then by event id; one event never fills two steps of an attempt.

>>> from datetime import timedelta
>>> from footfall.events import parse_message
>>> from footfall.pipeline import Pipeline
>>> from footfall.store.database import Database
>>> from footfall.store.duckdb_backend import DuckDBBackend
>>> database = Database(DuckDBBackend(":memory:")); _ = database.migrate()
>>> def track(user, event, at):
...     return parse_message({"type": "track", "userId": user, "event": event,
...                           "timestamp": f"2024-03-01T12:{at}Z"})
>>> _ = Pipeline(database).ingest_events([
...     track("ann", "view", "00:00"), track("ann", "cart", "01:00"), track("ann", "buy", "05:00"),
...     track("bob", "view", "00:00"), track("bob", "cart", "30:00"),
...     track("cyd", "cart", "00:00"), track("cyd", "view", "00:10"),
... ])
>>> spec = FunnelSpec(
...     steps=(FunnelStep("view"), FunnelStep("cart"), FunnelStep("buy")),
...     conversion_window=timedelta(minutes=10),
... )
>>> result = run(database, spec)
>>> [(step.event, step.count) for step in result.overall.steps]
[('view', 3), ('cart', 1), ('buy', 1)]
>>> result.overall.time_to_convert.median
datetime.timedelta(seconds=300)
>>> len(persons(database, spec, step=1, outcome="dropped"))
2
>>> FunnelSpec(steps=(FunnelStep("view"),))
Traceback (most recent call last):
...
footfall.analytics.errors.SpecError: steps: a funnel has 2 to 20 steps; got 1
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple, get_args

from footfall.analytics.common import (
    DateRange,
    as_tuple,
    breakdown_sql,
    check_breakdown,
    check_event_filters,
    check_names,
    check_range,
    epoch_ms,
    events_where,
    zone,
)
from footfall.analytics.conditions import Filter
from footfall.analytics.dialects import Dialect, dialect_named
from footfall.analytics.errors import SpecError
from footfall.store.database import Database

FunnelMode = Literal["ordered", "strict", "unordered"]
StepReference = Literal["total", "previous"]
Outcome = Literal["converted", "dropped"]

MAX_STEPS = 20
DEFAULT_WINDOW = timedelta(days=14)

# Upper edges of the time-to-convert histogram: durations people think in. The
# bins a spec gets are those shorter than its window, then the window itself.
_HISTOGRAM_EDGES = tuple(
    timedelta(**{unit: amount})
    for unit, amounts in (
        ("seconds", (1, 5, 10, 30)),
        ("minutes", (1, 2, 5, 10, 15, 30)),
        ("hours", (1, 2, 3, 6, 12)),
        ("days", (1, 2, 3, 5, 7, 14, 21, 30, 45, 60, 90, 180, 365)),
    )
    for amount in amounts
)


# -- the spec ------------------------------------------------------------------


@dataclass(frozen=True)
class FunnelStep:
    """One step: an event name, optionally narrowed by event filters."""

    event: str
    filters: tuple[Filter, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.event, str) or not self.event:
            raise SpecError("FunnelStep.event", "give the name of the event this step matches")
        object.__setattr__(self, "filters", as_tuple(self.filters, "FunnelStep.filters", Filter))
        check_event_filters(self.filters, "FunnelStep.filters")

    def matches(self, event: str, properties: Mapping[str, Any], columns: Mapping[str, Any]) -> bool:
        return event == self.event and all(f.matches(properties, columns, {}) for f in self.filters)


@dataclass(frozen=True)
class Exclusion:
    """An attempt in which ``event`` happens after its step ``from_step`` and
    before its step ``to_step`` (0-based indexes into the steps) is discarded.
    If the attempt never reaches ``to_step``, "before" means within its window."""

    event: str
    from_step: int = 0
    to_step: int = 1
    filters: tuple[Filter, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.event, str) or not self.event:
            raise SpecError("Exclusion.event", "give the name of the event that excludes an attempt")
        for name in ("from_step", "to_step"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise SpecError(f"Exclusion.{name}", f"give a step index (0 is the first step); got {value!r}")
        if self.to_step <= self.from_step:
            raise SpecError("Exclusion.to_step", f"must be after from_step ({self.from_step}); got {self.to_step}")
        object.__setattr__(self, "filters", as_tuple(self.filters, "Exclusion.filters", Filter))
        check_event_filters(self.filters, "Exclusion.filters")

    def matches(self, event: str, properties: Mapping[str, Any], columns: Mapping[str, Any]) -> bool:
        return event == self.event and all(f.matches(properties, columns, {}) for f in self.filters)


@dataclass(frozen=True)
class FunnelSpec:
    """A funnel. ``filters`` narrow the events considered at all (event
    properties and columns) and the persons (``traits.<key>``); step filters
    narrow what satisfies a step."""

    steps: tuple[FunnelStep, ...]
    conversion_window: timedelta = DEFAULT_WINDOW
    mode: FunnelMode = "ordered"
    date_range: DateRange | None = None
    time_zone: str = "UTC"
    filters: tuple[Filter, ...] = ()
    exclusions: tuple[Exclusion, ...] = ()
    breakdown: str | None = None
    step_reference: StepReference = "total"

    def __post_init__(self) -> None:
        steps = as_tuple(self.steps, "steps", FunnelStep)
        if not 2 <= len(steps) <= MAX_STEPS:
            raise SpecError("steps", f"a funnel has 2 to {MAX_STEPS} steps; got {len(steps)}")
        object.__setattr__(self, "steps", steps)
        window = self.conversion_window
        if not isinstance(window, timedelta) or window <= timedelta(0):
            raise SpecError("conversion_window", f"give a positive duration (e.g. timedelta(hours=1)); got {window!r}")
        if window % timedelta(milliseconds=1):
            raise SpecError("conversion_window", f"give whole milliseconds; got {window!r}")
        if self.mode not in get_args(FunnelMode):
            raise SpecError("mode", f"use one of {', '.join(get_args(FunnelMode))}; got {self.mode!r}")
        if self.step_reference not in get_args(StepReference):
            raise SpecError("step_reference", f"use 'total' or 'previous'; got {self.step_reference!r}")
        zone(self.time_zone)
        check_range(self.date_range, self.time_zone)
        object.__setattr__(self, "filters", as_tuple(self.filters, "filters", Filter))
        exclusions = as_tuple(self.exclusions, "exclusions", Exclusion)
        object.__setattr__(self, "exclusions", exclusions)
        check_breakdown(self.breakdown)
        if self.mode == "unordered":
            if exclusions:
                raise SpecError("exclusions", "unordered funnels have no step order to exclude between")
            seen: dict[str, int] = {}
            for position, step in enumerate(steps):
                if step.event in seen:
                    raise SpecError(
                        f"steps[{position}].event",
                        f"unordered funnels need distinct step events; {step.event!r} is also steps[{seen[step.event]}]",
                    )
                seen[step.event] = position
        for position, exclusion in enumerate(exclusions):
            if exclusion.to_step >= len(steps):
                raise SpecError(
                    f"exclusions[{position}].to_step", f"the funnel's last step is {len(steps) - 1}; got {exclusion.to_step}"
                )

    @property
    def window_ms(self) -> int:
        return self.conversion_window // timedelta(milliseconds=1)

    def range_utc(self) -> tuple[datetime, datetime] | None:
        return check_range(self.date_range, self.time_zone)

    def histogram_edges(self) -> tuple[timedelta, ...]:
        """Bin edges of the time to convert: 0, the usual durations below the
        window, the window (the last bin includes its upper edge)."""
        inner = [edge for edge in _HISTOGRAM_EDGES if edge < self.conversion_window]
        return (timedelta(0), *inner, self.conversion_window)


# -- the result -----------------------------------------------------------------


@dataclass(frozen=True)
class HistogramBin:
    start: timedelta  # inclusive
    end: timedelta  # exclusive, except for the last bin, which ends at the window and includes it
    count: int


@dataclass(frozen=True)
class TimeToConvert:
    """From the first to the last step, over persons whose counted attempt completed."""

    converted: int
    average: timedelta | None
    median: timedelta | None
    histogram: tuple[HistogramBin, ...]


@dataclass(frozen=True)
class FunnelStepResult:
    index: int
    event: str
    count: int  # persons whose counted attempt reached this step (unordered: any index+1 steps)
    conversion_rate: float  # count over step 0's (reference "total") or the previous step's
    dropped: int  # persons who reached the previous step but not this one
    average_time: timedelta | None  # from the previous step, over persons who reached this one
    median_time: timedelta | None


@dataclass(frozen=True)
class FunnelGroup:
    breakdown: str | None  # the breakdown value (None: the property was missing), or None overall
    steps: tuple[FunnelStepResult, ...]
    time_to_convert: TimeToConvert

    @property
    def entered(self) -> int:
        return self.steps[0].count

    @property
    def converted(self) -> int:
        return self.steps[-1].count

    @property
    def conversion_rate(self) -> float:
        return self.converted / self.entered if self.entered else 0.0


@dataclass(frozen=True)
class FunnelResult:
    spec: FunnelSpec
    overall: FunnelGroup
    groups: tuple[FunnelGroup, ...]  # per breakdown value, most entered first; empty without a breakdown


@dataclass(frozen=True)
class PersonOutcome:
    """What the funnel made of one person: their counted attempt."""

    breakdown: str | None
    reached: int  # steps reached, 1..n
    times_ms: tuple[int, ...]  # epoch ms of each reached step's event (unordered: of each completion)


def summarise(spec: FunnelSpec, outcomes: dict[str, PersonOutcome]) -> FunnelResult:
    """A FunnelResult from per-person outcomes (used by the reference implementation;
    the SQL path aggregates in the engine)."""

    def group(breakdown: str | None, members: list[PersonOutcome]) -> FunnelGroup:
        n = len(spec.steps)
        counts = [sum(1 for m in members if m.reached > k) for k in range(n)]
        step_times = [[m.times_ms[k] - m.times_ms[k - 1] for m in members if m.reached > k] for k in range(n)]
        conversions = [m.times_ms[-1] - m.times_ms[0] for m in members if m.reached == n]
        edges = [edge // timedelta(milliseconds=1) for edge in spec.histogram_edges()]
        bins = [
            sum(1 for t in conversions if edges[i] <= t < edges[i + 1] or (i == len(edges) - 2 and t == edges[-1]))
            for i in range(len(edges) - 1)
        ]
        return _group(
            spec,
            breakdown,
            counts,
            [statistics.fmean(t) if t else None for t in step_times],
            [statistics.median(t) if t else None for t in step_times],
            len(conversions),
            statistics.fmean(conversions) if conversions else None,
            statistics.median(conversions) if conversions else None,
            bins,
        )

    overall = group(None, list(outcomes.values()))
    groups: tuple[FunnelGroup, ...] = ()
    if spec.breakdown is not None:
        values = sorted({o.breakdown for o in outcomes.values()}, key=lambda v: (v is None, v or ""))
        groups = _order_groups(
            [group(value, [o for o in outcomes.values() if o.breakdown == value]) for value in values]
        )
    return FunnelResult(spec, overall, groups)


def _group(
    spec: FunnelSpec,
    breakdown: str | None,
    counts: Sequence[int],
    averages: Sequence[float | None],
    medians: Sequence[float | None],
    converted: int,
    conversion_average: float | None,
    conversion_median: float | None,
    bins: Sequence[int],
) -> FunnelGroup:
    steps = []
    for k, step in enumerate(spec.steps):
        reference = counts[0] if spec.step_reference == "total" or k == 0 else counts[k - 1]
        steps.append(
            FunnelStepResult(
                index=k,
                event=step.event,
                count=counts[k],
                conversion_rate=counts[k] / reference if reference else 0.0,
                dropped=counts[k - 1] - counts[k] if k else 0,
                average_time=_duration(averages[k]) if k else None,
                median_time=_duration(medians[k]) if k else None,
            )
        )
    edges = spec.histogram_edges()
    histogram = tuple(HistogramBin(edges[i], edges[i + 1], int(bins[i])) for i in range(len(edges) - 1))
    return FunnelGroup(
        breakdown,
        tuple(steps),
        TimeToConvert(converted, _duration(conversion_average), _duration(conversion_median), histogram),
    )


def _order_groups(groups: list[FunnelGroup]) -> tuple[FunnelGroup, ...]:
    return tuple(sorted(groups, key=lambda g: (-g.entered, g.breakdown is None, g.breakdown or "")))


def _duration(milliseconds: float | None) -> timedelta | None:
    """A time in ms from the engine (None or NaN when there was nothing to average)."""
    if milliseconds is None or (isinstance(milliseconds, float) and math.isnan(milliseconds)):
        return None
    return timedelta(milliseconds=round(float(milliseconds), 3))


# -- the compiler -------------------------------------------------------------------


def _step_condition(dialect: Dialect, event: str, filters: Sequence[Filter]) -> str:
    return "(" + " AND ".join([f"event = {dialect.quote(event)}", *(f.sql(dialect) for f in filters)]) + ")"


# -- the plan ----------------------------------------------------------------------------
#
# Each person's events are gathered into one list, sorted, and every attempt is
# walked with list functions. Hashing the events by person once and sorting
# each person's few events costs a fraction of what sorting all the events
# for window functions, or joining them, does.

# List functions in each dialect's spelling. Lists are 1-based; NULL stands for
# "no such event" and propagates through lookups and comparisons.
_LISTS: Mapping[str, Mapping[str, str]] = {
    "duckdb": {
        "collect": "list({x})",
        "collect_nullable": "list({x})",
        "unwrap": "{x}",
        "positions": "range(1, len({list}) + 1)",
        "map": "list_transform({list}, lambda {var}: {body})",
        "map_indexed": "list_transform({list}, lambda {var}, {index}: {body})",
        "filter": "list_filter({list}, lambda {var}: {body})",
        "first": "list_filter({list}, lambda {var}: {body})[1]",
        "exists_pair": "coalesce(list_bool_or(list_transform(range(1, len({list})), lambda {var}: {body})), false)",
        "pairs": "range(1, len({list}))",
        "unnest": "unnest({list})",
        # A person without interruptions has no row to join: NULL, not [].
        "has": "coalesce(list_contains({list}, {x}), false)",
        "position_of": "list_position({list}, {x})",
        "where": "list_where({list}, {mask})",
        "pick": "list_select({list}, {indexes})",
        "sort": "list_sort({list})",
        "grade": "list_grade_up({list})",
        "grade_pairs": "list_grade_up(list_zip({first}, {second}))",
        "max": "list_max({list})",
        "length": "len({list})",
        "nullable": "{x}",
        "as_int": "CAST({x} AS BIGINT)",
        "div": "{x} // {y}",
        "shift": "({x} >> {bits})",
        "low_bits": "({x} & {mask})",
        "from_ms": "make_timestamptz({x} * 1000)",
        # Other events meet the gaps of their person (_interruptions); each
        # pair is then checked. An ASOF join would sort every event first.
        "gap_join": "JOIN {gaps} AS s ON e.person_id = s.person_id",
        # How a strict funnel learns of the other events between its steps
        # (_walk): listing every event costs several times the whole walk.
        "strict": "gaps",
        # How the scan classes events whose conditions are their names alone
        # (_walk): a join with a table of (name, class) picks and classes
        # them at once, 6% faster than a list to pick them and a CASE.
        "classes": "join",
    },
    "clickhouse": {
        "collect": "groupArray({x})",
        "collect_nullable": "groupArray(tuple({x}))",  # groupArray skips NULLs, not tuples of them
        "unwrap": "tupleElement({x}, 1)",
        "positions": "arrayEnumerate({list})",
        "map": "arrayMap({var} -> {body}, {list})",
        "map_indexed": "arrayMap(({var}, {index}) -> {body}, {list}, arrayEnumerate({list}))",
        "filter": "arrayFilter({var} -> {body}, {list})",
        "first": "arrayFirstOrNull({var} -> {body}, {list})",
        "exists_pair": "arrayExists({var} -> {body}, arrayEnumerate(arrayPopBack({list})))",
        "position_of": "indexOf({list}, {x})",
        "where": "arrayFilter((item, flag) -> flag, {list}, {mask})",
        "pick": "arrayMap(position -> {list}[position], {indexes})",
        "sort": "arraySort({list})",
        "grade": "arraySort(position -> {list}[position], arrayEnumerate({list}))",
        "grade_pairs": "arraySort(position -> ({first}[position], {second}[position]), arrayEnumerate({first}))",
        "max": "arrayMax({list})",
        "length": "length({list})",
        "nullable": "toNullable({x})",  # so that the max of no attempts is NULL, not 0
        "as_int": "toInt64({x})",
        "div": "intDiv({x}, {y})",
        "shift": "bitShiftRight({x}, {bits})",
        "low_bits": "bitAnd({x}, {mask})",
        # Its lists are cheap, its joins less so: on 10M events, listing every
        # event took less CPU than the gaps did, even with an ASOF join.
        "strict": "every event",
        "classes": "case",
    },
}

# A person's attempts are ranked by one number: reached * _ATTEMPTS - attempt,
# the largest being the furthest and, among those, the earliest.
_ATTEMPTS = 1 << 32


class _Lists:
    """Writes list expressions for one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.templates = _LISTS[dialect.name]

    def __call__(self, template: str, **parts: str) -> str:
        return self.templates[template].format(**parts)

    def map(self, source: str, var: str, body: str) -> str:
        return self("map", list=source, var=var, body=body)

    def filter(self, source: str, var: str, body: str) -> str:
        return self("filter", list=source, var=var, body=body)

    def map_indexed(self, source: str, var: str, index: str, body: str) -> str:
        """``map`` whose body also sees the item's 1-based index."""
        return self("map_indexed", list=source, var=var, index=index, body=body)

    def first(self, source: str, var: str, body: str) -> str:
        """The first item of ``source`` for which ``body`` holds (NULL if none)."""
        return self("first", list=source, var=var, body=body)


@dataclass(frozen=True)
class _Encoding:
    """What the low bits of a row's sort key say about it.

    The sort key is the time in ms shifted left by ``bits``, plus a class: one
    integer that orders a person's events by time, then by the first step they
    match. When no event can match two conditions (every condition names a
    different event), the class is the condition the row matches (steps first,
    in order), so the key alone tells which step or exclusion a row is;
    otherwise it is the first step matched, and a flag per condition rides
    along in lists of its own."""

    conditions: tuple[str, ...]  # distinct: steps first, then exclusions
    names: tuple[str, ...]  # the event each condition names
    by_name: bool  # whether each condition is its event's name alone (no filters)
    step_flags: tuple[int, ...]
    exclusion_flags: tuple[int, ...]
    exclusive: bool
    steps: int

    @property
    def bits(self) -> int:
        return max(len(self.conditions), self.steps).bit_length()

    @property
    def mask(self) -> int:
        return (1 << self.bits) - 1

    def class_sql(self) -> str:
        """The class of a row, as SQL over the events table."""
        if self.exclusive:
            cases = list(enumerate(self.conditions))
        else:
            cases = [(k, self.conditions[flag]) for k, flag in enumerate(self.step_flags)]
        fallback = len(self.conditions) if self.exclusive else self.steps
        return "CASE " + " ".join(f"WHEN {c} THEN {value}" for value, c in cases) + f" ELSE {fallback} END"


def _encoding(spec: FunnelSpec, dialect: Dialect) -> _Encoding:
    named = [(s.event, _step_condition(dialect, s.event, s.filters)) for s in spec.steps]
    named += [(x.event, _step_condition(dialect, x.event, x.filters)) for x in spec.exclusions]
    conditions: list[str] = []
    events: list[str] = []
    for event, condition in named:
        if condition not in conditions:
            conditions.append(condition)
            events.append(event)
    n = len(spec.steps)
    return _Encoding(
        conditions=tuple(conditions),
        names=tuple(events),
        by_name=not any(s.filters for s in spec.steps) and not any(x.filters for x in spec.exclusions),
        step_flags=tuple(conditions.index(condition) for _, condition in named[:n]),
        exclusion_flags=tuple(conditions.index(condition) for _, condition in named[n:]),
        exclusive=len(set(events)) == len(events),
        steps=n,
    )


class _Plan(NamedTuple):
    ctes: list[tuple[str, str]]
    materialized: frozenset[str] = frozenset()  # CTEs read twice, to compute once


def _counted_attempts(spec: FunnelSpec, dialect: Dialect, project_id: str) -> _Plan:
    """CTEs ending in ``best``: one row per person in the funnel, with their
    counted attempt: breakdown, reached (1..n), t0..t{n-1} (epoch ms).

    Sorting by the key leaves events of the same millisecond and class in no
    particular order, where the event id should decide. Such ties are rare,
    and carrying a string per event to settle them costs more than the rest
    of the walk (on chdb, a strict funnel took 2.6 times as long). So the
    walk runs twice: once for everybody without event ids, noting who has a
    tie, then again, with event ids, for those persons only. The first walk
    is read by both, so it is computed once (MATERIALIZED).

    Where ties cannot change the answer (``_ties_matter``), there is only
    the first walk, and no search for ties."""
    encoding = _encoding(spec, dialect)
    columns = "person_id, breakdown, reached, " + ", ".join(f"t{k}" for k in range(len(spec.steps)))
    if not _ties_matter(spec, encoding):
        walk = _walk(spec, dialect, project_id, encoding, prefix="", with_ids=False, note_ties=False)
        return _Plan([*walk, ("best", f"SELECT {columns} FROM walked WHERE reached IS NOT NULL")])
    # (A person all of whose attempts were discarded has no outcome: NULL.)
    fast = _walk(spec, dialect, project_id, encoding, prefix="", with_ids=False)
    tied = _walk(
        spec, dialect, project_id, encoding, prefix="tied_", with_ids=True,
        only="SELECT person_id FROM walked WHERE tied",
    )
    union = (
        f"SELECT {columns} FROM walked WHERE NOT tied AND reached IS NOT NULL\nUNION ALL\n"
        f"SELECT {columns} FROM tied_walked WHERE reached IS NOT NULL"
    )
    # Each person's outcome is read twice: for the persons without ties, and
    # to find those with some. A strict funnel's sorted lists feed both its
    # walk and the search for interruptions (where it searches for them),
    # which both walks read. (Materializing lists read once only cost chdb a
    # sixth of a strict funnel's time: it wrote them to a table.)
    gaps = spec.mode == "strict" and _LISTS[dialect.name]["strict"] == "gaps"
    shared = {"walked", "sorted", "interrupted"} if gaps else {"walked"}
    return _Plan([*fast, *tied, ("best", union)], materialized=frozenset(shared))


def _ties_matter(spec: FunnelSpec, encoding: _Encoding) -> bool:
    """Whether the order of events of the same millisecond and class (which
    only event ids settle) can change a person's outcome.

    In ordered and unordered funnels whose steps and exclusions each have a
    condition of their own, naming different events, it cannot: such events
    have one sort key, so whichever comes first, the attempts they start or
    continue reach the same steps at the same times; only a breakdown (the
    value of an attempt's first event) tells them apart. Where one event can
    fill two steps (or a step and an exclusion), the first of two tied
    events may fill one and the second the next; strict funnels look at the
    very next event."""
    flags = [*encoding.step_flags, *encoding.exclusion_flags]
    shared = len(set(flags)) < len(flags)
    return spec.mode == "strict" or not encoding.exclusive or shared or spec.breakdown is not None


def _walk(
    spec: FunnelSpec,
    dialect: Dialect,
    project_id: str,
    encoding: _Encoding,
    *,
    prefix: str,
    with_ids: bool,
    note_ties: bool = True,
    only: str | None = None,
) -> list[tuple[str, str]]:
    """The walk, in CTEs named with ``prefix`` and ending in ``{prefix}walked``:
    person_id, tied (without ``with_ids``, if ``note_ties``), breakdown,
    reached, t0..t{n-1}. ``with_ids`` sorts the events of a millisecond and
    class by event id; without, ties are only noted (or, without
    ``note_ties``, left as they fall). ``only`` selects the persons to walk.

    Attempts are followed through *items* that stand for events: their sort
    keys, which are unique when there are no ties (compared directly, they
    spare looking anything up), or else their positions in the sorted list;
    strict funnels, which step to the very next position, use positions.

    The lists hold the funnel's events only. A strict funnel also needs to
    know whether any other event comes between a step and the next one
    listed: listing every event of every person for that costs DuckDB
    several times the rest of the walk, so it asks only about the pairs
    that could matter (``interrupted``, written by the first walk and read
    by both); ClickHouse lists every event (``_LISTS``: "strict")."""
    lists = _Lists(dialect)
    n = len(spec.steps)
    general = not encoding.exclusive
    flags = range(len(encoding.conditions))
    bounds = spec.range_utc()
    positional = spec.mode == "strict" or with_ids
    ctes: list[tuple[str, str]] = []

    def add(name: str, source: str, columns: Sequence[str]) -> str:
        ctes.append((prefix + name, "SELECT " + ", ".join(columns) + f"\nFROM {source}"))
        return prefix + name

    names = sorted({s.event for s in spec.steps} | {x.event for x in spec.exclusions})
    considered = events_where(
        dialect,
        project_id,
        since=bounds[0] if bounds else None,
        until=bounds[1] + spec.conversion_window if bounds else None,
        filters=spec.filters,
        named=names,
    )
    quoted = ", ".join(dialect.quote(name) for name in names)
    every_event = spec.mode == "strict" and lists("strict") == "every event"
    if every_event:  # the events between steps are listed too, as non-steps
        where = considered
    elif only is not None:
        # The walk of tied persons keeps a plain IN, so that DuckDB does not
        # share (and so materialise) one scan between both walks.
        where = f"{considered}\n  AND event IN ({quoted})"
    elif spec.mode == "strict":
        # Strict funnels keep the check for membership changes: without it,
        # DuckDB joins their interruptions the wrong way round (0.65 -> 0.95 s
        # at 10M events).
        where = f"{considered}\n  AND {dialect.render('one_of', x='event', values=quoted)}"
    else:
        # The list alone leaves the membership changes out (unless named), so
        # the scan need not check for them as well.
        where = events_where(
            dialect, project_id, since=bounds[0] if bounds else None,
            until=bounds[1] + spec.conversion_window if bounds else None, filters=spec.filters, events=names,
        )
    source, event_class = "events", encoding.class_sql()
    listed_names = f"\n  AND {dialect.render('one_of', x='event', values=quoted)}"
    if encoding.exclusive and encoding.by_name and listed_names in where and lists("classes") == "join":
        # Only the named events, each of one class: the join picks them.
        where = where.replace(listed_names, "")
        rows = ", ".join(f"({dialect.quote(name)}, {c})" for c, name in enumerate(encoding.names))
        source = f"events INNER JOIN (VALUES {rows}) AS classes(name, class_number) ON event = classes.name"
        event_class = "classes.class_number"
    if only is not None:
        where += f"\n  AND person_id IN ({only})"
    key = f"{dialect.render('epoch_ms', x='timestamp')} * {1 << encoding.bits} + {event_class}"
    scanned = ["person_id", f"{key} AS sort_key"]
    scanned += ["event_id"] if with_ids else []
    scanned += [f"{breakdown_sql(dialect, check_breakdown(spec.breakdown))} AS breakdown"] if spec.breakdown else []
    scanned += [f"{encoding.conditions[c]} AS f{c}" for c in flags] if general else []
    matched = add("matched", f"{source}\nWHERE {where}", scanned)

    riders = ([f"f{c}" for c in flags] if general else []) + (["breakdown"] if spec.breakdown else [])
    collected = [
        f"{lists('collect_nullable' if column == 'breakdown' else 'collect', x=column)} AS {column}"
        for column in ["sort_key", *riders]
    ]
    collected += [f"{lists('collect', x='event_id')} AS event_id"] if with_ids else []
    people = add("people", f"{matched}\nGROUP BY person_id", ["person_id", *collected])
    if not with_ids and not riders:
        ordered = add("sorted", people, ["person_id", f"{lists('sort', list='sort_key')} AS k"])
    else:
        if not with_ids:
            order = lists("grade", list="sort_key")
        else:
            order = lists("grade_pairs", first="sort_key", second="event_id")
        graded = add("graded", people, ["person_id", "sort_key", *riders, f"{order} AS perm"])
        picked = [f"{lists('pick', list=column, indexes='perm')} AS {column}" for column in riders]
        ordered = add("sorted", graded, ["person_id", f"{lists('pick', list='sort_key', indexes='perm')} AS k", *picked])
    carried = ["person_id", "k", *riders]
    if spec.mode == "strict" and not every_event:
        if only is None:
            _interruptions(spec, lists, encoding, add, ordered, f"{considered}\n  AND event NOT IN ({quoted})")
        ordered = f"{ordered} LEFT JOIN interrupted USING (person_id)"
        carried.append("cut")
    items = lists("positions", list="k") if positional else "k"

    def sort_key(item: str) -> str:
        return f"k[{item}]" if positional else item

    def time(item: str) -> str:
        return lists("shift", x=sort_key(item), bits=str(encoding.bits))

    def has(flag: int, position: str) -> str:
        """Whether the event at a position has a flag (by position: strict funnels)."""
        if general:
            return f"f{flag}[{position}]"
        return f"{lists('low_bits', x=f'k[{position}]', mask=str(encoding.mask))} = {flag}"

    def in_range(item: str) -> str:
        if not bounds:
            return "true"
        return f"{time(item)} >= {epoch_ms(bounds[0])} AND {time(item)} < {epoch_ms(bounds[1])}"

    # The items of each condition's events, in order. Strict funnels look
    # later steps up by position, and need only the first step's.
    steps_listed = encoding.step_flags[:1] if spec.mode == "strict" else encoding.step_flags
    needed = sorted({*steps_listed, *encoding.exclusion_flags})
    of_class = f"{lists('low_bits', x=sort_key('i'), mask=str(encoding.mask))} = {{c}}"
    of_flag = [
        f"{lists('where', list=items, mask=f'f{c}') if general else lists.filter(items, 'i', of_class.format(c=c))} AS e{c}"
        for c in needed
    ]
    chain = add("flagged", ordered, [*carried, *of_flag])
    listed = [f"e{c}" for c in needed]
    carried += listed
    noted = note_ties and not with_ids
    if noted:
        # A tie: two events of the same millisecond and class. Only those of a
        # step class matter, but in funnels that look at the named events only,
        # the others (exclusions) are too rare to be worth telling apart.
        same = "k[i] = k[i + 1]"
        if spec.mode == "strict":
            same += f" AND {lists('low_bits', x='k[i]', mask=str(encoding.mask))} < {n}"
        chain = add("checked", chain, [*carried, f"{lists('exists_pair', list='k', var='i', body=same)} AS tied"])
        carried.append("tied")

    within = f"{time('s')} + {spec.window_ms}"
    if spec.mode == "unordered":
        is_step = f"{lists('low_bits', x=sort_key('i'), mask=str(encoding.mask))} < {n} AND {in_range('i')}"
        chain = add("starts", chain, [*carried, f"{lists.filter(items, 'i', is_step)} AS a0"])
        # Each step's first event from the start's millisecond on (ties
        # included); a person who did one of the steps only reaches 1 anyway.
        present = " + ".join(lists("as_int", x=f"{lists('length', list=f'e{c}')} > 0") for c in sorted(set(encoding.step_flags)))
        several = f"{present} > 1"
        from_start = f"{time('j')} >= {time('s')}"
        firsts = [
            f"CASE WHEN {several} THEN {lists.map('a0', 's', lists.first(f'e{encoding.step_flags[k]}', 'j', from_start))}"
            f" ELSE [] END AS f{k}"
            for k in range(n)
        ]
        chain = add("firsts", chain, [*carried, "a0", *firsts])
        steps = [f"f{k}" for k in range(n)]
        found = [lists("as_int", x=f"coalesce({time(f'f{k}[q]')} <= {within}, false)") for k in range(n)]
        reached = " + ".join(found)
    else:
        starts = f"e{encoding.step_flags[0]}"
        if bounds:
            starts = lists.filter(starts, "i", in_range("i"))
        chain = add("steps0", chain, [*carried, f"{starts} AS a0"])
        for k in range(1, n):
            flag = encoding.step_flags[k]
            if spec.mode == "ordered":
                # The earliest step-k event after the attempt's step k-1 (none
                # for a person who never did step k).
                following = lists.first(f"e{flag}", "j", "j > p")
                new = f"CASE WHEN {lists('length', list=f'e{flag}')} > 0 THEN {lists.map(f'a{k - 1}', 'p', following)} ELSE [] END AS a{k}"
            else:
                # The very next event, if it is a step-k event: the next one
                # listed, unless another event came in between (in the same
                # millisecond, other events sort after the funnel's).
                clear = "" if every_event else f" AND ({time('p + 1')} = {time('p')} OR NOT {lists('has', list='cut', x='k[p]')})"
                following = f"CASE WHEN p < {lists('length', list='k')} AND {has(flag, 'p + 1')}{clear} THEN p + 1 END"
                new = f"{lists.map(f'a{k - 1}', 'p', following)} AS a{k}"
            chain = add(f"steps{k}", chain, [*carried, *(f"a{j}" for j in range(k)), new])
        steps = [f"a{k}" for k in range(1, n)]
        found = [lists("as_int", x=f"coalesce({time(f'a{k}[q]')} <= {within}, false)") for k in range(1, n)]
        reached = "1 + " + " + ".join(found)
    attempts = ["a0", *steps]
    if spec.exclusions:
        excluded = [
            # The first excluded event after the attempt's step from_step.
            f"{lists.map(f'a{x.from_step}', 'p', lists.first(f'e{encoding.exclusion_flags[j]}', 'j', 'j > p'))} AS x{j}"
            for j, x in enumerate(spec.exclusions)
        ]
        chain = add("excluded", chain, [*carried, *attempts, f"{lists.map_indexed('a0', 's', 'q', reached)} AS reached", *excluded])
        discards = [
            f"coalesce(reached[q] > {x.from_step} AND CASE WHEN reached[q] > {x.to_step}"
            f" THEN x{j}[q] < a{x.to_step}[q] ELSE {time(f'x{j}[q]')} <= {within} END, false)"
            for j, x in enumerate(spec.exclusions)
        ]
        score = f"CASE WHEN {' OR '.join(discards)} THEN NULL ELSE {lists('nullable', x=f'reached[q] * {_ATTEMPTS} - q')} END"
    else:
        score = lists("nullable", x=f"({reached}) * {_ATTEMPTS} - q")
    # The best attempt: the furthest, and the earliest of those.
    best = lists("max", list=lists.map_indexed("a0", "s", "q", score))
    # Most persons never do the second step (unordered: any other step): then
    # their first attempt is the best.
    if spec.mode == "ordered" and all(x.from_step > 0 for x in spec.exclusions):
        alone = f"{lists('length', list=f'e{encoding.step_flags[1]}')} = 0"
        best = f"CASE WHEN {alone} AND {lists('length', list='a0')} > 0 THEN {_ATTEMPTS - 1} ELSE {best} END"
    elif spec.mode == "unordered":
        best = f"CASE WHEN NOT ({several}) AND {lists('length', list='a0')} > 0 THEN {_ATTEMPTS - 1} ELSE {best} END"
    kept = [column for column in carried if column not in (*listed, "cut")] + attempts
    chain = add("scored", chain, [*kept, f"{best} AS score"])
    decoded = [f"{lists('div', x='score', y=str(_ATTEMPTS))} + 1 AS reached", f"{_ATTEMPTS} - score % {_ATTEMPTS} AS q"]
    chain = add("chosen", chain, [*kept, *decoded])
    start = "a0[q]"
    if spec.mode == "unordered":
        done = [f"CASE WHEN {time(f'f{k}[q]')} <= {time(start)} + {spec.window_ms} THEN {time(f'f{k}[q]')} END" for k in range(n)]
        in_order = lists("sort", list="[" + ", ".join(done) + "]")
        times = [f"{in_order}[{k + 1}] AS t{k}" for k in range(n)]
    else:
        times = [f"{time(f'a{k}[q]')} AS t{k}" for k in range(n)]
    if spec.breakdown:
        position = start if positional else lists("position_of", list="k", x=start)
        value = f"{lists('unwrap', x=f'breakdown[{position}]')} AS breakdown"
    else:
        value = "NULL AS breakdown"
    tied = ["tied"] if noted else []
    add("walked", chain, ["person_id", *tied, value, "reached", *times])
    return ctes


def _interruptions(
    spec: FunnelSpec, lists: _Lists, encoding: _Encoding, add: Callable[[str, str, Sequence[str]], str],
    listed: str, others: str,
) -> None:
    """Adds the CTEs ending in ``interrupted``: person_id, cut, the list of
    sort keys of the funnel events after which another event (``others``: a
    WHERE clause over ``events``) comes before the next listed one.

    Only *gaps* could matter: two neighbours in a sorted list (``listed``)
    that a strict attempt could step between (step classes, the later one in
    a later millisecond, within the window). Joining the other events to the
    gaps of their person, then checking the times, finds the interrupted ones.
    The keys of a list are the same whatever the order of its ties, so the
    walk of tied persons reads the same answer."""
    n = len(spec.steps)

    def low(x: str) -> str:
        return lists("low_bits", x=x, mask=str(encoding.mask))

    def time(x: str) -> str:
        return lists("shift", x=x, bits=str(encoding.bits))

    if encoding.exclusive:
        pairs = sorted(set(zip(encoding.step_flags, encoding.step_flags[1:], strict=False)))
        steps = " OR ".join(f"({low('k[i]')} = {a} AND {low('k[i + 1]')} = {b})" for a, b in pairs)
    else:  # the class is the first step matched; a superset of the pairs is enough
        steps = f"{low('k[i]')} < {n} AND {low('k[i + 1]')} < {n}"
    gap = f"({steps}) AND {time('k[i]')} < {time('k[i + 1]')} AND {time('k[i + 1]')} <= {time('k[i]')} + {spec.window_ms}"
    gaps = add("gaps", listed, ["person_id", "k", f"{lists('unnest', list=lists.filter(lists('pairs', list='k'), 'i', gap))} AS i"])
    spans = add("spans", gaps, [
        "person_id", "k[i] AS lo",
        f"{lists('from_ms', x=time('k[i]'))} AS since", f"{lists('from_ms', x=time('k[i + 1]'))} AS until",
    ])
    # An event in the gap's first millisecond sorts after the step; one in
    # the last, after the next.
    within = (
        f"(SELECT DISTINCT s.person_id AS person_id, s.lo AS lo\n"
        f"  FROM (SELECT person_id, timestamp FROM events WHERE {others}) AS e\n"
        f"  {lists('gap_join', gaps=spans)}\n"
        f"  WHERE e.timestamp >= s.since AND e.timestamp < s.until) AS found\nGROUP BY person_id"
    )
    add("interrupted", within, ["person_id", f"{lists('collect', x='lo')} AS cut"])


def _with(plan: _Plan, body: str, dialect: Dialect) -> str:
    parts = ",\n".join(
        f"{name} AS {'MATERIALIZED ' if name in plan.materialized else ''}(\n{sql}\n)" for name, sql in plan.ctes
    )
    return f"WITH {parts}\n{body}{dialect.query_suffix}"


def compile(spec: FunnelSpec, dialect: str, *, project_id: str = "default") -> str:
    """The SQL of a funnel: one row per breakdown value plus one overall row
    (``is_total`` = 1), with step counts, step times and the histogram."""
    chosen = dialect_named(dialect)
    n = len(spec.steps)
    render = chosen.render
    columns = [f"{render('count_if', condition=f'reached >= {k + 1}')} AS reached_{k}" for k in range(n)]
    for k in range(1, n):
        gap, condition = f"t{k} - t{k - 1}", f"reached >= {k + 1}"
        columns.append(f"{render('avg_if', x=gap, condition=condition)} AS average_{k}")
        columns.append(f"{render('median_if', x=gap, condition=condition)} AS median_{k}")
    total, done = f"t{n - 1} - t0", f"reached = {n}"
    columns.append(f"{render('avg_if', x=total, condition=done)} AS conversion_average")
    columns.append(f"{render('median_if', x=total, condition=done)} AS conversion_median")
    edges = [edge // timedelta(milliseconds=1) for edge in spec.histogram_edges()]
    for i in range(len(edges) - 1):
        upper = "<=" if i == len(edges) - 2 else "<"
        condition = f"{done} AND {total} >= {edges[i]} AND {total} {upper} {edges[i + 1]}"
        columns.append(f"{render('count_if', condition=condition)} AS bin_{i}")
    aggregates = ",\n  ".join(columns)
    if spec.breakdown is None:
        body = f"SELECT 1 AS is_total, NULL AS breakdown,\n  {aggregates}\nFROM best"
    else:
        body = (
            f"SELECT is_total, group_value AS breakdown,\n  {aggregates}\n"
            "FROM (SELECT b.reached AS reached, "
            + ", ".join(f"b.t{k} AS t{k}" for k in range(n))
            + ", g.is_total AS is_total, CASE WHEN g.is_total = 1 THEN NULL ELSE b.breakdown END AS group_value\n"
            "  FROM best AS b CROSS JOIN (SELECT 0 AS is_total UNION ALL SELECT 1 AS is_total) AS g) AS grouped\n"
            "GROUP BY is_total, group_value"
        )
    return _with(_counted_attempts(spec, chosen, project_id), body, chosen)


_ANY_GROUP: Any = object()


def compile_persons(
    spec: FunnelSpec,
    dialect: str,
    *,
    step: int,
    outcome: Outcome = "converted",
    breakdown: str | None = _ANY_GROUP,
    limit: int | None = None,
    project_id: str = "default",
) -> str:
    """The SQL listing the persons (ids, sorted) who reached step ``step``
    (``converted``), or who reached the step before it but not it (``dropped``);
    with ``breakdown``, only those of that breakdown value (None: missing)."""
    chosen = dialect_named(dialect)
    n = len(spec.steps)
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < n:
        raise SpecError("step", f"give a step index from 0 to {n - 1}; got {step!r}")
    if outcome == "converted":
        condition = f"reached >= {step + 1}"
    elif outcome == "dropped":
        if step == 0:
            raise SpecError("step", "nobody drops at the first step: ask for step 1 or later")
        condition = f"reached = {step}"
    else:
        raise SpecError("outcome", f"use 'converted' or 'dropped'; got {outcome!r}")
    if breakdown is not _ANY_GROUP:
        if breakdown is None:
            condition += " AND breakdown IS NULL"
        elif isinstance(breakdown, str):
            condition += f" AND breakdown = {chosen.quote(breakdown)}"
        else:
            raise SpecError("breakdown", f"give a breakdown value (a string, or None); got {breakdown!r}")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise SpecError("limit", f"give a positive number of persons; got {limit!r}")
    body = f"SELECT person_id FROM best WHERE {condition} ORDER BY person_id" + (f" LIMIT {limit}" if limit else "")
    return _with(_counted_attempts(spec, chosen, project_id), body, chosen)


# -- running ----------------------------------------------------------------------


def check_events(database: Database, spec: FunnelSpec) -> None:
    """A SpecError for a step or exclusion event, or an event property (in a
    filter or the breakdown), that the project has never seen (once it has
    events at all): most likely a typo."""
    filters = [(f"filters[{i}]", f) for i, f in enumerate(spec.filters)]
    for k, step in enumerate(spec.steps):
        filters += [(f"steps[{k}].filters[{i}]", f) for i, f in enumerate(step.filters)]
    for j, exclusion in enumerate(spec.exclusions):
        filters += [(f"exclusions[{j}].filters[{i}]", f) for i, f in enumerate(exclusion.filters)]
    check_names(
        database,
        events=[(f"steps[{k}].event", s.event) for k, s in enumerate(spec.steps)]
        + [(f"exclusions[{j}].event", x.event) for j, x in enumerate(spec.exclusions)],
        filters=filters,
        properties=[("breakdown", spec.breakdown)] if spec.breakdown and spec.breakdown.startswith("properties.") else [],
    )


def run(database: Database, spec: FunnelSpec, *, known_events_only: bool = True) -> FunnelResult:
    """Compile for the database's dialect, run, and build the result.
    ``known_events_only`` refuses step events the project has never seen."""
    if known_events_only:
        check_events(database, spec)
    answer = database.query(compile(spec, database.backend.dialect, project_id=database.project_id))
    n = len(spec.steps)
    bins = len(spec.histogram_edges()) - 1
    overall: FunnelGroup | None = None
    groups = []
    for row in answer.rows:
        values = dict(zip(answer.columns, row, strict=True))
        group = _group(
            spec,
            None if values["breakdown"] is None else str(values["breakdown"]),
            [int(values[f"reached_{k}"]) for k in range(n)],
            [None, *(values[f"average_{k}"] for k in range(1, n))],
            [None, *(values[f"median_{k}"] for k in range(1, n))],
            int(values[f"reached_{n - 1}"]),
            values["conversion_average"],
            values["conversion_median"],
            [int(values[f"bin_{i}"]) for i in range(bins)],
        )
        if int(values["is_total"]) == 1:
            overall = group
        else:
            groups.append(group)
    if overall is None:  # nobody at all (a grouped query has no rows then)
        overall = _group(spec, None, [0] * n, [None] * n, [None] * n, 0, None, None, [0] * bins)
    return FunnelResult(spec, overall, _order_groups(groups))


def persons(
    database: Database,
    spec: FunnelSpec,
    *,
    step: int,
    outcome: Outcome = "converted",
    breakdown: str | None = _ANY_GROUP,
    limit: int | None = None,
) -> list[str]:
    """The ids of the persons who reached (``converted``) or dropped before a step."""
    sql = compile_persons(
        spec, database.backend.dialect, step=step, outcome=outcome, breakdown=breakdown, limit=limit,
        project_id=database.project_id,
    )
    return [str(row[0]) for row in database.query(sql).rows]
