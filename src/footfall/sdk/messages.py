"""Segment-format messages as the SDK builds them: checked and encoded at call time.

A message is encoded once, when it is made, and those bytes are what is
queued, sent and retried: later changes to the caller's dicts cannot leak in,
a value JSON cannot hold fails in the caller's frame, and the size the
collector will measure is known before anything is queued.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from footfall import __version__
from footfall.sdk.errors import MessageTooLarge

LIBRARY = {"name": "footfall-python", "version": __version__}

# The collector's defaults (``intake.max_message_bytes`` / ``max_batch_bytes``)
# and the limits of its message contract; tests check they agree.
MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_ID_LENGTH = 255
MAX_EVENT_NAME_LENGTH = 255
EARLIEST_YEAR, LATEST_YEAR = 1970, 2200

Id = str | int


def iso_utc(moment: datetime) -> str:
    """An aware datetime as ISO-8601 in UTC, always to the microsecond.

    >>> from datetime import timedelta, timezone
    >>> iso_utc(datetime(2024, 5, 1, 14, 30, tzinfo=timezone(timedelta(hours=2))))
    '2024-05-01T12:30:00.000000Z'
    """
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def batch_body(messages: list[bytes], sent_at: datetime) -> bytes:
    """The ``/v1/batch`` body for already-encoded messages.

    >>> batch_body([b'{"type":"track"}'], datetime(2024, 1, 1, tzinfo=UTC))
    b'{"batch":[{"type":"track"}],"sentAt":"2024-01-01T00:00:00.000000Z"}'
    """
    return b'{"batch":[' + b",".join(messages) + b'],"sentAt":"' + iso_utc(sent_at).encode() + b'"}'


# What a batch body costs beyond its messages (the sentAt is of fixed length).
BATCH_ENVELOPE_BYTES = len(batch_body([], datetime(2000, 1, 1, tzinfo=UTC)))


def check_id(call: str, name: str, value: object) -> Id:
    """An id as the collector accepts it: a non-blank str or an int, at most 255 characters."""
    if value is None:
        raise ValueError(f"{call}() needs a {name}")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"{call}(): {name} must be a str or an int, not {type(value).__name__}")
    text = str(value)
    if not text.strip():
        raise ValueError(f"{call}(): {name} must not be empty")
    if len(text) > MAX_ID_LENGTH:
        raise ValueError(f"{call}(): {name} is {len(text)} characters long; the limit is {MAX_ID_LENGTH}")
    return value


def check_identity(call: str, user_id: object, anonymous_id: object) -> dict[str, Id]:
    """The ``userId`` / ``anonymousId`` fields; at least one is required."""
    if user_id is None and anonymous_id is None:
        raise ValueError(f"{call}() needs a user_id or an anonymous_id (or both)")
    ids: dict[str, Id] = {}
    if user_id is not None:
        ids["userId"] = check_id(call, "user_id", user_id)
    if anonymous_id is not None:
        ids["anonymousId"] = check_id(call, "anonymous_id", anonymous_id)
    return ids


def check_timestamp(call: str, timestamp: datetime | None) -> str:
    if timestamp is None:
        return iso_utc(datetime.now(UTC))
    if not isinstance(timestamp, datetime):
        raise TypeError(f"{call}(): timestamp must be a datetime, not {type(timestamp).__name__}")
    if timestamp.tzinfo is None or timestamp.utcoffset() is None:
        # A naive time could be local or UTC; guessing shifts events by hours.
        raise ValueError(
            f"{call}(): timestamp {timestamp.isoformat()} has no time zone;"
            " pass an aware datetime such as datetime.now(UTC)"
        )
    if not EARLIEST_YEAR <= timestamp.astimezone(UTC).year <= LATEST_YEAR:
        raise ValueError(f"{call}(): timestamp {timestamp.isoformat()} is outside {EARLIEST_YEAR}-{LATEST_YEAR}")
    return iso_utc(timestamp)


def check_name(call: str, name: str, value: object, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{call}(): {name} must be a str, not {type(value).__name__}")
    if required and not value.strip():
        raise ValueError(f"{call}(): {name} must not be empty")
    if len(value) > MAX_EVENT_NAME_LENGTH:
        raise ValueError(f"{call}(): {name} is {len(value)} characters long; the limit is {MAX_EVENT_NAME_LENGTH}")
    return value


def check_mapping(call: str, name: str, value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"{call}(): {name} must be a mapping (a dict), not {type(value).__name__}")
    return dict(value)


def build(
    call: str,
    fields: Mapping[str, Any],
    *,
    ids: Mapping[str, Id],
    timestamp: datetime | None,
    context: object,
    message_id: object,
) -> dict[str, Any]:
    """A complete message of type ``call``: its own ``fields`` plus what every message carries."""
    message: dict[str, Any] = {
        "type": call,
        "messageId": str(uuid.uuid4()) if message_id is None else check_id(call, "message_id", message_id),
        "timestamp": check_timestamp(call, timestamp),
        **ids,
    }
    message.update((key, value) for key, value in fields.items() if value is not None)
    full_context = check_mapping(call, "context", context) or {}
    # A wrapper library may name itself; otherwise the message says it came from here.
    full_context.setdefault("library", LIBRARY)
    message["context"] = full_context
    return message


def encode(call: str, message: Mapping[str, Any], max_bytes: int) -> bytes:
    """The message as compact UTF-8 JSON, as the collector will measure it.

    >>> encode("track", {"event": "Signed Up", "at": datetime(2024, 1, 1, tzinfo=UTC)}, 100)
    b'{"event":"Signed Up","at":"2024-01-01T00:00:00.000000Z"}'
    """
    try:
        # allow_nan=False: NaN is not JSON, and one such message would make the
        # collector refuse the whole batch it travels in.
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_value)
        data = text.encode("utf-8")
    except TypeError as exc:
        raise TypeError(f"{call}(): the message cannot be sent as JSON: {exc}") from None
    except UnicodeEncodeError as exc:
        raise ValueError(f"{call}(): a string is not valid Unicode ({exc.reason}: {exc.object[exc.start:exc.end]!r})") from None
    except ValueError as exc:  # NaN or infinity, or a circular reference
        raise ValueError(f"{call}(): the message cannot be sent as JSON: {exc}") from None
    if len(data) > max_bytes:
        raise MessageTooLarge(call, len(data), max_bytes)
    return data


def _json_value(value: object) -> object:
    """JSON for the values Python code commonly puts in properties."""
    if isinstance(value, datetime):
        return iso_utc(value) if value.tzinfo is not None else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"a value of type {type(value).__name__} is not JSON ({value!r:.60})")
