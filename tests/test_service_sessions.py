"""Service sessions through real HTTP: a real `rlm serve` process, real sandboxes (one kernel
per session), replayed models; a restart loses the kernel and the next message says so."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import openai
import pytest

from engine.models import Cassette, ReplayServer
from tests.service_support import (
    API_KEY,
    OTHER_KEY,
    Service,
    code,
    engine_container_names,
    root,
    wait_final,
)

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

CASSETTE = [
    # Later queries first: their prompts also quote the earlier queries (the account).
    root(
        "SUM-LATER",
        code(
            "answer['content'] = str(sum(numbers)) if 'numbers' in globals() else 'gone'\n"
            "answer['ready'] = True"
        ),
    ),
    # Held back until the test cancels the message.
    root("SLOW-SESSION", code("answer['content'] = 'late'\nanswer['ready'] = True"), delay_s=300),
    root(
        "PARSE-FIRST",
        code(
            "numbers = [int(x) for x in context.split()]\n"
            "answer['content'] = str(len(numbers))\nanswer['ready'] = True"
        ),
    ),
]


@pytest.fixture(scope="module")
async def replay() -> AsyncIterator[ReplayServer]:
    async with ReplayServer(Cassette(CASSETTE)) as server:
        yield server


@pytest.fixture(scope="module")
async def service(
    replay: ReplayServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Service]:
    svc = Service(
        tmp_path_factory.mktemp("sessions") / "data",
        replay.base_url,
        "--max-sessions-per-key",
        "2",
        "--session-idle",
        "600",
    )
    await anyio.to_thread.run_sync(svc.start)
    try:
        yield svc
    finally:
        await anyio.to_thread.run_sync(svc.stop)


async def ask(http: httpx.AsyncClient, session_id: str, query: str) -> dict[str, Any]:
    response = await http.post(f"/v1/sessions/{session_id}/messages", json={"query": query})
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "succeeded", job
    return dict(job)


async def test_session_messages_share_one_kernel_and_end_with_delete(service: Service) -> None:
    async with service.client() as http:
        created = await http.post("/v1/sessions", json={"context": "3 4 5"})
        assert created.status_code == 201, created.text
        session_id = created.json()["id"]
        first = await ask(http, session_id, "PARSE-FIRST how many numbers?")
        assert first["answer"] == "3" and first["kind"] == "session"
        # wait=false: a job id to follow with the jobs API.
        queued = await http.post(
            f"/v1/sessions/{session_id}/messages",
            json={"query": "SUM-LATER what is their sum?", "wait": False},
        )
        assert queued.status_code == 202
        second = await wait_final(http, queued.json()["id"])
        assert second["answer"] == "12", second  # `numbers` survived from the first query
        assert second["result"]["session_id"] == session_id
        assert second["result"]["kernel_note"] == ""
        events = (await http.get(f"/v1/jobs/{second['id']}/trajectory")).text
        assert '"session"' in events
        session = (await http.get(f"/v1/sessions/{session_id}")).json()
        assert session["status"] == "open"
        assert [t["answer"] for t in session["turns"]] == ["3", "12"]
        assert [t["job_id"] for t in session["turns"]] == [first["id"], second["id"]]
        assert any(session_id in name for name in engine_container_names())
        # Another key sees nothing of it.
        async with service.client(OTHER_KEY) as other:
            assert (await other.get(f"/v1/sessions/{session_id}")).status_code == 404
        ended = await http.delete(f"/v1/sessions/{session_id}")
        assert ended.status_code == 200 and ended.json()["status"] == "closed"
        assert not any(session_id in name for name in engine_container_names())
        late = await http.post(f"/v1/sessions/{session_id}/messages", json={"query": "more"})
        assert late.status_code == 409 and "closed" in late.json()["error"]["message"]
        # Its history stays readable.
        kept = (await http.get(f"/v1/sessions/{session_id}")).json()
        assert kept["closed_reason"] == "ended by the user" and len(kept["turns"]) == 2
        # Deleting a message's job removes its trajectory file from the session's folder.
        trajectory = service.data_dir / "jobs" / session_id / f"{first['id']}.jsonl"
        assert trajectory.is_file()
        assert (await http.delete(f"/v1/jobs/{first['id']}")).status_code == 200
        assert not trajectory.exists()


async def test_cancelling_a_message_keeps_the_session_and_its_kernel(service: Service) -> None:
    async with service.client() as http:
        session_id = (await http.post("/v1/sessions", json={"context": "1 2"})).json()["id"]
        assert (await ask(http, session_id, "PARSE-FIRST how many?"))["answer"] == "2"
        slow = await http.post(
            f"/v1/sessions/{session_id}/messages",
            json={"query": "SLOW-SESSION take your time", "wait": False},
        )
        job_id = slow.json()["id"]
        with anyio.fail_after(60):
            while "sandbox_ready" not in (await http.get(f"/v1/jobs/{job_id}/trajectory")).text:
                await anyio.sleep(0.2)
        assert (await http.post(f"/v1/jobs/{job_id}/cancel")).status_code in (200, 202)
        cancelled = await wait_final(http, job_id)
        assert cancelled["status"] == "cancelled"
        # The kernel (and `numbers`) is still there for the next message.
        assert (await ask(http, session_id, "SUM-LATER the sum?"))["answer"] == "3"
        turns = (await http.get(f"/v1/sessions/{session_id}")).json()["turns"]
        assert [t["answer"] for t in turns] == ["2", "3"]
        await http.delete(f"/v1/sessions/{session_id}")


async def test_session_limits_and_bad_requests(service: Service) -> None:
    async with service.client() as http:
        ids = [(await http.post("/v1/sessions", json={})).json()["id"] for _ in range(2)]
        refused = await http.post("/v1/sessions", json={})
        assert refused.status_code == 429 and "2 open sessions" in refused.text
        bad = await http.post("/v1/sessions", json={"query": "x"})
        assert bad.status_code == 422 and "messages" in bad.json()["error"]["message"]
        empty = await http.post(f"/v1/sessions/{ids[0]}/messages", json={"query": " "})
        assert empty.status_code == 422
        unknown = await http.post("/v1/sessions/sess-nope/messages", json={"query": "q"})
        assert unknown.status_code == 404
        for session_id in ids:
            assert (await http.delete(f"/v1/sessions/{session_id}")).status_code == 200
        assert (await http.post("/v1/sessions", json={})).status_code == 201


async def test_openai_chat_with_a_session_header_uses_the_session(service: Service) -> None:
    async with service.client() as http:
        session_id = (await http.post("/v1/sessions", json={"context": "10 20"})).json()["id"]
    client = openai.AsyncOpenAI(base_url=service.url + "/v1", api_key=API_KEY, max_retries=0)
    async with client:
        headers = {"X-RLM-Session": session_id}
        first = await client.chat.completions.create(
            model="rlm",
            messages=[{"role": "user", "content": "PARSE-FIRST count them"}],
            extra_headers=headers,
        )
        second = await client.chat.completions.create(
            model="rlm",
            messages=[
                {"role": "user", "content": "PARSE-FIRST count them"},
                {"role": "assistant", "content": "2"},
                {"role": "user", "content": "SUM-LATER add them"},
            ],
            extra_headers=headers,
        )
    assert first.choices[0].message.content == "2"
    assert second.choices[0].message.content == "30"
    async with service.client() as http:
        turns = (await http.get(f"/v1/sessions/{session_id}")).json()["turns"]
        assert [t["query"] for t in turns] == ["PARSE-FIRST count them", "SUM-LATER add them"]
        await http.delete(f"/v1/sessions/{session_id}")


async def test_after_a_restart_the_next_message_gets_a_fresh_kernel(service: Service) -> None:
    async with service.client() as http:
        session_id = (await http.post("/v1/sessions", json={"context": "1 2"})).json()["id"]
        assert (await ask(http, session_id, "PARSE-FIRST how many?"))["answer"] == "2"
    await anyio.to_thread.run_sync(service.stop)
    await anyio.to_thread.run_sync(service.start)
    async with service.client() as http:
        after = await ask(http, session_id, "SUM-LATER the sum?")
        assert after["answer"] == "gone"  # the variables went with the old kernel
        assert "service restarted" in after["result"]["kernel_note"]
        session = (await http.get(f"/v1/sessions/{session_id}")).json()
        assert "fresh kernel" in session["turns"][1]["kernel_note"]
        await http.delete(f"/v1/sessions/{session_id}")


async def test_idle_sessions_are_closed_and_stay_readable(service: Service) -> None:
    await anyio.to_thread.run_sync(service.stop)
    await anyio.to_thread.run_sync(service.start, "--session-idle", "2")
    async with service.client() as http:
        session_id = (await http.post("/v1/sessions", json={"context": "7 8"})).json()["id"]
        assert (await ask(http, session_id, "PARSE-FIRST how many?"))["answer"] == "2"
        with anyio.fail_after(60):
            while (session := (await http.get(f"/v1/sessions/{session_id}")).json())[
                "status"
            ] == "open":
                await anyio.sleep(0.5)
        assert session["closed_reason"] == "idle" and len(session["turns"]) == 1
        assert not any(session_id in name for name in engine_container_names())
        late = await http.post(f"/v1/sessions/{session_id}/messages", json={"query": "q"})
        assert late.status_code == 409


async def test_session_kernels_have_a_service_wide_ceiling(service: Service) -> None:
    # Idle session kernels hold no job slot; the operator's ceiling bounds them over all keys.
    await anyio.to_thread.run_sync(service.stop)
    await anyio.to_thread.run_sync(service.start, "--max-session-kernels", "1")
    async with service.client() as http, service.client(OTHER_KEY) as other:
        mine = (await http.post("/v1/sessions", json={"context": "1 2"})).json()["id"]
        theirs = (await other.post("/v1/sessions", json={"context": "3 4 5"})).json()["id"]
        assert (await ask(http, mine, "PARSE-FIRST how many?"))["answer"] == "2"
        refused = await other.post(
            f"/v1/sessions/{theirs}/messages", json={"query": "PARSE-FIRST how many?"}
        )
        assert refused.status_code == 429, refused.text
        assert "--max-session-kernels" in refused.json()["error"]["message"]
        # The session that holds the kernel goes on; ending it frees the place.
        assert (await ask(http, mine, "SUM-LATER the sum?"))["answer"] == "3"
        await http.delete(f"/v1/sessions/{mine}")
        assert (await ask(other, theirs, "PARSE-FIRST how many?"))["answer"] == "3"
        await other.delete(f"/v1/sessions/{theirs}")
