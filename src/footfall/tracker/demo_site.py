"""The demo shop: its write key, its page, and the "your events" it may show.

The shop's page polls ``GET /demo/events?anonymous_id=...`` to show a visitor
what the tracker recorded about them. That route needs no secret key, so what
it answers is narrow on purpose:

- only events of the one anonymous id asked for. Ids made by ``footfall.js``
  are random UUIDs (122 random bits) that only that browser and the server
  hold, so knowing one is what proves it is yours;
- only events ``footfall.js`` itself sent (``library`` is ``footfall.js/...``):
  never imported or simulated history, whose ids may be guessable;
- only ``track`` and ``page`` events, never ``identify`` (traits) or
  ``alias``; never the user id, IP address or user agent; and only the
  properties in ``SHOWN_PROPERTIES``;
- at most ``OWN_EVENTS_LIMIT`` events, the most recent first.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from footfall.errors import FootfallError
from footfall.keys import KeyStore
from footfall.store.backend import QueryResult
from footfall.tracker import SHOP_DIR, package_file

DEMO_SOURCE = "demo-shop"
DEMO_KEY_FILE = "demo-write-key"
OWN_EVENTS_LIMIT = 20
# What the panel shows of an event's properties: what the tracker and the shop
# record, nothing a site might put there about a person.
SHOWN_PROPERTIES = (
    "signal", "element", "section", "depth", "max_scroll", "dwell_ms", "duration_ms", "visible_ms",
    "x", "y", "clicks", "form", "product_id", "category", "price", "quantity", "revenue", "currency",
    "cart_size", "value", "results", "segment_id",
)
CONFIG_PLACEHOLDER = b"<!--footfall-config-->"


class DemoSiteError(FootfallError):
    code = "demo_site"


def demo_write_key(data_dir: Path, keys: KeyStore, given: str | None = None) -> str:
    """The write key the shop's tracker sends with.

    ``given`` must be an active write key of this data directory. Without it,
    the key made for the shop last time is reused while it is active (it is
    kept in ``demo-write-key``, mode 0600: write keys are public by nature, as
    every page that sends events shows its key), else a new one is made for
    the source ``demo-shop``.
    """
    if given is not None:
        if keys.authenticate(given, "write") is None:
            raise DemoSiteError(
                "--demo-write-key is not an active write key of this data directory; "
                f"create one with `footfall keys create --kind write --source {DEMO_SOURCE}`"
            )
        return given
    path = Path(data_dir) / DEMO_KEY_FILE
    try:
        kept = path.read_text().strip()
    except FileNotFoundError:
        kept = ""
    if kept and keys.authenticate(kept, "write") is not None:
        return kept
    key, _ = keys.create("write", DEMO_SOURCE)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key + "\n")
    return key


@dataclass(frozen=True)
class DemoSite:
    """The shop, configured with the write key its tracker sends with."""

    write_key: str

    def page(self) -> bytes:
        """The shop's one HTML page (every view of the single-page app), configured."""
        # JSON inside <script>: "<" escaped, so no value can close the element.
        config = json.dumps({"writeKey": self.write_key, "eventsUrl": "/demo/events"}).replace("<", "\\u003c")
        tag = f'<script id="footfall-config" type="application/json">{config}</script>'
        html = package_file(SHOP_DIR, "index.html")
        if CONFIG_PLACEHOLDER not in html:
            raise DemoSiteError(f"the shop's index.html has lost its {CONFIG_PLACEHOLDER.decode()} placeholder")
        return html.replace(CONFIG_PLACEHOLDER, tag.encode())


def parse_anonymous_id(value: str | None) -> str:
    """The anonymous id asked about, if it is one footfall.js makes (a UUID).

    >>> parse_anonymous_id("0F8B6F1C-3D2A-4E5B-9C7D-1A2B3C4D5E6F")
    '0f8b6f1c-3d2a-4e5b-9c7d-1a2b3c4d5e6f'
    >>> parse_anonymous_id("anon' OR 1=1 --")
    Traceback (most recent call last):
    ...
    footfall.tracker.demo_site.DemoSiteError: anonymous_id must be the UUID footfall.js keeps for this browser (footfall.anonymousId())
    """
    try:
        return str(uuid.UUID(hex=value or ""))
    except ValueError:
        raise DemoSiteError(
            "anonymous_id must be the UUID footfall.js keeps for this browser (footfall.anonymousId())"
        ) from None


def own_events_sql(anonymous_id: str, limit: int = OWN_EVENTS_LIMIT) -> str:
    """The latest events footfall.js sent for one anonymous id, and the segment
    changes of its person (standard SQL, both dialects).

    The id is checked to be a UUID first, so it is safe inside the literal.
    """
    checked = parse_anonymous_id(anonymous_id)
    # With them, the segments this visitor entered or left (the server's live
    # segments write those changes for the person the id belongs to).
    person = f"SELECT person_id FROM identities WHERE kind = 'anonymous' AND value = '{checked}'"
    return (
        "SELECT timestamp, event, path, properties FROM events"
        f" WHERE (anonymous_id = '{checked}' AND library LIKE 'footfall.js/%' AND type IN ('track', 'page'))"
        f" OR (type = 'segment' AND person_id IN ({person}))"
        f" ORDER BY timestamp DESC, received_at DESC LIMIT {int(limit)}"
    )


def public_events(result: QueryResult) -> list[dict[str, Any]]:
    """Rows of ``own_events_sql`` as the panel shows them: whitelisted properties only."""
    shown = []
    for row in result.rows:
        record = dict(zip(result.columns, row, strict=True))
        try:
            properties = json.loads(record["properties"] or "{}")
        except ValueError:
            properties = {}
        timestamp = record["timestamp"]
        shown.append({
            "timestamp": timestamp if isinstance(timestamp, str) else timestamp.isoformat(),
            "event": record["event"],
            "path": record["path"],
            "properties": {key: properties[key] for key in SHOWN_PROPERTIES if key in properties},
        })
    return shown
