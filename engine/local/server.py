"""Serve a GGUF model OpenAI-compatibly with llama.cpp (xllamacpp) on 127.0.0.1.

Two layers:

* :func:`serve_forever` runs the llama.cpp server *in this process* until SIGTERM/SIGINT
  (used by ``rlm model serve`` and by ``python -m engine.local.server``);
* :class:`LocalModelServer` is the async context manager the engine uses: it reuses a
  healthy server already listening on the port, else starts ``python -m
  engine.local.server`` in a child process and waits until it answers ``/health`` and
  ``/v1/models``. Every user holds a lease (:mod:`engine.local.leases`); a server an engine
  started is stopped by the last user to leave, never from under another one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import anyio
import httpx

from engine.errors import LocalModelError
from engine.lifecycle import AsyncResource
from engine.local.catalog import DEFAULT_MODEL, get_entry
from engine.local.leases import Lease, Release, ServerLeases, default_lease_dir
from engine.log import get_logger
from engine.models.spec import ModelSpec

log = get_logger(__name__)

DEFAULT_PORT = 8765
DEFAULT_CTX_SIZE = 32_768
# A server-side cap on generated tokens: without it one runaway answer at ~15 tokens/s on a
# laptop CPU would hold the only slot for many minutes. Requests may ask for fewer.
DEFAULT_MAX_PREDICT = 2_048


@dataclass(frozen=True)
class ServeOptions:
    """How to run the llama.cpp server."""

    model_path: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    ctx_size: int = DEFAULT_CTX_SIZE
    threads: int | None = None  # None: all cores
    alias: str = get_entry(DEFAULT_MODEL).alias
    # Two slots: the root model's growing prompt keeps its KV cache in one slot while
    # sub-calls use the other; the KV cache is unified so either may use the whole context.
    parallel: int = 2
    max_predict: int = DEFAULT_MAX_PREDICT
    temperature: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class ServerInfo:
    """What a healthy server reports about itself."""

    base_url: str  # ends in /v1
    alias: str
    n_ctx: int | None


def default_port() -> int:
    """``$RLM_LOCAL_MODEL_PORT`` or 8765: where the engine looks for (or starts) the server."""
    raw = os.environ.get("RLM_LOCAL_MODEL_PORT", "")
    try:
        return int(raw) if raw.strip() else DEFAULT_PORT
    except ValueError as exc:
        raise LocalModelError(f"RLM_LOCAL_MODEL_PORT must be a port number, not {raw!r}") from exc


def local_model_spec(
    host: str = "127.0.0.1",
    port: int | None = None,
    alias: str | None = None,
    context_window: int | None = DEFAULT_CTX_SIZE,
) -> ModelSpec:
    """The :class:`ModelSpec` for a local model server at ``host:port`` (no I/O)."""
    return ModelSpec(
        model=f"openai/{alias or get_entry(DEFAULT_MODEL).alias}",
        api_base=f"{_base(host, port if port is not None else default_port())}/v1",
        api_key="local",
        context_window=context_window,
    )


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _base(host: str, port: int) -> str:
    return f"http://{_client_host(host)}:{port}"


def build_params(opts: ServeOptions) -> Any:
    """The ``xllamacpp.CommonParams`` for ``opts`` (imported lazily: the module is large)."""
    try:
        import xllamacpp
    except ImportError as exc:
        raise LocalModelError(
            "the local model needs xllamacpp: pip install 'rlm-engine[local]'"
        ) from exc
    threads = opts.threads or os.cpu_count() or 1
    params = xllamacpp.CommonParams()
    params.model.path = str(opts.model_path)
    params.model_alias = {opts.alias}
    params.hostnames = [opts.host]
    params.port = opts.port
    params.n_ctx = opts.ctx_size
    params.n_parallel = opts.parallel
    # The server switches slots and notices cancellation only between logical batches. At the
    # default 2048 tokens a CPU spends ~100 s on one batch, so a root turn waited behind a long
    # sub-call prompt and a stop request took minutes; 512 (= the physical batch) keeps the
    # same throughput with ~25 s turns.
    params.n_batch = 512
    params.n_ubatch = 512
    params.kv_unified = True
    params.n_predict = opts.max_predict
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.cache_prompt = True
    # Host-RAM prompt cache: lets a root prompt evicted by sub-calls come back cheaply,
    # bounded so the model stays a guest on a small machine.
    params.cache_ram_mib = 2_048
    params.ctx_shift = False  # an over-long prompt is an error, not silently truncated
    # Default sampling for requests that set no temperature: greedy with a fixed seed, so a
    # run is reproducible; a small model writing code also does better greedy than at
    # llama.cpp's default 0.8, and the root loop breaks the repetition loops greedy decoding
    # invites (requests may override both).
    params.sampling.temp = opts.temperature
    params.sampling.seed = opts.seed
    params.endpoint_metrics = True
    return params


def _wait_healthy_sync(base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            health = httpx.get(f"{base}/health", timeout=2.0)
            if health.status_code == 200:
                models = httpx.get(f"{base}/v1/models", timeout=2.0)
                if models.status_code == 200 and models.json().get("data"):
                    return
                last = f"/v1/models answered {models.status_code}"
            else:
                last = f"/health answered {health.status_code}"
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise LocalModelError(f"the model server at {base} did not become healthy ({last})")


def serve_forever(
    opts: ServeOptions,
    on_ready: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    leases: ServerLeases | None = None,
) -> None:
    """Load the model, serve until ``stop`` is set or SIGTERM/SIGINT arrives, then shut down.

    ``on_ready(base_url)`` is called once ``/health`` and ``/v1/models`` answer. With
    ``leases`` (a server an engine started), also stop once no process holds a lease, so
    engines that were killed leave no server behind. Blocking.
    """
    if not opts.model_path.is_file():
        raise LocalModelError(f"model file {opts.model_path} not found; run `rlm model pull`")
    stop = stop or threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    params = build_params(opts)
    import xllamacpp

    try:
        log.info("loading model", path=str(opts.model_path), ctx=opts.ctx_size)
        try:
            server = xllamacpp.Server(params)
        except Exception as exc:  # the binding raises plain RuntimeError/ValueError
            raise LocalModelError(
                f"llama.cpp could not start on {opts.host}:{opts.port}: {exc} "
                "(the log above says whether the model file is bad or the port is in use)"
            ) from exc
        try:
            base = _base(opts.host, opts.port)
            _wait_healthy_sync(base, timeout=60.0)
            if leases is not None:
                # Held until this process exits, after the port is free (see leases).
                leases.hold_server_lock()
            if on_ready is not None:
                on_ready(f"{base}/v1")
            while not stop.wait(0.5):
                if leases is not None and leases.stop_if_unused():
                    log.info("no engine uses the model server any more")
                    break
            log.info("stopping model server")
        finally:
            # Dropping the last reference runs the C++ destructor: it stops the HTTP
            # listener and joins the inference loop, so the port is free afterwards.
            del server
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --- async client side ---------------------------------------------------------------------


async def probe(host: str, port: int, timeout: float = 5.0) -> ServerInfo | str | None:
    """Ask whatever listens on ``host:port`` who it is.

    Returns :class:`ServerInfo` for a healthy llama.cpp server, ``"loading"`` while one is
    still loading its model (HTTP 503), ``"busy"`` when it does not answer in ``timeout``,
    a short description for anything else listening, and None when nothing listens.
    """
    base = _base(host, port)
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


# --- `python -m engine.local.server` -------------------------------------------------------


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The serve flags shared by ``rlm model serve`` and ``python -m engine.local.server``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"default $RLM_LOCAL_MODEL_PORT or {DEFAULT_PORT}",
    )
    parser.add_argument(
        "--ctx-size",
        type=int,
        default=DEFAULT_CTX_SIZE,
        help=f"context size in tokens, shared by the slots (default {DEFAULT_CTX_SIZE})",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: all cores)"
    )


def options_from_args(
    args: argparse.Namespace, model_path: Path, alias: str | None = None
) -> ServeOptions:
    """Build :class:`ServeOptions` from parsed serve flags."""
    if args.ctx_size < 512:
        raise LocalModelError("--ctx-size must be at least 512 tokens")
    return dataclasses.replace(
        ServeOptions(model_path=model_path),
        host=args.host,
        port=args.port if args.port is not None else default_port(),
        ctx_size=args.ctx_size,
        threads=args.threads,
        alias=alias or ServeOptions.alias,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m engine.local.server``: serve one model file until stopped."""
    parser = argparse.ArgumentParser(prog="python -m engine.local.server")
    parser.add_argument("--model", type=Path, required=True, help="path of the GGUF file")
    parser.add_argument(
        "--lease-dir",
        type=Path,
        default=None,
        help="stop once no process holds a lease in this directory (set by the engine)",
    )
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    try:
        serve_forever(
            options_from_args(args, args.model),
            on_ready=lambda url: print(f"ready {url}", flush=True),
            leases=ServerLeases(args.lease_dir) if args.lease_dir else None,
        )
    except LocalModelError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
