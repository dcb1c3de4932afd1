"""CSV and Parquet files with a column mapping.

CSV is cut into blocks at record boundaries and each block parsed by Arrow
with every mapped column read as text, so one odd value never fails a block
and each error names its physical line (the header is line 1). A block whose
records do not sit one per line (quoted newlines, blank lines, rows with the
wrong number of fields) is re-read with the ``csv`` module, which knows where
each record starts. Parquet is read batch by batch; its "line" is the 1-based
row number.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from footfall.errors import ImportRowError
from footfall.importers.convert import check_column_types, to_events
from footfall.importers.mapping import ColumnMapping, column_mapping
from footfall.importers.source import (
    DEFAULT_CHUNK_ROWS,
    ImportChunk,
    ImportSource,
    MappingError,
    SourceError,
    existing_file,
    share_of_bytes,
    strict_prefix,
)

_BOM = b"\xef\xbb\xbf"
_FIRST_BLOCK_BYTES = 4 << 20
_MIN_BLOCK_BYTES = 64 << 10
_MAX_BLOCK_BYTES = 256 << 20


class _Block(NamedTuple):
    """Source rows before conversion: mapped columns, each row's line, and the
    rows already rejected while reading (wrong number of fields)."""

    table: pa.Table
    lines: np.ndarray
    rejected: list[ImportRowError]
    rows_read: int
    bytes_read: int


def _converted(
    blocks: Iterator[_Block],
    mapping: ColumnMapping,
    *,
    project_id: str,
    id_source: str,
    strict: bool,
) -> Iterator[ImportChunk]:
    for block in blocks:
        converted = to_events(block.table, block.lines, mapping, project_id=project_id, id_source=id_source)
        chunk = ImportChunk(
            events=converted.events,
            lines=converted.lines,
            rejected=sorted([*block.rejected, *converted.rejected], key=lambda error: error.line),
            rows_read=block.rows_read,
            bytes_read=block.bytes_read,
        )
        if strict and chunk.rejected:
            prefix, error = strict_prefix(chunk)
            yield prefix
            raise error
        yield chunk


# -- CSV ------------------------------------------------------------------------


def _record_end(buffer: bytes | bytearray) -> int:
    """The offset just past the last newline outside quotes, or -1.

    Quotes are doubled inside quoted fields (RFC 4180), so a newline is inside
    a field exactly when an odd number of quotes precede it.
    """
    position = buffer.rfind(b"\n")
    quotes = buffer.count(b'"', 0, position) if position >= 0 else 0
    while position >= 0:
        if quotes % 2 == 0:
            return position + 1
        previous = buffer.rfind(b"\n", 0, position)
        quotes -= buffer.count(b'"', previous + 1, position)
        position = previous
    return -1


def _first_record_end(buffer: bytes | bytearray) -> int:
    """The offset just past the first newline outside quotes, or -1."""
    position = buffer.find(b"\n")
    quotes = buffer.count(b'"', 0, position) if position >= 0 else 0
    while position >= 0:
        if quotes % 2 == 0:
            return position + 1
        following = buffer.find(b"\n", position + 1)
        quotes += buffer.count(b'"', position + 1, following if following >= 0 else len(buffer))
        position = following
    return -1


class _BlockSizer:
    """Block sizes that aim at ``chunk_rows`` rows, from the bytes per row seen so far."""

    def __init__(self, chunk_rows: int) -> None:
        self.chunk_rows = chunk_rows
        self.bytes_seen = 0
        self.rows_seen = 0

    def seen(self, block_bytes: int, rows: int) -> None:
        self.bytes_seen += block_bytes
        self.rows_seen += rows

    def next_size(self) -> int:
        if self.rows_seen == 0:
            return _FIRST_BLOCK_BYTES
        per_row = self.bytes_seen / self.rows_seen
        return int(min(max(per_row * self.chunk_rows, _MIN_BLOCK_BYTES), _MAX_BLOCK_BYTES))


def _blocks_of_records(stream: BinaryIO, sizer: _BlockSizer) -> Iterator[bytes]:
    """Cut a byte stream into blocks that each end at a record boundary."""
    buffer = bytearray()
    while True:
        size = sizer.next_size()
        data = stream.read(size)
        buffer += data
        if len(data) < size:  # a file reads short only at its end
            if buffer:
                yield bytes(buffer)
            return
        end = _record_end(buffer)
        if end <= 0:
            continue  # one record longer than the block: read on
        yield bytes(buffer[:end])
        del buffer[:end]


def _header(file: Path, delimiter: str, encoding: str) -> tuple[list[str], int, int]:
    """The column names, the byte offset where data starts, and the line it starts on."""
    with file.open("rb") as stream:
        head = bytearray()
        while True:
            data = stream.read(64 << 10)
            head += data
            end = _first_record_end(head)
            if end > 0 or not data:
                break
    if end <= 0:
        end = len(head)
    start = len(_BOM) if head.startswith(_BOM) else 0
    try:
        text = bytes(head[start:end]).decode(encoding)
    except UnicodeDecodeError as exc:
        raise SourceError(f"{file}: the header is not {encoding} text ({exc.reason}); pass the file's encoding") from None
    names = next(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), [])
    if not names:
        raise SourceError(f"{file} is empty: expected a header line naming the columns")
    return names, end, head[:end].count(b"\n") + 1


class _CsvLayout(NamedTuple):
    names: list[str]  # header, as in the file
    positions: dict[str, int]  # mapped source column -> its position
    delimiter: str
    encoding: str


def _csv_block(block: bytes, first_line: int, layout: _CsvLayout) -> _Block:
    internal = [f"c{index}" for index in range(len(layout.names))]
    wanted = {name: internal[position] for name, position in layout.positions.items()}
    misshapen: list[pacsv.InvalidRow] = []

    def note_invalid(row: pacsv.InvalidRow) -> str:
        misshapen.append(row)
        return "skip"

    try:
        parsed = pacsv.read_csv(
            io.BytesIO(block),
            read_options=pacsv.ReadOptions(column_names=internal, encoding=layout.encoding),
            parse_options=pacsv.ParseOptions(
                delimiter=layout.delimiter, newlines_in_values=True, invalid_row_handler=note_invalid
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(wanted.values(), pa.string()),
                include_columns=list(dict.fromkeys(wanted.values())),
                strings_can_be_null=True,
                null_values=[""],
                quoted_strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        parsed = None
    physical_lines = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
    one_record_per_line = (
        parsed is not None
        and not misshapen
        and parsed.num_rows == physical_lines
        and block.count(b"\r") == block.count(b"\r\n")
    )
    if parsed is None or not one_record_per_line:
        return _csv_block_by_record(block, first_line, layout)
    table = pa.table({name: parsed.column(column) for name, column in wanted.items()})
    lines = np.arange(first_line, first_line + parsed.num_rows, dtype=np.int64)
    return _Block(table, lines, [], parsed.num_rows, len(block))


def _csv_block_by_record(block: bytes, first_line: int, layout: _CsvLayout) -> _Block:
    """The slow path: the csv module, which reports where every record starts."""
    try:
        text = block.decode(layout.encoding)
    except UnicodeDecodeError as exc:
        line = first_line + block.count(b"\n", 0, exc.start)
        raise SourceError(
            f"line {line}: not {layout.encoding} text ({exc.reason}); pass the file's encoding"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=layout.delimiter)
    width = len(layout.names)
    values: dict[str, list[str | None]] = {name: [] for name in layout.positions}
    lines: list[int] = []
    rejected: list[ImportRowError] = []
    rows = 0
    try:
        while True:
            start = first_line + reader.line_num
            try:
                record = next(reader)
            except StopIteration:
                break
            if not record:
                continue  # a blank line
            rows += 1
            if len(record) != width:
                rejected.append(ImportRowError(start, f"has {len(record)} fields; the header has {width}"))
                continue
            lines.append(start)
            for name, position in layout.positions.items():
                values[name].append(record[position] or None)
    except csv.Error as exc:
        raise SourceError(f"line {first_line + reader.line_num}: cannot read CSV ({exc})") from None
    table = pa.table({name: pa.array(column, pa.string()) for name, column in values.items()})
    return _Block(table, np.array(lines, dtype=np.int64), rejected, rows, len(block))


def _csv_blocks(file: Path, data_start: int, first_line: int, layout: _CsvLayout, chunk_rows: int) -> Iterator[_Block]:
    line = first_line
    sizer = _BlockSizer(chunk_rows)
    header_bytes = data_start  # counted with the first block, so progress reaches the file size
    with file.open("rb") as stream:
        stream.seek(data_start)
        for block in _blocks_of_records(stream, sizer):
            parsed = _csv_block(block, line, layout)
            sizer.seen(len(block), parsed.rows_read)
            line += block.count(b"\n")
            yield parsed._replace(bytes_read=parsed.bytes_read + header_bytes)
            header_bytes = 0


def read_csv(
    path: str | Path,
    mapping: Mapping[str, str] | str,
    *,
    event_name: str | None = None,
    timestamp_unit: str | None = None,
    timestamp_format: str | None = None,
    delimiter: str = ",",
    encoding: str = "utf-8",
    project_id: str = "default",
    strict: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    source_name: str | None = None,
) -> ImportSource:
    """Events from a CSV file with a header line, one per row.

    ``mapping`` goes from event fields to columns (a dict, or ``"event=action,
    user_id=uid,timestamp=ts"``); ``event_name`` names the event of every row
    when no column does. Timestamps are ISO 8601 text or epoch numbers (unit
    from their size unless ``timestamp_unit`` says), or text in
    ``timestamp_format`` (strptime). Rows without an ``event_id`` column get ids
    from ``source_name`` (the file name by default) and their line, so
    importing the file again yields the same ids.

    Raises ``MappingError`` or ``SourceError`` before reading any row if the
    mapping or the file is wrong.
    """
    file = existing_file(path, "CSV file")
    checked = column_mapping(
        mapping, event_name=event_name, timestamp_unit=timestamp_unit, timestamp_format=timestamp_format
    )
    if len(delimiter) != 1:
        raise SourceError(f"the delimiter must be one character, not {delimiter!r}")
    names, data_start, first_line = _header(file, delimiter, encoding)
    checked.check_columns(names, str(file))
    twice = sorted({name for name in checked.source_columns if names.count(name) > 1})
    if twice:
        raise MappingError(f"{file}: the header names column {', '.join(map(repr, twice))} more than once")
    layout = _CsvLayout(names, {name: names.index(name) for name in checked.source_columns}, delimiter, encoding)
    chunks = _converted(
        _csv_blocks(file, data_start, first_line, layout, chunk_rows),
        checked,
        project_id=project_id,
        id_source=source_name or file.name,
        strict=strict,
    )
    return ImportSource(str(file), file.stat().st_size, chunks)


# -- Parquet ------------------------------------------------------------------------


def _parquet_blocks(parquet: pq.ParquetFile, columns: list[str], chunk_rows: int, size_bytes: int) -> Iterator[_Block]:
    total = parquet.metadata.num_rows
    done = 0
    try:
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=columns):
            rows = batch.num_rows
            lines = np.arange(done + 1, done + rows + 1, dtype=np.int64)
            consumed = share_of_bytes(size_bytes, done + rows, total) - share_of_bytes(size_bytes, done, total)
            done += rows
            yield _Block(pa.Table.from_batches([batch]), lines, [], rows, consumed)
    finally:
        parquet.close()


def read_parquet(
    path: str | Path,
    mapping: Mapping[str, str] | str,
    *,
    event_name: str | None = None,
    timestamp_unit: str | None = None,
    timestamp_format: str | None = None,
    project_id: str = "default",
    strict: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    source_name: str | None = None,
) -> ImportSource:
    """Events from a Parquet file, one per row; as ``read_csv``, with row
    numbers (from 1) in place of lines. Typed columns keep their types:
    timestamp and date columns are times (naive ones in UTC), numbers stay
    numbers in properties."""
    file = existing_file(path, "Parquet file")
    checked = column_mapping(
        mapping, event_name=event_name, timestamp_unit=timestamp_unit, timestamp_format=timestamp_format
    )
    try:
        parquet = pq.ParquetFile(file)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{file} is not a Parquet file: {exc}") from None
    schema = parquet.schema_arrow
    try:
        checked.check_columns(schema.names, str(file))
        check_column_types(checked, schema, str(file))
    except MappingError:
        parquet.close()
        raise
    size = file.stat().st_size
    chunks = _converted(
        _parquet_blocks(parquet, checked.source_columns, chunk_rows, size),
        checked,
        project_id=project_id,
        id_source=source_name or file.name,
        strict=strict,
    )
    return ImportSource(str(file), size, chunks)
