"""Readable test timelines: ``msg("track", at="10m", anon="a1", event="view")``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from footfall.durations import parse_duration
from footfall.events import Event, parse_message

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def at(offset: str) -> datetime:
    negative = offset.startswith("-")
    delta = parse_duration(offset.lstrip("-"))
    return T0 - delta if negative else T0 + delta


def msg(
    kind: str,
    *,
    at_: str = "0s",
    anon: str | None = None,
    user: str | None = None,
    event: str | None = None,
    **fields: Any,
) -> Event:
    body: dict[str, Any] = {"type": kind, "timestamp": at(at_).isoformat(), **fields}
    if anon is not None:
        body["anonymousId"] = anon
    if user is not None:
        body["userId"] = user
    if event is not None:
        body["event"] = event
    return parse_message(body, received_at=T0)


def track(event: str, when: str, *, anon: str | None = None, user: str | None = None, **fields: Any) -> Event:
    return msg("track", at_=when, anon=anon, user=user, event=event, **fields)


def identify(when: str, *, anon: str | None, user: str, traits: dict[str, Any] | None = None) -> Event:
    return msg("identify", at_=when, anon=anon, user=user, traits=traits or {})
