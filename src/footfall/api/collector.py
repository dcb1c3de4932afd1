"""The collector: Segment-compatible write endpoints over the durable intake log.

``POST /v1/batch`` and the single-message endpoints (``/v1/track``,
``/v1/identify``, ``/v1/page``, ``/v1/screen``, ``/v1/group``, ``/v1/alias``)
take Segment's wire format, so Segment and RudderStack SDKs work unchanged. A
request is answered 200 only after its record is fsynced into the intake log;
the worker stores it afterwards.

Write keys come as HTTP Basic (the key as user name, as the SDKs send it), as
an ``X-Footfall-Write-Key`` header, or as ``writeKey`` in the body (browsers'
``sendBeacon`` cannot set headers).
"""

from __future__ import annotations

import base64
import binascii
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from footfall.api.responses import json_response
from footfall.errors import MessageError
from footfall.events.messages import MESSAGE_TYPES
from footfall.intake.admission import (
    Admission,
    IntakeBatch,
    Rejection,
    admit_batch,
    admit_message,
    encode_record,
)
from footfall.intake.log import AsyncAppender, IntakeError, IntakeLog
from footfall.keys import KeyRecord, KeyStore

WRITE_KEY_HEADER = "x-footfall-write-key"
# Shown with every rejection in a 200 answer; more are in the dead-letter table.
MAX_REPORTED_REJECTIONS = 20


class BodyTooLarge(Exception):
    pass


@dataclass
class CollectorStats:
    requests: dict[int, int] = field(default_factory=dict)  # by status
    messages_accepted: int = 0
    messages_rejected: int = 0
    messages_declined: int = 0
    bytes_received: int = 0

    def count(self, status: int) -> None:
        self.requests[status] = self.requests.get(status, 0) + 1


def _problem(status: int, code: str, message: str, **extra: Any) -> Response:
    # ``code`` and ``message`` also at the top level: Segment's and
    # RudderStack's SDKs read them there (and retry a 4xx they cannot read).
    return json_response({"error": {"code": code, "message": message, **extra}, "code": code, "message": message}, status)


class Collector:
    def __init__(
        self, intake: IntakeLog, keys: KeyStore, *, max_message_bytes: int, max_batch_bytes: int
    ) -> None:
        self.intake = intake
        self.appender = AsyncAppender(intake)
        self.keys = keys
        self.max_message_bytes = max_message_bytes
        self.max_batch_bytes = max_batch_bytes
        self.stats = CollectorStats()

    def close(self) -> None:
        """Finish the appends in flight (before the log closes)."""
        self.appender.close()

    def routes(self) -> list[Route]:
        routes = [Route("/v1/batch", self.batch, methods=["POST"])]
        for message_type in MESSAGE_TYPES:
            routes.append(Route(f"/v1/{message_type}", self._single(message_type), methods=["POST"]))
        return routes

    # -- reading the body ----------------------------------------------------------

    async def _body(self, request: Request, limit: int) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"the body is {int(declared):,} bytes; the limit is {limit:,} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"the body is larger than the limit of {limit:,} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("", "identity"):
            return body
        if encoding not in ("gzip", "deflate"):
            raise MessageError("$", f"Content-Encoding {encoding!r} is not supported; send gzip or no encoding")
        return self._inflate(body, limit, gzip=encoding == "gzip")

    @staticmethod
    def _inflate(body: bytes, limit: int, *, gzip: bool) -> bytes:
        # Inflate at most limit + 1 bytes: a small bomb never gets to expand.
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS)
        try:
            data = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise MessageError("$", f"the body is not valid {'gzip' if gzip else 'deflate'} data ({exc})") from None
        if len(data) > limit:
            raise BodyTooLarge(f"the body inflates to more than the limit of {limit:,} bytes")
        if not inflater.eof:
            raise MessageError("$", "the compressed body is truncated")
        return data

    # -- authentication --------------------------------------------------------------

    @staticmethod
    def _header_key(request: Request) -> str | None:
        header = request.headers.get("authorization")
        if header:
            scheme, _, credentials = header.partition(" ")
            if scheme.lower() == "basic":
                try:
                    user, _, _ = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    return ""
                return user
            if scheme.lower() == "bearer":
                return credentials.strip()
        return request.headers.get(WRITE_KEY_HEADER)

    def _authenticate(self, key: str | None) -> KeyRecord | Response:
        if not key:
            return _problem(
                401, "unauthorised",
                "no write key: send it as HTTP Basic user name, an X-Footfall-Write-Key header, or writeKey in the body",
            )
        record = self.keys.lookup(key)
        if record is None:
            return _problem(401, "unauthorised", "unknown or revoked write key; `footfall keys list` shows the active ones")
        if record.kind != "write":
            return _problem(403, "wrong_key_kind", "this is a secret key; events are sent with a write key")
        return record

    # -- handlers ----------------------------------------------------------------------

    async def batch(self, request: Request) -> Response:
        return await self._handle(request, None)

    def _single(self, message_type: str) -> Any:
        async def endpoint(request: Request) -> Response:
            return await self._handle(request, message_type)

        endpoint.__name__ = f"collect_{message_type}"
        return endpoint

    async def _handle(self, request: Request, message_type: str | None) -> Response:
        response = await self._answer(request, message_type)
        self.stats.count(response.status_code)
        return response

    async def _answer(self, request: Request, message_type: str | None) -> Response:
        received_at = datetime.now(UTC)
        header_key = self._header_key(request)
        # With a key in a header, refuse strangers before reading their body.
        record = self._authenticate(header_key) if header_key is not None else None
        if isinstance(record, Response):
            return record
        limit = self.max_batch_bytes if message_type is None else self.max_message_bytes
        try:
            body = await self._body(request, limit)
        except BodyTooLarge as exc:
            advice = "split it into smaller batches" if message_type is None else "send less per message"
            return _problem(413, "too_large", f"{exc}; {advice}")
        except MessageError as exc:
            return _problem(400, "bad_request", exc.problem, field=exc.field)
        except ClientDisconnect:
            return _problem(400, "bad_request", "the client went away before the body arrived")
        self.stats.bytes_received += len(body)

        try:
            if message_type is None:
                admission = admit_batch(body, self.max_message_bytes, received_at)
            else:
                admission = admit_message(body, message_type, self.max_message_bytes, received_at)
        except MessageError as exc:
            admission = Admission([], [Rejection(0, exc.field, exc.problem, body)], 0, None, None)
            envelope_error: MessageError | None = exc
        else:
            envelope_error = None

        if record is None:
            record = self._authenticate(admission.write_key)
            if isinstance(record, Response):
                return record

        if admission.accepted or admission.rejected or admission.declined:
            batch = IntakeBatch(
                source=record.source,
                key_id=record.id,
                received_at=received_at,
                sent_at=admission.sent_at,
                client_ip=request.client.host if request.client else None,
                drop_ip=record.drop_ip,
                anonymize_ip=record.anonymize_ip,
                messages=admission.accepted,
                rejected=admission.rejected,
                declined=admission.declined,
                message_type=message_type,
            )
            try:
                await self.appender.append(encode_record(batch))
            except IntakeError as exc:
                # Not durable, so not acknowledged: the client keeps the batch and retries.
                return _problem(503, "intake_unavailable", f"the batch was not stored ({exc}); retry later")

        self.stats.messages_accepted += len(admission.accepted)
        self.stats.messages_rejected += len(admission.rejected)
        self.stats.messages_declined += admission.declined
        if envelope_error is not None:
            return _problem(400, "bad_request", envelope_error.problem, field=envelope_error.field, dead_lettered=True)
        if admission.rejected and not admission.accepted:
            first = admission.rejected[0]
            return _problem(
                400, "bad_message", f"{first.field}: {first.reason}", field=first.field,
                rejected=_report(admission.rejected), dead_lettered=True,
            )
        answer: dict[str, Any] = {"success": True, "accepted": len(admission.accepted)}
        if admission.rejected:
            answer["rejected"] = _report(admission.rejected)
            answer["dead_lettered"] = True
        if admission.declined:
            answer["declined"] = admission.declined
        return json_response(answer)


def _report(rejected: list[Rejection]) -> list[dict[str, Any]]:
    return [
        {"index": item.index, "field": item.field, "reason": item.reason}
        for item in rejected[:MAX_REPORTED_REJECTIONS]
    ]
