"""``/v1/sessions``: several queries on one live kernel (see ``engine.service.sessions``)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.service.requests import invalid, parse_page
from engine.service.store import SessionRecord
from engine.service.web import Api, job_json


def session_json(record: SessionRecord) -> dict[str, Any]:
    """The API representation of a session (no host paths)."""
    request = {k: v for k, v in record.request.items() if k != "context_path"}
    request["inline_context"] = "context_path" in record.request
    return {
        "id": record.id,
        "object": "session",
        "status": record.status,
        "created_at": record.created_at,
        "last_active": record.last_active,
        "closed_at": record.closed_at,
        "closed_reason": record.closed_reason,
        "request": request,
        "turns": record.turns,
        "links": {
            "self": f"/v1/sessions/{record.id}",
            "messages": f"/v1/sessions/{record.id}/messages",
        },
    }


def routes(api: Api) -> list[Route]:
    """The session routes of ``api``."""
    service = api.service
    sessions = service.sessions

    async def create(request: Request, owner: str) -> Response:
        record = sessions.create(owner, await api.read_json(request, owner))
        return JSONResponse(session_json(record), status_code=201)

    async def list_sessions(request: Request, owner: str) -> Response:
        page = parse_page(request.query_params)
        if page.after is not None:
            sessions.own(page.after, owner)  # 404 for an id that is not this key's
        listed = service.store.sessions(
            owner=owner,
            status=request.query_params.get("status"),
            after=page.after,
            limit=page.limit + 1,
        )
        return JSONResponse(page.body([session_json(s) for s in listed]))

    async def get(request: Request, owner: str) -> Response:
        return JSONResponse(session_json(sessions.own(request.path_params["session_id"], owner)))

    async def end(request: Request, owner: str) -> Response:
        record = sessions.own(request.path_params["session_id"], owner)
        await sessions.end(record.id)
        return JSONResponse(session_json(sessions.own(record.id, owner)))

    async def message(request: Request, owner: str) -> Response:
        body = await api.read_json(request, owner)
        wait = body.get("wait", True) if isinstance(body, dict) else True
        if not isinstance(wait, bool):
            raise invalid('"wait" must be true or false', "wait")
        if not wait:
            job = sessions.submit_message(owner, request.path_params["session_id"], body)
            return JSONResponse(job_json(job), status_code=202)
        # Waiting for the answer holds the request open: counted (checked before queueing).
        with api.open_requests.hold(owner):
            job = sessions.submit_message(owner, request.path_params["session_id"], body)
            job = await service.wait(job.id, poll_s=1.0)
        return JSONResponse(job_json(job))

    return [
        Route("/v1/sessions", api.authed(create), methods=["POST"]),
        Route("/v1/sessions", api.authed(list_sessions), methods=["GET"]),
        Route("/v1/sessions/{session_id}", api.authed(get), methods=["GET"]),
        Route("/v1/sessions/{session_id}", api.authed(end), methods=["DELETE"]),
        Route("/v1/sessions/{session_id}/messages", api.authed(message), methods=["POST"]),
    ]
