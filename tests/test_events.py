"""The event contract: parsing, validation errors, clock skew, normalisation."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from footfall.errors import MessageError
from footfall.events import EVENT_SCHEMA, events_to_table, parse_batch, parse_message

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
UA_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)


def parse(body: object, **kwargs: object) -> object:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_message(raw, received_at=NOW, **kwargs)  # type: ignore[arg-type]


def test_track_is_normalised_with_context_lifted() -> None:
    event = parse(
        {
            "type": "track",
            "event": "click",
            "messageId": "m-1",
            "anonymousId": "anon-1",
            "userId": 42,
            "properties": {"x": 120, "y": 300.5, "viewport_width": 1280, "viewport_height": 720, "el": "buy"},
            "context": {
                "page": {"url": "https://shop.example/p/7?utm_source=news&utm_medium=email", "referrer": "https://g.co/"},
                "userAgent": UA_IPHONE,
                "ip": "10.1.2.3",
                "locale": "de-DE",
                "library": {"name": "footfall.js", "version": "1.0"},
                "location": {"country": "DE"},
                "somethingNew": {"kept": True},
            },
        }
    )
    assert event.event_id == "m-1"
    assert (event.type, event.event) == ("track", "click")
    assert (event.anonymous_id, event.user_id) == ("anon-1", "42")
    assert event.path == "/p/7"
    assert (event.utm_source, event.utm_medium) == ("news", "email")
    assert (event.device_type, event.os, event.browser) == ("mobile", "iOS", "Mobile Safari")
    assert (event.x, event.y, event.viewport_width, event.viewport_height) == (120.0, 300.5, 1280, 720)
    assert event.library == "footfall.js/1.0"
    assert event.country == "DE"
    assert json.loads(event.properties)["el"] == "buy"


@pytest.mark.parametrize(
    ("body", "event_name", "stored"),
    [
        ({"type": "page", "name": "Home", "properties": {"path": "/"}}, "page_view", {"path": "/", "name": "Home"}),
        ({"type": "screen", "name": "Cart"}, "screen_view", {"name": "Cart"}),
        ({"type": "identify", "traits": {"plan": "pro"}}, "identify", {"plan": "pro"}),
        ({"type": "group", "groupId": "g1", "traits": {"size": 5}}, "group", {"group_id": "g1", "traits": {"size": 5}}),
        ({"type": "alias", "previousId": "old"}, "alias", {"previous_id": "old"}),
    ],
)
def test_every_message_type_maps_to_an_event(body: dict[str, object], event_name: str, stored: dict[str, object]) -> None:
    event = parse({**body, "userId": "u1"})
    assert event.event == event_name
    assert json.loads(event.properties) == stored


def test_clock_skew_is_corrected_from_sent_at() -> None:
    # The device clock is 2 hours fast: it stamped the event 10 s before sending.
    event = parse(
        {
            "type": "track",
            "event": "e",
            "userId": "u",
            "originalTimestamp": "2024-05-01T14:00:00Z",
            "sentAt": "2024-05-01T14:00:10Z",
        }
    )
    assert event.timestamp == NOW - timedelta(seconds=10)
    assert event.received_at == NOW


def test_batch_sent_at_applies_to_messages_without_their_own() -> None:
    body = {
        "sentAt": "2024-05-01T14:00:10Z",
        "batch": [{"type": "track", "event": "e", "userId": "u", "timestamp": "2024-05-01T14:00:00Z"}],
    }
    parsed = parse_batch(json.dumps(body).encode(), received_at=NOW)
    assert parsed.events[0].timestamp == NOW - timedelta(seconds=10)


def test_timestamp_without_sent_at_is_kept_and_naive_means_utc() -> None:
    event = parse({"type": "track", "event": "e", "userId": "u", "timestamp": "2023-01-01T00:00:00"})
    assert event.timestamp == datetime(2023, 1, 1, tzinfo=UTC)


def test_missing_message_id_gets_a_content_id_stable_across_retries() -> None:
    body = {"type": "track", "event": "e", "userId": "u", "timestamp": "2023-01-01T00:00:00Z"}
    assert parse(body).event_id == parse(body).event_id
    assert parse(body).event_id != parse({**body, "event": "f"}).event_id


@pytest.mark.parametrize(
    ("raw", "field", "problem"),
    [
        (b"{not json", "$", "not valid JSON"),
        (b"[1, 2]", "$", "expected object, got array"),
        (b'{"event": "e", "userId": "u"}', "$.type", "is required"),
        (b'{"type": "trak", "event": "e", "userId": "u"}', "$.type", "unknown message type"),
        (b'{"type": "track", "userId": "u"}', "$.event", "is required"),
        (b'{"type": "track", "event": ""}', "$", "needs an anonymousId or a userId"),
        (b'{"type": "track", "event": "e"}', "$", "needs an anonymousId or a userId"),
        (b'{"type": "track", "event": 7, "userId": "u"}', "$.event", "expected str, got int"),
        (b'{"type": "track", "event": "e", "userId": "u", "properties": []}', "$.properties", "expected object"),
        (b'{"type": "track", "event": "e", "userId": ""}', "$.userId", "must not be empty"),
        (b'{"type": "track", "event": "e", "userId": true}', "$.userId", "expected int | str | null, got bool"),
        (b'{"type": "track", "event": "e", "userId": "u", "timestamp": "yesterday"}', "$.timestamp", "datetime"),
        (b'{"type": "track", "event": "e", "userId": "u", "context": {"page": {"url": 5}}}', "$.context.page.url", "expected str"),
        (b'{"type": "alias", "previousId": "a"}', "$.userId", "is required for alias"),
        (b'{"type": "group", "userId": "u"}', "$.groupId", "is required"),
    ],
)
def test_bad_messages_name_the_field_and_the_problem(raw: bytes, field: str, problem: str) -> None:
    with pytest.raises(MessageError) as caught:
        parse(raw)
    assert caught.value.field == field
    assert problem in caught.value.problem


def test_oversize_message_is_refused_before_decoding() -> None:
    big = json.dumps({"type": "track", "event": "e", "userId": "u", "properties": {"p": "x" * 40_000}}).encode()
    with pytest.raises(MessageError, match="limit is 32,768 bytes"):
        parse(big)
    assert parse(big, max_bytes=64_000).event == "e"


def test_too_long_id_is_refused() -> None:
    with pytest.raises(MessageError, match=r"\$\.anonymousId: is 300 characters long"):
        parse({"type": "track", "event": "e", "anonymousId": "a" * 300})


def test_endpoint_type_mismatch_is_explained() -> None:
    with pytest.raises(MessageError, match="this endpoint takes 'track' messages"):
        parse({"type": "page", "userId": "u"}, message_type="track")
    assert parse({"event": "e", "userId": "u"}, message_type="track").type == "track"


def test_batch_keeps_good_messages_and_locates_bad_ones() -> None:
    body = {"batch": [{"type": "track", "event": "ok", "userId": "u"}, {"type": "track", "userId": "u"}]}
    parsed = parse_batch(json.dumps(body).encode(), received_at=NOW)
    assert [event.event for event in parsed.events] == ["ok"]
    [rejected] = parsed.rejected
    assert rejected.position == 1
    assert str(rejected.error) == "$.batch[1].event: is required"


def test_batch_envelope_errors() -> None:
    with pytest.raises(MessageError, match=r"\$\.batch: is required"):
        parse_batch(b"{}")
    with pytest.raises(MessageError, match="not valid JSON"):
        parse_batch(b"")


def test_events_to_table_has_the_store_schema() -> None:
    table = events_to_table([parse({"type": "track", "event": "e", "userId": "u"})])
    assert table.schema == EVENT_SCHEMA
    assert table.num_rows == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
message_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["track", "page", "screen", "identify", "group", "alias", "nope"]) | json_values,
        "event": st.text(max_size=10) | json_values,
        "userId": st.text(max_size=10) | st.integers() | json_values,
        "anonymousId": st.text(max_size=10) | json_values,
        "previousId": st.text(max_size=5) | json_values,
        "groupId": st.text(max_size=5) | json_values,
        "properties": st.dictionaries(st.text(max_size=5), json_values, max_size=3) | json_values,
        "context": st.fixed_dictionaries({}, optional={"page": json_values, "userAgent": json_values, "ip": json_values})
        | json_values,
        "timestamp": st.datetimes().map(lambda d: d.isoformat()) | st.text(max_size=12) | json_values,
        "sentAt": st.datetimes().map(lambda d: d.isoformat()) | json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(message_like)
def test_random_messages_either_parse_or_raise_message_error(body: dict[str, object]) -> None:
    try:
        event = parse(body)
    except MessageError as error:
        assert error.field.startswith("$")
    else:
        assert event.anonymous_id or event.user_id
        assert isinstance(msgspec.json.decode(event.properties), dict)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash_the_parser(raw: bytes) -> None:
    with contextlib.suppress(MessageError):
        parse(raw)


def test_declined_tracking_is_dropped_not_rejected() -> None:
    from footfall.errors import ConsentDenied

    body = {"type": "track", "event": "e", "userId": "u", "context": {"consent": {"tracking": False}}}
    with pytest.raises(ConsentDenied):
        parse(body)
    parsed = parse_batch(json.dumps({"batch": [body, {**body, "context": {"consent": {"tracking": True}}}]}).encode())
    assert (len(parsed.events), parsed.rejected, parsed.declined) == (1, [], 1)
