"""The official Segment and RudderStack Python SDKs, unchanged, against a live collector.

Each SDK sends a small journey (anonymous browsing, sign-up, a second device,
alias) to ``footfall serve`` on 127.0.0.1; the store must then hold every
message exactly once, under the messageId the SDK made up, with one person for
the journey. A retry (the SDK's own request bytes sent again, or the same
message sent again by the SDK with its messageId) must store nothing new.
"""

from __future__ import annotations

import gzip
import itertools
import json
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
import rudderstack.analytics
import rudderstack.analytics.request
import segment.analytics
import segment.analytics.request

from .live import LiveServer, person_of, quoted, running, stored_events

SDKS: dict[str, types.ModuleType] = {"segment": segment.analytics, "rudderstack": rudderstack.analytics}
SESSIONS: dict[str, requests.Session] = {
    # Both SDKs post through one module-level requests session; a response hook
    # on it sees the exact bytes and headers they sent, without touching the SDK.
    "segment": segment.analytics.request._session,
    "rudderstack": rudderstack.analytics.request._session,
}


@dataclass(frozen=True)
class Variant:
    sdk: str
    gzip: bool
    sync_mode: bool  # True: one blocking request per call; False: the consumer thread batches

    @property
    def id(self) -> str:
        return f"{self.sdk}-{'gzip' if self.gzip else 'plain'}-{'sync' if self.sync_mode else 'batched'}"


VARIANTS = [
    Variant("segment", gzip=False, sync_mode=False),
    Variant("segment", gzip=True, sync_mode=True),
    Variant("rudderstack", gzip=True, sync_mode=False),  # RudderStack gzips by default
    Variant("rudderstack", gzip=False, sync_mode=True),
]
by_variant = pytest.mark.parametrize("variant", VARIANTS, ids=[variant.id for variant in VARIANTS])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running(tmp_path_factory.mktemp("sdk-server")) as live:
        yield live


@dataclass
class SentRequest:
    status: int
    body: bytes
    headers: dict[str, str]


@dataclass
class Sender:
    """One SDK client pointed at the server, and what it sent."""

    server: LiveServer
    variant: Variant
    client: Any
    errors: list[tuple[Exception, list[dict[str, Any]]]] = field(default_factory=list)
    requests: list[SentRequest] = field(default_factory=list)  # every request the SDK made, as sent

    def call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        """Call an SDK method; the message it built (with its messageId)."""
        queued, message = getattr(self.client, method)(**kwargs)
        assert queued, f"{self.variant.sdk} did not queue {method}"
        return dict(message)

    def deliver(self) -> None:
        """Flush the SDK, check it reported no error, and wait until the server stored everything."""
        if not self.variant.sync_mode:
            self.client.flush()
        assert self.errors == [], f"{self.variant.sdk} reported errors: {self.errors}"
        assert self.requests, "the SDK sent nothing"
        assert [r.status for r in self.requests] == [200] * len(self.requests)
        self.server.wait_until_stored()


Connect = Callable[..., Sender]  # (variant, write_key=None) -> a Sender


@pytest.fixture
def connect(server: LiveServer) -> Iterator[Connect]:
    senders: list[Sender] = []
    hooks: list[tuple[requests.Session, Any]] = []

    def make(variant: Variant, write_key: str | None = None) -> Sender:
        sender = Sender(server, variant, client=None)

        def on_error(error: Exception, batch: list[dict[str, Any]]) -> None:
            sender.errors.append((error, batch))

        def record(response: requests.Response, *args: Any, **kwargs: Any) -> None:
            if response.request.url and response.request.url.startswith(server.url):
                body = response.request.body
                assert isinstance(body, bytes | str)
                sender.requests.append(
                    SentRequest(
                        response.status_code,
                        body.encode() if isinstance(body, str) else body,
                        dict(response.request.headers),
                    )
                )

        session = SESSIONS[variant.sdk]
        session.hooks["response"].append(record)
        hooks.append((session, record))
        sender.client = SDKS[variant.sdk].Client(
            server.write_key if write_key is None else write_key,
            host=server.url,
            gzip=variant.gzip,
            sync_mode=variant.sync_mode,
            on_error=on_error,
            max_retries=1,
            upload_interval=0.05,
            timeout=10,
        )
        senders.append(sender)
        return sender

    yield make
    for sender in senders:
        if not sender.variant.sync_mode:
            sender.client.join()
    for session, hook in hooks:
        session.hooks["response"].remove(hook)


class Clock:
    """Explicit event times, a second apart, so the journey's order never hangs on
    two SDK calls landing in the same millisecond."""

    def __init__(self) -> None:
        self.start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        self.ticks = itertools.count()

    def next(self) -> datetime:
        return self.start + timedelta(seconds=next(self.ticks))


def ids_for(variant: Variant, test: str) -> types.SimpleNamespace:
    run = f"{variant.id}-{test}-{uuid.uuid4().hex[:8]}"
    return types.SimpleNamespace(
        anonymous=f"anon-{run}", other_device=f"anon2-{run}", user=f"user-{run}", old_user=f"olduser-{run}"
    )


def stored(server: LiveServer, event_ids: list[str]) -> dict[str, dict[str, Any]]:
    return stored_events(
        server, event_ids, ["type", "event", "person_id", "anonymous_id", "user_id", "properties", "url", "path", "timestamp"]
    )


def events_of(server: LiveServer, people: list[str]) -> int:
    """Events stored for these anonymous or user ids, whatever their event id."""
    ids = quoted(people)
    [[count]] = server.sql(f"SELECT count(*) FROM events WHERE anonymous_id IN ({ids}) OR user_id IN ({ids})")
    return int(count)


def stored_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- the journey ---------------------------------------------------------------------


@by_variant
def test_journey_is_stored_once_under_the_sdk_message_ids(variant: Variant, server: LiveServer, connect: Connect) -> None:
    sender = connect(variant)
    who = ids_for(variant, "journey")
    clock = Clock()
    viewed_properties = {
        "sku": "A-1", "price": 12.5, "quantity": 2, "in_stock": True, "discount": None,
        "tags": ["new", "sale"], "dimensions": {"w": 10, "h": [1, {"deep": "yes"}]}, "city": "Zürich ✓",
    }

    # Anonymous browsing, and a second device that is already signed in.
    viewed = sender.call("track", anonymous_id=who.anonymous, event="Product Viewed", properties=viewed_properties,
                         timestamp=clock.next())
    anonymous_identify = sender.call("identify", anonymous_id=who.anonymous, traits={"newsletter": True},
                                     timestamp=clock.next())
    pricing = sender.call(
        "page", anonymous_id=who.other_device, name="Pricing", category="Docs", properties={"variant": "b"},
        context={"page": {"url": "https://shop.test/pricing?utm_campaign=spring", "title": "Pricing"}},
        timestamp=clock.next(),
    )
    logged_in = sender.call("track", user_id=who.old_user, event="Logged In", timestamp=clock.next())
    sender.deliver()

    # Sign-up: the anonymous id becomes the user.
    signed_up = sender.call("identify", user_id=who.user, anonymous_id=who.anonymous, traits={"plan": "pro"},
                            timestamp=clock.next())
    ordered = sender.call(
        "track", user_id=who.user, event="Order Completed",
        properties={"revenue": 99.99, "currency": "EUR", "products": [{"sku": "A-1", "quantity": 2}]},
        timestamp=clock.next(),
    )
    receipt = sender.call(
        "page", user_id=who.user, name="Receipt", properties={"order_id": "o-1"},
        context={"page": {"url": "https://shop.test/receipt/o-1"}}, timestamp=clock.next(),
    )
    sender.deliver()

    assert person_of(server, "anonymous", who.anonymous) == person_of(server, "user", who.user)
    before_alias = {
        "user": person_of(server, "user", who.user),
        "other_device": person_of(server, "anonymous", who.other_device),
        "old_user": person_of(server, "user", who.old_user),
    }
    assert len(set(before_alias.values())) == 3, "alias has not run yet: three separate persons"

    # Later, the other device and the old account are declared the same person.
    device_alias = sender.call("alias", previous_id=who.other_device, user_id=who.user, timestamp=clock.next())
    account_alias = sender.call("alias", previous_id=who.old_user, user_id=who.user, timestamp=clock.next())
    sender.deliver()

    messages = [viewed, anonymous_identify, pricing, logged_in, signed_up, ordered, receipt, device_alias, account_alias]
    message_ids = [message["messageId"] for message in messages]
    assert len(set(message_ids)) == len(messages)
    events = stored(server, message_ids)
    assert set(events) == set(message_ids), "every messageId the SDK made up is a stored event_id"
    everyone = [who.anonymous, who.other_device, who.user, who.old_user]
    assert events_of(server, everyone) == len(messages), "nothing but the journey is stored for these ids"

    expected = {
        viewed["messageId"]: ("track", "Product Viewed", viewed_properties),
        pricing["messageId"]: ("page", "page_view", {"variant": "b", "name": "Pricing", "category": "Docs"}),
        logged_in["messageId"]: ("track", "Logged In", {}),
        ordered["messageId"]: (
            "track", "Order Completed",
            {"revenue": 99.99, "currency": "EUR", "products": [{"sku": "A-1", "quantity": 2}]},
        ),
        receipt["messageId"]: ("page", "page_view", {"order_id": "o-1", "name": "Receipt"}),
        device_alias["messageId"]: ("alias", "alias", {"previous_id": who.other_device}),
        account_alias["messageId"]: ("alias", "alias", {"previous_id": who.old_user}),
        # identify traits: see test_identify_traits_reach_the_event_and_the_person
        anonymous_identify["messageId"]: ("identify", "identify", None),
        signed_up["messageId"]: ("identify", "identify", None),
    }
    for message_id, (message_type, name, properties) in expected.items():
        event = events[message_id]
        assert (event["type"], event["event"]) == (message_type, name), message_id
        if properties is not None:
            assert json.loads(event["properties"]) == properties, name

    for message in messages:
        event = events[message["messageId"]]
        assert event["anonymous_id"] == message.get("anonymousId")
        assert event["user_id"] == message.get("userId")
        # The SDK's sentAt corrects for its clock; on one machine that is a small shift.
        sdk_time = datetime.fromisoformat(message["timestamp"])
        assert abs(stored_time(event["timestamp"]) - sdk_time) < timedelta(seconds=30)

    assert events[pricing["messageId"]]["url"] == "https://shop.test/pricing?utm_campaign=spring"
    assert events[pricing["messageId"]]["path"] == "/pricing"
    assert events[receipt["messageId"]]["url"] == "https://shop.test/receipt/o-1"
    assert events[receipt["messageId"]]["path"] == "/receipt/o-1"

    # One person for the whole journey, before and after identify and across both aliases.
    persons = {event["person_id"] for event in events.values()}
    assert persons == {before_alias["user"]}
    person = before_alias["user"]
    for kind, value in [("anonymous", who.anonymous), ("anonymous", who.other_device), ("user", who.user),
                        ("user", who.old_user)]:
        assert person_of(server, kind, value) == person, value
    merged_away = [before_alias["other_device"], before_alias["old_user"]]
    assert server.sql(f"SELECT count(*) FROM persons WHERE person_id IN ({quoted(merged_away)})") == [[0]]
    assert server.sql(f"SELECT user_id FROM persons WHERE person_id = {quoted([person])}") == [[who.user]]

    [[letters]] = server.sql(f"SELECT count(*) FROM dead_letters WHERE payload LIKE '%{who.user}%'")
    assert letters == 0
    encodings = {request.headers.get("Content-Encoding") for request in sender.requests}
    assert encodings == ({"gzip"} if variant.gzip else {None})


# -- traits --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "variant",
    [
        Variant("segment", gzip=True, sync_mode=False),
        Variant("rudderstack", gzip=True, sync_mode=False),  # sends identify traits as context.traits
    ],
    ids=["segment", "rudderstack"],
)
def test_identify_traits_reach_the_event_and_the_person(variant: Variant, server: LiveServer, connect: Connect) -> None:
    sender = connect(variant)
    who = ids_for(variant, "traits")
    clock = Clock()
    anonymous = sender.call("identify", anonymous_id=who.anonymous, traits={"plan": "free", "newsletter": True},
                            timestamp=clock.next())
    signed_up = sender.call("identify", user_id=who.user, anonymous_id=who.anonymous,
                            traits={"plan": "pro", "email": "ada@example.com", "address": {"city": "Basel"}},
                            timestamp=clock.next())
    old_account = sender.call("identify", user_id=who.old_user, traits={"company": "Acme", "plan": "legacy"},
                              timestamp=clock.next())
    sender.deliver()
    sender.call("alias", previous_id=who.old_user, user_id=who.user, timestamp=clock.next())
    sender.deliver()

    events = stored(server, [anonymous["messageId"], signed_up["messageId"], old_account["messageId"]])
    assert json.loads(events[anonymous["messageId"]]["properties"]) == {"plan": "free", "newsletter": True}
    assert json.loads(events[signed_up["messageId"]]["properties"]) == {
        "plan": "pro", "email": "ada@example.com", "address": {"city": "Basel"}
    }
    assert json.loads(events[old_account["messageId"]]["properties"]) == {"company": "Acme", "plan": "legacy"}

    person = person_of(server, "user", who.user)
    [[traits]] = server.sql(f"SELECT traits FROM persons WHERE person_id = {quoted([person])}")
    # Last write wins in event time; the merged account keeps what the person lacks.
    assert json.loads(traits) == {
        "plan": "pro", "newsletter": True, "email": "ada@example.com", "address": {"city": "Basel"}, "company": "Acme"
    }


# -- retries -------------------------------------------------------------------------


@by_variant
def test_retried_messages_store_nothing_new(variant: Variant, server: LiveServer, connect: Connect) -> None:
    sender = connect(variant)
    who = ids_for(variant, "retry")
    clock = Clock()
    calls: list[tuple[str, dict[str, Any]]] = [
        ("track", {"anonymous_id": who.anonymous, "event": "Added To Cart", "properties": {"sku": "B-2"}}),
        ("identify", {"anonymous_id": who.anonymous, "user_id": who.user, "traits": {"plan": "pro"}}),
        ("page", {"user_id": who.user, "name": "Cart", "context": {"page": {"url": "https://shop.test/cart"}}}),
        ("alias", {"previous_id": who.other_device, "user_id": who.user}),
    ]
    originals = []
    for method, kwargs in calls:
        originals.append(sender.call(method, **kwargs, timestamp=clock.next()))
    sender.deliver()
    message_ids = [message["messageId"] for message in originals]
    before = stored(server, message_ids)
    assert set(before) == set(message_ids)
    everyone = [who.anonymous, who.other_device, who.user]
    assert events_of(server, everyone) == len(calls)
    stored_before = server.metric("footfall_events_stored_total")
    duplicates_before = server.metric("footfall_events_duplicate_total")

    # A retry after a lost answer: the SDK's own request, byte for byte, sent again.
    sent_requests = list(sender.requests)
    resent = 0
    for request in sent_requests:
        answer = requests.post(f"{server.url}/v1/batch", data=request.body, headers=request.headers, timeout=10)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["success"] is True
        resent += body["accepted"]
    assert resent == len(calls)
    # And the SDK asked to send the same messages again, with their messageIds.
    for (method, kwargs), original in zip(calls, originals, strict=True):
        again = sender.call(method, **kwargs, timestamp=datetime.fromisoformat(original["timestamp"]),
                            message_id=original["messageId"])
        assert again["messageId"] == original["messageId"]
    sender.deliver()

    assert events_of(server, everyone) == len(calls)
    after = stored(server, message_ids)
    assert after == before, "a retry changes nothing that is stored"
    assert server.metric("footfall_events_stored_total") == stored_before
    assert server.metric("footfall_events_duplicate_total") - duplicates_before == 2 * len(calls)
    [[letters]] = server.sql(f"SELECT count(*) FROM dead_letters WHERE payload LIKE '%{who.user}%'")
    assert letters == 0


# Both SDKs read the error's top-level "code" and "message"; a 4xx they can read is final.
@pytest.mark.parametrize("sdk", ["segment", "rudderstack"])
def test_a_wrong_write_key_is_reported_to_the_sdk(sdk: str, server: LiveServer, connect: Connect) -> None:
    sender = connect(Variant(sdk, gzip=True, sync_mode=False), write_key="not-a-key")
    stranger = f"stranger-{uuid.uuid4().hex[:8]}"
    sender.call("track", anonymous_id=stranger, event="Sneaked In")
    sender.client.flush()
    [(error, batch)] = sender.errors
    assert getattr(error, "status", None) == 401
    assert [message["event"] for message in batch] == ["Sneaked In"]
    # A 401 is final: the SDK does not retry it.
    assert [request.status for request in sender.requests] == [401]
    assert json.loads(sender.requests[0].body if not sender.requests[0].headers.get("Content-Encoding")
                      else gzip.decompress(sender.requests[0].body))["batch"][0]["anonymousId"] == stranger
    server.wait_until_stored()
    assert events_of(server, [stranger]) == 0
