"""The per-task run directory on the host, and staging of the task's context."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, ContextError
from engine.sandbox.config import SANDBOX_GID

CONTAINER_RUN_DIR = "/rlm/run"
CONTAINER_CONTEXT_DIR = "/rlm/context"
#: The one run-directory folder the sandbox may write, and only while its kernel starts.
IPC_DIR = "ipc"
#: Where a warm (pooled) sandbox finds its task's context: the host stages it here after the
#: container started, since a running container cannot gain a bind mount.
POOL_CONTEXT_DIR = "ctx"
#: The run directory's files (this module owns the layout): the kernel's connection file and
#: the bridge's Unix socket.
CONNECTION_FILE = "kernel.json"
BRIDGE_SOCKET = "bridge.sock"
CONTAINER_CONNECTION_FILE = f"{CONTAINER_RUN_DIR}/{CONNECTION_FILE}"
CONTAINER_BRIDGE_SOCKET = f"{CONTAINER_RUN_DIR}/{BRIDGE_SOCKET}"
# sun_path holds 108 bytes; the kernel's sockets are <run dir>/ipc/kernel-N.
_MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class StagedContext:
    """Where the context is on the host, where the kernel sees it, and its size on disk."""

    host_path: Path | None
    container_path: str | None
    size_bytes: int
    mount: bool  # bind-mount host_path read-only (False: it already lives in the run dir)


def create_run_dir(run_root: Path, task_id: str) -> Path:
    """Create the private run directory that is bind-mounted (read-only) into the sandbox.

    Only its ``ipc/`` folder is mounted writable, for the kernel to create its ZMQ sockets in;
    :func:`lock_run_dir` takes that away once they exist.
    """
    run_root.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):  # a shared root the user does not own
        run_root.chmod(0o700)
    run_dir = run_root / task_id
    if len(str(run_dir / IPC_DIR / "kernel-1")) > _MAX_SOCKET_PATH:
        raise ConfigError(
            f"the run directory {run_dir} is too long for Unix socket paths; "
            "set RLM_RUN_DIR to a shorter directory such as /tmp/rlm-run"
        )
    run_dir.mkdir()
    run_dir.chmod(0o755)  # the sandbox reads kernel.json and connects to bridge.sock
    ipc = run_dir / IPC_DIR
    ipc.mkdir()
    _give_to_sandbox(ipc)
    return run_dir


def _give_to_sandbox(path: Path) -> None:
    # The kernel must create its socket files here. As root the host keeps ownership and lets
    # the sandbox's group in, so the sandbox cannot chmod it back after `lock_run_dir`;
    # otherwise the sandbox runs as a uid other than ours (see `sandbox_ids`), so it does not
    # own the folder either, and only the parent (mode 0700) keeps other host users out.
    if os.geteuid() == 0:
        os.chown(path, 0, SANDBOX_GID)
        path.chmod(0o770)
    else:
        path.chmod(0o777)


def lock_run_dir(run_dir: Path) -> None:
    """Take away the sandbox's last write access to the host once the kernel is up.

    The kernel's sockets exist by then (connecting to a socket needs no write access to its
    folder). The rest of the run directory is mounted read-only, so from here on the sandbox
    can write only to its size- and inode-capped tmpfs mounts.
    """
    (run_dir / IPC_DIR).chmod(0o550 if os.geteuid() == 0 else 0o555)


def remove_run_dir(run_dir: Path) -> None:
    shutil.rmtree(run_dir, ignore_errors=True)


def stage_context(context: Any, run_dir: Path, max_bytes: int | None = None) -> StagedContext:
    """Make the context visible to the sandbox without reading it into memory.

    A ``Path`` is bind-mounted read-only (copied into the run dir with ``sendfile`` only when
    the sandbox user could not read it; a folder's copy leaves out symlinks and special
    files); a ``str`` becomes a text file and any other value a JSON file in the run dir.
    Callers that take a user's folder prepare it with :mod:`engine.contexts` first. A path
    larger than ``max_bytes`` (apparent size) raises :class:`ContextError` before any copy.
    """
    if context is None:
        return StagedContext(None, None, 0, mount=False)
    if isinstance(context, Path):
        return _stage_path(context.expanduser(), run_dir, max_bytes)
    if isinstance(context, str):
        target = run_dir / "context.txt"
        target.write_text(context, encoding="utf-8")
    else:
        target = run_dir / "context.json"
        try:
            with target.open("w", encoding="utf-8") as handle:
                json.dump(context, handle, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise ContextError(
                f"the context value cannot be written as JSON ({exc}); pass a str, a "
                "JSON-able value, or a path to a file"
            ) from exc
    target.chmod(0o644)
    return StagedContext(
        target, f"{CONTAINER_RUN_DIR}/{target.name}", target.stat().st_size, mount=False
    )


def _check_size(path: Path, size: int, max_bytes: int | None) -> None:
    # Apparent size: a sparse file is small on disk but copied (and loaded) in full.
    if max_bytes is not None and size > max_bytes:
        raise ContextError(
            f"the context {path} is {size:,} bytes, more than a sandbox on this host can load "
            f"({max_bytes:,}; RLM_SANDBOX_MAX_MEMORY sets it); give a smaller context"
        )


def _stage_path(path: Path, run_dir: Path, max_bytes: int | None = None) -> StagedContext:
    if not path.exists():
        raise ContextError(f"context path {path} does not exist")
    name = _safe_name(path.name or "context")
    container_path = f"{CONTAINER_CONTEXT_DIR}/{name}"
    if path.is_dir():
        size = 0
        readable = _world_readable(path)
        for folder, _dirs, files in os.walk(path):
            readable = readable and _world_readable(Path(folder))
            for file in files:
                full = Path(folder, file)
                if not full.is_symlink() and full.is_file():
                    size += full.stat().st_size
                    readable = readable and _world_readable(full)
        _check_size(path, size, max_bytes)
        if readable:
            return StagedContext(path.resolve(), container_path, size, mount=True)
        target = run_dir / name
        # Symlinks are never followed on the host: one could point at any host file.
        shutil.copytree(path, target, ignore=_not_plain)
        _open_up(target)
        return StagedContext(target, f"{CONTAINER_RUN_DIR}/{name}", size, mount=False)
    if not path.is_file():
        raise ContextError(f"context path {path} is neither a regular file nor a directory")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ContextError(f"cannot read the context file {path}: {exc.strerror}") from exc
    size = path.stat().st_size
    _check_size(path, size, max_bytes)
    if _world_readable(path):
        return StagedContext(path.resolve(), container_path, size, mount=True)
    target = run_dir / name
    shutil.copyfile(path, target)  # sendfile: the bytes do not pass through Python
    target.chmod(0o644)
    return StagedContext(target, f"{CONTAINER_RUN_DIR}/{name}", size, mount=False)


class ContextTooLargeError(ContextError):
    """The context would have to be copied, and is larger than the copy limit allows."""


def stage_context_inline(context: Any, run_dir: Path, copy_limit: int) -> StagedContext:
    """Stage the context inside ``run_dir/ctx`` for a sandbox that is already running.

    Values become files as in :func:`stage_context`. A path is hard-linked when it is
    world-readable and on the same file system (no bytes move, and the link cannot be used
    to change the file: the mount is read-only); otherwise it is copied, without following
    symlinks, and :class:`ContextTooLargeError` is raised (the caller starts a cold sandbox,
    which bind-mounts the path) once more than ``copy_limit`` bytes would be copied.
    """
    folder = run_dir / POOL_CONTEXT_DIR
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    if not isinstance(context, Path):
        staged = stage_context(context, folder)
        if staged.host_path is None:
            return staged
        name = staged.host_path.name
        return StagedContext(staged.host_path, _inline_path(name), staged.size_bytes, mount=False)
    path = context.expanduser()
    if not path.exists():
        raise ContextError(f"context path {path} does not exist")
    name = _safe_name(path.name or "context")
    target = folder / name
    budget = _CopyBudget(copy_limit)
    if path.is_dir():
        shutil.copytree(path, target, ignore=_not_plain, copy_function=budget.place)
        for sub, _dirs, _files in os.walk(target):
            Path(sub).chmod(0o755)
    elif path.is_file():
        budget.place(str(path), str(target))
    else:
        raise ContextError(f"context path {path} is neither a regular file nor a directory")
    return StagedContext(target, _inline_path(name), budget.total, mount=False)


def _inline_path(name: str) -> str:
    return f"{CONTAINER_RUN_DIR}/{POOL_CONTEXT_DIR}/{name}"


class _CopyBudget:
    """Places files by hard link where possible, copying at most ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.copied = 0
        self.total = 0

    def place(self, source: str, target: str) -> str:
        size = os.stat(source).st_size
        self.total += size
        if _world_readable(Path(source)):
            try:
                os.link(source, target)
                return target
            except OSError:
                pass  # another file system, or protected_hardlinks: copy it
        self.copied += size
        if self.copied > self.limit:
            raise ContextTooLargeError(
                f"the context needs more than {self.limit} bytes copied for a warm sandbox"
            )
        try:
            with open(source, "rb"):
                pass
        except OSError as exc:
            raise ContextError(f"cannot read the context file {source}: {exc.strerror}") from exc
        shutil.copyfile(source, target)  # sendfile: the bytes do not pass through Python
        os.chmod(target, 0o644)  # our own copy, never the user's file
        return target


def _not_plain(folder: str, names: list[str]) -> set[str]:
    """The entries of ``folder`` a copy leaves out: symlinks, pipes, sockets, devices."""
    skipped = set()
    for name in names:
        mode = os.lstat(os.path.join(folder, name)).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            skipped.add(name)
    return skipped


def _world_readable(path: Path) -> bool:
    mode = path.stat().st_mode
    needed = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
    return mode & needed == needed


def _open_up(root: Path) -> None:
    for folder, _dirs, files in os.walk(root):
        Path(folder).chmod(0o755)
        for file in files:
            Path(folder, file).chmod(0o644)


def _safe_name(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)
    return cleaned.lstrip(".") or "context"
