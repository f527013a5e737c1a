"""The engine's side of the local model server: find it, or start and supervise it.

:class:`LocalModelServer` is the async context manager the engine uses: it reuses a healthy
server already listening on the port, else starts ``python -m engine.local`` (the server of
:mod:`engine.local.serve`, its command line in :mod:`engine.local.command`) in a child process
and waits until it answers ``/health`` and ``/v1/models``. Every user holds a lease
(:mod:`engine.local.leases`); a server an engine started is stopped by the last user to leave,
never from under another one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import anyio
import httpx

from engine.errors import LocalModelError
from engine.lifecycle import AsyncResource
from engine.local.catalog import DEFAULT_MODEL, get_entry
from engine.local.leases import Lease, Release, ServerLeases, default_lease_dir
from engine.local.serve import DEFAULT_CTX_SIZE, base_url, default_port
from engine.log import get_logger
from engine.models.spec import ModelSpec

log = get_logger(__name__)


@dataclass(frozen=True)
class ServerInfo:
    """What a healthy server reports about itself."""

    base_url: str  # ends in /v1
    alias: str
    n_ctx: int | None


def local_model_spec(
    host: str = "127.0.0.1",
    port: int | None = None,
    alias: str | None = None,
    context_window: int | None = DEFAULT_CTX_SIZE,
) -> ModelSpec:
    """The :class:`ModelSpec` for a local model server at ``host:port`` (no I/O)."""
    return ModelSpec(
        model=f"openai/{alias or get_entry(DEFAULT_MODEL).alias}",
        api_base=f"{base_url(host, port if port is not None else default_port())}/v1",
        api_key="local",
        context_window=context_window,
    )


# --- async client side ---------------------------------------------------------------------


async def probe(host: str, port: int, timeout: float = 5.0) -> ServerInfo | str | None:
    """Ask whatever listens on ``host:port`` who it is.

    Returns :class:`ServerInfo` for a healthy llama.cpp server, ``"loading"`` while one is
    still loading its model (HTTP 503), ``"busy"`` when it does not answer in ``timeout``,
    a short description for anything else listening, and None when nothing listens.
    """
    base = base_url(host, port)
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            health = await client.get(f"{base}/health")
            if health.status_code == 503:
                return "loading"
            if health.status_code != 200:
                return f"/health answered HTTP {health.status_code}"
            models = await client.get(f"{base}/v1/models")
            data = models.json().get("data") if models.status_code == 200 else None
            if not data:
                return f"/v1/models answered HTTP {models.status_code} without models"
            first = data[0]
            n_ctx = (first.get("meta") or {}).get("n_ctx")
            return ServerInfo(base_url=f"{base}/v1", alias=str(first["id"]), n_ctx=n_ctx)
    except httpx.ConnectError:
        return None
    except httpx.TimeoutException:
        return "busy"  # a server on a saturated CPU can be slow to answer even /health
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        return f"not an OpenAI-compatible llama.cpp server ({type(exc).__name__})"


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


class LocalModelServer(AsyncResource):
    """Async context manager giving a ready local model server and a :class:`ModelSpec`.

    Reuses a healthy server already on ``host:port``; otherwise pulls the default model if
    ``model_path`` is None and starts a child process serving it. Holds a lease on the
    server while inside: on exit (also on cancellation) the last user of a server that an
    engine started stops it; while others still use it, it stays up for them. A server
    started by hand (``rlm model serve``) is never stopped.
    """

    def __init__(
        self,
        model_path: Path | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        ctx_size: int = DEFAULT_CTX_SIZE,
        threads: int | None = None,
        *,
        startup_timeout: float = 180.0,
        log_path: Path | None = None,
        lease_dir: Path | None = None,
    ) -> None:
        self.model_path = model_path
        self.host = host
        self.port = port if port is not None else default_port()
        self.ctx_size = ctx_size
        self.threads = threads
        self.startup_timeout = startup_timeout
        self.log_path = log_path or (
            Path.home() / ".cache" / "rlm" / "logs" / f"local-model-{self.port}.log"
        )
        self._leases = ServerLeases(lease_dir or default_lease_dir(self.port))
        self._lease: Lease | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._spec: ModelSpec | None = None
        self.info: ServerInfo | None = None

    @property
    def spec(self) -> ModelSpec:
        """``ModelSpec("openai/<alias>", api_base=".../v1", api_key="local", ...)``."""
        if self._spec is None:
            raise LocalModelError("LocalModelServer.spec is only available inside `async with`")
        return self._spec

    @property
    def started(self) -> bool:
        """True if this instance started the server process (stopped on exit unless other
        engines still use it; then the last of them stops it)."""
        return self._process is not None

    @property
    def pid(self) -> int | None:
        """Process id of the server this instance started, if any."""
        return self._process.pid if self._process is not None else None

    async def _open(self, stack: AsyncExitStack) -> None:
        await self._take_lease()
        stack.push_async_callback(self._stop)  # from here on the lease (and a server) is ours
        info = await self._existing()
        if info is None:
            info = await self._start()
        self.info = info
        self._spec = local_model_spec(
            self.host, self.port, alias=info.alias, context_window=info.n_ctx or self.ctx_size
        )
        log.info("local model ready", base_url=info.base_url, started=self.started)

    async def _take_lease(self) -> None:
        # Taken before looking at the port, so the server we find cannot be stopped by
        # its last user between our look and our use. Synchronous on purpose: a lease
        # taken in a worker thread could be lost to a cancellation, keeping a server alive.
        with anyio.move_on_after(self.startup_timeout):
            while (lease := self._leases.take()) is None:
                await anyio.sleep(0.25)  # the server on the port is stopping; then start ours
            self._lease = lease
            return
        raise LocalModelError(
            f"the local model server on port {self.port} was being stopped and did not exit "
            f"within {self.startup_timeout:.0f}s; check `ps aux | grep engine.local`"
        )

    async def _existing(self) -> ServerInfo | None:
        found = await probe(self.host, self.port)
        if found is None or isinstance(found, ServerInfo):
            return found
        if found in ("loading", "busy"):
            # Another process is starting (or saturating) a server on this port: wait for
            # it rather than race it for the port.
            with anyio.move_on_after(self.startup_timeout):
                while found in ("loading", "busy"):
                    await anyio.sleep(0.5)
                    found = await probe(self.host, self.port)
            if found is None or isinstance(found, ServerInfo):
                return found  # None: that server was stopped while loading; start ours
        raise LocalModelError(
            f"port {self.port} on {self.host} is in use by something that is not a healthy "
            f"local model server ({found}); stop it or choose another port"
        )

    async def _start(self) -> ServerInfo:
        model_path = self.model_path
        if model_path is None:
            from engine.local.pull import pull_model

            model_path = await anyio.to_thread.run_sync(lambda: pull_model(progress=True))
        cmd = [
            sys.executable,
            "-m",
            "engine.local",
            "--model",
            str(model_path),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--ctx-size",
            str(self.ctx_size),
        ]
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        cmd += ["--lease-dir", str(self._leases.directory)]
        self._log_file = _open_log(self.log_path)
        self._log_file.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
        self._log_file.flush()
        log.info("starting local model server", cmd=" ".join(cmd), log=str(self.log_path))
        # Own session: a Ctrl-C in the terminal reaches us, and we stop the child in order.
        # A plain Popen, not an event-loop process: it may outlive this engine (handed over
        # to the other users), which an asyncio child watcher does not allow.
        self._process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
            start_new_session=True,
        )
        with anyio.move_on_after(self.startup_timeout):
            while True:
                status = self._process.poll()
                if status is not None:
                    self._process = None
                    # Lost a start-up race (two engines at once)? Then use the winner's server.
                    with contextlib.suppress(LocalModelError):
                        other = await self._existing()
                        if other is not None:
                            log.info("another process started the server first; reusing it")
                            return other
                    raise LocalModelError(
                        f"the local model server exited with status {status} while starting; "
                        f"log {self.log_path}:\n{_log_tail(self.log_path)}"
                    )
                found = await probe(self.host, self.port)
                if isinstance(found, ServerInfo) and self._leases.server_running():
                    # Healthy, and it holds server.lock: from now on whichever user leaves
                    # last can find it and stop it, even after we handed it over.
                    return found
                await anyio.sleep(0.25)
        raise LocalModelError(
            f"the local model server did not become healthy within {self.startup_timeout:.0f}s;"
            f" log {self.log_path}:\n{_log_tail(self.log_path)}"
        )

    async def _stop(self) -> None:
        process, self._process = self._process, None
        lease, self._lease = self._lease, None
        try:
            with anyio.CancelScope(shield=True):
                outcome = self._leases.release(lease) if lease else Release(True, None)
                if process is not None and not outcome.last:
                    _HANDED_OVER.append(process)
                    log.info(
                        "the local model server stays up for the other engines using it; "
                        "the last one to finish stops it",
                        pid=process.pid,
                    )
                elif process is not None:
                    await _terminate(process.pid, lambda: process.poll() is not None)
                elif outcome.server_pid is not None:
                    # The last user of a server another engine started: stop it for them.
                    await _terminate(outcome.server_pid, lambda: not self._leases.server_running())
                _reap_handed_over()
        finally:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None


# Servers this process started but left running for other engines; polled to reap them.
_HANDED_OVER: list[subprocess.Popen[bytes]] = []


def _reap_handed_over() -> None:
    _HANDED_OVER[:] = [p for p in _HANDED_OVER if p.poll() is None]


def _open_log(path: Path, max_bytes: int = 10 << 20) -> IO[bytes]:
    """Open the server log for appending (several servers may share it), rotating big ones."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > max_bytes:
            os.replace(path, path.with_name(path.name + ".1"))
    return path.open("ab")


async def _terminate(pid: int, gone: Callable[[], bool], grace: float = 20.0) -> None:
    """SIGTERM ``pid``, wait until ``gone()``, and SIGKILL it after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    with anyio.move_on_after(grace):
        while not gone():
            await anyio.sleep(0.1)
        return
    log.warning("local model server ignored SIGTERM; killing it", pid=pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with anyio.move_on_after(10):
        while not gone():
            await anyio.sleep(0.1)
