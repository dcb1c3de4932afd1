"""The durable scheduler: a due-time queue of ``(time, segment, person)``
re-evaluations, and the file that keeps it (with the memberships) across
restarts.

The queue holds at most one time per segment and person (the earliest time
their membership may change with no new event). ``StateFile`` writes the
rows of the persons whose memberships or due times changed after each batch
and each advance, in one SQLite transaction, so a restart finds the memberships and the pending time-based
entries and exits exactly as they were after the last completed step.
"""

from __future__ import annotations

import heapq
import logging
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

log = logging.getLogger(__name__)

STATE_FILE = "segments.sqlite3"
_FORMAT = 2  # of the state file's tables
# A due entry packs its person's number and its segment's index below its time.
_PERSON_BITS, _SEGMENT_BITS = 40, 12
_PERSON_MASK, _SEGMENT_MASK = (1 << _PERSON_BITS) - 1, (1 << _SEGMENT_BITS) - 1
MAX_SEGMENTS = 1 << _SEGMENT_BITS  # kept live by one engine


class DueQueue:
    """Earliest-first re-evaluation times, one per ``(segment index, person)``.

    >>> queue = DueQueue()
    >>> for segment, person, when in [(0, "ann", 50), (1, "bob", 20), (0, "ann", 10)]:
    ...     _ = queue.set(segment, person, when)
    >>> list(queue.pop_due(30))
    [(10, 0, 'ann'), (20, 1, 'bob')]
    >>> len(queue)
    0
    """

    def __init__(self) -> None:
        # person -> segment -> time; the heap may hold superseded entries too.
        self.due: dict[str, dict[int, int]] = {}
        # Heap entries are single integers, (time, person number, segment)
        # packed so that they order as that tuple would: comparing ints is
        # several times cheaper than comparing tuples with string ids.
        self._heap: list[int] = []
        self._numbers: dict[str, int] = {}
        self._persons: list[str] = []
        self._stale = 0

    def __len__(self) -> int:
        return sum(len(times) for times in self.due.values())

    def _number(self, person: str) -> int:
        number = self._numbers.get(person)
        if number is None:
            number = self._numbers[person] = len(self._persons)
            self._persons.append(person)
        return number

    def of(self, person: str) -> dict[int, int]:
        """A person's due times by segment (to read and to ``put`` into)."""
        times = self.due.get(person)
        if times is None:
            times = self.due[person] = {}
        return times

    def get(self, segment: int, person: str) -> int | None:
        return self.due.get(person, {}).get(segment)

    def set(self, segment: int, person: str, when: int | None) -> bool:
        """Schedule (or, with None, unschedule); True if that changed anything."""
        times = self.of(person)
        if times.get(segment) == when:
            return False
        if when is None:
            del times[segment]
            self._stale += 1
        else:
            self.put(times, person, segment, when)
        return True

    def put(self, times: dict[int, int], person: str, segment: int, when: int) -> None:
        """Schedule into a person's ``of(person)`` (replacing any other time)."""
        if segment in times:
            self._stale += 1
        times[segment] = when
        number = self._numbers.get(person)
        if number is None:
            number = self._number(person)
        heapq.heappush(self._heap, (((when << _PERSON_BITS) | number) << _SEGMENT_BITS) | segment)
        if self._stale > len(self._heap) // 2 + 1024:
            self._compact()

    def forget(self, person: str) -> list[int]:
        """Drop every entry of a person (merged into another); their segments."""
        times = self.due.pop(person, {})
        self._stale += len(times)
        return list(times)

    def pop_due(self, until: int) -> Iterator[tuple[int, int, str]]:
        """Remove and yield ``(time, segment, person)`` for every entry due at or
        before ``until``, earliest first (entries added meanwhile included)."""
        heap = self._heap
        due = self.due
        persons = self._persons
        limit = ((until + 1) << _PERSON_BITS) << _SEGMENT_BITS
        while heap and heap[0] < limit:
            key = heapq.heappop(heap)
            segment = key & _SEGMENT_MASK
            rest = key >> _SEGMENT_BITS
            when, person = rest >> _PERSON_BITS, persons[rest & _PERSON_MASK]
            times = due.get(person)
            if times is None or times.get(segment) != when:
                self._stale -= 1
                continue  # superseded
            del times[segment]
            yield when, segment, person

    def items(self) -> Iterator[tuple[int, str, int]]:
        for person, times in self.due.items():
            for segment, when in times.items():
                yield segment, person, when

    def clear(self) -> None:
        self.due.clear()
        self._heap.clear()
        self._numbers.clear()
        self._persons.clear()
        self._stale = 0

    def _compact(self) -> None:
        number = self._number
        self._heap = [
            (((when << _PERSON_BITS) | number(person)) << _SEGMENT_BITS) | segment
            for person, times in self.due.items()
            for segment, when in times.items()
        ]
        heapq.heapify(self._heap)
        self._stale = 0


@dataclass
class SavedState:
    clock_ms: int | None = None
    watermark_ms: int | None = None
    changes_ms: int | None = None  # the received_at of the last change events stored before the commit
    fingerprints: dict[str, str] = field(default_factory=dict)
    members: dict[str, dict[str, int]] = field(default_factory=dict)  # segment -> person -> since
    due: dict[str, dict[str, int]] = field(default_factory=dict)  # segment -> person -> time


class PersonRow(msgspec.Struct, array_like=True):
    """One person's saved segments, by slot (the segment's position in the
    list last written with ``fingerprints``): since when they are in each,
    when each is next due."""

    members: dict[int, int]
    due: dict[int, int]


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(PersonRow).decode


class StateFile:
    """Memberships, the due queue, the clock and segment fingerprints in one
    SQLite file (by default ``segments.sqlite3`` in the data directory): one
    row per person, rewritten when any of their segments changes.

    The event store has no table for them yet; see docs/segments.md.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._connection.executescript(
            """
            PRAGMA journal_mode = WAL;
            PRAGMA synchronous = NORMAL;
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            """
        )
        found = self._connection.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        if found is not None and int(found[0]) != _FORMAT:
            # Everything here can be computed again from the store: start over
            # (the engine's restore() then backfills).
            log.warning("%s is in format %s, this Footfall writes %s: rebuilding it", self.path, found[0], _FORMAT)
            self._connection.executescript(
                "DROP TABLE IF EXISTS segments; DROP TABLE IF EXISTS persons; DELETE FROM meta;"
            )
        self._connection.executescript(
            """
            CREATE TABLE IF NOT EXISTS segments (
                slot INTEGER PRIMARY KEY, segment_id TEXT NOT NULL UNIQUE, fingerprint TEXT NOT NULL
            );
            CREATE TABLE IF NOT EXISTS persons (person_id TEXT PRIMARY KEY, segments BLOB NOT NULL) WITHOUT ROWID;
            """
        )
        self._connection.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (str(_FORMAT),))

    def saved_clock(self) -> int | None:
        row = self._connection.execute("SELECT value FROM meta WHERE key = 'clock_ms'").fetchone()
        return int(row[0]) if row else None

    def load(self) -> SavedState:
        saved = SavedState()
        meta = dict(self._connection.execute("SELECT key, value FROM meta").fetchall())
        saved.clock_ms = int(meta["clock_ms"]) if "clock_ms" in meta else None
        saved.watermark_ms = int(meta["watermark_ms"]) if "watermark_ms" in meta else None
        saved.changes_ms = int(meta["changes_ms"]) if "changes_ms" in meta else None
        slots = {}
        for slot, segment, fingerprint in self._connection.execute("SELECT slot, segment_id, fingerprint FROM segments"):
            slots[slot] = segment
            saved.fingerprints[segment] = fingerprint
        for person, blob in self._connection.execute("SELECT person_id, segments FROM persons"):
            row = _decode(blob)
            for slot, since in row.members.items():
                saved.members.setdefault(slots[slot], {})[person] = since
            for slot, when in row.due.items():
                saved.due.setdefault(slots[slot], {})[person] = when
        return saved

    def write(
        self,
        persons: Iterable[tuple[str, PersonRow | None]],
        *,
        clock_ms: int,
        watermark_ms: int | None,
        changes_ms: int | None = None,
        fingerprints: dict[str, str] | None = None,
        replace: bool = False,
    ) -> None:
        """Put (None: delete) persons' rows, and the clock, in one transaction.
        With ``replace`` the rows given are the whole state; with
        ``fingerprints`` (in slot order) the segment list is replaced."""
        puts, deletes = [], []
        for person, row in persons:
            if row is None or not (row.members or row.due):
                deletes.append((person,))
            else:
                puts.append((person, _encode(row)))
        connection = self._connection
        connection.execute("BEGIN")
        try:
            if replace:
                connection.execute("DELETE FROM persons")
            if fingerprints is not None:
                connection.execute("DELETE FROM segments")
                connection.executemany(
                    "INSERT INTO segments VALUES (?, ?, ?)",
                    [(slot, segment, fingerprint) for slot, (segment, fingerprint) in enumerate(fingerprints.items())],
                )
            connection.executemany("DELETE FROM persons WHERE person_id = ?", deletes)
            connection.executemany("INSERT OR REPLACE INTO persons VALUES (?, ?)", puts)
            connection.execute("INSERT OR REPLACE INTO meta VALUES ('clock_ms', ?)", (str(clock_ms),))
            if watermark_ms is not None:
                connection.execute("INSERT OR REPLACE INTO meta VALUES ('watermark_ms', ?)", (str(watermark_ms),))
            if changes_ms is not None:
                connection.execute("INSERT OR REPLACE INTO meta VALUES ('changes_ms', ?)", (str(changes_ms),))
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._connection.close()
