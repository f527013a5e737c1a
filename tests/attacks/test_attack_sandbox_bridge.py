"""Attacks on the orchestrator through the bridge, from code in a real sandbox.

Each attack runs in a real sandbox against the real bridge server with its default limits,
while an innocent sandbox with its own bridge does real sub-calls; the orchestrator (this
process) must keep its memory, and the host its disk, within the caps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import Engine, EngineConfig, Limits
from engine.bridge import BridgeServer
from engine.models import Cassette, ModelSpec, ReplayServer
from engine.sandbox import Sandbox, SandboxConfig
from tests.attacks.conftest import AttackReport, RssMeter
from tests.sandbox_support import open_sandbox

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]


class Orchestrator:
    """A real bridge handler that answers from what it was sent (no model needed)."""

    async def llm_query(self, prompt: str, model: str | None) -> str:
        return f"echo {prompt[:40]} ({len(prompt)} chars)"

    async def rlm_query(self, prompt: str, context_path: Path | None) -> str:
        size = 0 if context_path is None else context_path.stat().st_size
        return f"child of {prompt!r} got {size} bytes"


@asynccontextmanager
async def bridged(**server_kwargs: Any) -> AsyncIterator[tuple[Sandbox, BridgeServer]]:
    token = secrets.token_urlsafe(24)
    config = dataclasses.replace(SandboxConfig(), env={"RLM_BRIDGE_TOKEN": token})
    async with open_sandbox(config) as sandbox:
        socket_path = sandbox.run_dir / "bridge.sock"
        async with BridgeServer(socket_path, token, Orchestrator(), **server_kwargs) as server:
            yield sandbox, server


async def innocent_calls() -> None:
    """A well-behaved task with its own bridge, during the attack."""
    async with bridged() as (sandbox, _server):
        result = await sandbox.execute(
            "import json\n"
            "answers = llm_batch([f'q{i}' for i in range(20)])\n"
            "child = rlm_query('sum', context={'rows': list(range(100))})\n"
            "print(json.dumps([answers, child]))",
            cell_timeout_s=180,
        )
    assert result.ok, result.output_text()
    answers, child = json.loads(result.stdout.strip().splitlines()[-1])
    assert answers == [f"echo q{i} ({len(f'q{i}')} chars)" for i in range(20)]
    assert child.startswith("child of 'sum' got ") and not child.endswith(" 0 bytes")


async def attack_beside_innocent(sandbox: Sandbox, code: str, timeout: float) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def attacker() -> None:
        result = await sandbox.execute(
            "import json, os, socket, time\n" + code, cell_timeout_s=timeout
        )
        assert result.error is None, result.output_text()
        found.update(json.loads(result.stdout.strip().splitlines()[-1]))

    async with anyio.create_task_group() as tg:
        tg.start_soon(attacker)
        tg.start_soon(innocent_calls)
    return found


HEAD = r"""
PATH, TOKEN = os.environ["RLM_BRIDGE_SOCKET"], os.environ["RLM_BRIDGE_TOKEN"]
def head(route, extra):
    return (f"POST {route} HTTP/1.1\r\nHost: bridge\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\n{extra}\r\n").encode()
def status_of(sock, wait=5):
    sock.settimeout(wait)
    try:
        data = sock.recv(4096)
    except socket.timeout:
        return "no answer"
    except OSError as exc:
        return type(exc).__name__
    return data.split(b"\r\n", 1)[0].decode(errors="replace")[9:12] or "closed"
"""


async def test_connection_flood_with_huge_bodies(
    rss_meter: RssMeter, attack_report: AttackReport
) -> None:
    """A thousand connections, each promising a 16 MiB body and sending 4 MiB of it."""
    code = (
        HEAD
        + r"""
socks, failed = [], 0
body = b'{"prompt": "' + b"x" * (4 * 2**20)
for _ in range(1000):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(0.5)
    try:
        s.connect(PATH)
        s.sendall(head("/v1/llm_query", f"Content-Length: {16 * 2**20}\r\n") + body)
    except OSError:
        failed += 1
    socks.append(s)
statuses = {}
for s in socks:
    code = status_of(s, wait=0.2)
    statuses[code] = statuses.get(code, 0) + 1
    s.close()
print(json.dumps({"statuses": statuses, "failed": failed}))
"""
    )
    async with bridged() as (sandbox, server):
        found = await attack_beside_innocent(sandbox, code, timeout=300)
        refused = server.connections_refused
        accepted = server.connections_accepted
    assert refused >= 900 and accepted + refused >= 1000
    assert found["statuses"].get("503", 0) >= 900
    attack_report(
        "bridge connection flood: 1,000 connections x 16 MiB bodies",
        "16 connections per sandbox; 16 MiB of bodies in memory",
        f"{refused} connections refused with 503, {accepted} served or timed out",
        rss_growth=rss_meter.growth(),
    )


@pytest.mark.parametrize("stage", ["head", "body"])
async def test_slowloris(stage: str, rss_meter: RssMeter, attack_report: AttackReport) -> None:
    """Sixteen connections that send their request a byte per second, to hold the bridge."""
    code = (
        HEAD
        + f"STAGE = {stage!r}\n"
        + r"""
request = head("/v1/llm_query", "Content-Length: 1000\r\n") + b'{"prompt": "' + b"s" * 986 + b'"}'
cut = request.index(b"\r\n\r\n") + (4 if STAGE == "body" else -20)
socks = []
for _ in range(16):
    s = socket.socket(socket.AF_UNIX)
    s.connect(PATH)
    s.sendall(request[:cut])
    socks.append(s)
statuses, started = {}, time.time()
for i in range(cut, len(request)):
    alive = []
    for s in socks:
        try:
            s.sendall(request[i:i + 1])
            alive.append(s)
        except OSError:
            code = status_of(s)
            statuses[code] = statuses.get(code, 0) + 1
    socks = alive
    if not socks:
        break
    time.sleep(1)
for s in socks:
    code = status_of(s)
    statuses[code] = statuses.get(code, 0) + 1
print(json.dumps({"statuses": statuses, "seconds": round(time.time() - started)}))
"""
    )
    async with bridged() as (sandbox, server):
        found = await attack_beside_innocent(sandbox, code, timeout=200)
        after = await sandbox.execute("print(llm_query('after'))", cell_timeout_s=60)
    assert found["statuses"] == {"408": 16}, found
    assert after.stdout == "echo after (5 chars)\n"  # the slots came back
    limit = server.limits.header_timeout_s if stage == "head" else server.limits.body_timeout_s
    attack_report(
        f"slowloris: 16 connections sending their {stage} a byte per second",
        f"{limit:g} s for a request {stage} (408)",
        f"all 16 closed with 408 after about {found['seconds']} s; the sandbox's next call worked",
        rss_growth=rss_meter.growth(),
    )


async def test_huge_bodies(rss_meter: RssMeter, attack_report: AttackReport) -> None:
    """2 GiB bodies: declared, streamed chunked to a JSON route, and as a child context."""
    cap = 64 << 20
    code = (
        HEAD
        + r"""
def chunked(route, content_type="application/json"):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(PATH)
    s.sendall(head(route, "Transfer-Encoding: chunked\r\n").replace(
        b"application/json", content_type.encode()))
    block = b"z" * 2**20
    sent = 0
    try:
        while sent < 2**31:
            s.sendall(b"100000\r\n" + block + b"\r\n")
            sent += len(block)
    except OSError:
        pass
    return status_of(s), sent
declared = socket.socket(socket.AF_UNIX)
declared.connect(PATH)
declared.sendall(head("/v1/llm_query", f"Content-Length: {2**31}\r\n"))
out = {"declared": status_of(declared)}
out["json"], out["json_sent"] = chunked("/v1/llm_query")
out["context"], out["context_sent"] = chunked("/v1/contexts", "text/plain")
print(json.dumps(out))
"""
    )
    async with bridged(max_child_context_bytes=cap) as (sandbox, server):
        found = await attack_beside_innocent(sandbox, code, timeout=300)
        peak = server.contexts.peak_bytes
        left = server.contexts.used_bytes
    assert (found["declared"], found["json"], found["context"]) == ("413", "413", "413")
    assert found["json_sent"] < 2**31 and found["context_sent"] < 2**31  # cut off early
    assert left == 0
    attack_report(
        "2 GiB request bodies (declared, chunked JSON, chunked child context)",
        "16 MiB per JSON body; child contexts capped (here 64 MiB)",
        f"413 for all three; sending stopped after {found['json_sent'] >> 20} MiB (JSON) and "
        f"{found['context_sent'] >> 20} MiB (context)",
        rss_growth=rss_meter.growth(),
        host_bytes=peak,
        host_cap=cap,
    )


def _tree_bytes(root: Path) -> int:
    # Bytes the bridge wrote (the cap counts those). Allocated blocks (st_blocks) run one
    # file-system block ahead while ext4 delays allocation, which is not a write past the cap;
    # the bridge never writes sparse files, so the length is what lands on the disk.
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # deleted while we looked
                total += os.lstat(Path(folder, name)).st_size
    return total


async def test_two_gib_child_context_at_the_depth_limit(
    tmp_path: Path, rss_meter: RssMeter, attack_report: AttackReport
) -> None:
    """rlm_query at the depth limit with a 2 GiB context, then with one that fits the cap."""
    cap = 256 << 20
    root_code = r"""
from rlm_runtime import bridge_client as bc
def chunks(count):
    block = b"y" * 2**20
    for _ in range(count):
        yield block
try:
    bc._call("/v1/contexts", None, stream=chunks(2048), content_type="text/plain")
    big = "the 2 GiB context was accepted"
except Exception as exc:
    big = f"{type(exc).__name__}: {exc}"
small = rlm_query("How many y are there?", context="y" * (200 * 2**20))
answer["content"] = json.dumps([big, small])
answer["ready"] = True
"""
    reply = f"Streaming.\n```repl\nimport json\n{root_code}\n```\n"
    warm_up = (
        "Warming up.\n```repl\nanswer['content'] = llm_query('warm up')\n"
        "answer['ready'] = True\n```\n"
    )
    entries = [
        {"match": {"model": "root"}, "response": {"content": warm_up}},
        {"match": {"model": "sub", "contains": "warm up"}, "response": {"content": "warm"}},
        {"match": {"model": "root"}, "response": {"content": reply}},
        {"match": {"model": "sub", "contains": "How many y"}, "response": {"content": "many"}},
    ]
    private = tmp_path / "bridge-files"
    private.mkdir()
    peak = 0
    saved = tempfile.tempdir
    tempfile.tempdir = str(private)  # the bridge's private files land here, to be measured
    try:
        async with ReplayServer(Cassette(entries)) as replay:
            config = EngineConfig(
                model=ModelSpec("openai/root", api_base=replay.base_url, api_key="x"),
                sub_model=ModelSpec("openai/sub", api_base=replay.base_url, api_key="x"),
                limits=Limits(max_depth=1, cell_timeout_s=300),
                sandbox=SandboxConfig(disk_bytes=cap),
                trajectory_path=tmp_path / "trajectory.jsonl",
            )
            async with Engine(config) as engine, anyio.create_task_group() as tg:

                async def watch() -> None:
                    nonlocal peak
                    while True:
                        peak = max(peak, _tree_bytes(private))
                        await anyio.sleep(0.005)

                # The engine's first run loads the model client (litellm): not the attack's.
                assert (await engine.run("Warm up.", None)).answer == "warm"
                rss_meter.start()
                tg.start_soon(watch)
                result = await engine.run("Count the y.", None)
                tg.cancel_scope.cancel()
            sub_prompts = [r for r in replay.requests if r["model"] == "sub"][1:]
    finally:
        tempfile.tempdir = saved
    big, small = json.loads(result.answer)
    assert "HTTP 413" in big and "RLM_SANDBOX_DISK" in big
    assert small == "many"
    (request,) = sub_prompts
    prompt = request["messages"][-1]["content"]
    assert prompt.startswith("How many y are there?")
    assert len(prompt) < 101_000 and "context cut to its first" in prompt
    assert _tree_bytes(private) == 0
    attack_report(
        "2 GiB child context via rlm_query at the depth limit",
        "child contexts capped on the host (here 256 MiB); window-sized read",
        f"2 GiB refused with 413 at the cap; a 200 MiB context fit and the sub-call got "
        f"{len(prompt):,} characters of it",
        rss_growth=rss_meter.growth(),
        host_bytes=peak,
        host_cap=cap,
    )


async def test_bodies_of_tiny_values(rss_meter: RssMeter, attack_report: AttackReport) -> None:
    """Four bodies of about 4 MiB each (the bridge's 16 MiB of bodies), all tiny JSON values:
    ``{}`` is 2 bytes of JSON and a 64-byte dict, so decoding them once grew this process by
    about 400 MiB before the values were counted against the same budget."""
    code = (
        HEAD
        + r"""
shapes = {
    "/v1/llm_batch": (b'{"prompts": [', b"{}"),
    "/v1/llm_query": (b'{"prompt": "x", "model": [', b"[]"),
    "/v1/rlm_query": (b'{"prompt": "x", "context_id": [', b"0"),
    "/v1/tool": (b'{"name": "t", "args": [', b'{"a":1}'),
}
socks = []
for route, (start, item) in shapes.items():
    body = start + b",".join([item] * ((4 * 2**20 - 64) // (len(item) + 1))) + b"]}"
    s = socket.socket(socket.AF_UNIX)
    s.connect(PATH)
    s.sendall(head(route, f"Content-Length: {len(body)}\r\n") + body)
    socks.append(s)
statuses = [status_of(s, wait=60) for s in socks]
print(json.dumps({"statuses": statuses, "after": llm_batch(["a", "b"])}))
"""
    )
    async with bridged() as (sandbox, _server):
        found = await attack_beside_innocent(sandbox, code, timeout=200)
    assert found["statuses"] == ["413"] * 4, found
    assert found["after"] == ["echo a (1 chars)", "echo b (1 chars)"]
    growth = rss_meter.growth()
    assert growth < 100 << 20
    attack_report(
        '4 bridge bodies of 4 MiB of tiny JSON values ({}, [], 0, {"a":1}) at once',
        "what a body's values cost decoded (96 bytes each) is reserved in the 16 MiB of "
        "bodies a sandbox may hold, before decoding",
        f"413 for all {len(found['statuses'])}; the next llm_batch answered (before: about "
        "400 MiB of Python objects decoded, then 422)",
        rss_growth=growth,
    )
