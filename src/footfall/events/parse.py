"""Parsing Segment-format messages into normalised ``Event`` records.

Parsing is strict: a message that does not fit the contract raises
``MessageError`` naming the JSON path of the field at fault. A batch is parsed
message by message, so one bad message never rejects its neighbours.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import msgspec

from footfall.errors import ConsentDenied, MessageError
from footfall.events.enrich import describe_client
from footfall.events.messages import (
    MESSAGE_TYPES,
    Alias,
    Batch,
    Group,
    Identify,
    Message,
    Page,
    ScreenView,
    Track,
)
from footfall.events.record import MESSAGE_COLUMNS, SYSTEM_EVENTS, Event

MAX_ID_LENGTH = 255
MAX_EVENT_NAME_LENGTH = 255

# Event names for the message types that carry no name of their own.
TYPE_EVENT_NAMES = {
    "page": "page_view",
    "screen": "screen_view",
    "identify": "identify",
    "group": "group",
    "alias": "alias",
}

# A stable namespace so a message without a messageId gets the same event_id
# every time it is retried (and is deduplicated like any other).
_CONTENT_NAMESPACE = uuid.UUID("6f0c1a52-5d0e-4d55-9a3a-7d35b0f1f6a1")

_ERROR_AT = re.compile(r"^(?P<problem>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]+)`")

# Built once: a decoder per endpoint type (None: any type, by its "type" field).
_MESSAGE_DECODERS: dict[str | None, msgspec.json.Decoder[Any]] = {
    None: msgspec.json.Decoder(Message),
    **{name: msgspec.json.Decoder(struct) for name, struct in MESSAGE_TYPES.items()},
}
_BATCH_DECODER = msgspec.json.Decoder(Batch)
_MESSAGES_DECODER = msgspec.json.Decoder(list[Message])


class _TypedBatch(msgspec.Struct):
    batch: list[Message]


_TYPED_BATCH_DECODER = msgspec.json.Decoder(_TypedBatch)


def decode_all(messages: list[bytes] | bytes) -> list[Message] | None:
    """Decode many messages in one pass: a list of message bodies, or a whole
    ``/v1/batch`` body. None if any message fails; decode them one by one
    (``decode_message``) to learn which and why. Sizes are not checked."""
    try:
        if isinstance(messages, bytes):
            return _TYPED_BATCH_DECODER.decode(messages).batch
        return _MESSAGES_DECODER.decode(b"[" + b",".join(messages) + b"]")
    except DECODE_ERRORS:
        return None


DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def describe_decode_error(error: Exception) -> MessageError:
    """A ``MessageError`` naming the field for anything decoding raised (``DECODE_ERRORS``)."""
    if isinstance(error, UnicodeDecodeError):
        return MessageError("$", "a string is not valid UTF-8; send JSON in UTF-8")
    if isinstance(error, RecursionError):
        return MessageError("$", "nested too deeply to decode; flatten the properties")
    text = str(error)
    if isinstance(error, msgspec.ValidationError):
        match = _ERROR_AT.match(text)
        assert match is not None  # the pattern matches any text
        path = match.group("path") or "$"
        problem = match.group("problem")
        missing = _MISSING.match(problem)
        if missing:
            field = missing.group("field")
            return MessageError(f"{path}.{field}" if path != "$" else f"$.{field}", "is required")
        if "Invalid value" in problem and path.endswith(".type"):
            return MessageError(path, f"unknown message type; expected one of {', '.join(MESSAGE_TYPES)}")
        problem = problem.replace("`", "")
        return MessageError(path, problem[:1].lower() + problem[1:])
    return MessageError("$", f"not valid JSON ({text})")


def _as_id(value: str | int | None, field: str) -> str | None:
    if value is None:
        return None
    if type(value) is str and 0 < len(value) <= MAX_ID_LENGTH and not value.isspace():
        return value  # the common case, without copies
    text = str(value)
    if not text.strip():
        raise MessageError(field, "must not be empty")
    if len(text) > MAX_ID_LENGTH:
        raise MessageError(field, f"is {len(text)} characters long; the limit is {MAX_ID_LENGTH}")
    return text


def as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def corrected_timestamp(
    *,
    received_at: datetime,
    timestamp: datetime | None,
    original_timestamp: datetime | None,
    sent_at: datetime | None,
) -> datetime:
    """When the event happened, on the server's clock.

    A device clock may be off. The client stamps the event (originalTimestamp)
    and the send (sentAt) on its own clock, so their difference is trustworthy
    even when the clock is not: ``timestamp = receivedAt - (sentAt - originalTimestamp)``.

    >>> from datetime import datetime, UTC
    >>> t = lambda s: datetime.fromisoformat(s).replace(tzinfo=UTC)
    >>> corrected_timestamp(received_at=t("2024-01-01T12:00:00"), timestamp=None,
    ...     original_timestamp=t("2024-01-01T09:59:50"), sent_at=t("2024-01-01T10:00:00")).isoformat()
    '2024-01-01T11:59:50+00:00'
    """
    client_time = original_timestamp or timestamp
    if sent_at is not None and client_time is not None:
        return received_at - (sent_at - client_time)
    return client_time or received_at


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# Page coordinates and viewport sizes beyond this are not screens but garbage.
_MAX_COORDINATE = 1e9


def _number_or_none(value: Any) -> float | None:
    """A finite coordinate-sized number, or None.

    >>> _number_or_none(12), _number_or_none(True), _number_or_none(float("nan")), _number_or_none(10**400)
    (12.0, None, None, None)
    """
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int) and abs(value) > _MAX_COORDINATE:
        return None
    number = float(value)
    return number if abs(number) <= _MAX_COORDINATE else None  # also drops nan and inf


def _pixels(value: float | None) -> int | None:
    """A viewport size that fits its 32-bit column, or None."""
    return int(value) if value is not None and 0 <= value < 2**31 else None


class UrlParts(NamedTuple):
    path: str | None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None


@lru_cache(maxsize=16_384)  # a site's URLs repeat; splitting one is costly
def url_parts(url: str) -> UrlParts:
    """The path and UTM tags of a URL; all None for a URL that does not parse.

    >>> url_parts("https://shop.example/p/7?utm_source=news&utm_campaign=spring")
    UrlParts(path='/p/7', utm_source='news', utm_medium=None, utm_campaign='spring')
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return UrlParts(None)
    if "utm_" not in parts.query:
        return UrlParts(parts.path or "/")
    query = parse_qs(parts.query)
    return UrlParts(
        parts.path or "/",
        *(query[key][0] if key in query else None for key in ("utm_source", "utm_medium", "utm_campaign")),
    )


_NO_URL = UrlParts(None)

# Event times outside these years are clock or encoding errors, not history.
EARLIEST_YEAR, LATEST_YEAR = 1970, 2200


def _check_time(value: datetime | None, field: str) -> None:
    if value is not None and not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise MessageError(field, f"year {value.year} is out of range ({EARLIEST_YEAR}-{LATEST_YEAR})")


def event_payload(message: Message) -> tuple[str, dict[str, Any]]:
    """The event name and the properties stored with it."""
    if isinstance(message, Track):
        return message.event, message.properties or {}
    if isinstance(message, Page | ScreenView):
        properties = dict(message.properties or {})
        if message.name is not None:
            properties.setdefault("name", message.name)
        if message.category is not None:
            properties.setdefault("category", message.category)
        return TYPE_EVENT_NAMES[type_name(message)], properties
    if isinstance(message, Identify):
        # Some SDKs (RudderStack's) send identify traits in context.traits.
        context_traits = message.context.traits if message.context is not None else None
        return "identify", {**(context_traits or {}), **(message.traits or {})}
    if isinstance(message, Group):
        group_id = _as_id(message.group_id, "$.groupId")
        return "group", {"group_id": group_id, "traits": message.traits or {}}
    previous_id = _as_id(message.previous_id, "$.previousId")
    return "alias", {"previous_id": previous_id}


def type_name(message: Message) -> str:
    """The wire ``type`` of a decoded message (its struct tag)."""
    tag = type(message).__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def _event_id(message: Message, raw: bytes) -> str:
    if message.message_id is not None:
        message_id = _as_id(message.message_id, "$.messageId")
        assert message_id is not None
        return message_id
    return str(uuid.uuid5(_CONTENT_NAMESPACE, raw.decode("utf-8", "replace")))


def check_message(message: Message) -> tuple[str | None, str | None]:
    """The checks a decoded message must pass before it is accepted; returns its
    ``(anonymous_id, user_id)``.

    Raises ``ConsentDenied`` when the sender declined tracking and
    ``MessageError`` naming the field at fault otherwise. The collector runs
    this at the door so a client learns of a bad message in the response.
    """
    consent = message.context.consent if message.context is not None else None
    if consent is not None and consent.get("tracking") is False:
        raise ConsentDenied("the message's context.consent.tracking is false")
    anonymous_id = _as_id(message.anonymous_id, "$.anonymousId")
    user_id = _as_id(message.user_id, "$.userId")
    if isinstance(message, Alias):
        if user_id is None:
            raise MessageError("$.userId", "is required for alias (the id that previousId becomes)")
    elif anonymous_id is None and user_id is None:
        raise MessageError("$", "needs an anonymousId or a userId (or both)")
    if isinstance(message, Track):
        if not message.event.strip():
            raise MessageError("$.event", "must not be empty")
        if len(message.event) > MAX_EVENT_NAME_LENGTH:
            raise MessageError("$.event", f"is longer than {MAX_EVENT_NAME_LENGTH} characters")
        if message.event in SYSTEM_EVENTS:
            raise MessageError(
                "$.event", f"{message.event!r} is reserved for the membership changes Footfall records; name the event differently"
            )
    elif isinstance(message, Group):
        _as_id(message.group_id, "$.groupId")
    elif isinstance(message, Alias):
        _as_id(message.previous_id, "$.previousId")
    if message.message_id is not None:
        _as_id(message.message_id, "$.messageId")
    _check_time(message.timestamp, "$.timestamp")
    _check_time(message.original_timestamp, "$.originalTimestamp")
    _check_time(message.sent_at, "$.sentAt")
    _check_time(message.received_at, "$.receivedAt")
    return anonymous_id, user_id


def event_time(message: Message, *, received_at: datetime, batch_sent_at: datetime | None = None) -> datetime:
    """When the message's event happened on the server's clock (see
    ``corrected_timestamp``), checked to fall in the years the store keeps.

    The collector runs this at the door with the same ``received_at`` the
    worker later uses, so a message accepted there is never refused here.
    """
    timestamp = corrected_timestamp(
        received_at=received_at,
        timestamp=as_utc(message.timestamp),
        original_timestamp=as_utc(message.original_timestamp),
        sent_at=as_utc(message.sent_at or batch_sent_at),
    )
    if not EARLIEST_YEAR <= timestamp.year <= LATEST_YEAR:
        raise MessageError(
            "$.sentAt", f"with the message's times, clock-skew correction puts the event at {timestamp.isoformat()};"
            " check the device clock fields (timestamp, originalTimestamp, sentAt)",
        )
    return timestamp


def anonymize_ip(ip: str) -> str | None:
    """Zero the host part: the last octet of IPv4, the last 80 bits of IPv6.

    >>> anonymize_ip("203.0.113.77"), anonymize_ip("2001:db8:1:2:3:4:5:6")
    ('203.0.113.0', '2001:db8:1::')
    """
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None  # not an address: nothing safe to keep
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def event_values(
    message: Message,
    *,
    raw: bytes,
    received_at: datetime,
    batch_sent_at: datetime | None = None,
    trust_received_at: bool = False,
    client_ip: str | None = None,
    drop_ip: bool = False,
    anonymize: bool = False,
) -> tuple[Any, ...]:
    """Normalise a decoded message into the values of ``MESSAGE_COLUMNS``.

    ``client_ip`` is the request's address, for a message without
    ``context.ip``; ``drop_ip`` stores no address, ``anonymize`` zeroes its
    host part. The intake path calls this tens of thousands of times a second:
    it reads each field once and builds no intermediate record.
    """
    anonymous_id, user_id = check_message(message)
    name, properties = event_payload(message)
    received = as_utc(message.received_at) if trust_received_at and message.received_at else received_at
    assert received is not None
    timestamp = event_time(message, received_at=received, batch_sent_at=batch_sent_at)

    context = message.context
    url = path = referrer = title = user_agent = ip = locale = library = country = None
    device_type = os_name = browser = None
    utm_source = utm_medium = utm_campaign = None
    if context is not None:
        page = context.page
        if page is not None:
            url, path, referrer, title = page.url, page.path, page.referrer, page.title
        user_agent, ip, locale = context.user_agent, context.ip, context.locale
        found = context.library
        if found is not None and found.name:
            library = f"{found.name}/{found.version}"
        if context.device is not None:
            device_type = context.device.type
        if context.os is not None:
            os_name = context.os.name
        if context.browser is not None:
            browser = context.browser.name
        if context.location is not None:
            country = context.location.country
        campaign = context.campaign
        if campaign is not None:
            utm_source, utm_medium, utm_campaign = campaign.source, campaign.medium, campaign.name
    url = url or _str_or_none(properties.get("url"))
    tags = url_parts(url) if url else _NO_URL
    path = path or _str_or_none(properties.get("path")) or tags.path
    referrer = referrer or _str_or_none(properties.get("referrer"))
    title = title or _str_or_none(properties.get("title"))
    if user_agent:
        client = describe_client(user_agent)
        device_type = device_type or client.device_type
        os_name = os_name or client.os
        browser = browser or client.browser
    if ip is None:
        ip = client_ip
    if drop_ip:
        ip = None
    elif anonymize and ip is not None:
        ip = anonymize_ip(ip)
    return (
        _event_id(message, raw),
        type_name(message),
        name,
        anonymous_id,
        user_id,
        timestamp,
        received,
        msgspec.json.encode(properties).decode(),
        url,
        path,
        referrer,
        title,
        user_agent,
        ip,
        locale,
        library,
        device_type,
        os_name,
        browser,
        country,
        utm_source or tags.utm_source,
        utm_medium or tags.utm_medium,
        utm_campaign or tags.utm_campaign,
        _number_or_none(properties.get("x")),
        _number_or_none(properties.get("y")),
        _pixels(_number_or_none(properties.get("viewport_width"))),
        _pixels(_number_or_none(properties.get("viewport_height"))),
    )


def to_event(
    message: Message,
    *,
    raw: bytes,
    received_at: datetime,
    project_id: str = "default",
    batch_sent_at: datetime | None = None,
    trust_received_at: bool = False,
) -> Event:
    """Normalise a decoded message (see ``parse_message``)."""
    values = event_values(
        message, raw=raw, received_at=received_at, batch_sent_at=batch_sent_at, trust_received_at=trust_received_at
    )
    return Event(project_id=project_id, **dict(zip(MESSAGE_COLUMNS, values, strict=True)))


DEFAULT_MAX_MESSAGE_BYTES = 32 * 1024


def decode_message(
    raw: bytes | Mapping[str, Any],
    message_type: str | None = None,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> tuple[Message, bytes]:
    """Decode one message, from JSON bytes or an already-parsed mapping.

    ``message_type`` is the type implied by the endpoint (``/v1/track``); a
    message that names a different type is an error. A message larger than
    ``max_bytes`` is refused before it is decoded.
    """
    decoder = _MESSAGE_DECODERS.get(message_type)
    if decoder is None:
        raise MessageError("$.type", f"unknown message type {message_type!r}; expected one of {', '.join(MESSAGE_TYPES)}")
    try:
        if isinstance(raw, bytes):
            data = raw
            _check_size(data, max_bytes)
            message = decoder.decode(data)
        else:
            data = msgspec.json.encode(raw)
            _check_size(data, max_bytes)
            message = msgspec.convert(raw, MESSAGE_TYPES[message_type] if message_type else Message)
    except DECODE_ERRORS as exc:
        error = describe_decode_error(exc)
        if message_type is not None and error.field == "$.type":
            raise MessageError("$.type", f"this endpoint takes {message_type!r} messages") from None
        raise error from None
    return message, data


def _check_size(data: bytes, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise MessageError("$", f"message is {len(data):,} bytes; the limit is {max_bytes:,} bytes per message")


def parse_message(
    raw: bytes | Mapping[str, Any],
    *,
    received_at: datetime | None = None,
    project_id: str = "default",
    message_type: str | None = None,
    batch_sent_at: datetime | None = None,
    trust_received_at: bool = False,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Event:
    """Parse and normalise one Segment-format message.

    ``received_at`` is the server's clock (now, by default). With
    ``trust_received_at`` a ``receivedAt`` in the message wins, for imports of
    historical data that was received long ago.

    Raises ``MessageError`` naming the field at fault.
    """
    message, data = decode_message(raw, message_type, max_bytes)
    return to_event(
        message,
        raw=data,
        received_at=as_utc(received_at) or datetime.now(UTC),
        project_id=project_id,
        batch_sent_at=batch_sent_at,
        trust_received_at=trust_received_at,
    )


class Rejected(NamedTuple):
    position: int  # in the batch
    raw: bytes
    error: MessageError


class ParsedBatch(NamedTuple):
    events: list[Event]
    rejected: list[Rejected]
    declined: int = 0  # messages dropped because their sender declined tracking


def parse_batch(
    raw: bytes,
    *,
    received_at: datetime | None = None,
    project_id: str = "default",
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> ParsedBatch:
    """Parse a ``/v1/batch`` body. The envelope must be valid; messages fail one by one."""
    try:
        envelope = _BATCH_DECODER.decode(raw)
    except DECODE_ERRORS as exc:
        raise describe_decode_error(exc) from None
    now = as_utc(received_at) or datetime.now(UTC)
    batch_sent_at = as_utc(envelope.sent_at)
    events: list[Event] = []
    rejected: list[Rejected] = []
    declined = 0
    for index, item in enumerate(envelope.batch):
        data = bytes(item)
        try:
            events.append(
                parse_message(
                    data,
                    received_at=now,
                    project_id=project_id,
                    batch_sent_at=batch_sent_at,
                    max_bytes=max_message_bytes,
                )
            )
        except ConsentDenied:
            declined += 1
        except MessageError as exc:
            located = MessageError(exc.field.replace("$", f"$.batch[{index}]", 1), exc.problem)
            rejected.append(Rejected(index, data, located))
    return ParsedBatch(events, rejected, declined)
