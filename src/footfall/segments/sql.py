"""The batch evaluator: a condition compiled to SQL that lists the persons in
the segment at a given time, for DuckDB and ClickHouse.

The query reads the ``persons`` table (one row per person: merged persons are
gone, their events carry the surviving person's id) and tests each person
with one boolean expression per condition, mostly ``person_id IN (...)`` over
``events``. Windows are whole hours, as in the stream evaluator
(``footfall.segments.evaluate``), whose semantics this mirrors exactly.

>>> from datetime import UTC, datetime
>>> from footfall.segments.language import parse_condition
>>> condition = parse_condition({"performed": {"event": "login", "count": {"eq": 0}, "in_last": "30d"}})
>>> print(members_sql(condition, "duckdb", datetime(2024, 3, 1, 12, 30, tzinfo=UTC), "shop"))
SELECT person_id FROM persons
WHERE project_id = 'shop'
  AND person_id NOT IN (SELECT person_id FROM events WHERE project_id = 'shop' AND event = 'login' AND timestamp >= TIMESTAMPTZ '2024-01-31 12:00:00.000+00' GROUP BY person_id HAVING NOT (count(*) = 0))
ORDER BY person_id
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from footfall.analytics.conditions import Filter
from footfall.analytics.dialects import Dialect, dialect_named
from footfall.analytics.errors import UnsupportedFeature
from footfall.config import EngagementSettings
from footfall.profiles.state import HOUR_MS, Weights
from footfall.segments.evaluate import window_start
from footfall.segments.language import (
    ENGAGEMENT,
    SYSTEM_EVENTS,
    And,
    Comparison,
    Condition,
    EventSequence,
    FirstSeen,
    InSegment,
    LastPerformed,
    LastSeen,
    Not,
    Or,
    Performed,
    Score,
    SegmentDefinition,
    SegmentSet,
    Sessions,
    Trait,
)
from footfall.store.database import Database
from footfall.store.dialects import final_table

# What differs between the engines here beyond footfall.analytics.dialects.
JOINS: Mapping[str, Mapping[str, str]] = {
    "duckdb": {"asof": "ASOF JOIN", "asof_left": "ASOF LEFT JOIN"},
    "clickhouse": {"asof": "ASOF JOIN", "asof_left": "LEFT ASOF JOIN"},
}

Segments = SegmentSet | Mapping[str, Condition] | Iterable[SegmentDefinition]


@dataclass
class Context:
    dialect: Dialect
    project_id: str
    now_ms: int
    segments: Mapping[str, Condition]
    weights: Weights
    scores_table: str | None
    _names: Iterator[int] = field(default_factory=itertools.count)

    def alias(self, stem: str) -> str:
        """A fresh name for a subquery (names never repeat within a query)."""
        return f"{stem}{next(self._names)}"

    def quote(self, value: str) -> str:
        return self.dialect.quote(value)

    def at(self, milliseconds: int) -> str:
        return self.dialect.timestamp(datetime.fromtimestamp(milliseconds / 1000, UTC))

    @property
    def ms(self) -> str:
        return self.dialect.render("epoch_ms", x="timestamp")

    def events_where(
        self,
        *,
        event: str | None = None,
        where: tuple[Filter, ...] = (),
        since_ms: int | None = None,
    ) -> str:
        clauses = [f"project_id = {self.quote(self.project_id)}"]
        if event is None:
            clauses.append(f"event NOT IN ({', '.join(self.quote(name) for name in SYSTEM_EVENTS)})")
        else:
            clauses.append(f"event = {self.quote(event)}")
        clauses.extend(item.sql(self.dialect) for item in where)
        if since_ms is not None:
            clauses.append(f"timestamp >= {self.at(since_ms)}")
        return " AND ".join(clauses)


def _segment_conditions(segments: Segments | None) -> Mapping[str, Condition]:
    if segments is None:
        return {}
    if isinstance(segments, SegmentSet):
        return segments.conditions()
    if isinstance(segments, Mapping):
        return segments
    return {definition.id: definition.condition for definition in segments}


def members_sql(
    condition: Condition,
    dialect: str | Dialect,
    now: datetime,
    project_id: str = "default",
    *,
    segments: Segments | None = None,
    engagement: EngagementSettings | None = None,
    scores_table: str | None = None,
) -> str:
    """The SQL listing (ordered) the ids of the persons who meet ``condition`` at ``now``.

    ``segments`` resolves ``in_segment`` references; ``engagement`` holds the
    engagement weights (the project's ``[engagement]`` settings; defaults if
    None); ``scores_table`` names a table ``(project_id, person_id, name,
    value)`` of model scores, needed only by model score conditions.
    """
    context = make_context(dialect, project_id, int(now.timestamp() * 1000), segments, engagement, scores_table)
    test = condition_sql(condition, context)
    persons = final_table(context.dialect.name, "persons")
    return (
        f"SELECT person_id FROM {persons}\nWHERE project_id = {context.quote(project_id)}\n  AND {test}\n"
        f"ORDER BY person_id{context.dialect.query_suffix}"
    )


def make_context(
    dialect: str | Dialect,
    project_id: str,
    now_ms: int,
    segments: Segments | None = None,
    engagement: EngagementSettings | None = None,
    scores_table: str | None = None,
) -> Context:
    chosen = dialect_named(dialect) if isinstance(dialect, str) else dialect
    weights = Weights.of(engagement or EngagementSettings())
    return Context(chosen, project_id, now_ms, _segment_conditions(segments), weights, scores_table)


def run_members(
    database: Database,
    condition: Condition,
    now: datetime,
    *,
    segments: Segments | None = None,
    scores_table: str | None = None,
) -> list[str]:
    """The ids of the persons meeting ``condition`` at ``now``, computed by the
    database's engine (with the project's engagement settings)."""
    sql = members_sql(
        condition,
        database.backend.dialect,
        now,
        database.project_id,
        segments=segments,
        engagement=database.config.engagement,
        scores_table=scores_table,
    )
    return [str(person) for person in database.query_arrow(sql)["person_id"].to_pylist()]


def condition_sql(condition: Condition, context: Context) -> str:
    """A boolean expression over a row of ``persons`` (its ``person_id`` and ``traits``)."""
    compiler = _COMPILERS.get(type(condition))
    if compiler is None:
        raise UnsupportedFeature(context.dialect.name, f"condition {type(condition).__name__}")
    return compiler(condition, context)


def _count_test(context: Context, where: str, count: str, test: Comparison) -> str:
    """Persons whose count over ``where`` passes ``test``; persons with no row count 0."""
    if test.holds(0):
        return (
            f"person_id NOT IN (SELECT person_id FROM events WHERE {where}"
            f" GROUP BY person_id HAVING NOT {test.sql(count)})"
        )
    return f"person_id IN (SELECT person_id FROM events WHERE {where} GROUP BY person_id HAVING {test.sql(count)})"


def _performed(condition: Performed, context: Context) -> str:
    since = window_start(context.now_ms, _ms(condition.in_last)) if condition.in_last is not None else None
    where = context.events_where(event=condition.event, where=condition.where, since_ms=since)
    return _count_test(context, where, "count(*)", condition.count)


def _last_performed(condition: LastPerformed, context: Context) -> str:
    start = window_start(context.now_ms, _ms(condition.window))
    if condition.within is not None:
        where = context.events_where(event=condition.event, where=condition.where, since_ms=start)
        return f"person_id IN (SELECT person_id FROM events WHERE {where})"
    where = context.events_where(event=condition.event, where=condition.where)
    return (
        f"person_id IN (SELECT person_id FROM events WHERE {where}"
        f" GROUP BY person_id HAVING max(timestamp) < {context.at(start)})"
    )


def _last_seen(condition: LastSeen, context: Context) -> str:
    start = window_start(context.now_ms, _ms(condition.window))
    seen = f"person_id IN (SELECT person_id FROM events WHERE {context.events_where(since_ms=start)})"
    return seen if condition.within is not None else f"NOT ({seen})"


def _first_seen(condition: FirstSeen, context: Context) -> str:
    start = context.at(window_start(context.now_ms, _ms(condition.window)))
    test = f">= {start}" if condition.within is not None else f"< {start}"
    return (
        f"person_id IN (SELECT person_id FROM events WHERE {context.events_where()}"
        f" GROUP BY person_id HAVING min(timestamp) {test})"
    )


def _sessions(condition: Sessions, context: Context) -> str:
    since = window_start(context.now_ms, _ms(condition.in_last)) if condition.in_last is not None else None
    return _count_test(context, context.events_where(since_ms=since), "count(DISTINCT session_id)", condition.count)


def _sequence(condition: EventSequence, context: Context) -> str:
    """Chains of steps, each strictly after the one before and within its limit.

    Step by step, an event of the next step is reached when the latest reached
    event before it (an ASOF join) is close enough; with ``then_not``, a chain's
    last event counts once its time has passed with no such event in between
    (the first one after it, again an ASOF join, comes too late or never)."""
    since = window_start(context.now_ms, _ms(condition.in_last)) if condition.in_last is not None else None
    joins = JOINS[context.dialect.name]
    ms = context.ms

    def step_events(event: str, where: tuple[Filter, ...]) -> str:
        return (
            f"SELECT person_id, {ms} AS t FROM events"
            f" WHERE {context.events_where(event=event, where=where, since_ms=since)}"
        )

    reached = step_events(condition.steps[0].event, condition.steps[0].where)
    for step in condition.steps[1:]:
        this, before = context.alias("s"), context.alias("r")
        limit = f" WHERE {this}.t - {before}.t <= {_ms(step.within)}" if step.within is not None else ""
        reached = (
            f"SELECT DISTINCT {this}.person_id AS person_id, {this}.t AS t"
            f" FROM ({step_events(step.event, step.where)}) AS {this}"
            f" {joins['asof']} ({reached}) AS {before}"
            f" ON {this}.person_id = {before}.person_id AND {this}.t > {before}.t{limit}"
        )
    absence = condition.then_not
    if absence is None:
        return f"person_id IN (SELECT person_id FROM ({reached}) AS {context.alias('q')})"
    chain, after = context.alias("c"), context.alias("a")
    deadline = f"{chain}.t + {_ms(absence.within)}"
    # No match reads as NULL (DuckDB, ClickHouse with join_use_nulls) or 0
    # (ClickHouse without): either way coalesce(..., 0) is not after the chain.
    first_after = f"coalesce({after}.t, 0)"
    return (
        f"person_id IN (SELECT {chain}.person_id FROM ({reached}) AS {chain}"
        f" {joins['asof_left']} ({step_events(absence.event, absence.where)}) AS {after}"
        f" ON {chain}.person_id = {after}.person_id AND {chain}.t < {after}.t"
        f" WHERE {deadline} <= {context.now_ms}"
        f" AND NOT ({first_after} > {chain}.t AND {first_after} < {deadline}))"
    )


def _trait(condition: Trait, context: Context) -> str:
    return condition.filter.sql(context.dialect)


def _score(condition: Score, context: Context) -> str:
    test = condition.value
    if condition.name == ENGAGEMENT:
        return _engagement(test, context)
    if context.scores_table is None:
        raise UnsupportedFeature(
            context.dialect.name, f"model score {condition.name!r} in SQL (the store has no table of model scores yet)"
        )
    return (
        f"person_id IN (SELECT person_id FROM {context.scores_table}"
        f" WHERE project_id = {context.quote(context.project_id)} AND name = {context.quote(condition.name)}"
        f" AND {test.sql('value')})"
    )


def engagement_hours_sql(context: Context) -> str | None:
    """Per person and hour, the weighted events of the engagement window (as
    live profiles count them); None when no event has a weight."""
    weights = context.weights
    named = {event: weight for event, weight in weights.by_event.items() if weight}
    if not named:
        return None
    now_hour = context.now_ms - context.now_ms % HOUR_MS
    ms = context.ms
    by_event = " ".join(f"WHEN {context.quote(event)} THEN {float(weight)!r}" for event, weight in sorted(named.items()))
    passive = Filter("properties.signal", "eq", "passive").sql(context.dialect)
    weight = f"CASE event {by_event} ELSE 0.0 END * CASE WHEN {passive} THEN {float(weights.passive_weight)!r} ELSE 1.0 END"
    names = ", ".join(context.quote(event) for event in sorted(named))
    where = (
        f"project_id = {context.quote(context.project_id)} AND event IN ({names})"
        f" AND timestamp >= {context.at(now_hour - weights.window_ms)}"
    )
    return (
        f"SELECT person_id, {ms} - {ms} % {HOUR_MS} AS hour, sum({weight}) AS weight"
        f" FROM events WHERE {where} GROUP BY person_id, hour"
    )


def _engagement(test: Comparison, context: Context) -> str:
    """The engagement score as live profiles define it: per hour, the weighted
    events; summed over the hours in the window, each decayed by its age."""
    hourly = engagement_hours_sql(context)
    if hourly is None:
        return "true" if test.holds(0) else "false"
    weights = context.weights
    now_hour = context.now_ms - context.now_ms % HOUR_MS
    decayed = (
        "weight"
        if weights.half_life_ms is None
        else f"weight * pow(0.5, greatest(0, {now_hour} - hour) / {weights.half_life_ms})"
    )
    score = f"sum({decayed})"
    hours = context.alias("h")
    if test.holds(0):
        return f"person_id NOT IN (SELECT person_id FROM ({hourly}) AS {hours} GROUP BY person_id HAVING NOT {test.sql(score)})"
    return f"person_id IN (SELECT person_id FROM ({hourly}) AS {hours} GROUP BY person_id HAVING {test.sql(score)})"


def _in_segment(condition: InSegment, context: Context) -> str:
    try:
        referenced = context.segments[condition.segment]
    except KeyError:
        raise UnsupportedFeature(
            context.dialect.name, f"segment {condition.segment!r} (not among the segments given to the compiler)"
        ) from None
    return f"({condition_sql(referenced, context)})"


def _and(condition: And, context: Context) -> str:
    return "(" + " AND ".join(condition_sql(child, context) for child in condition.conditions) + ")"


def _or(condition: Or, context: Context) -> str:
    return "(" + " OR ".join(condition_sql(child, context) for child in condition.conditions) + ")"


def _not(condition: Not, context: Context) -> str:
    return f"NOT ({condition_sql(condition.condition, context)})"


def _ms(duration: Any) -> int:
    return int(duration.total_seconds() * 1000)


_COMPILERS: dict[type[Any], Callable[[Any, Context], str]] = {
    Performed: _performed,
    LastPerformed: _last_performed,
    LastSeen: _last_seen,
    FirstSeen: _first_seen,
    Sessions: _sessions,
    EventSequence: _sequence,
    Trait: _trait,
    Score: _score,
    InSegment: _in_segment,
    And: _and,
    Or: _or,
    Not: _not,
}
