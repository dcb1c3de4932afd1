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
from functools import partial
from typing import Any, Literal, get_args

from footfall.analytics.common import (
    DateRange,
    as_tuple,
    check_range,
    epoch_ms,
    events_where,
    page_events_source,
    zone,
)
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

_TEMPLATES: Mapping[str, Mapping[str, str]] = {
    # Every match replaced; the alias is literal text (backslashes are refused,
    # so the engines' \1 group references never come into play).
    "duckdb": {
        "replace_all": "regexp_replace({s}, {pattern}, {alias}, 'g')",
        # List functions for the walk of each session (lists are 1-based;
        # NULL stands for "none").
        "collect": "list({x})",
        "sort": "list_sort({list})",
        "map": "list_transform({list}, lambda {var}: {body})",
        "fail": "error({message})",
        "first_where": "list_filter(range(1, len({list}) + 1), lambda {var}: {body})[1]",
        "filter_indexed": "list_filter({list}, lambda {var}, {index}: {body})",
        "exists_pair": "coalesce(list_bool_or(list_transform(range(1, len({list})), lambda {var}: {body})), false)",
        "slice": "{list}[{low}:{high}]",
        "length": "len({list})",
        "each_index": "unnest(range(1, len({list}) + 1))",
        # A session's steps in order of (time, event id, step): sorting
        # lists of strings costs more than the rest of the query, so only the
        # sessions with a tie are sorted so (see _sessions).
        "in_order_with_ids": "list_transform(list_sort(list({{'ts': ts, 'id': event_id, 'node': node_id}})), lambda e: e.node)",
    },
    "clickhouse": {
        "replace_all": "replaceRegexpAll({s}, {pattern}, {alias})",
        "first_where": "arrayFirstOrNull({var} -> {body}, arrayEnumerate({list}))",
        "filter_indexed": "arrayFilter(({var}, {index}) -> {body}, {list}, arrayEnumerate({list}))",
        "slice": "arraySlice({list}, {low}, {high} - {low} + 1)",
        "length": "length({list})",
    },
}

# The numbers of the start and the end step (the others come after them).
_START_ID = 1
_END_ID = 2


def _render(dialect: Dialect, template: str, **parts: str) -> str:
    return _TEMPLATES[dialect.name][template].format(**parts)


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
        column = _render(dialect, "replace_all", s=column, pattern=dialect.quote(rule.pattern), alias=dialect.quote(rule.alias))
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


# -- the compiler: the plan of the paths ---------------------------------------------
#
# Steps become small integers first: each distinct raw step (page path or
# event name) of the range is cleaned once, and numbered by its cleaned
# name (the start step is 1, the end step 2), in a small ``dictionary``.
# Each session's events are then gathered into one list (one grouping by
# person and session), sorted, and walked with list functions: repeats
# merged, the path cut at its start, end and max_steps.
# Only then are the paths unnested, one row per step, and counted. Sorting
# the events of every session for window functions, twice, over the
# person and session strings, cost several times more.


def _raw_step(spec: PathSpec) -> str:
    return "path" if spec.node_type == "pages" else "event"


def _steps_where(
    spec: PathSpec, dialect: Dialect, project_id: str, filters: Sequence[Filter], *, listed_names: bool = False
) -> str:
    """The events that may be steps: in the range, of the step events.

    The main scan names the step events plainly (``event IN (...)``), the
    re-read of tied sessions with the dialect's list form
    (``listed_names``). On DuckDB the two spellings plan differently (a scan
    filter, a join with a list), which keeps DuckDB from sharing one scan of
    every step event, event ids and all, between both; and the join makes
    the tied sessions the small side it hashes."""
    bounds = spec.range_utc()
    names = [PAGE_VIEW] if spec.node_type == "pages" else list(spec.events) or None
    where = events_where(dialect, project_id, since=bounds[0] if bounds else None, filters=filters, events=names)
    if names is not None and not listed_names:
        quoted = ", ".join(dialect.quote(name) for name in sorted(set(names)))
        where = where.replace(dialect.render("one_of", x="event", values=quoted), f"event IN ({quoted})")
    if bounds:
        where += f"\n  AND timestamp < {dialect.timestamp(bounds[1])}"  # the range is half open
    return where


def _dictionary(spec: PathSpec, dialect: Dialect, project_id: str) -> list[tuple[str, str]]:
    """CTEs ending in ``dictionary``: every raw step of the range with its
    cleaned name (``node``) and number (``node_id``); excluded steps are left out."""
    # No filters here: a step that no filtered event has only costs a row.
    where = _steps_where(spec, dialect, project_id, filters=())
    raw = _raw_step(spec)
    cleaned = f"SELECT raw_node, {clean_sql(dialect, spec.cleaning, 'raw_node')} AS node FROM raw_nodes"
    if spec.exclusions:
        excluded = ", ".join(dialect.quote(name) for name in spec.exclusions)
        cleaned = f"SELECT * FROM ({cleaned}) AS c WHERE NOT (raw_node IN ({excluded}) OR node IN ({excluded}))"
    special = []
    if spec.start is not None:
        special.append(f"WHEN node = {dialect.quote(spec.start)} THEN {_START_ID}")
    if spec.end is not None:
        special.append(f"WHEN node = {dialect.quote(spec.end)} THEN {_END_ID}")
    number = f"CAST(dense_rank() OVER (ORDER BY node) AS BIGINT) + {_END_ID}"
    if special:
        number = f"CASE {' '.join(special)} ELSE {number} END"
    return [
        ("raw_nodes", f"SELECT DISTINCT {raw} AS raw_node FROM events\nWHERE {where}\n  AND {raw} IS NOT NULL"),
        ("dictionary", f"SELECT raw_node, node, {number} AS node_id\nFROM ({cleaned}) AS cleaned"),
    ]


def _steps_scan(
    spec: PathSpec, dialect: Dialect, project_id: str, columns: str, *, listed_names: bool = False, only: str | None = None
) -> str:
    """One row per event that is a step, with ``columns`` (over the events'
    columns and the dictionary's ``d.node_id``); ``only`` picks the persons."""
    where = _steps_where(spec, dialect, project_id, filters=spec.filters, listed_names=listed_names)
    if only is not None:
        where += f"\n  AND person_id IN ({only})"
    return f"SELECT {columns}\nFROM events INNER JOIN dictionary AS d ON {_raw_step(spec)} = d.raw_node\nWHERE {where}"


def _time_key(spec: PathSpec) -> tuple[int, int]:
    """How DuckDB packs an event's time and step number into one sort key,
    ``(ms - base) * steps + node_id``: the base, and the bound on step numbers.

    The times of a date range take the bits its length needs; without one,
    those from 1830 to 2109 (43 bits). The step numbers get the rest of 62."""
    bounds = spec.range_utc()
    if bounds:
        base = epoch_ms(bounds[0])
        time_bits = (epoch_ms(bounds[1]) - base).bit_length()
    else:
        base, time_bits = -(1 << 42), 43
    return base, 1 << (62 - time_bits)


def _sessions(spec: PathSpec, dialect: Dialect, project_id: str) -> tuple[list[tuple[str, str]], frozenset[str]]:
    """CTEs ending in ``sessions`` (DuckDB): person_id and ``nodes``, the
    session's step numbers in order of time, then event id; and the CTEs to
    compute once.

    Events of the same millisecond are rarely different steps, and carrying
    every event id (a string) through the sort costs more than the rest of
    the walk. So each session is first gathered as one list of integers, time
    then step number (``_time_key``), which sorts by itself; its ties are
    noted, and only the persons with a tie are read again, with event ids."""
    render = partial(_render, dialect)
    ts = dialect.render("epoch_ms", x="timestamp")
    with_ids = f"person_id, session_id, {ts} AS ts, event_id, d.node_id AS node_id"
    # One integer per event, time then step: a list of them sorts by itself.
    base, steps = _time_key(spec)
    too_many = dialect.quote(
        f"paths: over {steps - _END_ID - 1:,} distinct steps to sort on DuckDB; group them with cleaning rules"
        " or give a shorter date range"
    )
    key = f"CASE WHEN d.node_id >= {steps} THEN {render('fail', message=too_many)}"
    if not spec.range_utc():
        too_early = dialect.quote("paths: events before 1830; give a date range")
        key += f" WHEN {ts} < {base} THEN {render('fail', message=too_early)}"
    key += f" ELSE ({ts} - {base}) * {steps} + d.node_id END"
    same = f"keys[i] // {steps} = keys[i + 1] // {steps} AND keys[i] <> keys[i + 1]"
    ctes = [
        ("scanned", _steps_scan(spec, dialect, project_id, f"person_id, session_id, {key} AS sort_key")),
        (
            "listed",
            f"SELECT person_id, session_id, {render('sort', list=render('collect', x='sort_key'))} AS keys\n"
            "FROM scanned GROUP BY person_id, session_id",
        ),
        (
            "checked",
            # A tie: two steps of one millisecond that differ (their order is
            # the event ids'); equal ones may go in any order.
            f"SELECT person_id, session_id, {render('map', list='keys', var='k', body=f'k % {steps}')} AS nodes,\n"
            f"  {render('exists_pair', list='keys', var='i', body=same)} AS tied\n"
            "FROM listed",
        ),
        # The persons with a tie: all their sessions, sorted with event ids;
        # then the tied sessions among them replace their first sort.
        (
            "tied_scanned",
            _steps_scan(spec, dialect, project_id, with_ids, listed_names=True, only="SELECT person_id FROM checked WHERE tied"),
        ),
        (
            "tied_sorted",
            f"SELECT person_id, session_id, {_render(dialect, 'in_order_with_ids')} AS nodes\n"
            "FROM tied_scanned GROUP BY person_id, session_id",
        ),
        (
            "sessions",
            "SELECT person_id, nodes FROM checked WHERE NOT tied\nUNION ALL\n"
            "SELECT t.person_id AS person_id, t.nodes AS nodes FROM tied_sorted AS t\n"
            "  INNER JOIN (SELECT person_id, session_id FROM checked WHERE tied) AS c"
            " ON t.person_id = c.person_id AND t.session_id = c.session_id",
        ),
    ]
    return ctes, frozenset({"checked"})


def _walk(spec: PathSpec, dialect: Dialect, start: str, end: str) -> list[tuple[str, str]]:
    """CTEs from ``sessions`` (person_id, ``nodes`` in order) to ``paths``
    (one row per path: person_id, its steps ``path``, the number of its first
    step, whether the session ended at its last). ``start`` and ``end`` are
    what a start or an end step's entry in ``nodes`` equals (SQL)."""
    render = partial(_render, dialect)
    # A step equal to the one before it is merged into it.
    merged = render("filter_indexed", list="nodes", var="x", index="i", body="i = 1 OR x <> nodes[i - 1]")
    ctes = [("merged", f"SELECT person_id, {merged} AS nodes FROM sessions")]
    # Positions (1-based) of the path's first and last steps in the session:
    # the first start step, the first end step after it; NULL if none.
    if spec.start is not None:
        first = render("first_where", list="nodes", var="i", body=f"nodes[i] = {start}")
    else:
        first = "1"
    if spec.end is not None:
        after = "i > first_at AND " if spec.start is not None else ""
        last = render("first_where", list="nodes", var="i", body=f"{after}nodes[i] = {end}")
    else:
        last = render("length", list="nodes")
    ctes.append(("anchored", f"SELECT person_id, nodes, {first} AS first_at FROM merged"))
    ctes.append(("bounded", f"SELECT person_id, nodes, first_at, {last} AS end_at FROM anchored"))
    limit = spec.max_steps
    if spec.backwards:
        low, high = f"greatest(first_at, end_at - {limit - 1})", "end_at"
        first_step = f"{low} - end_at"
    else:
        low, high = "first_at", f"least(end_at, first_at + {limit - 1})"
        first_step = "0"
    ctes.append(
        (
            "paths",
            f"SELECT person_id, {render('slice', list='nodes', low=low, high=high)} AS path, {first_step} AS first_step,\n"
            f"  CASE WHEN {high} = {render('length', list='nodes')} THEN 1 ELSE 0 END AS ended\n"
            "FROM bounded WHERE first_at IS NOT NULL AND end_at IS NOT NULL",
        )
    )
    return ctes


def _with(ctes: list[tuple[str, str]], body: str, dialect: Dialect, once: frozenset[str] = frozenset()) -> str:
    """``once``: the CTEs read more than once, to compute once."""
    parts = ",\n".join(f"{name} AS {'MATERIALIZED ' if name in once else ''}(\n{sql}\n)" for name, sql in ctes)
    return f"WITH {parts}\n{body}{dialect.query_suffix}"


def compile_paths(spec: PathSpec, dialect: str, *, project_id: str = "default") -> str:
    """Rows of ``kind`` 'edge' (the kept edges), 'node' (their nodes) and
    'total' (paths and persons): kind, step, source, target, sessions, persons, dropped."""
    chosen = dialect_named(dialect)
    if chosen.name == "clickhouse":
        return _clickhouse_paths(spec, chosen, project_id)
    ctes, once = _sessions(spec, chosen, project_id)
    ctes = [*_dictionary(spec, chosen, project_id), *ctes]
    end_id = _START_ID if spec.end is not None and spec.end == spec.start else _END_ID
    ctes += _walk(spec, chosen, str(_START_ID), str(end_id))
    ctes += [
        ("indexed", f"SELECT person_id, path, first_step, ended, {_render(chosen, 'each_index', list='path')} AS i FROM paths"),
        (
            "walked",
            # One row per step of every path: its number, node, the next
            # node, whether the path goes on to it and whether the session
            # ended there.
            "SELECT person_id, first_step + i - 1 AS step, path[i] AS node_id, path[i + 1] AS next_id,\n"
            "  CASE WHEN i < len(path) THEN 1 ELSE 0 END AS has_edge,\n"
            "  CASE WHEN ended = 1 AND i = len(path) THEN 1 ELSE 0 END AS dropped\n"
            "FROM indexed",
        ),
        ("names", "SELECT DISTINCT node, node_id FROM dictionary"),
        (
            "edges",
            "SELECT step, node_id AS source_id, next_id AS target_id, count(*) AS sessions, count(DISTINCT person_id) AS persons\n"
            "FROM walked WHERE has_edge = 1 GROUP BY step, node_id, next_id",
        ),
        (
            # (ties at the limit go by the steps' names)
            "top_edges",
            "SELECT e.step AS step, s.node AS source, t.node AS target, e.source_id AS source_id, e.target_id AS target_id,"
            " e.sessions AS sessions, e.persons AS persons\n"
            "FROM edges AS e INNER JOIN names AS s ON e.source_id = s.node_id INNER JOIN names AS t ON e.target_id = t.node_id\n"
            f"ORDER BY sessions DESC, step, source, target LIMIT {spec.edge_limit}",
        ),
        (
            "kept_nodes",
            "SELECT DISTINCT step, node_id FROM (SELECT step, source_id AS node_id FROM top_edges\n"
            "  UNION ALL SELECT step + 1 AS step, target_id AS node_id FROM top_edges) AS ends",
        ),
        (
            "node_totals",
            "SELECT w.step AS step, w.node_id AS node_id, count(*) AS sessions, count(DISTINCT w.person_id) AS persons,"
            " sum(w.dropped) AS dropped\n"
            "FROM walked AS w INNER JOIN kept_nodes AS k ON w.step = k.step AND w.node_id = k.node_id\nGROUP BY w.step, w.node_id",
        ),
    ]
    body = (
        "SELECT 'edge' AS kind, step, source, target, sessions, persons, 0 AS dropped FROM top_edges\n"
        "UNION ALL SELECT 'node' AS kind, n.step AS step, m.node AS source, '' AS target, n.sessions AS sessions,"
        " n.persons AS persons, n.dropped AS dropped\n"
        "FROM node_totals AS n INNER JOIN names AS m ON n.node_id = m.node_id\n"
        "UNION ALL SELECT 'total', 0, '', '', count(*), count(DISTINCT person_id), 0 FROM paths"
    )
    # The paths are read for the edges, their nodes and the totals.
    return _with(ctes, body, chosen, once | {"paths"})


# -- the plan of the paths on ClickHouse ---------------------------------------------
#
# ClickHouse computes a CTE again wherever it is read, unless it is
# MATERIALIZED, which writes it to a temporary table; so its plan reads the
# events once and materializes only the sorted sessions. Steps stay strings
# (no dictionary to join), sorted by time alone, and only the persons with a
# tie are read again, with event ids (as on DuckDB). After the same walk,
# each path fans out into rows for the totals, its nodes and its edges,
# counted in one grouping; the busiest edges and their nodes are then picked
# from that grouping with array functions, in one row.


def _clickhouse_paths(spec: PathSpec, dialect: Dialect, project_id: str) -> str:
    raw = _raw_step(spec)
    node = clean_sql(dialect, spec.cleaning, raw)
    where = _steps_where(spec, dialect, project_id, filters=spec.filters) + f"\n  AND {raw} IS NOT NULL"
    if spec.exclusions:
        excluded = ", ".join(dialect.quote(name) for name in spec.exclusions)
        dropped = f"{raw} IN ({excluded})" if node == raw else f"{raw} IN ({excluded}) OR {node} IN ({excluded})"
        where += f"\n  AND NOT ({dropped})"
    ts = dialect.render("epoch_ms", x="timestamp")
    # Page views are page events. In their copy ordered by page, then event,
    # each page's views lie together, so the scan skips the granules of the
    # other events (six in seven of them) unread.
    source = page_events_source(dialect, spec.filters) if spec.node_type == "pages" else "events"
    # Sessions are grouped by a 64-bit hash of the two ids, which cut the
    # paths' time on chdb by a sixth against grouping by the long strings.
    # Two sessions sharing a hash would make one path: for n sessions a chance
    # under n²/2^65 (4e-9 for the 400,000 sessions of 10M events).
    by_time = (
        f"SELECT any(person_id) AS person, arraySort((node, ts) -> ts, groupArray({node}), groupArray({ts})) AS nodes,"
        f" arraySort(groupArray({ts})) AS times\nFROM {source}\nWHERE {where}\nGROUP BY cityHash64(person_id, session_id)"
    )
    tied_persons = "SELECT person_id FROM checked WHERE tied"
    ctes = [
        (
            "checked",
            # A tie: two steps of one millisecond that differ (their order is
            # the event ids'); equal ones may go in any order.
            "SELECT person AS person_id, nodes, arrayExists(i -> times[i] = times[i + 1] AND nodes[i] <> nodes[i + 1],"
            f" arrayEnumerate(arrayPopBack(nodes))) AS tied\nFROM ({by_time}) AS by_time",
        ),
        (
            "tied_sorted",
            f"SELECT person_id, arraySort((node, ts, id) -> (ts, id), groupArray({node}), groupArray({ts}), groupArray(event_id))"
            f" AS nodes\nFROM {source}\nWHERE {where}\n  AND person_id IN ({tied_persons})\nGROUP BY person_id, session_id",
        ),
        (
            "sessions",
            # Persons are counted by a 64-bit hash too, taken once per session
            # rather than by uniqExact for every row below (two persons sharing
            # one: a chance under n²/2^65 for n persons).
            "SELECT cityHash64(person_id) AS person_id, nodes FROM (\n"
            f"  SELECT person_id, nodes FROM checked WHERE person_id NOT IN ({tied_persons})\n"
            "  UNION ALL SELECT person_id, nodes FROM tied_sorted) AS sorted",
        ),
        *_walk(spec, dialect, dialect.quote(spec.start or ""), dialect.quote(spec.end or "")),
        (
            "counted",
            # kind 0: the path (for the totals); 1: a node at its step (and
            # whether the session ended there); 2: an edge from a step to the next.
            "SELECT r.1 AS kind, r.2 AS step, r.3 AS source, r.4 AS target,"
            " count() AS sessions, uniqExact(person_id) AS persons, sum(r.5) AS dropped\n"
            "FROM paths ARRAY JOIN arrayConcat(\n"
            "  [(0, toInt64(0), '', '', 0)],\n"
            "  arrayMap(i -> (1, toInt64(first_step + i - 1), path[i], '', if(ended = 1 AND i = length(path), 1, 0)),"
            " arrayEnumerate(path)),\n"
            "  arrayMap(i -> (2, toInt64(first_step + i - 1), path[i], path[i + 1], 0), range(1, length(path)))) AS r\n"
            "GROUP BY kind, step, source, target",
        ),
        (
            "summary",
            # (ties at the limit go by the steps' names)
            "SELECT arraySlice(arraySort(e -> (-e.4, e.1, e.2, e.3),"
            " groupArrayIf((step, source, target, sessions, persons), kind = 2)), 1, "
            f"{spec.edge_limit}) AS top,\n"
            "  groupArrayIf((step, source, sessions, persons, dropped), kind = 1) AS nodes,\n"
            "  anyIf((sessions, persons), kind = 0) AS total\n"
            "FROM counted",
        ),
        (
            "picked",
            "SELECT arrayConcat(\n"
            "  arrayMap(e -> ('edge', e.1, e.2, e.3, e.4, e.5, toUInt64(0)), top),\n"
            "  arrayMap(n -> ('node', n.1, n.2, '', n.3, n.4, n.5), arrayFilter(n -> has(kept, (n.1, n.2)), nodes)),\n"
            "  [('total', toInt64(0), '', '', total.1, total.2, toUInt64(0))]) AS rows\n"
            "FROM (SELECT *, arrayConcat(arrayMap(e -> (e.1, e.2), top), arrayMap(e -> (e.1 + 1, e.3), top)) AS kept"
            " FROM summary) AS ends",
        ),
    ]
    body = "SELECT r.1 AS kind, r.2 AS step, r.3 AS source, r.4 AS target, r.5 AS sessions, r.6 AS persons, r.7 AS dropped\n"
    body += "FROM picked ARRAY JOIN rows AS r"
    return _with(ctes, body, dialect, frozenset({"checked"}))


# -- the plan of the comparison ------------------------------------------------------------
#
# Window functions over each session's events (the conversion events among
# them), ordered by time and event id.


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
