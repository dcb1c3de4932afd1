"""Engagement score: a weighted sum of each person's recent events, and a band.

The definition is the one live profiles keep (``footfall.profiles.state``):
over the events in the window, each counts its name's weight (0 without one),
times ``passive_weight`` when its ``signal`` property is ``"passive"``, and,
with a half-life, half as much per half-life of age. Windows and ages are in
whole hours: at 14:35 a 30-day window starts at 14:00 thirty days before, and
an event at 13:10 is an hour old. So the score this analysis computes for a
moment equals the one a live profile shows at that moment; the tests hold the
two to it.

Persons with any event in the window are scored (some score 0) and banded by
the scores' quantiles (``bands``, by default 0.4 and 0.8, interpolated):
``high`` at or above the upper cut, ``low`` at or below the lower cut,
``medium`` between. Equal scores share a band.

>>> spec = EngagementSpec(as_of=datetime(2026, 3, 1, 14, 35, tzinfo=UTC), weights={"purchase": 5.0}, half_life=None)
>>> "5.0" in compile(spec, "duckdb") and "pow(" not in compile(spec, "duckdb")
True
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import pyarrow as pa

from footfall.analytics.common import as_tuple, check_names, epoch_ms, may_hold_text
from footfall.analytics.conditions import Filter
from footfall.analytics.dialects import dialect_named
from footfall.analytics.errors import SpecError
from footfall.config import EngagementSettings
from footfall.durations import parse_duration
from footfall.store.database import Database

HOUR_MS = 3_600_000
Band = Literal["high", "medium", "low"]
# What the engines write differently: an event's hour, and settings. ClickHouse
# stores events in person order, so it groups them as they are read
# (aggregation in order) rather than in a hash table of every person: about
# 7% faster on 10M events.
_TEMPLATES = {
    "duckdb": {"hour": "(epoch_ms(timestamp) // 3600000) * 3600000", "settings": ""},
    "clickhouse": {
        "hour": "intDiv(toUnixTimestamp64Milli(timestamp), 3600000) * 3600000",
        "settings": "\nSETTINGS optimize_aggregation_in_order = 1",
    },
}
PROJECT: Literal["project"] = "project"  # a setting taken from the project's [engagement] settings when run


@dataclass(frozen=True)
class EngagementSpec:
    """Who is engaged as of ``as_of`` (None: when run). ``window``, ``weights``,
    ``passive_weight`` and ``half_life`` default to the project's settings
    (``[engagement]`` in footfall.toml) when run, and to Footfall's defaults when
    only compiled; ``half_life=None`` means no decay. ``filters`` keep events
    (properties, columns) and persons (``traits.KEY``)."""

    as_of: datetime | None = None
    window: timedelta | Literal["project"] = PROJECT
    weights: Mapping[str, float] | Literal["project"] = PROJECT
    passive_weight: float | Literal["project"] = PROJECT
    half_life: timedelta | Literal["project"] | None = PROJECT
    filters: tuple[Filter, ...] = ()
    bands: tuple[float, float] = (0.4, 0.8)
    limit: int = 100

    def __post_init__(self) -> None:
        if self.as_of is not None and (not isinstance(self.as_of, datetime) or self.as_of.tzinfo is None):
            raise SpecError("as_of", f"give a time with its zone (e.g. 2026-03-01T12:00:00+00:00); got {self.as_of!r}")
        if self.window != PROJECT and not _whole_hours(self.window):
            raise SpecError("window", f"give whole hours, e.g. timedelta(days=30); got {self.window!r}")
        if self.weights != PROJECT:
            if not isinstance(self.weights, Mapping) or not all(
                isinstance(name, str) and isinstance(weight, int | float) and not isinstance(weight, bool)
                for name, weight in self.weights.items()
            ):
                raise SpecError("weights", f"give event names and numbers, e.g. {{'purchase': 5}}; got {self.weights!r}")
            object.__setattr__(self, "weights", {name: float(weight) for name, weight in self.weights.items()})
        if self.passive_weight != PROJECT and (
            not isinstance(self.passive_weight, int | float) or not 0 <= self.passive_weight <= 1
        ):
            raise SpecError("passive_weight", f"give a number from 0 to 1; got {self.passive_weight!r}")
        if self.half_life not in (PROJECT, None) and not _whole_hours(self.half_life):
            raise SpecError("half_life", f"give whole hours, e.g. timedelta(days=14), or None for no decay; got {self.half_life!r}")
        object.__setattr__(self, "filters", as_tuple(self.filters, "filters", Filter))
        low, high = self.bands if isinstance(self.bands, tuple | list) and len(self.bands) == 2 else (None, None)
        if not (isinstance(low, int | float) and isinstance(high, int | float) and 0 < low < high < 1):
            raise SpecError("bands", f"give two quantiles 0 < low < high < 1, e.g. (0.4, 0.8); got {self.bands!r}")
        object.__setattr__(self, "bands", (float(low), float(high)))
        if not isinstance(self.limit, int) or isinstance(self.limit, bool) or self.limit < 0:
            raise SpecError("limit", f"give how many top persons to list (0 or more); got {self.limit!r}")

    def resolved(self, settings: EngagementSettings) -> EngagementSpec:
        """Project settings in place of every ``"project"``."""
        return replace(
            self,
            window=parse_duration(settings.window) if self.window == PROJECT else self.window,
            weights=dict(settings.weights) if self.weights == PROJECT else self.weights,
            passive_weight=settings.passive_weight if self.passive_weight == PROJECT else self.passive_weight,
            half_life=(parse_duration(settings.recency_half_life) if settings.recency_half_life else None)
            if self.half_life == PROJECT else self.half_life,
        )


def _whole_hours(value: object) -> bool:
    return isinstance(value, timedelta) and value > timedelta(0) and not value % timedelta(hours=1)


@dataclass(frozen=True)
class PersonEngagement:
    person_id: str
    score: float
    band: Band
    events: int  # events in the window, weighted or not


@dataclass(frozen=True)
class EngagementResult:
    spec: EngagementSpec  # resolved: no "project" left
    as_of: datetime
    persons: int  # persons with an event in the window
    low_cut: float  # scores at or below: low
    high_cut: float  # scores at or above: high
    bands: Mapping[Band, int] = field(default_factory=dict)
    mean: float = 0.0
    median: float = 0.0
    top: tuple[PersonEngagement, ...] = ()  # the ``limit`` highest scores, ties by person id


def compile(spec: EngagementSpec, dialect: str, *, project_id: str = "default", as_of: datetime | None = None) -> str:
    """Per person with an event in the window: ``person_id, score, events``."""
    chosen = dialect_named(dialect)
    resolved = spec.resolved(EngagementSettings())
    moment = as_of or resolved.as_of or datetime.now(UTC)
    assert isinstance(resolved.window, timedelta)
    assert isinstance(resolved.weights, Mapping)
    assert isinstance(resolved.passive_weight, float | int)
    now_hour = epoch_ms(moment) // HOUR_MS * HOUR_MS
    since = now_hour - resolved.window // timedelta(milliseconds=1)
    templates = _TEMPLATES[chosen.name]
    weighted = {name: weight for name, weight in sorted(resolved.weights.items()) if weight}
    cases = " ".join(f"WHEN {chosen.quote(name)} THEN {_double(weight)}" for name, weight in weighted.items())
    weight = f"(CASE event {cases} ELSE 0e0 END)" if cases else "0e0"
    # JSON is the costly part of the scan, so an event's ``signal`` property
    # is read only when its weight counts (its CASE branch), and only when its
    # text could hold "passive": it has the word, or an escape that could spell
    # it. Only a JSON string "passive" reads as the text 'passive' (other kinds
    # read as their JSON text, or as '' on ClickHouse), so no test of its kind.
    signal = chosen.render("json_string", doc="properties", path=chosen.json_path(("signal",)))
    passive = f"({may_hold_text(chosen, 'passive')}) AND {signal} = 'passive'"
    decay = ""
    if isinstance(resolved.half_life, timedelta):
        half_life_ms = resolved.half_life // timedelta(milliseconds=1)
        decay = f" * pow(0.5, greatest(0, {now_hour} - hour) / {half_life_ms}.0)"
    score = (
        f"CASE WHEN weight = 0 THEN 0e0 WHEN {passive} THEN weight * {_double(resolved.passive_weight)}{decay}"
        f" ELSE weight{decay} END"
    )
    clauses = [f"project_id = {chosen.quote(project_id)}", f"timestamp >= {chosen.timestamp(_utc(since))}"]
    clauses += [condition.sql(chosen) for condition in spec.filters if not condition.is_person_filter]
    person_filters = [condition.sql(chosen) for condition in spec.filters if condition.is_person_filter]
    if person_filters:
        persons = "persons FINAL" if chosen.name == "clickhouse" else "persons"
        clauses.append(f"person_id IN (SELECT person_id FROM {persons} WHERE project_id = {chosen.quote(project_id)}"
                       f" AND {' AND '.join(person_filters)})")
    where = "\n  AND ".join(clauses)
    return (
        f"SELECT person_id, sum({score}) AS score, count(*) AS events\n"
        f"FROM (SELECT person_id, properties, {weight} AS weight, {templates['hour']} AS hour\nFROM events\nWHERE {where}) AS windowed\n"
        f"GROUP BY person_id{templates['settings']}"
    )


def _double(number: float) -> str:
    """A DOUBLE literal: DuckDB reads ``3.0`` as a DECIMAL, whose sums are several times slower."""
    return f"CAST({float(number)!r} AS DOUBLE)"


def _utc(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def scores(database: Database, spec: EngagementSpec) -> dict[str, tuple[float, int]]:
    """Every scored person's (score, events in the window)."""
    persons, scored, events = _columns(database, spec)
    return {person: (score, count) for person, score, count in zip(persons, scored, events, strict=True)}


def _columns(database: Database, spec: EngagementSpec) -> tuple[list[str], list[float], list[int]]:
    """Person ids, scores and events in the window, as columns: through Arrow,
    which is much faster than a Python tuple per person."""
    resolved = spec.resolved(database.config.engagement)
    sql = compile(resolved, database.backend.dialect, project_id=database.project_id, as_of=resolved.as_of)
    table = database.query_arrow(sql)
    return (
        table.column("person_id").cast(pa.string()).to_pylist(),
        table.column("score").cast(pa.float64()).to_pylist(),
        table.column("events").cast(pa.int64()).to_pylist(),
    )


def quantile(values: list[float], q: float) -> float:
    """Interpolated quantile of sorted values (the usual 'linear' method).

    >>> quantile([1.0, 2.0, 3.0, 4.0], 0.5), quantile([0.0, 10.0], 0.8)
    (2.5, 8.0)
    """
    position = q * (len(values) - 1)
    below = int(position)
    above = min(below + 1, len(values) - 1)
    return values[below] + (values[above] - values[below]) * (position - below)


def band_of(score: float, low_cut: float, high_cut: float) -> Band:
    return "high" if score >= high_cut else "low" if score <= low_cut else "medium"


def summarise(
    spec: EngagementSpec, as_of: datetime, persons: Sequence[str], scored: Sequence[float], events: Sequence[int]
) -> EngagementResult:
    """Cuts, bands and top persons from per-person columns (same order).
    Bands are counted on the sorted scores, which gives what ``band_of``
    gives score by score without a Python call per person."""
    if not persons:
        return EngagementResult(spec, as_of, 0, 0.0, 0.0, {"high": 0, "medium": 0, "low": 0})
    values = _sorted_rounded(scored)
    low_cut, high_cut = (quantile(values, q) for q in spec.bands)
    high_from = bisect.bisect_left(values, high_cut)  # the first score at or above the high cut
    low_until = min(bisect.bisect_right(values, low_cut), high_from)  # past the last low one
    counts: dict[Band, int] = {"high": len(values) - high_from, "medium": high_from - low_until, "low": low_until}
    return EngagementResult(
        spec, as_of, len(persons), low_cut, high_cut, counts,
        mean=statistics.fmean(values), median=statistics.median(values),
        top=_top(spec, persons, scored, events, low_cut, high_cut),
    )


def _sorted_rounded(scores: Sequence[float]) -> list[float]:
    """``sorted(round(score, 9) for score in scores)``, faster. Python's
    round() (numpy's can differ in the last bit) is slow, so it is left out
    where it changes nothing: a whole number of 512ths below 2**53 / 10**9 has
    at most 9 decimals, so it is its own rounding; the scores are such numbers
    unless a weight or the decay makes them otherwise.

    >>> _sorted_rounded([0.5, 1 / 3, 2.0])
    [0.333333333, 0.5, 2.0]
    """
    array = np.asarray(scores, dtype=np.float64)
    small = np.abs(array) < 2**53 / 10**9
    scaled = np.where(small, array, 0.0) * 512  # exact: a power of two
    others = np.flatnonzero(~small | (np.floor(scaled) != scaled))
    if len(others):
        array = array.copy()
        array[others] = [round(score, 9) for score in array[others].tolist()]
    ordered: list[float] = np.sort(array, kind="stable").tolist()  # (stable: as sorted() orders 0.0 and -0.0)
    return ordered


def _top(
    spec: EngagementSpec, persons: Sequence[str], scored: Sequence[float], events: Sequence[int],
    low_cut: float, high_cut: float,
) -> tuple[PersonEngagement, ...]:
    """The ``limit`` highest scores, ties by person id: sorted among the scores
    at or above the ``limit``-th highest only."""
    if spec.limit == 0:
        return ()
    array = np.asarray(scored, dtype=np.float64)
    threshold = np.partition(array, len(array) - spec.limit)[len(array) - spec.limit] if spec.limit < len(array) else -np.inf
    chosen = sorted(np.flatnonzero(array >= threshold).tolist(), key=lambda i: (-scored[i], persons[i]))[: spec.limit]
    return tuple(
        PersonEngagement(persons[i], scored[i], band_of(round(scored[i], 9), low_cut, high_cut), events[i]) for i in chosen
    )


def run(database: Database, spec: EngagementSpec) -> EngagementResult:
    if spec.filters:  # (check_names would query the known event names all the same)
        check_names(database, filters=[(f"filters[{i}]", f) for i, f in enumerate(spec.filters)])
    resolved = spec.resolved(database.config.engagement)
    as_of = resolved.as_of or datetime.now(UTC)
    resolved = replace(resolved, as_of=as_of)
    return summarise(resolved, as_of, *_columns(database, resolved))
