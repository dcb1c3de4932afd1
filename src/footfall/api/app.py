"""The ASGI application behind ``footfall serve``.

It serves the collector (Segment-compatible write endpoints, see
``footfall.api.collector``) with the browser tracker ``footfall.js``,
``/metrics`` for Prometheus, read-only SQL, the dead-letter admin routes and,
when asked, the demo shop (``footfall.api.browser``). Routes parse input, call
one service, and format output; every error is JSON with a code, never an HTML
page or a bare 500.

Reads and admin need a secret key (``Authorization: Bearer ffs_...``) or the
server's own admin token (which the local CLI takes from ``server.json``);
writes need a write key. The two never open each other's routes.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec
import pyarrow as pa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from footfall import __version__
from footfall.api import browser
from footfall.api.responses import error_response, json_response
from footfall.api.segments import segment_routes
from footfall.errors import FootfallError, StoreError
from footfall.store.backend import QueryResult
from footfall.store.database import Database

if TYPE_CHECKING:
    from footfall.api.service import FrontService, StoreService
    from footfall.tracker.demo_site import DemoSite

log = logging.getLogger("footfall.api")

MAX_SQL_BYTES = 100_000
# Typed answers for Footfall's own clients: timestamps stay timestamps.
ARROW_STREAM = "application/vnd.apache.arrow.stream"


def arrow_stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def create_app(
    database: Database,
    admin_token: str,
    on_shutdown: Callable[[], None] | None = None,
    service: StoreService | None = None,
    demo_site: DemoSite | None = None,
) -> Starlette:
    """An app over one open database. ``admin_token`` guards reads for the local CLI.

    With a ``service``, its metrics and dead-letter routes are served too, and
    the collector (with ``footfall.js``) if it has one; with a ``demo_site``,
    the demo shop. ``on_shutdown`` runs during a graceful stop (uvicorn
    re-raises SIGTERM after its shutdown, so code after ``uvicorn.run`` may
    never run).
    """

    def authorised(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        if hmac.compare_digest(token.encode(), admin_token.encode()):
            return True
        return service is not None and service.keys.authenticate(token, "secret") is not None

    def unauthorised() -> Response:
        return error_response(
            401, {"code": "unauthorised", "message": "send a secret key as 'Authorization: Bearer <key>' (write keys cannot read)"}
        )

    async def health(request: Request) -> Response:
        return json_response({
                "status": "ok",
                "version": __version__,
                "store": database.backend.description,
                "dialect": database.backend.dialect,
            })

    async def sql(request: Request) -> Response:
        if not authorised(request):
            return unauthorised()
        body = await request.body()
        if len(body) > MAX_SQL_BYTES:
            return error_response(413, {"code": "too_large", "message": f"the query is larger than {MAX_SQL_BYTES} bytes"})
        try:
            query = msgspec.json.decode(body, type=dict[str, str])["sql"]
        except (msgspec.DecodeError, msgspec.ValidationError, KeyError):
            return error_response(400, {"code": "bad_request", "message": 'send JSON like {"sql": "SELECT ..."}'})
        wants_arrow = ARROW_STREAM in request.headers.get("accept", "")
        try:
            if wants_arrow:
                table = database.read_only_query_arrow(query)
            else:
                result = database.read_only_query(query)
        except FootfallError as exc:
            return error_response(400, {"code": exc.code, "message": str(exc)})
        if wants_arrow:
            return Response(arrow_stream(table), media_type=ARROW_STREAM)
        return json_response({"columns": result.columns, "rows": result.rows})

    async def query(request: Request) -> Response:
        """``POST /v1/query/{analysis}``: a spec as JSON in, the result as JSON
        out; with ``?explain=true``, only the SQL it runs."""
        from footfall import analytics
        from footfall.analytics.errors import SpecError
        from footfall.analytics.wire import RUNNERS, spec_from_json, to_json

        if not authorised(request):
            return unauthorised()
        body = await request.body()
        if len(body) > MAX_SQL_BYTES:
            return error_response(413, {"code": "too_large", "message": f"the spec is larger than {MAX_SQL_BYTES} bytes"})
        try:
            document = msgspec.json.decode(body or b"{}")
        except msgspec.DecodeError as exc:
            return error_response(400, {"code": "bad_request", "message": f"the body is not JSON ({exc})"})
        try:
            spec = spec_from_json(request.path_params["analysis"], document)
            if request.query_params.get("explain", "").lower() in ("1", "true", "yes"):
                return json_response({"sql": analytics.compile(spec, database.backend.dialect, project_id=database.project_id)})
            runner = RUNNERS.get(request.path_params["analysis"], analytics.run)
            result = await run_in_threadpool(runner, database, spec)
        except SpecError as exc:
            return error_response(400, {"code": exc.code, "field": exc.field, "message": exc.problem})
        except FootfallError as exc:
            return error_response(400, {"code": exc.code, "message": str(exc)})
        return json_response({"result": to_json(result)})

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/openapi.json", _openapi, methods=["GET"]),
        Route("/v1/sql", sql, methods=["POST"]),
        Route("/v1/query/{analysis}", query, methods=["POST"]),
    ]
    if service is not None:
        if service.collector is not None:
            routes += service.collector.routes() + browser.tracker_routes()
        routes += _service_routes(service, authorised, unauthorised)
        routes += segment_routes(service.database, service.catalog, authorised, unauthorised, service.segments.members)
    if demo_site is not None:

        async def read(query: str) -> QueryResult:
            return await run_in_threadpool(database.read_only_query, query)

        routes += browser.demo_site_routes(demo_site, read)
    return _application(routes, on_shutdown)


def create_front_app(
    front: FrontService, on_shutdown: Callable[[], None] | None = None, demo_site: DemoSite | None = None
) -> Starlette:
    """The app of ``footfall serve``: the collector and ``footfall.js`` here,
    reads and admin passed to the store process (which checks the keys),
    metrics from both; with a ``demo_site``, the demo shop."""
    from footfall.api.service import UnixConnections

    connections = UnixConnections(front.socket_path)

    registry = CollectorRegistry(auto_describe=False)
    for collector in front.metrics():
        registry.register(collector)

    async def store(
        method: str, target: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Response:
        try:
            status, content_type, answer = await run_in_threadpool(
                connections.request, method, target, body=body, headers=headers
            )
        except OSError as exc:
            return error_response(
                503, {"code": "store_unavailable", "message": f"the store process is not answering ({exc}); events are still collected"}
            )
        return Response(answer, status, media_type=content_type)

    async def passed_on(request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        headers = {name: request.headers[name] for name in ("authorization", "content-type", "accept") if name in request.headers}
        return await store(request.method, target, await request.body(), headers)

    async def health(request: Request) -> Response:
        answer = await store("GET", "/health")
        body = msgspec.json.decode(answer.body) if answer.status_code == 200 else {"status": "degraded", "store": "unavailable"}
        return json_response({**body, "collector": "ok", "store_restarts": front.store.restarts})

    async def metrics(request: Request) -> Response:
        answer = await store("GET", "/metrics")
        worker = bytes(answer.body) if answer.status_code == 200 else b""
        return Response(generate_latest(registry) + worker, media_type=CONTENT_TYPE_LATEST)

    async def read(query: str) -> QueryResult:
        """A read on the store process, as the server itself (its admin token)."""
        answer = await store(
            "POST", "/v1/sql", msgspec.json.encode({"sql": query}),
            {"authorization": f"Bearer {front.store.admin_token}", "content-type": "application/json"},
        )
        try:
            body = msgspec.json.decode(answer.body)
        except msgspec.DecodeError:
            body = {}
        if answer.status_code != 200 or "rows" not in body:
            raise StoreError(body.get("error", {}).get("message", f"the store answered HTTP {answer.status_code}"))
        return QueryResult(body["columns"], [tuple(row) for row in body["rows"]])

    routes = [
        *front.collector.routes(),
        *browser.tracker_routes(),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/openapi.json", _openapi, methods=["GET"]),
        Route("/v1/sql", passed_on, methods=["POST"]),
        Route("/v1/admin/{rest:path}", passed_on, methods=["GET", "POST"]),
        Route("/v1/profiles/{identity}", _profiles_route(front, passed_on), methods=["GET"]),
        Route("/v1/query/{analysis}", passed_on, methods=["POST"]),
        Route("/v1/segments{rest:path}", passed_on, methods=["GET", "POST", "DELETE"]),
        Route("/v1/cohorts{rest:path}", passed_on, methods=["GET", "POST", "DELETE"]),
    ]
    if demo_site is not None:
        routes += browser.demo_site_routes(demo_site, read)
    return _application(routes, on_shutdown)


def _profiles_route(front: FrontService, passed_on: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """``GET /v1/profiles/{id}`` in the front process. With the Redis backend a
    profile asked by person id is read from Redis here, one round trip and no
    hop to the store process; everything else (the embedded backend, a user
    or anonymous id, which the store's identity graph resolves) is passed on."""
    from footfall.config import load_config

    config = load_config(front.data_dir)
    if config.profiles.backend != "redis":
        return passed_on
    from footfall.profiles.redis import RedisProfileReader

    reader = RedisProfileReader(config)

    def authorised(request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        if hmac.compare_digest(token.encode(), front.store.admin_token.encode()):
            return True
        return front.keys.authenticate(token, "secret") is not None

    async def profile(request: Request) -> Response:
        if request.query_params.get("kind", "person") != "person" or not authorised(request):
            return await passed_on(request)  # the store answers, or refuses the key
        identity = request.path_params["identity"]
        try:
            if not reader.loaded:
                return error_response(
                    503, {"code": "loading", "message": "profiles are being loaded from the store; retry in a moment"}
                )
            view = reader.view(identity)
        except StoreError as exc:
            return error_response(503, {"code": "profiles_unavailable", "message": str(exc)})
        if view is None:
            return error_response(404, {"code": "not_found", "message": f"no profile for person {identity!r}"})
        return Response(msgspec.json.encode(view), media_type="application/json")

    return profile


async def _openapi(request: Request) -> Response:
    from footfall.api.openapi import document

    return json_response(document())


def _application(routes: list[Route], on_shutdown: Callable[[], None] | None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if on_shutdown is not None:
            on_shutdown()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            message = f"no route {request.url.path}; the collector takes POST /v1/batch, /v1/track, /v1/identify, ..."
            return error_response(404, {"code": "not_found", "message": message})
        if exc.status_code == 405:
            return error_response(405, {"code": "method_not_allowed", "message": f"{request.method} is not allowed on {request.url.path}"})
        return error_response(exc.status_code, {"code": "http_error", "message": str(exc.detail)})

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        return error_response(500, {"code": "internal", "message": f"internal error ({type(exc).__name__}); see the server log"})

    return Starlette(
        lifespan=lifespan,
        routes=routes,
        middleware=[
            # Browser sources post from other origins; credentials go in a header, not cookies.
            Middleware(
                CORSMiddleware,
                allow_origins=["*"],
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "Content-Encoding", "X-Footfall-Write-Key"],
                expose_headers=["Retry-After"],  # footfall.js waits as long as it says
                max_age=86400,
            )
        ],
        exception_handlers={HTTPException: http_error, Exception: unexpected},
    )


def _service_routes(
    service: StoreService, authorised: Callable[[Request], bool], unauthorised: Callable[[], Response]
) -> list[Route]:
    from footfall.intake import dead_letters

    registry = CollectorRegistry(auto_describe=False)
    for collector in service.metrics():
        registry.register(collector)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def list_dead_letters(request: Request) -> Response:
        if not authorised(request):
            return unauthorised()
        try:
            limit = int(request.query_params.get("limit", "50"))
        except ValueError:
            return error_response(400, {"code": "bad_request", "message": "limit must be a whole number"})
        ids = request.query_params.getlist("id") or None
        letters = dead_letters.list_letters(
            service.database, limit=max(0, min(limit, 10_000)), source=request.query_params.get("source"), ids=ids
        )
        return json_response({"dead_letters": [letter._asdict() for letter in letters]})

    async def replay_dead_letters(request: Request) -> Response:
        if not authorised(request):
            return unauthorised()
        try:
            options = msgspec.json.decode(await request.body() or b"{}", type=_ReplayRequest)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return error_response(400, {"code": "bad_request", "message": f'send JSON like {{"ids": ["..."]}} or {{}} for all ({exc})'})

        def run() -> dead_letters.ReplayReport:
            with service.worker.lock:
                return dead_letters.replay(
                    service.database, service.worker.pipeline, service.plans, ids=options.ids, source=options.source
                )

        report = await run_in_threadpool(run)
        return json_response(
            {
                "replayed": report.replayed,
                "stored_events": report.stored_events,
                "still_failing": [{"id": i, "field": f, "reason": r} for i, f, r in report.still_failing],
            }
        )

    async def profile(request: Request) -> Response:
        """A person's live profile: by person id, or by ``?kind=user`` /
        ``?kind=anonymous`` with that identity's value."""
        if not authorised(request):
            return unauthorised()
        identity = request.path_params["identity"]
        kind = request.query_params.get("kind", "person")
        if kind not in ("person", "user", "anonymous"):
            return error_response(400, {"code": "bad_request", "message": f"kind must be person, user or anonymous, not {kind!r}"})
        profiles = service.worker.profiles
        if not profiles.loaded:
            return error_response(503, {"code": "loading", "message": "profiles are being loaded from the store; retry in a moment"})
        person = identity if kind == "person" else service.worker.pipeline.person_for(kind, identity)
        try:
            view = profiles.view(person) if person is not None else None
        except StoreError as exc:  # the Redis backend, unreachable
            return error_response(503, {"code": "profiles_unavailable", "message": str(exc)})
        if view is None:
            return error_response(404, {"code": "not_found", "message": f"no profile for {kind} {identity!r}"})
        return Response(msgspec.json.encode(view), media_type="application/json")

    return [
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/profiles/{identity}", profile, methods=["GET"]),
        Route("/v1/admin/dead-letters", list_dead_letters, methods=["GET"]),
        Route("/v1/admin/dead-letters/replay", replay_dead_letters, methods=["POST"]),
    ]


class _ReplayRequest(msgspec.Struct, forbid_unknown_fields=True):
    ids: list[str] | None = None
    source: str | None = None
