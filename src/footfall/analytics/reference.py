"""A small pure-Python funnel, written for clarity, to check the SQL against.

It follows docs/analytics.md step by step, one person and one attempt at a
time, with none of the SQL's machinery (no sequence numbers, joins or
windows). Tests run both on the same stored events and compare.

>>> from datetime import timedelta
>>> from footfall.analytics.funnels import FunnelSpec, FunnelStep
>>> rows = [EventRow("p1", "e1", "view", 0), EventRow("p1", "e2", "buy", 60_000),
...         EventRow("p2", "e3", "view", 0), EventRow("p2", "e4", "buy", 7_200_000)]
>>> spec = FunnelSpec(steps=(FunnelStep("view"), FunnelStep("buy")), conversion_window=timedelta(hours=1))
>>> [step.count for step in funnel(spec, rows).overall.steps]
[2, 1]
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from footfall.analytics.common import epoch_ms
from footfall.analytics.conditions import MISSING, lookup, parse_field
from footfall.analytics.funnels import FunnelResult, FunnelSpec, Outcome, PersonOutcome, summarise


@dataclass(frozen=True)
class EventRow:
    """One stored event, as the reference sees it."""

    person_id: str
    event_id: str
    event: str
    timestamp_ms: int
    properties: Mapping[str, Any] = field(default_factory=dict)
    columns: Mapping[str, Any] = field(default_factory=dict)


def funnel(spec: FunnelSpec, events: Iterable[EventRow], traits: Mapping[str, Mapping[str, Any]] | None = None) -> FunnelResult:
    """The funnel over these events; ``traits`` are the persons' traits (for person filters)."""
    return summarise(spec, outcomes(spec, events, traits))


def funnel_persons(
    spec: FunnelSpec,
    events: Iterable[EventRow],
    traits: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    step: int,
    outcome: Outcome = "converted",
) -> list[str]:
    found = outcomes(spec, events, traits)
    if outcome == "converted":
        return sorted(person for person, o in found.items() if o.reached > step)
    return sorted(person for person, o in found.items() if o.reached == step)


def outcomes(
    spec: FunnelSpec, events: Iterable[EventRow], traits: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, PersonOutcome]:
    """Each person in the funnel and their counted attempt."""
    traits = traits or {}
    window = spec.window_ms
    bounds = spec.range_utc()
    start, end = (epoch_ms(bounds[0]), epoch_ms(bounds[1])) if bounds else (None, None)
    by_person: dict[str, list[EventRow]] = defaultdict(list)
    for row in events:
        if start is not None and end is not None and not start <= row.timestamp_ms <= end + window:
            continue
        person_traits = traits.get(row.person_id)
        if any(f.is_person_filter for f in spec.filters) and person_traits is None:
            continue
        if all(f.matches(row.properties, row.columns, person_traits or {}) for f in spec.filters):
            by_person[row.person_id].append(row)

    result = {}
    for person, rows in by_person.items():
        best = _best_attempt(spec, _in_order(spec, rows), start, end)
        if best is not None:
            result[person] = best
    return result


def _first_step(spec: FunnelSpec, row: EventRow) -> int:
    for k, step in enumerate(spec.steps):
        if step.matches(row.event, row.properties, row.columns):
            return k
    return len(spec.steps)


def _in_order(spec: FunnelSpec, rows: list[EventRow]) -> list[EventRow]:
    """Time, then the first step matched (non-step events last), then event id."""
    return sorted(rows, key=lambda row: (row.timestamp_ms, _first_step(spec, row), row.event_id))


def _best_attempt(spec: FunnelSpec, rows: list[EventRow], start: int | None, end: int | None) -> PersonOutcome | None:
    best: PersonOutcome | None = None
    for position, row in enumerate(rows):
        if start is not None and end is not None and not start <= row.timestamp_ms < end:
            continue
        if spec.mode == "unordered":
            attempt = _unordered_attempt(spec, rows, position)
        else:
            attempt = _ordered_attempt(spec, rows, position)
        # Strictly better only: on a tie the earlier attempt stays.
        if attempt is not None and (best is None or attempt.reached > best.reached):
            best = attempt
    return best


def _matches(step: Any, row: EventRow) -> bool:
    return bool(step.matches(row.event, row.properties, row.columns))


def _ordered_attempt(spec: FunnelSpec, rows: list[EventRow], position: int) -> PersonOutcome | None:
    first = rows[position]
    if not _matches(spec.steps[0], first):
        return None
    limit = first.timestamp_ms + spec.window_ms
    positions = [position]
    for step in spec.steps[1:]:
        previous = positions[-1]
        if spec.mode == "strict":
            candidates = [previous + 1] if previous + 1 < len(rows) else []
        else:
            candidates = list(range(previous + 1, len(rows)))
        found = next((p for p in candidates if _matches(step, rows[p])), None)
        if found is None or rows[found].timestamp_ms > limit:
            break
        positions.append(found)
    reached = len(positions)
    for exclusion in spec.exclusions:
        if reached <= exclusion.from_step:
            continue
        after = positions[exclusion.from_step]
        for p in range(after + 1, len(rows)):
            if not _matches(exclusion, rows[p]):
                continue
            if reached > exclusion.to_step:
                if p < positions[exclusion.to_step]:
                    return None
            elif rows[p].timestamp_ms <= limit:
                return None
    return PersonOutcome(_breakdown(spec, first), reached, tuple(rows[p].timestamp_ms for p in positions))


def _unordered_attempt(spec: FunnelSpec, rows: list[EventRow], position: int) -> PersonOutcome | None:
    first = rows[position]
    if not any(_matches(step, first) for step in spec.steps):
        return None
    low, high = first.timestamp_ms, first.timestamp_ms + spec.window_ms
    done = []
    for step in spec.steps:
        times = [row.timestamp_ms for row in rows if low <= row.timestamp_ms <= high and _matches(step, row)]
        if times:
            done.append(min(times))
    return PersonOutcome(_breakdown(spec, first), len(done), tuple(sorted(done)))


def _breakdown(spec: FunnelSpec, row: EventRow) -> str | None:
    if spec.breakdown is None:
        return None
    target = parse_field(spec.breakdown, "breakdown")
    if target.kind == "column":
        value = row.columns.get(target.column)
        return None if value is None else str(value)
    value = lookup(row.properties, target.path)
    if value is MISSING:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))
