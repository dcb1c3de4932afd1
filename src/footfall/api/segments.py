"""``/v1/segments`` and ``/v1/cohorts``: saved segments and static cohorts
over HTTP (secret key), served by the process that holds the store. The CLI's
``footfall segments`` / ``footfall cohorts`` do the same things
(``footfall.segments.manage``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from footfall.analytics.errors import SpecError
from footfall.api.responses import error_response, json_response
from footfall.errors import FootfallError
from footfall.segments import manage
from footfall.segments.catalog import NotFound, SegmentCatalog
from footfall.segments.language import parse_definition
from footfall.segments.templates import TEMPLATES
from footfall.store.database import Database

MAX_BODY_BYTES = 32 * 1024 * 1024  # a CSV of a million ids fits
Handler = Callable[[Request], Awaitable[Response]]


def segment_routes(
    database: Database,
    catalog: SegmentCatalog,
    authorised: Callable[[Request], bool],
    unauthorised: Callable[[], Response],
    live: manage.Live | None = None,
) -> list[Route]:
    """``live`` gives the members the server keeps now of a saved segment:
    overlaps are taken from them rather than one query per segment."""
    def guarded(work: Callable[[Request, Any], Any], *, body: bool = False) -> Handler:
        """Check the key, decode a JSON body, run ``work`` off the event loop,
        and turn Footfall's errors into 400/404 answers naming the field."""

        async def endpoint(request: Request) -> Response:
            if not authorised(request):
                return unauthorised()
            document: Any = None
            if body:
                raw = await request.body()
                if len(raw) > MAX_BODY_BYTES:
                    return error_response(413, {"code": "too_large", "message": f"the body is larger than {MAX_BODY_BYTES} bytes"})
                try:
                    document = msgspec.json.decode(raw or b"{}")
                except msgspec.DecodeError as exc:
                    return error_response(400, {"code": "bad_request", "message": f"the body is not JSON ({exc})"})
            try:
                answer = await run_in_threadpool(work, request, document)
            except SpecError as exc:
                status = 404 if isinstance(exc, NotFound) else 400
                return error_response(status, {"code": exc.code, "field": exc.field, "message": exc.problem})
            except FootfallError as exc:
                return error_response(400, {"code": exc.code, "message": str(exc)})
            return json_response(answer)

        return endpoint

    def limit_of(request: Request, default: int = 1000) -> int | None:
        text = request.query_params.get("limit", str(default))
        try:
            limit = int(text)
        except ValueError:
            raise SpecError("limit", f"give a whole number (0 for all); got {text!r}") from None
        if limit < 0:
            raise SpecError("limit", f"give a whole number (0 for all); got {limit}")
        return limit or None

    def flag(request: Request, name: str) -> bool:
        return request.query_params.get(name, "").lower() in ("1", "true", "yes")

    def saved_json(segment_id: str) -> dict[str, Any]:
        saved = catalog.get(segment_id)
        return {**saved.definition().to_json(), "created_at": saved.created_at.isoformat(), "updated_at": saved.updated_at.isoformat()}

    # -- segments -------------------------------------------------------------------

    def list_segments(request: Request, _: Any) -> Any:
        return {"segments": [saved_json(saved.id) for saved in catalog.segments()]}

    def create_segment(request: Request, document: Any) -> Any:
        definition = parse_definition(document)
        preview = manage.preview(database, catalog, definition, live=live)
        catalog.save(definition, replace=flag(request, "replace"))
        return {"segment": saved_json(definition.id), "preview": preview.to_json()}

    def preview_segment(request: Request, document: Any) -> Any:
        return {"preview": manage.preview(database, catalog, parse_definition(document), live=live).to_json()}

    def show_segment(request: Request, _: Any) -> Any:
        segment_id = request.path_params["segment"]
        definition = catalog.get(segment_id).definition()
        preview = manage.preview(database, catalog, definition, live=live)
        return {"segment": saved_json(segment_id), "preview": preview.to_json()}

    def segment_members(request: Request, _: Any) -> Any:
        segment_id = request.path_params["segment"]
        members = manage.members_now(database, catalog, segment_id)
        limit = limit_of(request)
        return {"segment": segment_id, "size": len(members), "members": members[:limit] if limit else members}

    def delete_segment(request: Request, _: Any) -> Any:
        catalog.delete(request.path_params["segment"])
        return {"deleted": request.path_params["segment"]}

    def overlap(request: Request, _: Any) -> Any:
        sizes, pairs = manage.overlap_table(database, catalog, live=live)
        return {
            "sizes": sizes,
            "overlaps": [
                {"segment": pair.segment, "other": pair.other, "both": pair.both, "share": round(pair.share, 4)} for pair in pairs
            ],
        }

    def templates(request: Request, _: Any) -> Any:
        return {"templates": [template().to_json() for template in TEMPLATES.values()]}

    # -- cohorts --------------------------------------------------------------------

    def list_cohorts(request: Request, _: Any) -> Any:
        return {"cohorts": [msgspec.to_builtins(cohort) for cohort in catalog.cohorts()]}

    def create_cohort(request: Request, document: Any) -> Any:
        if not isinstance(document, dict):
            raise SpecError("$", 'give an object: {"id": ..., "from": {"segment": ...} | {"funnel": {...}, "step": N} | {"csv": "..."}}')
        cohort_id: Any = document.get("id")
        origin: Any = document.get("from")
        name, replace = document.get("name", ""), bool(document.get("replace", False))
        if not isinstance(name, str):
            raise SpecError("name", f"give text; got {name!r}")
        if not isinstance(origin, dict) or len({"segment", "funnel", "csv"} & set(origin)) != 1:
            raise SpecError("from", 'give exactly one of {"segment": id}, {"funnel": spec, "step": N}, {"csv": text}')
        unknown: list[str] = []
        if "segment" in origin:
            cohort = manage.cohort_from_segment(database, catalog, cohort_id, origin["segment"], name=name, replace=replace)
        elif "funnel" in origin:
            outcome = origin.get("outcome", "converted")
            cohort = manage.cohort_from_funnel(
                database, catalog, cohort_id, origin["funnel"], step=origin.get("step", 0), outcome=outcome, name=name, replace=replace
            )
        else:
            if not isinstance(origin["csv"], str):
                raise SpecError("from.csv", "give the file's text")
            imported = manage.cohort_from_csv(
                database, catalog, cohort_id, origin["csv"], source=str(origin.get("file", "upload")), name=name, replace=replace
            )
            cohort, unknown = imported.cohort, imported.unknown
        return {"cohort": msgspec.to_builtins(cohort), "unknown_ids": unknown[:100], "unknown_count": len(unknown)}

    def cohort_members(request: Request, _: Any) -> Any:
        cohort_id = request.path_params["cohort"]
        members = catalog.cohort_members(database, cohort_id)
        limit = limit_of(request)
        return {"cohort": cohort_id, "size": len(members), "members": members[:limit] if limit else members}

    def delete_cohort(request: Request, _: Any) -> Any:
        catalog.delete_cohort(database, request.path_params["cohort"])
        return {"deleted": request.path_params["cohort"]}

    return [
        Route("/v1/segments", guarded(list_segments), methods=["GET"]),
        Route("/v1/segments", guarded(create_segment, body=True), methods=["POST"]),
        Route("/v1/segments/preview", guarded(preview_segment, body=True), methods=["POST"]),
        Route("/v1/segments/overlap", guarded(overlap), methods=["GET"]),
        Route("/v1/segments/templates", guarded(templates), methods=["GET"]),
        Route("/v1/segments/{segment}", guarded(show_segment), methods=["GET"]),
        Route("/v1/segments/{segment}", guarded(delete_segment), methods=["DELETE"]),
        Route("/v1/segments/{segment}/members", guarded(segment_members), methods=["GET"]),
        Route("/v1/cohorts", guarded(list_cohorts), methods=["GET"]),
        Route("/v1/cohorts", guarded(create_cohort, body=True), methods=["POST"]),
        Route("/v1/cohorts/{cohort}", guarded(delete_cohort), methods=["DELETE"]),
        Route("/v1/cohorts/{cohort}/members", guarded(cohort_members), methods=["GET"]),
    ]
