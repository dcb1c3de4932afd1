"""Dynamic segments: a condition language, its SQL compiler (batch: who is in
a segment at a time, on DuckDB and ClickHouse), and an incremental evaluator
(stream: memberships kept up to date as events are stored and as time
passes), which agree by construction and are tested against each other.

See docs/segments.md for the language and its exact semantics.
"""

from footfall.segments.engine import MembershipChange, SegmentEngine
from footfall.segments.errors import ConditionError
from footfall.segments.language import (
    Absence,
    And,
    Comparison,
    Condition,
    EventSequence,
    FirstSeen,
    InSegment,
    LastPerformed,
    LastSeen,
    Not,
    Or,
    Performed,
    Score,
    SegmentDefinition,
    SegmentSet,
    Sessions,
    Step,
    Trait,
    parse_condition,
    parse_definition,
    parse_definitions,
    parse_text,
)
from footfall.segments.schedule import STATE_FILE, StateFile
from footfall.segments.sql import members_sql, run_members
from footfall.segments.templates import TEMPLATES, ready_made

__all__ = [
    "STATE_FILE",
    "TEMPLATES",
    "Absence",
    "And",
    "Comparison",
    "Condition",
    "ConditionError",
    "EventSequence",
    "FirstSeen",
    "InSegment",
    "LastPerformed",
    "LastSeen",
    "MembershipChange",
    "Not",
    "Or",
    "Performed",
    "Score",
    "SegmentDefinition",
    "SegmentEngine",
    "SegmentSet",
    "Sessions",
    "StateFile",
    "Step",
    "Trait",
    "members_sql",
    "parse_condition",
    "parse_definition",
    "parse_definitions",
    "parse_text",
    "ready_made",
    "run_members",
]
