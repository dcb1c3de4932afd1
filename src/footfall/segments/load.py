"""Per-person stream state loaded from the store with SQL: the same streams
(event name and filters, through the filters' SQL), windows and counts the
stream evaluator keeps event by event, read in a few grouped queries.

This is how an engine starts on a store that already holds events
(``SegmentEngine.backfill`` and ``SegmentEngine.restore``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pyarrow as pa

from footfall.events.record import SYSTEM_EVENTS
from footfall.segments.evaluate import PersonState, Plan, Stream, StreamState, window_start
from footfall.segments.sql import Context, engagement_hours_sql, make_context
from footfall.store.database import Database


def _rows(table: pa.Table, *columns: str) -> Iterator[tuple[Any, ...]]:
    return zip(*(table[column].to_pylist() for column in columns), strict=True)


def load_states(database: Database, plan: Plan, now_ms: int) -> dict[str, PersonState]:
    """Every person's state at ``now_ms``, as the stream evaluator would hold it
    after seeing every stored event."""
    context = make_context(
        database.backend.dialect, database.project_id, now_ms, engagement=database.config.engagement
    )
    streams = len(plan.streams)
    states: dict[str, PersonState] = {}

    def state_of(person: str) -> PersonState:
        state = states.get(person)
        if state is None:
            state = states[person] = PersonState(person, streams)
        return state

    persons = database.persons_arrow().select(["person_id", "traits"])
    for person, traits in _rows(persons, "person_id", "traits"):
        state = state_of(person)
        if plan.traits:
            state.traits = msgspec.json.decode(traits)

    ms = context.ms
    seen = _query(
        database,
        f"SELECT person_id, min({ms}) AS first_ms, max({ms}) AS last_ms FROM events"
        f" WHERE {context.events_where()} GROUP BY person_id",
    )
    for person, first, last in _rows(seen, "person_id", "first_ms", "last_ms"):
        state = state_of(person)
        state.first_seen, state.last_seen = int(first), int(last)

    if plan.needs_sessions:
        since = None if plan.sessions_window_ms is None else window_start(now_ms, plan.sessions_window_ms)
        sessions = _query(
            database,
            f"SELECT person_id, session_id, max({ms}) AS last_ms FROM events"
            f" WHERE {context.events_where(since_ms=since)} GROUP BY person_id, session_id",
        )
        for person, session, last in _rows(sessions, "person_id", "session_id", "last_ms"):
            state_of(person).sessions[session] = int(last)

    for stream in plan.streams:
        _load_stream(database, context, stream, now_ms, state_of)

    if plan.engagement:
        hourly = engagement_hours_sql(context)
        if hourly is not None:
            for person, hour, weight in _rows(_query(database, hourly), "person_id", "hour", "weight"):
                if weight:
                    state_of(person).engagement[int(hour)] = float(weight)
    return states


def _load_stream(
    database: Database, context: Context, stream: Stream, now_ms: int, state_of: Callable[[str], PersonState]
) -> None:
    ms = context.ms
    index, event, where = stream.index, stream.event, stream.where
    totals = _query(
        database,
        f"SELECT person_id, count(*) AS n, max({ms}) AS last_ms FROM events"
        f" WHERE {context.events_where(event=event, where=where)} GROUP BY person_id",
    )
    for person, count, last in _rows(totals, "person_id", "n", "last_ms"):
        kept = StreamState()
        kept.total, kept.latest = int(count), int(last)
        state_of(person).streams[index] = kept
    if not stream.keep_times:
        return
    since = None if stream.window_ms is None else window_start(now_ms, stream.window_ms)
    times = _query(
        database,
        f"SELECT person_id, {ms} AS t FROM events"
        f" WHERE {context.events_where(event=event, where=where, since_ms=since)} ORDER BY person_id, t",
    )
    for person, moment in _rows(times, "person_id", "t"):
        counted = state_of(person).streams[index]
        assert counted is not None  # every timed event was counted above
        counted.times.append(int(moment))


def load_watermark(database: Database) -> int | None:
    """The latest ``received_at`` of the stored events (epoch ms)."""
    context = make_context(database.backend.dialect, database.project_id, 0)
    received = context.dialect.render("epoch_ms", x="received_at")
    table = _query(database, f"SELECT max({received}) AS latest FROM events WHERE project_id = {context.quote(database.project_id)}")
    latest = table["latest"][0].as_py() if table.num_rows else None
    return int(latest) if latest is not None else None


def persons_received_since(database: Database, since_ms: int) -> list[str]:
    """Persons with events received at or after ``since_ms``."""
    context = make_context(database.backend.dialect, database.project_id, 0)
    received = context.dialect.render("epoch_ms", x="received_at")
    table = _query(
        database,
        f"SELECT DISTINCT person_id FROM events WHERE project_id = {context.quote(database.project_id)}"
        f" AND {received} >= {since_ms}",
    )
    return [str(person) for person in table["person_id"].to_pylist()]


def stored_changes_after(database: Database, after_ms: int | None) -> list[tuple[str, str, str, int]]:
    """The membership changes the store took after ``after_ms`` (all with None; their
    ``received_at``, which the writer keeps increasing from one write to the
    next), as (kind, segment id, person, epoch ms), in the order they were
    made: by write, and within one write by date (a write holds the due
    re-evaluations first, in time order, then the changes at its time)."""
    context = make_context(database.backend.dialect, database.project_id, 0)
    received = context.dialect.render("epoch_ms", x="received_at")
    stamp = context.dialect.render("epoch_ms", x="timestamp")
    names = ", ".join(context.quote(name) for name in SYSTEM_EVENTS)
    table = _query(
        database,
        f"SELECT event, properties, person_id, {stamp} AS at FROM events"
        f" WHERE project_id = {context.quote(database.project_id)} AND event IN ({names})"
        + (f" AND {received} > {after_ms}" if after_ms is not None else "")
        + " ORDER BY received_at, timestamp, event_id",
    )
    changes = []
    for event, properties, person, at in _rows(table, "event", "properties", "person_id", "at"):
        segment = msgspec.json.decode(properties).get("segment_id") if properties else None
        if isinstance(segment, str):
            changes.append((str(event), segment, str(person), int(at)))
    return changes


def _query(database: Database, sql: str) -> pa.Table:
    return database.query_arrow(sql)

