"""Attacks by one API key on another key's data and on what the service shares between keys.

One real `rlm serve` (real sandboxes, the replay model server) for the module: a hostile key
(``OTHER_KEY``) goes after the victim's (``API_KEY``) jobs, files and sessions through every
route, looks for what the victim's task left in the sandbox it ran in, and holds requests open
to take the service's connections; the victim keeps being served throughout.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import anyio
import httpx
import pytest

from engine.models import Cassette, ReplayServer
from tests.attacks.conftest import AttackReport, RssMeter
from tests.service_support import (
    OTHER_KEY,
    Service,
    code,
    innocent_answer,
    root,
    sub,
    wait_final,
)

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

#: The victim's task leaves what it can in its sandbox: a file in every writable folder, a
#: variable in its environment, a process and a thread that outlive the cell, a global, a
#: name in builtins and the runtime's modules, and the runtime's llm_query and bridge replies
#: replaced.
LEAVE = code(
    "import builtins, os, subprocess, sys, threading, time\n"
    "for folder in ('/tmp', '/dev/shm', os.path.expanduser('~')):\n"
    "    open(os.path.join(folder, 'victim-secret.txt'), 'w').write('secret')\n"
    "os.environ['VICTIM_SECRET'] = 'secret'\n"
    "subprocess.Popen(['sleep', '3000'])\n"
    "threading.Thread(target=time.sleep, args=(3000,), daemon=True).start()\n"
    "VICTIM_SECRET = builtins.VICTIM_SECRET = 'secret'\n"
    "for module in [m for n, m in list(sys.modules.items()) if n.startswith('rlm_runtime')]:\n"
    "    module.VICTIM_SECRET = 'secret'\n"
    "    if hasattr(module, 'llm_query'):\n"
    "        module.llm_query = lambda *a, **k: 'planted'\n"
    "sys.modules['rlm_runtime.bridge_client']._reply_text = lambda *a, **k: 'planted'\n"
    "answer['content'] = 'left'\nanswer['ready'] = True"
)
#: The attacker's next task looks for it.
LOOK = code(
    "import os\n"
    "found = [os.path.join(d, n) for d in ('/tmp', '/dev/shm', os.path.expanduser('~'))\n"
    "         for n in os.listdir(d) if 'secret' in n]\n"
    "if 'VICTIM_SECRET' in os.environ:\n"
    "    found.append('environment')\n"
    "import builtins, sys\n"
    "if 'VICTIM_SECRET' in globals() or hasattr(builtins, 'VICTIM_SECRET'):\n"
    "    found.append('global')\n"
    "if any(hasattr(m, 'VICTIM_SECRET') for n, m in list(sys.modules.items())\n"
    "       if n.startswith('rlm_runtime')):\n"
    "    found.append('runtime module')\n"
    "if llm_query('LOOKED') == 'planted':\n"
    "    found.append('llm_query')\n"
    "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
    "    try:\n"
    "        if b'sleep' in open(f'/proc/{pid}/cmdline', 'rb').read():\n"
    "            found.append('process')\n"
    "    except OSError:\n"
    "        pass\n"
    "answer['content'] = repr(found)\nanswer['ready'] = True"
)
CASSETTE = [
    root("INNOCENT", code("answer['content'] = str(sum(range(10)))\nanswer['ready'] = True")),
    root("QUICK", code("answer['content'] = 'done'\nanswer['ready'] = True")),
    # LOOK first: a session's later question shows its earlier ones (LEAVE) to the root.
    root("LOOK", LOOK),
    root("LEAVE", LEAVE),
    sub("LOOKED", "the provider's answer"),
    # Runs long enough for streams to follow it; cancelled by the test.
    root("STEADY", code("answer['content'] = 'done'\nanswer['ready'] = True"), delay_s=120),
]
STREAMS_PER_KEY = 4
#: Sandbox code fans out: 16 threads (the bridge's connection cap), each an llm_batch of
#: 1,000 prompts, 16,000 sub-calls asked for at once.
FAN_OUT = code(
    "from concurrent.futures import ThreadPoolExecutor\n"
    "def batch(i):\n"
    "    return llm_batch([f'FANNED {i} {j}' for j in range(1000)])\n"
    "with ThreadPoolExecutor(16) as pool:\n"
    "    answers = [a for out in pool.map(batch, range(16)) for a in out]\n"
    "refused = sum(a.startswith('[ERROR]') for a in answers)\n"
    "answer['content'] = f'{len(answers) - refused} {refused}'\nanswer['ready'] = True"
)
#: The same from two rlm_query children at once, and the parent's own batch meanwhile.
FAN_TREE = code(
    "from concurrent.futures import ThreadPoolExecutor\n"
    "with ThreadPoolExecutor(2) as pool:\n"
    "    kids = list(pool.map(lambda i: rlm_query(f'CHILD-FAN-OUT {i}'), range(2)))\n"
    "own = llm_batch([f'FANNED parent {j}' for j in range(1000)])\n"
    "mine = sum(not a.startswith('[ERROR]') for a in own)\n"
    "answer['content'] = ' '.join([*kids, str(mine)])\nanswer['ready'] = True"
)
CASSETTE += [
    root("FAN-TREE", FAN_TREE),
    root("FAN-OUT", FAN_OUT),
    sub("CHILD-FAN-OUT", FAN_OUT),  # a child's root is the sub model
    # Held back a little, so that calls the scheduler let through would pile up here.
    sub("FANNED", "ok", delay_s=0.05),
]


@pytest.fixture(scope="module")
async def replay() -> AsyncIterator[ReplayServer]:
    async with ReplayServer(Cassette(CASSETTE)) as server:
        yield server


@pytest.fixture(scope="module")
async def service(
    replay: ReplayServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Service]:
    data = tmp_path_factory.mktemp("keys") / "data"
    svc = Service(data, replay.base_url, "--max-streams-per-key", str(STREAMS_PER_KEY))
    await anyio.to_thread.run_sync(svc.start)
    try:
        yield svc
    finally:
        await anyio.to_thread.run_sync(svc.stop)


def _meter(service: Service) -> RssMeter:
    assert service.proc is not None
    return RssMeter(service.proc.pid).start()


async def test_attack_another_keys_ids_on_every_route(
    service: Service, attack_report: AttackReport
) -> None:
    meter = _meter(service)
    async with service.client() as victim, service.client(OTHER_KEY) as attacker:
        job = (await victim.post("/v1/jobs", json={"query": "QUICK", "context": "private"})).json()
        upload = await victim.post("/v1/files?filename=a.txt", content=b"private file")
        file_id = upload.json()["id"]
        session_id = (await victim.post("/v1/sessions", json={"context": "private"})).json()["id"]
        await wait_final(victim, job["id"])
        job_id = job["id"]
        probes: list[tuple[str, str, object, dict[str, str]]] = [
            ("GET", f"/v1/jobs/{job_id}", None, {}),
            ("GET", f"/v1/jobs/{job_id}/events", None, {}),
            ("GET", f"/v1/jobs/{job_id}/trajectory", None, {}),
            ("POST", f"/v1/jobs/{job_id}/cancel", None, {}),
            ("DELETE", f"/v1/jobs/{job_id}", None, {}),
            ("GET", f"/v1/files/{file_id}", None, {}),
            ("DELETE", f"/v1/files/{file_id}", None, {}),
            ("POST", "/v1/jobs", {"query": "QUICK", "file_id": file_id}, {}),
            ("POST", "/v1/sessions", {"file_ids": [file_id]}, {}),
            ("GET", f"/v1/sessions/{session_id}", None, {}),
            ("POST", f"/v1/sessions/{session_id}/messages", {"query": "QUICK"}, {}),
            ("DELETE", f"/v1/sessions/{session_id}", None, {}),
            (
                "POST",
                "/v1/chat/completions",
                {"model": "rlm", "messages": [{"role": "user", "content": "QUICK"}]},
                {"x-rlm-session": session_id},
            ),
        ]
        statuses = []
        for method, path, body, headers in probes:
            response = await attacker.request(method, path, json=body, headers=headers)
            statuses.append(response.status_code)
            # The same 404 as for an id that never existed: nothing confirms the id.
            assert response.status_code == 404, (method, path, response.text)
            message = response.json()["error"]["message"]
            assert "another" not in message and "owner" not in message, message
        # Another key's ids as a listing's cursor.
        for listing in (f"/v1/jobs?after={job_id}", f"/v1/sessions?after={session_id}"):
            response = await attacker.get(listing)
            assert response.status_code == 404, (listing, response.text)
            statuses.append(response.status_code)
        never = await attacker.get("/v1/jobs/0123456789abcdef")
        assert never.status_code == 404
        for listing in ("/v1/jobs", "/v1/sessions", "/v1/jobs?status=succeeded' OR '1'='1"):
            assert (await attacker.get(listing)).json()["data"] == []
        # Everything is still the victim's and intact.
        assert (await victim.get(f"/v1/jobs/{job_id}")).json()["status"] == "succeeded"
        assert (await victim.get(f"/v1/files/{file_id}")).status_code == 200
        assert (await victim.get(f"/v1/sessions/{session_id}")).json()["status"] == "open"
        await victim.delete(f"/v1/sessions/{session_id}")
    growth = meter.growth()
    attack_report(
        "another key's job, file and session ids on every route (read, cancel, delete, "
        "stream, trajectory, use as context, session message, chat with x-rlm-session, "
        "listing cursor)",
        "every id is looked up with its owner (a hash of the key)",
        f"404 on all {len(statuses)} routes, as for an id that never existed; listings empty",
        rss_growth=growth,
    )


async def test_attack_what_a_task_leaves_in_its_sandbox(
    service: Service, attack_report: AttackReport
) -> None:
    meter = _meter(service)
    async with service.client() as victim, service.client(OTHER_KEY) as attacker:
        left = await wait_final(
            victim, (await victim.post("/v1/jobs", json={"query": "LEAVE"})).json()["id"]
        )
        assert left["answer"] == "left", left
        found = []
        # The next two tasks (a warm sandbox, then whichever comes next) find nothing.
        for _ in range(2):
            job = (await attacker.post("/v1/jobs", json={"query": "LOOK"})).json()
            done = await wait_final(attacker, job["id"])
            assert done["status"] == "succeeded", done
            found.append(done["answer"])
        # A session's kernel after the victim's session used its own.
        mine = (await victim.post("/v1/sessions", json={})).json()["id"]
        theirs = (await attacker.post("/v1/sessions", json={})).json()["id"]
        said = await victim.post(f"/v1/sessions/{mine}/messages", json={"query": "LEAVE"})
        assert said.json()["answer"] == "left"
        looked = await attacker.post(f"/v1/sessions/{theirs}/messages", json={"query": "LOOK"})
        found.append(looked.json()["answer"])
        # The same look in the victim's own session (one kernel by design) finds every kind.
        own = await victim.post(f"/v1/sessions/{mine}/messages", json={"query": "LOOK"})
        seen = own.json()["answer"]
        for session_id, client in ((mine, victim), (theirs, attacker)):
            await client.delete(f"/v1/sessions/{session_id}")
    assert found == ["[]"] * 3, found
    kinds = ("tmp", "shm", "home", "environment", "process", "global", "runtime module")
    assert all(kind in seen for kind in (*kinds, "'llm_query'")), seen
    attack_report(
        "a task leaves files in /tmp, /dev/shm and home, an environment variable, a process "
        "and a thread, globals and names in the runtime's modules, its llm_query replaced; "
        "another key's next tasks and session look for them and call llm_query",
        "one sandbox per task (warm ones too), destroyed after it; one per session",
        "nothing found by the next 2 jobs and a session of the other key (the same look in "
        "the victim's own session, one kernel by design, found all 8 kinds)",
        rss_growth=meter.growth(),
    )


async def test_attack_one_key_holds_requests_open(
    service: Service, attack_report: AttackReport
) -> None:
    meter = _meter(service)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with (
        service.client(limits=limits) as hog,
        service.client(OTHER_KEY) as other,
        AsyncExitStack() as streams,
    ):
        job = (await hog.post("/v1/jobs", json={"query": "STEADY"})).json()
        events = f"/v1/jobs/{job['id']}/events"
        statuses = []
        for _ in range(STREAMS_PER_KEY * 4):
            response = await streams.enter_async_context(hog.stream("GET", events))
            statuses.append(response.status_code)
        assert (
            statuses.count(200) == STREAMS_PER_KEY
            and statuses.count(429) == len(statuses) - STREAMS_PER_KEY
        )
        refused = [r for r in statuses if r == 429]
        # Waits for an answer and uploads are counted with the streams.
        chat = await hog.post(
            "/v1/chat/completions",
            json={"model": "rlm", "messages": [{"role": "user", "content": "QUICK"}]},
        )
        upload = await hog.post("/v1/files?filename=x.txt", content=b"x")
        # So is receiving a JSON body (one sent a byte at a time holds its connection).
        submit = await hog.post("/v1/jobs", json={"query": "QUICK"})
        assert submit.status_code == 429, submit.text
        assert (chat.status_code, upload.status_code) == (429, 429), (chat.text, upload.text)
        assert "--max-streams-per-key" in chat.json()["error"]["message"]
        # The refused chat left no job behind: only the followed one is active.
        active = [j for j in (await hog.get("/v1/jobs")).json()["data"] if not j["finished_at"]]
        assert [j["id"] for j in active] == [job["id"]]
        # The other key is served meanwhile, streams included.
        theirs = (await other.post("/v1/jobs", json={"query": "QUICK"})).json()
        async with other.stream("GET", f"/v1/jobs/{theirs['id']}/events") as stream:
            assert stream.status_code == 200
            lines = [line async for line in stream.aiter_lines()]
        assert any(line == "event: end" for line in lines), lines[-5:]
        # A cancel while the key holds its limit still cancels; it only does not wait.
        cancelled = await hog.post(f"/v1/jobs/{job['id']}/cancel")
        assert cancelled.status_code in (200, 202), cancelled.text
        assert (await wait_final(hog, job["id"]))["status"] == "cancelled"
        await streams.aclose()
        # Closed streams are released (on the service's side once it sees the close).
        with anyio.fail_after(30):
            while True:
                async with hog.stream("GET", events) as again:
                    if again.status_code == 200:
                        assert "event: end" in [line async for line in again.aiter_lines()]
                        break
                await anyio.sleep(0.2)
        ended = [json.loads(line[6:]) for line in lines if line.startswith("data: ")][-1]
        assert ended["status"] == "succeeded"
    assert await innocent_answer(service) == "45"
    attack_report(
        f"one key opens {STREAMS_PER_KEY * 4} event streams to one job, then a chat wait, an "
        "upload, a job submission and a cancel",
        f"requests held open per key (here {STREAMS_PER_KEY}; 32 by default: streams, waits, "
        "uploads, JSON bodies being received, cancel and delete waits)",
        f"{STREAMS_PER_KEY} streams served, {len(refused)} and the chat and upload refused "
        "with 429 (the submission too), the cancel done without its wait; the other key "
        "streamed and got its "
        "answers; released on close",
        rss_growth=meter.growth(),
    )


async def test_attack_list_every_job_at_once(service: Service, attack_report: AttackReport) -> None:
    meter = _meter(service)
    async with service.client() as client:
        for _ in range(3):
            await wait_final(
                client, (await client.post("/v1/jobs", json={"query": "QUICK"})).json()["id"]
            )
        everything = []
        after = ""
        while True:  # one job per page, following the cursor
            page = (await client.get(f"/v1/jobs?limit=1{after}")).json()
            assert len(page["data"]) == 1
            everything += page["data"]
            if not page["has_more"]:
                break
            after = f"&after={page['last_id']}"
        ids = [job["id"] for job in everything]
        assert len(ids) >= 3 and len(set(ids)) == len(ids)
        assert ids == [job["id"] for job in (await client.get("/v1/jobs")).json()["data"]]
        refused = []
        for limit in ("0", "101", "-1", "1e3", "abc"):
            response = await client.get(f"/v1/jobs?limit={limit}")
            assert response.status_code == 422, (limit, response.text)
            refused.append(limit)
        # A row of the listing is bounded too: the query (100,000 characters) and the schema.
        schema = {"type": "string", "description": "x" * (100 << 10)}
        big = await client.post("/v1/jobs", json={"query": "QUICK", "output_schema": schema})
        assert big.status_code == 422 and "65,536" in big.json()["error"]["message"], big.text
        # A session message's query too, sent directly or through the chat API.
        session_id = (await client.post("/v1/sessions", json={})).json()["id"]
        long_query = "q" * 200_000
        direct = await client.post(
            f"/v1/sessions/{session_id}/messages", json={"query": long_query}
        )
        chat = await client.post(
            "/v1/chat/completions",
            headers={"x-rlm-session": session_id},
            json={"model": "rlm", "messages": [{"role": "user", "content": long_query}]},
        )
        for response in (direct, chat):
            assert response.status_code == 422, response.text
            assert "100,000" in response.json()["error"]["message"]
        await client.delete(f"/v1/sessions/{session_id}")
        # A job naming thousands of files: each one a store lookup on the shared loop.
        many = [f"file-{index:020x}" for index in range(1_001)]
        for route, body in (
            ("/v1/jobs", {"query": "QUICK", "file_ids": many}),
            (
                "/v1/chat/completions",
                {
                    "model": "rlm",
                    "messages": [{"role": "user", "content": "QUICK"}],
                    "rlm": {"file_ids": many},
                },
            ),
        ):
            response = await client.post(route, json=body)
            assert response.status_code == 422 and "1,000" in response.text, response.text
    attack_report(
        "list every job of a key in one response (700 jobs with 100 KB queries: 99 MiB a "
        "request; four at once grew the service by 660 MiB and stalled other keys for 9 s)",
        "listings in pages of at most 100 (?limit=, ?after= cursor of the key's own ids); "
        "output schemas at most 64 KiB, queries (session messages too) 100,000 characters, "
        "1,000 files per job",
        f"{len(ids)} jobs listed one per page through the cursor; limits {refused}, a "
        "100 KiB schema, a 200,000-character session message and 1,001 file ids refused "
        "with 422",
        rss_growth=meter.growth(),
    )


async def test_attack_slowloris_without_a_key(
    service: Service, attack_report: AttackReport
) -> None:
    from engine.service.http_protocol import HEAD_TIMEOUT_S

    meter = _meter(service)
    connections = 100
    socks = []
    for _ in range(connections):
        sock = await anyio.connect_tcp("127.0.0.1", service.port)
        await sock.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        socks.append(sock)
    closed: set[int] = set()

    async def drip(index: int) -> None:
        """One header line a second, never the blank line that ends the head."""
        sock = socks[index]
        try:
            while True:
                await anyio.sleep(1)
                await sock.send(b"X-Slow: 1\r\n")
                with anyio.move_on_after(0.01):
                    if not await sock.receive():
                        break
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            pass
        closed.add(index)

    async with service.client(OTHER_KEY) as other:
        # A stream that stays open past the head deadline: only heads have one.
        job = (await other.post("/v1/jobs", json={"query": "STEADY"})).json()
        keepalives = 0
        with anyio.fail_after(60):
            async with (
                anyio.create_task_group() as group,
                other.stream("GET", f"/v1/jobs/{job['id']}/events") as stream,
            ):
                for index in range(connections):
                    group.start_soon(drip, index)
                async for line in stream.aiter_lines():
                    keepalives += line.startswith(": keepalive")
                    if len(closed) == connections and keepalives:
                        break
                group.cancel_scope.cancel()
        assert len(closed) == connections and keepalives
        assert (await other.post(f"/v1/jobs/{job['id']}/cancel")).status_code in (200, 202)
    for sock in socks:
        await sock.aclose()
    assert await innocent_answer(service) == "45"
    attack_report(
        f"slowloris without a key: {connections} connections sending one header line a second",
        f"a request head must be complete within {HEAD_TIMEOUT_S:g} s of the connection or "
        "the previous response (stock uvicorn: no deadline)",
        f"all {connections} closed by the service; an event stream of the other key stayed "
        "open past the deadline, its jobs answered (before: 200 such connections open after "
        "80 s)",
        rss_growth=meter.growth(),
    )


async def test_attack_sub_call_fan_out_from_sandbox_code(
    service: Service, replay: ReplayServer, attack_report: AttackReport
) -> None:
    meter = _meter(service)
    budget = 200
    async with service.client() as client:
        job = await client.post(
            "/v1/jobs", json={"query": "FAN-OUT", "limits": {"max_sub_calls": budget}}
        )
        done = await wait_final(client, job.json()["id"], timeout=300)
    assert done["status"] == "succeeded", done
    answered, refused = map(int, done["answer"].split())
    # The run's one sub-call budget and one scheduler bound the whole fan-out.
    assert (answered, refused) == (budget, 16_000 - budget), done["answer"]
    assert done["result"]["sub_calls"] == budget
    # Recursion does not multiply it: two children fanning out 16,000 each and the parent
    # 1,000 share the job's one budget and scheduler.
    async with service.client() as client:
        job = await client.post(
            "/v1/jobs",
            json={"query": "FAN-TREE", "limits": {"max_sub_calls": budget, "max_depth": 2}},
        )
        tree = await wait_final(client, job.json()["id"], timeout=300)
        events = (await client.get(f"/v1/jobs/{tree['id']}/trajectory")).text
    assert tree["status"] == "succeeded", tree
    in_tree = tree["result"]["sub_calls"]
    assert in_tree <= budget, tree["result"]
    # The budget ran out inside the tree; sandbox code saw it as BudgetExhausted.
    cells = [json.loads(line) for line in events.splitlines()]
    assert any("BudgetExhausted" in e.get("output", "") for e in cells if e["type"] == "cell")
    in_flight = replay.max_in_flight_by_model.get("sub", 0)
    assert 0 < in_flight <= 16, replay.max_in_flight_by_model
    attack_report(
        "sandbox code asks for 16,000 sub-calls at once (16 threads x llm_batch of 1,000); "
        "then two rlm_query children do the same while their parent sends 1,000 more",
        "the run's sub-call budget (here 200; at most 1,000 in the service) and its scheduler "
        "(16 calls in flight per run); 16 bridge connections per sandbox",
        f"{answered} answered, {refused} refused with the budget's message; the tree: "
        f"{in_tree} sub-calls of 33,000 asked, BudgetExhausted in the sandbox; at most "
        f"{in_flight} sub-calls in flight at the model",
        rss_growth=meter.growth(),
    )
