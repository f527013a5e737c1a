"""The local model server itself: llama.cpp (xllamacpp) serving a GGUF file in this process.

:func:`serve_forever` runs until SIGTERM/SIGINT (or, for a server an engine started, until no
engine holds a lease). It runs in the child process :class:`engine.local.LocalModelServer`
starts (``python -m engine.local``, :mod:`engine.local.command`) and in ``rlm model serve``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from engine.errors import LocalModelError
from engine.local.catalog import DEFAULT_MODEL, get_entry
from engine.local.leases import ServerLeases
from engine.log import get_logger

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


def default_port() -> int:
    """``$RLM_LOCAL_MODEL_PORT`` or 8765: where the engine looks for (or starts) the server."""
    raw = os.environ.get("RLM_LOCAL_MODEL_PORT", "")
    try:
        return int(raw) if raw.strip() else DEFAULT_PORT
    except ValueError as exc:
        raise LocalModelError(f"RLM_LOCAL_MODEL_PORT must be a port number, not {raw!r}") from exc


def client_host(host: str) -> str:
    """The address a client uses for a server bound to ``host`` (a wildcard: loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def base_url(host: str, port: int) -> str:
    """``http://<host>:<port>`` of the server on ``host:port``, as a client reaches it."""
    return f"http://{client_host(host)}:{port}"


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
            base = base_url(opts.host, opts.port)
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
