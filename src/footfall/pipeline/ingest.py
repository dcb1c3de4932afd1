"""From normalised events to stored ones.

Per batch: order by time, resolve each message's person (identify and alias
change the identity graph as they come), assign sessions, fold traits and
activity into person rows, then write identities, merges, events and persons
through the database's single writer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from footfall.durations import parse_duration
from footfall.errors import IngestError
from footfall.events.record import EVENT_SCHEMA, TIMESTAMP, Event, conform, events_to_table
from footfall.identity.resolver import IdentityResolver
from footfall.pipeline.known_ids import KnownIds
from footfall.pipeline.sessions import SessionTail, assign_sessions, session_id
from footfall.profiles.live import LiveProfiles
from footfall.segments.live import LiveSegments
from footfall.store.database import Database
from footfall.store.schema import PERSONS


@dataclass
class IngestReport:
    events: int = 0
    duplicates: int = 0  # rows dropped: an event with the same id was already stored or earlier in the batch
    new_persons: int = 0
    merges: int = 0


@dataclass
class PersonState:
    first_seen_ms: int
    last_seen_ms: int
    user_id: str | None
    traits: dict[str, Any]
    tail: SessionTail
    traits_json: str | None = None  # ``traits`` encoded, kept until they change


def _to_ms(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    milliseconds: np.ndarray = pc.cast(values, pa.int64()).to_numpy(zero_copy_only=False)
    return milliseconds


def _from_ms(values: list[int]) -> pa.Array:
    return pc.cast(pa.array(values, pa.int64()), EVENT_SCHEMA.field("timestamp").type)


# Hashes of ids beyond twice what the last load found (plus this) trigger a rebuild.
REMEMBERED_IDS_SLACK = 1_000_000
LATE_EVENTS = timedelta(days=1)


class Pipeline:
    """Ingests batches of events into one database.

    State (the identity graph and each person's latest session) is loaded from
    the store on first use and kept in memory, so consecutive batches cost no
    extra reads.
    """

    def __init__(
        self,
        database: Database,
        *,
        remember_ids: bool = False,
        profiles: LiveProfiles | None = None,
        segments: LiveSegments | None = None,
    ) -> None:
        """``remember_ids``: keep hashes of the stored ids (``KnownIds``), so
        the duplicate check asks the store only about ids it may hold. Bulk
        loads ask the store every time; a long-running worker remembers, so
        its checks do not scan a week of events per batch. ``profiles``, if
        given, are loaded from the store with the rest of the state and then
        kept up to date with each batch stored; so are ``segments``, which
        write their membership changes to the store as events."""
        self.database = database
        self.project_id = database.project_id
        self.gap_ms = int(database.config.sessions.gap.total_seconds() * 1000)
        self.dedup_window = parse_duration(database.config.intake.dedup_window)
        self._resolver: IdentityResolver | None = None
        self._persons: dict[str, PersonState] = {}
        self.remember_ids = remember_ids
        self._known: KnownIds | None = None
        self._known_loaded = 0
        self.profiles = profiles
        self._profiles_loaded = False
        self.segments = segments
        self._segments_loaded = False

    def _load_state(self) -> IdentityResolver:
        if self.remember_ids and (self._known is None or len(self._known) > 2 * self._known_loaded + REMEMBERED_IDS_SLACK):
            # (Re)built from the store when a pipeline starts and, as the hashes
            # of ids older than the window pile up, when they have doubled. They
            # reach a day further back than the window, so events that arrive
            # up to a day late are checked from memory too.
            self._known = KnownIds.load(self.database, datetime.now(UTC) - self.dedup_window - LATE_EVENTS)
            self._known_loaded = len(self._known)
        if self.profiles is not None and not self._profiles_loaded:
            self.profiles.load()
            self._profiles_loaded = True
        if self.segments is not None and not self._segments_loaded:
            self.segments.load()
            self._segments_loaded = True
        if self._resolver is None:
            self._resolver = IdentityResolver.from_identities(self.project_id, self.database.identity_rows())
            persons = self.database.persons_arrow().to_pylist()
            for row in persons:
                self._persons[row["person_id"]] = PersonState(
                    first_seen_ms=_epoch_ms(row["first_seen"]),
                    last_seen_ms=_epoch_ms(row["last_seen"]),
                    user_id=row["user_id"],
                    traits=msgspec.json.decode(row["traits"]),
                    tail=SessionTail(_epoch_ms(row["last_session_start"]), _epoch_ms(row["last_seen"])),
                    traits_json=row["traits"],
                )
        return self._resolver

    def prepare(self) -> None:
        """Load the state from the store now rather than with the first batch."""
        self._load_state()

    def person_for(self, kind: str, value: str) -> str | None:
        """The person an identity (``"user"`` or ``"anonymous"``) belongs to now
        (None before the state is loaded)."""
        resolver = self._resolver
        if resolver is None:
            return None
        return (resolver.by_user if kind == "user" else resolver.by_anonymous).get(value)

    def ingest_events(self, events: Iterable[Event]) -> IngestReport:
        return self.ingest(events_to_table(list(events)))

    def ingest(self, table: pa.Table) -> IngestReport:
        """Resolve and store a batch of events (``EVENT_SCHEMA`` columns)."""
        if table.num_rows == 0:
            return IngestReport()
        table = conform(table)
        resolver = self._load_state()
        self._check_project(table)
        received = table.num_rows
        table = self._drop_duplicates(table)
        if table.num_rows == 0:
            return IngestReport(duplicates=received)
        table = table.take(pc.sort_indices(table, [("timestamp", "ascending")]))

        person_ids = self._resolve_persons(resolver, table)
        new_identities, merges = resolver.take_changes()
        table = table.set_column(table.schema.get_field_index("person_id"), "person_id", person_ids)

        timestamps = _to_ms(table["timestamp"])
        sessions = assign_sessions(person_ids, timestamps, self.gap_ms, _Tails(self._persons))
        table = table.set_column(table.schema.get_field_index("session_id"), "session_id", sessions.session_ids)

        known_before = set(self._persons)
        for old, new in merges:
            self._fold_merged(old, new)
        persons = self._update_persons(table, person_ids, timestamps, sessions.tails, resolver)

        try:
            with self.database.writer():
                self.database.save_identities(new_identities)
                self.database.merge_persons(merges, stored=known_before)
                self.database.insert("events", table)
                self.database.upsert(PERSONS.name, persons)
        except BaseException:
            # The store did not take the batch: forget the in-memory state
            # built from it, and reload from the store on the next batch.
            self._resolver = None
            self._persons.clear()
            raise
        if self._known is not None:
            self._known.add(table["event_id"].combine_chunks())
        if self.profiles is not None:
            self.profiles.record(table, persons, merges)
        if self.segments is not None:
            self.segments.record(table, persons, merges)
        return IngestReport(
            events=table.num_rows,
            duplicates=received - table.num_rows,
            new_persons=len(set(self._persons) - known_before),
            merges=len(merges),
        )

    def _drop_duplicates(self, table: pa.Table) -> pa.Table:
        """Exactly once into the store: drop rows whose event id is stored already
        (within the dedup window of the batch's time span) or repeats in the batch."""
        if pc.count_distinct(table["event_id"]).as_py() < table.num_rows:
            positions = pa.table({"event_id": table["event_id"], "_row": pa.array(np.arange(table.num_rows))})
            first = positions.group_by("event_id", use_threads=False).aggregate([("_row", "min")])
            table = table.take(pc.take(first["_row_min"], pc.sort_indices(first["_row_min"])))
        candidates = table
        if self._known is not None:
            # Ask the store only about ids it may hold, or whose window reaches
            # back before what the hashes cover.
            uncovered = pc.less(table["timestamp"], pa.scalar(self._known.since + self.dedup_window, TIMESTAMP))
            maybe = pa.array(self._known.may_hold(table["event_id"].to_pylist()))
            candidates = table.filter(pc.or_(maybe, uncovered))
        bounds = pc.min_max(candidates["timestamp"]).as_py()
        if bounds["min"] is None:
            return table
        stored = self.database.stored_event_ids(
            candidates["event_id"].combine_chunks(), bounds["min"] - self.dedup_window, bounds["max"] + self.dedup_window
        )
        if stored:
            table = table.filter(pc.invert(pc.is_in(table["event_id"], value_set=pa.array(sorted(stored)))))
        return table

    def _check_project(self, table: pa.Table) -> None:
        projects = pc.unique(table["project_id"]).to_pylist()
        if projects != [self.project_id]:
            raise IngestError(
            f"batch holds events for projects {projects}; this pipeline writes project {self.project_id!r}"
        )

    def _resolve_persons(self, resolver: IdentityResolver, table: pa.Table) -> pa.Array:
        """Walk the distinct id combinations in time order, then map every row.

        Only identify, alias and the first sighting of an id pair change the
        graph, so the walk visits distinct combinations, not every event.
        ``table`` is in time order, so a combination's first row is its first
        sighting.
        """
        missing = pc.and_(pc.is_null(table["anonymous_id"]), pc.is_null(table["user_id"]))
        if pc.any(missing).as_py():
            row = pc.index(missing, True).as_py()
            raise IngestError(f"event {table['event_id'][row].as_py()!r} has neither anonymous_id nor user_id")
        rows = pa.table(
            {
                "anonymous_id": table["anonymous_id"],
                "user_id": table["user_id"],
                "row": pa.array(np.arange(table.num_rows)),
            }
        )
        is_alias = pc.equal(table["type"], "alias")
        firsts = rows.filter(pc.invert(is_alias)).group_by(["anonymous_id", "user_id"], use_threads=False).aggregate(
            [("row", "min")]
        )
        steps: list[tuple[int, str | None, str | None, str | None]] = [
            (row, anonymous_id, user_id, None)
            for anonymous_id, user_id, row in zip(
                firsts["anonymous_id"].to_pylist(), firsts["user_id"].to_pylist(), firsts["row_min"].to_pylist(), strict=True
            )
        ]
        aliases = table.filter(is_alias)
        for row, user_id, properties in zip(
            pc.indices_nonzero(is_alias).to_pylist(), aliases["user_id"].to_pylist(), aliases["properties"].to_pylist(), strict=True
        ):
            previous = msgspec.json.decode(properties).get("previous_id")
            if user_id is not None and isinstance(previous, str):
                steps.append((row, None, user_id, previous))
        for _, anonymous_id, user_id, previous in sorted(steps, key=lambda step: step[0]):
            if previous is not None and user_id is not None:
                resolver.alias(previous, user_id)
            else:
                resolver.resolve(anonymous_id, user_id)

        # Map with the final graph: merges within the batch apply to every row.
        by_user = _lookup(table["user_id"], resolver.by_user)
        by_anonymous = _lookup(table["anonymous_id"], resolver.by_anonymous)
        return pc.coalesce(by_user, by_anonymous)

    def _fold_merged(self, old: str, new: str) -> None:
        merged = self._persons.pop(old, None)
        if merged is None:
            return
        target = self._persons.get(new)
        if target is None:
            self._persons[new] = merged
            return
        target.first_seen_ms = min(target.first_seen_ms, merged.first_seen_ms)
        target.traits = {**merged.traits, **target.traits}
        target.traits_json = None

    def _update_persons(
        self,
        table: pa.Table,
        person_ids: pa.Array,
        timestamps: np.ndarray,
        tails: dict[str, SessionTail],
        resolver: IdentityResolver,
    ) -> pa.Table:
        grouped = pa.table({"person_id": person_ids, "ts": timestamps}).group_by("person_id").aggregate(
            [("ts", "min"), ("ts", "max")]
        )
        traits_by_person: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        identifies = table.filter(pc.equal(table["type"], "identify"))
        for person, when, properties in zip(
            identifies["person_id"].to_pylist(), _to_ms(identifies["timestamp"]), identifies["properties"].to_pylist(), strict=True
        ):
            traits_by_person.setdefault(person, []).append((int(when), msgspec.json.decode(properties)))

        touched = grouped["person_id"].to_pylist()
        known, users_of_person = self._persons, resolver.users_of_person
        states = []
        for person, first, last in zip(touched, grouped["ts_min"].to_pylist(), grouped["ts_max"].to_pylist(), strict=True):
            state = known.get(person)
            if state is None:
                state = known[person] = PersonState(first, last, None, {}, tails[person])
            else:
                state.first_seen_ms = min(state.first_seen_ms, first)
                state.last_seen_ms = max(state.last_seen_ms, last)
                state.tail = tails[person]
            if state.user_id is None:
                users = users_of_person.get(person)
                state.user_id = min(users) if users else None
            changes = traits_by_person.get(person)
            if changes:
                for _, traits in sorted(changes, key=lambda item: item[0]):
                    _apply_traits(state.traits, traits)
                state.traits_json = None
            if state.traits_json is None:
                state.traits_json = msgspec.json.encode(state.traits).decode()
            states.append(state)

        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        return pa.table(
            {
                "project_id": [self.project_id] * len(touched),
                "person_id": touched,
                "user_id": [state.user_id for state in states],
                "traits": [state.traits_json for state in states],
                "first_seen": _from_ms([state.first_seen_ms for state in states]),
                "last_seen": _from_ms([state.last_seen_ms for state in states]),
                "last_session_id": [session_id(person, state.tail.start_ms) for person, state in zip(touched, states, strict=True)],
                "last_session_start": _from_ms([state.tail.start_ms for state in states]),
                "updated_at": _from_ms([now_ms] * len(touched)),
            },
            schema=PERSONS.schema,
        )


SET_ONCE = "$set_once"


def _apply_traits(current: dict[str, Any], traits: dict[str, Any]) -> None:
    """Fold an identify's traits into a person's: last write wins, in event
    time, except for traits under ``$set_once``, which keep their first value.

    >>> person = {"plan": "free", "signup": "2024-01-01"}
    >>> _apply_traits(person, {"plan": "pro", "$set_once": {"signup": "2025-06-01", "channel": "ads"}})
    >>> person
    {'plan': 'pro', 'signup': '2024-01-01', 'channel': 'ads'}
    """
    for key, value in traits.items():
        if key == SET_ONCE and isinstance(value, dict):
            for once_key, once_value in value.items():
                current.setdefault(once_key, once_value)
        else:
            current[key] = value


class _Tails(Mapping[str, SessionTail]):
    """Each person's latest session, read straight from the pipeline's state."""

    def __init__(self, persons: dict[str, PersonState]) -> None:
        self._persons = persons

    def __getitem__(self, person: str) -> SessionTail:
        return self._persons[person].tail

    def get(self, person: str, default: SessionTail | None = None) -> SessionTail | None:  # type: ignore[override]
        state = self._persons.get(person)
        return state.tail if state is not None else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._persons)

    def __len__(self) -> int:
        return len(self._persons)


def _lookup(ids: pa.ChunkedArray, mapping: dict[str, str]) -> pa.Array:
    """Map a column of ids through a dict (nulls and unknown ids stay null)."""
    distinct = pc.unique(ids.combine_chunks()).drop_null()
    keys = distinct.to_pylist()
    values = pa.array([mapping.get(key) for key in keys], pa.string())
    return pc.take(values, pc.index_in(ids, value_set=distinct))


def _epoch_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)
