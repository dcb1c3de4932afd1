"""Analyses as JSON: specs from JSON documents, results to JSON values.

The HTTP query API and the CLI's ``--spec`` file take the same documents. A
funnel:

>>> spec = spec_from_json("funnel", {
...     "steps": ["view_product", {"event": "add_to_cart", "filters": [{"field": "properties.price", "op": "gt", "value": 10}]}, "purchase"],
...     "window": "1h", "from": "2026-01-01", "to": "2026-02-01", "breakdown": "properties.utm_source"})
>>> spec.steps[1].filters[0].op, spec.conversion_window, spec.date_range.end
('gt', datetime.timedelta(seconds=3600), datetime.date(2026, 2, 1))

Mistakes name the JSON path at fault:

>>> spec_from_json("funnel", {"steps": ["a", {"event": "b", "filters": [{"field": "properties.x", "op": "like"}]}]})
Traceback (most recent call last):
...
footfall.analytics.errors.SpecError: steps[1].filters[0].op: unknown operator 'like'; use one of eq, neq, in, not_in, gt, gte, lt, lte, contains, regex, is_set, is_not_set

In results, durations are seconds and times are ISO 8601 text.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

from footfall.analytics import heatmaps, paths, trends
from footfall.analytics.common import DateRange
from footfall.analytics.conditions import Filter
from footfall.analytics.engagement import EngagementSpec
from footfall.analytics.errors import SpecError
from footfall.analytics.funnels import Exclusion, FunnelSpec, FunnelStep
from footfall.analytics.kpis import KpiSpec
from footfall.analytics.retention import ANY_EVENT, RetentionEvent, RetentionSpec
from footfall.analytics.trends import TrendSpec
from footfall.durations import parse_duration
from footfall.store.database import Database


def _object(value: object, at: str, known: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(at or "$", f"expected a JSON object; got {value!r}")
    unknown = sorted(set(value) - known)
    if unknown:
        raise SpecError(f"{at}.{unknown[0]}" if at else unknown[0], f"unknown key; known keys: {', '.join(sorted(known))}")
    return value


def _list(value: object, at: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError(at, f"expected a JSON list; got {value!r}")
    return value


def _within(at: str, build: Callable[..., Any], *args: Any) -> Any:
    """Build a part; its own SpecError (``Filter.op``) gets the JSON path (``filters[0].op``)."""
    try:
        return build(*args)
    except SpecError as error:
        inner = error.field.split(".", 1)[1] if "." in error.field and error.field[:1].isupper() else error.field
        raise SpecError(f"{at}.{inner}", error.problem) from None


def _filters(value: object, at: str) -> tuple[Filter, ...]:
    filters = []
    for index, item in enumerate(_list(value, at)):
        where = f"{at}[{index}]"
        body = _object(item, where, {"field", "op", "value"})
        filters.append(_within(where, Filter, body.get("field"), body.get("op"), body.get("value")))
    return tuple(filters)


def _duration(value: object, at: str) -> timedelta:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return timedelta(seconds=value)
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError as error:
            raise SpecError(at, f"{error}") from None
    raise SpecError(at, f"give a duration such as '30m', '1h' or '14d' (or seconds); got {value!r}")


def _moment(value: object, at: str) -> date | datetime:
    if not isinstance(value, str):
        raise SpecError(at, f"give an ISO 8601 date or time, e.g. '2026-01-01'; got {value!r}")
    try:
        return date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
    except ValueError:
        raise SpecError(at, f"bad date {value!r}: use ISO 8601, e.g. '2026-01-01' or '2026-01-01T12:00:00+01:00'") from None


def _date_range(body: Mapping[str, Any]) -> DateRange | None:
    if "from" not in body and "to" not in body:
        return None
    if "from" not in body or "to" not in body:
        raise SpecError("from" if "from" not in body else "to", "give both 'from' and 'to' (to is exclusive)")
    start, end = _moment(body["from"], "from"), _moment(body["to"], "to")
    date_range: DateRange = _within("to", DateRange, start, end)
    return date_range


def _funnel(document: object) -> FunnelSpec:
    body = _object(
        document, "",
        {"steps", "window", "mode", "from", "to", "time_zone", "filters", "exclusions", "breakdown", "step_reference"},
    )
    steps = []
    for index, item in enumerate(_list(body.get("steps"), "steps")):
        at = f"steps[{index}]"
        if isinstance(item, str):
            steps.append(_within(at, FunnelStep, item))
            continue
        step = _object(item, at, {"event", "filters"})
        filters = _filters(step.get("filters"), f"{at}.filters")
        steps.append(_within(at, FunnelStep, step.get("event"), filters))
    exclusions = []
    for index, item in enumerate(_list(body.get("exclusions"), "exclusions")):
        at = f"exclusions[{index}]"
        part = _object(item, at, {"event", "from_step", "to_step", "filters"})
        filters = _filters(part.get("filters"), f"{at}.filters")
        exclusions.append(_within(at, Exclusion, part.get("event"), part.get("from_step", 0), part.get("to_step", 1), filters))
    options: dict[str, Any] = {}
    if "window" in body:
        options["conversion_window"] = _duration(body["window"], "window")
    for key in ("mode", "time_zone", "breakdown", "step_reference"):
        if key in body:
            options[key] = body[key]
    spec: FunnelSpec = _within_spec(lambda: FunnelSpec(
        steps=tuple(steps), date_range=_date_range(body), filters=_filters(body.get("filters"), "filters"),
        exclusions=tuple(exclusions), **options,
    ))
    return spec


def _within_spec(build: Callable[[], Any]) -> Any:
    try:
        return build()
    except SpecError as error:
        if error.field == "conversion_window":
            raise SpecError("window", error.problem) from None
        raise


def _engagement(document: object) -> EngagementSpec:
    body = _object(document, "", {"as_of", "window", "weights", "passive_weight", "half_life", "filters", "bands", "limit"})
    options: dict[str, Any] = {"filters": _filters(body.get("filters"), "filters")}
    if "as_of" in body:
        moment = _moment(body["as_of"], "as_of")
        if not isinstance(moment, datetime):
            raise SpecError("as_of", "give a time with its zone, e.g. '2026-03-01T12:00:00+00:00'")
        options["as_of"] = moment
    if "window" in body:
        options["window"] = _duration(body["window"], "window")
    if "half_life" in body:
        options["half_life"] = None if body["half_life"] is None else _duration(body["half_life"], "half_life")
    if "bands" in body:
        bands = _list(body["bands"], "bands")
        options["bands"] = tuple(bands)
    for key in ("weights", "passive_weight", "limit"):
        if key in body:
            options[key] = body[key]
    spec: EngagementSpec = EngagementSpec(**options)
    return spec


def _kpis(document: object) -> KpiSpec:
    body = _object(document, "", {"from", "to", "time_zone", "filters", "conversion_event", "features", "revenue_property",
                                  "engaged_after"})
    date_range = _date_range(body)
    if date_range is None:
        raise SpecError("from", "give the range: 'from' and 'to' (to is exclusive)")
    options: dict[str, Any] = {"filters": _filters(body.get("filters"), "filters")}
    if "features" in body:
        options["features"] = tuple(_list(body["features"], "features"))
    if "engaged_after" in body:
        options["engaged_after"] = _duration(body["engaged_after"], "engaged_after")
    for key in ("time_zone", "conversion_event", "revenue_property"):
        if key in body:
            options[key] = body[key]
    spec: KpiSpec = KpiSpec(date_range, **options)
    return spec


def _trend(document: object) -> TrendSpec:
    body = _object(document, "", {"from", "to", "event", "measure", "interval", "property", "time_zone", "filters", "breakdown"})
    date_range = _date_range(body)
    if date_range is None:
        raise SpecError("from", "give the range: 'from' and 'to' (to is exclusive)")
    options: dict[str, Any] = {"filters": _filters(body.get("filters"), "filters")}
    for key in ("event", "measure", "interval", "property", "time_zone", "breakdown"):
        if key in body:
            options[key] = body[key]
    spec: TrendSpec = TrendSpec(date_range, **options)
    return spec


def _retention_event(value: object, at: str) -> RetentionEvent:
    if value is None:
        return ANY_EVENT
    if isinstance(value, str):
        event: RetentionEvent = _within(at, RetentionEvent, value)
        return event
    part = _object(value, at, {"event", "filters"})
    event = _within(at, RetentionEvent, part.get("event"), _filters(part.get("filters"), f"{at}.filters"))
    return event


def _retention(document: object) -> RetentionSpec:
    body = _object(document, "", {"start_event", "return_event", "period", "periods", "mode", "counting", "from", "to",
                                  "time_zone", "filters", "breakdown"})
    options: dict[str, Any] = {"filters": _filters(body.get("filters"), "filters"), "date_range": _date_range(body),
                               "start_event": _retention_event(body.get("start_event"), "start_event")}
    if body.get("return_event") is not None:
        options["return_event"] = _retention_event(body["return_event"], "return_event")
    for key in ("period", "periods", "mode", "counting", "time_zone", "breakdown"):
        if key in body:
            options[key] = body[key]
    spec: RetentionSpec = RetentionSpec(**options)
    return spec


# Each analysis's name in the API and the CLI, and how its spec is read.
DECODERS: dict[str, Callable[[object], Any]] = {
    "funnel": _funnel, "engagement": _engagement, "kpis": _kpis,
    "trend": _trend, "stickiness": _trend, "lifecycle": _trend, "retention": _retention,
    "paths": paths.from_json, "heatmap": heatmaps.from_json,
}
# Analyses that share another's spec but answer differently (the rest: ``analytics.run``).
RUNNERS: dict[str, Callable[[Database, Any], Any]] = {"stickiness": trends.stickiness, "lifecycle": trends.lifecycle}


def spec_from_json(analysis: str, document: object) -> Any:
    decoder = DECODERS.get(analysis)
    if decoder is None:
        raise SpecError("analysis", f"unknown analysis {analysis!r}; known: {', '.join(sorted(DECODERS))}")
    return decoder(document)


def to_json(value: object) -> Any:
    """A result (or any part) as JSON values: durations in seconds, times as ISO text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: to_json(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [to_json(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
