"""Footfall's own Python SDK (``footfall.sdk``) against a live collector.

Most tests put a small scripted HTTP proxy between the client and ``footfall
serve``: it records every request the client makes and can answer 503, hold a
request, or forward a request and then drop the connection before the answer
reaches the client. What the store holds afterwards is read through the
server's SQL API.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import logging
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from footfall import __version__
from footfall.config import IntakeSettings
from footfall.events import parse
from footfall.sdk import Client, ClientClosed, DeliveryError, MessageTooLarge
from footfall.sdk import messages as sdk_messages

from .live import LiveServer, free_port, quoted, running, stored_events
from .live import person_of as live_person_of

# -- the live server and the proxy -----------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running(tmp_path_factory.mktemp("python-sdk-server")) as live:
        yield live


@dataclass
class Seen:
    """One request as the proxy received it."""

    at: float  # time.monotonic()
    headers: dict[str, str]
    body: bytes  # as sent (gzip-compressed when the client compresses)

    @property
    def json(self) -> dict[str, Any]:
        raw = gzip.decompress(self.body) if self.headers.get("Content-Encoding") == "gzip" else self.body
        decoded: dict[str, Any] = json.loads(raw)
        return decoded

    @property
    def message_ids(self) -> list[str]:
        return [message["messageId"] for message in self.json["batch"]]


# What the proxy does with the request of each index; requests past the end are forwarded.
#   "forward"            pass it on and return the collector's answer
#   "forward-then-drop"  pass it on, then close the client's connection without an answer
#   "hold"               wait until release() is called, then forward
#   (status, retry_after) answer this status with a JSON error, without forwarding
Action = str | tuple[int, str | None]


@dataclass
class Proxy:
    upstream: str
    script: list[Action] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    held: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    changed: threading.Condition = field(default_factory=threading.Condition)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def take(self, request: Seen) -> Action:
        with self.changed:
            index = len(self.seen)
            self.seen.append(request)
            self.changed.notify_all()
        return self.script[index] if index < len(self.script) else "forward"

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[Seen]:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.seen) >= count, timeout):
                raise TimeoutError(f"the proxy saw {len(self.seen)} requests, not {count}")
            return list(self.seen)

    def forward(self, request: Seen) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection(self.upstream.removeprefix("http://"), timeout=30)
        try:
            connection.request("POST", "/v1/batch", body=request.body, headers=request.headers)
            response = connection.getresponse()
            return response.status, {"Content-Type": response.getheader("Content-Type", "")}, response.read()
        finally:
            connection.close()


def handler_for(proxy: Proxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the client expects

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = {name: value for name, value in self.headers.items() if name.lower() != "host"}
            request = Seen(time.monotonic(), headers, body)
            action = proxy.take(request)
            if isinstance(action, tuple):
                status, retry_after = action
                answer = json.dumps({"code": "busy", "message": "try again"}).encode()
                extra = {"Retry-After": retry_after} if retry_after is not None else {}
                self.answer(status, {"Content-Type": "application/json", **extra}, answer)
                return
            if action == "hold":
                proxy.held.set()
                proxy.released.wait(30)
            status, response_headers, answer = proxy.forward(request)
            if action == "forward-then-drop":
                self.close_connection = True  # the collector stored the batch; the client never hears of it
                return
            self.answer(status, response_headers, answer)

        def answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def make_proxy(server: LiveServer) -> Iterator[Callable[..., Proxy]]:
    started: list[tuple[Proxy, ThreadingHTTPServer, threading.Thread]] = []

    def make(*script: Action) -> Proxy:
        proxy = Proxy(server.url, list(script))
        http_server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(proxy))
        http_server.daemon_threads = True
        proxy.port = http_server.server_address[1]
        thread = threading.Thread(target=http_server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        started.append((proxy, http_server, thread))
        return proxy

    yield make
    for proxy, http_server, thread in started:
        proxy.released.set()
        http_server.shutdown()
        http_server.server_close()
        thread.join()


@dataclass
class Errors:
    """What a client reported to on_error."""

    calls: list[tuple[DeliveryError, list[dict[str, Any]]]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, error: DeliveryError, messages: list[dict[str, Any]]) -> None:
        with self.changed:
            self.calls.append((error, messages))
            self.changed.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.calls) >= count, timeout), self.calls

    @property
    def reasons(self) -> list[str]:
        return [error.reason for error, _ in self.calls]


@pytest.fixture
def make_client(server: LiveServer) -> Iterator[Callable[..., tuple[Client, Errors]]]:
    clients: list[Client] = []

    def make(host: str | None = None, write_key: str | None = None, **options: Any) -> tuple[Client, Errors]:
        errors = Errors()
        options = {"flush_interval": 60.0, "initial_backoff": 0.01, "flush_at_exit": False, **options}
        client = Client(server.write_key if write_key is None else write_key, host or server.url,
                        on_error=errors, **options)
        clients.append(client)
        return client, errors

    yield make
    for client in clients:
        client.close(timeout=10)


# -- reading the store ---------------------------------------------------------------


def stored(server: LiveServer, event_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The stored events with these ids; fails if one is stored twice."""
    server.wait_until_stored()
    columns = ["type", "event", "person_id", "anonymous_id", "user_id", "properties", "url", "library", "timestamp"]
    return stored_events(server, event_ids, columns)


def stored_for(server: LiveServer, people: list[str]) -> list[str]:
    """Event ids stored for these anonymous or user ids, whatever their ids are."""
    server.wait_until_stored()
    ids = quoted(people)
    rows = server.sql(f"SELECT event_id FROM events WHERE anonymous_id IN ({ids}) OR user_id IN ({ids})")
    return [row[0] for row in rows]


def person_of(server: LiveServer, kind: str, value: str) -> str:
    server.wait_until_stored()
    return live_person_of(server, kind, value)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def someone(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


# -- what is sent and stored -----------------------------------------------------------


def test_journey_is_stored_once_and_resolves_to_one_person(
    server: LiveServer, make_proxy: Callable[..., Proxy], make_client: Callable[..., tuple[Client, Errors]]
) -> None:
    proxy = make_proxy()
    client, errors = make_client(proxy.url)
    anonymous, other_device, user, old_user = someone("anon"), someone("anon2"), someone("user"), someone("old")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    at = [start + timedelta(seconds=second) for second in range(10)]

    viewed = client.track("Product Viewed", {"sku": "A-1", "price": 12.5, "city": "Zürich ✓"},
                          anonymous_id=anonymous, timestamp=at[0])
    pricing = client.page("Pricing", {"variant": "b"}, category="Docs", anonymous_id=other_device,
                          context={"page": {"url": "https://shop.test/pricing"}}, timestamp=at[1])
    logged_in = client.track("Logged In", user_id=old_user, timestamp=at[2])
    signed_up = client.identify(user, {"plan": "pro"}, anonymous_id=anonymous, timestamp=at[3])
    ordered = client.track("Order Completed", {"revenue": 99.99}, user_id=user,
                           timestamp=at[4].astimezone(timezone(timedelta(hours=5))))
    joined = client.group("acme", {"seats": 12}, user_id=user, timestamp=at[5])
    assert client.flush(timeout=20)

    assert person_of(server, "anonymous", anonymous) == person_of(server, "user", user)
    assert person_of(server, "anonymous", other_device) != person_of(server, "user", user)

    device_alias = client.alias(other_device, user, timestamp=at[6])
    account_alias = client.alias(old_user, user, timestamp=at[7])
    assert client.flush(timeout=20)

    message_ids = [viewed, pricing, logged_in, signed_up, ordered, joined, device_alias, account_alias]
    events = stored(server, message_ids)
    assert set(events) == set(message_ids), "every messageId the client made up is a stored event_id"
    assert sorted(stored_for(server, [anonymous, other_device, user, old_user])) == sorted(message_ids)
    expected = {
        viewed: ("track", "Product Viewed", {"sku": "A-1", "price": 12.5, "city": "Zürich ✓"}),
        pricing: ("page", "page_view", {"variant": "b", "name": "Pricing", "category": "Docs"}),
        logged_in: ("track", "Logged In", {}),
        signed_up: ("identify", "identify", {"plan": "pro"}),
        ordered: ("track", "Order Completed", {"revenue": 99.99}),
        joined: ("group", "group", {"group_id": "acme", "traits": {"seats": 12}}),
        device_alias: ("alias", "alias", {"previous_id": other_device}),
        account_alias: ("alias", "alias", {"previous_id": old_user}),
    }
    for message_id, (message_type, name, properties) in expected.items():
        event = events[message_id]
        assert (event["type"], event["event"], json.loads(event["properties"])) == (message_type, name, properties)
        assert event["library"] == f"footfall-python/{__version__}"
    assert events[pricing]["url"] == "https://shop.test/pricing"
    for message_id, moment in zip(message_ids, at, strict=False):
        stored_at = datetime.fromisoformat(events[message_id]["timestamp"].replace("Z", "+00:00"))
        assert abs(stored_at - moment) < timedelta(seconds=5), "the event's own time, corrected by sentAt"

    # Anonymous browsing, identify and both aliases: one person.
    person = person_of(server, "user", user)
    assert {event["person_id"] for event in events.values()} == {person}
    for kind, value in [("anonymous", anonymous), ("anonymous", other_device), ("user", old_user)]:
        assert person_of(server, kind, value) == person
    assert server.sql(f"SELECT user_id FROM persons WHERE person_id = {quoted([person])}") == [[user]]

    # The wire format: Segment's, with the write key as HTTP Basic user.
    request = proxy.seen[0]
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(f"{server.write_key}:".encode()).decode()
    assert request.headers["Content-Type"] == "application/json"
    batch = request.json
    assert batch["sentAt"].endswith("Z")
    first = batch["batch"][0]
    assert first["type"] == "track"
    assert uuid.UUID(first["messageId"]).version == 4
    assert first["timestamp"] == at[0].isoformat(timespec="microseconds").replace("+00:00", "Z")
    assert first["context"]["library"] == {"name": "footfall-python", "version": __version__}
    assert errors.calls == []
    stats = client.stats
    assert (stats.delivered, stats.queued, stats.failed, stats.retries) == (8, 0, 0, 0)


def test_a_batch_goes_when_batch_size_messages_wait(
    server: LiveServer, make_proxy: Callable[..., Proxy], make_client: Callable[..., tuple[Client, Errors]]
) -> None:
    proxy = make_proxy()
    client, _ = make_client(proxy.url, batch_size=4, flush_interval=60)
    person = someone("size")
    sent = [client.track("Clicked", {"n": n}, anonymous_id=person) for n in range(10)]
    # Two full batches go without a flush; the last two wait for flush_interval (a minute) or flush().
    proxy.wait_for_requests(2)
    wait_until(lambda: client.stats.delivered == 8)
    assert (client.stats.queued, len(proxy.seen)) == (2, 2)
    assert client.flush(timeout=10)
    assert [len(request.message_ids) for request in proxy.seen] == [4, 4, 2]
    assert [message_id for request in proxy.seen for message_id in request.message_ids] == sent
    assert sorted(stored_for(server, [person])) == sorted(sent)


def test_a_batch_goes_when_the_oldest_message_has_waited_flush_interval(
    server: LiveServer, make_proxy: Callable[..., Proxy], make_client: Callable[..., tuple[Client, Errors]]
) -> None:
    proxy = make_proxy()
    client, _ = make_client(proxy.url, batch_size=100, flush_interval=0.3)
    person = someone("interval")
    first_call = time.monotonic()
    sent = [client.track("Scrolled", {"depth": depth}, anonymous_id=person) for depth in (25, 50, 75)]
    [request] = proxy.wait_for_requests(1)
    assert request.at - first_call >= 0.3
    assert request.message_ids == sent
    assert client.flush(timeout=10)  # until the collector has answered
    assert len(proxy.seen) == 1
    assert sorted(stored_for(server, [person])) == sorted(sent)


def test_batches_stay_under_the_collectors_batch_limit(
    server: LiveServer, make_proxy: Callable[..., Proxy], make_client: Callable[..., tuple[Client, Errors]]
) -> None:
    proxy = make_proxy()
    client, errors = make_client(proxy.url, batch_size=100, gzip=True)
    person = someone("bulky")
    sent = [client.track("Uploaded", {"blob": "x" * 30_000, "n": n}, anonymous_id=person) for n in range(40)]
    assert client.flush(timeout=20)
    sizes = [len(gzip.decompress(request.body)) for request in proxy.seen]
    assert len(sizes) == 3  # 40 messages of 30 KB: 16 fit in 500 KB
    assert all(size <= IntakeSettings().max_batch_bytes for size in sizes)
    assert all(len(request.body) < size / 10 for request, size in zip(proxy.seen, sizes, strict=True))
    assert {request.headers["Content-Encoding"] for request in proxy.seen} == {"gzip"}
    assert [message_id for request in proxy.seen for message_id in request.message_ids] == sent
    assert sorted(stored_for(server, [person])) == sorted(sent)
    assert errors.calls == []


def test_messages_from_many_threads_are_each_stored_once(
    server: LiveServer, make_client: Callable[..., tuple[Client, Errors]]
) -> None:
    client, errors = make_client(batch_size=50, flush_interval=0.05)
    people = [someone(f"thread{index}") for index in range(4)]
    sent: list[list[str]] = [[] for _ in people]

    def send(index: int) -> None:
        for n in range(200):
            sent[index].append(client.track("Hovered", {"n": n}, anonymous_id=people[index]))

    threads = [threading.Thread(target=send, args=(index,)) for index in range(len(people))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.flush(timeout=20)
    everything = [message_id for ids in sent for message_id in ids]
    assert sorted(stored_for(server, people)) == sorted(everything)
    assert client.stats.delivered == 800
    assert errors.calls == []


# -- the exit and the import ---------------------------------------------------------------


EXITING_SENDER = textwrap.dedent(
    """
    import sys
    from footfall.sdk import Client

    client = Client(sys.argv[1], sys.argv[2], flush_interval=60, flush_at_exit=sys.argv[4] == "yes")
    for n in range(5):
        client.track("Left", {"n": n}, anonymous_id=sys.argv[3])
    # no flush(), no close(): the process just ends
    """
)


@pytest.mark.parametrize(("flush_at_exit", "expected"), [("yes", 5), ("no", 0)])
def test_what_is_queued_is_sent_at_exit(server: LiveServer, flush_at_exit: str, expected: int) -> None:
    person = someone("exit")
    subprocess.run(
        [sys.executable, "-c", EXITING_SENDER, server.write_key, server.url, person, flush_at_exit],
        check=True, timeout=60,
    )
    assert len(stored_for(server, [person])) == expected


FORKING_SENDER = textwrap.dedent(
    """
    import os, sys
    from footfall.sdk import Client

    client = Client(sys.argv[1], sys.argv[2], flush_interval=60)
    client.track("Before Fork", anonymous_id=sys.argv[3])
    child = os.fork()
    if child == 0:  # as in a pre-forking server's worker
        client.track("In Child", anonymous_id=sys.argv[3])
        assert client.flush(timeout=20)
        assert client.stats.delivered == 1, client.stats  # the parent's queue stays the parent's
        sys.exit(0)
    _, status = os.waitpid(child, 0)
    assert status == 0
    client.track("After Fork", anonymous_id=sys.argv[3])
    """
)


def test_a_forked_child_sends_its_own_messages(server: LiveServer) -> None:
    person = someone("fork")
    subprocess.run([sys.executable, "-c", FORKING_SENDER, server.write_key, server.url, person], check=True, timeout=60)
    server.wait_until_stored()
    rows = server.sql(f"SELECT event FROM events WHERE anonymous_id = {quoted([person])} ORDER BY event")
    assert rows == [["After Fork"], ["Before Fork"], ["In Child"]]


def test_importing_the_sdk_loads_no_store_or_server_dependency() -> None:
    heavy = ["duckdb", "pyarrow", "numpy", "msgspec", "starlette", "uvicorn", "footfall.store", "footfall.events"]
    script = f"import sys, footfall.sdk; print([name for name in {heavy!r} if name in sys.modules])"
    result = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]"


# -- a full queue -----------------------------------------------------------------------


def test_a_full_queue_drops_the_oldest_messages_with_a_warning(
    server: LiveServer, make_proxy: Callable[..., Proxy], make_client: Callable[..., tuple[Client, Errors]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = make_proxy("hold")
    client, errors = make_client(proxy.url, batch_size=1, max_queue_size=3)
    person = someone("queue")
    first = client.track("Viewed", {"n": 0}, anonymous_id=person)
    assert proxy.held.wait(10), "the first batch is in flight, held by the proxy"
    with caplog.at_level(logging.WARNING, logger="footfall.sdk"):
        later = [client.track("Viewed", {"n": n}, anonymous_id=person) for n in range(1, 6)]
    # Three fit in the queue; the fourth and fifth push out the two oldest.
    assert client.stats.dropped == 2
    assert errors.reasons == ["queue_full", "queue_full"]
    assert [messages[0]["messageId"] for _, messages in errors.calls] == later[:2]
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1, "one warning when dropping starts, not one per message"
    assert "queue is full (3 messages): dropping the oldest" in warnings[0].getMessage()

    proxy.released.set()
    assert client.flush(timeout=20)
    assert sorted(stored_for(server, [person])) == sorted([first, *later[2:]])
    stats = client.stats
    assert (stats.delivered, stats.dropped, stats.failed) == (4, 2, 0)


# -- retries ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 429])
def test_a_temporary_error_is_retried_and_stores_each_message_once(
    status: int, server: LiveServer, make_proxy: Callable[..., Proxy],
    make_client: Callable[..., tuple[Client, Errors]],
) -> None:
    failures = 2
    proxy = make_proxy(*[(status, "0")] * failures)
    # A backoff of a minute: only Retry-After: 0 makes the retries quick.
    client, errors = make_client(proxy.url, initial_backoff=60, max_backoff=60)
    person = someone(f"retry{status}")
    sent = [client.track("Paid", {"n": n}, anonymous_id=person) for n in range(3)]
    assert client.flush(timeout=20)
    assert len(proxy.seen) == failures + 1
    assert all(request.message_ids == sent for request in proxy.seen), "the same messageIds on every attempt"
    assert sorted(stored_for(server, [person])) == sorted(sent)
    stats = client.stats
    assert (stats.requests, stats.retries, stats.delivered, stats.failed) == (3, 2, 3, 0)
    assert errors.calls == []


def test_retry_after_is_honoured(
    server: LiveServer, make_proxy: Callable[..., Proxy], make_client: Callable[..., tuple[Client, Errors]]
) -> None:
    proxy = make_proxy((503, "1"))
    client, _ = make_client(proxy.url, initial_backoff=0.001, max_backoff=10)
    client.track("Paid", anonymous_id=someone("retry-after"))
    assert client.flush(timeout=20)
    first, second = proxy.seen
    assert second.at - first.at >= 1.0


def test_a_lost_answer_is_retried_and_the_collector_drops_the_repeat(
    server: LiveServer, make_proxy: Callable[..., Proxy], make_client: Callable[..., tuple[Client, Errors]]
) -> None:
    proxy = make_proxy("forward-then-drop")
    client, errors = make_client(proxy.url)
    person = someone("lost")
    server.wait_until_stored()
    duplicates_before = server.metric("footfall_events_duplicate_total")
    sent = [client.track("Subscribed", {"n": n}, anonymous_id=person) for n in range(3)]
    assert client.flush(timeout=20)
    assert len(proxy.seen) == 2
    assert proxy.seen[0].message_ids == proxy.seen[1].message_ids == sent
    assert sorted(stored_for(server, [person])) == sorted(sent), "stored once, though the collector took it twice"
    assert server.metric("footfall_events_duplicate_total") - duplicates_before == len(sent)
    assert (client.stats.retries, client.stats.delivered) == (1, 3)
    assert errors.calls == []


def test_retries_run_out_and_are_reported(make_client: Callable[..., tuple[Client, Errors]]) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client, errors = make_client(nobody, max_retries=2, initial_backoff=0.001, max_backoff=0.01)
    message_id = client.track("Lost", anonymous_id=someone("nobody"))
    assert client.flush(timeout=20)
    [(error, messages)] = errors.calls
    assert error.reason == "retries_exhausted"
    assert error.status is None
    assert "3 attempts failed" in str(error)
    assert [message["messageId"] for message in messages] == [message_id]
    stats = client.stats
    assert (stats.requests, stats.retries, stats.failed, stats.queued) == (3, 2, 1, 0)


# -- answers that are final ------------------------------------------------------------


def test_a_wrong_write_key_is_not_retried_and_is_reported(
    server: LiveServer, make_proxy: Callable[..., Proxy], make_client: Callable[..., tuple[Client, Errors]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = make_proxy()
    client, errors = make_client(proxy.url, write_key="not-a-key")
    person = someone("stranger")
    sent = [client.track("Sneaked In", anonymous_id=person), client.identify(person, {"x": 1})]
    with caplog.at_level(logging.ERROR, logger="footfall.sdk"):
        assert client.flush(timeout=20)
    assert len(proxy.seen) == 1, "a 401 is final"
    [(error, messages)] = errors.calls
    assert (error.reason, error.status, error.error_code) == ("refused", 401, "unauthorised")
    assert "unknown or revoked write key" in str(error)
    assert [message["messageId"] for message in messages] == sent
    assert "unknown or revoked write key" in caplog.text
    assert (client.stats.failed, client.stats.delivered) == (2, 0)
    assert stored_for(server, [person]) == []


def test_messages_the_collector_rejects_are_reported_and_not_retried(
    server: LiveServer, make_proxy: Callable[..., Proxy], make_client: Callable[..., tuple[Client, Errors]]
) -> None:
    proxy = make_proxy()
    client, errors = make_client(proxy.url)
    person = someone("rejected")
    bad_context = {"screen": {"width": "wide"}}  # the contract wants a number

    # One bad message in a batch: the rest is stored (200, with the rejection listed).
    good = client.track("Fine", anonymous_id=person)
    bad = client.track("Broken", anonymous_id=person, context=bad_context)
    assert client.flush(timeout=20)
    [(error, [message])] = errors.calls
    assert (error.reason, error.status) == ("rejected", 200)
    assert "$.batch[1].context.screen.width" in str(error)
    assert message["messageId"] == bad

    # Only bad messages: 400, and no retry.
    worse = client.track("Broken too", anonymous_id=person, context=bad_context)
    assert client.flush(timeout=20)
    assert len(proxy.seen) == 2
    assert [(error.reason, error.status) for error, _ in errors.calls[1:]] == [("rejected", 400)]
    assert errors.calls[1][1][0]["messageId"] == worse
    assert stored_for(server, [person]) == [good]
    [[letters]] = server.sql(f"SELECT count(*) FROM dead_letters WHERE payload LIKE '%{person}%'")
    assert letters == 2
    assert (client.stats.delivered, client.stats.rejected) == (1, 2)


# -- checks at call time ---------------------------------------------------------------


def test_a_message_over_the_collectors_limit_is_refused_at_call_time(
    server: LiveServer, make_client: Callable[..., tuple[Client, Errors]]
) -> None:
    client, errors = make_client()
    person = someone("size-limit")
    limit = IntakeSettings().max_message_bytes
    with pytest.raises(MessageTooLarge, match=r"track\(\): the message is [\d,]+ bytes as JSON; .* at most 32,768") as caught:
        client.track("Huge", {"blob": "x" * 40_000}, anonymous_id=person)
    assert client.stats.queued == 0
    # The same message with exactly as many bytes as the collector takes is stored.
    overhead = caught.value.size - 40_000
    at_limit = client.track("Huge", {"blob": "x" * (limit - overhead)}, anonymous_id=person)
    with pytest.raises(MessageTooLarge):
        client.track("Huge", {"blob": "x" * (limit - overhead + 1)}, anonymous_id=person)
    assert client.flush(timeout=20)
    assert stored_for(server, [person]) == [at_limit]
    assert errors.calls == []


def test_the_sdk_limits_are_the_collectors() -> None:
    settings = IntakeSettings()
    sdk = sdk_messages
    assert [settings.max_message_bytes, settings.max_batch_bytes] == [sdk.MAX_MESSAGE_BYTES, sdk.MAX_BATCH_BYTES]
    assert [parse.MAX_ID_LENGTH, parse.MAX_EVENT_NAME_LENGTH] == [sdk.MAX_ID_LENGTH, sdk.MAX_EVENT_NAME_LENGTH]
    assert [parse.EARLIEST_YEAR, parse.LATEST_YEAR] == [sdk.EARLIEST_YEAR, sdk.LATEST_YEAR]


NAIVE = datetime(2024, 5, 1, 12, 0)


@pytest.mark.parametrize(
    ("call", "kwargs", "error", "message"),
    [
        ("track", {"event": "Viewed"}, ValueError, r"^track\(\) needs a user_id or an anonymous_id"),
        ("identify", {"traits": {"plan": "pro"}}, ValueError, r"^identify\(\) needs a user_id or an anonymous_id"),
        ("page", {"name": "Home"}, ValueError, r"^page\(\) needs a user_id or an anonymous_id"),
        ("group", {"group_id": "acme"}, ValueError, r"^group\(\) needs a user_id or an anonymous_id"),
        ("alias", {"previous_id": "a-1", "user_id": None}, ValueError, r"^alias\(\) needs a user_id"),
        ("track", {"event": " ", "user_id": "u"}, ValueError, r"^track\(\): event must not be empty"),
        ("track", {"event": "V", "user_id": ""}, ValueError, r"^track\(\): user_id must not be empty"),
        ("track", {"event": "V", "user_id": 1.5}, TypeError, r"user_id must be a str or an int, not float"),
        ("track", {"event": "V", "user_id": "u" * 256}, ValueError, r"user_id is 256 characters long"),
        ("track", {"event": "V", "user_id": "u", "timestamp": NAIVE}, ValueError, r"has no time zone"),
        ("track", {"event": "V", "user_id": "u", "timestamp": NAIVE.replace(year=1969, tzinfo=UTC)}, ValueError,
         r"outside 1970-2200"),
        ("track", {"event": "V", "user_id": "u", "properties": {"x": float("nan")}}, ValueError, r"cannot be sent as JSON"),
        ("track", {"event": "V", "user_id": "u", "properties": {"x": object()}}, TypeError,
         r"track\(\): the message cannot be sent as JSON: a value of type object is not JSON"),
        ("track", {"event": "V", "user_id": "u", "properties": ["x"]}, TypeError, r"properties must be a mapping"),
        ("identify", {"user_id": "u", "traits": {"name": "\ud800"}}, ValueError, r"not valid Unicode"),
    ],
)
def test_bad_calls_fail_in_the_callers_frame(call: str, kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    client = Client("key", "http://127.0.0.1:1", send=False)
    with pytest.raises(error, match=message):
        getattr(client, call)(**kwargs)


def test_values_python_code_puts_in_properties_are_sent_as_json() -> None:
    message = sdk_messages.build(
        "track",
        {"event": "Paid", "properties": {"at": datetime(2024, 5, 1, 14, tzinfo=timezone(timedelta(hours=2))),
                                         "day": datetime(2024, 5, 1).date(), "amount": Decimal("9.50"),
                                         "order": uuid.UUID(int=7)}},
        ids={"userId": "u"}, timestamp=None, context={"library": {"name": "my-wrapper"}}, message_id="m-1",
    )
    decoded = json.loads(sdk_messages.encode("track", message, 1000))
    assert decoded["properties"] == {
        "at": "2024-05-01T12:00:00.000000Z", "day": "2024-05-01", "amount": 9.5,
        "order": "00000000-0000-0000-0000-000000000007",
    }
    assert decoded["messageId"] == "m-1"
    assert decoded["context"]["library"] == {"name": "my-wrapper"}, "a wrapper library may name itself"


def test_a_closed_client_refuses_messages(make_client: Callable[..., tuple[Client, Errors]]) -> None:
    client, _ = make_client()
    with client:
        pass
    with pytest.raises(ClientClosed, match=r"track\(\): the client is closed"):
        client.track("Late", user_id="u")
    assert client.close(), "closing twice is harmless"


def test_close_gives_up_after_its_timeout_and_reports_what_is_left(
    make_proxy: Callable[..., Proxy], make_client: Callable[..., tuple[Client, Errors]]
) -> None:
    proxy = make_proxy((503, "5"))
    client, errors = make_client(proxy.url, max_backoff=5, flush_interval=0.01)
    first = client.track("Held up", anonymous_id=someone("closing"))
    proxy.wait_for_requests(1)
    assert client.close(timeout=0.2) is False
    # The batch was in the sender's hands (waiting to retry): it reports it as it stops.
    errors.wait_for(1)
    assert errors.reasons == ["closed"]
    assert [message["messageId"] for message in errors.calls[0][1]] == [first]
    assert client.stats.failed == 1


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="write_key must be a Footfall write key"):
        Client("", "http://127.0.0.1:8000")
    with pytest.raises(ValueError, match="host must be an http:// or https:// address"):
        Client("key", "127.0.0.1:8000")
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        Client("key", "http://127.0.0.1:8000", batch_size=0)
    with pytest.raises(ValueError, match="max_message_bytes must be positive"):
        Client("key", "http://127.0.0.1:8000", max_message_bytes=600 * 1024)
