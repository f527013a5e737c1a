"""Who is using a local model server, so that the last user out stops it.

An engine process that finds no server on the port starts one; others reuse it. Stopping it
when its starter exits would pull it from under the others (a bench and an eval sharing one
server), and never stopping it would leave 1-2 GB of RAM behind. So every user holds a
*lease* while it uses the server, and the server is stopped when the last lease is given up.

A lease is a file holding an exclusive ``flock``: the kernel drops the lock when its process
dies, so a killed user's lease counts as gone without any clean-up. The server process that
an engine started holds ``server.lock`` the same way (its pid inside) and watches the leases
itself, so it stops even when every user was killed. ``stopping`` marks a stop in progress:
a new user waits for that server to go and starts its own instead of adopting a server that
is shutting down. ``registry.lock`` serialises the decisions. A server started by hand
(``rlm model serve``) holds no ``server.lock``; leases never stop it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.errors import LocalModelError


def default_lease_dir(port: int) -> Path:
    """``~/.cache/rlm/local-model/port-<port>``: the leases of the server on ``port``."""
    return Path.home() / ".cache" / "rlm" / "local-model" / f"port-{port}"


@dataclass
class Lease:
    """One user's claim on the server; give it back with :meth:`ServerLeases.release`."""

    path: Path
    fd: int


@dataclass(frozen=True)
class Release:
    """What giving up a lease means for the server."""

    last: bool  # no other user holds a lease: whoever started the server should stop it
    server_pid: int | None  # the managed server to stop (marked ``stopping``), if running


class ServerLeases:
    """The lease directory of one port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._leases = directory / "leases"

    def take(self) -> Lease | None:
        """Hold a lease; ``None`` while the server on this port is being stopped."""
        with self._registry():
            if self._stop_in_progress():
                return None
            path = self._leases / f"{os.getpid()}-{secrets.token_hex(4)}"
            fd = self._open(path)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh file: never contended
            return Lease(path, fd)

    def release(self, lease: Lease) -> Release:
        """Give up ``lease``. When it was the last, mark a running managed server stopping."""
        with self._registry():
            with contextlib.suppress(FileNotFoundError):
                lease.path.unlink()
            os.close(lease.fd)
            if self._live_leases():
                return Release(last=False, server_pid=None)
            pid = self._server_pid()
            if pid is not None:
                self._mark_stopping()
            return Release(last=True, server_pid=pid)

    def stop_if_unused(self) -> bool:
        """For the managed server: mark it stopping and return True once no lease is held."""
        with self._registry():
            if self._live_leases():
                return False
            self._mark_stopping()
            return True

    def hold_server_lock(self) -> int:
        """For the managed server process: claim ``server.lock`` for its lifetime.

        Returns the open descriptor (the lock lasts until the process exits). A previous
        server on the same port may still be exiting after freeing the port, so this waits
        for its lock.
        """
        self._ensure_dirs()
        fd = self._open(self.directory / "server.lock")
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        return fd

    def server_running(self) -> bool:
        """True while a managed server process holds ``server.lock``."""
        return self._server_pid() is not None

    # --- under the registry lock ---------------------------------------------------------

    @contextlib.contextmanager
    def _registry(self) -> Iterator[None]:
        self._ensure_dirs()
        fd = self._open(self.directory / "registry.lock")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _open(self, path: Path) -> int:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise LocalModelError(
                f"cannot open the local model's lease file {path}: {exc.strerror}; "
                "check that ~/.cache/rlm is writable"
            ) from exc

    def _ensure_dirs(self) -> None:
        try:
            self._leases.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise LocalModelError(
                f"cannot create the local model's lease directory {self.directory}: "
                f"{exc.strerror}; check that ~/.cache/rlm is writable"
            ) from exc

    def _live_leases(self) -> int:
        live = 0
        for path in self._leases.iterdir():
            if _held(path):
                live += 1
            else:  # its process is gone: the kernel released the lock
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return live

    def _server_pid(self) -> int | None:
        path = self.directory / "server.lock"
        if not _held(path):
            return None
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None  # being written this instant; the server counts as not yet up

    def _mark_stopping(self) -> None:
        (self.directory / "stopping").touch()

    def _stop_in_progress(self) -> bool:
        stopping = self.directory / "stopping"
        if not stopping.exists():
            return False
        if self._server_pid() is not None:
            return True
        stopping.unlink(missing_ok=True)  # that server is gone: the port is free again
        return False


def _held(path: Path) -> bool:
    """Whether another open file holds an exclusive flock on ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)  # also drops our shared lock, if we got it
    return False
