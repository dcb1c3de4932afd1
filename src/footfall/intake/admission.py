"""What the collector checks at the door, and the record it appends to the log.

The door is strict but cheap: the envelope must decode, and each message is
decoded against the contract and checked (ids, event name, consent). A message
that fails is not dropped: it travels in the same log record as a rejection,
and the worker stores it in the dead-letter table with the reason. Messages
that pass are kept as the bytes the client sent; the worker normalises them
(clock skew, context, tracking plans) after the answer has gone out.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import msgspec

from footfall.errors import ConsentDenied, MessageError
from footfall.events.messages import Batch, Message
from footfall.events.parse import (
    DECODE_ERRORS,
    as_utc,
    check_message,
    decode_all,
    decode_message,
    describe_decode_error,
    event_time,
)


class Rejection(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One message turned away at the door, kept for the dead-letter table."""

    index: int  # position in the batch (0 for single-message endpoints)
    field: str  # JSON path at fault, "$" for the whole message
    reason: str
    payload: bytes  # the message as received


class IntakeBatch(msgspec.Struct, array_like=True, frozen=True, kw_only=True, gc=False):
    """One accepted request, as one intake log record (MessagePack)."""

    source: str  # the write key's source name
    key_id: str
    received_at: datetime
    sent_at: datetime | None  # the batch envelope's sentAt, for messages without their own
    client_ip: str | None  # the request's address, for messages without context.ip
    drop_ip: bool = False
    anonymize_ip: bool = False
    messages: list[bytes]
    rejected: list[Rejection]
    declined: int = 0  # messages whose sender declined tracking: counted, never stored
    # Set for the single-message endpoints (/v1/track ...), whose bodies may omit "type".
    message_type: str | None = None


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(IntakeBatch)
_batch_decoder = msgspec.json.Decoder(Batch)


def encode_record(batch: IntakeBatch) -> bytes:
    return _encoder.encode(batch)


def decode_record(payload: bytes) -> IntakeBatch:
    return _decoder.decode(payload)


class Admission(NamedTuple):
    accepted: list[bytes]
    rejected: list[Rejection]
    declined: int
    sent_at: datetime | None
    write_key: str | None  # a key sent in the body (browsers' sendBeacon cannot set headers)


def _admit_one(
    data: bytes, index: int, prefix: str, message_type: str | None, max_message_bytes: int,
    received_at: datetime, batch_sent_at: datetime | None = None, decoded: Message | None = None,
) -> Rejection | Message | None:
    """The decoded message, a Rejection, or None when its sender declined tracking."""
    try:
        if decoded is None or len(data) > max_message_bytes:
            message, _ = decode_message(data, message_type, max_message_bytes)
        else:
            message = decoded
        check_message(message)
        event_time(message, received_at=received_at, batch_sent_at=batch_sent_at)
    except ConsentDenied:
        return None
    except MessageError as exc:
        return Rejection(index, exc.field.replace("$", prefix, 1), exc.problem, data)
    return message


def admit_batch(body: bytes, max_message_bytes: int, received_at: datetime) -> Admission:
    """Check a ``/v1/batch`` body received at ``received_at`` (the time the
    worker will normalise it with). A bad envelope raises ``MessageError``; bad
    messages become rejections and the rest are accepted."""
    try:
        envelope = _batch_decoder.decode(body)
    except DECODE_ERRORS as exc:
        raise describe_decode_error(exc) from None
    # Usually every message decodes: then one pass in C decodes them all.
    decoded = decode_all(body)
    accepted: list[bytes] = []
    rejected: list[Rejection] = []
    declined = 0
    sent_at = as_utc(envelope.sent_at)
    for index, item in enumerate(envelope.batch):
        data = bytes(item)
        outcome = _admit_one(
            data, index, f"$.batch[{index}]", None, max_message_bytes, received_at, sent_at,
            decoded[index] if decoded else None,
        )
        if outcome is None:
            declined += 1
        elif isinstance(outcome, Rejection):
            rejected.append(outcome)
        else:
            accepted.append(data)
    return Admission(accepted, rejected, declined, sent_at, envelope.write_key)


def admit_message(body: bytes, message_type: str, max_message_bytes: int, received_at: datetime) -> Admission:
    """Check a single-message body (``/v1/track`` and the like)."""
    outcome = _admit_one(body, 0, "$", message_type, max_message_bytes, received_at)
    if outcome is None:
        return Admission([], [], 1, None, None)
    if isinstance(outcome, Rejection):
        return Admission([], [outcome], 0, None, _write_key_of(body))
    return Admission([body], [], 0, None, outcome.write_key)


def _write_key_of(body: bytes) -> str | None:
    """Best effort: the ``writeKey`` of a message that failed its checks."""
    try:
        return msgspec.json.decode(body, type=_KeyOnly).write_key
    except DECODE_ERRORS:
        return None


class _KeyOnly(msgspec.Struct, rename="camel"):
    write_key: str | None = None
