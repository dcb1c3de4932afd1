"""Analyses over the event store: each is a frozen spec, a pure compiler to SQL
for a dialect, and a typed result.

``compile(spec, dialect)`` prints the SQL of any analysis without a database;
``run(database, spec)`` compiles for the database's engine, executes, and
builds the result.
"""

from __future__ import annotations

from typing import Any, overload

from footfall.analytics import engagement, funnels, heatmaps, kpis, paths, retention, trends
from footfall.analytics.common import DateRange
from footfall.analytics.conditions import OPERATORS, Filter
from footfall.analytics.engagement import EngagementResult, EngagementSpec
from footfall.analytics.errors import SpecError, UnsupportedFeature
from footfall.analytics.funnels import Exclusion, FunnelResult, FunnelSpec, FunnelStep
from footfall.analytics.heatmaps import HeatmapResult, HeatmapSpec, heatmap_png
from footfall.analytics.kpis import KpiResult, KpiSpec
from footfall.analytics.paths import CleaningRule, PathResult, PathSpec
from footfall.analytics.retention import (
    ANY_EVENT,
    RetentionEvent,
    RetentionResult,
    RetentionSpec,
    format_table,
)
from footfall.analytics.trends import TrendResult, TrendSpec
from footfall.store.database import Database

__all__ = [
    "ANY_EVENT",
    "OPERATORS",
    "CleaningRule",
    "DateRange",
    "EngagementResult",
    "EngagementSpec",
    "Exclusion",
    "Filter",
    "FunnelResult",
    "FunnelSpec",
    "FunnelStep",
    "HeatmapResult",
    "HeatmapSpec",
    "KpiResult",
    "KpiSpec",
    "PathResult",
    "PathSpec",
    "RetentionEvent",
    "RetentionResult",
    "RetentionSpec",
    "SpecError",
    "TrendResult",
    "TrendSpec",
    "UnsupportedFeature",
    "compile",
    "format_table",
    "heatmap_png",
    "run",
]

# Each spec type and the module that compiles and runs it.
_ANALYSES: dict[type[Any], Any] = {FunnelSpec: funnels, EngagementSpec: engagement, KpiSpec: kpis, TrendSpec: trends, RetentionSpec: retention,
    PathSpec: paths, HeatmapSpec: heatmaps,
}


def _module(spec: object) -> Any:
    try:
        return _ANALYSES[type(spec)]
    except KeyError:
        known = ", ".join(kind.__name__ for kind in _ANALYSES)
        raise SpecError("spec", f"not an analysis spec: {type(spec).__name__} (known: {known})") from None


def compile(spec: FunnelSpec | EngagementSpec | KpiSpec | TrendSpec | RetentionSpec | PathSpec | HeatmapSpec, dialect: str, *, project_id: str = "default") -> str:
    """The SQL of an analysis for a dialect ('duckdb' or 'clickhouse')."""
    sql: str = _module(spec).compile(spec, dialect, project_id=project_id)
    return sql


@overload
def run(database: Database, spec: FunnelSpec) -> FunnelResult: ...
@overload
def run(database: Database, spec: EngagementSpec) -> EngagementResult: ...
@overload
def run(database: Database, spec: KpiSpec) -> KpiResult: ...
@overload
def run(database: Database, spec: TrendSpec) -> TrendResult: ...
@overload
def run(database: Database, spec: RetentionSpec) -> RetentionResult: ...
@overload
def run(database: Database, spec: PathSpec) -> PathResult: ...
@overload
def run(database: Database, spec: HeatmapSpec) -> HeatmapResult: ...
def run(
    database: Database, spec: FunnelSpec | EngagementSpec | KpiSpec | TrendSpec | RetentionSpec | PathSpec | HeatmapSpec
) -> FunnelResult | EngagementResult | KpiResult | TrendResult | RetentionResult | PathResult | HeatmapResult:
    """Run an analysis on a database and return its typed result."""
    result: FunnelResult | EngagementResult | KpiResult | TrendResult | RetentionResult | PathResult | HeatmapResult = (
        _module(spec).run(database, spec)
    )
    return result
