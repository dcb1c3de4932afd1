"""The browser tracker, ``footfall.js``, and the demo shop instrumented with it.

Both are package data: the collector serves ``footfall.js`` at
``/static/footfall.js``, and ``footfall serve --demo-site`` (or ``footfall
demo``) serves the shop at ``/``. See ``docs/tracker.md``.
"""

from __future__ import annotations

from importlib.resources import files

TRACKER_FILE = "footfall.js"
SHOP_DIR = "shop"


def package_file(*parts: str) -> bytes:
    """The bytes of a file shipped in this package, e.g. ``package_file("shop", "shop.js")``."""
    return files(__name__).joinpath(*parts).read_bytes()


def tracker_script() -> bytes:
    return package_file(TRACKER_FILE)
