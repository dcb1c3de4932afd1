"""JSON responses shared by the API's routes. Errors are ``{"error": {"code", "message", ...}}``."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import msgspec
from starlette.responses import Response


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def json_response(body: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(body, enc_hook=_encode_value), status, media_type="application/json")


def error_response(status: int, error: dict[str, Any]) -> Response:
    return json_response({"error": error}, status)
