"""The client: calls queue messages, one background thread sends them in batches.

Delivery is at-least-once on the wire and exactly-once in the store: every
message gets its ``messageId`` when it is made and keeps it (its bytes, in
fact) across every retry, and the collector drops a message whose id it has
already stored.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from footfall import __version__
from footfall.sdk.errors import ClientClosed, DeliveryError
from footfall.sdk.messages import (
    BATCH_ENVELOPE_BYTES,
    LIBRARY,
    MAX_BATCH_BYTES,
    MAX_MESSAGE_BYTES,
    Id,
    batch_body,
    build,
    check_id,
    check_identity,
    check_mapping,
    check_name,
    encode,
)
from footfall.sdk.transport import TRANSIENT_ERRORS, Answer, Transport, backoff_delay

logger = logging.getLogger("footfall.sdk")

ErrorCallback = Callable[[DeliveryError, list[dict[str, Any]]], None]


@dataclass(frozen=True)
class DeliveryStats:
    """Counts of messages since the client was made; each message ends in one of
    ``delivered``, ``rejected``, ``failed`` or ``dropped``."""

    queued: int  # waiting, or in a request not yet answered
    delivered: int  # acknowledged by the collector: durable, stored exactly once
    rejected: int  # found invalid by the collector, which keeps them as dead letters
    failed: int  # not delivered: the request was refused, retries ran out, or close() timed out
    dropped: int  # pushed out of a full queue, oldest first
    requests: int  # HTTP requests made, retries included
    retries: int


@dataclass(frozen=True, slots=True)
class _Queued:
    seq: int  # the order of the call; flush() waits for the ones made before it
    data: bytes  # the message as JSON, exactly what is sent
    enqueued_at: float  # time.monotonic()


@dataclass
class _Outcome:
    delivered: int = 0
    rejected: int = 0
    failed: int = 0
    reports: list[tuple[DeliveryError, list[_Queued]]] = field(default_factory=list)


class Client:
    """Sends events to a Footfall collector.

    >>> client = Client("write-key", "http://127.0.0.1:8000", send=False)
    >>> message_id = client.track("Signed Up", {"plan": "pro"}, user_id="u-1")
    >>> client.close()
    True

    Calls check and encode the message, queue it and return its ``messageId``
    at once; a background thread sends the queue to ``POST {host}/v1/batch``
    when ``batch_size`` messages (or a batch's worth of bytes) are waiting or
    the oldest has waited ``flush_interval`` seconds. See docs/sdk.md.
    """

    def __init__(
        self,
        write_key: str,
        host: str,
        *,
        batch_size: int = 100,
        flush_interval: float = 0.5,
        max_queue_size: int = 10_000,
        max_retries: int = 10,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 15.0,
        gzip: bool = False,
        on_error: ErrorCallback | None = None,
        flush_at_exit: bool = True,
        exit_timeout: float = 10.0,
        send: bool = True,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_batch_bytes: int = MAX_BATCH_BYTES,
    ) -> None:
        if not isinstance(write_key, str) or not write_key:
            raise ValueError("write_key must be a Footfall write key (`footfall keys create --kind write`)")
        _require(batch_size >= 1, "batch_size must be at least 1")
        _require(flush_interval > 0, "flush_interval must be a positive number of seconds")
        _require(max_queue_size >= 1, "max_queue_size must be at least 1")
        _require(max_retries >= 0, "max_retries must not be negative")
        _require(0 <= initial_backoff <= max_backoff, "initial_backoff and max_backoff must satisfy 0 <= initial <= max")
        _require(timeout > 0, "timeout must be a positive number of seconds")
        _require(
            0 < max_message_bytes <= max_batch_bytes - BATCH_ENVELOPE_BYTES,
            f"max_message_bytes must be positive and leave {BATCH_ENVELOPE_BYTES} bytes of max_batch_bytes"
            " for the batch envelope",
        )
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue_size = max_queue_size
        self.max_retries = max_retries
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.on_error = on_error
        self.exit_timeout = exit_timeout
        self.send = send
        self.max_message_bytes = max_message_bytes
        self.max_batch_bytes = max_batch_bytes
        self._transport = Transport(
            host, write_key, timeout=timeout, compress=gzip, user_agent=f"{LIBRARY['name']}/{__version__}"
        )
        self.host = host

        self._closing = False  # no new messages; send what is left now
        self._start()
        if send and flush_at_exit:
            atexit.register(self._close_at_exit)
        _clients.add(self)

    def _start(self) -> None:
        """Fresh state and a sender thread: when made, and in a child after fork()."""
        # Everything below is guarded by _lock; _changed is signalled whenever
        # the queue, the batch in flight or the closing state changes.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue: deque[_Queued] = deque()
        self._queued_bytes = 0
        self._in_flight: list[_Queued] = []
        self._next_seq = 0
        self._flush_target = 0  # messages before this seq are sent without waiting
        self._abandoned = False  # close() ran out of time: give up what is left
        self._sender_stopped = False
        self._overflowing = False  # a queue_full warning was logged and the queue has not had room since
        self._delivered = self._rejected = self._failed = self._dropped = 0
        self._requests = self._retries = 0
        self._rng = random.Random()
        self._sender: threading.Thread | None = None
        if self.send and not self._closing:
            self._sender = threading.Thread(target=self._run, name="footfall-sdk-sender", daemon=True)
            self._sender.start()

    def _after_fork_in_child(self) -> None:
        # The child has no sender thread, and its copies of the lock, the queue
        # and the connection are the parent's: the parent sends what was queued.
        self._transport.close()
        self._start()

    # -- the calls ---------------------------------------------------------------------

    def track(
        self,
        event: str,
        properties: Mapping[str, Any] | None = None,
        *,
        user_id: Id | None = None,
        anonymous_id: Id | None = None,
        timestamp: datetime | None = None,
        context: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> str:
        """Record that ``event`` happened; returns the message's ``messageId``."""
        call = "track"
        fields = {
            "event": check_name(call, "event", event, required=True),
            "properties": check_mapping(call, "properties", properties),
        }
        ids = check_identity(call, user_id, anonymous_id)
        return self._enqueue(call, build(call, fields, ids=ids, timestamp=timestamp, context=context,
                                         message_id=message_id))

    def identify(
        self,
        user_id: Id | None = None,
        traits: Mapping[str, Any] | None = None,
        *,
        anonymous_id: Id | None = None,
        timestamp: datetime | None = None,
        context: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> str:
        """Say who the user is and what they are like. With both ids, the anonymous
        id's events (before and after) become the user's."""
        call = "identify"
        fields = {"traits": check_mapping(call, "traits", traits)}
        ids = check_identity(call, user_id, anonymous_id)
        return self._enqueue(call, build(call, fields, ids=ids, timestamp=timestamp, context=context,
                                         message_id=message_id))

    def page(
        self,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        *,
        category: str | None = None,
        user_id: Id | None = None,
        anonymous_id: Id | None = None,
        timestamp: datetime | None = None,
        context: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> str:
        """Record a page view. The URL goes in ``context={"page": {"url": ...}}``
        (or ``properties["url"]``)."""
        call = "page"
        fields = {
            "name": check_name(call, "name", name, required=False),
            "category": check_name(call, "category", category, required=False),
            "properties": check_mapping(call, "properties", properties),
        }
        ids = check_identity(call, user_id, anonymous_id)
        return self._enqueue(call, build(call, fields, ids=ids, timestamp=timestamp, context=context,
                                         message_id=message_id))

    def group(
        self,
        group_id: Id,
        traits: Mapping[str, Any] | None = None,
        *,
        user_id: Id | None = None,
        anonymous_id: Id | None = None,
        timestamp: datetime | None = None,
        context: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> str:
        """Put the user in a group (an account, a company, a team)."""
        call = "group"
        fields = {
            "groupId": check_id(call, "group_id", group_id),
            "traits": check_mapping(call, "traits", traits),
        }
        ids = check_identity(call, user_id, anonymous_id)
        return self._enqueue(call, build(call, fields, ids=ids, timestamp=timestamp, context=context,
                                         message_id=message_id))

    def alias(
        self,
        previous_id: Id,
        user_id: Id,
        *,
        timestamp: datetime | None = None,
        context: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> str:
        """Declare ``previous_id`` (an anonymous id or an old user id) the same
        person as ``user_id``."""
        call = "alias"
        fields = {"previousId": check_id(call, "previous_id", previous_id)}
        ids = {"userId": check_id(call, "user_id", user_id)}
        return self._enqueue(call, build(call, fields, ids=ids, timestamp=timestamp, context=context,
                                         message_id=message_id))

    # -- flushing and closing ----------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Send now, and wait until every message queued before this call is
        delivered, rejected or failed (``on_error`` has run for the ones that
        were not delivered). False if ``timeout`` seconds passed first."""
        self._refuse_sender_thread("flush")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            target = self._next_seq
            if target > self._flush_target:
                self._flush_target = target
                self._changed.notify_all()
            while self._oldest_pending_locked() < target:
                if self._sender_stopped:
                    return False
                if deadline is None:
                    self._changed.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._changed.wait(remaining)
            return True

    def close(self, timeout: float | None = None) -> bool:
        """Refuse new messages, send what is queued (waiting up to ``timeout``
        seconds) and stop the sender. What is still unsent after ``timeout`` is
        given up and reported to ``on_error`` as ``closed``. True if everything
        was sent. Closing twice is harmless."""
        self._refuse_sender_thread("close")
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        done = self.flush(timeout)
        left: list[_Queued] = []
        with self._changed:
            if not done:
                self._abandoned = True
                left = list(self._queue)
                self._queue.clear()
                self._queued_bytes = 0
                self._failed += len(left)
                self._changed.notify_all()
        if left:
            logger.warning("footfall: closing with %d messages unsent after %s s; they are dropped", len(left), timeout)
            self._report(DeliveryError("closed", f"still unsent when the client closed after {timeout} s"), left)
        if done and self._sender is not None:
            self._sender.join()
        atexit.unregister(self._close_at_exit)
        return done

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    @property
    def stats(self) -> DeliveryStats:
        with self._lock:
            return DeliveryStats(
                queued=len(self._queue) + len(self._in_flight),
                delivered=self._delivered,
                rejected=self._rejected,
                failed=self._failed,
                dropped=self._dropped,
                requests=self._requests,
                retries=self._retries,
            )

    def _close_at_exit(self) -> None:
        self.close(self.exit_timeout)

    def _refuse_sender_thread(self, method: str) -> None:
        if threading.current_thread() is self._sender:
            raise RuntimeError(f"{method}() cannot be called from on_error: it would wait for itself")

    # -- queueing ------------------------------------------------------------------------

    def _enqueue(self, call: str, message: dict[str, Any]) -> str:
        data = encode(call, message, self.max_message_bytes)
        message_id = str(message["messageId"])
        if not self.send:
            return message_id
        dropped: _Queued | None = None
        with self._changed:
            if self._closing:
                raise ClientClosed(f"{call}(): the client is closed; make a new Client to send more")
            if len(self._queue) >= self.max_queue_size:
                dropped = self._queue.popleft()
                self._queued_bytes -= len(dropped.data)
                self._dropped += 1
                warn, self._overflowing = not self._overflowing, True
                dropped_so_far = self._dropped
            self._queue.append(_Queued(self._next_seq, data, time.monotonic()))
            self._next_seq += 1
            self._queued_bytes += len(data)
            if len(self._queue) == 1 or self._batch_is_full_locked():
                self._changed.notify_all()
        if dropped is not None:
            if warn:
                logger.warning(
                    "footfall: the queue is full (%d messages): dropping the oldest (%d dropped so far);"
                    " the collector at %s is slow or unreachable, or messages come faster than it takes them",
                    self.max_queue_size, dropped_so_far, self.host,
                )
            self._report(DeliveryError("queue_full", f"dropped from a full queue of {self.max_queue_size}"), [dropped])
        return message_id

    def _batch_is_full_locked(self) -> bool:
        return (
            len(self._queue) >= self.batch_size
            or self._queued_bytes + len(self._queue) + BATCH_ENVELOPE_BYTES >= self.max_batch_bytes
        )

    def _oldest_pending_locked(self) -> int:
        if self._in_flight:
            return self._in_flight[0].seq
        if self._queue:
            return self._queue[0].seq
        return self._next_seq

    # -- the sender thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                try:
                    outcome = self._deliver(batch)
                except Exception:  # a bug here must not leave flush() waiting forever
                    logger.exception("footfall: unexpected error sending %d messages; they are dropped", len(batch))
                    outcome = _Outcome(failed=len(batch))
                for error, items in outcome.reports:
                    self._report(error, items)
                with self._changed:
                    self._delivered += outcome.delivered
                    self._rejected += outcome.rejected
                    self._failed += outcome.failed
                    self._in_flight = []
                    self._changed.notify_all()
        finally:
            self._transport.close()
            with self._changed:
                self._sender_stopped = True
                self._changed.notify_all()

    def _next_batch(self) -> list[_Queued] | None:
        """The next batch to send, once one is due; None when the client is closed."""
        with self._changed:
            while not self._abandoned:
                if not self._queue:
                    if self._closing:
                        return None
                    self._changed.wait()
                    continue
                oldest = self._queue[0]
                wait = oldest.enqueued_at + self.flush_interval - time.monotonic()
                if wait <= 0 or self._closing or oldest.seq < self._flush_target or self._batch_is_full_locked():
                    return self._take_batch_locked()
                self._changed.wait(wait)
            return None

    def _take_batch_locked(self) -> list[_Queued]:
        batch: list[_Queued] = []
        size = BATCH_ENVELOPE_BYTES
        while self._queue and len(batch) < self.batch_size:
            cost = len(self._queue[0].data) + (1 if batch else 0)  # and a comma
            if size + cost > self.max_batch_bytes:
                break
            item = self._queue.popleft()
            self._queued_bytes -= len(item.data)
            batch.append(item)
            size += cost
        self._in_flight = batch
        if len(self._queue) < self.max_queue_size:
            self._overflowing = False
        return batch

    def _deliver(self, batch: list[_Queued]) -> _Outcome:
        """Send one batch until the collector answers for good or retries run out."""
        for attempt in range(self.max_retries + 1):
            answer: Answer | None = None
            try:
                answer = self._transport.post(batch_body([item.data for item in batch], datetime.now(UTC)))
            except TRANSIENT_ERRORS as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            with self._lock:
                self._requests += 1
            if answer is not None:
                if answer.ok:
                    return _acknowledged(batch, answer)
                if not answer.retryable:
                    return _refused(batch, answer, self._transport.url)
                problem = f"{answer.status} {answer.error_message}".strip()
            if attempt == self.max_retries:
                break
            if answer is not None and answer.retry_after is not None:
                delay = min(answer.retry_after, self.max_backoff)
            else:
                delay = backoff_delay(attempt, self.initial_backoff, self.max_backoff, self._rng)
            logger.info(
                "footfall: sending %d messages to %s failed (%s); retry %d of %d in %.2f s",
                len(batch), self._transport.url, problem, attempt + 1, self.max_retries, delay,
            )
            with self._changed:
                self._retries += 1
                deadline = time.monotonic() + delay
                while not self._abandoned and (remaining := deadline - time.monotonic()) > 0:
                    self._changed.wait(remaining)
                if self._abandoned:
                    error = DeliveryError("closed", f"the client closed while retrying ({problem})")
                    return _Outcome(failed=len(batch), reports=[(error, batch)])
        logger.error(
            "footfall: gave up sending %d messages to %s after %d attempts: %s",
            len(batch), self._transport.url, self.max_retries + 1, problem,
        )
        error = DeliveryError(
            "retries_exhausted", f"{self.max_retries + 1} attempts failed; the last: {problem}",
            status=answer.status if answer is not None else None,
            error_code=answer.error_code if answer is not None else None,
        )
        return _Outcome(failed=len(batch), reports=[(error, batch)])

    def _report(self, error: DeliveryError, items: list[_Queued]) -> None:
        if self.on_error is None:
            return
        try:
            self.on_error(error, [json.loads(item.data) for item in items])
        except Exception:
            logger.exception("footfall: the on_error callback raised")


# Every client, so that a child process gets working ones after fork().
_clients: weakref.WeakSet[Client] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_clients):
        client._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _require(condition: bool, problem: str) -> None:
    if not condition:
        raise ValueError(problem)


def _acknowledged(batch: list[_Queued], answer: Answer) -> _Outcome:
    """A 2xx: the batch is durable, but the collector may have rejected some messages."""
    accepted = answer.body.get("accepted")
    declined = answer.body.get("declined", 0)
    if not isinstance(accepted, int) or not isinstance(declined, int):
        return _Outcome(delivered=len(batch))  # not Footfall's answer: take the 2xx at its word
    rejected = max(0, len(batch) - accepted - declined)
    outcome = _Outcome(delivered=len(batch) - rejected, rejected=rejected, reports=_rejections(batch, answer))
    if rejected:
        logger.warning(
            "footfall: the collector rejected %d of %d messages (it keeps them as dead letters): %s",
            rejected, len(batch), outcome.reports[0][0] if outcome.reports else "no reason given",
        )
    return outcome


def _refused(batch: list[_Queued], answer: Answer, url: str) -> _Outcome:
    """A 4xx other than 408 / 429 (or a 3xx): sending the same again cannot help."""
    if answer.detail("dead_lettered") is True:
        # Every message failed the contract (or the envelope did): the collector kept them.
        reports = _rejections(batch, answer)
        listed = {id(item) for _, items in reports for item in items}
        unlisted = [item for item in batch if id(item) not in listed]
        if unlisted:  # the collector lists 20 at most, and none for a bad envelope
            error = DeliveryError("rejected", answer.error_message, status=answer.status, error_code=answer.error_code)
            reports.append((error, unlisted))
        logger.warning(
            "footfall: the collector rejected all %d messages of a batch (it keeps them as dead letters): %s",
            len(batch), answer.error_message,
        )
        return _Outcome(rejected=len(batch), reports=reports)
    logger.error(
        "footfall: %s refused %d messages with %d %s: %s; they are dropped",
        url, len(batch), answer.status, answer.error_code or "", answer.error_message,
    )
    error = DeliveryError(
        "refused", f"{answer.status}: {answer.error_message}", status=answer.status, error_code=answer.error_code
    )
    return _Outcome(failed=len(batch), reports=[(error, batch)])


def _rejections(batch: list[_Queued], answer: Answer) -> list[tuple[DeliveryError, list[_Queued]]]:
    """One report per rejected message the collector listed (it lists the first 20)."""
    listed = answer.detail("rejected")
    if not isinstance(listed, list):
        return []
    reports = []
    for item in listed:
        index = item.get("index") if isinstance(item, dict) else None
        if isinstance(index, int) and 0 <= index < len(batch):
            error = DeliveryError(
                "rejected", f"{item.get('field')}: {item.get('reason')}", status=answer.status, error_code="bad_message"
            )
            reports.append((error, [batch[index]]))
    return reports
