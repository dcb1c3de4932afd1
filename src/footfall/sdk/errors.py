"""What the SDK raises at call time, and what it reports to ``on_error`` later."""

from __future__ import annotations

from typing import Literal

from footfall.errors import FootfallError

FailureReason = Literal["rejected", "refused", "retries_exhausted", "queue_full", "closed"]


class MessageTooLarge(FootfallError, ValueError):
    """A message encodes to more bytes than the collector takes per message."""

    code = "message_too_large"

    def __init__(self, call: str, size: int, limit: int) -> None:
        self.call = call
        self.size = size
        self.limit = limit
        super().__init__(
            f"{call}(): the message is {size:,} bytes as JSON; the collector takes at most {limit:,} bytes"
            " per message. Send fewer or smaller properties, traits or context."
        )


class ClientClosed(FootfallError, RuntimeError):
    """A message was given to a client after ``close()``."""

    code = "client_closed"


class DeliveryError(FootfallError):
    """Why messages were not delivered; passed to ``on_error`` with the messages.

    ``reason`` says what happened to them:

    - ``rejected``: the collector found the message invalid and put it in its
      dead-letter table (``footfall dlq list`` shows it);
    - ``refused``: the collector refused the request (a wrong write key, a
      4xx other than 429); nothing of it was stored;
    - ``retries_exhausted``: connection errors, 429 or 5xx on every attempt;
    - ``queue_full``: dropped, oldest first, because ``max_queue_size``
      messages were already waiting;
    - ``closed``: still unsent when ``close()`` (or the exit) ran out of time.

    ``status`` is the HTTP status of the last answer (None without one) and
    ``error_code`` the collector's error code (``unauthorised``,
    ``bad_message``, ...).
    """

    code = "delivery_failed"

    def __init__(
        self, reason: FailureReason, message: str, *, status: int | None = None, error_code: str | None = None
    ) -> None:
        self.reason: FailureReason = reason
        self.status = status
        self.error_code = error_code
        super().__init__(message)
