"""What the server gives browsers: ``footfall.js`` at ``/static/footfall.js``
and, when asked for, the demo shop at ``/`` with its "your events" route.

Static files are held in memory with their gzip form made once; answers carry
an ETag per representation and honour ``If-None-Match``.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from footfall.api.responses import error_response, json_response
from footfall.errors import FootfallError
from footfall.store.backend import QueryResult
from footfall.tracker import SHOP_DIR, package_file, tracker_script
from footfall.tracker.demo_site import (
    DemoSite,
    DemoSiteError,
    own_events_sql,
    parse_anonymous_id,
    public_events,
)

JAVASCRIPT = "text/javascript"
# Unversioned URLs: cached for an hour, then revalidated by ETag (a 304 costs
# a few bytes), so a new footfall.js reaches every site within the hour.
SCRIPT_CACHE = "public, max-age=3600"
# The demo shop's files change together with the server: revalidate each time.
REVALIDATE = "no-cache"

ReadQuery = Callable[[str], Awaitable[QueryResult]]


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header lets the answer be gzip-encoded.

    >>> [accepts_gzip(h) for h in ("gzip, deflate, br", "br;q=1, gzip;q=0", "*", "gzip;q=0, *", "", "identity")]
    [True, False, True, False, False, False]
    """
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, _, parameters = item.partition(";")
        weight = 1.0
        for parameter in parameters.split(";"):
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        weights[coding.strip().lower()] = weight
    for coding in ("gzip", "x-gzip", "*"):  # an explicit gzip weight overrides "*"
        if coding in weights:
            return weights[coding] > 0
    return False


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    candidates = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in candidates or etag in candidates


@dataclass(frozen=True)
class StaticAsset:
    body: bytes
    gzipped: bytes
    media_type: str
    cache_control: str
    etag: str  # of the plain body; the gzip form's ends in -gz

    @classmethod
    def of(cls, body: bytes, media_type: str, cache_control: str = SCRIPT_CACHE) -> StaticAsset:
        digest = hashlib.sha256(body).hexdigest()[:24]
        return cls(body, gzip.compress(body, 9, mtime=0), media_type, cache_control, f'"{digest}"')

    def response(self, request: Request) -> Response:
        encoded = accepts_gzip(request.headers.get("accept-encoding", ""))
        etag = f'{self.etag[:-1]}-gz"' if encoded else self.etag
        headers = {"ETag": etag, "Cache-Control": self.cache_control, "Vary": "Accept-Encoding"}
        if _etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        if encoded:
            headers["Content-Encoding"] = "gzip"
        return Response(self.gzipped if encoded else self.body, headers=headers, media_type=self.media_type)


def _serve(asset: StaticAsset) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return asset.response(request)

    return endpoint


def tracker_routes() -> list[Route]:
    """``GET /static/footfall.js``."""
    return [Route("/static/footfall.js", _serve(StaticAsset.of(tracker_script(), JAVASCRIPT)), methods=["GET"])]


def demo_site_routes(site: DemoSite, read: ReadQuery) -> list[Route]:
    """The shop at ``/`` (and each of its views' paths), its assets, and
    ``GET /demo/events`` (see ``footfall.tracker.demo_site`` for what that shows)."""
    page = _serve(StaticAsset.of(site.page(), "text/html", REVALIDATE))

    async def own_events(request: Request) -> Response:
        try:
            anonymous_id = parse_anonymous_id(request.query_params.get("anonymous_id"))
        except DemoSiteError as exc:
            return error_response(400, {"code": "bad_request", "message": str(exc)})
        try:
            result = await read(own_events_sql(anonymous_id))
        except FootfallError as exc:
            return error_response(503, {"code": "store_unavailable", "message": f"the events could not be read ({exc})"})
        response = json_response({"anonymous_id": anonymous_id, "events": public_events(result)})
        response.headers["Cache-Control"] = "no-store"
        return response

    return [
        Route("/", page, methods=["GET"]),
        Route("/product/{product_id}", page, methods=["GET"]),
        Route("/cart", page, methods=["GET"]),
        Route("/shop/shop.js", _serve(StaticAsset.of(package_file(SHOP_DIR, "shop.js"), JAVASCRIPT, REVALIDATE)), methods=["GET"]),
        Route("/shop/shop.css", _serve(StaticAsset.of(package_file(SHOP_DIR, "shop.css"), "text/css", REVALIDATE)), methods=["GET"]),
        Route("/demo/events", own_events, methods=["GET"]),
    ]
