"""A small pure-Python paths analysis, written for clarity, to check the SQL against.

It follows docs/paths-heatmaps.md one session at a time, with none of the
SQL's machinery (no windows, joins or positions in the engine): sort the
session's events, clean them, drop the excluded and the repeated, cut the
path at its start and end, and count. Tests run it and the engine on the same
stored events and compare.

>>> from footfall.analytics.paths import PathSpec
>>> rows = [EventRow("p1", "e1", "page_view", 0, columns={"session_id": "s1", "path": "/"}),
...         EventRow("p1", "e2", "page_view", 1, columns={"session_id": "s1", "path": "/cart"}),
...         EventRow("p2", "e3", "page_view", 0, columns={"session_id": "s2", "path": "/"})]
>>> [(edge.source, edge.target, edge.sessions) for edge in paths(PathSpec(), rows).edges]
[('/', '/cart', 1)]
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from itertools import pairwise
from typing import Any

from footfall.analytics.common import epoch_ms
from footfall.analytics.paths import (
    PAGE_VIEW,
    PathComparison,
    PathEdge,
    PathNode,
    PathResult,
    PathSpec,
    compare,
    order_edges,
    order_nodes,
)
from footfall.analytics.reference import EventRow

Session = tuple[str, str]  # person, session id


def paths(spec: PathSpec, events: Iterable[EventRow], traits: Mapping[str, Mapping[str, Any]] | None = None) -> PathResult:
    """The paths over these events; ``traits`` are the persons' traits (for person filters)."""
    sessions = _sessions(spec, events, traits or {})
    walked = {}
    for key, steps in _steps(spec, sessions).items():
        path = _path(spec, steps)
        if path is not None:
            walked[key] = path

    edges: Counter[tuple[int, str, str]] = Counter()
    edge_persons: defaultdict[tuple[int, str, str], set[str]] = defaultdict(set)
    visits: Counter[tuple[int, str]] = Counter()
    node_persons: defaultdict[tuple[int, str], set[str]] = defaultdict(set)
    dropped: Counter[tuple[int, str]] = Counter()
    for (person, _), (numbered, ends_session, goes_on) in walked.items():
        for position, (step, node) in enumerate(numbered):
            visits[step, node] += 1
            node_persons[step, node].add(person)
            if position == len(numbered) - 1 and ends_session:
                dropped[step, node] += 1
            if position < len(numbered) - 1 and goes_on[position]:
                edge = (step, node, numbered[position + 1][1])
                edges[edge] += 1
                edge_persons[edge].add(person)

    kept = order_edges((PathEdge(*edge, count, len(edge_persons[edge])) for edge, count in edges.items()), spec.edge_limit)
    ends = {(edge.step, edge.source) for edge in kept} | {(edge.step + 1, edge.target) for edge in kept}
    nodes = order_nodes(PathNode(step, node, visits[step, node], len(node_persons[step, node]), dropped[step, node])
                        for step, node in ends)
    comparison = None
    if spec.conversion_event is not None:
        comparison = _comparison(spec, _steps(spec, _sessions(spec, events, traits or {}, conversion=True)))
    return PathResult(spec, len(walked), len({person for person, _ in walked}), kept, nodes, comparison)


def _sessions(
    spec: PathSpec, events: Iterable[EventRow], traits: Mapping[str, Mapping[str, Any]], conversion: bool = False
) -> dict[Session, list[EventRow]]:
    """Each session's events in the range that pass the filters, in time order (ties by event id)."""
    bounds = spec.range_utc()
    start, end = (epoch_ms(bounds[0]), epoch_ms(bounds[1])) if bounds else (None, None)
    person_filters = any(f.is_person_filter for f in spec.filters)
    sessions: defaultdict[Session, list[EventRow]] = defaultdict(list)
    for row in events:
        if start is not None and end is not None and not start <= row.timestamp_ms < end:
            continue
        if person_filters and row.person_id not in traits:
            continue
        wanted = spec.events or None
        if spec.node_type == "pages":
            wanted = (PAGE_VIEW,)
        is_conversion = conversion and row.event == spec.conversion_event
        if wanted is not None and row.event not in wanted and not is_conversion:
            continue
        if all(f.matches(row.properties, row.columns, traits.get(row.person_id, {})) for f in spec.filters):
            sessions[row.person_id, str(row.columns.get("session_id"))].append(row)
    return {key: sorted(rows, key=lambda r: (r.timestamp_ms, r.event_id)) for key, rows in sessions.items()}


def _node(spec: PathSpec, row: EventRow) -> str | None:
    """The row's cleaned step, or None when it is not a step (or is excluded)."""
    if spec.node_type == "pages":
        raw = row.columns.get("path")
        if row.event != PAGE_VIEW or raw is None:
            return None
    else:
        raw = row.event
        if spec.events and raw not in spec.events:
            return None
    cleaned = spec.clean(str(raw))
    if raw in spec.exclusions or cleaned in spec.exclusions:
        return None
    return cleaned


Step = tuple[str | None, bool]  # the step (None: the row is no step), whether the row is a conversion


def _steps(spec: PathSpec, sessions: Mapping[Session, list[EventRow]]) -> dict[Session, list[Step]]:
    """Each session's rows as steps, a step equal to the step before it left out
    (rows that are no step stay, as None, to mark where conversions fall)."""
    result = {}
    for key, rows in sessions.items():
        steps: list[Step] = []
        previous = None
        for row in rows:
            node = _node(spec, row)
            converting = spec.conversion_event is not None and row.event == spec.conversion_event
            if node is not None and node == previous:
                node = None
            elif node is not None:
                previous = node
            steps.append((node, converting))
        result[key] = steps
    return result


def _path(spec: PathSpec, steps: list[Step]) -> tuple[list[tuple[int, str]], bool, list[bool]] | None:
    """The numbered steps of a session's path, whether the session ended at its
    last one, and whether each step's edge to the next is in the path."""
    nodes = [node for node, _ in steps if node is not None]
    if not nodes:
        return None
    first = 0
    if spec.start is not None:
        if spec.start not in nodes:
            return None
        first = nodes.index(spec.start)
    last = len(nodes) - 1
    if spec.end is not None:
        after = first + 1 if spec.start is not None else 0
        ends = [i for i in range(after, len(nodes)) if nodes[i] == spec.end]
        if not ends:
            return None
        last = ends[0]
    if spec.backwards:
        positions = [i for i in range(first, last + 1) if i - last > -spec.max_steps]
        numbered = [(i - last, nodes[i]) for i in positions]
        goes_on = [i < last for i in positions]
    else:
        positions = [i for i in range(first, last + 1) if i - first < spec.max_steps]
        numbered = [(i - first, nodes[i]) for i in positions]
        goes_on = [i < last and i - first + 1 < spec.max_steps for i in positions]
    return numbered, positions[-1] == len(nodes) - 1, goes_on


def _comparison(spec: PathSpec, sessions: Mapping[Session, list[Step]]) -> PathComparison:
    converted = dropped = 0
    steps: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])
    transitions: defaultdict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for rows in sessions.values():
        nodes = [node for node, _ in rows if node is not None]
        if not nodes or (spec.start is not None and spec.start not in nodes):
            continue
        start = 0 if spec.start is None else next(i for i, (node, _) in enumerate(rows) if node == spec.start)
        after = start + 1 if spec.start is not None else 0
        conversion = next((i for i in range(after, len(rows)) if rows[i][1]), None)
        before = [node for node, _ in rows[start:conversion] if node is not None]
        kind = 0 if conversion is not None else 1
        if conversion is not None:
            converted += 1
        else:
            dropped += 1
        for node in set(before):
            steps[node][kind] += 1
        for pair in set(pairwise(before)):
            transitions[pair][kind] += 1
    return compare(
        spec,
        converted,
        dropped,
        {node: (c[0], c[1]) for node, c in steps.items()},
        {pair: (c[0], c[1]) for pair, c in transitions.items()},
    )
