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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from footfall.analytics.common import (
    DateRange,
    as_tuple,
    breakdown_sql,
    check_breakdown,
    check_event_filters,
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

# Sequence numbers and times past any real one: "no such event".
_NONE = 4611686018427387904  # 2**62

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


def _counted_attempts(spec: FunnelSpec, dialect: Dialect, project_id: str) -> list[tuple[str, str]]:
    """CTEs ending in ``best``: one row per person in the funnel, with their
    counted attempt: breakdown, reached (1..n), t0..t{n-1} (epoch ms)."""
    n = len(spec.steps)
    window = spec.window_ms
    bounds = spec.range_utc()
    steps = [_step_condition(dialect, s.event, s.filters) for s in spec.steps]
    exclusions = [_step_condition(dialect, x.event, x.filters) for x in spec.exclusions]
    names = [s.event for s in spec.steps] + [x.event for x in spec.exclusions]
    # Strict funnels look at every event in between; the others only at those named.
    where = events_where(
        dialect,
        project_id,
        since=bounds[0] if bounds else None,
        until=bounds[1] + spec.conversion_window if bounds else None,
        filters=spec.filters,
        events=None if spec.mode == "strict" else names,
    )
    flags = [f"{c} AS s{k}" for k, c in enumerate(steps)] + [f"{c} AS x{j}" for j, c in enumerate(exclusions)]
    ctes = [
        (
            "matched",
            f"SELECT person_id, {dialect.render('epoch_ms', x='timestamp')} AS ts, event_id,"
            f" {breakdown_sql(dialect, check_breakdown(spec.breakdown))} AS breakdown,\n  "
            + ",\n  ".join(flags)
            + f"\nFROM events\nWHERE {where}",
        )
    ]
    rank = "CASE " + " ".join(f"WHEN s{k} THEN {k}" for k in range(n)) + f" ELSE {n} END"
    relevant = "" if spec.mode == "strict" else "\nWHERE " + " OR ".join(
        [f"s{k}" for k in range(n)] + [f"x{j}" for j in range(len(exclusions))]
    )
    ctes.append(
        (
            "ranked",
            # The one order of a person's events: time, then the first step an
            # event matches (ties go the funnel's way), then event id.
            "SELECT *, row_number() OVER (PARTITION BY person_id ORDER BY ts, step_rank, event_id) AS seq\n"
            f"FROM (SELECT *, {rank} AS step_rank FROM matched{relevant}) AS m",
        )
    )
    in_range = ""
    if bounds:
        in_range = f" AND ts >= {epoch_ms(bounds[0])} AND ts < {epoch_ms(bounds[1])}"
    limit = f"t0 + {window}"

    if spec.mode == "unordered":
        frame = f"OVER (PARTITION BY person_id ORDER BY ts RANGE BETWEEN CURRENT ROW AND {window} FOLLOWING)"
        firsts = ",\n  ".join(f"min(CASE WHEN s{k} THEN ts END) {frame} AS first{k}" for k in range(n))
        ctes.append(("windows", f"SELECT person_id, breakdown, seq, ts, step_rank,\n  {firsts}\nFROM ranked"))
        items = ", ".join(f"coalesce(first{k}, CAST({_NONE} AS BIGINT))" for k in range(n))
        completions = ",\n  ".join(
            f"{dialect.render('sorted_at', items=items, position=str(k + 1))} AS t{k}" for k in range(1, n)
        )
        steps_done = " + ".join(f"CASE WHEN first{k} IS NOT NULL THEN 1 ELSE 0 END" for k in range(n))
        ctes.append(
            (
                "attempts",
                f"SELECT person_id, breakdown, seq AS seq0, ts AS t0,\n  {completions},\n  {steps_done} AS reached\n"
                f"FROM windows\nWHERE step_rank < {n}{in_range}",
            )
        )
    else:
        if spec.mode == "ordered":
            ctes.append(("chain0", f"SELECT person_id, breakdown, seq AS seq0, ts AS t0 FROM ranked WHERE s0{in_range}"))
            for k in range(1, n):
                ctes.append(
                    (
                        f"chain{k}",
                        # The earliest step-k event after the step-(k-1) one.
                        f"SELECT a.*, coalesce(b.seq, {_NONE}) AS seq{k}, b.ts AS t{k}\n"
                        f"FROM chain{k - 1} AS a ASOF LEFT JOIN (SELECT person_id, seq, ts FROM ranked WHERE s{k}) AS b\n"
                        f"  ON a.person_id = b.person_id AND a.seq{k - 1} < b.seq",
                    )
                )
            found = [f"(seq{k} < {_NONE} AND t{k} <= {limit})" for k in range(1, n)]
        else:
            over = "OVER (PARTITION BY person_id ORDER BY seq)"
            leads = ",\n  ".join(
                f"lead(CASE WHEN s{k} THEN 1 ELSE 0 END, {k}, 0) {over} AS next{k},"
                f" lead(ts, {k}, 0) {over} AS t{k}"
                for k in range(1, n)
            )
            ctes.append(("following", f"SELECT person_id, breakdown, seq, ts, s0,\n  {leads}\nFROM ranked"))
            seqs = ", ".join(f"seq + {k} AS seq{k}" for k in range(1, n))
            ts_columns = ", ".join(f"t{k}" for k in range(1, n))
            nexts = ", ".join(f"next{k}" for k in range(1, n))
            ctes.append(
                (
                    f"chain{n - 1}",
                    f"SELECT person_id, breakdown, seq AS seq0, ts AS t0, {seqs}, {ts_columns}, {nexts}\n"
                    f"FROM following WHERE s0{in_range}",
                )
            )
            found = [
                "(" + " AND ".join(f"next{j} = 1" for j in range(1, k + 1)) + f" AND t{k} <= {limit})"
                for k in range(1, n)
            ]
        reached = "1 + " + " + ".join(f"CASE WHEN {f} THEN 1 ELSE 0 END" for f in found)
        last = f"chain{n - 1}"
        ctes.append(("reach", f"SELECT *, {reached} AS reached FROM {last}"))
        last = "reach"
        discards = []
        for j, exclusion in enumerate(spec.exclusions):
            ctes.append(
                (
                    f"excluded{j}",
                    # The first excluded event after the attempt's step from_step.
                    f"SELECT a.*, coalesce(x.seq, {_NONE}) AS xseq{j}, x.ts AS xts{j}\n"
                    f"FROM {last} AS a ASOF LEFT JOIN (SELECT person_id, seq, ts FROM ranked WHERE x{j}) AS x\n"
                    f"  ON a.person_id = x.person_id AND a.seq{exclusion.from_step} < x.seq",
                )
            )
            last = f"excluded{j}"
            a, b = exclusion.from_step, exclusion.to_step
            discards.append(
                f"(reached > {a} AND xseq{j} < {_NONE}"
                f" AND CASE WHEN reached > {b} THEN xseq{j} < seq{b} ELSE xts{j} <= {limit} END)"
            )
        keep = f"\nWHERE NOT ({' OR '.join(discards)})" if discards else ""
        columns = ", ".join(f"t{k}" for k in range(1, n))
        ctes.append(("attempts", f"SELECT person_id, breakdown, seq0, t0, {columns}, reached\nFROM {last}{keep}"))

    columns = ", ".join(f"t{k}" for k in range(n))
    ctes.append(
        (
            "best",
            f"SELECT person_id, breakdown, reached, {columns}\n"
            "FROM (SELECT *, row_number() OVER (PARTITION BY person_id ORDER BY reached DESC, seq0) AS pick"
            " FROM attempts) AS a\nWHERE pick = 1",
        )
    )
    return ctes


def _with(ctes: list[tuple[str, str]], body: str, dialect: Dialect) -> str:
    parts = ",\n".join(f"{name} AS (\n{sql}\n)" for name, sql in ctes)
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
    """A SpecError for a step or exclusion event the project has never seen
    (once it has events at all): most likely a typo."""
    known = {
        str(row[0])
        for row in database.query(
            f"SELECT DISTINCT event FROM events WHERE project_id = {database.backend.quote(database.project_id)}"
        ).rows
    }
    if not known:
        return
    named = [(f"steps[{k}].event", s.event) for k, s in enumerate(spec.steps)]
    named += [(f"exclusions[{j}].event", x.event) for j, x in enumerate(spec.exclusions)]
    for field, event in named:
        if event not in known:
            import difflib

            close = difflib.get_close_matches(event, sorted(known), n=3)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise SpecError(field, f"no event named {event!r} in project {database.project_id!r}{hint}")


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
