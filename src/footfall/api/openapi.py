"""The OpenAPI description of the server's HTTP API, served at ``/v1/openapi.json``.

Written by hand next to the decoders it describes (``footfall.analytics.wire``);
the tests check its examples against both.
"""

from __future__ import annotations

from typing import Any

from footfall import __version__

_DURATION = {
    "oneOf": [
        {"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d|w))+$", "examples": ["30m", "1h", "14d"]},
        {"type": "number", "exclusiveMinimum": 0, "description": "seconds"},
    ]
}
_FILTER = {
    "type": "object",
    "required": ["field", "op"],
    "additionalProperties": False,
    "properties": {
        "field": {"type": "string", "description": "properties.KEY (dots for nested keys), traits.KEY, or an event column",
                  "examples": ["properties.price", "traits.plan", "country"]},
        "op": {"enum": ["eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "regex", "is_set", "is_not_set"]},
        "value": {"description": "a string, number or boolean; a list for in / not_in; none for is_set / is_not_set",
                  "oneOf": [{"type": ["string", "number", "boolean"]},
                            {"type": "array", "minItems": 1, "items": {"type": ["string", "number"]}}]},
    },
}
_STEP = {
    "oneOf": [
        {"type": "string", "description": "an event name"},
        {"type": "object", "required": ["event"], "additionalProperties": False,
         "properties": {"event": {"type": "string", "minLength": 1}, "filters": {"type": "array", "items": _FILTER}}},
    ]
}
FUNNEL_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["steps"],
    "additionalProperties": False,
    "properties": {
        "steps": {"type": "array", "minItems": 2, "maxItems": 20, "items": _STEP},
        "window": {**_DURATION, "description": "conversion window from step 1 (default 14d)"},
        "mode": {"enum": ["ordered", "strict", "unordered"], "default": "ordered"},
        "from": {"type": "string", "description": "ISO 8601 date or time; step 1 on or after it"},
        "to": {"type": "string", "description": "ISO 8601 date or time, exclusive"},
        "time_zone": {"type": "string", "default": "UTC", "description": "IANA name; dates are midnights in it"},
        "filters": {"type": "array", "items": _FILTER, "description": "events considered at all, and persons (traits.KEY)"},
        "exclusions": {"type": "array", "items": {
            "type": "object", "required": ["event"], "additionalProperties": False,
            "properties": {"event": {"type": "string"}, "from_step": {"type": "integer", "minimum": 0, "default": 0},
                           "to_step": {"type": "integer", "minimum": 1, "default": 1},
                           "filters": {"type": "array", "items": _FILTER}}}},
        "breakdown": {"type": "string", "description": "properties.KEY or a text column, from each attempt's step-1 event"},
        "step_reference": {"enum": ["total", "previous"], "default": "total"},
    },
    "examples": [{
        "steps": ["view_product", {"event": "add_to_cart", "filters": [{"field": "properties.price", "op": "gt", "value": 10}]},
                  "purchase"],
        "window": "1h", "from": "2026-01-01", "to": "2026-02-01", "breakdown": "properties.utm_source",
    }],
}
_RANGE = {
    "from": {"type": "string", "description": "ISO 8601 date or time, inclusive"},
    "to": {"type": "string", "description": "ISO 8601 date or time, exclusive"},
    "time_zone": {"type": "string", "default": "UTC", "description": "IANA name; dates are midnights in it"},
    "filters": {"type": "array", "items": _FILTER},
}
ENGAGEMENT_REQUEST: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "as_of": {"type": "string", "description": "ISO 8601 time with its zone (default now)"},
        "window": {**_DURATION, "description": "whole hours (default: the project's [engagement] window)"},
        "weights": {"type": "object", "additionalProperties": {"type": "number"}},
        "passive_weight": {"type": "number", "minimum": 0, "maximum": 1},
        "half_life": {"oneOf": [_DURATION, {"type": "null"}], "description": "null: no decay"},
        "filters": {"type": "array", "items": _FILTER},
        "bands": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
        "limit": {"type": "integer", "minimum": 0},
    },
    "examples": [{"window": "30d", "half_life": "14d", "limit": 10}],
}
KPIS_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["from", "to"],
    "additionalProperties": False,
    "properties": {
        **_RANGE,
        "conversion_event": {"type": "string"},
        "features": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "revenue_property": {"type": "string", "default": "revenue"},
        "engaged_after": {**_DURATION, "description": "default 10s"},
    },
    "examples": [{"from": "2026-01-01", "to": "2026-02-01", "conversion_event": "purchase", "features": ["search"]}],
}
TREND_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["from", "to"],
    "additionalProperties": False,
    "properties": {
        **_RANGE,
        "event": {"type": "string", "description": "default: every event"},
        "measure": {"enum": ["count", "persons", "dau", "wau", "mau", "per_person_avg", "per_person_median",
                             "per_person_p90", "sum", "avg"], "default": "count"},
        "interval": {"enum": ["hour", "day", "week", "month"], "default": "day"},
        "property": {"type": "string", "description": "for sum / avg"},
        "breakdown": {"type": "string"},
    },
    "examples": [{"from": "2026-01-01", "to": "2026-02-01", "event": "purchase", "measure": "sum", "property": "revenue",
                  "interval": "week"}],
}
_RETENTION_EVENT = {"oneOf": [
    {"type": "null", "description": "any event"},
    {"type": "string", "description": "an event name"},
    {"type": "object", "additionalProperties": False,
     "properties": {"event": {"type": ["string", "null"]}, "filters": {"type": "array", "items": _FILTER}}},
]}
RETENTION_REQUEST: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        **_RANGE,
        "start_event": {**_RETENTION_EVENT, "description": "what puts a person in a cohort (default: any event)"},
        "return_event": {**_RETENTION_EVENT, "description": "what counts as a return (default: the start event)"},
        "period": {"enum": ["day", "week", "month"], "default": "week"},
        "periods": {"type": "integer", "minimum": 1, "maximum": 400, "default": 8},
        "mode": {"enum": ["first_time", "recurring"], "default": "first_time"},
        "counting": {"enum": ["on", "on_or_after"], "default": "on"},
        "breakdown": {"type": "string", "description": "traits.KEY, a text column, or a property of the cohort event"},
    },
    "examples": [{"start_event": "purchase", "period": "month", "periods": 12, "counting": "on_or_after"}],
}
_CLEANING = {
    "type": "array", "maxItems": 50,
    "description": "applied in order: every match of pattern (RE2, matching at least one character) is replaced by alias",
    "items": {"type": "object", "required": ["pattern", "alias"], "additionalProperties": False,
              "properties": {"pattern": {"type": "string", "minLength": 1}, "alias": {"type": "string", "pattern": "^[^\\\\]*$"}}},
}
PATHS_REQUEST: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        **_RANGE,
        "node_type": {"enum": ["pages", "events"], "default": "pages", "description": "page views' paths, or event names"},
        "start": {"type": "string", "minLength": 1, "description": "paths begin at a session's first such (cleaned) step"},
        "end": {"type": "string", "minLength": 1, "description": "paths stop at the first such step; steps count back from it"},
        "max_steps": {"type": "integer", "minimum": 2, "maximum": 20, "default": 5},
        "edge_limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
        "events": {"type": "array", "items": {"type": "string", "minLength": 1}, "description": "node_type events: only these"},
        "exclusions": {"type": "array", "items": {"type": "string", "minLength": 1}, "description": "steps dropped (raw or cleaned)"},
        "cleaning": _CLEANING,
        "conversion_event": {"type": "string", "minLength": 1, "description": "compare converted and other sessions (not with end)"},
    },
    "examples": [{"start": "/", "max_steps": 4, "cleaning": [{"pattern": "^/product/\\d+$", "alias": "/product/:id"}],
                  "conversion_event": "purchase", "from": "2026-01-01", "to": "2026-02-01"}],
}
HEATMAP_REQUEST: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        **_RANGE,
        "page": {"type": "string", "minLength": 1, "description": "one (cleaned) page; default: the most clicked pages"},
        "page_limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
        "cleaning": _CLEANING,
        "columns": {"type": "integer", "minimum": 1, "maximum": 200, "default": 20, "description": "across the viewport's width"},
        "y_scale": {"enum": ["pixels", "page"], "default": "pixels"},
        "row_height": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 100, "description": "page pixels per row"},
        "rows": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
        "rage_clicks": {"enum": ["detected", "tracked"], "default": "detected"},
        "hotspot_limit": {"type": "integer", "minimum": 0, "maximum": 100, "default": 10},
        "scroll_source": {"enum": ["scroll", "page_leave"], "default": "scroll"},
    },
    "examples": [{"page": "/product/:id", "cleaning": [{"pattern": "^/product/\\d+$", "alias": "/product/:id"}], "columns": 20,
                  "from": "2026-01-01", "to": "2026-02-01"}],
}
SCHEMAS: dict[str, dict[str, Any]] = {
    "RetentionRequest": RETENTION_REQUEST,
    "PathsRequest": PATHS_REQUEST, "HeatmapRequest": HEATMAP_REQUEST,
    "FunnelRequest": FUNNEL_REQUEST, "EngagementRequest": ENGAGEMENT_REQUEST, "KpisRequest": KPIS_REQUEST,
    "TrendRequest": TREND_REQUEST,
}
# Each analysis's name in /v1/query/{name}, and its request's schema name.
QUERIES: dict[str, str] = {
    "funnel": "FunnelRequest", "engagement": "EngagementRequest", "kpis": "KpisRequest",
    "trend": "TrendRequest", "stickiness": "TrendRequest", "lifecycle": "TrendRequest", "retention": "RetentionRequest",
    "paths": "PathsRequest", "heatmap": "HeatmapRequest",
}
QUERY_REQUESTS: dict[str, dict[str, Any]] = {name: SCHEMAS[schema] for name, schema in QUERIES.items()}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"},
        "field": {"type": "string", "description": "the JSON path at fault, for a bad spec"}}}},
}


def _answer(description: str, schema: dict[str, Any] | None = None, media: str = "application/json") -> dict[str, Any]:
    return {"description": description, **({"content": {media: {"schema": schema}}} if schema is not None else {})}


_ERRORS = {"400": _answer("bad input; the body names what is wrong", _ERROR), "401": _answer("no or wrong secret key", _ERROR)}
_SECRET: list[dict[str, list[str]]] = [{"secretKey": []}]
_WRITE: list[dict[str, list[str]]] = [{"writeKey": []}, {"writeKeyHeader": []}]


def document() -> dict[str, Any]:
    collector_body = {"type": "object", "description": "Segment's wire format (see docs/collector.md)"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Footfall", "version": __version__,
                 "description": "Collect behavioural events, read analyses and live profiles."},
        "components": {"securitySchemes": {
            "secretKey": {"type": "http", "scheme": "bearer", "description": "a secret key (footfall keys create --kind secret)"},
            "writeKey": {"type": "http", "scheme": "basic", "description": "a write key as the user name, no password"},
            "writeKeyHeader": {"type": "apiKey", "in": "header", "name": "X-Footfall-Write-Key"},
        }, "schemas": {**SCHEMAS, "Error": _ERROR}},
        "paths": {
            **{f"/v1/{kind}": {"post": {
                "summary": f"collect {'a batch of messages' if kind == 'batch' else f'one {kind} message'}",
                "security": _WRITE, "requestBody": {"content": {"application/json": {"schema": collector_body}}},
                "responses": {"200": _answer("durably in the intake log"), "413": _answer("too large", _ERROR), **_ERRORS},
            }} for kind in ("batch", "track", "identify", "page", "screen", "group", "alias")},
            **{f"/v1/query/{name}": {"post": {
                "summary": f"run the {name} analysis (docs/analytics.md)",
                "security": _SECRET,
                "parameters": [{"name": "explain", "in": "query", "schema": {"type": "boolean"},
                                "description": "answer {\"sql\": ...} instead of running it"}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": f"#/components/schemas/{schema}"}}}},
                "responses": {"200": _answer("{\"result\": ...}; durations in seconds, times ISO 8601", {"type": "object"}),
                              **_ERRORS},
            }} for name, schema in QUERIES.items()},
            "/v1/profiles/{identity}": {"get": {
                "summary": "a person's live profile",
                "security": _SECRET,
                "parameters": [
                    {"name": "identity", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "kind", "in": "query", "schema": {"enum": ["person", "user", "anonymous"], "default": "person"}},
                ],
                "responses": {"200": _answer("the profile (docs/profiles.md)", {"type": "object"}), **_ERRORS,
                              "404": _answer("no such person", _ERROR), "503": _answer("profiles are loading", _ERROR)},
            }},
            **_segment_paths(),
            "/v1/sql": {"post": {
                "summary": "a read-only SQL query",
                "security": _SECRET,
                "requestBody": {"content": {"application/json": {"schema": {
                    "type": "object", "required": ["sql"], "properties": {"sql": {"type": "string"}}}}}},
                "responses": {"200": _answer("columns and rows (or Arrow IPC with Accept: application/vnd.apache.arrow.stream)",
                                             {"type": "object"}), **_ERRORS},
            }},
            "/health": {"get": {"summary": "liveness and the store in use", "responses": {"200": _answer("up")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": _answer("text format", None)}}},
            "/static/footfall.js": {"get": {"summary": "the browser tracker", "responses": {"200": _answer("JavaScript", None)}}},
        },
    }


def _segment_paths() -> dict[str, Any]:
    """``/v1/segments`` and ``/v1/cohorts`` (docs/segments.md)."""
    definition = {"type": "object", "required": ["id", "condition"], "description": "a segment definition (docs/segments.md)",
                  "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"},
                                 "condition": {"type": "object"}}}
    body = {"required": True, "content": {"application/json": {"schema": definition}}}
    segment = [{"name": "segment", "in": "path", "required": True, "schema": {"type": "string"}}]
    cohort = [{"name": "cohort", "in": "path", "required": True, "schema": {"type": "string"}}]
    limit = [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 1000},
              "description": "members listed; 0 for all"}]
    found = {**_ERRORS, "404": _answer("no such segment or cohort", _ERROR)}
    answer = _answer("JSON", {"type": "object"})

    def operation(summary: str, **more: Any) -> dict[str, Any]:
        return {"summary": summary, "security": _SECRET, "responses": {"200": answer, **found}, **more}

    cohort_body = {"type": "object", "required": ["id", "from"], "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "replace": {"type": "boolean"},
        "from": {"type": "object", "description": '{"segment": id} | {"funnel": spec, "step": N, "outcome": '
                 '"converted"|"dropped"} | {"csv": text}'}}}
    return {
        "/v1/segments": {
            "get": operation("the saved segments"),
            "post": operation("save a segment (answers with its preview: size, sample, warnings, overlaps)", requestBody=body,
                              parameters=[{"name": "replace", "in": "query", "schema": {"type": "boolean"}}]),
        },
        "/v1/segments/preview": {"post": operation("size, sample, warnings and overlaps of an unsaved definition",
                                                   requestBody=body)},
        "/v1/segments/overlap": {"get": operation("sizes of the saved segments and the persons each pair shares")},
        "/v1/segments/templates": {"get": operation("the ready-made segment definitions")},
        "/v1/segments/{segment}": {
            "get": operation("a saved segment and its preview", parameters=segment),
            "delete": operation("delete a saved segment (refused while another reads it)", parameters=segment),
        },
        "/v1/segments/{segment}/members": {"get": operation("the segment's members now", parameters=segment + limit)},
        "/v1/cohorts": {
            "get": operation("the saved cohorts"),
            "post": operation("save a cohort from a segment, a funnel step or a CSV text",
                              requestBody={"required": True, "content": {"application/json": {"schema": cohort_body}}}),
        },
        "/v1/cohorts/{cohort}": {"delete": operation("delete a cohort", parameters=cohort)},
        "/v1/cohorts/{cohort}/members": {"get": operation("the cohort's persons", parameters=cohort + limit)},
    }
