"""The jobs API through real HTTP: a real `rlm serve` process, real sandboxes, replayed models."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from engine.models import Cassette, ReplayServer
from tests.service_support import (
    METRICS_KEY,
    OTHER_KEY,
    Service,
    code,
    engine_container_names,
    root,
    sub,
    wait_final,
)

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

COUNT = code(
    "n = sum('ERROR' in line for line in context.splitlines())\n"
    "answer['content'] = str(n)\nanswer['ready'] = True"
)
TWO_TURNS_1 = code("r = llm_query('SUBASK what is the colour?')\nprint('STEP1-DONE', r)")
TWO_TURNS_2 = code("answer['content'] = r.upper()\nanswer['ready'] = True")
CASSETTE = [
    root("STEP1-DONE", TWO_TURNS_2),
    root("TWO-TURNS", TWO_TURNS_1),
    root("COUNT-ERRORS", COUNT),
    # Held back for minutes: the job is running (its sandbox is up) while the test acts.
    root("SLOW-JOB", code("answer['content'] = 'slow'\nanswer['ready'] = True"), delay_s=300),
    root(
        "MULTI-FILES",
        code("answer['content'] = repr(sorted(context.items()))\nanswer['ready'] = 1"),
    ),
    sub("SUBASK", "teal"),
]


def log_text(errors: int) -> str:
    rng = random.Random(errors)
    lines = [f"2024-01-01 INFO step {i}" for i in range(400)]
    for index in rng.sample(range(400), errors):
        lines[index] = f"2024-01-01 ERROR failure {index}"
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
async def service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    async with ReplayServer(Cassette(CASSETTE)) as replay:
        data = tmp_path_factory.mktemp("service") / "data"
        svc = Service(
            data,
            replay.base_url,
            "--max-sandboxes",
            "2",
            "--max-jobs-per-key",
            "3",
            "--max-upload",
            "64k",
        )
        await anyio.to_thread.run_sync(svc.start)
        try:
            yield svc
        finally:
            await anyio.to_thread.run_sync(svc.stop)


async def submit(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def wait_status(client: httpx.AsyncClient, job_id: str, status: str) -> dict[str, Any]:
    with anyio.fail_after(120):
        while True:
            job = (await client.get(f"/v1/jobs/{job_id}")).json()
            if job["status"] == status:
                return job
            await anyio.sleep(0.1)


async def test_auth_is_required_except_for_public_routes(service: Service) -> None:
    async with service.client(key=None) as anonymous, service.client(key="wrong-key-123") as bad:
        for client in (anonymous, bad):
            for method, path in (("GET", "/v1/models"), ("POST", "/v1/jobs"), ("GET", "/v1/jobs")):
                response = await client.request(method, path, json={"query": "x"})
                assert response.status_code == 401, (method, path)
                assert "Authorization: Bearer" in response.json()["error"]["message"]
                assert response.headers["www-authenticate"] == "Bearer"
        health = await anonymous.get("/healthz")
        # Public, so it tells nothing about tenants: no job counts, no load.
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        document = (await anonymous.get("/openapi.json")).json()
        assert document["openapi"].startswith("3.")
        assert {"/v1/jobs", "/v1/chat/completions", "/v1/jobs/{job_id}/events"} <= set(
            document["paths"]
        )
        # Every tenant's counts: the operator's metrics key only, not a tenant's API key.
        assert (await anonymous.get("/metrics")).status_code == 401
    async with service.client() as tenant, service.client(key=METRICS_KEY) as operator:
        assert (await tenant.get("/metrics")).status_code == 401
        assert (await operator.get("/metrics")).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({}, 422, "query"),
        ({"query": "  "}, 422, "query"),
        ({"query": "q", "colour": "red"}, 422, "colour"),
        ({"query": "q", "limits": {"max_iterations": "ten"}}, 422, "limits.max_iterations"),
        ({"query": "q", "limits": {"max_cost": -1}}, 422, "limits.max_cost"),
        ({"query": "q", "limits": {"turns": 3}}, 422, "limits.turns"),
        ({"query": "q", "context": "x", "file_id": "file-1"}, 422, None),
        ({"query": "q", "file_id": "file-doesnotexist"}, 404, "file_id"),
        ({"query": "q", "max_retries": 99}, 422, "max_retries"),
    ],
)
async def test_invalid_job_requests_get_clear_4xx(
    service: Service, body: dict[str, Any], status: int, param: str | None
) -> None:
    async with service.client() as client:
        response = await client.post("/v1/jobs", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"]
    assert error.get("param") == param


async def test_malformed_json_and_unknown_routes(service: Service) -> None:
    async with service.client() as client:
        response = await client.post(
            "/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        assert "not valid JSON" in response.json()["error"]["message"]
        missing = await client.get("/v1/jobs/0123456789abcdef")
        assert missing.status_code == 404 and "no job" in missing.json()["error"]["message"]
        assert (await client.get("/v1/nothing")).status_code == 404


async def test_inline_context_job_answers_and_is_private(service: Service) -> None:
    async with service.client() as client, service.client(key=OTHER_KEY) as other:
        job = await submit(
            client, query="COUNT-ERRORS: how many ERROR lines?", context=log_text(23)
        )
        assert job["status"] in ("queued", "running") and job["request"]["inline_context"]
        done = await wait_final(client, job["id"])
        assert done["status"] == "succeeded", done
        assert done["answer"] == "23" and done["result"]["ready"] is True
        assert done["result"]["usage_total"]["total_tokens"] > 0
        assert done["attempts"] == 1 and done["started_at"] >= done["created_at"]
        assert "trajectory_path" not in done["result"]  # no host paths leak
        # Another key cannot see it.
        assert (await other.get(f"/v1/jobs/{job['id']}")).status_code == 404
        assert job["id"] not in [j["id"] for j in (await other.get("/v1/jobs")).json()["data"]]
        lines = (await client.get(f"/v1/jobs/{job['id']}/trajectory")).text.splitlines()
        events = [json.loads(line) for line in lines]
        assert events[0]["type"] == "run_start" and events[-1]["type"] == "run_end"
        assert events[0]["task_id"] == job["id"]
    assert not [name for name in engine_container_names() if job["id"] in name]


async def test_upload_then_job_on_the_file(service: Service, tmp_path: Path) -> None:
    async with service.client() as client:
        upload = await client.post(
            "/v1/files",
            params={"filename": "../weird name.log"},
            content=log_text(11).encode(),
            headers={"content-type": "application/octet-stream"},
        )
        assert upload.status_code == 201, upload.text
        meta = upload.json()
        assert meta["filename"] == "weird_name.log" and meta["bytes"] == len(log_text(11))
        assert (await client.get(f"/v1/files/{meta['id']}")).json() == meta
        job = await submit(client, query="COUNT-ERRORS in the file", file_id=meta["id"])
        done = await wait_final(client, job["id"])
        assert (done["status"], done["answer"]) == ("succeeded", "11")
        stored = list((service.data_dir / "files" / meta["id"]).iterdir())
        assert [p.name for p in stored] == ["weird_name.log"]
        assert stored[0].stat().st_mode & 0o077 == 0  # private: the sandbox gets a copy


async def test_several_files_make_a_directory_context(service: Service) -> None:
    async with service.client() as client:
        ids = []
        for name, text in (("b.txt", "bee"), ("a.json", '{"k": 1}')):
            upload = await client.post("/v1/files", params={"filename": name}, content=text)
            ids.append(upload.json()["id"])
        job = await submit(client, query="MULTI-FILES: list them", file_ids=ids)
        done = await wait_final(client, job["id"])
    assert done["answer"] == repr([("a.json", '{"k": 1}'), ("b.txt", "bee")])


async def test_upload_over_the_limit_is_refused_and_leaves_nothing(service: Service) -> None:
    files_dir = service.data_dir / "files"
    before = set(files_dir.iterdir()) if files_dir.exists() else set()

    async def body() -> AsyncIterator[bytes]:  # no Content-Length: the limit applies mid-stream
        for _ in range(100):
            yield b"x" * 1024

    async with service.client() as client:
        response = await client.post("/v1/files", params={"filename": "big.txt"}, content=body())
        assert response.status_code == 413
        assert "larger than the limit" in response.json()["error"]["message"]
        multipart = await client.post("/v1/files", files={"file": ("a.txt", b"abc")})
        assert multipart.status_code == 415
    after = set(files_dir.iterdir()) if files_dir.exists() else set()
    assert after == before


async def read_sse(response: httpx.Response) -> list[dict[str, Any]]:
    """Parse an SSE stream into [{"id", "event", "data"}] until the server closes it."""
    messages, current = [], {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in current:
                messages.append(current)
            current = {}
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(": ")
            current[field] = json.loads(value) if field == "data" else value
    return messages


async def test_sse_events_arrive_in_order_and_match_the_trajectory(service: Service) -> None:
    async with service.client() as client:
        job = await submit(client, query="TWO-TURNS: which colour?")
        async with client.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            messages = await read_sse(response)
        end = messages.pop()
        assert end["event"] == "end" and end["data"]["status"] == "succeeded"
        assert end["data"]["answer"] == "TEAL"
        assert [int(m["id"]) for m in messages] == list(range(1, len(messages) + 1))
        types = [m["event"] for m in messages]
        assert types == [
            "run_start",
            "sandbox_ready",
            "turn",
            "sub_call",
            "cell",
            "turn",
            "cell",
            "run_end",
        ]
        events = [m["data"] for m in messages]
        by_type = {e["type"]: e for e in events}
        assert by_type["sub_call"]["parent_id"] == events[4]["id"]  # made by the first cell
        assert by_type["sub_call"]["response"] == "teal"
        assert "STEP1-DONE teal" in events[4]["output"]
        trajectory = (await client.get(f"/v1/jobs/{job['id']}/trajectory")).text
        assert [json.loads(line) for line in trajectory.splitlines()] == events
        # Resuming after an event id replays only what came later.
        async with client.stream(
            "GET", f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "6"}
        ) as response:
            resumed = await read_sse(response)
        assert [m.get("id") for m in resumed] == ["7", "8", None]


async def test_cancel_a_running_job_removes_its_sandbox(service: Service) -> None:
    async with service.client() as client:
        job = await submit(client, query="SLOW-JOB one")
        await wait_status(client, job["id"], "running")
        with anyio.fail_after(60):
            while not any(job["id"] in name for name in engine_container_names()):
                await anyio.sleep(0.2)
        response = await client.post(f"/v1/jobs/{job['id']}/cancel")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"
        again = await client.post(f"/v1/jobs/{job['id']}/cancel")
        assert again.status_code == 409
        events = (await client.get(f"/v1/jobs/{job['id']}/trajectory")).text.splitlines()
        assert json.loads(events[-1])["stop_reason"] == "cancelled"
    assert not [name for name in engine_container_names() if job["id"] in name]


async def test_admission_queue_and_per_key_limit(service: Service) -> None:
    async with service.client() as client:
        slow = [await submit(client, query=f"SLOW-JOB {i}") for i in range(2)]
        for job in slow:
            await wait_status(client, job["id"], "running")
        queued = await submit(client, query="COUNT-ERRORS", context=log_text(3))
        await anyio.sleep(0.5)
        assert (await client.get(f"/v1/jobs/{queued['id']}")).json()["status"] == "queued"
        async with service.client(key=METRICS_KEY) as operator:
            metrics = (await operator.get("/metrics")).text
        assert 'rlm_jobs{state="queued"} 1' in metrics
        assert 'rlm_jobs{state="running"} 2' in metrics
        assert "rlm_sandbox_slots_in_use 2" in metrics
        assert "rlm_sandbox_pool_ready " in metrics  # the warm pool's gauges are exported
        assert "rlm_sandbox_pool_discarded 0" in metrics
        assert "rlm_sandbox_slots_waiting 1" in metrics
        # Three active jobs is this key's limit.
        refused = await client.post("/v1/jobs", json={"query": "COUNT-ERRORS"})
        assert refused.status_code == 429
        assert "3 queued or running jobs" in refused.json()["error"]["message"]
        # Cancelling the queued job is immediate; freeing a slot lets queued work run.
        cancelled = await client.post(f"/v1/jobs/{queued['id']}/cancel")
        assert cancelled.json()["status"] == "cancelled"
        last = await submit(client, query="COUNT-ERRORS", context=log_text(4))
        await client.post(f"/v1/jobs/{slow[0]['id']}/cancel")
        done = await wait_final(client, last["id"])
        assert (done["status"], done["answer"]) == ("succeeded", "4")
        await client.post(f"/v1/jobs/{slow[1]['id']}/cancel")
        assert (await wait_final(client, slow[1]["id"]))["status"] == "cancelled"


async def test_metrics_count_model_calls_tokens_and_latency(service: Service) -> None:
    async with service.client() as client:
        job = await submit(client, query="TWO-TURNS again")
        assert (await wait_final(client, job["id"]))["status"] == "succeeded"
    async with service.client(key=METRICS_KEY) as operator:
        text = (await operator.get("/metrics")).text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    assert values['rlm_model_calls_total{role="root",status="ok"}'] >= 2
    assert values['rlm_model_calls_total{role="sub",status="ok"}'] >= 1
    assert values['rlm_tokens_total{kind="prompt",role="root"}'] >= 200
    assert values['rlm_jobs_total{status="succeeded"}'] >= 1
    assert values['rlm_job_seconds_count{status="succeeded"}'] >= 1
    assert values["rlm_sandboxes_live"] == 0
    assert 'rlm_model_call_seconds_bucket{role="root",le="+Inf"}' in values


async def wait_idle(client: httpx.AsyncClient) -> None:
    """Wait until earlier tests' jobs have ended, so a new job is admitted at once."""
    with anyio.fail_after(120):
        while any(
            job["status"] in ("queued", "running")
            for job in (await client.get("/v1/jobs")).json()["data"]
        ):
            await anyio.sleep(0.1)


async def test_closing_a_chat_stream_cancels_its_job(service: Service) -> None:
    body = {"model": "rlm", "messages": [{"role": "user", "content": "SLOW-JOB chat"}]}
    async with service.client() as client:
        await wait_idle(client)
        async with client.stream(
            "POST", "/v1/chat/completions", json={**body, "stream": True}
        ) as r:
            # Keep the iterator: a dropped one is closed when collected, which closes the
            # stream before the test means to hang up.
            lines = r.aiter_lines()
            first = await lines.__anext__()
            assert first.startswith("data: ") and '"role": "assistant"' in first
            chats = [
                j for j in (await client.get("/v1/jobs")).json()["data"] if j["kind"] == "chat"
            ]
            job_id = chats[-1]["id"]
            await wait_status(client, job_id, "running")
        # The client hung up: the service stops paying for the run.
        job = await wait_final(client, job_id, timeout=120)
        assert job["status"] == "cancelled", job
    assert not [name for name in engine_container_names() if job_id in name]
