"""Segment-format JSON lines: one message per line, as Segment exports them.

Each line goes through the collector's own parser, so an import accepts and
rejects exactly what the HTTP API would. ``receivedAt`` in a message is
trusted (it was received long ago); a message without one is taken as
received when it was sent (``sentAt``, else its own timestamp), so no clock
correction moves it to the time of the import. Files ending in ``.gz`` are
read through gzip.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np

from footfall.errors import ImportRowError, MessageError
from footfall.events.parse import decode_message, to_event
from footfall.events.record import Event, events_to_table
from footfall.importers.source import (
    DEFAULT_CHUNK_ROWS,
    ImportChunk,
    ImportSource,
    SourceError,
    existing_file,
    strict_prefix,
)


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_line(line: bytes, *, project_id: str, imported_at: datetime) -> Event:
    """One exported message as an event; raises ``MessageError``."""
    message, data = decode_message(line)
    received = message.received_at or message.sent_at or message.timestamp or message.original_timestamp
    return to_event(
        message,
        raw=data,
        received_at=_as_utc(received) if received is not None else imported_at,
        project_id=project_id,
        trust_received_at=True,
    )


def _chunks(file: Path, project_id: str, strict: bool, chunk_rows: int) -> Iterator[ImportChunk]:
    imported_at = datetime.now(UTC)
    with file.open("rb") as raw:
        stream: BinaryIO = gzip.GzipFile(fileobj=raw) if file.suffix == ".gz" else raw  # type: ignore[assignment]
        events: list[Event] = []
        lines: list[int] = []
        rejected: list[ImportRowError] = []
        rows = 0
        position = 0
        number = 0

        def chunk() -> ImportChunk:
            nonlocal position
            done = ImportChunk(
                events=events_to_table(events),
                lines=np.array(lines, dtype=np.int64),
                rejected=list(rejected),
                rows_read=rows,
                bytes_read=raw.tell() - position,
            )
            position = raw.tell()
            events.clear()
            lines.clear()
            rejected.clear()
            return done

        try:
            for number, line in enumerate(stream, start=1):
                if number == 1 and line.startswith(b"\xef\xbb\xbf"):
                    line = line[3:]
                if not line.strip():
                    continue
                rows += 1
                try:
                    events.append(parse_line(line, project_id=project_id, imported_at=imported_at))
                    lines.append(number)
                except MessageError as exc:
                    rejected.append(ImportRowError(number, str(exc)))
                    if strict:
                        prefix, error = strict_prefix(chunk())
                        yield prefix
                        raise error from None
                if rows == chunk_rows:
                    yield chunk()
                    rows = 0
        except (OSError, EOFError) as exc:  # a truncated or corrupt .gz
            raise SourceError(f"{file}: cannot read past line {number}: {exc}") from None
        if rows:
            yield chunk()


def read_jsonl(
    path: str | Path,
    *,
    project_id: str = "default",
    strict: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> ImportSource:
    """Events from a Segment-format JSON lines file (``.jsonl`` or ``.jsonl.gz``).

    Blank lines are skipped. A line that is not JSON or not a valid message is
    rejected with its line number and the parser's reason; with ``strict`` it
    stops the import instead (lines before it are imported, none after).
    """
    file = existing_file(path, "JSON lines file")
    return ImportSource(str(file), file.stat().st_size, _chunks(file, project_id, strict, chunk_rows))
