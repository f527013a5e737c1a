"""Hand-over of child contexts written by the sandbox to ``handler.rlm_query``.

The sandbox can write anything into ``children/`` (including symlinks to host files, FIFOs, or
a symlink replacing ``children/`` itself), and can change a file after the bridge checked it.
So the bridge never passes a sandbox-controlled path on: it opens the file with
``O_NOFOLLOW`` relative to a directory fd also opened with ``O_NOFOLLOW``, checks that it is a
regular file, and copies it into a private directory the sandbox cannot see. The handler gets
the private copy; both files are deleted after the call. The copy is capped: a sparse file
costs the sandbox nothing to write but its full length to copy.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO

import anyio

from engine.bridge.protocol import invalid
from engine.errors import BridgeError, BridgeRequestError

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted by the sandbox must not hang the bridge.
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class ChildContexts:
    """Owns the private copies of child contexts for one bridge server."""

    def __init__(self, children_dir: Path, *, max_bytes: int | None = None) -> None:
        self._children_dir = children_dir
        self._max_bytes = max_bytes
        self._private: Path | None = None

    def open(self) -> None:
        """Create ``children/`` if missing and the private directory for the copies."""
        try:
            self._children_dir.mkdir(parents=True, exist_ok=True)
            # Resolve the parent once, while the sandbox has not run any code yet; the last
            # component is then opened with O_NOFOLLOW on every request.
            self._children_dir = self._children_dir.parent.resolve(strict=True) / (
                self._children_dir.name
            )
        except OSError as exc:
            raise BridgeError(
                f"cannot create the child-context directory {self._children_dir}: {exc}; "
                "check that the run directory exists and is writable"
            ) from exc
        self._private = Path(tempfile.mkdtemp(prefix="rlm-bridge-"))

    def close(self) -> None:
        """Delete the private directory and any copies still in it."""
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)
            self._private = None

    async def take(self, name: str) -> Path:
        """Return a private copy of ``children/<name>``; raises a 422 error if unusable."""
        return await anyio.to_thread.run_sync(self._take, name)

    async def discard(self, name: str, copy: Path | None) -> None:
        """Delete ``children/<name>`` and the private copy (either may already be gone)."""
        await anyio.to_thread.run_sync(self._discard, name, copy)

    def _take(self, name: str) -> Path:
        if self._private is None:
            raise BridgeError("the bridge's child-context store is closed")
        shown = f"children/{name}"
        dir_fd = self._open_children(shown)
        try:
            try:
                fd = os.open(name, _OPEN_FILE, dir_fd=dir_fd)
            except FileNotFoundError:
                raise invalid(f"context_file {shown!r} does not exist") from None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise invalid(
                        f"context_file {shown!r} is a symlink; write the context as a regular file"
                    ) from None
                raise invalid(f"context_file {shown!r} cannot be opened: {exc.strerror}") from None
        finally:
            os.close(dir_fd)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise invalid(f"context_file {shown!r} is not a regular file")
        if self._max_bytes is not None and info.st_size > self._max_bytes:
            os.close(fd)
            raise self._too_large(shown)
        with os.fdopen(fd, "rb") as src:
            fd_out, tmp = tempfile.mkstemp(dir=self._private, suffix=Path(name).suffix)
            try:
                # The directory (0700) keeps other host users out; a readable file lets the
                # child's sandbox bind-mount it as is instead of copying it once more.
                os.fchmod(fd_out, 0o644)
                with os.fdopen(fd_out, "wb") as dst:
                    self._copy(src, dst, shown)
            except BaseException:
                os.unlink(tmp)
                raise
        return Path(tmp)

    def _copy(self, src: BinaryIO, dst: BinaryIO, shown: str) -> None:
        if self._max_bytes is None:
            shutil.copyfileobj(src, dst, 1 << 20)
            return
        # The sandbox can keep appending after the size check: count what is copied.
        left = self._max_bytes
        while chunk := src.read(min(1 << 20, left + 1)):
            left -= len(chunk)
            if left < 0:
                raise self._too_large(shown)
            dst.write(chunk)

    def _too_large(self, shown: str) -> BridgeRequestError:
        assert self._max_bytes is not None
        limit_mib = self._max_bytes / (1 << 20)
        return invalid(
            f"context_file {shown!r} is larger than the {limit_mib:,.1f} MiB a child context "
            "may have; pass a smaller part of the context to rlm_query (the limit is the "
            "sandbox's disk limit, RLM_SANDBOX_DISK)"
        )

    def _discard(self, name: str, copy: Path | None) -> None:
        if copy is not None:
            copy.unlink(missing_ok=True)
        try:
            dir_fd = os.open(self._children_dir, _OPEN_DIR)
        except OSError:
            return  # children/ is gone or was replaced: nothing of ours left to delete
        try:
            os.unlink(name, dir_fd=dir_fd)
        except OSError:
            pass  # already deleted (the client also cleans up after itself)
        finally:
            os.close(dir_fd)

    def _open_children(self, shown: str) -> int:
        try:
            return os.open(self._children_dir, _OPEN_DIR)
        except OSError as exc:
            raise invalid(
                f"context_file {shown!r} cannot be read: children/ is not a plain directory "
                f"({exc.strerror})"
            ) from None
