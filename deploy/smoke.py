"""Compose smoke test: up, one replay-driven job through the API, down, nothing left.

    python deploy/smoke.py          # exit status 0 when everything worked

Brings the stack up under its own project name and port (a running `make up` stack is left
alone), with the engine answering model calls from deploy/cassettes/smoke.jsonl, so it needs
no model and no network. Prints each step and how long it took.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

REPO = Path(__file__).resolve().parents[1]
PROJECT = "rlm-smoke"
sys.path.insert(0, str(REPO))


def step(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def compose(
    env: dict[str, str],
    *args: str,
    project: str = PROJECT,
    profile: str | None = None,
    capture: bool = False,
) -> str:
    """Run ``docker-compose -p <project> [--profile <profile>] <args>`` (the repository's file)."""
    command = ["docker-compose", "-p", project, "-f", str(REPO / "docker-compose.yml")]
    command += [*(["--profile", profile] if profile else []), *args]
    done = subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=capture, text=True)
    return done.stdout or ""


def project_containers(project: str = PROJECT) -> list[str]:
    label = f"label=com.docker.compose.project={project}"
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", label, "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def sandbox_containers(task_id: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", "label=rlm-engine.task", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [name for name in out.split() if task_id in name]


def wait_healthy(client: httpx.Client, seconds: float) -> None:
    """Wait for ``/healthz`` to answer 200; SystemExit after ``seconds``."""
    import httpx

    deadline = time.monotonic() + seconds
    while True:
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the stack did not become healthy in {seconds:.0f} s")
        time.sleep(0.5)


def wait_finished(client: httpx.Client, job_id: str, deadline: float) -> dict[str, Any]:
    """The job once it has finished; SystemExit when ``deadline`` (monotonic) passes first."""
    while True:
        current: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if current["status"] in ("succeeded", "failed", "cancelled"):
            return current
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job_id} did not finish in time: {current}")
        time.sleep(0.5)


def tear_down(
    env: dict[str, str],
    run_dir: Path,
    task_ids: list[str],
    project: str = PROJECT,
    profile: str | None = None,
) -> bool:
    """Take the stack down; True when no container of it (or of its jobs) is left."""
    step("docker-compose down")
    compose(env, "down", "-v", "--remove-orphans", project=project, profile=profile)
    left = project_containers(project) + [n for t in task_ids for n in sandbox_containers(t)]
    shutil.rmtree(run_dir, ignore_errors=True)
    if left:
        print(f"containers left behind: {left}", file=sys.stderr)
    return not left


def main() -> int:
    import httpx

    started = time.perf_counter()
    step("building the engine image (cached when nothing changed)")
    subprocess.run([sys.executable, str(REPO / "deploy" / "build.py")], check=True)
    key = secrets.token_hex(16)
    port = free_port()
    run_dir = Path(tempfile.mkdtemp(prefix="rlm-smoke-run-"))
    env = {
        **os.environ,
        "RLM_API_KEYS": key,
        "RLM_PORT": str(port),
        "RLM_HOST_RUN_DIR": str(run_dir),
        "RLM_MODEL": "openai/root",
        "RLM_REPLAY": "/cassettes/smoke.jsonl",
        "RLM_CASSETTES": str(REPO / "deploy" / "cassettes"),
        "RLM_MAX_SANDBOXES": "2",
    }
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    ok = False
    job_id = ""
    try:
        step(f"docker-compose up (project {PROJECT}, port {port})")
        compose(env, "up", "-d", "engine")
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            wait_healthy(client, 120)
            step("healthy; uploading a context and submitting a job")
            rng = random.Random(7)
            lines = ["INFO ok"] * 500
            for index in rng.sample(range(500), 29):
                lines[index] = "ERROR failed"
            upload = client.post(
                "/v1/files", params={"filename": "app.log"}, content="\n".join(lines).encode()
            )
            upload.raise_for_status()
            job = client.post(
                "/v1/jobs",
                json={"query": "SMOKE: how many ERROR lines?", "file_id": upload.json()["id"]},
            )
            job.raise_for_status()
            job_id = job.json()["id"]
            current = wait_finished(client, job_id, time.monotonic() + 180)
            step(f"job {job_id}: {current['status']}, answer {current['answer']!r}")
            if current["answer"] != "29 ERROR lines":
                raise SystemExit(f"unexpected job result: {current}")
            chat = client.post(
                "/v1/chat/completions",
                json={
                    "model": "rlm",
                    "messages": [
                        {"role": "user", "content": "\n".join(lines)},
                        {"role": "user", "content": "SMOKE via chat"},
                    ],
                },
            )
            if chat.status_code != 200:
                raise SystemExit(f"chat completion failed: {chat.status_code} {chat.text}")
            step(f"chat completion: {chat.json()['choices'][0]['message']['content']!r}")
        ok = True
    finally:
        ok = tear_down(env, run_dir, [job_id] if job_id else []) and ok
    step(f"{'PASS' if ok else 'FAIL'} in {time.perf_counter() - started:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
