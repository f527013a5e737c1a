"""Two real `rlm serve` replicas on one private PostgreSQL, answered by the replay server:
jobs spread over both, contexts submitted to one run on the other, events stream from
either, a SIGKILLed replica's jobs finish elsewhere, a cancel reaches the other replica, and
what one replica deletes leaves no copy on the other's disk."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import psycopg
import pytest

from engine.models import Cassette, ReplayServer
from engine.sandbox import docker_api
from engine.service.store_pg import LOST_REASON, PgJobStore
from tests.service_support import (
    Service,
    code,
    engine_container_names,
    root,
    sub,
    wait_final,
)

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

ECHO = code("answer['content'] = context.strip()\nanswer['ready'] = True")
DONE = code("answer['content'] = 'done'\nanswer['ready'] = True")
CASSETTE = [
    # A couple of seconds per job: long enough that one replica cannot take them all.
    root("SPREAD", ECHO, delay_s=2),
    root("ECHO-NOW", ECHO),
    root("QUICK", DONE),
    # Held back until the replica running it is killed (or the job cancelled).
    root("HANG-ONCE", DONE, delay_s=600, repeat=False),
    root("HANG-RETRY", DONE, delay_s=600, repeat=False),
    root("HANG-RETRY", DONE),
    root("HANG-CANCEL", DONE, delay_s=600),
    root("HANG-LONG", DONE, delay_s=600),
    # A parent whose child RLM holds the replica's second sandbox until the test ends.
    root("PARENT", code("print(rlm_query('CHILD-TASK hold', context='x'))")),
    root("CHILD-TASK", DONE, delay_s=600),
    sub("CHILD-TASK", DONE, delay_s=600),
    # The paused replica's answer arrives while it is stopped; the re-run's never does.
    root("PAUSED", DONE, delay_s=5, repeat=False),
    root("PAUSED", DONE, delay_s=600, repeat=False),
]
LEASE = "3"


@asynccontextmanager
async def replicas(
    tmp_path: Path, pg_url: str, replay: ReplayServer, *slots: int, extra: tuple[str, ...] = ()
) -> AsyncIterator[list[Service]]:
    """One replica per entry of ``slots`` (its --max-sandboxes), each with its own data dir
    and reaper instance id, all on ``pg_url`` (``extra``: more options for each); stopped
    (SIGTERM) at the end."""
    started = [
        Service(
            tmp_path / f"replica-{index}",
            replay.base_url,
            "--database-url",
            pg_url,
            "--lease-seconds",
            LEASE,
            "--max-sandboxes",
            str(count),
            *extra,
            env={"RLM_INSTANCE_ID": f"test-replica-{index}-{os.getpid()}"},
        )
        for index, count in enumerate(slots)
    ]
    try:
        for service in started:
            await anyio.to_thread.run_sync(service.start)
        yield started
    finally:
        for service in started:
            await anyio.to_thread.run_sync(service.stop)


def runner_pid(pg_url: str, job_id: str) -> int:
    """The pid of the replica that claimed the job last (replica ids are host-pid-random)."""
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT lease_owner FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None and row[0]
    return int(row[0].rsplit("-", 2)[1])


async def until(check: Callable[[], Any], timeout: float = 90) -> None:
    with anyio.fail_after(timeout):
        while not await check():
            await anyio.sleep(0.2)


async def submit(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


async def upload_to_one(client: httpx.AsyncClient) -> str:
    """Upload the file ``notes.txt`` ("uploaded-to-one") through ``client``; its id."""
    response = await client.post(
        "/v1/files",
        params={"filename": "notes.txt"},
        content=b"uploaded-to-one",
        headers={"content-type": "application/octet-stream"},
    )
    assert response.status_code == 201, response.text
    file_id: str = response.json()["id"]
    return file_id


async def status_of(client: httpx.AsyncClient, job_id: str) -> str:
    status: str = (await client.get(f"/v1/jobs/{job_id}")).json()["status"]
    return status


def remove_containers_of(pid: int) -> None:
    """Remove the sandboxes a SIGKILLed replica left (no reaper of another instance may)."""
    client = docker_api.client()
    labels = [docker_api.LABEL_TASK, f"{docker_api.LABEL_OWNER_PID}={pid}"]
    for container in client.containers.list(all=True, filters={"label": labels}):
        container.remove(force=True)


async def test_jobs_spread_over_replicas_and_contexts_travel(tmp_path: Path, pg_url: str) -> None:
    async with (
        ReplayServer(Cassette(CASSETTE)) as replay,
        replicas(tmp_path, pg_url, replay, 1, 1) as (one, two),
    ):
        async with one.client() as first, two.client() as second:
            # Every job goes to replica one, with its context inline or uploaded there.
            jobs = [
                await submit(first, query=f"SPREAD {index}", context=f"ctx-{index}")
                for index in range(4)
            ]
            file_id = await upload_to_one(first)
            by_file = await submit(second, query="ECHO-NOW", file_id=file_id)
            # Both replicas see every job; each is followed on the replica it was not sent to.
            listed = (await second.get("/v1/jobs")).json()["data"]
            assert {job["id"] for job in jobs} <= {job["id"] for job in listed}
            async with second.stream("GET", f"/v1/jobs/{jobs[0]['id']}/events") as response:
                lines = [line async for line in response.aiter_lines()]
            kinds = [line.split(": ", 1)[1] for line in lines if line.startswith("event: ")]
            assert kinds[0] == "run_start" and kinds[-2:] == ["run_end", "end"]
            done = [await wait_final(second, job["id"]) for job in jobs]
            assert [(job["status"], job["answer"]) for job in done] == [
                ("succeeded", f"ctx-{index}") for index in range(4)
            ]
            echoed = await wait_final(first, by_file["id"])
            assert (echoed["status"], echoed["answer"]) == ("succeeded", "uploaded-to-one")
        pids = {runner_pid(pg_url, job["id"]) for job in jobs}
        assert pids == {one.proc.pid, two.proc.pid}  # type: ignore[union-attr]


def kept(service: Service) -> set[str]:
    """What the replica keeps on disk of jobs, sessions and uploads (folder names)."""
    return {
        path.name
        for folder in ("jobs", "files")
        if (service.data_dir / folder).is_dir()
        for path in (service.data_dir / folder).iterdir()
    }


async def test_what_one_replica_deletes_leaves_no_copy_on_another(
    tmp_path: Path, pg_url: str
) -> None:
    async with (
        ReplayServer(Cassette(CASSETTE)) as replay,
        replicas(tmp_path, pg_url, replay, 1, 1) as (one, two),
        one.client() as first,
    ):
        file_id = await upload_to_one(first)
        # Two seconds each on one slot per replica, all sent to replica one: replica two
        # runs some, copying their uploaded or inline contexts and keeping trajectories.
        jobs = [
            await submit(first, query=f"SPREAD {n}", file_id=file_id)
            if n % 2
            else await submit(first, query=f"SPREAD {n}", context=f"c{n}")
            for n in range(8)
        ]
        for job in jobs:
            assert (await wait_final(first, job["id"]))["status"] == "succeeded"
        pid_two = two.proc.pid  # type: ignore[union-attr]
        on_two = [job["id"] for job in jobs if runner_pid(pg_url, job["id"]) == pid_two]
        assert len(on_two) >= 2 and set(on_two) <= kept(two)
        # Deleted through replica one while replica two runs: two hears of each deletion
        # and removes its copies at once. The rest is deleted while two is down.
        while_down = on_two[1:]
        for job in jobs:
            if job["id"] not in while_down:
                assert (await first.delete(f"/v1/jobs/{job['id']}")).status_code == 200
        assert (await first.delete(f"/v1/files/{file_id}")).status_code == 200

        async def only_while_down_left() -> bool:
            return kept(two) == set(while_down)

        await until(only_while_down_left, 30)
        assert kept(one) <= set(while_down)  # the upload is gone from both
        await anyio.to_thread.run_sync(two.stop)
        for job_id in while_down:
            assert (await first.delete(f"/v1/jobs/{job_id}")).status_code == 200
        assert kept(two) == set(while_down) and not kept(one)
        # Once its grace period has passed (as if down for an hour), a replica that
        # starts again removes what was deleted meanwhile.
        old = time.time() - 3600
        for job_id in while_down:
            folder = two.data_dir / "jobs" / job_id
            for item in [folder, *folder.iterdir()]:
                os.utime(item, (old, old))
        await anyio.to_thread.run_sync(two.start)

        async def nothing_left() -> bool:
            return not kept(two)

        await until(nothing_left, 30)


async def test_sigkill_a_replica_and_every_job_still_finishes(tmp_path: Path, pg_url: str) -> None:
    async with (
        ReplayServer(Cassette(CASSETTE)) as replay,
        replicas(tmp_path, pg_url, replay, 2) as (doomed,),
    ):
        async with doomed.client() as client:
            once = await submit(client, query="HANG-ONCE job")
            retry = await submit(client, query="HANG-RETRY job", max_retries=1)
            queued = [await submit(client, query=f"QUICK {index}") for index in range(2)]

            async def both_asked() -> bool:
                asked = [json.dumps(r) for r in replay.requests]
                return all(any(tag in a for a in asked) for tag in ("HANG-ONCE", "HANG-RETRY"))

            await until(both_asked)
            states = [(await client.get(f"/v1/jobs/{j['id']}")).json()["status"] for j in queued]
            assert states == ["queued", "queued"]  # both slots are taken by the hanging jobs
        pid = doomed.proc.pid  # type: ignore[union-attr]
        doomed.kill(signal.SIGKILL)
        (tmp_path / "after").mkdir()
        try:
            async with (
                replicas(tmp_path / "after", pg_url, replay, 2) as (survivor,),
                survivor.client() as client,
            ):
                finished = {
                    job["id"]: await wait_final(client, job["id"]) for job in (once, retry, *queued)
                }
        finally:
            remove_containers_of(pid)
        assert (finished[once["id"]]["status"], finished[once["id"]]["error"]) == (
            "failed",
            LOST_REASON,
        )
        assert finished[retry["id"]]["status"] == "succeeded"
        assert finished[retry["id"]]["attempts"] == 2
        assert [finished[job["id"]]["status"] for job in queued] == ["succeeded"] * 2
        assert {runner_pid(pg_url, job["id"]) for job in (retry, *queued)} == {
            survivor.proc.pid  # type: ignore[union-attr]
        }


async def test_cancel_sent_to_one_replica_stops_the_job_on_the_other(
    tmp_path: Path, pg_url: str
) -> None:
    async with (
        ReplayServer(Cassette(CASSETTE)) as replay,
        replicas(tmp_path, pg_url, replay, 1, 1) as pair,
    ):
        async with pair[0].client() as client:
            job = await submit(client, query="HANG-CANCEL job")

            async def sandbox_up() -> bool:
                names = engine_container_names()
                asked = any("HANG-CANCEL" in json.dumps(r) for r in replay.requests)
                return asked and any(job["id"] in name for name in names)

            await until(sandbox_up)
        pid = runner_pid(pg_url, job["id"])
        runner, other = sorted(pair, key=lambda s: s.proc.pid != pid)  # type: ignore[union-attr]
        assert runner.proc.pid == pid  # type: ignore[union-attr]
        async with other.client() as client:
            response = await client.post(f"/v1/jobs/{job['id']}/cancel")
            assert response.status_code in (200, 202), response.text
            ended = await wait_final(client, job["id"])
        assert (ended["status"], ended["error"]) == ("cancelled", "cancelled by the user")
        async with runner.client() as client:
            events = (await client.get(f"/v1/jobs/{job['id']}/trajectory")).text.splitlines()
        assert json.loads(events[-1])["stop_reason"] == "cancelled"
        assert not [name for name in engine_container_names() if job["id"] in name]


async def test_long_jobs_sent_to_one_replica_run_at_once_on_both(
    tmp_path: Path, pg_url: str
) -> None:
    async with (
        ReplayServer(Cassette(CASSETTE)) as replay,
        replicas(tmp_path, pg_url, replay, 1, 1) as (one, two),
        one.client() as client,
    ):
        jobs = [await submit(client, query=f"HANG-LONG {index}") for index in range(2)]

        async def both_running() -> bool:
            states = [await status_of(client, job["id"]) for job in jobs]
            return states == ["running", "running"]

        await until(both_running)
        pids = {runner_pid(pg_url, job["id"]) for job in jobs}
        assert pids == {one.proc.pid, two.proc.pid}  # type: ignore[union-attr]
        for job in jobs:
            assert (await client.post(f"/v1/jobs/{job['id']}/cancel")).status_code in (200, 202)
        for job in jobs:
            assert (await wait_final(client, job["id"]))["status"] == "cancelled"


async def test_a_replica_with_no_free_slot_leaves_jobs_to_the_others(
    tmp_path: Path, pg_url: str
) -> None:
    """A replica whose sandboxes are all busy (a job and its child RLM) does not claim the
    next job to wait with it: a replica started later runs it."""
    for name in ("busy", "free"):
        (tmp_path / name).mkdir()
    async with (
        ReplayServer(Cassette(CASSETTE)) as replay,
        replicas(tmp_path / "busy", pg_url, replay, 2) as (busy,),
        busy.client() as client,
    ):
        parent = await submit(client, query="PARENT job", limits={"max_depth": 2})

        async def child_asked() -> bool:
            return any("CHILD-TASK" in json.dumps(r) for r in replay.requests)

        await until(child_asked)
        waiting = await submit(client, query="QUICK after the parent")
        async with (
            replicas(tmp_path / "free", pg_url, replay, 1) as (free,),
            free.client() as other,
        ):
            done = await wait_final(other, waiting["id"])
            assert done["status"] == "succeeded"
            assert runner_pid(pg_url, waiting["id"]) == free.proc.pid  # type: ignore[union-attr]
        assert await status_of(client, parent["id"]) == "running"
        await client.post(f"/v1/jobs/{parent['id']}/cancel")
        assert (await wait_final(client, parent["id"]))["status"] == "cancelled"


async def test_a_session_runs_on_the_replica_that_holds_its_kernel(
    tmp_path: Path, pg_url: str
) -> None:
    entries = [
        root("SESSION-SUM", code("answer['content'] = str(sum(nums))\nanswer['ready'] = True")),
        root(
            "SESSION-PARSE",
            code(
                "nums = [int(x) for x in context.split()]\nanswer['content'] = 'parsed'\n"
                "answer['ready'] = True"
            ),
        ),
    ]
    async with (
        ReplayServer(Cassette(entries)) as replay,
        replicas(tmp_path, pg_url, replay, 1, 1) as (one, two),
        one.client() as first,
        two.client() as second,
    ):
        created = await first.post("/v1/sessions", json={"context": "5 6"})
        assert created.status_code == 201, created.text
        session_id = created.json()["id"]
        path = f"/v1/sessions/{session_id}/messages"
        parsed = await first.post(path, json={"query": "SESSION-PARSE the numbers"})
        assert parsed.json()["answer"] == "parsed", parsed.text
        # The kernel lives on replica one: replica two says where to send it.
        elsewhere = await second.post(path, json={"query": "SESSION-SUM them"})
        assert elsewhere.status_code == 409
        assert "lives on replica" in elsewhere.json()["error"]["message"]
        summed = await first.post(path, json={"query": "SESSION-SUM them"})
        assert summed.json()["answer"] == "11", summed.text
        # Its history is readable from every replica.
        turns = (await second.get(f"/v1/sessions/{session_id}")).json()["turns"]
        assert [t["answer"] for t in turns] == ["parsed", "11"]
        assert (await first.delete(f"/v1/sessions/{session_id}")).status_code == 200
        assert not any(session_id in name for name in engine_container_names())


async def test_the_storage_quota_counts_a_session_context_on_every_replica(
    tmp_path: Path, pg_url: str
) -> None:
    quota = 100_000
    async with (
        ReplayServer(Cassette([])) as replay,
        replicas(
            tmp_path,
            pg_url,
            replay,
            1,
            1,
            extra=("--max-storage-per-key", str(quota), "--max-sessions-per-key", "40"),
        ) as (one, two),
        one.client() as first,
        two.client() as second,
    ):
        kept = await first.post("/v1/sessions", json={"context": "s" * (quota // 2)})
        assert kept.status_code == 201, kept.text
        # The other replica counts it too (the database holds the count).
        refused = await second.post("/v1/sessions", json={"context": "t" * (quota // 2)})
        assert refused.status_code == 413
        assert refused.json()["error"]["type"] == "storage_quota_exceeded"
        upload = await second.post("/v1/files?filename=a.txt", content=b"x" * (quota // 2))
        assert upload.status_code == 413
        # Ended on either replica, its context is gone and its bytes free for both.
        assert (await second.delete(f"/v1/sessions/{kept.json()['id']}")).status_code == 200
        upload = await first.post("/v1/files?filename=a.txt", content=b"x" * (quota // 2))
        assert upload.status_code == 201, upload.text
        with psycopg.connect(pg_url) as conn:
            blobs = conn.execute(
                "SELECT COUNT(*) FROM blobs WHERE key = %s", (f"context/{kept.json()['id']}",)
            ).fetchone()
        assert blobs == (0,)
        await _writes_at_once_stay_within_the_quota(pg_url, quota, [one, two], [first, second])


async def _writes_at_once_stay_within_the_quota(
    pg_url: str, quota: int, services: list[Service], clients: list[httpx.AsyncClient]
) -> None:
    """Sessions with inline contexts and uploads sent to both replicas at once: the key ends
    at or under its quota, and a refused session leaves neither its context file nor its blob."""
    statuses: list[int] = []

    async def send(client: httpx.AsyncClient, index: int) -> None:
        if index % 3:
            response = await client.post("/v1/sessions", json={"context": "c" * 9_000})
        else:
            response = await client.post("/v1/files?filename=f.txt", content=b"f" * 9_000)
        statuses.append(response.status_code)

    async with anyio.create_task_group() as group:
        for index in range(24):
            group.start_soon(send, clients[index % 2], index)
    assert sorted(set(statuses)) == [201, 413]
    with psycopg.connect(pg_url) as conn:
        (owner,) = conn.execute("SELECT DISTINCT owner FROM files").fetchone() or ("",)
        open_ids = {
            row[0]
            for row in conn.execute("SELECT id FROM sessions WHERE status = 'open'").fetchall()
        }
        blob_keys = {row[0] for row in conn.execute("SELECT key FROM blobs").fetchall()}
    with PgJobStore(pg_url) as store:
        assert store.storage_used(owner) <= quota
    assert {key for key in blob_keys if key.startswith("context/")} == {
        f"context/{session_id}" for session_id in open_ids
    }
    for service in services:
        contexts = {path.parent.name for path in (service.data_dir / "jobs").glob("*/context.*")}
        assert contexts <= open_ids
