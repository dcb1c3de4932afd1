"""Heatmaps: where people click on a page, where they rage-click, and how far
they scroll; as a grid of counts and as a PNG image.

A ``HeatmapSpec`` says which pages (one, or the most clicked), the grid
(columns across the viewport, rows down the page) and where rage clicks and
scroll depths come from; ``compile(spec, dialect)`` writes the SQL (no
database needed); ``run(database, spec)`` executes it and returns a
``HeatmapResult`` with one ``PageHeatmap`` per page; ``heatmap_png`` draws one.
docs/paths-heatmaps.md has the exact semantics; in short:

- a page is the ``path`` of an event, cleaned by the spec's rules (so all
  ``/product/\\d+`` pages can be one heatmap);
- a ``click`` with page coordinates ``x``, ``y`` and a ``viewport_width`` falls in
  column ``floor(x * columns / viewport_width)`` (clamped to the grid: layouts
  scale with the viewport's width) and in row ``floor(y / row_height)``: rows
  are page pixels, as deep as the deepest click, at most ``rows`` of them
  (clicks deeper are counted as ``below``). With ``y_scale="page"`` rows divide
  the page's height instead (the ``page_height`` property footfall.js sends);
- a **rage click** (``rage_clicks="detected"``) is a click with two or more
  clicks of the same session on the same page in the second before it and
  within 30 px of it, as footfall.js decides; ``"tracked"`` counts the
  ``rage_click`` events footfall.js sends instead;
- **scroll depth**: the share of page views reaching 25, 50, 75 and 100 % of
  the page's height: ``scroll`` events at each depth over ``page_view`` events
  (``scroll_source="scroll"``), or ``page_leave`` events' ``max_scroll``.

>>> from footfall.events import parse_message
>>> from footfall.pipeline import Pipeline
>>> from footfall.store.database import Database
>>> from footfall.store.duckdb_backend import DuckDBBackend
>>> database = Database(DuckDBBackend(":memory:")); _ = database.migrate()
>>> def click(x, y, at):
...     return parse_message({"type": "track", "userId": "ann", "event": "click", "timestamp": f"2024-03-01T12:00:{at}Z",
...                           "properties": {"path": "/", "x": x, "y": y, "viewport_width": 1000}})
>>> _ = Pipeline(database).ingest_events([click(50, 20, "00"), click(60, 30, "10"), click(990, 250, "20")])
>>> page = run(database, HeatmapSpec(columns=4)).pages[0]
>>> page.page, page.clicks, page.grid
('/', 3, ((2, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 1)))
>>> heatmap_png(page)[:8]
b'\\x89PNG\\r\\n\\x1a\\n'
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple, get_args

from footfall.analytics.common import (
    DateRange,
    as_tuple,
    check_range,
    events_where,
    page_events_source,
    zone,
)
from footfall.analytics.conditions import Filter
from footfall.analytics.dialects import Dialect, dialect_named
from footfall.analytics.errors import SpecError
from footfall.analytics.paths import (
    CleaningRule,
    check_rules,
    clean,
    clean_sql,
    rules_from_json,
    whole_number,
)
from footfall.store.database import Database

YScale = Literal["pixels", "page"]
RageSource = Literal["detected", "tracked"]
ScrollSource = Literal["scroll", "page_leave"]

CLICK, RAGE_CLICK, SCROLL, PAGE_LEAVE, PAGE_VIEW = "click", "rage_click", "scroll", "page_leave", "page_view"
MILESTONES = (25, 50, 75, 100)
# A rage click as footfall.js sees one: the third of clicks within a second and 30 px.
RAGE_CLICKS, RAGE_MS, RAGE_PX = 3, 1000, 30

_MAX_PIXELS = 40_000_000  # in a drawn image

_TEMPLATES = {
    "duckdb": {"distinct_sessions": "count(DISTINCT (person_id, session_id))", "materialized": "MATERIALIZED "},
    "clickhouse": {"distinct_sessions": "uniqExact(person_id, session_id)", "materialized": ""},
}


# -- the spec ------------------------------------------------------------------------


@dataclass(frozen=True)
class HeatmapSpec:
    """Heatmaps of pages. ``filters`` narrow the events considered (clicks,
    page views, scrolls) and the persons (``traits.<key>``)."""

    page: str | None = None  # one (cleaned) page; None: the most clicked pages
    page_limit: int = 10
    cleaning: tuple[CleaningRule, ...] = ()
    columns: int = 20  # across the viewport's width
    y_scale: YScale = "pixels"  # rows of row_height page pixels, or fractions of the page's height
    row_height: int = 100  # pixels, for y_scale "pixels"
    rows: int = 50  # at most (y_scale "pixels"), or exactly (y_scale "page")
    rage_clicks: RageSource = "detected"
    hotspot_limit: int = 10  # rage hot spots (cells) per page
    scroll_source: ScrollSource = "scroll"
    date_range: DateRange | None = None
    time_zone: str = "UTC"
    filters: tuple[Filter, ...] = ()

    def __post_init__(self) -> None:
        if self.page is not None and (not isinstance(self.page, str) or not self.page):
            raise SpecError("page", f"give a page path such as '/checkout', or None for the most clicked pages; got {self.page!r}")
        whole_number(self.page_limit, "page_limit", 1, 100)
        object.__setattr__(self, "cleaning", check_rules(self.cleaning))
        whole_number(self.columns, "columns", 1, 200)
        if self.y_scale not in get_args(YScale):
            raise SpecError("y_scale", f"use 'pixels' (rows of row_height page pixels) or 'page' (of the page's height); got {self.y_scale!r}")
        whole_number(self.row_height, "row_height", 1, 100_000)
        whole_number(self.rows, "rows", 1, 1000)
        if self.rage_clicks not in get_args(RageSource):
            raise SpecError("rage_clicks", f"use 'detected' (from clicks) or 'tracked' (rage_click events); got {self.rage_clicks!r}")
        whole_number(self.hotspot_limit, "hotspot_limit", 0, 100)
        if self.scroll_source not in get_args(ScrollSource):
            raise SpecError("scroll_source", f"use 'scroll' (events per depth) or 'page_leave' (max_scroll); got {self.scroll_source!r}")
        zone(self.time_zone)
        check_range(self.date_range, self.time_zone)
        object.__setattr__(self, "filters", as_tuple(self.filters, "filters", Filter))

    def range_utc(self) -> tuple[datetime, datetime] | None:
        return check_range(self.date_range, self.time_zone)

    def clean(self, text: str) -> str:
        return clean(self.cleaning, text)

    def cell(self, x: float, y: float, viewport_width: float, page_height: float | None) -> tuple[int, int]:
        """The (column, row) of a click; the row may lie below the grid (y_scale "pixels")."""
        column = min(max(math.floor(x * self.columns / viewport_width), 0), self.columns - 1)
        if self.y_scale == "page":
            assert page_height is not None
            return column, min(math.floor(max(y, 0.0) * self.rows / page_height), self.rows - 1)
        return column, math.floor(max(y, 0.0) / self.row_height)


# -- the result ---------------------------------------------------------------------


@dataclass(frozen=True)
class RageHotspot:
    column: int
    row: int
    rage_clicks: int  # detected: clicks that were the third (or later) of a burst; tracked: rage_click events
    sessions: int  # sessions with one there


@dataclass(frozen=True)
class ScrollDepth:
    depth: int  # percent of the page's height: 25, 50, 75, 100
    reached: int  # page views that got there
    share: float  # of scroll_views


@dataclass(frozen=True)
class PageHeatmap:
    page: str
    page_views: int
    clicks: int  # click events on the page
    placed: int  # clicks in the grid
    below: int  # clicks below the grid's last row (y_scale "pixels")
    unplaced: int  # clicks without x, y, a viewport width (or, y_scale "page", a page height)
    grid: tuple[tuple[int, ...], ...]  # rows (top first) of clicks per column
    hotspots: tuple[RageHotspot, ...]  # rage cells, the most first
    scroll_views: int  # page views scroll depths are shares of (page_leave: those with a max_scroll)
    scroll: tuple[ScrollDepth, ...]

    @property
    def peak(self) -> int:
        """Clicks in the busiest cell."""
        return max((count for row in self.grid for count in row), default=0)


@dataclass(frozen=True)
class HeatmapResult:
    spec: HeatmapSpec
    pages: tuple[PageHeatmap, ...]  # the most clicked first (then the most viewed, then by path)


class PageCounts(NamedTuple):
    """What the engine (or the reference) counts per page."""

    page: str
    clicks: int
    page_views: int
    placed: int
    below: int
    scroll_views: int
    reached: tuple[int, ...]  # per milestone


def rank_pages(pages: Iterable[tuple[str, int, int]], limit: int) -> list[str]:
    """Pages (page, clicks, page views) in heatmap order, the first ``limit``."""
    return [page for page, _, _ in sorted(pages, key=lambda p: (-p[1], -p[2], p[0]))[:limit]]


def assemble(
    spec: HeatmapSpec,
    pages: Sequence[PageCounts],
    cells: Mapping[tuple[str, int, int], int],
    rage: Mapping[tuple[str, int, int], tuple[int, int]],
) -> HeatmapResult:
    """The result from counts: per page, clicks per cell (in the grid) and
    rage clicks and sessions per cell (in the grid)."""
    found = {counts.page: counts for counts in pages}
    if spec.page is not None and spec.page not in found:
        found[spec.page] = PageCounts(spec.page, 0, 0, 0, 0, 0, (0,) * len(MILESTONES))
    ordered = rank_pages(((c.page, c.clicks, c.page_views) for c in found.values()), spec.page_limit)
    # Cells and hot spots by page, in one pass each.
    cells_of: dict[str, dict[tuple[int, int], int]] = {}
    for (page, column, row), count in cells.items():
        cells_of.setdefault(page, {})[row, column] = count
    spots_of: dict[str, list[RageHotspot]] = {}
    for (page, column, row), (clicks, sessions) in rage.items():
        spots_of.setdefault(page, []).append(RageHotspot(column, row, clicks, sessions))
    heatmaps = []
    for name in ordered:
        counts = found[name]
        hot = sorted(spots_of.get(name, ()), key=lambda h: (-h.rage_clicks, -h.sessions, h.row, h.column))[: spec.hotspot_limit]
        mine = cells_of.get(name, {})
        if spec.y_scale == "page":
            height = spec.rows
        else:
            height = 1 + max([row for row, _ in mine] + [spot.row for spot in hot], default=0)
        grid = tuple(tuple(mine.get((row, column), 0) for column in range(spec.columns)) for row in range(height))
        scroll = tuple(
            ScrollDepth(depth, reached, reached / counts.scroll_views if counts.scroll_views else 0.0)
            for depth, reached in zip(MILESTONES, counts.reached, strict=True)
        )
        heatmaps.append(
            PageHeatmap(
                page=name,
                page_views=counts.page_views,
                clicks=counts.clicks,
                placed=counts.placed,
                below=counts.below,
                unplaced=counts.clicks - counts.placed - counts.below,
                grid=grid,
                hotspots=tuple(hot),
                scroll_views=counts.scroll_views,
                scroll=scroll,
            )
        )
    return HeatmapResult(spec, tuple(heatmaps))


# -- the compiler ---------------------------------------------------------------------


def _number(dialect: Dialect, key: str, doc: str = "properties") -> str:
    """A numeric property, NULL when it is missing or not a JSON number."""
    return dialect.render("json_number_or_null", doc=doc, path=dialect.json_path((key,)))


def _scan(
    spec: HeatmapSpec, dialect: Dialect, project_id: str, events: Sequence[str], shown: Sequence[str] | None
) -> tuple[list[tuple[str, str]], str]:
    """The CTE ``pages`` (the pages shown, the most clicked first) unless
    ``shown`` names them already (``run`` ranks them once for its queries),
    and the WHERE clause of a scan of those pages' ``events``.

    The pages are ranked from a scan of the two light columns (event, path)
    alone; only then are the shown pages' events read with what else they
    need, so ids, times and JSON properties are read for those pages only."""
    bounds = spec.range_utc()
    page = clean_sql(dialect, spec.cleaning, "path")

    def where(kinds: Sequence[str]) -> str:
        clauses = events_where(dialect, project_id, since=bounds[0] if bounds else None, filters=spec.filters, events=kinds)
        if bounds:
            clauses += f"\n  AND timestamp < {dialect.timestamp(bounds[1])}"  # the range is half open
        clauses += "\n  AND path IS NOT NULL"
        if spec.page is not None:  # one page: the scans keep only its events
            clauses += f"\n  AND {page} = {dialect.quote(spec.page)}"
        return clauses

    if shown is not None:
        listed = dialect.render("one_of", x=page, values=", ".join(dialect.quote(item) for item in shown))
        return [], f"{where(events)}\n  AND {listed}"
    click_count = dialect.render("count_if", condition=f"event = {dialect.quote(CLICK)}")
    view_count = dialect.render("count_if", condition=f"event = {dialect.quote(PAGE_VIEW)}")
    pages = (
        f"SELECT {page} AS page, {click_count} AS clicks, {view_count} AS views\nFROM {page_events_source(dialect, spec.filters)}\n"
        f"WHERE {where(_kinds(spec))}\n"
        f"GROUP BY page ORDER BY clicks DESC, views DESC, page LIMIT {spec.page_limit}"
    )
    return [("pages", pages)], f"{where(events)}\n  AND {page} IN (SELECT page FROM pages)"


def _kinds(spec: HeatmapSpec) -> list[str]:
    """The events a heatmap reads: any of them puts a page in the ranking."""
    kinds = [CLICK, PAGE_VIEW, SCROLL if spec.scroll_source == "scroll" else PAGE_LEAVE]
    return [*kinds, RAGE_CLICK] if spec.rage_clicks == "tracked" else kinds


def _cell_sql(spec: HeatmapSpec) -> tuple[str, str, str]:
    """When a click can be placed (given x and y), and its column and row then."""
    placeable = "viewport_width > 0"
    if spec.y_scale == "page":
        placeable += " AND page_height > 0"
        row = f"least(floor(greatest(y, 0) * {spec.rows} / page_height), {spec.rows - 1})"
    else:
        row = f"floor(greatest(y, 0) / {spec.row_height})"
    column = f"least(greatest(floor(x * {spec.columns} / viewport_width), 0), {spec.columns - 1})"
    return placeable, column, row


def _with(ctes: list[tuple[str, str]], body: str, dialect: Dialect, *, materialized: tuple[str, ...] = ()) -> str:
    """``materialized`` CTEs are computed first on DuckDB, whose optimizer may
    otherwise join them late (ClickHouse joins in the order written)."""
    keyword = _TEMPLATES[dialect.name]["materialized"]
    parts = ",\n".join(f"{name} AS {keyword if name in materialized else ''}(\n{sql}\n)" for name, sql in ctes)
    return f"WITH {parts}\n{body}{dialect.query_suffix}"


def compile_ranking(spec: HeatmapSpec, dialect: str, *, project_id: str = "default") -> str:
    """The pages shown (page, clicks, page views), the most clicked first."""
    chosen = dialect_named(dialect)
    return _scan(spec, chosen, project_id, (), None)[0][0][1] + chosen.query_suffix


def compile_tally(
    spec: HeatmapSpec, dialect: str, *, project_id: str = "default", shown: Sequence[str] | None = None
) -> str:
    """The shown pages' events tallied: page, event, column, row, level, events.

    Clicks carry their cell (column and row; the row is ``rows`` for every
    click below the grid, both NULL for a click that cannot be placed); the
    events scroll depths come from carry a level: with ``scroll_source``
    "scroll", the milestone a ``scroll`` event marks (NULL for other depths);
    with "page_leave", the highest milestone its ``max_scroll`` reached (0
    under the first, NULL without one). Every other column is NULL. A few
    thousand rows at most, from which ``tally_counts`` takes the pages'
    totals and the clicks per cell, so that one scan serves both.

    JSON is the costly part of the scan, and the documents depths come from
    repeat (footfall.js sends ``{"signal": "passive", "depth": 50}``), so
    the events are first counted by document, and each distinct document is
    parsed once."""
    chosen = dialect_named(dialect)
    scrolled = SCROLL if spec.scroll_source == "scroll" else PAGE_LEAVE
    placeable, column, row = _cell_sql(spec)
    click = f"event = {chosen.quote(CLICK)} AND x IS NOT NULL AND y IS NOT NULL AND {placeable}"
    columns = [f"{clean_sql(chosen, spec.cleaning, 'path')} AS page, event, x, y, viewport_width",
               f"CASE WHEN event = {chosen.quote(scrolled)} THEN properties END AS doc"]
    if spec.y_scale == "page":
        columns.append(f"CASE WHEN event = {chosen.quote(CLICK)} THEN {_number(chosen, 'page_height')} END AS page_height")
    # Tracked rage_click events are tallied too (with no cell or level): a
    # page may have nothing else.
    ctes, where = _scan(spec, chosen, project_id, _kinds(spec), shown)
    ctes.append(("scanned", "SELECT " + ",\n  ".join(columns) + f"\nFROM {page_events_source(chosen, spec.filters)}\nWHERE {where}"))
    ctes.append(
        (
            "tallied",
            f"SELECT page, event, CASE WHEN {click} THEN {column} END AS col,\n"
            f"  CASE WHEN {click} THEN least({row}, {spec.rows}) END AS row_index, doc, count(*) AS events\n"
            "FROM scanned GROUP BY page, event, col, row_index, doc",
        )
    )
    depth = _number(chosen, "depth" if spec.scroll_source == "scroll" else "max_scroll", doc="doc")
    if spec.scroll_source == "scroll":
        level = f"CASE WHEN {depth} IN ({', '.join(str(d) for d in MILESTONES)}) THEN {depth} END"
    else:
        steps = " ".join(f"WHEN {depth} >= {d} THEN {d}" for d in reversed(MILESTONES))
        level = f"CASE {steps} WHEN {depth} IS NOT NULL THEN 0 END"
    body = (
        f"SELECT page, event, col, row_index, {level} AS level, sum(events) AS events\n"
        "FROM tallied GROUP BY page, event, col, row_index, level"
    )
    return _with(ctes, body, chosen)


def tally_counts(
    spec: HeatmapSpec, rows: Iterable[Sequence[Any]]
) -> tuple[list[PageCounts], dict[tuple[str, int, int], int]]:
    """The pages' totals and the clicks per cell of the grid from the tally's rows."""
    totals: dict[str, list[int]] = {}  # page -> clicks, views, placed, below, scroll views, reached per milestone
    cells: dict[tuple[str, int, int], int] = {}
    leaves = spec.scroll_source == "page_leave"
    rows_below = spec.rows
    for page, event, column, row, level, number in rows:
        count = int(number)
        total = totals.get(page)
        if total is None:
            total = totals[page] = [0] * (5 + len(MILESTONES))
        if event == CLICK:
            total[0] += count
            if column is None:
                continue
            if row >= rows_below:
                total[3] += count
            else:
                total[2] += count
                key = (str(page), int(column), int(row))
                cells[key] = cells.get(key, 0) + count
        elif event == PAGE_VIEW:
            total[1] += count
            if not leaves:
                total[4] += count
        elif level is not None:  # a scroll or page_leave event with a depth
            if leaves:
                total[4] += count
            for position, depth in enumerate(MILESTONES):
                if level == depth or (leaves and level >= depth):
                    total[5 + position] += count
    pages = [PageCounts(str(page), t[0], t[1], t[2], t[3], t[4], tuple(t[5:])) for page, t in totals.items()]
    return pages, cells


def compile_rage(
    spec: HeatmapSpec, dialect: str, *, project_id: str = "default", shown: Sequence[str] | None = None
) -> str:
    """Rage clicks per cell of the grid: page, column, row, rage clicks, sessions."""
    chosen = dialect_named(dialect)
    kind = RAGE_CLICK if spec.rage_clicks == "tracked" else CLICK
    placeable, column, row = _cell_sql(spec)
    columns = [
        f"person_id, session_id, {chosen.render('epoch_ms', x='timestamp')} AS ts, event_id",
        f"{clean_sql(chosen, spec.cleaning, 'path')} AS page, x, y, viewport_width",
    ]
    if spec.y_scale == "page":
        columns.append(f"{_number(chosen, 'page_height')} AS page_height")
    ctes, where = _scan(spec, chosen, project_id, [kind], shown)
    ctes.append(
        (
            "clicks",
            "SELECT " + ",\n  ".join(columns)
            + f"\nFROM {page_events_source(chosen, spec.filters)}\nWHERE {where}\n  AND x IS NOT NULL AND y IS NOT NULL",
        )
    )
    ctes.append(
        (
            "located",
            f"SELECT person_id, session_id, ts, event_id, page, x, y,\n  CASE WHEN {placeable} THEN {column} END AS col,\n"
            f"  CASE WHEN {placeable} THEN {row} END AS row_index\nFROM clicks",
        )
    )
    materialized: tuple[str, ...] = ()
    if spec.rage_clicks == "tracked":
        rage = "located"
    else:
        found, materialized = _RAGE_PLANS[chosen.name]()
        ctes += found
        rage = "rage"
    sessions = _TEMPLATES[chosen.name]["distinct_sessions"]
    body = (
        f"SELECT page, col, row_index, count(*), {sessions}\nFROM {rage} WHERE col IS NOT NULL AND row_index < {spec.rows}\n"
        "GROUP BY page, col, row_index"
    )
    return _with(ctes, body, chosen, materialized=materialized)


RagePlan = tuple[list[tuple[str, str]], tuple[str, ...]]  # CTEs from ``located`` to ``rage``, and those to materialize


def _rage_by_pairs() -> RagePlan:
    """DuckDB: the clicks that can be rage clicks, each paired with its
    visit's clicks in the second before it.

    A rage click's two clicks before lie in its second of the clock or the
    one before, so one of those two seconds holds two of the three clicks:
    only a click in a second with two clicks of its visit, or in the second
    after one, can be one. Such seconds are few, and finding them is one
    grouping of the clicks' light columns, far cheaper than a window over
    each visit's clicks; only the visits that have one are read whole, and
    only their clicks are paired. Visits go by a hash of the session and
    page alone: visits sharing one (two persons' sessions with one id, or a
    collision) only let more candidates through, as the pairing compares the
    visits themselves, person included."""
    visit = "hash(session_id, page)"
    second = f"floor(ts / {RAGE_MS})"
    busy = (
        f"SELECT {visit} AS visit, {second} AS second\nFROM clicks\n"
        f"GROUP BY visit, second HAVING count(*) >= {RAGE_CLICKS - 1}"
    )
    candidates = (
        f"SELECT * FROM visits\nWHERE ({visit}, {second}) IN (SELECT visit, second FROM busy)\n"
        f"  OR ({visit}, {second} - 1) IN (SELECT visit, second FROM busy)"
    )
    # Each candidate with the clicks of its visit in the second before it
    # (ties: the smaller event id first), near it.
    rage = (
        "SELECT c.person_id AS person_id, c.session_id AS session_id, c.event_id AS event_id,"
        " c.page AS page, c.col AS col, c.row_index AS row_index\n"
        "FROM visits AS o INNER JOIN candidates AS c\n"
        "  ON c.person_id = o.person_id AND c.session_id = o.session_id AND c.page = o.page\n"
        f"WHERE o.ts >= c.ts - {RAGE_MS}\n"
        "  AND (o.ts < c.ts OR (o.ts = c.ts AND o.event_id < c.event_id))\n"
        f"  AND (o.x - c.x) * (o.x - c.x) + (o.y - c.y) * (o.y - c.y) <= {RAGE_PX * RAGE_PX}\n"
        "GROUP BY c.person_id, c.session_id, c.event_id, c.page, c.col, c.row_index\n"
        f"HAVING count(*) >= {RAGE_CLICKS - 1}"
    )
    ctes = [
        ("busy", busy),
        ("visits", f"SELECT * FROM located WHERE {visit} IN (SELECT visit FROM busy)"),
        ("candidates", candidates),
        ("rage", rage),
    ]
    return ctes, ("busy", "visits", "candidates")


def _rage_in_arrays() -> RagePlan:
    """ClickHouse: each visit's clicks in one array, searched with array functions.

    ClickHouse computes a CTE again wherever it is read (unless it is
    MATERIALIZED, into a temporary table), so the pairing plan above read
    the clicks four times over: 4 of the 5 s of heatmaps at 10M events. Here
    every CTE is read once; the clicks are read in one scan and grouped once:

    - ``visits``: each visit's clicks in one array, sorted by (time, event
      id), so that "before" is a lower place, as in the reference. Visits
      are grouped by the person, session and page strings themselves: a
      64-bit hash of them was barely faster, and exact keys need no argument
      about collisions.
    - ``bursts``: only visits where some click has the click two places
      before it within the second can have a rage click (a cheap test on the
      array shifted by two places). For those, ``widest``: the most clicks
      any click has in the second before it (each click's count is its place
      minus the clicks older than its second, merged in from the times a
      second earlier).
    - ``counted``: for each click, the clicks 1 to ``widest`` places before
      it, each a shifted copy of the arrays, that are within the second and
      30 px. The work is the visit's clicks times ``widest``: comparing each
      candidate with its whole visit instead would cost a bot's visit of
      5000 clicks gigabytes of memory."""
    before, window = RAGE_CLICKS - 1, RAGE_MS
    visits = (
        "SELECT person_id, session_id, page,\n"
        "  arraySort(groupArray((ts, event_id, assumeNotNull(x), assumeNotNull(y), col, row_index))) AS ordered\n"
        f"FROM located GROUP BY person_id, session_id, page HAVING count(*) >= {RAGE_CLICKS}"
    )
    merged = f"arraySort(arrayConcat(arrayMap(t -> (t - {window}, 0), times), arrayMap(t -> (t, 1), times)))"
    bursts = (
        "SELECT person_id, session_id, page, ordered, ordered.1 AS times, ordered.3 AS xs, ordered.4 AS ys,\n"
        f"  {merged} AS merged,\n"
        "  arrayMax(arrayMap((i, older) -> i - 1 - older, arrayEnumerate(times),\n"
        "    arrayFilter((older, m) -> m.2 = 0, arrayCumSum(merged.2), merged))) AS widest\n"
        "FROM visits\n"
        f"WHERE arrayExists((i, t, earlier) -> i > {before} AND t - earlier <= {window},\n"
        f"  arrayEnumerate(ordered), ordered.1, arrayShiftRight(ordered.1, {before}))"
    )
    near = (
        f"(i, t, x, y, t_k, x_k, y_k) -> i > k AND t - t_k <= {window}"
        f" AND (x - x_k) * (x - x_k) + (y - y_k) * (y - y_k) <= {RAGE_PX * RAGE_PX}"
    )
    counted = (
        "SELECT person_id, session_id, page, ordered,\n"
        f"  arrayReduce('sumForEach', arrayMap(k -> arrayMap({near},\n"
        "      arrayEnumerate(times), times, xs, ys, arrayShiftRight(times, k), arrayShiftRight(xs, k), arrayShiftRight(ys, k)),\n"
        "    range(1, widest + 1))) AS near\n"
        "FROM bursts"
    )
    rage = (
        "SELECT person_id, session_id, page, cell.1 AS col, cell.2 AS row_index\n"
        f"FROM counted ARRAY JOIN arrayFilter((cell, clicks) -> clicks >= {before}, arrayZip(ordered.5, ordered.6), near) AS cell"
    )
    return [("visits", visits), ("bursts", bursts), ("counted", counted), ("rage", rage)], ()


_RAGE_PLANS = {"duckdb": _rage_by_pairs, "clickhouse": _rage_in_arrays}


def compile(spec: HeatmapSpec, dialect: str, *, project_id: str = "default") -> str:
    """The two queries of the heatmaps, one after another (each runs alone)."""
    return ";\n\n".join(
        build(spec, dialect, project_id=project_id) for build in (compile_tally, compile_rage)
    )


def run(database: Database, spec: HeatmapSpec) -> HeatmapResult:
    """The pages are ranked once, then each of the two queries reads only theirs."""
    dialect, project = database.backend.dialect, database.project_id
    shown = [str(row[0]) for row in database.query(compile_ranking(spec, dialect, project_id=project)).rows]
    if not shown:
        return assemble(spec, [], {}, {})
    pages, cells = tally_counts(spec, database.query(compile_tally(spec, dialect, project_id=project, shown=shown)).rows)
    rage = {
        (str(page), int(column), int(row)): (int(count), int(sessions))
        for page, column, row, count, sessions in database.query(
            compile_rage(spec, dialect, project_id=project, shown=shown)
        ).rows
    }
    return assemble(spec, pages, cells, rage)


# -- pictures ----------------------------------------------------------------------------

# Dark to bright (an "inferno"-like ramp): brightness grows with the count.
_RAMP = ((0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66), (245, 125, 21), (250, 193, 39), (252, 255, 164))
_HOTSPOT = (0, 230, 255)


def colour(intensity: float) -> tuple[int, int, int]:
    """The ramp's colour at ``intensity`` in [0, 1].

    >>> colour(0.0), colour(1.0)
    ((0, 0, 4), (252, 255, 164))
    """
    position = min(max(intensity, 0.0), 1.0) * (len(_RAMP) - 1)
    low = min(int(position), len(_RAMP) - 2)
    fraction = position - low
    return (
        round(_RAMP[low][0] + (_RAMP[low + 1][0] - _RAMP[low][0]) * fraction),
        round(_RAMP[low][1] + (_RAMP[low + 1][1] - _RAMP[low][1]) * fraction),
        round(_RAMP[low][2] + (_RAMP[low + 1][2] - _RAMP[low][2]) * fraction),
    )


def png(width: int, height: int, rows: Iterable[bytes]) -> bytes:
    """An 8-bit RGB PNG of ``height`` rows of ``3 * width`` bytes each."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    scanlines = b"".join(b"\x00" + row for row in rows)  # filter type 0: the bytes as they are
    assert len(scanlines) == height * (1 + 3 * width)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, RGB, deflate, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(scanlines, 9)) + chunk(b"IEND", b"")


def heatmap_png(result: HeatmapResult | PageHeatmap, *, page: str | None = None, cell_size: int = 16) -> bytes:
    """A PNG of a page's click grid: a square of ``cell_size`` pixels per cell,
    its colour from dark (no clicks) to bright (the busiest cell) by the square
    root of clicks over the peak, so that cells of a few clicks still show;
    rage hot spots are framed in cyan. From a HeatmapResult, ``page`` picks
    the page (default: the first)."""
    heatmap = result if isinstance(result, PageHeatmap) else _page_of(result, page)
    whole_number(cell_size, "cell_size", 1, 256)
    width, height = len(heatmap.grid[0]) * cell_size, len(heatmap.grid) * cell_size
    if width * height > _MAX_PIXELS:
        raise SpecError("cell_size", f"a {width} x {height} image is too large; use a smaller cell_size or fewer rows")
    peak = heatmap.peak
    frame = max(1, cell_size // 8)
    hot = {(spot.row, spot.column) for spot in heatmap.hotspots}
    lines = []
    for row_index, row in enumerate(heatmap.grid):
        fills = [bytes(colour(math.sqrt(count / peak) if peak else 0.0)) for count in row]
        framed = [(row_index, column) in hot for column in range(len(row))]
        middle = b"".join(_cell_line(fill, edge, cell_size, frame, False) for fill, edge in zip(fills, framed, strict=True))
        border = b"".join(_cell_line(fill, edge, cell_size, frame, True) for fill, edge in zip(fills, framed, strict=True))
        lines += [border if y < frame or y >= cell_size - frame else middle for y in range(cell_size)]
    return png(width, height, lines)


def _cell_line(fill: bytes, framed: bool, size: int, frame: int, border: bool) -> bytes:
    """One line of pixels of a cell: its colour, framed for a hot spot."""
    if not framed:
        return fill * size
    if border or size <= 2 * frame:
        return bytes(_HOTSPOT) * size
    return bytes(_HOTSPOT) * frame + fill * (size - 2 * frame) + bytes(_HOTSPOT) * frame


def _page_of(result: HeatmapResult, page: str | None) -> PageHeatmap:
    for heatmap in result.pages:
        if page is None or heatmap.page == page:
            return heatmap
    shown = ", ".join(repr(h.page) for h in result.pages) or "none"
    raise SpecError("page", f"no heatmap of {page!r} in the result (pages: {shown})" if page else "the result has no page")


def format_grid(heatmap: PageHeatmap) -> str:
    """The grid in text, one character per cell, denser for more clicks.

    >>> print(format_grid(PageHeatmap("/", 0, 3, 3, 0, 0, ((2, 0), (0, 1)), (), 0, ())))
    |@ |
    | #|
    """
    shades = " .-=+*#%@"
    peak = heatmap.peak
    lines = []
    for row in heatmap.grid:
        cells = "".join(
            shades[0] if not count else shades[max(1, math.ceil(math.sqrt(count / peak) * (len(shades) - 1)))] for count in row
        )
        lines.append(f"|{cells}|")
    return "\n".join(lines)


def format_heatmap(result: HeatmapResult, grids: int = 1) -> str:
    """The result as text: per page its clicks, rage hot spots and scroll
    depths; the grids of the first ``grids`` pages.

    >>> page = PageHeatmap("/", 4, 3, 2, 0, 1, ((2, 0),), (RageHotspot(0, 0, 1, 1),), 4,
    ...                    tuple(ScrollDepth(d, n, n / 4) for d, n in zip(MILESTONES, (4, 3, 1, 0))))
    >>> print(format_heatmap(HeatmapResult(HeatmapSpec(), (page,))))
    / : 4 page views, 3 clicks (2 in the grid, 0 below it, 1 without a position)
      scrolled to 25% 100.0% | 50% 75.0% | 75% 25.0% | 100% 0.0%
      rage clicks: column 0 row 0 (1 in 1 session)
    |@ |
    """
    if not result.pages:
        return "no clicks or page views in the range"
    lines = []
    for position, page in enumerate(result.pages):
        lines.append(
            f"{page.page} : {page.page_views:,} page views, {page.clicks:,} clicks ({page.placed:,} in the grid,"
            f" {page.below:,} below it, {page.unplaced:,} without a position)"
        )
        lines.append("  scrolled to " + " | ".join(f"{d.depth}% {d.share:.1%}" for d in page.scroll))
        if page.hotspots:
            spots = ", ".join(
                f"column {h.column} row {h.row} ({h.rage_clicks:,} in {h.sessions:,} session{'' if h.sessions == 1 else 's'})"
                for h in page.hotspots
            )
            lines.append(f"  rage clicks: {spots}")
        if position < grids:
            lines.append(format_grid(page))
    return "\n".join(lines)


# -- JSON ------------------------------------------------------------------------------


def from_json(document: object) -> HeatmapSpec:
    """A HeatmapSpec from the JSON the HTTP API and the CLI take; errors name the JSON path.

    >>> spec = from_json({"page": "/product/:id", "cleaning": [{"pattern": "^/product/\\\\d+$", "alias": "/product/:id"}],
    ...                   "columns": 40, "rage_clicks": "tracked"})
    >>> spec.page, spec.columns, spec.rage_clicks
    ('/product/:id', 40, 'tracked')
    >>> from_json({"columns": 0})
    Traceback (most recent call last):
    ...
    footfall.analytics.errors.SpecError: columns: give a whole number from 1 to 200; got 0
    """
    # The shared JSON helpers live with the decoders, which import this module.
    from footfall.analytics import wire

    body = wire._object(
        document, "",
        {"page", "page_limit", "cleaning", "columns", "y_scale", "row_height", "rows", "rage_clicks", "hotspot_limit",
         "scroll_source", "from", "to", "time_zone", "filters"},
    )
    options: dict[str, Any] = {
        "cleaning": rules_from_json(body.get("cleaning"), "cleaning"),
        "filters": wire._filters(body.get("filters"), "filters"),
        "date_range": wire._date_range(body),
    }
    for key in ("page", "page_limit", "columns", "y_scale", "row_height", "rows", "rage_clicks", "hotspot_limit",
                "scroll_source", "time_zone"):
        if key in body:
            options[key] = body[key]
    return HeatmapSpec(**options)
