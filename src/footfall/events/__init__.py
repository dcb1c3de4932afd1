"""The event contract: Segment-spec messages, parsing, validation, normalisation."""

from footfall.events.parse import (
    ParsedBatch,
    Rejected,
    corrected_timestamp,
    parse_batch,
    parse_message,
)
from footfall.events.record import EVENT_COLUMNS, EVENT_SCHEMA, Event, events_to_table

__all__ = [
    "EVENT_COLUMNS",
    "EVENT_SCHEMA",
    "Event",
    "ParsedBatch",
    "Rejected",
    "corrected_timestamp",
    "events_to_table",
    "parse_batch",
    "parse_message",
]
