"""Segments in the pipeline: the saved definitions, kept up to date as
batches are stored and as time passes, with each membership change written
to the store as a ``segment_entered`` / ``segment_exited`` event.

The intake worker owns one ``LiveSegments``. After the pipeline has stored a
batch it calls ``record`` with what was stored; when idle it calls ``tick``
so time-based exits and entries happen without new events. Both write the
changes as events first and then commit the engine's state file, so a crash
in between at worst re-reports a change (with the same event id when it is
recomputed the same way: the store keeps one).

A change of the saved definitions (``footfall segments create|delete``, the
API) is picked up within a second: the engine restarts from its state file,
re-evaluating everyone for the segments whose definition changed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from footfall.events.record import Event, events_to_table
from footfall.segments.catalog import SegmentCatalog
from footfall.segments.engine import MembershipChange, SegmentEngine
from footfall.segments.schedule import STATE_FILE, StateFile
from footfall.store.database import Database

log = logging.getLogger(__name__)

# The event type of membership changes (their names are SYSTEM_EVENTS).
SEGMENT_EVENT_TYPE = "segment"
# Seconds between commits of the state file. The changes are stored as
# events first, and a restart recovers from those what the file missed.
COMMIT_EVERY = 1.0


class LiveSegments:
    """The saved segments of a data directory, evaluated as events are stored."""

    def __init__(
        self,
        database: Database,
        catalog: SegmentCatalog,
        *,
        state_path: Path | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.database = database
        self.catalog = catalog
        self.state_path = state_path if state_path is not None else catalog.file.path.parent / STATE_FILE
        self.clock = clock or (lambda: datetime.now(UTC))
        self.engine: SegmentEngine | None = None
        self._state: StateFile | None = None
        self._version = -1
        self._broken = False  # the engine failed on a batch: restore it from the store
        self.changes_written = 0
        self.failures = 0  # batches or ticks the engine failed on (it restarts from the store)
        self.last_error: str | None = None
        self._received = datetime.min.replace(tzinfo=UTC)  # of the last changes written
        self.lock = threading.Lock()

    # -- starting -------------------------------------------------------------------

    def load(self) -> None:
        """Read the definitions and (re)start the engine from its state file."""
        with self.lock:
            self._restart()

    def _restart(self) -> list[MembershipChange]:
        definitions = self.catalog.definitions()
        self._version = self.catalog.version
        if self._state is None:
            self._state = StateFile(self.state_path)
        engine = SegmentEngine(
            definitions, engagement=self.database.config.engagement, state=self._state, clock=self.clock,
            autocommit=False, commit_every=COMMIT_EVERY,
        )
        changes = engine.restore(self.database, replay_stored_changes=True)
        if engine.changes_ms is not None:
            self._received = max(self._received, datetime.fromtimestamp(engine.changes_ms / 1000, UTC))
        self.engine = engine
        self._broken = False
        self._write(changes, check_stored=True)
        engine.commit()  # the restored state, saved once its changes are stored
        return changes

    def _current(self) -> tuple[SegmentEngine | None, list[MembershipChange] | None]:
        """The engine (None without segments), restarted first when the
        definitions changed or it failed, with the changes the restart made
        (None when it did not restart)."""
        self.catalog.segments()  # refreshes the version when the file changed
        changes = None
        if self.engine is None or self._broken or self.catalog.version != self._version:
            changes = self._restart()
        engine = self.engine if self.engine is not None and len(self.engine.ids) else None
        return engine, changes

    # -- the stream -----------------------------------------------------------------

    def record(self, events: pa.Table, persons: pa.Table, merges: Sequence[tuple[str, str]]) -> list[MembershipChange]:
        """Take a batch the store has just stored; returns the changes written."""
        with self.lock:
            try:
                engine, restarted = self._current()
                if engine is None:
                    return restarted or []
                if restarted is None:
                    changes = engine.on_batch(events, merges, persons)
                else:
                    # A restart loads the store, which holds this batch already:
                    # only the time since the engine's saved clock is left.
                    changes = engine.advance()
                self._write(changes)
                engine.commit_due()
            except Exception as exc:
                # The batch is stored whatever happens here. The engine's memory
                # may be half-updated: restore it from the store before the
                # next batch (which re-evaluates these persons) rather than
                # keep a state that is not the store's, and never fail the
                # worker for it.
                self._failed(exc)
                return []
            return (restarted or []) + changes

    def tick(self, now: datetime | None = None) -> list[MembershipChange]:
        """Let time pass: changes due by ``now`` (default: the clock)."""
        with self.lock:
            try:
                engine, restarted = self._current()
                if engine is None:
                    return restarted or []
                changes = engine.advance(now)
                self._write(changes)
                engine.commit_due()
            except Exception as exc:
                self._failed(exc)
                return []
            return (restarted or []) + changes

    def _failed(self, exc: Exception) -> None:
        self._broken = True
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.error("segments: %s; restarting the engine from the store with the next batch", self.last_error, exc_info=exc)

    def members(self, segment_id: str) -> set[str] | None:
        """The members of a segment the engine keeps now (None if it keeps none by that id)."""
        with self.lock:
            engine = self.engine
            if engine is None or segment_id not in engine.plan.index:
                return None
            return engine.members(segment_id)

    def close(self) -> None:
        """Commit the state (unless the engine failed: its memory is not to be
        trusted then) and close the state file."""
        with self.lock:
            if self.engine is not None and not self._broken:
                try:
                    self.engine.commit()
                except Exception as exc:  # the next start recovers from the store
                    log.error("segments: the state file could not be committed on close: %s", exc)
            if self._state is not None:
                self._state.close()
                self._state = None
            self.engine = None

    # -- changes as events ----------------------------------------------------------

    def _write(self, changes: list[MembershipChange], *, check_stored: bool = False) -> None:
        if not changes:
            return
        # Each write is received later than the one before (whatever the
        # clock says), so that a restart can replay those after its commit
        # in the order they were made.
        received = max(self.clock(), self._received + timedelta(milliseconds=1))
        self._received = received
        table = changes_table(changes, self.database.project_id, received)
        if check_stored:
            # Changes recomputed after a restart may be stored already.
            since, until = min(change.at for change in changes), max(change.at for change in changes)
            stored = self.database.stored_event_ids(table["event_id"].combine_chunks(), since, until)
            if stored:
                table = table.filter(pc.invert(pc.is_in(table["event_id"], pa.array(sorted(stored)))))
        self.database.insert("events", table)
        self.changes_written += table.num_rows
        if self.engine is not None:
            self.engine.changes_ms = int(received.timestamp() * 1000)


def changes_table(changes: Sequence[MembershipChange], project_id: str, received_at: datetime) -> pa.Table:
    """Membership changes as rows of the events table (no session: they are
    not something the person did)."""
    encode = msgspec.json.encode
    return events_to_table(
        [
            Event(
                event_id=change.event_id,
                project_id=project_id,
                type=SEGMENT_EVENT_TYPE,
                event=change.kind,
                timestamp=change.at,
                received_at=received_at,
                person_id=change.person_id,
                properties=encode(change.properties()).decode(),
            )
            for change in changes
        ]
    )
