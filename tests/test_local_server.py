"""The local model server: real llama.cpp, real model, real processes and HTTP.

Tests marked ``local_model`` load the real 1.1 GB model (pulled into the cache on first use).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from engine.errors import LocalModelError
from engine.local import LocalModelServer, ServerInfo, local_model_spec, probe, pull_model
from engine.models import ModelClient, UsageLedger

pytestmark = pytest.mark.anyio


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_processes(port: int) -> list[int]:
    """Pids of ``python -m engine.local ... --port PORT`` processes still on the machine."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"engine.local" in argv and b"--port" in argv:
            i = argv.index(b"--port")
            if i + 1 < len(argv) and argv[i + 1] == str(port).encode():
                pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="session")
def model_path() -> Path:
    return pull_model(progress=False)


@pytest.mark.local_model
async def test_serves_chat_honours_stop_and_stops_cleanly(model_path: Path, tmp_path: Path):
    port = _free_port()
    async with LocalModelServer(
        model_path, port=port, ctx_size=4096, log_path=tmp_path / "server.log"
    ) as server:
        assert server.started
        spec = server.spec
        assert spec == local_model_spec(port=port, context_window=4096)
        assert spec.model == "openai/qwen2.5-coder-1.5b"
        assert _server_processes(port) == [server.pid]

        client = ModelClient()
        ledger = UsageLedger()
        hello = await client.complete(
            spec, [{"role": "user", "content": "Say hello in one short sentence."}], ledger=ledger
        )
        assert hello.text.strip()
        assert ledger.calls(status="ok") == 1
        assert ledger.totals().completion_tokens > 0

        greedy = dataclasses.replace(spec, temperature=0.0, max_tokens=60)
        counting = [
            {"role": "user", "content": "Count from 1 to 10, digits separated by commas only."}
        ]
        full = await client.complete(greedy, counting)
        assert "4" in full.text and "6" in full.text
        stopped = await client.complete(greedy, counting, stop=["5"])
        assert "4" in stopped.text
        assert "5" not in stopped.text and "6" not in stopped.text
        assert stopped.finish_reason == "stop"

        # A second manager on the same port reuses the healthy server and leaves it running.
        async with LocalModelServer(port=port) as again:
            assert not again.started
            assert again.spec == spec
        assert isinstance(await probe("127.0.0.1", port), ServerInfo)
        pid = server.pid

    assert await probe("127.0.0.1", port) is None
    assert _server_processes(port) == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.local_model
async def test_cancelled_startup_leaves_no_process(model_path: Path, tmp_path: Path):
    port = _free_port()
    with anyio.move_on_after(0.5) as scope:
        async with LocalModelServer(model_path, port=port, log_path=tmp_path / "server.log"):
            pytest.fail("the model cannot load in 0.5 s")
    assert scope.cancelled_caught
    assert _server_processes(port) == []
    assert await probe("127.0.0.1", port) is None


@pytest.mark.local_model
async def test_concurrent_starts_share_one_server(model_path: Path, tmp_path: Path):
    port = _free_port()
    servers = [
        LocalModelServer(model_path, port=port, ctx_size=2048, log_path=tmp_path / "s.log")
        for _ in range(2)
    ]
    async with contextlib.AsyncExitStack() as stack:
        async with anyio.create_task_group() as tg:
            for server in servers:
                tg.start_soon(stack.enter_async_context, server)
        assert sorted(s.started for s in servers) == [False, True]
        assert servers[0].spec == servers[1].spec
        assert len(_server_processes(port)) == 1
    assert _server_processes(port) == []
    assert await probe("127.0.0.1", port) is None


@pytest.mark.local_model
def test_server_stops_when_its_owner_is_killed(model_path: Path, tmp_path: Path):
    port = _free_port()
    owner_code = f"""
import anyio
from pathlib import Path
from engine.local import LocalModelServer

async def main():
    async with LocalModelServer(
        Path({str(model_path)!r}), port={port}, ctx_size=2048,
        log_path=Path({str(tmp_path / "s.log")!r}),
    ) as server:
        print("up", server.pid, flush=True)
        await anyio.sleep(600)

anyio.run(main)
"""
    owner = subprocess.Popen([sys.executable, "-c", owner_code], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().startswith("up ")
        assert len(_server_processes(port)) == 1
    finally:
        owner.kill()  # no clean-up code runs in the owner
        owner.wait()
    deadline = time.monotonic() + 30
    while _server_processes(port) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _server_processes(port) == []


@pytest.mark.local_model
async def test_server_outlives_its_starter_while_another_engine_uses_it(
    model_path: Path, tmp_path: Path
):
    """An eval reusing a bench's server keeps it when the bench ends; the last one stops it."""
    port = _free_port()
    starter_code = f"""
import sys, anyio
from pathlib import Path
from engine.local import LocalModelServer

async def main():
    async with LocalModelServer(
        Path({str(model_path)!r}), port={port}, ctx_size=2048,
        log_path=Path({str(tmp_path / "s.log")!r}), lease_dir=Path({str(tmp_path / "leases")!r}),
    ) as server:
        print("up", server.pid, flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)

anyio.run(main)
"""
    starter = subprocess.Popen(
        [sys.executable, "-c", starter_code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert starter.stdout is not None and starter.stdin is not None
        assert starter.stdout.readline().startswith("up ")
        async with LocalModelServer(
            model_path, port=port, log_path=tmp_path / "s.log", lease_dir=tmp_path / "leases"
        ) as user:
            assert not user.started
            starter.stdin.write("exit\n")
            starter.stdin.flush()
            assert await anyio.to_thread.run_sync(starter.wait) == 0
            # The starter is gone, its server is not: this engine still gets answers.
            reply = await ModelClient().complete(
                dataclasses.replace(user.spec, max_tokens=4),
                [{"role": "user", "content": "Say OK."}],
            )
            assert reply.text.strip()
            assert len(_server_processes(port)) == 1
        # The last user out stopped it, and waited until it was gone.
        assert _server_processes(port) == []
        assert await probe("127.0.0.1", port) is None
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait()


@pytest.mark.local_model
def test_module_entry_point_serves_until_sigterm(model_path: Path):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.local", "--model", str(model_path), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == f"ready http://127.0.0.1:{port}/v1"
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()
        assert models["data"][0]["id"] == "qwen2.5-coder-1.5b"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health")


async def test_bad_model_file_fails_with_its_log(tmp_path: Path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(os.urandom(100_000))
    port = _free_port()
    with pytest.raises(LocalModelError, match="exited with status 1") as info:
        async with LocalModelServer(bad, port=port, log_path=tmp_path / "server.log"):
            pytest.fail("a random file cannot be served")
    assert "failed to load model" in str(info.value)
    assert _server_processes(port) == []


@pytest.fixture
def foreign_server() -> Iterator[int]:
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


async def test_port_held_by_another_program_is_refused(foreign_server: int, tmp_path: Path):
    assert await probe("127.0.0.1", foreign_server) == "/health answered HTTP 404"
    with pytest.raises(LocalModelError, match="in use by something"):
        async with LocalModelServer(tmp_path / "unused.gguf", port=foreign_server):
            pytest.fail("must not start on a busy port")


def test_server_parameters_suit_a_shared_cpu(tmp_path: Path) -> None:
    from engine.local.serve import ServeOptions, build_params

    params = build_params(ServeOptions(model_path=tmp_path / "m.gguf", ctx_size=8192, threads=3))
    assert (params.n_ctx, params.n_parallel, params.kv_unified) == (8192, 2, True)
    # Small logical batches: slots interleave and a stop is noticed within one batch.
    assert (params.n_batch, params.n_ubatch) == (512, 512)
    assert params.cache_prompt and not params.ctx_shift
    assert params.cpuparams.n_threads == params.cpuparams_batch.n_threads == 3
    assert (params.sampling.temp, params.sampling.seed) == (0.0, 0)
