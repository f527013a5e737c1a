"""Helpers of the service tests: run `rlm serve` as a real process, script cassettes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
API_KEY = "test-key-0123456789"
OTHER_KEY = "other-key-0123456789"
METRICS_KEY = "metrics-key-0123456789"

# `rlm` with the serve and view commands registered even before the lead adds them.
LAUNCHER = (
    "import sys\n"
    "from engine.cli import main as m\n"
    "for name in ('engine.cli.serve', 'engine.cli.view'):\n"
    "    if name not in m._COMMAND_MODULES:\n"
    "        m._COMMAND_MODULES = (*m._COMMAND_MODULES, name)\n"
    "sys.exit(m.main(sys.argv[1:]))\n"
)


def rlm_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-c", LAUNCHER, *map(str, args)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def root(contains: str, content: str, *, repeat: bool = True, **extra: Any) -> dict[str, Any]:
    """A cassette entry answering the root model when the last message contains a tag."""
    return {
        "match": {"model": "root", "contains": contains},
        "response": {"content": content, "usage": {"prompt_tokens": 100, "completion_tokens": 20}},
        "repeat": repeat,
        **extra,
    }


def sub(contains: str, content: str, **extra: Any) -> dict[str, Any]:
    return {
        "match": {"model": "sub", "contains": contains},
        "response": {"content": content, "usage": {"prompt_tokens": 10, "completion_tokens": 2}},
        "repeat": True,
        **extra,
    }


def code(source: str) -> str:
    return f"Let me run code.\n```repl\n{source}\n```\n"


class Service:
    """One `rlm serve` process on a free port with a data dir; restartable."""

    def __init__(
        self, data_dir: Path, api_base: str | None, *extra: str, env: dict[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.api_base = api_base
        self.extra = extra
        self.env = env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"service-{self.port}.log"

    def start(self, *more: str) -> Service:
        args = ["serve", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        if self.api_base:
            args += ["--model", "openai/root", "--sub-model", "openai/sub"]
            args += ["--api-base", self.api_base, "--models", str(self.models_file())]
        env = {
            **os.environ,
            "RLM_API_KEYS": f"{API_KEY},{OTHER_KEY}",
            "RLM_METRICS_KEYS": METRICS_KEY,
            "RLM_API_KEY": "replay",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "RLM_LOG_LEVEL": os.environ.get("TEST_RLM_LOG_LEVEL", "info"),
            **self.env,
        }
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            rlm_command(*args, *self.extra, *more),
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rlm serve exited early:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"rlm serve did not become healthy:\n{self.log()}")

    def models_file(self) -> Path:
        """The service's models file: the replayed root and sub model, priced at 0 (a replay
        bills nothing), so that the service's default cost ceiling can apply to them."""
        path = self.data_dir.parent / f"models-{self.port}.toml"
        path.write_text(
            "".join(
                f'[models."openai/{name}"]\nmodel = "openai/{name}"\n'
                f'api_base = "{self.api_base}"\napi_key_env = "RLM_API_KEY"\n'
                "input_cost_per_million = 0\noutput_cost_per_million = 0\n\n"
                for name in ("root", "sub")
            )
        )
        return path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self, key: str | None = API_KEY, **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=120, **kwargs)


async def wait_final(client: httpx.AsyncClient, job_id: str, timeout: float = 120) -> dict:
    """Poll a job until it ends (tests use the SSE stream where order matters)."""
    import anyio

    with anyio.fail_after(timeout):
        while True:
            job = (await client.get(f"/v1/jobs/{job_id}")).json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            await anyio.sleep(0.2)


async def innocent_answer(service: Service, query: str = "INNOCENT") -> str:
    """Run an innocent job with the other key (during or after an attack); its answer."""
    async with service.client(OTHER_KEY) as other:
        job = (await other.post("/v1/jobs", json={"query": query})).json()
        done = await wait_final(other, job["id"])
    assert done["status"] == "succeeded", done
    return str(done["answer"])


def engine_container_names() -> list[str]:
    """Names of the engine's sandbox containers; ``sparse`` so that a container removed while
    listing (other tests run their own) does not make the listing fail."""
    from engine.sandbox import docker_api

    client = docker_api.client()
    listed = client.containers.list(all=True, sparse=True, filters={"label": docker_api.LABEL_TASK})
    return [name.lstrip("/") for c in listed for name in c.attrs.get("Names", [])]
