"""Posting batches to the collector, and when to try again.

Only the standard library: ``http.client`` over one keep-alive connection,
which the sender thread alone uses.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import random
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

# uvicorn closes a keep-alive connection after 5 idle seconds; one idle longer
# than this is not reused, so a request does not race the server's close.
IDLE_REUSE_SECONDS = 4.0

# A request that fails this way may be tried again: nothing, or the same
# messages again, reached the store (the collector drops repeats by messageId).
TRANSIENT_ERRORS = (OSError, http.client.HTTPException)


@dataclass(frozen=True)
class Answer:
    """The collector's answer to one request."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)  # the JSON object answered; {} for anything else
    retry_after: float | None = None  # seconds, from a Retry-After header
    text: str = ""  # the start of a body that is not a JSON object, for error messages

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        """Worth sending again: the server is overloaded or failing, not refusing."""
        return self.status in (408, 429) or self.status >= 500

    def detail(self, key: str) -> Any:
        """A field of the answer: at the top level, or in the collector's ``error`` object."""
        if key in self.body:
            return self.body[key]
        error = self.body.get("error")
        return error.get(key) if isinstance(error, dict) else None

    @property
    def error_code(self) -> str | None:
        code = self.body.get("code")
        return code if isinstance(code, str) else None

    @property
    def error_message(self) -> str:
        """The collector's explanation (its JSON ``message``), else what the body said."""
        message = self.body.get("message")
        if isinstance(message, str):
            return message
        return self.text or http.client.responses.get(self.status, "")


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date.

    >>> parse_retry_after("3"), parse_retry_after("0.5"), parse_retry_after("soon")
    (3.0, 0.5, None)
    >>> parse_retry_after("Wed, 01 May 2024 12:00:10 GMT", now=datetime(2024, 5, 1, 12, 0, tzinfo=UTC))
    10.0
    """
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if seconds == seconds else None  # NaN is no answer


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first).

    The ceiling doubles with each attempt up to ``maximum``; the delay is a
    random 50-100 % of it, so that clients that failed together do not retry
    together.

    >>> rng = random.Random(1)
    >>> [round(backoff_delay(attempt, 0.5, 4.0, rng), 3) for attempt in range(6)]
    [0.284, 0.924, 1.764, 2.51, 2.991, 2.899]
    """
    ceiling = min(maximum, initial * 2.0**attempt)
    return ceiling * rng.uniform(0.5, 1.0)


class Transport:
    """One keep-alive HTTP(S) connection to a collector's ``/v1/batch``."""

    def __init__(self, host: str, write_key: str, *, timeout: float, compress: bool, user_agent: str) -> None:
        parts = urlsplit(host)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"host must be an http:// or https:// address such as http://127.0.0.1:8000, not {host!r}")
        self.scheme = parts.scheme
        self.hostname = parts.hostname
        self.port = parts.port
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/v1/batch"
        self.path = f"{parts.path.rstrip('/')}/v1/batch"
        self.timeout = timeout
        self.compress = compress
        credentials = base64.b64encode(f"{write_key}:".encode()).decode()
        self.headers = {
            "Authorization": f"Basic {credentials}",
            "Content-Type": "application/json",
            "User-Agent": user_agent,
        }
        if compress:
            self.headers["Content-Encoding"] = "gzip"
        self._connection: http.client.HTTPConnection | None = None
        self._last_used = 0.0

    def post(self, body: bytes) -> Answer:
        """Send one batch body; raises one of ``TRANSIENT_ERRORS`` when no answer came."""
        payload = gzip.compress(body, compresslevel=6) if self.compress else body
        connection = self._connect()
        try:
            connection.request("POST", self.path, body=payload, headers=self.headers)
            response = connection.getresponse()
            data = response.read()
        except BaseException:
            self.close()  # the connection is in an unknown state
            raise
        if response.will_close:
            self.close()
        else:
            self._last_used = time.monotonic()
        return _answer(response, data)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is not None and time.monotonic() - self._last_used > IDLE_REUSE_SECONDS:
            self.close()
        if self._connection is None:
            if self.scheme == "https":
                self._connection = http.client.HTTPSConnection(
                    self.hostname, self.port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                self._connection = http.client.HTTPConnection(self.hostname, self.port, timeout=self.timeout)
        return self._connection


def _answer(response: http.client.HTTPResponse, data: bytes) -> Answer:
    retry_after = parse_retry_after(response.getheader("Retry-After"))
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if isinstance(body, dict):
        return Answer(response.status, body, retry_after)
    return Answer(response.status, {}, retry_after, data[:200].decode("utf-8", "replace").strip())
