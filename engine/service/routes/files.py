"""``/v1/files``: upload a context file and read its record."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.service.files import file_json, save_upload
from engine.service.jobs import JobService, quota_exceeded
from engine.service.requests import ApiError
from engine.service.store import FileRecord, QuotaExceeded
from engine.service.web import Api


def routes(api: Api) -> list[Route]:
    """The file routes of ``api``."""
    service = api.service
    store, settings = service.store, service.settings

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
        declared = int(length) if length and length.isdigit() else None
        if declared is not None:
            service.check_storage(owner, declared)
        quota = _QuotaCounter(service, owner)
        # An upload in progress holds a connection and a file for as long as the client
        # sends (slowly, or never finishing): counted with the key's other open requests.
        release = api.open_requests.acquire(owner)
        try:
            # The stream is checked chunk by chunk against this replica's count (to stop a
            # large upload early); the record, as unpacked, against the quota atomically.
            record = await save_upload(
                store,
                settings.files_dir,
                owner=owner,
                filename=request.query_params.get("filename"),
                chunks=quota.count(request.stream()),
                max_bytes=settings.max_upload_bytes,
                declared_length=declared,
                quota=settings.max_storage_per_key,
            )
        except QuotaExceeded as exc:
            raise quota_exceeded(exc.quota, exc.left) from exc
        finally:
            release()
            quota.done()  # stored (now in the store's sum) or removed
        return JSONResponse(file_json(record), status_code=201)

    def own_file(request: Request, owner: str) -> FileRecord:
        record = store.get_file(request.path_params["file_id"])
        if record is None or record.owner != owner:
            raise ApiError(404, "not_found", "no such file; upload it with POST /v1/files")
        return record

    async def get_file(request: Request, owner: str) -> Response:
        return JSONResponse(file_json(own_file(request, owner)))

    async def delete_file(request: Request, owner: str) -> Response:
        record = own_file(request, owner)
        await service.delete_file(record.id)
        return JSONResponse({"id": record.id, "object": "file", "deleted": True})

    return [
        Route("/v1/files", api.authed(upload_file), methods=["POST"]),
        Route("/v1/files/{file_id}", api.authed(get_file), methods=["GET"]),
        Route("/v1/files/{file_id}", api.authed(delete_file), methods=["DELETE"]),
    ]


class _QuotaCounter:
    """Counts an upload in progress against its owner's storage quota, chunk by chunk.

    Uploads in progress count too, so parallel uploads cannot pass the quota together.
    """

    def __init__(self, service: JobService, owner: str) -> None:
        self.service, self.owner, self.counted = service, owner, 0

    async def count(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self.service.check_storage(self.owner, len(chunk))
            self.service.uploading(self.owner, len(chunk))
            self.counted += len(chunk)
            yield chunk

    def done(self) -> None:
        self.service.uploading(self.owner, -self.counted)
        self.counted = 0
