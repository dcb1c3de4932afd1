"""The wire contract: Segment-spec messages as strict msgspec structs.

Structs are not tracked by the garbage collector (``gc=False``): messages are
trees, never cycles, and a worker decodes tens of thousands a second.

Field names follow the Segment spec (camelCase on the wire). Unknown fields
inside ``context`` are kept (SDKs add their own); unknown top-level fields are
ignored, as Segment does, so newer SDKs keep working.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

Id = str | int  # Segment accepts numeric ids; they are stored as text.


class PageContext(msgspec.Struct, rename="camel", gc=False):
    url: str | None = None
    path: str | None = None
    referrer: str | None = None
    title: str | None = None
    search: str | None = None


class Campaign(msgspec.Struct, rename="camel", gc=False):
    name: str | None = None
    source: str | None = None
    medium: str | None = None
    term: str | None = None
    content: str | None = None


class Screen(msgspec.Struct, rename="camel", gc=False):
    width: int | None = None
    height: int | None = None
    density: float | None = None


class Library(msgspec.Struct, rename="camel", gc=False):
    name: str | None = None
    version: str | None = None


class NamedThing(msgspec.Struct, rename="camel", gc=False):
    name: str | None = None
    version: str | None = None
    type: str | None = None
    model: str | None = None


class Location(msgspec.Struct, rename="camel", gc=False):
    country: str | None = None
    city: str | None = None
    region: str | None = None


class Context(msgspec.Struct, rename="camel", gc=False):
    page: PageContext | None = None
    user_agent: str | None = None
    ip: str | None = None
    locale: str | None = None
    timezone: str | None = None
    screen: Screen | None = None
    library: Library | None = None
    campaign: Campaign | None = None
    os: NamedThing | None = None
    device: NamedThing | None = None
    browser: NamedThing | None = None
    location: Location | None = None
    # {"tracking": false} means the person declined tracking: the message is not stored.
    consent: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None  # the user's traits; identify traits for some SDKs


class _Message(msgspec.Struct, rename="camel", kw_only=True, tag_field="type", gc=False):
    message_id: str | None = None
    anonymous_id: Id | None = None
    user_id: Id | None = None
    context: Context | None = None
    timestamp: datetime | None = None
    original_timestamp: datetime | None = None
    sent_at: datetime | None = None
    received_at: datetime | None = None
    integrations: dict[str, Any] | None = None
    # Browsers sending with navigator.sendBeacon cannot set headers, so the
    # write key may come in the body instead (as Segment's API allows).
    write_key: str | None = None


class Track(_Message, tag="track"):
    event: str
    properties: dict[str, Any] | None = None


class Page(_Message, tag="page"):
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] | None = None


class ScreenView(_Message, tag="screen"):
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] | None = None


class Identify(_Message, tag="identify"):
    traits: dict[str, Any] | None = None


class Group(_Message, tag="group"):
    group_id: Id
    traits: dict[str, Any] | None = None


class Alias(_Message, tag="alias"):
    previous_id: Id


Message = Track | Page | ScreenView | Identify | Group | Alias

MESSAGE_TYPES: dict[str, type[Message]] = {
    "track": Track,
    "page": Page,
    "screen": ScreenView,
    "identify": Identify,
    "group": Group,
    "alias": Alias,
}


class Batch(msgspec.Struct, rename="camel", gc=False):
    batch: list[msgspec.Raw]
    sent_at: datetime | None = None
    context: dict[str, Any] | None = None
    write_key: str | None = None
