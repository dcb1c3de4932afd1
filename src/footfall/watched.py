"""A small JSON file in the data directory that other processes may rewrite.

The keys, the saved segments and the cohorts live in such files: the CLI
writes them, a running server reads them. A reader looks at the file's stamp
(modification time and size) at most every ``refresh_every`` seconds and
decodes it again only when the stamp moved, so asking on every request is
cheap. Writes go to a temporary file, are fsynced, then replace the file in
one rename: a reader sees the old whole file or the new whole file.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

import msgspec

from footfall.errors import FootfallError

T = TypeVar("T")


class WatchedFile(Generic[T]):
    """One msgspec-typed JSON file; thread-safe. ``version`` goes up each time
    the content read from disk (or written) changes."""

    def __init__(
        self,
        path: Path,
        kind: type[T],
        *,
        error: type[FootfallError],
        refresh_every: float = 1.0,
    ) -> None:
        self.path = path
        self.kind = kind
        self.error = error
        self.refresh_every = refresh_every
        self.lock = threading.RLock()  # callers hold it across a read-modify-write
        self.version = 0
        self._checked_at = -math.inf
        self._stamp: tuple[int, int] | None = None
        self._value: T = kind()

    def _stat(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def read(self, *, fresh: bool = False) -> T:
        """The content (an empty ``kind()`` while there is no file); ``fresh``
        looks at the file now rather than within ``refresh_every``."""
        with self.lock:
            now = time.monotonic()
            if not fresh and now - self._checked_at < self.refresh_every:
                return self._value
            self._checked_at = now
            stamp = self._stat()
            if stamp == self._stamp:
                return self._value
            if stamp is None:
                value = self.kind()
            else:
                try:
                    value = msgspec.json.decode(self.path.read_bytes(), type=self.kind)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    raise self.error(f"{self.path} is damaged ({exc}); restore it from a backup") from None
            self._value, self._stamp = value, stamp
            self.version += 1
            return value

    def update(self, change: Callable[[T], T]) -> T:
        """Read the file as it is now, apply ``change`` and write the result, as
        one step among this process's threads. (Two processes writing at once
        is the one race left: the CLI and a server's API are rarely used at the
        same instant, and the later write wins whole.)"""
        with self.lock:
            value = change(self.read(fresh=True))
            self._write(value)
            return value

    def _write(self, value: T) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(msgspec.json.format(msgspec.json.encode(value)))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        self._value, self._stamp = value, self._stat()
        self._checked_at = time.monotonic()
        self.version += 1
