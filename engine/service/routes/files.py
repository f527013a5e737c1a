"""``/v1/files``: upload a context file and read its record."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.service.files import file_json, save_upload
from engine.service.requests import ApiError
from engine.service.web import Api


def routes(api: Api) -> list[Route]:
    """The file routes of ``api``."""
    store, settings = api.service.store, api.service.settings

    async def upload_file(request: Request, owner: str) -> Response:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/"):
            raise ApiError(
                415,
                "unsupported_media_type",
                "send the file as the raw request body (Content-Type: application/octet-stream) "
                "with ?filename=NAME; multipart uploads are not supported",
            )
        length = request.headers.get("content-length")
        record = await save_upload(
            store,
            settings.files_dir,
            owner=owner,
            filename=request.query_params.get("filename"),
            chunks=request.stream(),
            max_bytes=settings.max_upload_bytes,
            declared_length=int(length) if length and length.isdigit() else None,
        )
        return JSONResponse(file_json(record), status_code=201)

    async def get_file(request: Request, owner: str) -> Response:
        record = store.get_file(request.path_params["file_id"])
        if record is None or record.owner != owner:
            raise ApiError(404, "not_found", "no such file; upload it with POST /v1/files")
        return JSONResponse(file_json(record))

    return [
        Route("/v1/files", api.authed(upload_file), methods=["POST"]),
        Route("/v1/files/{file_id}", api.authed(get_file), methods=["GET"]),
    ]
