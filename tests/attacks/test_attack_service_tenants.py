"""Attacks on a real `rlm serve` by a tenant: the service's data, slots, metrics and its life.

Each test runs a real service process (real sandboxes, the replay model server), attacks it
through its HTTP API (or, for the store, by making its database refuse writes), and checks the
attack is contained, the service stays up and an innocent tenant still gets correct answers.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from engine.models import Cassette, ReplayServer
from tests.attacks.conftest import AttackReport, RssMeter
from tests.service_support import (
    METRICS_KEY,
    OTHER_KEY,
    Service,
    code,
    engine_container_names,
    innocent_answer,
    root,
    wait_final,
)

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

DONE = code("answer['content'] = 'done'\nanswer['ready'] = True")
INNOCENT = code("answer['content'] = str(sum(range(10)))\nanswer['ready'] = True")
CASSETTE = [
    root("INNOCENT", INNOCENT),
    root("QUICK", DONE),
    # A few seconds per job: long enough for jobs to overlap and queue.
    root("STEADY", DONE, delay_s=4),
    # Hangs until the service is killed under it.
    root("CRASHER", DONE, delay_s=600),
]


@pytest.fixture
async def replay() -> AsyncIterator[ReplayServer]:
    async with ReplayServer(Cassette(CASSETTE)) as server:
        yield server


async def _start(service: Service) -> RssMeter:
    await anyio.to_thread.run_sync(service.start)
    assert service.proc is not None
    return RssMeter(service.proc.pid).start()


@dataclass
class Running:
    """A started service under attack and the meter of its process's memory."""

    service: Service
    meter: RssMeter

    async def restarted(self) -> None:
        """The service was started again: measure the new process from its start."""
        self.meter = await _start(self.service)

    async def survived(self) -> int:
        """Check an innocent tenant still gets its answer; the RSS growth (service still up)."""
        assert await innocent_answer(self.service) == "45"
        return self.meter.growth()


@asynccontextmanager
async def running(tmp_path: Path, replay: ReplayServer, *flags: str) -> AsyncIterator[Running]:
    """A real `rlm serve` with ``flags`` for the block, stopped after it (also on failure)."""
    service = Service(tmp_path / "data", replay.base_url, *flags)
    attacked = Running(service, await _start(service))
    try:
        yield attacked
    finally:
        await anyio.to_thread.run_sync(service.stop)


def _dir_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


async def test_attack_metrics_and_health_without_the_operator_key(
    tmp_path: Path, replay: ReplayServer, attack_report: AttackReport
) -> None:
    async with running(tmp_path, replay) as attacked:
        service = attacked.service
        async with service.client() as tenant:
            job = (await tenant.post("/v1/jobs", json={"query": "QUICK"})).json()
            await wait_final(tenant, job["id"])
            # A tenant's valid key, no key, a wrong key: none reads every tenant's counts.
            assert (await tenant.get("/metrics")).status_code == 401
        async with service.client(key=None) as anonymous:
            assert (await anonymous.get("/metrics")).status_code == 401
            health = await anonymous.get("/healthz")
            assert health.json() == {"status": "ok"}  # no job counts, no load
        async with service.client(key=METRICS_KEY) as operator:
            assert 'rlm_jobs{state="succeeded"} 1' in (await operator.get("/metrics")).text
        growth = await attacked.survived()
    attack_report(
        "read every tenant's counts from /metrics, /healthz",
        "/metrics needs an operator key (RLM_METRICS_KEYS); /healthz says only ok",
        "401 for tenant and anonymous keys; healthz {status: ok}",
        rss_growth=growth,
    )


async def test_attack_one_key_hogs_every_sandbox_slot(
    tmp_path: Path, replay: ReplayServer, attack_report: AttackReport
) -> None:
    async with running(tmp_path, replay, "--max-sandboxes", "2") as attacked:
        service = attacked.service
        async with service.client() as hog, service.client(OTHER_KEY) as other:
            hogs = [
                (await hog.post("/v1/jobs", json={"query": f"STEADY {i}"})).json() for i in range(6)
            ]
            with anyio.fail_after(120):
                while (await hog.get(f"/v1/jobs/{hogs[1]['id']}")).json()["status"] == "queued":
                    await anyio.sleep(0.1)
            # The other key arrives while the hog holds both slots and has four jobs waiting.
            victim = (await other.post("/v1/jobs", json={"query": "INNOCENT"})).json()
            done = await wait_final(other, victim["id"], timeout=300)
            ended = [await wait_final(hog, job["id"], timeout=300) for job in hogs]
        assert (done["status"], done["answer"]) == ("succeeded", "45")
        # The victim ran before the hog's later jobs (FIFO would have run it last).
        later = sorted(job["started_at"] for job in ended)[2:]
        assert all(done["started_at"] < started for started in later), (done, ended)
        growth = attacked.meter.growth()  # while the service still runs
    attack_report(
        "one key queues jobs to hold every sandbox slot",
        "--max-sandboxes shared by turns between keys (fewest slots held first)",
        "the other key's job ran at the next free slot, before the hog's queue",
        rss_growth=growth,
    )


async def test_attack_storage_quota(
    tmp_path: Path, replay: ReplayServer, attack_report: AttackReport
) -> None:
    quota = 1 << 20
    async with running(tmp_path, replay, "--max-storage-per-key", str(quota)) as attacked:
        service = attacked.service
        before = _dir_bytes(service.data_dir)
        refused = None
        async with service.client() as attacker:

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(64):
                    yield b"A" * (64 << 10)

            # Uploads (streamed, no length given), in parallel, and inline contexts.
            async def upload(index: int, results: list[int]) -> None:
                response = await attacker.post(f"/v1/files?filename=f{index}.txt", content=chunks())
                results.append(response.status_code)

            first = await attacker.post("/v1/files?filename=a.txt", content=b"A" * (768 << 10))
            assert first.status_code == 201
            statuses: list[int] = []
            async with anyio.create_task_group() as group:
                for index in range(4):
                    group.start_soon(upload, index, statuses)
            inline = await attacker.post(
                "/v1/jobs", json={"query": "QUICK", "context": "B" * (512 << 10)}
            )
            refused = (statuses, inline.status_code)
        assert all(status == 413 for status in statuses) and inline.status_code == 413
        written = _dir_bytes(service.data_dir) - before
        growth = await attacked.survived()
    attack_report(
        "fill the service's disk with uploads and inline contexts",
        f"--max-storage-per-key {quota >> 20} MiB (uploads in progress counted)",
        f"refused with 413 storage_quota_exceeded {refused}",
        rss_growth=growth,
        host_bytes=max(written, 0),
        host_cap=quota,
    )


async def test_attack_store_error_inside_a_job(
    tmp_path: Path, replay: ReplayServer, attack_report: AttackReport
) -> None:
    async with running(tmp_path, replay) as attacked:
        service = attacked.service
        async with service.client() as client:
            job = (await client.post("/v1/jobs", json={"query": "STEADY store"})).json()
            with anyio.fail_after(120):
                while (
                    "sandbox_ready"
                    not in (await client.get(f"/v1/jobs/{job['id']}/trajectory")).text
                ):
                    await anyio.sleep(0.1)
            # The database refuses every write while the job records its next turn (the
            # service's busy timeout is 5 s): a store error inside the job.
            lock = sqlite3.connect(service.data_dir / "jobs.sqlite3", isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")
            await anyio.sleep(12)
            lock.execute("ROLLBACK")
            lock.close()
            failed = await wait_final(client, job["id"])
            assert failed["status"] == "failed"
            assert "the job store failed" in failed["error"], failed["error"]
            assert not [n for n in engine_container_names() if job["id"] in n]
            assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert service.proc is not None and service.proc.poll() is None
        growth = await attacked.survived()
    attack_report(
        "a store error (database locked) inside a running job",
        "errors inside a job fail that job; the final state is stored with retries",
        "job failed with 'the job store failed ...'; service up, next job answered",
        rss_growth=growth,
    )


async def test_attack_job_that_crashes_the_service_every_time(
    tmp_path: Path, replay: ReplayServer, attack_report: AttackReport
) -> None:
    async with running(tmp_path, replay) as attacked:
        service = attacked.service
        crashes = 0
        async with service.client() as client:
            job = (
                await client.post("/v1/jobs", json={"query": "CRASHER", "max_retries": 1})
            ).json()
        # Each attempt takes the whole service down (kill -9 while the job runs); the
        # supervisor (compose: restart unless-stopped) starts it again.
        for _ in range(3):
            async with service.client() as client:
                with anyio.fail_after(120):
                    while True:
                        current = (await client.get(f"/v1/jobs/{job['id']}")).json()
                        if current["status"] != "queued":
                            break
                        await anyio.sleep(0.1)
            if current["status"] != "running":
                break
            time.sleep(1)
            service.kill(signal.SIGKILL)
            crashes += 1
            await attacked.restarted()
        async with service.client() as client:
            final = await wait_final(client, job["id"])
            events = (await client.get(f"/v1/jobs/{job['id']}/trajectory")).text
        assert crashes == 2, "the job ran more often than its retries allow"
        assert (final["status"], final["error"], final["attempts"]) == (
            "failed",
            "service restarted",
            2,
        )
        assert all(json.loads(line)["type"] for line in events.splitlines())
        growth = await attacked.survived()
    attack_report(
        "a job that crashes the service on every attempt (restart loop)",
        "attempts counted in the database before each run; max_retries",
        f"ran {crashes} times (max_retries 1), then failed 'service restarted'",
        rss_growth=growth,
    )
