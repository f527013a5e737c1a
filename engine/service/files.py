"""Uploaded contexts: streamed to disk chunk by chunk under a size limit, then made text.

A file lives at ``<data dir>/files/<file id>/<file name>`` (the name is kept because its
extension decides how the sandbox loads it: ``.json`` parsed, ``.jsonl`` a list, else text).
Right after the upload, on the host:

- a PDF, DOCX or HTML file is converted to text (``<file name>.txt``, the original is
  deleted); one that cannot be read is refused with 422 naming it;
- a zip or tar archive (``.zip``, ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``)
  is unpacked into the folder ``<name without the extension>/`` (regular files only, at most
  the upload limit in total) and becomes a folder context: ``context`` is a dict by path,
  with ``.gitignore`` honoured and binary files skipped when a job runs.

Files and their folders are private to the service user (0600/0700): the job's preparation
copies them beside the run directories instead of bind-mounting them, so the data dir does
not have to be visible to the Docker daemon at the same path. On a shared (PostgreSQL) store
the content is copied into the database as well, for the other replicas: the text of a
converted document, an archive as uploaded (each replica unpacks it when a job needs it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

from engine.contexts import ContextSpec, Source, document_kind
from engine.contexts.archive import archive_stem
from engine.contexts.binary import SNIFF_BYTES, looks_binary
from engine.contexts.isolate import Extractor
from engine.errors import ContextError
from engine.log import get_logger
from engine.service.replicas import local_file, share_file
from engine.service.requests import ApiError
from engine.service.store import FileRecord, JobStore, KeyLimits, StoreError

log = get_logger(__name__)

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
    quota: int | None = None,
) -> FileRecord:
    """Write ``chunks`` to a new file; refuse (413) past ``max_bytes`` and leave nothing behind.

    The record is written with the owner's storage ``quota`` checked in the same transaction
    (:class:`~engine.service.store.QuotaExceeded` when it would pass it, nothing kept)."""
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
    try:
        path = await anyio.to_thread.run_sync(_to_text, target, max_bytes)
        # Replicas on a shared store run jobs with this file too: copy it into the database
        # (an archive as uploaded, so the database holds it compressed).
        await anyio.to_thread.run_sync(
            share_file, store, file_id, target if path.is_dir() else path
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if path.is_dir():
        target.unlink()
    record = FileRecord(file_id, owner, target.name, size, path, time.time())
    try:
        # What it takes on disk (an archive unpacked, a document as text) counts for the quota.
        stored = await anyio.to_thread.run_sync(_tree_bytes, folder)
        store.add_file(record, stored_bytes=stored, limits=KeyLimits(storage_bytes=quota))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        if store.shared:
            with contextlib.suppress(StoreError):
                store.delete_blob(file_id)
        raise
    return record


#: What a file or folder costs the disk beyond its bytes (an inode, a directory entry, at
#: least a block), counted for the storage quota: else an archive of 100,000 empty files
#: counts as 0 bytes, and repeated uploads of it exhaust the host's inodes.
ENTRY_OVERHEAD_BYTES = 4096


def _tree_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        if path.is_symlink():
            continue
        if path.is_file():
            total += path.stat().st_size + ENTRY_OVERHEAD_BYTES
        elif path.is_dir():
            total += ENTRY_OVERHEAD_BYTES
    return total


def _to_text(upload: Path, max_bytes: int) -> Path:
    """Convert a document to text or unpack an archive; return what the context is."""
    try:
        stem = archive_stem(upload.name)
        if stem is not None:
            folder = upload.parent / (stem or "archive")
            with Extractor() as extractor:  # zipfile/tarfile parse hostile bytes too
                unpacked = extractor.unpack(upload, folder, max_bytes)
            log.info("upload.unpacked", files=unpacked.files, skipped=unpacked.skipped)
            return folder
        kind = document_kind(upload.name)
        if kind is None:
            with open(upload, "rb") as handle:
                if looks_binary(handle.read(SNIFF_BYTES)):
                    raise ContextError(
                        f"{upload.name} is a binary file, not text, PDF, DOCX, HTML or an "
                        "archive; convert it to text before uploading"
                    )
            return upload
        converted = upload.with_name(upload.name + ".txt")
        with Extractor() as extractor:  # a separate process under memory and time limits
            extractor.extract(upload, kind, upload.name, converted, 0o600)
    except ContextError as exc:
        raise ApiError(422, "unreadable_context", str(exc), "file") from exc
    upload.unlink()
    return converted


def local_record(
    store: JobStore, record: FileRecord, files_dir: Path, max_bytes: int
) -> FileRecord:
    """``record`` with the path of its context on this replica: fetched from the shared
    store (and an archive unpacked) when it was uploaded to another one."""
    if record.path.exists():
        return record
    folder = files_dir / record.id
    local = folder / record.path.name
    if not local.exists():
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if archive_stem(record.filename) is None:
            local_file(store, record.id, local)
        else:
            archive = local_file(store, record.id, folder / record.filename)
            with Extractor() as extractor:
                extractor.unpack(archive, local, max_bytes)
            archive.unlink()
    return dataclasses.replace(record, path=local)


def context_spec(records: list[FileRecord]) -> ContextSpec:
    """The context of a job naming ``records``: one file or folder, or several keyed by
    file name (``context`` is then a dict by path; same names get the file id in front)."""
    if len(records) == 1:
        return ContextSpec((Source(records[0].path, records[0].filename),))
    sources: list[Source] = []
    seen: set[str] = set()
    for record in records:
        key = archive_stem(record.filename) or record.filename
        if key in seen:
            key = f"{record.id}-{key}"
        seen.add(key)
        sources.append(Source(record.path, key))
    return ContextSpec(tuple(sources))


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
        "context_format": _format(record),
    }


def _format(record: FileRecord) -> str:
    """How the upload became a context: text as sent, text converted from a document, or a
    folder unpacked from an archive."""
    if archive_stem(record.filename) is not None:
        return "archive"
    return document_kind(record.filename) or "text"
