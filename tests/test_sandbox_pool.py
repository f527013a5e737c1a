"""The warm sandbox pool: real Docker, real kernels, the real bridge.

A warm sandbox serves one task and is gone after it; the pool refills, shrinks when idle,
stays within its sandbox limit, and leaves no container behind when it closes or is
cancelled. A task the pool cannot serve with the same limits gets a cold sandbox.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import docker.errors
import pytest
import zmq
import zmq.asyncio

from engine.errors import ContextError
from engine.rlm.backend import DockerBackend
from engine.sandbox import SandboxConfig, docker_api, kernel, rundir
from engine.sandbox.pool import WarmPool
from engine.sandbox.rundir import ContextTooLargeError, stage_context_inline
from engine.sandbox.sandbox import Sandbox

# --- staging a context inside a running sandbox's run directory (no Docker) ------------------


def test_inline_staging_links_readable_files_and_copies_private_ones(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    source = tmp_path / "data"
    (source / "sub").mkdir(parents=True)
    (source / "public.txt").write_text("open")
    (source / "sub" / "private.txt").write_text("closed")
    (source / "sub" / "private.txt").chmod(0o600)
    (source / "link").symlink_to("/etc/passwd")
    run_dir.mkdir()
    staged = stage_context_inline(source, run_dir, copy_limit=1 << 20)
    target = run_dir / rundir.POOL_CONTEXT_DIR / "data"
    assert staged.host_path == target and staged.container_path == "/rlm/run/ctx/data"
    assert staged.size_bytes == len("open") + len("closed") and not staged.mount
    assert sorted(p.name for p in target.rglob("*")) == ["private.txt", "public.txt", "sub"]
    # The readable file shares its inode (no bytes moved); the private one is a copy the
    # sandbox may read, and the user's file keeps its mode.
    assert (target / "public.txt").stat().st_ino == (source / "public.txt").stat().st_ino
    copy = target / "sub" / "private.txt"
    assert copy.stat().st_ino != (source / "sub" / "private.txt").stat().st_ino
    assert copy.stat().st_mode & 0o777 == 0o644
    assert (source / "sub" / "private.txt").stat().st_mode & 0o777 == 0o600


def test_inline_staging_refuses_to_copy_past_its_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 4096)
    big.chmod(0o600)
    (tmp_path / "run").mkdir()
    with pytest.raises(ContextTooLargeError):
        stage_context_inline(big, tmp_path / "run", copy_limit=1024)
    (tmp_path / "run2").mkdir()
    with pytest.raises(ContextError, match="does not exist"):
        stage_context_inline(tmp_path / "missing", tmp_path / "run2", copy_limit=1024)
    (tmp_path / "run3").mkdir()
    text = stage_context_inline("some text", tmp_path / "run3", copy_limit=1024)
    assert text.container_path == "/rlm/run/ctx/context.txt"
    assert (tmp_path / "run3" / "ctx" / "context.txt").read_text() == "some text"


def test_pool_names_the_settings_a_task_differs_in() -> None:
    base = SandboxConfig(env={"FOO": "1"})
    pool = WarmPool(base, 1)
    per_task = dataclasses.replace(
        base, env={"FOO": "1", "RLM_BRIDGE_TOKEN": "t", "RLM_DEPTH": "2"}
    )
    assert pool.mismatch(per_task) is None
    bigger = dataclasses.replace(base, memory_bytes=base.memory_bytes * 2, runtime="runc")
    assert pool.mismatch(bigger) == (
        "the task's sandbox settings differ from the pool's: runtime, memory_bytes"
    )
    assert "env" in (pool.mismatch(dataclasses.replace(base, env={"FOO": "2"})) or "")
    assert WarmPool(base, 0).mismatch(base) == "the warm pool is off (size 0)"


def test_a_pool_that_does_not_refill_starts_its_size_once() -> None:
    once = WarmPool(SandboxConfig(), 1, refill=False)
    assert once._should_start()
    once.started = 1  # claimed (or failed): nothing replaces it
    assert not once._should_start()
    refilling = WarmPool(SandboxConfig(), 1)
    refilling.started = 5
    assert refilling._should_start()


# --- real pools --------------------------------------------------------------------------------


def docker_test(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Marks a test that starts real sandboxes."""
    marks = (pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready"))
    for mark in marks:
        fn = mark(fn)
    return fn


def pool_containers(pool: WarmPool) -> list[str]:
    listed = docker_api.list_labelled([f"{docker_api.LABEL_POOL}={pool.pool_id}"])
    return [c.id for c in listed]


async def until(check: Callable[[], bool], timeout: float = 120) -> None:
    """Wait (bounded) for ``check``: what a background task does takes its time."""
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.05)


class Orchestrator:
    async def llm_query(self, prompt: str, model: str | None) -> str:
        return prompt.upper()

    async def rlm_query(self, prompt: str, context_path: Path | None) -> str:
        return "child"


@docker_test
async def test_a_warm_sandbox_serves_one_task_then_the_pool_refills() -> None:
    config = SandboxConfig()
    async with WarmPool(config, 1) as pool:
        backend = DockerBackend(config, pool=pool)
        await until(lambda: pool.ready == 1)
        (warm_id,) = pool_containers(pool)
        seen: list[str] = []
        async with backend.open(
            context={"rows": [1, 2]}, task_id="task-a", depth=2, handler=Orchestrator()
        ) as sandbox:
            assert sandbox.warm and sandbox.pool_miss is None
            assert sandbox.task_id == "task-a" and sandbox.context_info is not None
            assert sandbox.context_info.kind == "json"
            result = await sandbox.execute(
                "import os\n"
                "print(context['rows'], llm_query('hi'), os.environ['RLM_DEPTH'])\n"
                "print(sorted(os.listdir('/rlm/run')))\n"
                "open('/rlm/run/ipc/x', 'w')",
                cell_timeout_s=60,
            )
            assert result.stdout.splitlines()[:2] == [
                "[1, 2] HI 2",
                "['bridge.sock', 'ctx', 'ipc', 'kernel.json']",
            ]
            # The run directory was locked before the task came: no write reaches the host.
            assert result.error is not None and result.error.ename in (
                "PermissionError",
                "OSError",
            )
            seen.append(sandbox._container.id if sandbox._container else "")
        assert seen == [warm_id]
        await until(lambda: pool.ready == 1)
        assert warm_id not in pool_containers(pool)  # destroyed after its task, never reused

        # Two tasks at once from a pool of one: never the same sandbox twice.
        async def task(name: str) -> None:
            async with pool.open(config, context=name, task_id=name) as box:
                out = await box.execute("print(context)", cell_timeout_s=60)
                assert out.stdout == f"{name}\n"
                seen.append(box._container.id if box._container else "")

        async with anyio.create_task_group() as group:
            group.start_soon(task, "b")
            group.start_soon(task, "c")
        assert len(set(seen)) == 3 and pool.hits >= 2
    assert pool_containers(pool) == []


@docker_test
async def test_tasks_the_pool_cannot_serve_start_cold(tmp_path: Path) -> None:
    config = SandboxConfig()
    private = tmp_path / "private.txt"
    private.write_text("p" * 4096)
    private.chmod(0o600)
    public = tmp_path / "public.txt"
    public.write_text("hello pool")
    public.chmod(0o644)
    async with WarmPool(config, 1, copy_limit=1024, max_sandboxes=2) as pool:
        await until(lambda: pool.ready == 1)
        more_memory = dataclasses.replace(config, memory_bytes=config.memory_bytes * 2)
        async with pool.open(more_memory, context=None, task_id="mem") as sandbox:
            assert not sandbox.warm and sandbox.pool_miss is not None
            assert "memory_bytes" in sandbox.pool_miss
            assert sandbox.memory_bytes == more_memory.memory_bytes
            assert pool.ready == 1  # the warm one stays for a task it can serve
        # Too much to copy into a running sandbox: the claimed one is destroyed, a cold
        # sandbox bind-mounts the file instead.
        async with pool.open(config, context=private, task_id="big") as sandbox:
            assert not sandbox.warm and "1024 bytes copied" in (sandbox.pool_miss or "")
            out = await sandbox.execute("print(len(context))", cell_timeout_s=60)
            assert out.stdout == "4096\n"
        await until(lambda: pool.ready == 1)
        async with pool.open(config, context=public, task_id="small") as sandbox:
            assert sandbox.warm
            out = await sandbox.execute("print(context)", cell_timeout_s=60)
            assert out.stdout == "hello pool\n"
        assert (pool.hits, pool.misses) == (1, 2)


@docker_test
async def test_the_pool_stays_within_its_sandbox_limit() -> None:
    config = SandboxConfig()
    async with WarmPool(config, 1, max_sandboxes=1) as pool:
        await until(lambda: pool.ready == 1)
        other = dataclasses.replace(config, pids_limit=config.pids_limit // 2)
        async with pool.open(other, context=None, task_id="cold") as sandbox:
            # The cold task took the only slot: the warm sandbox made room for it.
            assert not sandbox.warm
            assert pool.ready == 0 and pool.starting == 0 and pool_containers(pool) == []
        await until(lambda: pool.ready == 1)


@docker_test
async def test_an_idle_pool_shrinks_and_a_task_fills_it_again() -> None:
    config = SandboxConfig()
    async with WarmPool(config, 1, idle_s=1.0) as pool:
        await until(lambda: pool.ready == 1)
        await until(lambda: pool.ready == 0 and pool_containers(pool) == [])
        # Shrunk. Now a longer idle time: under load the cold task below can outlast one
        # second after the refill's sandbox is ready, which would then be dropped as idle
        # again before this test looks (seen in a parallel run).
        pool.idle_s = 120.0
        # A task after the idle time gets a cold sandbox, and the pool warms up again.
        async with pool.open(config, context=None, task_id="late") as sandbox:
            assert not sandbox.warm
        await until(lambda: pool.ready == 1)


@docker_test
async def test_cancelling_a_pool_while_it_starts_leaves_no_container() -> None:
    pool = WarmPool(SandboxConfig(), 2)
    with anyio.CancelScope() as scope:
        async with pool:
            # Cancelled with one sandbox ready and the next one starting.
            await until(lambda: pool.ready == 1 and pool.starting == 1)
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert pool_containers(pool) == []


# --- a warm sandbox that died, or whose kernel got stuck, while it waited ---------------------

#: Kills the kernel process from inside its container, as the OOM killer or a crash would.
_KILL_KERNEL = (
    "import os, signal\n"
    "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
    "    command = open(f'/proc/{pid}/cmdline', 'rb').read()\n"
    "    if int(pid) != os.getpid() and b'rlm_runtime.launch' in command:\n"
    "        os.kill(int(pid), signal.SIGKILL)\n"
)


async def _until_stopped(container_id: str) -> None:
    api = docker_api.client().api
    with anyio.fail_after(60):
        while True:
            try:
                state = (await docker_api.call(api.inspect_container, container_id))["State"]
            except docker.errors.NotFound:
                return  # the pool removed it already
            if not state["Running"]:
                return
            await anyio.sleep(0.05)


async def _docker_kill(container_id: str) -> None:
    await docker_api.call(docker_api.client().api.kill, container_id)
    await _until_stopped(container_id)


async def _kill_kernel(container_id: str) -> None:
    container = await docker_api.call(docker_api.client().containers.get, container_id)
    # Detached: under gVisor Docker may never end the output stream of an exec whose
    # container died meanwhile.
    await docker_api.call(container.exec_run, ["python", "-c", _KILL_KERNEL], detach=True)
    await _until_stopped(container_id)  # the kernel is the container's main process


async def _docker_pause(container_id: str) -> None:
    await docker_api.call(docker_api.client().api.pause, container_id)


#: Deadlocks the kernel's main thread on a lock it already holds (a wait in C): the kernel
#: process and its heartbeat thread go on, but its shell channel is never served again.
_DEADLOCK = "import threading\n_held = threading.Lock()\n_held.acquire()\n_held.acquire()\n"


async def _heartbeat_echoes(sandbox: Sandbox) -> bool:
    """Whether the kernel's heartbeat thread echoes a message (all a heartbeat probe sees)."""
    context = zmq.asyncio.Context()
    socket = context.socket(zmq.DEALER)
    socket.connect(f"ipc://{kernel.socket_files(sandbox.run_dir)[-1]}")
    try:
        await socket.send(b"echo")
        return bool(await socket.poll(10_000)) and await socket.recv() == b"echo"
    finally:
        socket.close(linger=0)
        context.term()


async def _stuck_main_thread(pool: WarmPool, container_id: str) -> None:
    # A request over the kernel's own shell channel, as a cell is sent: its main thread takes
    # it and deadlocks; the probe's request queues behind it.
    sandbox = pool._ready[0][0]
    assert sandbox._kernel is not None
    sandbox._kernel._client.execute(_DEADLOCK)
    assert await _heartbeat_echoes(sandbox)  # alive, as far as its heartbeat can tell


Death = Callable[[WarmPool, str], Awaitable[None]]
DEATHS: dict[str, Death] = {
    "docker kill": lambda _, container_id: _docker_kill(container_id),
    "kernel killed": lambda _, container_id: _kill_kernel(container_id),
    "paused": lambda _, container_id: _docker_pause(container_id),
    "main thread stuck": _stuck_main_thread,
}


@docker_test
@pytest.mark.parametrize("death", sorted(DEATHS))
async def test_a_warm_sandbox_that_died_idle_is_discarded_and_the_task_runs(death: str) -> None:
    config = SandboxConfig()
    async with WarmPool(config, 1) as pool:
        await until(lambda: pool.ready == 1)
        (dead,) = pool_containers(pool)
        await DEATHS[death](pool, dead)
        async with pool.open(config, context="still served", task_id="after") as sandbox:
            out = await sandbox.execute("print(context)", cell_timeout_s=60)
            assert out.stdout == "still served\n"
            assert sandbox._container is not None and sandbox._container.id != dead
        assert pool.discarded == 1
        # Removed by the pool (off the task's path), also the paused one.
        await until(lambda: dead not in pool_containers(pool))
    assert pool_containers(pool) == []


@docker_test
async def test_the_refill_loop_replaces_a_warm_sandbox_that_died_idle() -> None:
    config = SandboxConfig()
    async with WarmPool(config, 1, sweep_s=0.2) as pool:
        await until(lambda: pool.ready == 1)
        (dead,) = pool_containers(pool)
        await _kill_kernel(dead)
        # No task asked: the sweep found it, removed it and started another.
        await until(lambda: pool.discarded == 1 and pool.ready == 1)
        await until(lambda: dead not in pool_containers(pool))
        async with pool.open(config, context=None, task_id="later") as sandbox:
            assert sandbox.warm
        assert (pool.hits, pool.misses, pool.discarded) == (1, 0, 1)
