"""The starlette application: routes by resource, error handling, lifespan.

The app's lifespan enters the :class:`JobService` (which opens the shared model endpoint,
recovers jobs after a restart and starts queued ones) and leaves it on shutdown. Routes live
in ``engine.service.routes`` (jobs, files, openai, admin). Every ``/v1`` route needs
``Authorization: Bearer <key>``; ``/metrics`` needs one of the operator's metrics keys;
``/healthz`` (which says nothing about tenants), ``/openapi.json`` and the static viewer need
no key.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from engine.log import get_logger
from engine.service.auth import ApiKeys
from engine.service.jobs import JobService
from engine.service.routes import admin, files, jobs, openai, sessions
from engine.service.routes.admin import viewer_dir
from engine.service.web import Api, OpenRequests, job_json

log = get_logger(__name__)

__all__ = ["create_app", "job_json", "viewer_dir"]


def create_app(
    service: JobService, keys: ApiKeys, metrics_keys: ApiKeys | None = None
) -> Starlette:
    """Build the application around a (not yet entered) job service.

    ``metrics_keys`` are the operator's keys for ``/metrics`` (None: it is closed).
    """
    limit = service.settings.max_streams_per_key
    api = Api(service, keys, int(time.time()), metrics_keys, OpenRequests(limit))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with service:
            log.info("service.ready", data_dir=str(service.settings.data_dir))
            yield

    return Starlette(
        routes=[
            *admin.routes(api),
            *openai.routes(api),
            *files.routes(api),
            *jobs.routes(api),
            *sessions.routes(api),
        ],
        lifespan=lifespan,
        exception_handlers={404: _http_error, 405: _http_error},
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    messages = {
        404: f"no route {request.url.path}; see GET /openapi.json",
        405: f"method {request.method} is not allowed on {request.url.path}",
    }
    message = messages.get(status, getattr(exc, "detail", "error"))
    return JSONResponse(
        {"error": {"type": "not_found" if status == 404 else "http_error", "message": message}},
        status_code=status,
    )
