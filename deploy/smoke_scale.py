"""Compose smoke test of the `scale` profile: PostgreSQL, two engine replicas behind nginx.

    python deploy/smoke_scale.py    # exit status 0 when everything worked

Builds the engine and infrastructure images (cached), brings the profile up under its own
project name and port, submits replay-driven jobs with inline contexts through the one
published port, checks that both replicas ran some (from the jobs' leases in PostgreSQL) and
that every answer is right, stops one replica and runs a job through the other, recreates
that other one on a new address (placeholder containers hold its old one), which nginx must
find by name, and runs a job through it, then takes everything down and checks that nothing
is left. Needs no model and no network.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

DEPLOY = Path(__file__).resolve().parent
REPO = DEPLOY.parent
PROJECT = "rlm-smoke-scale"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(DEPLOY))

import smoke  # noqa: E402
from smoke import free_port, step, wait_finished, wait_healthy  # noqa: E402

SERVICES = ("postgres", "engine-1", "engine-2", "lb")
NETWORK = f"{PROJECT}_default"
FILLER_LABEL = f"{PROJECT}.filler=1"
JOBS = 6


def compose(env: dict[str, str], *args: str, capture: bool = False) -> str:
    return smoke.compose(env, *args, project=PROJECT, profile="scale", capture=capture)


def docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def container_address(container: str) -> str:
    """A container's IP address on the project network."""
    return docker(
        "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container
    )


def replica_address(env: dict[str, str], service: str) -> str:
    """The IP address of a compose service's container."""
    return container_address(compose(env, "ps", "-q", service, capture=True).strip())


def take_address(image: str, address: str, most: int = 8) -> list[str]:
    """Start placeholder containers on the project network until one holds ``address``
    (just given up by a replica); their ids, for removal."""
    started: list[str] = []
    for _ in range(most):
        started.append(
            docker(
                "run", "-d", "--network", NETWORK, "--label", FILLER_LABEL, image, "sleep", "3600"
            )
        )
        if container_address(started[-1]) == address:
            return started
    raise SystemExit(f"could not take the address {address} for the test")


def run_jobs(client: httpx.Client, count: int, tag: str) -> list[str]:
    """Submit ``count`` jobs (inline contexts) and wait for them; their ids."""
    expected, ids = {}, []
    for index in range(count):
        errors = 3 + index
        context = "\n".join(["INFO ok"] * 50 + ["ERROR failed"] * errors)
        response = client.post(
            "/v1/jobs",
            json={"query": f"SMOKE {tag} {index}: how many ERROR lines?", "context": context},
        )
        response.raise_for_status()
        job_id = response.json()["id"]
        ids.append(job_id)
        expected[job_id] = f"{errors} ERROR lines"
    deadline = time.monotonic() + 300
    for job_id in ids:
        current = wait_finished(client, job_id, deadline)
        if current["answer"] != expected[job_id]:
            raise SystemExit(f"unexpected result of job {job_id}: {current}")
    return ids


def main() -> int:
    import httpx

    started = time.perf_counter()
    step("building the engine and infrastructure images (cached when nothing changed)")
    engine = subprocess.run(
        [sys.executable, str(DEPLOY / "build.py")], check=True, capture_output=True, text=True
    ).stdout.strip()
    infra = subprocess.run(
        [sys.executable, str(DEPLOY / "infra.py")], check=True, capture_output=True, text=True
    ).stdout.strip()
    key = secrets.token_hex(16)
    port = free_port()
    run_dir = Path(tempfile.mkdtemp(prefix="rlm-smoke-scale-run-"))
    env = {
        **os.environ,
        "RLM_ENGINE_IMAGE": engine,
        "RLM_INFRA_IMAGE": infra,
        "RLM_API_KEYS": key,
        "RLM_PORT": str(port),
        "RLM_HOST_RUN_DIR": str(run_dir),
        "RLM_MODEL": "openai/root",
        "RLM_REPLAY": "/cassettes/smoke.jsonl",
        "RLM_CASSETTES": str(DEPLOY / "cassettes"),
        "RLM_MAX_SANDBOXES": "2",
        "RLM_POSTGRES_PASSWORD": secrets.token_hex(12),
    }
    headers = {"Authorization": f"Bearer {key}"}
    ok = False
    ids: list[str] = []
    fillers: list[str] = []
    try:
        step(f"docker-compose --profile scale up (project {PROJECT}, port {port})")
        compose(env, "up", "-d", *SERVICES)
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30
        ) as client:
            wait_healthy(client, 180)
            step(f"healthy; {JOBS} jobs with inline contexts through nginx")
            ids += run_jobs(client, JOBS, "spread")
            owners = compose(
                env,
                "exec",
                "-T",
                "postgres",
                "psql",
                "-U",
                "rlm",
                "-d",
                "rlm",
                "-tAc",
                "SELECT DISTINCT split_part(lease_owner, '-', 3) FROM jobs",
                capture=True,
            ).split()
            step(f"replicas that ran jobs: {sorted(owners)}")
            if sorted(owners) != ["1", "2"]:
                raise SystemExit(f"the jobs did not spread over both replicas: {owners}")
            step("stopping engine-1; a job through the same port runs on engine-2")
            compose(env, "stop", "engine-1")
            ids += run_jobs(client, 1, "failover")
            # nginx must find a replica that comes back on a new address (it resolves the
            # replicas' names at request time, not once at its start). Docker would give
            # the recreated container its old address back, so placeholders take it first.
            before = replica_address(env, "engine-2")
            step(f"recreating engine-2 (at {before}) on a new address, engine-1 still stopped")
            compose(env, "rm", "-s", "-f", "engine-2")
            fillers += take_address(infra, before)
            compose(env, "up", "-d", "--no-deps", "engine-2")
            after = replica_address(env, "engine-2")
            if after == before:
                raise SystemExit(f"engine-2 came back at its old address {before}")
            wait_healthy(client, 180)
            step(f"engine-2 is back at {after}; a job through the same port")
            ids += run_jobs(client, 1, "recreated")
        ok = True
    finally:
        for filler in fillers:
            subprocess.run(["docker", "rm", "-f", filler], capture_output=True, check=False)
        ok = smoke.tear_down(env, run_dir, ids, project=PROJECT, profile="scale") and ok
    step(f"{'PASS' if ok else 'FAIL'} in {time.perf_counter() - started:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
