"""The internal event record and its columnar (Arrow) form.

``EVENT_SCHEMA`` is the one definition of the events table's columns: the
parser fills it row by row, importers and the simulator build it column by
column, and each backend derives its DDL from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import msgspec
import pyarrow as pa

TIMESTAMP = pa.timestamp("ms", tz="UTC")

EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("project_id", pa.string(), nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("event", pa.string(), nullable=False),
        pa.field("person_id", pa.string(), nullable=False),
        pa.field("anonymous_id", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("timestamp", TIMESTAMP, nullable=False),
        pa.field("received_at", TIMESTAMP, nullable=False),
        pa.field("properties", pa.string(), nullable=False),  # JSON object
        pa.field("url", pa.string()),
        pa.field("path", pa.string()),
        pa.field("referrer", pa.string()),
        pa.field("title", pa.string()),
        pa.field("user_agent", pa.string()),
        pa.field("ip", pa.string()),
        pa.field("locale", pa.string()),
        pa.field("library", pa.string()),
        pa.field("device_type", pa.string()),
        pa.field("os", pa.string()),
        pa.field("browser", pa.string()),
        pa.field("country", pa.string()),
        pa.field("utm_source", pa.string()),
        pa.field("utm_medium", pa.string()),
        pa.field("utm_campaign", pa.string()),
        # Heatmap fields for clicks: page coordinates and the viewport they were taken in.
        pa.field("x", pa.float64()),
        pa.field("y", pa.float64()),
        pa.field("viewport_width", pa.int32()),
        pa.field("viewport_height", pa.int32()),
    ]
)

EVENT_COLUMNS = tuple(EVENT_SCHEMA.names)

# Events Footfall writes itself (segment membership changes): stored with the
# person's events, but not something the person did, so profiles and segment
# conditions do not count them.
SYSTEM_EVENTS = ("segment_entered", "segment_exited")

# Columns the pipeline fills in (identity and sessions); everything else comes
# from the message itself.
RESOLVED_COLUMNS = ("person_id", "session_id")

# The columns a message fills in, in ``EVENT_SCHEMA`` order: all but the
# project (the store's) and the resolved ones. The intake path carries events
# as tuples of these values (``rows_to_table``).
MESSAGE_COLUMNS = tuple(name for name in EVENT_COLUMNS if name not in ("project_id", *RESOLVED_COLUMNS))


class Event(msgspec.Struct, kw_only=True, gc=False):
    """One normalised event, before or after identity resolution.

    ``person_id`` and ``session_id`` are empty until the pipeline resolves them.
    Identify traits, group traits and alias ``previous_id`` travel in
    ``properties`` (JSON), which is where the pipeline reads them from.
    """

    event_id: str
    project_id: str
    type: str
    event: str
    timestamp: datetime
    received_at: datetime
    anonymous_id: str | None = None
    user_id: str | None = None
    person_id: str = ""
    session_id: str = ""
    properties: str = "{}"
    url: str | None = None
    path: str | None = None
    referrer: str | None = None
    title: str | None = None
    user_agent: str | None = None
    ip: str | None = None
    locale: str | None = None
    library: str | None = None
    device_type: str | None = None
    os: str | None = None
    browser: str | None = None
    country: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    x: float | None = None
    y: float | None = None
    viewport_width: int | None = None
    viewport_height: int | None = None


def events_to_table(events: Sequence[Event]) -> pa.Table:
    """Rows to the columnar form of ``EVENT_SCHEMA``."""
    if not events:
        return EVENT_SCHEMA.empty_table()
    # Transposing tuples runs in C: about 3x faster than a getattr per cell.
    columns = dict(zip(Event.__struct_fields__, zip(*map(msgspec.structs.astuple, events), strict=True), strict=True))
    return pa.Table.from_arrays(
        [pa.array(columns[field.name], type=field.type) for field in EVENT_SCHEMA], schema=EVENT_SCHEMA
    )


def rows_to_table(rows: Sequence[Sequence[Any]], project_id: str) -> pa.Table:
    """Tuples of ``MESSAGE_COLUMNS`` values to the columnar form of ``EVENT_SCHEMA``,
    the person and session left empty for the pipeline."""
    if not rows:
        return EVENT_SCHEMA.empty_table()
    count = len(rows)
    columns = dict(zip(MESSAGE_COLUMNS, zip(*rows, strict=True), strict=True))  # transposed in C
    arrays = []
    for field in EVENT_SCHEMA:
        if field.name == "project_id":
            arrays.append(pa.repeat(pa.scalar(project_id, pa.string()), count))
        elif field.name in RESOLVED_COLUMNS:
            arrays.append(pa.repeat(pa.scalar("", pa.string()), count))
        else:
            arrays.append(pa.array(columns[field.name], type=field.type))
    return pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA)


def empty_events_table() -> pa.Table:
    return EVENT_SCHEMA.empty_table()


def conform(table: pa.Table) -> pa.Table:
    """Give a table built elsewhere (importer, simulator) the exact event schema.

    Missing optional columns become nulls, ``person_id`` and ``session_id``
    default to empty (resolved later); extra columns are an error because they
    would be silently lost.
    """
    extra = set(table.column_names) - set(EVENT_COLUMNS)
    if extra:
        raise ValueError(f"unknown event columns {sorted(extra)}; known: {', '.join(EVENT_COLUMNS)}")
    arrays = []
    for field in EVENT_SCHEMA:
        if field.name in table.column_names:
            arrays.append(table.column(field.name).cast(field.type))
        elif field.name in ("person_id", "session_id"):
            arrays.append(pa.array([""] * table.num_rows, pa.string()))
        elif field.name == "properties":
            arrays.append(pa.array(["{}"] * table.num_rows, pa.string()))
        elif not field.nullable:
            raise ValueError(f"event column {field.name!r} is required")
        else:
            arrays.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA)


def concat(tables: Iterable[pa.Table]) -> pa.Table:
    collected = list(tables)
    return pa.concat_tables(collected) if collected else empty_events_table()
