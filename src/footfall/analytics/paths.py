"""Paths: the top transitions between pages (or events) within sessions, and
what sets apart the sessions that convert.

A ``PathSpec`` says what the steps are (``pages``: the ``path`` of page views;
``events``: event names), how to clean them, where paths start or end, and how
long they may be; ``compile(spec, dialect)`` writes the SQL (no database
needed); ``run(database, spec)`` executes it and returns a ``PathResult``:
Sankey-ready edges, the nodes they join with their totals and drop-offs, and,
with a ``conversion_event``, a comparison of the sessions that converted with
those that did not. docs/paths-heatmaps.md has the exact semantics; in short:

- each session (``session_id`` of a person) is one path; its events in the
  date range that pass the filters are taken in time order (ties by event id),
  each *cleaned* (the rules' regexes replaced by their aliases, in order);
  steps listed in ``exclusions`` (before or after cleaning) are dropped, and
  a step equal to the one before it is merged into it;
- ``start``: the path begins at the session's first ``start`` step (sessions
  without one are left out); steps are numbered 0, 1, ... from there and the
  path keeps ``max_steps`` of them. ``end``: the path stops at the first
  ``end`` step (after the start); with an end and no start, steps are
  numbered back from it (the end is step 0, the one before it -1, ...);
- an edge is a transition from step k to step k + 1 of a path; counts are
  **sessions** (each path crosses an edge at most once) and the distinct
  **persons** behind them; ``edge_limit`` keeps the busiest edges;
- a node's ``dropped`` counts the sessions whose last step it was.

>>> from footfall.events import parse_message
>>> from footfall.pipeline import Pipeline
>>> from footfall.store.database import Database
>>> from footfall.store.duckdb_backend import DuckDBBackend
>>> database = Database(DuckDBBackend(":memory:")); _ = database.migrate()
>>> def page(user, path, at):
...     return parse_message({"type": "page", "userId": user, "properties": {"path": path},
...                           "timestamp": f"2024-03-01T12:{at}Z"})
>>> _ = Pipeline(database).ingest_events([
...     page("ann", "/", "00:00"), page("ann", "/product/7", "01:00"), page("ann", "/product/9", "02:00"),
...     page("ann", "/cart", "03:00"),
...     page("bob", "/", "00:00"), page("bob", "/product/3", "01:00"),
... ])
>>> spec = PathSpec(cleaning=(CleaningRule(r"^/product/\\d+$", "/product/:id"),))
>>> [(edge.step, edge.source, edge.target, edge.sessions) for edge in run(database, spec).edges]
[(0, '/', '/product/:id', 2), (1, '/product/:id', '/cart', 1)]
>>> [(node.step, node.node, node.sessions, node.dropped) for node in run(database, spec).nodes]
[(0, '/', 2, 0), (1, '/product/:id', 2, 1), (2, '/cart', 1, 1)]
>>> PathSpec(max_steps=1)
Traceback (most recent call last):
...
footfall.analytics.errors.SpecError: max_steps: give a whole number from 2 to 20; got 1
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from footfall.analytics.common import DateRange, as_tuple, check_range, events_where, zone
from footfall.analytics.conditions import Filter, check_regex
from footfall.analytics.dialects import Dialect, dialect_named
from footfall.analytics.errors import SpecError
from footfall.store.database import Database

NodeType = Literal["pages", "events"]

PAGE_VIEW = "page_view"
MAX_STEPS = 20
MAX_EDGES = 1000
MAX_RULES = 50
# A sequence number past any real one: "no next step".
_NONE = 4611686018427387904  # 2**62

_TEMPLATES = {
    # Every match replaced; the alias is literal text (backslashes are refused,
    # so the engines' \1 group references never come into play).
    "duckdb": {"replace_all": "regexp_replace({s}, {pattern}, {alias}, 'g')"},
    "clickhouse": {"replace_all": "replaceRegexpAll({s}, {pattern}, {alias})"},
}


def whole_number(value: object, at: str, low: int, high: int) -> int:
    """An int in ``[low, high]`` (not a bool), or a SpecError naming the field."""
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SpecError(at, f"give a whole number from {low} to {high}; got {value!r}")
    return value


def _min_match_width(pattern: str) -> int:
    """The fewest characters a match of ``pattern`` can span.

    Python's own parser knows it; its module is private, so if it moves, the
    check falls back to whether the pattern matches the empty text."""
    try:
        parser: Any = importlib.import_module("re._parser")
        return int(parser.parse(pattern).getwidth()[0])
    except (ImportError, AttributeError):
        return 0 if re.search(pattern, "", re.ASCII) else 1


@dataclass(frozen=True)
class CleaningRule:
    """Every match of ``pattern`` (RE2 syntax) in a step is replaced by ``alias``.

    >>> CleaningRule(r"/product/\\d+", "/product/:id").apply("/product/17/reviews")
    '/product/:id/reviews'
    """

    pattern: str
    alias: str

    def __post_init__(self) -> None:
        if not isinstance(self.pattern, str) or not self.pattern:
            raise SpecError("CleaningRule.pattern", "give a regular expression, e.g. '/product/\\d+'")
        check_regex(self.pattern, "CleaningRule.pattern")
        # Engines disagree on where an empty match is replaced ('x*' in 'ab'):
        # a rule must always match at least one character.
        if _min_match_width(self.pattern) == 0:
            raise SpecError(
                "CleaningRule.pattern",
                f"{self.pattern!r} can match empty text; give a pattern that matches at least one character",
            )
        if not isinstance(self.alias, str):
            raise SpecError("CleaningRule.alias", f"give the text that replaces each match; got {self.alias!r}")
        if "\\" in self.alias:
            raise SpecError("CleaningRule.alias", "the alias is literal text and may not hold a backslash")

    def apply(self, text: str) -> str:
        return re.sub(self.pattern, lambda _: self.alias, text, flags=re.ASCII)


def clean(rules: Sequence[CleaningRule], text: str) -> str:
    """A step after every rule, in order."""
    for rule in rules:
        text = rule.apply(text)
    return text


def clean_sql(dialect: Dialect, rules: Sequence[CleaningRule], column: str) -> str:
    """The same in SQL."""
    for rule in rules:
        column = _TEMPLATES[dialect.name]["replace_all"].format(
            s=column, pattern=dialect.quote(rule.pattern), alias=dialect.quote(rule.alias)
        )
    return column


def check_rules(rules: object, at: str = "cleaning") -> tuple[CleaningRule, ...]:
    checked = as_tuple(rules, at, CleaningRule)  # type: ignore[arg-type]
    if len(checked) > MAX_RULES:
        raise SpecError(at, f"give at most {MAX_RULES} rules; got {len(checked)}")
    return checked


def _names(value: object, at: str) -> tuple[str, ...]:
    names = as_tuple(value, at, str)  # type: ignore[arg-type]
    for position, name in enumerate(names):
        if not name:
            raise SpecError(f"{at}[{position}]", "give a non-empty name")
    return names


def _optional_name(value: object, at: str, what: str) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise SpecError(at, f"give {what}, or None; got {value!r}")


# -- the spec ------------------------------------------------------------------------


@dataclass(frozen=True)
class PathSpec:
    """Paths through a site or an app. ``filters`` narrow the events considered
    (event properties and columns) and the persons (``traits.<key>``)."""

    node_type: NodeType = "pages"
    start: str | None = None  # a (cleaned) step where paths begin
    end: str | None = None  # a (cleaned) step where paths stop
    max_steps: int = 5  # steps per path, the first (or the end) included
    edge_limit: int = 50  # the busiest edges kept (also rows of the comparison)
    events: tuple[str, ...] = ()  # node_type "events": only these (empty: every event)
    exclusions: tuple[str, ...] = ()  # steps dropped, by their name before or after cleaning
    cleaning: tuple[CleaningRule, ...] = ()
    conversion_event: str | None = None  # compare the sessions with it and those without
    date_range: DateRange | None = None
    time_zone: str = "UTC"
    filters: tuple[Filter, ...] = ()

    def __post_init__(self) -> None:
        if self.node_type not in get_args(NodeType):
            raise SpecError("node_type", f"use 'pages' (page views' paths) or 'events' (event names); got {self.node_type!r}")
        _optional_name(self.start, "start", "the step paths begin at, e.g. '/' or 'sign_up'")
        _optional_name(self.end, "end", "the step paths stop at, e.g. '/checkout' or 'purchase'")
        whole_number(self.max_steps, "max_steps", 2, MAX_STEPS)
        whole_number(self.edge_limit, "edge_limit", 1, MAX_EDGES)
        object.__setattr__(self, "events", _names(self.events, "events"))
        if self.events and self.node_type == "pages":
            raise SpecError("events", "pages are page views; list events only with node_type 'events'")
        object.__setattr__(self, "exclusions", _names(self.exclusions, "exclusions"))
        object.__setattr__(self, "cleaning", check_rules(self.cleaning))
        _optional_name(self.conversion_event, "conversion_event", "the event that counts as converting, e.g. 'purchase'")
        if self.conversion_event is not None and self.end is not None:
            raise SpecError(
                "conversion_event",
                "an end point already picks the sessions that got there; compare from a start point or over whole sessions",
            )
        zone(self.time_zone)
        check_range(self.date_range, self.time_zone)
        object.__setattr__(self, "filters", as_tuple(self.filters, "filters", Filter))

    def range_utc(self) -> tuple[datetime, datetime] | None:
        return check_range(self.date_range, self.time_zone)

    @property
    def backwards(self) -> bool:
        """Steps are numbered back from the end point (an end and no start)."""
        return self.end is not None and self.start is None

    def clean(self, text: str) -> str:
        return clean(self.cleaning, text)


# -- the result ---------------------------------------------------------------------


@dataclass(frozen=True)
class PathEdge:
    """Sessions whose path goes from ``source`` at step ``step`` to ``target`` at ``step + 1``."""

    step: int
    source: str
    target: str
    sessions: int
    persons: int


@dataclass(frozen=True)
class PathNode:
    """A step of paths: ``node`` at position ``step``, over all paths (not only the kept edges)."""

    step: int
    node: str
    sessions: int  # paths with this node at this step
    persons: int
    dropped: int  # of those, sessions that had no step after it


@dataclass(frozen=True)
class ComparedStep:
    """A step (or, in ``transitions``, a ``source -> target`` pair) in the
    converted sessions' paths before converting, against all the paths of the
    sessions that did not convert."""

    node: str  # the step; for a transition, "source -> target"
    source: str
    target: str | None  # None for a step
    converted: int  # converted sessions that went through it
    dropped: int  # sessions without the conversion that went through it
    converted_share: float  # of the converted sessions
    dropped_share: float  # of the others
    difference: float  # converted_share - dropped_share
    lift: float | None  # converted_share / dropped_share; None when no other session went through it


@dataclass(frozen=True)
class PathComparison:
    conversion_event: str
    converted: int  # sessions compared that converted
    dropped: int  # sessions compared that did not
    steps: tuple[ComparedStep, ...]  # the most over-represented first
    transitions: tuple[ComparedStep, ...]


@dataclass(frozen=True)
class PathResult:
    spec: PathSpec
    sessions: int  # paths (sessions with at least one step, from the start and to the end when given)
    persons: int
    edges: tuple[PathEdge, ...]  # the busiest first (then by step, source, target)
    nodes: tuple[PathNode, ...]  # the nodes of the kept edges, by step, then busiest first
    comparison: PathComparison | None


def order_edges(edges: Iterable[PathEdge], limit: int) -> tuple[PathEdge, ...]:
    return tuple(sorted(edges, key=lambda e: (-e.sessions, e.step, e.source, e.target))[:limit])


def order_nodes(nodes: Iterable[PathNode]) -> tuple[PathNode, ...]:
    return tuple(sorted(nodes, key=lambda n: (n.step, -n.sessions, n.node)))


def compare(
    spec: PathSpec,
    converted: int,
    dropped: int,
    steps: Mapping[str, tuple[int, int]],
    transitions: Mapping[tuple[str, str], tuple[int, int]],
) -> PathComparison:
    """The comparison from counts: sessions of each kind, and per step (and
    transition) how many of each went through it."""

    def entry(source: str, target: str | None, counts: tuple[int, int]) -> ComparedStep:
        yes, no = counts
        converted_share = yes / converted if converted else 0.0
        dropped_share = no / dropped if dropped else 0.0
        return ComparedStep(
            node=source if target is None else f"{source} -> {target}",
            source=source,
            target=target,
            converted=yes,
            dropped=no,
            converted_share=converted_share,
            dropped_share=dropped_share,
            difference=converted_share - dropped_share,
            lift=converted_share / dropped_share if dropped_share else None,
        )

    def ranked(entries: Iterable[ComparedStep]) -> tuple[ComparedStep, ...]:
        order = sorted(entries, key=lambda e: (-e.difference, -e.converted, e.source, e.target or ""))
        return tuple(order[: spec.edge_limit])

    assert spec.conversion_event is not None
    return PathComparison(
        spec.conversion_event,
        converted,
        dropped,
        ranked(entry(node, None, counts) for node, counts in steps.items()),
        ranked(entry(source, target, counts) for (source, target), counts in transitions.items()),
    )


# -- the compiler ---------------------------------------------------------------------


def _scan(spec: PathSpec, dialect: Dialect, project_id: str, *, conversion: bool) -> str:
    """One row per event that may be a step (or a conversion): its session,
    time, id, cleaned step (``node``) and whether it is a step at all."""
    bounds = spec.range_utc()
    pages = spec.node_type == "pages"
    names: list[str] | None = None
    if pages:
        names = [PAGE_VIEW]
    elif spec.events:
        names = list(spec.events)
    if names is not None and conversion and spec.conversion_event is not None:
        names.append(spec.conversion_event)
    where = events_where(
        dialect, project_id, since=bounds[0] if bounds else None, filters=spec.filters, events=names
    )
    if bounds:
        where += f"\n  AND timestamp < {dialect.timestamp(bounds[1])}"  # the range is half open
    raw = "path" if pages else "event"
    node = f"coalesce({clean_sql(dialect, spec.cleaning, raw)}, '')"
    is_node = [f"event = {dialect.quote(PAGE_VIEW)}", "path IS NOT NULL"] if pages else []
    if spec.events:
        is_node.append(f"event IN ({', '.join(dialect.quote(name) for name in spec.events)})")
    if spec.exclusions:
        excluded = ", ".join(dialect.quote(name) for name in spec.exclusions)
        is_node.append(f"NOT ({raw} IN ({excluded}) OR {node} IN ({excluded}))")
    flags = f"CASE WHEN {' AND '.join(is_node) or 'true'} THEN 1 ELSE 0 END AS is_node"
    if conversion:
        assert spec.conversion_event is not None
        flags += f",\n  CASE WHEN event = {dialect.quote(spec.conversion_event)} THEN 1 ELSE 0 END AS is_conversion"
    return (
        f"SELECT person_id, session_id, {dialect.render('epoch_ms', x='timestamp')} AS ts, event_id,\n"
        f"  {node} AS node,\n  {flags}\nFROM events\nWHERE {where}"
    )


_SESSION = "PARTITION BY person_id, session_id"


def _path_ctes(spec: PathSpec, dialect: Dialect, project_id: str) -> list[tuple[str, str]]:
    """CTEs ending in ``path``: one row per step of every path, with its
    number (``step``), the step after it, whether the path goes on to it
    (``has_edge``) and whether the session ended there (``dropped``)."""
    in_order = f"OVER ({_SESSION} ORDER BY ts, event_id)"
    ctes = [
        ("scanned", _scan(spec, dialect, project_id, conversion=False)),
        (
            "deduped",
            f"SELECT person_id, session_id, ts, event_id, node,\n"
            f"  row_number() {in_order} AS raw_position,\n  lag(node, 1, '') {in_order} AS previous\n"
            "FROM scanned WHERE is_node = 1",
        ),
        (
            "positioned",
            # A step equal to the one before it is merged into it.
            f"SELECT person_id, session_id, node,\n  CAST(row_number() {in_order} AS BIGINT) AS position,\n"
            f"  lead(node, 1, '') {in_order} AS next_node,\n  CAST(count(*) OVER ({_SESSION}) AS BIGINT) AS last\n"
            "FROM deduped WHERE raw_position = 1 OR node <> previous",
        ),
    ]
    whole = f"OVER ({_SESSION})"
    if spec.start is not None:
        start_at = f"min(CASE WHEN node = {dialect.quote(spec.start)} THEN position END) {whole}"
    else:
        start_at = "CAST(1 AS BIGINT)"
    ctes.append(("anchored", f"SELECT *, {start_at} AS start_at FROM positioned"))
    if spec.end is not None:
        after = "position > start_at" if spec.start is not None else "true"
        end_at = f"min(CASE WHEN node = {dialect.quote(spec.end)} AND {after} THEN position END) {whole}"
    else:
        end_at = "last"
    ctes.append(("bounded", f"SELECT *, {end_at} AS end_at FROM anchored"))
    limit = spec.max_steps
    if spec.backwards:
        step, within, edge_within = "position - end_at", f"position - end_at > -{limit}", "true"
    else:
        step, within, edge_within = "position - start_at", f"position - start_at < {limit}", f"position - start_at + 1 < {limit}"
    ctes.append(
        (
            "path",
            f"SELECT person_id, session_id, node, next_node, {step} AS step,\n"
            "  CASE WHEN position = last THEN 1 ELSE 0 END AS dropped,\n"
            f"  CASE WHEN position < end_at AND {edge_within} THEN 1 ELSE 0 END AS has_edge\n"
            "FROM bounded\nWHERE start_at IS NOT NULL AND end_at IS NOT NULL AND position >= start_at"
            f" AND position <= end_at AND {within}",
        )
    )
    return ctes


def _with(ctes: list[tuple[str, str]], body: str, dialect: Dialect) -> str:
    parts = ",\n".join(f"{name} AS (\n{sql}\n)" for name, sql in ctes)
    return f"WITH {parts}\n{body}{dialect.query_suffix}"


def compile_paths(spec: PathSpec, dialect: str, *, project_id: str = "default") -> str:
    """Rows of ``kind`` 'edge' (the kept edges), 'node' (their nodes) and
    'total' (paths and persons): kind, step, source, target, sessions, persons, dropped."""
    chosen = dialect_named(dialect)
    ctes = _path_ctes(spec, chosen, project_id)
    ctes += [
        (
            "edges",
            "SELECT step, node AS source, next_node AS target, count(*) AS sessions, count(DISTINCT person_id) AS persons\n"
            "FROM path WHERE has_edge = 1 GROUP BY step, node, next_node",
        ),
        ("top_edges", f"SELECT * FROM edges ORDER BY sessions DESC, step, source, target LIMIT {spec.edge_limit}"),
        (
            "kept_nodes",
            "SELECT DISTINCT step, node FROM (SELECT step, source AS node FROM top_edges\n"
            "  UNION ALL SELECT step + 1 AS step, target AS node FROM top_edges) AS ends",
        ),
        (
            "node_totals",
            "SELECT p.step AS step, p.node AS node, count(*) AS sessions, count(DISTINCT p.person_id) AS persons,"
            " sum(p.dropped) AS dropped\n"
            "FROM path AS p INNER JOIN kept_nodes AS k ON p.step = k.step AND p.node = k.node\nGROUP BY p.step, p.node",
        ),
    ]
    body = (
        "SELECT 'edge' AS kind, step, source, target, sessions, persons, 0 AS dropped FROM top_edges\n"
        "UNION ALL SELECT 'node' AS kind, step, node AS source, '' AS target, sessions, persons, dropped FROM node_totals\n"
        # No aliases here: ClickHouse would read the step below as this row's 0.
        "UNION ALL SELECT 'total', 0, '', '', sum(CASE WHEN step = 0 THEN 1 ELSE 0 END), count(DISTINCT person_id), 0"
        " FROM path"
    )
    return _with(ctes, body, chosen)


def compile_comparison(spec: PathSpec, dialect: str, *, project_id: str = "default") -> str:
    """Rows of ``kind`` 'sessions' (converted, dropped), 'step' (source) and
    'transition' (source, target), each with the converted and the other
    sessions that went through it."""
    if spec.conversion_event is None:
        raise SpecError("conversion_event", "name the conversion event to compare the paths of who did and who did not")
    chosen = dialect_named(dialect)
    session = f"OVER ({_SESSION})"
    in_order = f"OVER ({_SESSION} ORDER BY seq)"
    if spec.start is not None:
        start_seq = f"min(CASE WHEN is_node = 1 AND node = {chosen.quote(spec.start)} THEN seq END) {session}"
    else:
        start_seq = "CAST(0 AS BIGINT)"
    ctes = [
        ("scanned", _scan(spec, chosen, project_id, conversion=True)),
        ("ordered", f"SELECT *, CAST(row_number() OVER ({_SESSION} ORDER BY ts, event_id) AS BIGINT) AS seq FROM scanned"),
        ("anchored", f"SELECT *, {start_seq} AS start_seq FROM ordered"),
        (
            "flagged",
            # The first conversion after the start: the path before it is what led there.
            f"SELECT *, min(CASE WHEN is_conversion = 1 AND seq > start_seq THEN seq END) {session} AS conversion_seq\n"
            "FROM anchored",
        ),
        (
            "deduped",
            f"SELECT *, row_number() {in_order} AS raw_position, lag(node, 1, '') {in_order} AS previous\n"
            "FROM flagged WHERE is_node = 1",
        ),
        (
            "collapsed",
            f"SELECT person_id, session_id, seq, node, start_seq, conversion_seq,\n"
            f"  lead(node, 1, '') {in_order} AS next_node, lead(seq, 1, CAST({_NONE} AS BIGINT)) {in_order} AS next_seq\n"
            "FROM deduped WHERE (raw_position = 1 OR node <> previous) AND start_seq IS NOT NULL",
        ),
        (
            "visited",
            "SELECT person_id, session_id, node, next_node,\n"
            "  CASE WHEN conversion_seq IS NULL THEN 0 ELSE 1 END AS converted,\n"
            f"  CASE WHEN next_seq < {_NONE} AND (conversion_seq IS NULL OR next_seq < conversion_seq) THEN 1 ELSE 0 END"
            " AS has_next\n"
            "FROM collapsed WHERE seq >= start_seq AND (conversion_seq IS NULL OR seq < conversion_seq)",
        ),
        (
            "compared",
            "SELECT person_id, session_id, max(CASE WHEN conversion_seq IS NULL THEN 0 ELSE 1 END) AS converted\n"
            "FROM collapsed GROUP BY person_id, session_id",
        ),
    ]
    body = (
        "SELECT 'sessions' AS kind, '' AS source, '' AS target, sum(converted) AS yes, count(*) - sum(converted) AS no\n"
        "FROM compared\n"
        "UNION ALL SELECT 'step' AS kind, node AS source, '' AS target, sum(converted) AS yes, count(*) - sum(converted) AS no\n"
        "FROM (SELECT DISTINCT person_id, session_id, converted, node FROM visited) AS steps GROUP BY node\n"
        "UNION ALL SELECT 'transition' AS kind, node AS source, next_node AS target, sum(converted) AS yes,"
        " count(*) - sum(converted) AS no\n"
        "FROM (SELECT DISTINCT person_id, session_id, converted, node, next_node FROM visited WHERE has_next = 1)"
        " AS transitions GROUP BY node, next_node"
    )
    return _with(ctes, body, chosen)


def compile(spec: PathSpec, dialect: str, *, project_id: str = "default") -> str:
    """The SQL of the paths; with a conversion event, then that of the comparison (each runs alone)."""
    queries = [compile_paths(spec, dialect, project_id=project_id)]
    if spec.conversion_event is not None:
        queries.append(compile_comparison(spec, dialect, project_id=project_id))
    return ";\n\n".join(queries)


# -- running --------------------------------------------------------------------------


def check_known_events(database: Database, named: Sequence[tuple[str, str]]) -> None:
    """A SpecError for an event (field, name) the project has never seen (once
    it has events at all): most likely a typo."""
    if not named:
        return
    known = {
        str(row[0])
        for row in database.query(
            f"SELECT DISTINCT event FROM events WHERE project_id = {database.backend.quote(database.project_id)}"
        ).rows
    }
    if not known:
        return
    for field, event in named:
        if event not in known:
            close = difflib.get_close_matches(event, sorted(known), n=3)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise SpecError(field, f"no event named {event!r} in project {database.project_id!r}{hint}")


def run(database: Database, spec: PathSpec, *, known_events_only: bool = True) -> PathResult:
    """Compile for the database's dialect, run, and build the result.
    ``known_events_only`` refuses a conversion event (or listed events) the project has never seen."""
    if known_events_only:
        named = [(f"events[{k}]", name) for k, name in enumerate(spec.events)]
        if spec.conversion_event is not None:
            named.append(("conversion_event", spec.conversion_event))
        check_known_events(database, named)
    dialect, project = database.backend.dialect, database.project_id
    edges, nodes = [], []
    sessions = persons = 0
    for kind, step, source, target, count, distinct, dropped in database.query(
        compile_paths(spec, dialect, project_id=project)
    ).rows:
        if kind == "edge":
            edges.append(PathEdge(int(step), str(source), str(target), int(count), int(distinct)))
        elif kind == "node":
            nodes.append(PathNode(int(step), str(source), int(count), int(distinct), int(dropped)))
        else:
            sessions, persons = int(count or 0), int(distinct or 0)
    comparison = None
    if spec.conversion_event is not None:
        converted = not_converted = 0
        steps: dict[str, tuple[int, int]] = {}
        transitions: dict[tuple[str, str], tuple[int, int]] = {}
        for kind, source, target, yes, no in database.query(compile_comparison(spec, dialect, project_id=project)).rows:
            counts = (int(yes or 0), int(no or 0))
            if kind == "sessions":
                converted, not_converted = counts
            elif kind == "step":
                steps[str(source)] = counts
            else:
                transitions[(str(source), str(target))] = counts
        comparison = compare(spec, converted, not_converted, steps, transitions)
    return PathResult(spec, sessions, persons, order_edges(edges, spec.edge_limit), order_nodes(nodes), comparison)


# -- JSON ------------------------------------------------------------------------------


def from_json(document: object) -> PathSpec:
    """A PathSpec from the JSON the HTTP API and the CLI take; errors name the JSON path.

    >>> spec = from_json({"start": "/", "max_steps": 4, "cleaning": [{"pattern": "^/product/\\\\d+$", "alias": "/product/:id"}],
    ...                   "exclusions": ["/health"], "conversion_event": "purchase", "from": "2026-01-01", "to": "2026-02-01"})
    >>> spec.cleaning[0].alias, spec.max_steps, spec.date_range.end
    ('/product/:id', 4, datetime.date(2026, 2, 1))
    >>> from_json({"cleaning": [{"pattern": "(", "alias": "x"}]})
    Traceback (most recent call last):
    ...
    footfall.analytics.errors.SpecError: cleaning[0].pattern: bad regular expression '(': missing ), unterminated subpattern at position 0
    """
    # The shared JSON helpers live with the decoders, which import this module.
    from footfall.analytics import wire

    body = wire._object(
        document, "",
        {"node_type", "start", "end", "max_steps", "edge_limit", "events", "exclusions", "cleaning", "conversion_event",
         "from", "to", "time_zone", "filters"},
    )
    options: dict[str, Any] = {
        "cleaning": rules_from_json(body.get("cleaning"), "cleaning"),
        "filters": wire._filters(body.get("filters"), "filters"),
        "date_range": wire._date_range(body),
    }
    for key in ("events", "exclusions"):
        if key in body:
            options[key] = tuple(wire._list(body[key], key))
    for key in ("node_type", "start", "end", "max_steps", "edge_limit", "conversion_event", "time_zone"):
        if key in body:
            options[key] = body[key]
    return PathSpec(**options)


def rules_from_json(value: object, at: str) -> tuple[CleaningRule, ...]:
    from footfall.analytics import wire

    rules = []
    for index, item in enumerate(wire._list(value, at)):
        where = f"{at}[{index}]"
        rule = wire._object(item, where, {"pattern", "alias"})
        rules.append(wire._within(where, CleaningRule, rule.get("pattern"), rule.get("alias")))
    return tuple(rules)


# -- text --------------------------------------------------------------------------------


def format_paths(result: PathResult) -> str:
    """The result as text: the edges, where sessions ended, and the comparison.

    >>> spec = PathSpec()
    >>> print(format_paths(PathResult(spec, 2, 1, (PathEdge(0, "/", "/cart", 1, 1),),
    ...                               (PathNode(0, "/", 2, 1, 1), PathNode(1, "/cart", 1, 1, 1)), None)))
    2 sessions (1 person) with a path; the busiest edges:
    step  from  to     sessions  persons
       0  /     /cart         1        1
    <BLANKLINE>
    where sessions ended:
    step  page   sessions   ended
       0  /             2   50.0%
       1  /cart         1  100.0%
    """
    persons = f"{result.persons:,} person" + ("" if result.persons == 1 else "s")
    lines = [f"{result.sessions:,} sessions ({persons}) with a path; the busiest edges:"]
    what = "page" if result.spec.node_type == "pages" else "event"
    lines += _table(
        ("step", "from", "to", "sessions", "persons"),
        [(str(e.step), e.source, e.target, f"{e.sessions:,}", f"{e.persons:,}") for e in result.edges],
        right=(0, 3, 4),
    )
    ended = [node for node in result.nodes if node.dropped]
    if ended:
        lines += ["", "where sessions ended:"]
        lines += _table(
            ("step", what, "sessions", "ended"),
            [(str(n.step), n.node, f"{n.sessions:,}", f"{n.dropped / n.sessions:.1%}") for n in ended],
            right=(0, 2, 3),
        )
    comparison = result.comparison
    if comparison is not None:
        total = comparison.converted + comparison.dropped
        lines += ["", f"{comparison.converted:,} of {total:,} sessions converted ({comparison.conversion_event});"
                      " the steps most over-represented before converting:"]
        lines += _table(
            (what, "converted", "others", "difference", "lift"),
            [
                (s.node, f"{s.converted_share:.1%}", f"{s.dropped_share:.1%}", f"{100 * s.difference:+.1f} pp",
                 "-" if s.lift is None else f"{s.lift:.2f}x")
                for s in comparison.steps
            ],
            right=(1, 2, 3, 4),
        )
    return "\n".join(lines)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [cell.rjust(width) if k in right else cell.ljust(width) for k, (cell, width) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(parts).rstrip()

    return [line(header), *(line(row) for row in rows)]
