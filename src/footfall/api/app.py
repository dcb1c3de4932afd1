"""The ASGI application behind ``footfall serve``.

For now it serves health and read-only SQL for the local CLI; the collector
and query API mount here as they are built. Routes parse input, call the
Database, and format output; errors are JSON with a code.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator, Callable

import msgspec
import pyarrow as pa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from footfall import __version__
from footfall.api.responses import error_response, json_response
from footfall.errors import FootfallError
from footfall.store.database import Database

MAX_SQL_BYTES = 100_000
# Typed answers for Footfall's own clients: timestamps stay timestamps.
ARROW_STREAM = "application/vnd.apache.arrow.stream"


def arrow_stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def create_app(
    database: Database, admin_token: str, on_shutdown: Callable[[], None] | None = None
) -> Starlette:
    """An app over one open database. ``admin_token`` guards reads for the local CLI.

    ``on_shutdown`` runs during a graceful stop (uvicorn re-raises SIGTERM after
    its shutdown, so code after ``uvicorn.run`` may never run).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if on_shutdown is not None:
            on_shutdown()

    def authorised(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), admin_token.encode())

    async def health(request: Request) -> Response:
        return json_response({
                "status": "ok",
                "version": __version__,
                "store": database.backend.description,
                "dialect": database.backend.dialect,
            })

    async def sql(request: Request) -> Response:
        if not authorised(request):
            return error_response(401, {"code": "unauthorised", "message": "send the server's admin token as 'Authorization: Bearer <token>'"})
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

    return Starlette(
        lifespan=lifespan,
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/v1/sql", sql, methods=["POST"]),
        ]
    )
