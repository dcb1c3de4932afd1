"""What every importer yields: chunks of events plus the rows it rejected.

A reader is an ``ImportSource``: an iterator of ``ImportChunk`` that also says
what it reads (``name``) and how big it is (``size_bytes``), so a caller can
draw a progress bar. Readers check their arguments (file, mapping, columns)
when they are created, before anything is read or stored.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from footfall.errors import FootfallError, ImportRowError

DEFAULT_CHUNK_ROWS = 100_000

_IMPORT_NAMESPACE = uuid.UUID("190b473c-fac3-4bf8-88d6-6992d96a6645")


class MappingError(FootfallError):
    """A column mapping names an unknown field or a column the source lacks."""

    code = "bad_mapping"


class SourceError(FootfallError):
    """The source as a whole cannot be read (missing file, wrong format, dataset not installed)."""

    code = "bad_source"


@dataclass(frozen=True)
class ImportChunk:
    """One step of an import.

    ``events`` is in ``EVENT_SCHEMA``; ``lines`` holds each event's 1-based
    line (or row) in the source, aligned with ``events``. ``rows_read`` counts
    source rows this chunk covered (imported and rejected); ``bytes_read`` the
    source bytes it covered, for progress bars.
    """

    events: pa.Table
    lines: np.ndarray
    rejected: list[ImportRowError] = field(default_factory=list)
    rows_read: int = 0
    bytes_read: int = 0


class ImportSource(Iterator[ImportChunk]):
    """An iterator of chunks that knows what it reads.

    ``size_bytes`` is the total a progress bar fed with ``ImportChunk.bytes_read``
    reaches at the end.
    """

    def __init__(self, name: str, size_bytes: int, chunks: Iterator[ImportChunk]) -> None:
        self.name = name
        self.size_bytes = size_bytes
        self._chunks = chunks

    def __next__(self) -> ImportChunk:
        return next(self._chunks)

    def __repr__(self) -> str:
        return f"ImportSource({self.name!r}, size_bytes={self.size_bytes})"


def existing_file(path: str | Path, what: str) -> Path:
    file = Path(path)
    if not file.exists():
        raise SourceError(f"no {what} at {file}")
    if not file.is_file():
        raise SourceError(f"{file} is not a file; give the path of a {what}")
    return file


def row_event_ids(source_name: str, lines: np.ndarray) -> pa.Array:
    """Deterministic event ids for rows that carry none: one per (source, line).

    The id is UUID-shaped: the first 20 hex digits come from the source name
    (a version-5 style hash), the last 12 are the line number in hex. The same
    file imported again gets the same ids; no two lines of it share one.

    >>> row_event_ids("orders.csv", np.array([2, 3])).to_pylist()
    ['2a450754-5559-53d4-ac45-000000000002', '2a450754-5559-53d4-ac45-000000000003']
    """
    digest = bytearray(hashlib.sha1(_IMPORT_NAMESPACE.bytes + source_name.encode()).digest()[:10])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    head = digest.hex()
    prefix = f"{head[:8]}-{head[8:12]}-{head[12:16]}-{head[16:20]}-"
    return pa.array([f"{prefix}{line:012x}" for line in lines.tolist()], pa.string())


def share_of_bytes(size_bytes: int, rows_done: int, rows_total: int) -> int:
    """Bytes consumed once ``rows_done`` of ``rows_total`` rows are read, for
    sources read whole up front (datasets, Parquet)."""
    return size_bytes if rows_total == 0 else size_bytes * rows_done // rows_total


def first_rejected(rejected: list[ImportRowError]) -> ImportRowError:
    return min(rejected, key=lambda error: error.line)


def strict_prefix(chunk: ImportChunk) -> tuple[ImportChunk, ImportRowError]:
    """In strict mode: the part of ``chunk`` before its first bad row, and that row's error."""
    error = first_rejected(chunk.rejected)
    keep = chunk.lines < error.line
    prefix = ImportChunk(
        events=chunk.events.filter(pa.array(keep)),
        lines=chunk.lines[keep],
        rejected=[],
        rows_read=chunk.rows_read,
        bytes_read=chunk.bytes_read,
    )
    return prefix, error


def empty_lines() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


def non_empty_text(values: pa.Array) -> pa.Array:
    """Text with empty and blank values turned into nulls."""
    text = values if pa.types.is_string(values.type) else pc.cast(values, pa.string())
    blank = pc.equal(pc.utf8_trim_whitespace(text), "")
    return pc.if_else(blank, pa.scalar(None, pa.string()), text)
