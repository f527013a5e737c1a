"""Routes without a tenant: ``/healthz``, ``/metrics``, ``/openapi.json``, the viewer."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.service.auth import ENV_METRICS_KEYS
from engine.service.openapi import openapi_document
from engine.service.requests import ApiError
from engine.service.web import Api, error_response, unauthenticated


def viewer_dir() -> Path:
    """The folder with the trajectory viewer's static files."""
    return Path(str(resources.files("engine.service") / "viewer"))


def routes(api: Api) -> list[BaseRoute]:
    """Health, metrics, the API document and the static viewer."""
    service = api.service
    store, settings = service.store, service.settings

    async def healthz(request: Request) -> Response:
        # Anyone may ask: say nothing about tenants (their jobs, counts or load).
        body = {"status": "ok" if service.ready else "starting"}
        return JSONResponse(body, status_code=200 if service.ready else 503)

    async def metrics(request: Request) -> Response:
        # Counts over every tenant: for the operator's key only, never for tenants' keys.
        keys = api.metrics_keys
        if keys is None:
            return error_response(
                ApiError(
                    403,
                    "permission_denied",
                    f"/metrics is closed: start the service with {ENV_METRICS_KEYS} set to the "
                    "operator's scrape key(s) and send 'Authorization: Bearer <key>'",
                )
            )
        if keys.authenticate(request.headers.get("authorization")) is None:
            return error_response(unauthenticated(ENV_METRICS_KEYS))
        text = service.metrics.render(
            store.counts_by_status(),
            {
                "sandbox_slots_in_use": service.slots.in_use,
                "sandbox_slots_waiting": service.slots.waiting,
                "sandbox_slots_total": settings.max_sandboxes,
                **service.pool_gauges(),
            },
        )
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(settings.ceilings))

    async def viewer_root(request: Request) -> Response:
        return RedirectResponse("/viewer/index.html")

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/viewer", viewer_root, methods=["GET"]),
        Mount(
            "/viewer",
            app=_Hardened(StaticFiles(directory=viewer_dir(), html=True)),
            name="viewer",
        ),
    ]


#: The viewer's page runs only its own script and talks only to this service. It renders
#: every string as text; should that ever slip, a script injected through a trajectory (which
#: a model or a document wrote) could neither run inline nor send the API key it reads from
#: the URL or the session anywhere, and no other site can frame the page's key form.
VIEWER_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


class _Hardened:
    """An ASGI app that adds :data:`VIEWER_HEADERS` to every response of ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in VIEWER_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, with_headers)
