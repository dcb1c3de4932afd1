"""The segment engine: memberships kept up to date as events are stored and
as time passes.

Feed it each batch the store has taken (events with their resolved persons
and sessions, the batch's person merges and person rows) with
``on_batch``; call ``advance`` as the clock moves. Both return the
membership changes (``segment_entered`` / ``segment_exited``). A person is
re-evaluated when an event touches what their segments read, and at the
times the scheduler holds for them, the earliest at which a segment's answer
may change by time alone (a window moving past their events, a
"did not ... within 24 h" coming due).

>>> from datetime import UTC, datetime, timedelta
>>> from footfall.segments.language import SegmentDefinition, parse_condition
>>> active = SegmentDefinition("active", parse_condition({"last_seen": {"within": "1d"}}))
>>> engine = SegmentEngine([active], clock=lambda: datetime(2024, 3, 1, 12, 30, tzinfo=UTC))
>>> import pyarrow as pa
>>> batch = pa.table({"person_id": ["ann"], "event": ["page_view"], "session_id": ["s1"],
...                   "timestamp": pa.array([datetime(2024, 3, 1, 12, 0, tzinfo=UTC)], pa.timestamp("ms", tz="UTC")),
...                   "received_at": pa.array([datetime(2024, 3, 1, 12, 0, tzinfo=UTC)], pa.timestamp("ms", tz="UTC")),
...                   "properties": ["{}"]})
>>> [(change.kind, change.person_id) for change in engine.on_batch(batch)]
[('segment_entered', 'ann')]
>>> [(change.kind, change.at.isoformat()) for change in engine.advance(datetime(2024, 3, 5, tzinfo=UTC))]
[('segment_exited', '2024-03-02T13:00:00+00:00')]
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Literal, NamedTuple

import msgspec
import pyarrow as pa

from footfall.config import EngagementSettings
from footfall.errors import StoreError
from footfall.profiles.state import HOUR_MS, Weights, hour_of
from footfall.segments.errors import ConditionError
from footfall.segments.evaluate import NEVER, PersonState, Plan
from footfall.segments.language import (
    ENGAGEMENT,
    SYSTEM_EVENTS,
    Score,
    SegmentDefinition,
    SegmentSet,
)
from footfall.segments.load import (
    load_states,
    load_watermark,
    persons_received_since,
    stored_changes_after,
)
from footfall.segments.schedule import MAX_SEGMENTS, DueQueue, PersonRow, SavedState, StateFile
from footfall.store.database import Database

ChangeKind = Literal["segment_entered", "segment_exited"]
_ENTERED: ChangeKind = "segment_entered"
_EXITED: ChangeKind = "segment_exited"
# Why a membership changed: an event, time passing, a merge of persons,
# new scores, a backfill, a check after a restart, or a new definition.
Reason = Literal["event", "time", "merge", "scores", "backfill", "reconcile", "definition"]

_CHANGE_IDS = uuid.UUID("7f0c5d1e-5e9a-4d3b-9b2f-3c6a1d2e4f50")
# After a restart, persons with events received this long before the last
# committed batch's latest are re-evaluated too: collectors stamp
# received_at, and batches from several of them interleave by a little.
RECONCILE_SLACK_MS = 10 * 60_000


class MembershipChange(NamedTuple):
    """A person entered or left a segment, at ``at`` (``at_ms``: epoch milliseconds)."""

    kind: ChangeKind
    segment_id: str
    person_id: str
    at_ms: int
    reason: Reason

    @property
    def at(self) -> datetime:
        return _moment(self.at_ms)

    @property
    def event_id(self) -> str:
        """A stable id: the same change recorded twice (say, after a restart) dedups in the store."""
        return str(uuid.uuid5(_CHANGE_IDS, f"{self.kind}/{self.segment_id}/{self.person_id}/{self.at_ms}"))

    def properties(self) -> dict[str, str]:
        return {"segment_id": self.segment_id, "reason": self.reason}


def _moment(milliseconds: int) -> datetime:
    return datetime.fromtimestamp(milliseconds / 1000, UTC)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class SegmentEngine:
    """Memberships of a set of segments, kept by the stream evaluator.

    ``clock`` gives the time when a call does not (``datetime.now`` by
    default; tests pass a controllable one). ``state`` persists memberships
    and the due queue after every call (or at ``commit()``, with
    ``autocommit=False``, e.g. once the changes have been stored as events).
    With ``commit_every`` (seconds), ``commit_due()`` and autocommit write
    at most that often: a commit rewrites every changed person's row, so
    the fewer the cheaper. ``restore`` then recovers what the last commit
    missed from the change events the store holds (``segment_entered`` and
    ``segment_exited``, as the server writes them before committing) and by
    re-evaluating the persons the store took events of since.
    """

    def __init__(
        self,
        segments: SegmentSet | Sequence[SegmentDefinition],
        *,
        engagement: EngagementSettings | None = None,
        state: StateFile | None = None,
        clock: Callable[[], datetime] | None = None,
        autocommit: bool = True,
        commit_every: float = 0.0,
    ) -> None:
        self.segments = segments if isinstance(segments, SegmentSet) else SegmentSet(segments)
        if len(self.segments) > MAX_SEGMENTS:
            raise ConditionError("$", f"one engine keeps at most {MAX_SEGMENTS} segments live; got {len(self.segments)}")
        self.engagement = engagement or EngagementSettings()
        self.weights = Weights.of(self.engagement)
        self._members: list[dict[str, int]] = [{} for _ in self.segments.order]
        self.plan = Plan(self.segments, self.weights, self._members)
        self.ids = self.plan.ids
        self.persons: dict[str, PersonState] = {}
        self.queue = DueQueue()
        self.clock = clock or (lambda: datetime.now(UTC))
        self.now_ms: int | None = None  # the latest time evaluated at
        self.watermark_ms: int | None = None  # the latest received_at seen
        # The received_at of the last change events the caller stored (it
        # sets this); committed, so that restore replays those stored after.
        self.changes_ms: int | None = None
        self.state = state
        self.autocommit = autocommit
        self.commit_every = commit_every
        self._committed_at = -math.inf  # time.monotonic() of the last commit
        self._dirty: set[str] = set()  # persons whose saved row is out of date
        self._new: set[str] = set()  # persons first seen in the batch at hand
        self._started = False  # the state file holds this engine's definitions
        self._rewrite = False  # the next commit saves the whole state (after restore or backfill)

    # -- reading --------------------------------------------------------------------------

    def members(self, segment: str) -> set[str]:
        return set(self._members[self._index(segment)])

    def memberships(self) -> dict[str, set[str]]:
        return {segment: set(group) for segment, group in zip(self.ids, self._members, strict=True)}

    def segments_of(self, person: str) -> list[str]:
        return [segment for segment, group in zip(self.ids, self._members, strict=True) if person in group]

    def member_since(self, segment: str, person: str) -> datetime | None:
        since = self._members[self._index(segment)].get(person)
        return None if since is None else _moment(since)

    def pending(self) -> list[tuple[datetime, str, str]]:
        """Scheduled re-evaluations ``(time, segment, person)``, earliest first."""
        return sorted((_moment(when), self.ids[segment], person) for segment, person, when in self.queue.items())

    def _index(self, segment: str) -> int:
        try:
            return self.plan.index[segment]
        except KeyError:
            raise KeyError(f"no segment {segment!r} (known: {', '.join(self.ids)})") from None

    # -- the stream ---------------------------------------------------------------------

    def on_batch(
        self,
        events: pa.Table,
        merges: Sequence[tuple[str, str]] = (),
        persons: pa.Table | None = None,
        *,
        now: datetime | None = None,
    ) -> list[MembershipChange]:
        """Take a batch the store has just stored: first what came due up to
        ``now``, then the ``(old, new)`` merges, the events (stored columns:
        ``person_id``, ``event``, ``session_id``, ``timestamp``, ``received_at``,
        ``properties`` and any column a filter reads) and the persons' rows
        (``person_id``, ``traits``); then each touched person is re-evaluated."""
        now_ms = self._time(now)
        changes = self._advance(now_ms)
        # Per person: the features events touched, and segments to evaluate regardless.
        touched: dict[str, int] = {}
        forced: dict[str, int] = {}
        self._new = set()
        for old, new in merges:
            changes.extend(self._merge(old, new, now_ms))
            if new in self.persons:
                forced[new] = self.plan.all
        if events.num_rows:
            self._take_events(events, now_ms, touched, forced)
        if persons is not None and persons.num_rows:
            self._take_persons(persons, touched, forced)
        plan = self.plan
        for person in touched.keys() | forced.keys():
            if person in self._new:
                # Evaluated as a change from a person with nothing: only the
                # segments what they did can move.
                start = plan.empty
                mask = plan.to_evaluate(touched.get(person, 0), start)
                changes.extend(self._evaluate(person, mask, now_ms, "event", start=start))
                continue
            state = self.persons[person]
            mask = forced.get(person, 0) | plan.to_evaluate(touched.get(person, 0), state.member_of)
            if mask:
                changes.extend(self._evaluate(person, mask, now_ms, "event"))
        self._autocommit()
        return changes

    def advance(self, now: datetime | None = None) -> list[MembershipChange]:
        """Let time pass: every re-evaluation due up to ``now``, in time order,
        each at its own time (so a change is dated when it happened)."""
        changes = self._advance(self._time(now))
        self._autocommit()
        return changes

    def set_scores(self, person: str, scores: Mapping[str, float], *, now: datetime | None = None) -> list[MembershipChange]:
        """Model scores written for a person (by a model, not by events)."""
        now_ms = self._time(now)
        changes = self._advance(now_ms)
        state = self.persons.get(person)
        if state is None:
            return changes
        state.scores.update(scores)
        features = 0
        for name in scores:
            features |= self.plan.scores.get(name, 0)
        mask = self.plan.to_evaluate(features, state.member_of)
        if mask:
            changes.extend(self._evaluate(person, mask, now_ms, "scores"))
        self._autocommit()
        return changes

    def _time(self, now: datetime | None) -> int:
        moment = _ms(now if now is not None else self.clock())
        return moment if self.now_ms is None else max(moment, self.now_ms)

    def _advance(self, now_ms: int) -> list[MembershipChange]:
        changes: list[MembershipChange] = []
        persist = self.state is not None
        # Entries due at the same time for the same person are evaluated together.
        moment, person, mask = 0, "", 0
        for when, segment, who in self.queue.pop_due(now_ms):
            if persist:
                self._dirty.add(who)
            if mask and (when, who) != (moment, person):
                changes.extend(self._evaluate(person, mask, moment, "time"))
                mask = 0
            if who in self.persons:
                moment, person, mask = when, who, mask | 1 << segment
        if mask:
            changes.extend(self._evaluate(person, mask, moment, "time"))
        self.now_ms = now_ms
        return changes

    def _take_events(self, events: pa.Table, now_ms: int, touched: dict[str, int], forced: dict[str, int]) -> None:
        plan = self.plan
        by_event = plan.by_event
        weights = plan.weights.by_event if plan.engagement else {}
        people = events["person_id"].to_pylist()
        names = events["event"].to_pylist()
        stamps = events["timestamp"].cast(pa.int64()).to_pylist()
        sessions = events["session_id"].to_pylist() if plan.needs_sessions else None
        decode_for = {name for name in set(names) if plan.needs_properties(name)}
        properties = events["properties"].to_pylist() if decode_for else None
        columns = {column: events[column].to_pylist() for column in plan.columns}
        if "received_at" in events.column_names and events.num_rows:
            latest = pa.compute.max(events["received_at"]).cast(pa.int64()).as_py()
            self.watermark_ms = latest if self.watermark_ms is None else max(self.watermark_ms, latest)
        # A session's count changes only when a session enters a window: a new
        # one, or one whose latest event was before the shortest window.
        if plan.shortest_sessions_window_ms is not None:
            counted_since = now_ms - now_ms % HOUR_MS - plan.shortest_sessions_window_ms
        else:
            counted_since = -NEVER  # counts of every session ever: only new ones change them
        stream_count = len(plan.streams)
        decode = msgspec.json.decode
        states = self.persons
        for row, person in enumerate(people):
            state = states.get(person)
            if state is None:
                state = states[person] = PersonState(person, stream_count)
                self._new.add(person)
            name = names[row]
            if name in SYSTEM_EVENTS:
                touched.setdefault(person, 0)
                continue
            moment = stamps[row]
            features = 0
            if moment < state.first_seen:
                state.first_seen = moment
                features = plan.first_seen
            if moment > state.last_seen:
                state.last_seen = moment
                features |= plan.last_seen
            if sessions is not None:
                before = state.see_session(sessions[row], moment)
                if before is not None and (before == -NEVER or before < counted_since):
                    features |= plan.sessions
            found = by_event.get(name)
            if found is not None or name in weights:
                decoded = decode(properties[row]) if properties is not None and name in decode_for else {}
                if found is not None:
                    values = {column: columns[column][row] for column in columns} if columns else {}
                    for stream in found:
                        if stream.matches(decoded, values):
                            stream.add(state, moment, now_ms)
                            features |= stream.feature
                if name in weights:
                    weight = plan.weights.weight(name, decoded.get("signal") == "passive")
                    if weight:
                        hour = hour_of(moment)
                        state.engagement[hour] = state.engagement.get(hour, 0.0) + weight
                        features |= plan.engagement
            touched[person] = touched.get(person, 0) | features

    def _take_persons(self, persons: pa.Table, touched: dict[str, int], forced: dict[str, int]) -> None:
        plan = self.plan
        people = persons["person_id"].to_pylist()
        traits = persons["traits"].to_pylist() if plan.traits else [None] * len(people)
        for person, text in zip(people, traits, strict=True):
            state = self.persons.get(person)
            if state is None:
                state = self.persons[person] = PersonState(person, len(plan.streams))
                self._new.add(person)
            if text is not None:
                decoded = msgspec.json.decode(text)
                if decoded != state.traits:
                    state.traits = decoded
                    touched[person] = touched.get(person, 0) | plan.traits

    def _merge(self, old: str, new: str, now_ms: int) -> list[MembershipChange]:
        state = self.persons.pop(old, None)
        if state is None:
            return []
        changes = []
        for segment, group in enumerate(self._members):
            if group.pop(old, None) is not None:
                changes.append(MembershipChange("segment_exited", self.ids[segment], old, now_ms, "merge"))
        self.queue.forget(old)
        if self.state is not None:
            self._dirty.add(old)
        target = self.persons.get(new)
        if target is None:
            # The old person left every segment above; the new one enters
            # what it qualifies for when it is evaluated next.
            state.person_id = new
            state.member_of, state.since = 0, {}
            self.persons[new] = state
        else:
            target.absorb(state)
        return changes

    def _evaluate(
        self, person: str, mask: int, at: int, reason: Reason, *, start: int | None = None
    ) -> list[MembershipChange]:
        """Evaluate the segments in ``mask`` for one person at ``at`` (in
        dependency order; a change re-evaluates the segments that read it).

        With ``start``, the person is new: evaluation starts from those
        memberships (their value with no events), and the changes reported
        are entries into every segment they end up in."""
        state = self.persons[person]
        record = start is None
        if start is not None:
            state.member_of = start
        plan = self.plan
        evaluators, dependents = plan.evaluators, plan.dependents
        ids, groups, since = self.ids, self._members, state.since
        queue = self.queue
        due = queue.of(person)
        changes = []
        written = False  # the person's saved row is out of date
        member_of = state.member_of  # mirrored into state at once: in_segment conditions read it
        while mask:
            lowest = mask & -mask
            segment = lowest.bit_length() - 1
            mask ^= lowest
            value, recheck = evaluators[segment](state, at)
            if value != (member_of & lowest != 0):
                member_of ^= lowest
                state.member_of = member_of
                mask |= dependents[segment]
                if record:
                    if value:
                        groups[segment][person] = since[segment] = at
                        changes.append(MembershipChange(_ENTERED, ids[segment], person, at, reason))
                    else:
                        del groups[segment][person], since[segment]
                        changes.append(MembershipChange(_EXITED, ids[segment], person, at, reason))
                    written = True
            if due.get(segment, NEVER) != recheck:
                if recheck >= NEVER:
                    del due[segment]
                else:
                    queue.put(due, person, segment, recheck)
                written = True
        if written and self.state is not None:
            self._dirty.add(person)
        if not record:
            return self._evaluate_entries(person, member_of, at, reason)
        return changes

    def _evaluate_entries(self, person: str, entered: int, at: int, reason: Reason) -> list[MembershipChange]:
        state = self.persons[person]
        state.member_of, state.since = entered, {}
        changes = []
        while entered:
            lowest = entered & -entered
            segment = lowest.bit_length() - 1
            entered ^= lowest
            self._members[segment][person] = state.since[segment] = at
            changes.append(MembershipChange("segment_entered", self.ids[segment], person, at, reason))
        if self.state is not None:
            self._dirty.add(person)
        return changes

    def _sync_member_bits(self) -> None:
        for state in self.persons.values():
            state.member_of, state.since = 0, {}
        for segment, group in enumerate(self._members):
            for person, since in group.items():
                found = self.persons.get(person)
                if found is not None:
                    found.member_of |= 1 << segment
                    found.since[segment] = since

    # -- persistence -------------------------------------------------------------------

    def _row(self, person: str) -> PersonRow | None:
        """The person's saved row, by segment index (the slots of the state file)."""
        state = self.persons.get(person)
        if state is None:
            return None
        return PersonRow(state.since, self.queue.due.get(person) or {})  # encoded at once, not kept

    def _autocommit(self) -> None:
        if self.autocommit:
            self.commit_due()

    def commit_due(self) -> bool:
        """Commit if ``commit_every`` seconds have passed since the last commit."""
        if time.monotonic() - self._committed_at < self.commit_every:
            return False
        self.commit()
        return True

    def commit(self) -> None:
        """Write the memberships and due times changed since the last commit."""
        self._committed_at = time.monotonic()
        if self.state is None or self.now_ms is None:
            return
        prints = None
        if not self._started:
            if self.state.saved_clock() is not None:
                raise StoreError(
                    f"{self.state.path} holds memberships from an earlier run: call restore() before feeding the engine"
                )
            prints, self._started = self.fingerprints(), True
        if self._rewrite:
            self._save_all()
            return
        dirty, self._dirty = self._dirty, set()
        rows = [(person, self._row(person)) for person in dirty]
        self.state.write(
            rows, clock_ms=self.now_ms, watermark_ms=self.watermark_ms, changes_ms=self.changes_ms, fingerprints=prints
        )

    def fingerprints(self) -> dict[str, str]:
        """Per segment, a hash of what decides its members (its condition, those
        of the segments it reads, the engagement weights if it reads them)."""
        prints: dict[str, str] = {}
        for definition in self.segments:
            condition = definition.condition
            parts = [json.dumps(condition.to_json(), sort_keys=True)]
            parts += [prints[reference] for reference in definition.references()]
            if any(isinstance(part, Score) and part.name == ENGAGEMENT for part in condition.walk()):
                parts.append(json.dumps(msgspec.to_builtins(self.engagement), sort_keys=True))
            prints[definition.id] = hashlib.sha256("\n".join(parts).encode()).hexdigest()
        return prints

    # -- starting on a store that holds events ------------------------------------------

    def backfill(self, database: Database, now: datetime | None = None) -> list[MembershipChange]:
        """Load every person's state from the store (SQL) and evaluate everyone
        at ``now``; returns the changes against the memberships held before."""
        now_ms = self._time(now)
        self.persons = load_states(database, self.plan, now_ms)
        self.watermark_ms = load_watermark(database)
        self.now_ms = now_ms
        self.queue.clear()
        changes = self._drop_vanished("backfill", now_ms)
        self._sync_member_bits()
        for person in self.persons:
            changes.extend(self._evaluate(person, self.plan.all, now_ms, "backfill"))
        self._write_all()
        return changes

    def restore(
        self, database: Database, now: datetime | None = None, *, replay_stored_changes: bool = False
    ) -> list[MembershipChange]:
        """Start again after a stop: load the state from the store, and the
        memberships and due queue from the state file (or ``backfill`` without
        one). With ``replay_stored_changes`` (for a caller that stores this
        engine's changes as events and sets ``changes_ms``, as the server
        does), the changes stored after the last commit are applied to the
        saved memberships first. Persons whose events the store took after
        the last commit are re-evaluated, as is every person for segments
        whose definition changed. Call ``advance`` next to catch up with the
        time."""
        saved = self.state.load() if self.state is not None else SavedState()
        if saved.clock_ms is None:
            return self.backfill(database, now)
        clock = saved.clock_ms
        self.changes_ms = saved.changes_ms
        if replay_stored_changes:
            # The changes stored after the last commit (all, if none had been
            # stored by then), in the order they were made: the members they moved.
            for kind, segment_id, person, at in stored_changes_after(database, saved.changes_ms):
                group = saved.members.setdefault(segment_id, {})
                if kind == "segment_entered":
                    group[person] = at
                else:
                    group.pop(person, None)
        self.now_ms = clock
        self.persons = load_states(database, self.plan, clock)
        prints = self.fingerprints()
        stale = 0
        self.queue.clear()
        for segment, segment_id in enumerate(self.ids):
            # A changed definition is evaluated for everyone; its changes are
            # reported against the members it had.
            self._members[segment].clear()
            self._members[segment].update(saved.members.get(segment_id, {}))
            if saved.fingerprints.get(segment_id) != prints[segment_id]:
                stale |= 1 << segment
                continue
            for person, when in saved.due.get(segment_id, {}).items():
                self.queue.set(segment, person, when)
        # A deleted segment's members leave it, so the store's change events
        # end balanced.
        changes = [
            MembershipChange("segment_exited", segment_id, person, clock, "definition")
            for segment_id, group in saved.members.items()
            if segment_id not in self.plan.index
            for person in sorted(group)
        ]
        changes += self._drop_vanished("reconcile", clock)
        self._sync_member_bits()
        # Saved when the store held nothing (no watermark), every person came after.
        since = None if saved.watermark_ms is None else saved.watermark_ms - RECONCILE_SLACK_MS
        for person in persons_received_since(database, since) if since is not None else list(self.persons):
            if person in self.persons:
                changes.extend(self._evaluate(person, self.plan.all & ~stale, clock, "reconcile"))
        if stale:
            for person in self.persons:
                changes.extend(self._evaluate(person, stale, clock, "definition"))
        self.watermark_ms = load_watermark(database)
        self._write_all()
        return changes

    def _drop_vanished(self, reason: Reason, at: int) -> list[MembershipChange]:
        """Exits for members the store no longer holds (merged into others)."""
        changes = []
        for segment, group in enumerate(self._members):
            for person in [person for person in group if person not in self.persons]:
                del group[person]
                changes.append(MembershipChange("segment_exited", self.ids[segment], person, at, reason))
        return changes

    def _write_all(self) -> None:
        """Save the whole state after a restore or backfill: at once with
        autocommit, else at the caller's next ``commit`` (once it has stored
        the changes, so the file is never ahead of the store)."""
        if self.state is None or self.now_ms is None:
            return
        self._started = True
        self._rewrite = True
        if self.autocommit:
            self._save_all()

    def _save_all(self) -> None:
        assert self.state is not None
        assert self.now_ms is not None
        self._rewrite = False
        self._dirty = set()
        self.state.write(
            [(person, self._row(person)) for person in self.persons],
            clock_ms=self.now_ms,
            watermark_ms=self.watermark_ms,
            changes_ms=self.changes_ms,
            fingerprints=self.fingerprints(),
            replace=True,
        )

