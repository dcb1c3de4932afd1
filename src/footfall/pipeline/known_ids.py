"""Which event ids may be stored already, answered from memory.

The duplicate check is exact only in the store, but asking the store about
every batch means scanning the event ids of a whole dedup window (a week by
default) each time, which grows with the store: at two million events it cost
a live worker about 70 ms per batch. A long-running pipeline instead keeps a
64-bit hash of every stored id timed inside the window and asks the store only
about the ids whose hash it holds: true duplicates, and hash collisions, which
at 64 bits are rare enough to cost nothing. The hashes are Python's own
(``hash(str)``), valid for this process only, so they are rebuilt from the
store when a pipeline starts.

Eight bytes per id: ten million ids in the window take 80 MB.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pyarrow as pa

from footfall.store.database import Database

# How many ids are hashed per step while loading, to bound the Python objects alive at once.
_LOAD_SLICE = 262_144


def hash_ids(ids: Sequence[str]) -> np.ndarray:
    return np.fromiter(map(hash, ids), dtype=np.int64, count=len(ids))


class KnownIds:
    """Hashes of the ids of stored events timed at or after ``since``.

    Kept as a few sorted arrays whose sizes at least halve from one to the
    next (adding merges the small ones, so each hash is merged a logarithmic
    number of times), and looked up by binary search in each.

    >>> known = KnownIds(datetime(2026, 1, 1))
    >>> known.add(["m1", "m2"]); known.add(["m3"])
    >>> known.may_hold(["m2", "m9", "m3"]).tolist()
    [True, False, True]
    >>> len(known)
    3
    """

    def __init__(self, since: datetime) -> None:
        self.since = since
        self._levels: list[np.ndarray] = []

    @classmethod
    def load(cls, database: Database, since: datetime) -> KnownIds:
        """The ids the store holds for events timed at or after ``since``."""
        known = cls(since)
        ids = database.event_ids_since(since)
        for offset in range(0, len(ids), _LOAD_SLICE):
            known.add(ids.slice(offset, _LOAD_SLICE).to_pylist())
        return known

    def __len__(self) -> int:
        return sum(len(level) for level in self._levels)

    def add(self, ids: Sequence[str] | pa.Array) -> None:
        if len(ids) == 0:
            return
        merged = np.sort(hash_ids(ids.to_pylist() if isinstance(ids, pa.Array) else ids))
        while self._levels and len(self._levels[-1]) <= 2 * len(merged):
            # Two sorted runs: the stable sort (timsort) merges them in linear time.
            merged = np.sort(np.concatenate([self._levels.pop(), merged]), kind="stable")
        self._levels.append(merged)

    def may_hold(self, ids: Sequence[str]) -> np.ndarray:
        """Per id: False if it is certainly not stored (among events since
        ``since``), True if it may be."""
        hashes = hash_ids(ids)
        found = np.zeros(len(hashes), dtype=bool)
        for level in self._levels:
            positions = np.searchsorted(level, hashes).clip(max=len(level) - 1)
            found |= level[positions] == hashes
        return found
