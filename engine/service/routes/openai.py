"""``/v1/models`` and ``/v1/chat/completions``: the RLM as an OpenAI-compatible chat model."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.service import openai_compat as oa
from engine.service.jobs import JobService
from engine.service.store import JobRecord
from engine.service.web import Api, HeldStream, Idle, Progress, error_response, follow_job

#: The header that makes a chat request a message of an existing session (POST /v1/sessions).
SESSION_HEADER = "x-rlm-session"


def routes(api: Api) -> list[Route]:
    """The OpenAI-compatible routes of ``api``."""
    service = api.service

    async def models(request: Request, owner: str) -> Response:
        body = oa.models_body(service.root_model_name, api.started, service.models.names)
        return JSONResponse(body)

    async def chat(request: Request, owner: str) -> Response:
        chat_request = oa.parse_chat_request(await api.read_json(request, owner))
        session_id = request.headers.get(SESSION_HEADER)
        # Counted before the job is queued: a request refused for the key's open requests
        # must not leave a job running that nobody waits for.
        release = api.open_requests.acquire(owner)
        try:
            if session_id:
                # A session's message: the last user message is the query, on its live kernel.
                body = {
                    "query": chat_request.last_user,
                    "output_schema": chat_request.job.output_schema,
                }
                job = service.sessions.submit_message(owner, session_id, body)
            else:
                job = api.submit(owner, chat_request.job, "chat")
        except BaseException:
            release()
            raise
        if chat_request.stream:
            return HeldStream(_chat_stream(service, job.id, chat_request), release)
        try:
            job = await _wait_or_disconnect(service, request, job.id)
        finally:
            release()
            current = service.store.get_job(job.id)
            if current is not None and not current.final:
                service.cancel(job.id)  # the client went away: stop paying for the run
        failure = oa.job_failure(job)
        if failure is not None:
            return error_response(failure)
        return JSONResponse(oa.completion_body(job, chat_request.model))

    return [
        Route("/v1/models", api.authed(models), methods=["GET"]),
        Route("/v1/chat/completions", api.authed(chat), methods=["POST"]),
    ]


async def _wait_or_disconnect(service: JobService, request: Request, job_id: str) -> JobRecord:
    """Wait for the job; give up (and return the current record) if the client disconnects."""
    while True:
        with anyio.move_on_after(1.0):
            return await service.wait(job_id, poll_s=1.0)
        if await request.is_disconnected():
            job = service.store.get_job(job_id)
            assert job is not None
            return job


async def _chat_stream(
    service: JobService, job_id: str, chat: oa.ChatRequest
) -> AsyncIterator[str]:
    finished = False
    try:
        yield oa.chunk(job_id, chat.model, {"role": "assistant", "content": ""})
        job: JobRecord | None = None
        async for item in follow_job(service, job_id):
            if isinstance(item, Progress):
                yield oa.sse_comment(oa.progress_text(item.event))
            elif isinstance(item, Idle):
                yield oa.sse_comment(f"rlm keepalive status={item.status}")
            else:
                job = item
        finished = True
        failure = oa.job_failure(job) if job is not None else oa.job_gone(job_id)
        if failure is not None:
            yield oa.sse_data(failure.body())
        elif job is not None:
            for line in oa.answer_chunks(job, chat.model, chat.include_usage):
                yield line
        yield oa.sse_data("[DONE]")
    finally:
        if not finished:
            service.cancel(job_id)
