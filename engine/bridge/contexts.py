"""Child contexts for ``rlm_query``: streamed through the bridge into private host files.

The sandbox has no host-writable storage, so a child context reaches the host only as the
body of ``POST /v1/contexts``. The bridge writes the body, as it arrives, to a file in a
private directory (mode 0700, outside the run directory) and counts every byte: the files
this store holds at once (uploaded and not yet used, or handed to a running child) may total
at most ``max_bytes``, and at most ``max_items`` of them may wait unused. An upload past a
cap is refused and its partial file deleted at once, so what one sandbox can put on the
host's disk is bounded by the store, not by anything the sandbox does.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

import anyio

from engine.bridge.protocol import invalid
from engine.errors import BridgeError, BridgeRequestError

#: Contexts uploaded but not yet used by an ``rlm_query``, at most.
MAX_PENDING = 16
_WRITE_CHUNK = 1 << 20


class ChildContextStore:
    """Owns the private files of child contexts for one bridge server."""

    def __init__(self, *, max_bytes: int, max_pending: int = MAX_PENDING) -> None:
        if max_bytes <= 0 or max_pending <= 0:
            raise BridgeError("the child-context store needs positive limits")
        self.max_bytes = max_bytes
        self.max_pending = max_pending
        self._root: Path | None = None
        self._pending: dict[str, tuple[Path, int]] = {}
        #: bytes on disk right now (pending, in use, or being received).
        self.used_bytes = 0
        #: the most bytes this store ever held at once (for tests and the attack table).
        self.peak_bytes = 0

    def open(self) -> None:
        """Create the private directory for the files."""
        self._root = Path(tempfile.mkdtemp(prefix="rlm-bridge-"))

    def close(self) -> None:
        """Delete the private directory and every file still in it."""
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
        self._pending.clear()
        self.used_bytes = 0

    def receiver(self, suffix: str) -> ContextUpload:
        """Start receiving one context; refuses at once when too many wait unused."""
        if self._root is None:
            raise BridgeError("the bridge's child-context store is closed")
        if len(self._pending) >= self.max_pending:
            raise BridgeRequestError(
                429,
                "too_many_contexts",
                f"{self.max_pending} uploaded child contexts are waiting for an rlm_query; "
                "use or drop them before uploading more",
            )
        return ContextUpload(self, self._root / f"{secrets.token_hex(12)}{suffix}")

    def take(self, context_id: str) -> Path:
        """Hand the file of ``context_id`` to its ``rlm_query`` (once); :meth:`release` it after."""
        try:
            path, _size = self._pending.pop(context_id)
        except KeyError:
            raise invalid(
                f"context_id {context_id!r} is unknown or already used; upload the context "
                "with POST /v1/contexts right before the rlm_query that uses it"
            ) from None
        return path

    async def release(self, path: Path) -> None:
        """Delete a taken file and give its bytes back."""
        size = await anyio.to_thread.run_sync(_unlink_size, path)
        self._give_back(size)

    def _register(self, context_id: str, path: Path, size: int) -> None:
        self._pending[context_id] = (path, size)

    def check_room(self, size: int) -> None:
        """Refuse (413) a context of ``size`` bytes that would not fit now."""
        if self.used_bytes + size > self.max_bytes:
            raise BridgeRequestError(
                413,
                "context_too_large",
                f"the child contexts of this sandbox may hold {self.max_bytes / (1 << 20):,.1f} "
                "MiB on the host at once, and this one does not fit; pass a smaller part of the "
                "context to "
                "rlm_query (the limit is RLM_SANDBOX_DISK)",
            )

    def _reserve(self, size: int) -> None:
        self.check_room(size)
        self.used_bytes += size
        self.peak_bytes = max(self.peak_bytes, self.used_bytes)

    def _give_back(self, size: int) -> None:
        self.used_bytes = max(0, self.used_bytes - size)


class ContextUpload:
    """One context being received: write chunks, then :meth:`finish` or :meth:`abort`."""

    def __init__(self, store: ChildContextStore, path: Path) -> None:
        self._store = store
        self.path = path
        self.size = 0
        self._buffer = bytearray()
        self._file = path.open("xb")  # a new private file: never follows anything
        # The directory (0700) keeps other host users out; a readable file lets the child's
        # sandbox (another uid) read it where it is bind-mounted, without a copy.
        os.fchmod(self._file.fileno(), 0o644)

    async def write(self, data: bytes) -> None:
        """Count ``data`` against the store's cap (refusing past it), then buffer or write it."""
        self._store._reserve(len(data))
        self.size += len(data)
        self._buffer += data
        if len(self._buffer) >= _WRITE_CHUNK:
            await self._flush()

    async def finish(self) -> str:
        """Close the file and return the new context's id."""
        await self._flush()
        self._file.close()
        context_id = self.path.stem
        self._store._register(context_id, self.path, self.size)
        return context_id

    async def abort(self) -> None:
        """Delete the partial file and give its bytes back (also on cancellation)."""
        with anyio.CancelScope(shield=True):
            self._file.close()
            await anyio.to_thread.run_sync(_unlink_size, self.path)
            self._store._give_back(self.size)
            self._buffer.clear()

    async def _flush(self) -> None:
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            await anyio.to_thread.run_sync(self._file.write, data)


def _unlink_size(path: Path) -> int:
    try:
        size = os.stat(path).st_size
        os.unlink(path)
    except FileNotFoundError:
        return 0
    return size
