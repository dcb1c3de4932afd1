"""A small pure-Python retention table, written for clarity, to check the SQL against.

It follows docs/retention.md one person at a time, with none of the SQL's
machinery (no period indexes in the engine, no joins or windows): sort the
person's events, find the anchors, look at their returns. Tests run it and
the engine on the same stored events and compare.

>>> from footfall.analytics.reference import EventRow
>>> from footfall.analytics.retention import RetentionEvent, RetentionSpec
>>> day = 86_400_000
>>> rows = [EventRow("p1", "e1", "signup", 0), EventRow("p1", "e2", "buy", 2 * day),
...         EventRow("p2", "e3", "signup", 1 * day)]
>>> spec = RetentionSpec(start_event=RetentionEvent("signup"), return_event=RetentionEvent("buy"),
...                      period="day", periods=2)
>>> [(row.start.isoformat(), row.size, [cell.returned for cell in row.cells]) for row in retention(spec, rows).rows]
[('1970-01-01', 1, [0, 0, 1]), ('1970-01-02', 1, [0, 0, 0])]
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from footfall.analytics.common import epoch_ms
from footfall.analytics.conditions import MISSING, lookup, parse_field
from footfall.analytics.reference import EventRow
from footfall.analytics.retention import (
    CohortCounts,
    RetentionResult,
    RetentionSpec,
    local_period,
    summarise,
)


@dataclass(frozen=True)
class Entry:
    """A person in one cohort: the period index, the anchor event's time, the breakdown value."""

    person_id: str
    cohort: int
    anchor_ms: int
    group: str | None


def retention(
    spec: RetentionSpec, events: Iterable[EventRow], traits: Mapping[str, Mapping[str, Any]] | None = None
) -> RetentionResult:
    """The table over these events (all of the project's: the latest one ends
    observation); ``traits`` are the persons' traits."""
    rows = list(events)
    latest = max((row.timestamp_ms for row in rows), default=None)
    counts: dict[tuple[str | None, int], list[int]] = {}
    sizes: dict[tuple[str | None, int], int] = defaultdict(int)
    for entry, periods in returns(spec, rows, traits).items():
        key = (entry.group, entry.cohort)
        sizes[key] += 1
        tally = counts.setdefault(key, [0] * (spec.periods + 1))
        for n in range(spec.periods + 1):
            if n in periods if spec.counting == "on" else any(p >= n for p in periods):
                tally[n] += 1
    cohorts = [
        CohortCounts(group, cohort, size, tuple(counts[(group, cohort)])) for (group, cohort), size in sizes.items()
    ]
    return summarise(spec, cohorts, latest)


def returns(
    spec: RetentionSpec, events: Iterable[EventRow], traits: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[Entry, set[int]]:
    """Each cohort entry and the periods (0, 1, ... after its own) in which the person returned."""
    traits = traits or {}
    bounds = spec.range_utc()
    start, end = (epoch_ms(bounds[0]), epoch_ms(bounds[1])) if bounds else (None, None)
    person_filters = any(f.is_person_filter for f in spec.filters)
    by_person: dict[str, list[EventRow]] = defaultdict(list)
    for row in events:
        person_traits = traits.get(row.person_id)
        if person_filters and person_traits is None:
            continue
        if end is not None and row.timestamp_ms >= end:
            continue
        if all(f.matches(row.properties, row.columns, person_traits or {}) for f in spec.filters):
            by_person[row.person_id].append(row)

    def period(row: EventRow) -> int:
        return local_period(row.timestamp_ms, spec.period, spec.time_zone)

    found: dict[Entry, set[int]] = {}
    for person, rows in by_person.items():
        rows.sort(key=lambda row: (row.timestamp_ms, row.event_id))
        starts = [row for row in rows if _matches(spec.start_event, row)]
        if spec.mode == "first_time":
            # the first ever; in the table if it falls in the range
            anchors = [row for row in starts[:1] if start is None or row.timestamp_ms >= start]
        else:
            # the first in the range of each period
            first_of_period: dict[int, EventRow] = {}
            for row in starts:
                if start is None or row.timestamp_ms >= start:
                    first_of_period.setdefault(period(row), row)
            anchors = list(first_of_period.values())
        returning = [row for row in rows if _matches(spec.returning, row)]
        for anchor in anchors:
            cohort = period(anchor)
            entry = Entry(person, cohort, anchor.timestamp_ms, _group(spec, anchor, traits.get(person)))
            found[entry] = {
                period(row) - cohort
                for row in returning
                if period(row) > cohort or (period(row) == cohort and row.timestamp_ms >= anchor.timestamp_ms)
            }
    return found


def _matches(matcher: Any, row: EventRow) -> bool:
    return bool(matcher.matches(row.event, dict(row.properties), dict(row.columns)))


def _group(spec: RetentionSpec, anchor: EventRow, traits: Mapping[str, Any] | None) -> str | None:
    if spec.breakdown is None:
        return None
    target = parse_field(spec.breakdown, "breakdown")
    if target.kind == "column":
        value = anchor.columns.get(target.column)
        return None if value is None else str(value)
    document = (traits or {}) if target.kind == "person_trait" else anchor.properties
    found = lookup(document, target.path)
    if found is MISSING:
        return None
    if isinstance(found, str):
        return found
    return json.dumps(found, separators=(",", ":"))
