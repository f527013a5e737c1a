"""Uploaded contexts: streamed to disk chunk by chunk under a size limit.

A file lives at ``<data dir>/files/<file id>/<file name>`` (the name is kept because its
extension decides how the sandbox loads it: ``.json`` parsed, ``.jsonl`` a list, else text).
Files and their folders are private to the service user (0600/0700): the sandbox then copies
the file into the task's run directory instead of bind-mounting it, so the data dir does not
have to be visible to the Docker daemon at the same path. On a shared (PostgreSQL) store the
content is copied into the database as well, for the other replicas.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

from engine.service.replicas import share_file
from engine.service.requests import ApiError
from engine.service.store import FileRecord, JobStore

_NAME_OK = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str | None) -> str:
    """A file name safe on disk and in a container path; keeps the extension."""
    base = os.path.basename((name or "").replace("\\", "/")).strip()
    cleaned = _NAME_OK.sub("_", base).strip("._") or "context.txt"
    return cleaned[:120]


def new_file_id() -> str:
    return "file-" + secrets.token_hex(10)


async def save_upload(
    store: JobStore,
    files_dir: Path,
    *,
    owner: str,
    filename: str | None,
    chunks: AsyncIterator[bytes],
    max_bytes: int,
    declared_length: int | None = None,
) -> FileRecord:
    """Write ``chunks`` to a new file; refuse (413) past ``max_bytes`` and leave nothing behind."""
    if declared_length is not None and declared_length > max_bytes:
        raise _too_large(max_bytes)
    file_id = new_file_id()
    folder = files_dir / file_id
    folder.mkdir(parents=True, mode=0o700)
    target = folder / safe_filename(filename)
    size = 0
    try:
        async with await anyio.open_file(target, "xb") as handle:
            os.chmod(target, 0o600)
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(max_bytes)
                await handle.write(chunk)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if size == 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise ApiError(
            400, "invalid_request_error", "the upload is empty; send the file as the request body"
        )
    record = FileRecord(file_id, owner, target.name, size, target, time.time())
    # Replicas on a shared store run jobs with this file too: copy it into the database.
    await anyio.to_thread.run_sync(share_file, store, file_id, target)
    store.add_file(record)
    return record


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(
        413,
        "file_too_large",
        f"the upload is larger than the limit of {max_bytes:,} bytes; split the context or "
        "start the service with a larger --max-upload",
    )


def file_json(record: FileRecord) -> dict[str, object]:
    """The API representation of an uploaded file (OpenAI-like)."""
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "filename": record.filename,
        "created_at": int(record.created_at),
        "purpose": "context",
    }
