"""Column mappings: which source column fills which event field.

A mapping goes from Footfall fields to source columns::

    {"event": "action", "user_id": "uid", "timestamp": "ts", "properties.revenue": "amount"}

``properties.NAME`` puts a column into the event's properties under ``NAME``
(flat: ``properties.a.b`` is the key ``"a.b"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, cast, get_args

from footfall.events.parse import MAX_EVENT_NAME_LENGTH
from footfall.importers.source import MappingError

TimestampUnit = Literal["s", "ms", "us", "ns"]
TIMESTAMP_UNITS: tuple[str, ...] = get_args(TimestampUnit)

PROPERTIES_PREFIX = "properties."

# Event fields a column can fill, and the kind of value each takes.
TEXT_FIELDS = (
    "event_id", "event", "anonymous_id", "user_id",
    "url", "path", "referrer", "title", "user_agent", "ip", "locale", "library",
    "device_type", "os", "browser", "country", "utm_source", "utm_medium", "utm_campaign",
)  # fmt: skip
FLOAT_FIELDS = ("x", "y")
INTEGER_FIELDS = ("viewport_width", "viewport_height")
TARGETS = ("timestamp", *TEXT_FIELDS, *FLOAT_FIELDS, *INTEGER_FIELDS)

_SET_BY_IMPORT = {
    "project_id": "the project is the one you import into",
    "type": "imported rows are always track events",
    "person_id": "persons are resolved from anonymous_id and user_id",
    "session_id": "sessions are assigned by the pipeline",
    "received_at": "imported rows take their timestamp as received_at",
    "properties": "map single columns with properties.NAME=COLUMN",
}


@dataclass(frozen=True)
class ColumnMapping:
    """A checked mapping plus the options that shape how values are read."""

    columns: Mapping[str, str]  # field -> source column
    event_name: str | None = None
    timestamp_unit: TimestampUnit | None = None
    timestamp_format: str | None = None

    @property
    def properties(self) -> list[tuple[str, str]]:
        """(property key, source column) pairs."""
        return [
            (target[len(PROPERTIES_PREFIX) :], column)
            for target, column in self.columns.items()
            if target.startswith(PROPERTIES_PREFIX)
        ]

    @property
    def source_columns(self) -> list[str]:
        """Every source column the mapping reads, once, in mapping order."""
        return list(dict.fromkeys(self.columns.values()))

    def check_columns(self, available: Sequence[str], source: str) -> None:
        """Raise ``MappingError`` naming every mapped column ``source`` lacks."""
        present = set(available)
        missing = [(target, column) for target, column in self.columns.items() if column not in present]
        if missing:
            listed = ", ".join(f"{column!r} (for {target})" for target, column in missing)
            raise MappingError(
                f"{source} has no column {listed}; its columns are: {', '.join(available) or '(none)'}"
            )


def check_target(target: str) -> None:
    if target in TARGETS:
        return
    if target.startswith(PROPERTIES_PREFIX):
        if not target[len(PROPERTIES_PREFIX) :].strip():
            raise MappingError(f"{target!r}: name the property, as in properties.revenue=amount")
        return
    if target in _SET_BY_IMPORT:
        raise MappingError(f"{target!r} cannot be mapped: {_SET_BY_IMPORT[target]}")
    raise MappingError(
        f"unknown field {target!r}; map one of {', '.join(TARGETS)} or properties.NAME"
    )


def column_mapping(
    mapping: Mapping[str, str] | str,
    *,
    event_name: str | None = None,
    timestamp_unit: str | None = None,
    timestamp_format: str | None = None,
) -> ColumnMapping:
    """Check a mapping (a dict, or the CLI's ``a=b,c=d`` text) and its options."""
    columns = parse_mapping(mapping) if isinstance(mapping, str) else dict(mapping)
    for target, column in columns.items():
        check_target(target)
        if not isinstance(column, str) or not column:
            raise MappingError(f"{target}: give the source column's name")
    if event_name is not None and not event_name.strip():
        raise MappingError("the constant event name must not be empty")
    if event_name is not None and len(event_name) > MAX_EVENT_NAME_LENGTH:
        raise MappingError(f"the constant event name is longer than {MAX_EVENT_NAME_LENGTH} characters")
    if "event" in columns and event_name is not None:
        raise MappingError(
            f"both an event column ({columns['event']!r}) and a constant event name ({event_name!r});"
            " give one of them"
        )
    if "event" not in columns and event_name is None:
        raise MappingError("say which event the rows are: map event=COLUMN, or give a constant event name")
    if "timestamp" not in columns:
        raise MappingError("map timestamp=COLUMN: every event needs a time")
    if "anonymous_id" not in columns and "user_id" not in columns:
        raise MappingError("map user_id=COLUMN or anonymous_id=COLUMN (or both): events need someone who did them")
    if timestamp_unit is not None and timestamp_unit not in TIMESTAMP_UNITS:
        raise MappingError(
            f"unknown timestamp unit {timestamp_unit!r}; use one of {', '.join(TIMESTAMP_UNITS)}"
        )
    if timestamp_unit is not None and timestamp_format is not None:
        raise MappingError("give a timestamp unit (for epoch numbers) or a timestamp format (for text), not both")
    return ColumnMapping(
        columns=columns,
        event_name=event_name,
        timestamp_unit=cast(TimestampUnit | None, timestamp_unit),
        timestamp_format=timestamp_format,
    )


def parse_mapping(text: str) -> dict[str, str]:
    """The CLI's ``--map`` text as a mapping from fields to columns.

    >>> parse_mapping("event=action, user_id=uid,properties.revenue=amount")
    {'event': 'action', 'user_id': 'uid', 'properties.revenue': 'amount'}
    """
    mapping: dict[str, str] = {}
    for item in text.split(","):
        pair = item.strip()
        if not pair:
            continue
        target, equals, column = (part.strip() for part in pair.partition("="))
        if not equals or not target or not column:
            raise MappingError(f"bad mapping item {pair!r}: write FIELD=COLUMN, e.g. user_id=uid")
        check_target(target)
        if target in mapping:
            raise MappingError(f"{target!r} is mapped twice ({mapping[target]!r} and {column!r})")
        mapping[target] = column
    if not mapping:
        raise MappingError("empty mapping: write FIELD=COLUMN pairs, e.g. event=action,user_id=uid,timestamp=ts")
    return mapping
