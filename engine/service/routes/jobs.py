"""``/v1/jobs``: submit, list, read, cancel, stream events, download the trajectory."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.service import openai_compat as oa
from engine.service.requests import ApiError, invalid, parse_job_request, parse_page
from engine.service.web import Api, Idle, Progress, follow_job, job_json


def routes(api: Api) -> list[Route]:
    """The job routes of ``api``."""
    service, store = api.service, api.service.store

    async def create_job(request: Request, owner: str) -> Response:
        job = api.submit(owner, parse_job_request(await api.read_json(request, owner)), "job")
        return JSONResponse(job_json(job), status_code=201)

    async def list_jobs(request: Request, owner: str) -> Response:
        status = request.query_params.get("status")
        page = parse_page(request.query_params)
        if page.after is not None:
            api.own_job(page.after, owner)  # 404 for an id that is not this key's
        jobs = store.jobs(status=status, owner=owner, after=page.after, limit=page.limit + 1)
        return JSONResponse(page.body([job_json(j) for j in jobs]))

    async def get_job(request: Request, owner: str) -> Response:
        return JSONResponse(job_json(api.own_job(request.path_params["job_id"], owner)))

    async def cancel_job(request: Request, owner: str) -> Response:
        job = api.own_job(request.path_params["job_id"], owner)
        if job.final:
            raise ApiError(
                409, "conflict", f"job {job.id} already ended ({job.status}); nothing to cancel"
            )
        service.cancel(job.id)
        # Waiting for the job to stop is a courtesy that polls the store: counted with the
        # key's open requests, and skipped (202 at once) when the key holds its limit, so
        # thousands of parallel cancels cannot poll the store on the loop every key shares.
        if api.open_requests.room(owner):
            with api.open_requests.hold(owner), anyio.move_on_after(10):
                job = await service.wait(job.id, poll_s=0.5)
        else:
            job = api.own_job(job.id, owner)
        return JSONResponse(job_json(job), status_code=202 if not job.final else 200)

    async def delete_job(request: Request, owner: str) -> Response:
        job = api.own_job(request.path_params["job_id"], owner)
        if api.open_requests.room(owner):  # the same courtesy wait as for a cancel
            with api.open_requests.hold(owner):
                await service.delete(job.id)
        else:
            await service.delete(job.id, wait_s=0)
        return JSONResponse({"id": job.id, "object": "job", "deleted": True})

    async def trajectory(request: Request, owner: str) -> Response:
        job = api.own_job(request.path_params["job_id"], owner)
        lines = [json.dumps(e, ensure_ascii=False) + "\n" for _, e in store.events(job.id)]
        return Response("".join(lines), media_type="application/x-ndjson")

    async def events(request: Request, owner: str) -> Response:
        job = api.own_job(request.path_params["job_id"], owner)
        after_text = request.headers.get("last-event-id") or request.query_params.get("after")
        try:
            after = int(after_text or 0)
        except ValueError as exc:
            raise invalid('"after" / Last-Event-ID must be an event number', "after") from exc

        async def stream() -> AsyncIterator[str]:
            async for item in follow_job(service, job.id, after):
                if isinstance(item, Progress):
                    kind = item.event.get("type", "event")
                    yield f"id: {item.seq}\nevent: {kind}\n" + oa.sse_data(item.event)
                elif isinstance(item, Idle):
                    yield oa.sse_comment(f"keepalive status={item.status}")
                else:
                    yield "event: end\n" + oa.sse_data(job_json(item))

        return api.stream(owner, stream())

    return [
        Route("/v1/jobs", api.authed(create_job), methods=["POST"]),
        Route("/v1/jobs", api.authed(list_jobs), methods=["GET"]),
        Route("/v1/jobs/{job_id}", api.authed(get_job), methods=["GET"]),
        Route("/v1/jobs/{job_id}", api.authed(delete_job), methods=["DELETE"]),
        Route("/v1/jobs/{job_id}/cancel", api.authed(cancel_job), methods=["POST"]),
        Route("/v1/jobs/{job_id}/events", api.authed(events), methods=["GET"]),
        Route("/v1/jobs/{job_id}/trajectory", api.authed(trajectory), methods=["GET"]),
    ]
