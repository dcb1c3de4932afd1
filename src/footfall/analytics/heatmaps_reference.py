"""A small pure-Python heatmap, written for clarity, to check the SQL against.

It follows docs/paths-heatmaps.md one event at a time: clean each event's
page, pick the pages, place each click in its cell, look back from each
click for the burst that makes it a rage click, and count scroll depths.
Tests run it and the engine on the same stored events and compare.

>>> from footfall.analytics.heatmaps import HeatmapSpec
>>> click = {"session_id": "s", "path": "/", "x": 700.0, "y": 10.0, "viewport_width": 1000}
>>> rows = [EventRow("p1", "e1", "click", 0, columns=click), EventRow("p1", "e2", "page_view", 0, columns={"path": "/"})]
>>> heatmaps(HeatmapSpec(columns=2), rows).pages[0].grid
((0, 1),)
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from footfall.analytics.common import epoch_ms
from footfall.analytics.conditions import lookup, value_kind
from footfall.analytics.heatmaps import (
    CLICK,
    MILESTONES,
    PAGE_LEAVE,
    PAGE_VIEW,
    RAGE_CLICK,
    RAGE_CLICKS,
    RAGE_MS,
    RAGE_PX,
    SCROLL,
    HeatmapResult,
    HeatmapSpec,
    PageCounts,
    assemble,
    rank_pages,
)
from footfall.analytics.reference import EventRow


def heatmaps(
    spec: HeatmapSpec, events: Iterable[EventRow], traits: Mapping[str, Mapping[str, Any]] | None = None
) -> HeatmapResult:
    """The heatmaps over these events; ``traits`` are the persons' traits (for person filters)."""
    traits = traits or {}
    kept = [(row, spec.clean(str(row.columns["path"]))) for row in _considered(spec, events, traits)]

    clicks: Counter[str] = Counter(page for row, page in kept if row.event == CLICK)
    views: Counter[str] = Counter(page for row, page in kept if row.event == PAGE_VIEW)
    if spec.page is not None:
        shown = [spec.page] if any(page == spec.page for _, page in kept) else []
    else:
        shown = rank_pages(((page, clicks[page], views[page]) for page in {page for _, page in kept}), spec.page_limit)

    located = [(row, page, _cell(spec, row)) for row, page in kept if page in shown and _has_point(row)
               and row.event in (CLICK, RAGE_CLICK)]
    cells: Counter[tuple[str, int, int]] = Counter()
    placed: Counter[str] = Counter()
    below: Counter[str] = Counter()
    for row, page, cell in located:
        if row.event != CLICK or cell is None:
            continue
        if cell[1] < spec.rows:
            cells[page, *cell] += 1
            placed[page] += 1
        else:
            below[page] += 1

    rage: defaultdict[tuple[str, int, int], list[tuple[str, str]]] = defaultdict(list)
    for row, page, cell in _rage_clicks(spec, located):
        if cell is not None and cell[1] < spec.rows:
            rage[page, *cell].append((row.person_id, str(row.columns["session_id"])))

    counts = [
        PageCounts(page, clicks[page], views[page], placed[page], below[page], *_scroll(spec, [r for r, p in kept if p == page]))
        for page in shown
    ]
    return assemble(spec, counts, cells, {key: (len(found), len(set(found))) for key, found in rage.items()})


def _considered(spec: HeatmapSpec, events: Iterable[EventRow], traits: Mapping[str, Mapping[str, Any]]) -> list[EventRow]:
    """The events of the kinds a heatmap reads, with a path, in the range, passing the filters."""
    bounds = spec.range_utc()
    start, end = (epoch_ms(bounds[0]), epoch_ms(bounds[1])) if bounds else (None, None)
    kinds = {CLICK, PAGE_VIEW, SCROLL if spec.scroll_source == "scroll" else PAGE_LEAVE}
    if spec.rage_clicks == "tracked":
        kinds.add(RAGE_CLICK)
    person_filters = any(f.is_person_filter for f in spec.filters)
    chosen = []
    for row in events:
        if row.event not in kinds or row.columns.get("path") is None:
            continue
        if start is not None and end is not None and not start <= row.timestamp_ms < end:
            continue
        if person_filters and row.person_id not in traits:
            continue
        if all(f.matches(row.properties, row.columns, traits.get(row.person_id, {})) for f in spec.filters):
            chosen.append(row)
    return chosen


def _number(properties: Mapping[str, Any], key: str) -> float | None:
    value = lookup(properties, (key,))
    return float(value) if value_kind(value) == "number" else None  # type: ignore[arg-type]


def _has_point(row: EventRow) -> bool:
    return row.columns.get("x") is not None and row.columns.get("y") is not None


def _cell(spec: HeatmapSpec, row: EventRow) -> tuple[int, int] | None:
    """The click's (column, row), or None when it cannot be placed."""
    width = row.columns.get("viewport_width")
    if width is None or width <= 0:
        return None
    page_height = _number(row.properties, "page_height")
    if spec.y_scale == "page" and (page_height is None or page_height <= 0):
        return None
    return spec.cell(float(row.columns["x"]), float(row.columns["y"]), float(width), page_height)


Located = tuple[EventRow, str, tuple[int, int] | None]


def _rage_clicks(spec: HeatmapSpec, located: list[Located]) -> list[Located]:
    if spec.rage_clicks == "tracked":
        return [entry for entry in located if entry[0].event == RAGE_CLICK]
    by_visit: defaultdict[tuple[str, str, str], list[Located]] = defaultdict(list)
    for entry in located:
        row, page, _ = entry
        if row.event == CLICK:
            by_visit[row.person_id, str(row.columns["session_id"]), page].append(entry)
    found = []
    for clicks in by_visit.values():
        clicks.sort(key=lambda entry: (entry[0].timestamp_ms, entry[0].event_id))
        for position, entry in enumerate(clicks):
            row = entry[0]
            near = [
                earlier
                for earlier, _, _ in clicks[:position]
                if row.timestamp_ms - earlier.timestamp_ms <= RAGE_MS and _distance_squared(row, earlier) <= RAGE_PX * RAGE_PX
            ]
            if len(near) >= RAGE_CLICKS - 1:
                found.append(entry)
    return found


def _distance_squared(one: EventRow, other: EventRow) -> float:
    dx = float(other.columns["x"]) - float(one.columns["x"])
    dy = float(other.columns["y"]) - float(one.columns["y"])
    return dx * dx + dy * dy


def _scroll(spec: HeatmapSpec, rows: list[EventRow]) -> tuple[int, tuple[int, ...]]:
    """The page views scroll depths are shares of, and those reaching each milestone."""
    if spec.scroll_source == "scroll":
        depths = [_number(row.properties, "depth") for row in rows if row.event == SCROLL]
        return sum(1 for row in rows if row.event == PAGE_VIEW), tuple(depths.count(float(m)) for m in MILESTONES)
    seen = [depth for row in rows if row.event == PAGE_LEAVE and (depth := _number(row.properties, "max_scroll")) is not None]
    return len(seen), tuple(sum(1 for depth in seen if depth >= m) for m in MILESTONES)
