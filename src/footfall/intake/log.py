"""The durable intake log: the embedded twin of a Kafka topic.

The collector appends each accepted batch and answers 200 only once ``append``
has returned, which happens after the record is on disk. The pipeline reads
records in order, writes them to the store, then advances the checkpoint; on
restart it resumes from ``checkpointed``.

On disk a log is a directory of segment files, each named by the position of
its first record (``00000000000000000001.seg``), plus a ``checkpoint`` file and
a ``LOCK`` file that keeps a second process out. A record is framed as::

    [u32 payload length][u32 crc32][u64 position][payload]

The CRC covers the payload, the length and the position, so a torn write, a
stale tail or a header that points into garbage all fail the check. Positions
start at 1 and grow by one per record.

Many threads append at once; they share one ``write`` + ``fsync`` (group
commit): whoever finds no commit in flight becomes the leader and writes every
pending record, the others wait until their position is covered.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from footfall.errors import FootfallError

__all__ = [
    "AsyncAppender",
    "IntakeClosedError",
    "IntakeCorruptError",
    "IntakeError",
    "IntakeLocked",
    "IntakeLog",
    "IntakeReader",
    "LogStats",
    "Record",
]

_HEADER = struct.Struct("<IIQ")  # payload length, crc32, position
_CRC_FIELDS = struct.Struct("<IQ")  # what the CRC covers besides the payload
HEADER_BYTES = _HEADER.size
_MAX_PAYLOAD = 2**32 - 1
_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")
_CHECKPOINT_FILE = "checkpoint"
_LOCK_FILE = "LOCK"
_READER_LOCK_FILE = "READER"


class IntakeError(FootfallError):
    code = "intake_error"


class IntakeClosedError(IntakeError):
    code = "intake_closed"


class IntakeLocked(IntakeError):
    """Another process (or another ``IntakeLog`` in this one) has the directory open."""

    code = "intake_locked"


class IntakeCorruptError(IntakeError):
    """A record that was acknowledged no longer reads back intact."""

    code = "intake_corrupt"


@dataclass(frozen=True, slots=True)
class Record:
    position: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class LogStats:
    segments: int
    bytes: int
    last_position: int | None
    checkpointed: int | None
    lag: int  # records appended but not yet checkpointed
    commits: int  # group commits (one write + one fsync each) since open
    appends: int  # records appended since open


def _crc(payload: bytes, position: int, payload_crc: int | None = None) -> int:
    # The payload part is computed outside the append lock (it is the costly
    # bit); the header fields are folded in afterwards.
    if payload_crc is None:
        payload_crc = zlib.crc32(payload)
    return zlib.crc32(_CRC_FIELDS.pack(len(payload), position), payload_crc)


def _segment_name(first_position: int) -> str:
    return f"{first_position:020d}.seg"


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_record(
    file: BinaryIO, expected_position: int, *, with_payload: bool = True
) -> tuple[int, bytes] | None:
    """Read the record at the file's offset; None if it is absent, torn or damaged.

    Returns ``(record size on disk, payload)``; with ``with_payload=False`` the
    payload is skipped (seeked over, not checked) and returned empty.
    """
    header = file.read(HEADER_BYTES)
    if len(header) < HEADER_BYTES:
        return None
    length, crc, position = _HEADER.unpack(header)
    if position != expected_position:
        return None
    if not with_payload:
        here = file.tell()
        end = file.seek(0, os.SEEK_END)
        if end - here < length:
            return None
        file.seek(here + length)
        return HEADER_BYTES + length, b""
    payload = file.read(length)
    if len(payload) < length or _crc(payload, position) != crc:
        return None
    return HEADER_BYTES + length, payload


def _load_checkpoint(directory: Path) -> int | None:
    path = directory / _CHECKPOINT_FILE
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise IntakeCorruptError(
            f"checkpoint file {path} holds {text[:40]!r}, not a position; "
            "restore it or delete it to replay the whole log"
        ) from None


def _write_checkpoint(directory: Path, position: int, fsync: bool) -> None:
    path = directory / _CHECKPOINT_FILE
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, f"{position}\n".encode("ascii"))
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    if fsync:
        _fsync_directory(directory)


def _list_segments(directory: Path) -> list[int]:
    firsts = []
    for entry in os.listdir(directory):
        match = _SEGMENT_NAME.match(entry)
        if match:
            firsts.append(int(match.group(1)))
    return sorted(firsts)


def _lock(path: Path, taken: str) -> int:
    """An exclusive flock on ``path``; the kernel drops it when the process dies."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise IntakeError(
            f"cannot open intake log directory {path.parent}: {exc.strerror}; check that it exists and is writable"
        ) from exc
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        raise IntakeLocked(
            f"intake log {path.parent} {taken} in another process or object; close that one first"
        ) from None
    return lock_fd


class IntakeLog:
    """An append-only, crash-safe log of opaque payloads in one directory.

    Thread-safe. One process at a time may open a directory (an ``flock`` on
    ``LOCK`` enforces it; the kernel drops it if the process dies).
    """

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = 64 * 1024 * 1024,
        fsync: bool = True,
        external_consumer: bool = False,
    ) -> None:
        if segment_bytes <= HEADER_BYTES:
            raise IntakeError(
                f"segment_bytes={segment_bytes} is too small: it must exceed the "
                f"{HEADER_BYTES}-byte record header"
            )
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        # An IntakeReader in another process consumes, checkpoints and truncates.
        self.external_consumer = external_consumer
        self._cond = threading.Condition(threading.Lock())
        self._checkpoint_lock = threading.Lock()
        # Guarded by _cond:
        self._pending: list[tuple[int, bytes, int]] = []  # (position, payload, crc)
        self._next_position = 1
        self._durable_position = 0
        self._committing = False
        self._closing = False
        self._closed = False
        self._failure: BaseException | None = None
        self._segments: list[int] = []  # first positions, ascending; the last is active
        self._commits = 0
        self._appends = 0
        # Touched only by the commit leader (or during open/close):
        self._active_fd = -1
        self._active_size = 0
        # Where the last read stopped, so a worker polling read(after=last) does
        # not rescan its segment from the start: (position, segment, offset).
        self._read_hint: tuple[int, int, int] | None = None

        self._lock_fd = self._open_directory()
        try:
            self._checkpointed = self._load_checkpoint()
            self._recover()
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- opening and recovery -------------------------------------------------

    def _open_directory(self) -> int:
        lock_fd = _lock(self.directory / _LOCK_FILE, "is already open")
        if not os.access(self.directory, os.W_OK):
            os.close(lock_fd)
            raise IntakeError(f"intake log directory {self.directory} is not writable")
        return lock_fd

    def _load_checkpoint(self) -> int | None:
        return _load_checkpoint(self.directory)

    def _list_segments(self) -> list[int]:
        return _list_segments(self.directory)

    def _segment_path(self, first_position: int) -> Path:
        return self.directory / _segment_name(first_position)

    def _recover(self) -> None:
        """Find the end of the log and cut off a torn tail.

        Only the last segment can be torn: a segment is fsynced before the next
        one is created, so earlier segments are whole.
        """
        self._segments = self._list_segments()
        if not self._segments:
            self._create_segment(1)
            return
        first = self._segments[-1]
        path = self._segment_path(first)
        good_end = 0
        position = first
        with open(path, "rb") as file:
            while (found := _read_record(file, position)) is not None:
                good_end += found[0]
                position += 1
        self._next_position = position
        self._durable_position = position - 1
        self._active_fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        size = os.fstat(self._active_fd).st_size
        if size > good_end:
            os.ftruncate(self._active_fd, good_end)
            os.fsync(self._active_fd)
        self._active_size = good_end
        # If the log lost records the checkpoint had already passed (only
        # possible with fsync=False), never hand those positions out again: the
        # worker would skip the new records as already processed.
        if self._checkpointed is not None and self._checkpointed >= self._next_position:
            os.close(self._active_fd)
            self._create_segment(self._checkpointed + 1)

    def _create_segment(self, first_position: int) -> None:
        path = self._segment_path(first_position)
        self._active_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._active_size = 0
        if self.fsync:
            _fsync_directory(self.directory)
        with self._cond:
            if not self._segments or self._segments[-1] != first_position:
                self._segments.append(first_position)
            self._next_position = max(self._next_position, first_position)
            self._durable_position = max(self._durable_position, first_position - 1)

    # -- appending ------------------------------------------------------------

    def append(self, payload: bytes) -> int:
        """Append one record; return its position once it is durable."""
        return self.append_many([payload])[0]

    def append_many(self, payloads: list[bytes]) -> list[int]:
        """Append records in order; return their positions once all are durable."""
        for payload in payloads:
            if HEADER_BYTES + len(payload) > self.segment_bytes or len(payload) > _MAX_PAYLOAD:
                raise IntakeError(
                    f"payload of {len(payload)} bytes does not fit a segment of "
                    f"{self.segment_bytes} bytes (with a {HEADER_BYTES}-byte header); "
                    "split the batch or raise segment_bytes"
                )
        crcs = [zlib.crc32(payload) for payload in payloads]
        with self._cond:
            self._raise_if_unusable()
            first = self._next_position
            self._next_position += len(payloads)
            self._pending.extend(zip(range(first, first + len(payloads)), payloads, crcs, strict=True))
            last = first + len(payloads) - 1
            while self._durable_position < last:
                if self._failure is not None:
                    raise IntakeError(
                        f"intake log write failed, record {last} is not durable: "
                        f"{self._failure}; reopen the log"
                    ) from self._failure
                if self._committing:
                    self._cond.wait()
                else:
                    self._commit_pending()
            return list(range(first, last + 1))

    def _raise_if_unusable(self) -> None:
        if self._closing or self._closed:
            raise IntakeClosedError(f"intake log {self.directory} is closed")
        if self._failure is not None:
            raise IntakeError(
                f"intake log {self.directory} had a failed write ({self._failure}); reopen it"
            ) from self._failure

    def _commit_pending(self) -> None:
        """Write and fsync every pending record. Called with _cond held; drops it meanwhile."""
        batch, self._pending = self._pending, []
        self._committing = True
        self._cond.release()
        try:
            self._write_batch(batch)
        except BaseException as exc:
            self._cond.acquire()
            self._failure = exc
            self._pending = []  # their appenders raise too; nothing is written after a failure
            self._committing = False
            self._cond.notify_all()
            return
        self._cond.acquire()
        self._durable_position = batch[-1][0]
        self._commits += 1
        self._appends += len(batch)
        self._committing = False
        self._cond.notify_all()

    def _write_batch(self, batch: list[tuple[int, bytes, int]]) -> None:
        chunk: list[bytes] = []
        chunk_size = 0
        for position, payload, payload_crc in batch:
            size = HEADER_BYTES + len(payload)
            if self._active_size + chunk_size + size > self.segment_bytes and (
                self._active_size + chunk_size > 0
            ):
                self._flush(chunk)
                chunk, chunk_size = [], 0
                os.close(self._active_fd)
                self._create_segment(position)
            header = _HEADER.pack(len(payload), _crc(payload, position, payload_crc), position)
            chunk += (header, payload)
            chunk_size += size
        self._flush(chunk)

    def _flush(self, chunk: list[bytes]) -> None:
        if not chunk:
            return
        data = memoryview(b"".join(chunk))
        while data:
            written = os.write(self._active_fd, data)
            data = data[written:]
            self._active_size += written
        if self.fsync:
            os.fsync(self._active_fd)

    # -- reading --------------------------------------------------------------

    @property
    def last_position(self) -> int | None:
        """The position of the last durable record, or None if none was ever written."""
        with self._cond:
            return self._durable_position or None

    def read(self, after: int | None = None, limit: int | None = None) -> Iterator[Record]:
        """Durable records with position > ``after`` (all retained ones if None), in order.

        Records appended while iterating are not included; call again. Asking
        for records that ``truncate`` already deleted raises ``IntakeError``.
        """
        with self._cond:
            self._raise_if_unusable()
            segments = list(self._segments)
            last = self._durable_position
        oldest = segments[0]
        start = oldest if after is None else after + 1
        if start < oldest:
            raise IntakeError(
                f"records {start}..{oldest - 1} of intake log {self.directory} were deleted "
                f"by truncate (oldest kept is {oldest}); read from after={oldest - 1} or later"
            )
        if limit is not None and limit < 0:
            raise IntakeError(f"limit must be >= 0, got {limit}")
        end = last if limit is None else min(last, start + limit - 1)
        return self._iterate(segments, start, end)

    def _iterate(self, segments: list[int], start: int, end: int) -> Iterator[Record]:
        if start > end:
            return
        index = max(i for i, first in enumerate(segments) if first <= start)
        offset = 0
        position = segments[index]
        hint = self._read_hint
        if hint is not None and hint[0] == start - 1 and hint[1] == segments[index]:
            position, offset = start, hint[2]
        while position <= end:
            first = segments[index]
            try:
                file = open(self._segment_path(first), "rb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                raise IntakeError(
                    f"segment {first} of intake log {self.directory} was deleted while "
                    "being read (truncate behind the checkpoint)"
                ) from None
            with file:
                file.seek(offset)
                segment_end = segments[index + 1] - 1 if index + 1 < len(segments) else end
                while position <= min(end, segment_end):
                    found = _read_record(file, position, with_payload=position >= start)
                    if found is None:
                        raise IntakeCorruptError(
                            f"record {position} in segment {_segment_name(first)} of intake "
                            f"log {self.directory} is damaged although it was acknowledged"
                        )
                    size, payload = found
                    offset += size
                    if position >= start:
                        self._read_hint = (position, first, offset)
                        yield Record(position, payload)
                    position += 1
            index += 1
            offset = 0
            if index < len(segments):
                position = segments[index]

    def wait_for(self, after: int, timeout: float) -> bool:
        """Block until a durable record beyond ``after`` exists; False on timeout or close."""
        with self._cond:
            self._raise_if_unusable()
            return (
                self._cond.wait_for(
                    lambda: self._durable_position > after or self._closing, timeout
                )
                and self._durable_position > after
            )

    # -- checkpoint and retention ---------------------------------------------

    @property
    def checkpointed(self) -> int | None:
        """The last position the consumer has durably finished with; survives reopen.

        With a consumer in another process (``external_consumer``), read from
        its checkpoint file.
        """
        if self.external_consumer:
            self._checkpointed = _load_checkpoint(self.directory)
        return self._checkpointed

    def checkpoint(self, position: int) -> None:
        """Durably record that every record up to ``position`` has been processed."""
        with self._checkpoint_lock:
            with self._cond:
                self._raise_if_unusable()
                last = self._durable_position
            if position > last:
                raise IntakeError(
                    f"cannot checkpoint position {position}: the last durable record is {last}"
                )
            if position < 1:
                raise IntakeError(f"checkpoint position must be >= 1, got {position}")
            current = self._checkpointed
            if current is not None and position < current:
                raise IntakeError(f"checkpoint cannot move backwards from {current} to {position}")
            if position == current:
                return
            _write_checkpoint(self.directory, position, self.fsync)
            self._checkpointed = position

    def truncate(self) -> int:
        """Delete whole segments that lie entirely behind the checkpoint; return how many.

        The active (last) segment is never deleted.
        """
        checkpointed = self._checkpointed
        if checkpointed is None:
            return 0
        with self._cond:
            self._raise_if_unusable()
            segments = list(self._segments)
        doomed = [
            first
            for first, following in itertools.pairwise(segments)
            if following - 1 <= checkpointed
        ]
        for first in doomed:
            # Remove from the list first, so a new read never picks a file that
            # is about to vanish.
            with self._cond:
                self._segments.remove(first)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._segment_path(first))
        if doomed and self.fsync:
            _fsync_directory(self.directory)
        return len(doomed)

    def stats(self) -> LogStats:
        with self._cond:
            segments = list(self._segments)
            last = self._durable_position
            commits, appends = self._commits, self._appends
        size = 0
        for first in segments:
            with contextlib.suppress(FileNotFoundError):
                size += self._segment_path(first).stat().st_size
        checkpointed = self.checkpointed
        return LogStats(
            segments=len(segments),
            bytes=size,
            last_position=last or None,
            checkpointed=checkpointed,
            lag=last - (checkpointed or 0),
            commits=commits,
            appends=appends,
        )

    # -- closing --------------------------------------------------------------

    def close(self) -> None:
        """Finish in-flight appends, then release the directory. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closing = True
            self._cond.notify_all()
            self._cond.wait_for(
                lambda: not self._committing and (not self._pending or self._failure is not None)
            )
            self._closed = True
        if self._active_fd >= 0:
            os.close(self._active_fd)
            self._active_fd = -1
        os.close(self._lock_fd)

    def __enter__(self) -> IntakeLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class IntakeReader:
    """The consumer's side of a log that another process appends to.

    Reads what the appender has written, in order; checkpoints; deletes
    segments wholly behind the checkpoint. A record that does not read back
    whole at the end of the last segment is one still being written: reading
    stops there and picks it up later. (It may be read before its fsync; if
    the machine then lost it, its sender never had a 200 and retries, and the
    retry is deduplicated.) One reader per directory (``READER`` lock).
    """

    def __init__(self, directory: Path, *, fsync: bool = True, poll_interval: float = 0.01) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self.poll_interval = poll_interval
        self._lock_fd = _lock(self.directory / _READER_LOCK_FILE, "already has a reader")
        self._checkpointed = _load_checkpoint(self.directory)
        self._closed = threading.Event()
        # Where the last read stopped: (next position, segment, offset).
        self._hint: tuple[int, int, int] | None = None

    @property
    def checkpointed(self) -> int | None:
        return self._checkpointed

    def read(self, after: int | None = None, limit: int | None = None) -> Iterator[Record]:
        segments = _list_segments(self.directory)
        if not segments:
            return iter(())
        start = segments[0] if after is None else after + 1
        if start < segments[0]:
            raise IntakeError(
                f"records {start}..{segments[0] - 1} of intake log {self.directory} were deleted "
                f"(oldest kept is {segments[0]}); read from after={segments[0] - 1} or later"
            )
        return self._iterate(segments, start, limit)

    def _iterate(self, segments: list[int], start: int, limit: int | None) -> Iterator[Record]:
        index = max(i for i, first in enumerate(segments) if first <= start)
        position, offset = segments[index], 0
        if self._hint is not None and self._hint[0] == start and self._hint[1] == segments[index]:
            position, offset = start, self._hint[2]
        produced = 0
        while index < len(segments) and (limit is None or produced < limit):
            first = segments[index]
            last_segment = index + 1 == len(segments)
            try:
                file = open(self.directory / _segment_name(first), "rb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                return
            with file:
                file.seek(offset)
                while limit is None or produced < limit:
                    if not last_segment and position >= segments[index + 1]:
                        break
                    found = _read_record(file, position, with_payload=position >= start)
                    if found is None:
                        if last_segment:
                            return  # not written yet (or being written)
                        raise IntakeCorruptError(
                            f"record {position} in segment {_segment_name(first)} of intake log "
                            f"{self.directory} is damaged although a later segment exists"
                        )
                    size, payload = found
                    offset += size
                    position += 1
                    self._hint = (position, first, offset)
                    if position - 1 >= start:
                        produced += 1
                        yield Record(position - 1, payload)
            index += 1
            offset = 0
            if index < len(segments):
                position = segments[index]

    def wait_for(self, after: int, timeout: float) -> bool:
        """Poll until a record beyond ``after`` can be read; False on timeout or close."""
        deadline = time.monotonic() + timeout
        while not self._closed.is_set():
            hint = self._hint  # peeking must not move the next read's starting point
            found = next(iter(self.read(after, limit=1)), None)
            self._hint = hint
            if found is not None:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._closed.wait(min(self.poll_interval, remaining))
        return False

    def checkpoint(self, position: int) -> None:
        if position < 1:
            raise IntakeError(f"checkpoint position must be >= 1, got {position}")
        if self._checkpointed is not None and position < self._checkpointed:
            raise IntakeError(f"checkpoint cannot move backwards from {self._checkpointed} to {position}")
        if position == self._checkpointed:
            return
        _write_checkpoint(self.directory, position, self.fsync)
        self._checkpointed = position

    def truncate(self) -> int:
        """Delete segments wholly behind the checkpoint; never the last one."""
        checkpointed = self._checkpointed
        if checkpointed is None:
            return 0
        segments = _list_segments(self.directory)
        doomed = [first for first, following in itertools.pairwise(segments) if following - 1 <= checkpointed]
        for first in doomed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / _segment_name(first))
        if doomed and self.fsync:
            _fsync_directory(self.directory)
        return len(doomed)

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            os.close(self._lock_fd)

    def __enter__(self) -> IntakeReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncAppender:
    """Appends for an asyncio server: one thread commits whatever requests have
    queued since its last commit, and wakes each waiting request's event loop
    once per commit, instead of a thread per request each waiting on the log."""

    def __init__(self, log: IntakeLog) -> None:
        self.log = log
        self._lock = threading.Lock()
        self._queued: list[tuple[bytes, asyncio.Future[int]]] = []
        self._wakeup = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="footfall-intake-appender", daemon=True)
        self._thread.start()

    async def append(self, payload: bytes) -> int:
        """The record's position, once it is durable."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._stopped:
                raise IntakeClosedError(f"intake log {self.log.directory} is closed")
            self._queued.append((payload, future))
        self._wakeup.set()
        return await future

    def _run(self) -> None:
        while True:
            self._wakeup.wait()
            self._wakeup.clear()
            with self._lock:
                queued, self._queued = self._queued, []
                stopped = self._stopped
            if queued:
                self._commit(queued)
            if stopped:
                return

    def _commit(self, queued: list[tuple[bytes, asyncio.Future[int]]]) -> None:
        try:
            outcome: list[int] | BaseException = self.log.append_many([payload for payload, _ in queued])
        except Exception as exc:  # each request answers with it; the server goes on
            outcome = exc
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], int | BaseException]]] = {}
        for index, (_, future) in enumerate(queued):
            result = outcome if isinstance(outcome, BaseException) else outcome[index]
            by_loop.setdefault(future.get_loop(), []).append((future, result))
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a loop that has closed has no one waiting
                loop.call_soon_threadsafe(_settle, settled)

    def close(self) -> None:
        """Commit what is queued, then stop."""
        with self._lock:
            self._stopped = True
        self._wakeup.set()
        self._thread.join()


def _settle(settled: list[tuple[asyncio.Future[int], int | BaseException]]) -> None:
    for future, result in settled:
        if future.done():
            continue  # its request was cancelled (the client went away)
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
