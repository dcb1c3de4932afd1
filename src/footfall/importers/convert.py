"""From mapped source columns to event rows, a whole block at a time.

CSV blocks arrive as text; Parquet batches arrive typed. Both go through
``to_events``, which reads each mapped column with Arrow compute, checks every
row, and returns the good rows as events plus one ``ImportRowError`` per bad
row. Only bad rows are looked at one by one (to word their error).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from footfall.errors import ImportRowError
from footfall.events.enrich import describe_client
from footfall.events.parse import MAX_EVENT_NAME_LENGTH, MAX_ID_LENGTH
from footfall.events.record import TIMESTAMP, conform
from footfall.importers.mapping import (
    FLOAT_FIELDS,
    INTEGER_FIELDS,
    TEXT_FIELDS,
    ColumnMapping,
    TimestampUnit,
)
from footfall.importers.source import MappingError, non_empty_text, row_event_ids

# Plausible event times: 1970-01-01 up to (not including) 2200-01-01, in ms.
# Anything outside is almost always a unit mistake (ms read as s, or s as ns).
MIN_TIMESTAMP_MS = 0
MAX_TIMESTAMP_MS = 7_258_118_400_000

_MS_PER_UNIT: dict[str, float] = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "ns": 1e-6}

_EPOCH_NUMBER = r"^-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$"
_ISO_DATE_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]{1,9})?)?)?"
_ISO_ZONED = _ISO_DATE_TIME + r"(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)$"
_ISO_NAIVE = _ISO_DATE_TIME + "$"
# Property text that is stored as a JSON number: plain decimals without leading
# zeros (so zip codes stay text) and with at most 15 integer digits (so long
# ids stay exact).
_JSON_NUMBER = r"^-?(0|[1-9][0-9]{0,14})(\.[0-9]+)?([eE][+-]?[0-9]{1,2})?$"
_JSON_BOOLEAN = r"^(true|false|True|False|TRUE|FALSE)$"
_URL_PATH = r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:)?(?://[^/?#]*)?(?P<path>[^?#]*)"

_NULL_TEXT = pa.scalar(None, pa.string())


class Converted(NamedTuple):
    events: pa.Table
    lines: np.ndarray
    rejected: list[ImportRowError]


# -- column types (checked before anything is read) ---------------------------


def _is_text(data_type: pa.DataType) -> bool:
    if pa.types.is_dictionary(data_type):
        return _is_text(data_type.value_type)
    return bool(pa.types.is_string(data_type) or pa.types.is_large_string(data_type))


def _is_scalar(data_type: pa.DataType) -> bool:
    return bool(
        _is_text(data_type)
        or pa.types.is_integer(data_type)
        or pa.types.is_floating(data_type)
        or pa.types.is_boolean(data_type)
        or pa.types.is_decimal(data_type)
        or pa.types.is_temporal(data_type)
    )


def check_column_types(mapping: ColumnMapping, schema: pa.Schema, source: str) -> None:
    """Refuse column types a field cannot take (typed sources such as Parquet)."""
    for target, column in mapping.columns.items():
        data_type = schema.field(column).type
        numeric = _is_text(data_type) or pa.types.is_integer(data_type) or pa.types.is_floating(data_type)
        if target == "timestamp":
            fits = numeric or pa.types.is_timestamp(data_type) or pa.types.is_date(data_type)
        elif target in FLOAT_FIELDS or target in INTEGER_FIELDS:
            fits = numeric or pa.types.is_decimal(data_type)
        else:
            fits = _is_scalar(data_type)
        if not fits:
            raise MappingError(
                f"{source}: column {column!r} has type {data_type}, which {target} cannot take;"
                " map text, number, boolean or time columns"
            )


# -- reading values -----------------------------------------------------------


def _text(values: pa.Array) -> pa.Array:
    if pa.types.is_string(values.type):
        return values
    return pc.cast(values, pa.string())


def _cast_each(values: pa.Array, target: pa.DataType) -> pa.Array:
    """Cast value by value, nulling the ones that fail: the slow path for a
    block whose values pass the pattern checks but not the cast (month 13)."""
    cast: list[object] = []
    for value in values.to_pylist():
        try:
            cast.append(None if value is None else pc.cast(pa.array([value]), target)[0].as_py())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            cast.append(None)
    return pa.array(cast, target)


def _cast_or_each(values: pa.Array, target: pa.DataType) -> pa.Array:
    try:
        return pc.cast(values, target)
    except pa.ArrowInvalid:
        return _cast_each(values, target)


def _epoch_ms(numbers: pa.Array, unit: TimestampUnit | None) -> np.ndarray:
    """Epoch numbers as float ms (NaN where null). Without a unit, the magnitude
    decides: below 1e11 seconds, below 1e14 ms, below 1e17 us, else ns — each
    range covers 1973..5138 in its own unit, so real times never collide."""
    values = np.asarray(pc.cast(numbers, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    if unit is not None:
        return values * _MS_PER_UNIT[unit]
    magnitude = np.abs(np.nan_to_num(values))
    multiplier = np.select(
        [magnitude < 1e11, magnitude < 1e14, magnitude < 1e17],
        [_MS_PER_UNIT["s"], _MS_PER_UNIT["ms"], _MS_PER_UNIT["us"]],
        _MS_PER_UNIT["ns"],
    )
    return np.asarray(values * multiplier, dtype=np.float64)


def _timestamps_to_ms(values: pa.Array) -> np.ndarray:
    """Arrow timestamps (naive ones taken as UTC) or dates as float ms."""
    if pa.types.is_date(values.type):
        values = pc.cast(values, pa.timestamp("ms"))
    if values.type.tz is None:
        values = pc.cast(values, pa.timestamp(values.type.unit, tz="UTC"))
    values = pc.cast(values, pa.timestamp("ms", tz="UTC"), safe=False)
    return np.asarray(pc.cast(values, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def _text_timestamps_ms(
    text: pa.Array, unit: TimestampUnit | None, timestamp_format: str | None
) -> np.ndarray:
    text = pc.utf8_trim_whitespace(text)
    if timestamp_format is not None:
        parsed = pc.strptime(text, format=timestamp_format, unit="ms", error_is_null=True)
        return _timestamps_to_ms(parsed)
    numeric = pc.fill_null(pc.match_substring_regex(text, _EPOCH_NUMBER), False)
    epoch = _epoch_ms(pc.if_else(numeric, text, _NULL_TEXT), unit)
    if not pc.any(pc.and_(pc.invert(numeric), pc.is_valid(text))).as_py():
        return epoch  # all epoch numbers: no need to look for ISO text
    zoned = pc.fill_null(pc.match_substring_regex(text, _ISO_ZONED), False)
    naive = pc.fill_null(pc.match_substring_regex(text, _ISO_NAIVE), False)
    # ISO 8601 allows a comma before the fraction; Arrow wants a dot.
    iso = pc.replace_substring(text, ",", ".")
    result = epoch
    if pc.any(zoned).as_py():
        parsed = _cast_or_each(pc.if_else(zoned, iso, _NULL_TEXT), pa.timestamp("ns", tz="UTC"))
        result = np.where(zoned.to_numpy(zero_copy_only=False), _timestamps_to_ms(parsed), result)
    if pc.any(naive).as_py():
        parsed = _cast_or_each(pc.if_else(naive, iso, _NULL_TEXT), pa.timestamp("ns"))
        result = np.where(naive.to_numpy(zero_copy_only=False), _timestamps_to_ms(parsed), result)
    return result


def timestamps_ms(values: pa.Array, mapping: ColumnMapping) -> np.ndarray:
    """Event times as float ms since the epoch; NaN where a value cannot be read."""
    if pa.types.is_timestamp(values.type) or pa.types.is_date(values.type):
        return _timestamps_to_ms(values)
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        return _epoch_ms(values, mapping.timestamp_unit)
    return _text_timestamps_ms(_text(values), mapping.timestamp_unit, mapping.timestamp_format)


def _numbers(values: pa.Array, data_type: pa.DataType) -> pa.Array:
    """Numbers from numbers or from text; unreadable text, and integers out of
    the type's range, become null."""
    if _is_text(values.type):
        text = pc.utf8_trim_whitespace(_text(values))
        numeric = pc.fill_null(pc.match_substring_regex(text, _EPOCH_NUMBER), False)
        numbers = pc.cast(pc.if_else(numeric, text, _NULL_TEXT), pa.float64())
    else:
        numbers = pc.cast(values, pa.float64())
    if pa.types.is_integer(data_type):
        fits = pc.and_(pc.greater_equal(numbers, -(2**31)), pc.less(numbers, 2**31))
        numbers = pc.if_else(fits, pc.round(numbers), pa.scalar(None, pa.float64()))
    return pc.cast(numbers, data_type)


# -- properties as JSON, built column-wise ------------------------------------

_CONTROL_ESCAPES = {chr(code): f"\\u{code:04x}" for code in range(0x20)} | {
    "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f",
}  # fmt: skip


def _json_strings(text: pa.Array) -> pa.Array:
    escaped = pc.replace_substring(text, "\\", "\\\\")
    escaped = pc.replace_substring(escaped, '"', '\\"')
    if pc.any(pc.match_substring_regex(escaped, "[\x00-\x1f]")).as_py():
        for char, escape in _CONTROL_ESCAPES.items():
            escaped = pc.replace_substring(escaped, char, escape)
    return pc.binary_join_element_wise('"', escaped, '"', "")


def json_values(values: pa.Array) -> pa.Array:
    """Each value as JSON text (null stays null): numbers and booleans keep their
    type, text that reads as a plain number or boolean becomes one, the rest is
    a JSON string."""
    data_type = values.type
    if pa.types.is_dictionary(data_type):
        values = pc.cast(values, data_type.value_type)
        data_type = values.type
    if pa.types.is_boolean(data_type) or pa.types.is_integer(data_type) or pa.types.is_decimal(data_type):
        return pc.cast(values, pa.string())
    if pa.types.is_floating(data_type):
        finite = pc.is_finite(values)
        return pc.if_else(finite, pc.cast(values, pa.string()), _NULL_TEXT)
    if not _is_text(data_type):
        return _json_strings(pc.cast(values, pa.string()))
    text = _text(values)
    number = pc.match_substring_regex(text, _JSON_NUMBER)
    boolean = pc.match_substring_regex(text, _JSON_BOOLEAN)
    return pc.if_else(
        number, text, pc.if_else(boolean, pc.utf8_lower(text), _json_strings(text))
    )


def properties_json(columns: list[tuple[str, pa.Array]], count: int) -> pa.Array:
    """One JSON object per row from (key, column) pairs; null values are left out."""
    if not columns:
        return pa.repeat(pa.scalar("{}"), count)
    members = []
    for key, values in columns:
        prefix = "," + msgspec.json.encode(key).decode() + ":"
        members.append(pc.fill_null(pc.binary_join_element_wise(prefix, json_values(values), ""), ""))
    # Every member starts with a comma; drop the first one.
    joined = pc.utf8_slice_codeunits(pc.binary_join_element_wise(*members, ""), start=1)
    return pc.binary_join_element_wise("{", joined, "}", "")


# -- checking rows ------------------------------------------------------------


class _Problems:
    """Row checks in priority order; a bad row reports its first failing check."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.checks: list[tuple[np.ndarray, Callable[[int], str]]] = []

    def add(self, mask: pa.Array | np.ndarray, describe: Callable[[int], str]) -> None:
        if isinstance(mask, pa.Array | pa.ChunkedArray):
            mask = pc.fill_null(mask, False).to_numpy(zero_copy_only=False)
        if mask.any():
            self.checks.append((mask, describe))

    def bad(self) -> np.ndarray:
        bad = np.zeros(self.count, dtype=bool)
        for mask, _ in self.checks:
            bad |= mask
        return bad

    def describe(self, row: int) -> str:
        return next(describe(row) for mask, describe in self.checks if mask[row])


def _shown(values: pa.Array, row: int) -> str:
    value = values[row].as_py()
    return repr(value if not isinstance(value, str) or len(value) <= 60 else value[:57] + "...")


def _timestamp_problem(values: pa.Array, mapping: ColumnMapping) -> Callable[[int], str]:
    if mapping.timestamp_format is not None:
        expected = f"the format {mapping.timestamp_format!r}"
    elif mapping.timestamp_unit is not None:
        expected = f"epoch {mapping.timestamp_unit} or ISO 8601"
    else:
        expected = "ISO 8601 (2024-05-01T12:00:00Z) or epoch seconds/milliseconds"

    def describe(row: int) -> str:
        if not values[row].is_valid:
            return "timestamp: empty"
        return f"timestamp: cannot read {_shown(values, row)} as a time; expected {expected}"

    return describe


def _out_of_range(values: pa.Array, mapping: ColumnMapping) -> Callable[[int], str]:
    def describe(row: int) -> str:
        value = values[row].as_py()
        epoch = isinstance(value, int | float) or (
            isinstance(value, str) and re.fullmatch(_EPOCH_NUMBER, value.strip()) is not None
        )
        hint = "; say the timestamp unit (s, ms, us, ns)" if epoch and mapping.timestamp_unit is None else ""
        return f"timestamp: {_shown(values, row)} is outside 1970-2199{hint}"

    return describe


def _not_a_number(field: str, values: pa.Array, data_type: pa.DataType) -> Callable[[int], str]:
    kind = "a 32-bit integer" if pa.types.is_integer(data_type) else "a number"
    return lambda row: f"{field}: {_shown(values, row)} is not {kind}"


def _check_text(problems: _Problems, field: str, text: pa.Array, limit: int, required: bool) -> None:
    if required:
        problems.add(pc.is_null(text), lambda row: f"{field}: empty")
    too_long = pc.greater(pc.utf8_length(text), limit)
    problems.add(too_long, lambda row: f"{field}: {text[row].as_py()[:40]!r}... is longer than {limit} characters")


def to_events(
    source: pa.Table,
    lines: np.ndarray,
    mapping: ColumnMapping,
    *,
    project_id: str,
    id_source: str,
) -> Converted:
    """Events from one block of source rows (columns named as in the source).

    ``lines`` holds each row's 1-based line in the source; it words errors and
    derives event ids when no column gives them.
    """
    count = source.num_rows
    columns = {name: source.column(name).combine_chunks() for name in mapping.source_columns}
    problems = _Problems(count)
    fields: dict[str, pa.Array] = {}

    raw_time = columns[mapping.columns["timestamp"]]
    time_ms = timestamps_ms(raw_time, mapping)
    unreadable = np.isnan(time_ms)
    problems.add(unreadable, _timestamp_problem(raw_time, mapping))
    in_range = (time_ms >= MIN_TIMESTAMP_MS) & (time_ms < MAX_TIMESTAMP_MS)
    problems.add(~unreadable & ~in_range, _out_of_range(raw_time, mapping))
    time_ms = np.where(in_range, time_ms, 0)
    timestamp = pc.cast(pa.array(np.floor(time_ms).astype(np.int64)), TIMESTAMP)

    for name in TEXT_FIELDS:
        if name in mapping.columns:
            fields[name] = non_empty_text(columns[mapping.columns[name]])
    if mapping.event_name is not None:
        fields["event"] = pa.repeat(pa.scalar(mapping.event_name), count)

    anonymous_id = fields.get("anonymous_id", pa.nulls(count, pa.string()))
    user_id = fields.get("user_id", pa.nulls(count, pa.string()))
    mapped_ids = [name for name in ("anonymous_id", "user_id") if name in fields]
    nobody = (
        "anonymous_id and user_id are both empty" if len(mapped_ids) == 2 else f"{mapped_ids[0]}: empty"
    ) + "; every event needs someone who did it"
    problems.add(pc.and_(pc.is_null(anonymous_id), pc.is_null(user_id)), lambda row: nobody)
    for name in ("anonymous_id", "user_id"):
        if name in fields:
            _check_text(problems, name, fields[name], MAX_ID_LENGTH, required=False)
    _check_text(problems, "event", fields["event"], MAX_EVENT_NAME_LENGTH, required=True)
    if "event_id" in fields:
        _check_text(problems, "event_id", fields["event_id"], MAX_ID_LENGTH, required=True)

    for names, data_type in ((FLOAT_FIELDS, pa.float64()), (INTEGER_FIELDS, pa.int32())):
        for name in names:
            if name in mapping.columns:
                raw = columns[mapping.columns[name]]
                number = _numbers(raw, data_type)
                problems.add(pc.and_(pc.is_valid(raw), pc.is_null(number)), _not_a_number(name, raw, data_type))
                fields[name] = number

    _derive_context(fields)
    fields["properties"] = properties_json(
        [(key, columns[column]) for key, column in mapping.properties], count
    )

    bad = problems.bad()
    rejected = [ImportRowError(int(lines[row]), problems.describe(int(row))) for row in np.flatnonzero(bad)]
    good = pa.array(~bad)
    kept_lines = lines[~bad]
    table = pa.table({**fields, "timestamp": timestamp}).filter(good)
    kept = table.num_rows
    table = table.append_column("received_at", table.column("timestamp"))
    if "event_id" not in table.column_names:
        table = table.append_column("event_id", row_event_ids(id_source, kept_lines))
    table = table.append_column("project_id", pa.repeat(pa.scalar(project_id), kept))
    table = table.append_column("type", pa.repeat(pa.scalar("track"), kept))
    return Converted(conform(table), kept_lines, rejected)


def _derive_context(fields: dict[str, pa.Array]) -> None:
    """What the collector derives too: the path from the URL, and device, OS
    and browser from the user agent (once per distinct agent)."""
    if "url" in fields:
        extracted = pc.struct_field(pc.extract_regex(fields["url"], _URL_PATH), [0])
        path = pc.if_else(pc.equal(extracted, ""), "/", extracted)
        fields["path"] = pc.coalesce(fields["path"], path) if "path" in fields else path
    if "user_agent" in fields:
        agents = pc.unique(fields["user_agent"]).drop_null()
        clients = [describe_client(agent) for agent in agents.to_pylist()]
        positions = pc.index_in(fields["user_agent"], value_set=agents)
        for name, index in (("device_type", 0), ("os", 1), ("browser", 2)):
            derived = pc.take(pa.array([client[index] for client in clients], pa.string()), positions)
            fields[name] = pc.coalesce(fields[name], derived) if name in fields else derived
