"""Typed errors. Every message says what was wrong and, where it can, how to fix it."""

from __future__ import annotations


class FootfallError(Exception):
    """Base of every error Footfall raises on purpose.

    ``code`` is a short stable identifier (used in HTTP error bodies and tests).
    """

    code = "footfall_error"


class ConfigError(FootfallError):
    code = "bad_config"


class MessageError(FootfallError):
    """A tracking message failed parsing or validation.

    ``field`` is the JSON path of the offending field (``$.userId``), or ``$``
    when the message as a whole is at fault.
    """

    code = "bad_message"

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class StoreError(FootfallError):
    code = "store_error"


class StoreLockedError(StoreError):
    code = "store_locked"


class ImportRowError(FootfallError):
    """One input row could not be imported; ``line`` is 1-based in the source file."""

    code = "bad_row"

    def __init__(self, line: int, problem: str) -> None:
        self.line = line
        self.problem = problem
        super().__init__(f"line {line}: {problem}")


class IngestError(FootfallError):
    """A batch cannot be ingested as given (e.g. events of another project)."""

    code = "bad_batch"


class ConsentDenied(FootfallError):
    """The message says its sender declined tracking; it is dropped, not stored."""

    code = "consent_denied"
