"""Intake: the durable log every accepted batch lands in before the collector answers."""

from footfall.intake.log import (
    IntakeClosedError,
    IntakeCorruptError,
    IntakeError,
    IntakeLocked,
    IntakeLog,
    LogStats,
    Record,
)

__all__ = [
    "IntakeClosedError",
    "IntakeCorruptError",
    "IntakeError",
    "IntakeLocked",
    "IntakeLog",
    "LogStats",
    "Record",
]
