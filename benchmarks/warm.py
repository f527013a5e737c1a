"""The benchmarks' use of the warm pool (``engine.sandbox.pool``): warm starts and pooled runs.

A warm start is what a task pays when a warm sandbox is ready: claim it, inject the task's
context (a short text here, as most tasks' first cell sees), run the first cell. The pool's
own refill between tasks is not timed, as it is not on a task's path when the pool keeps up;
each claim waits (untimed) until a sandbox is ready.
"""

from __future__ import annotations

import dataclasses
import secrets
import time

import anyio

from engine.config import EngineConfig
from engine.sandbox import SandboxConfig
from engine.sandbox.pool import WarmPool

CONTEXT = "The warm pool benchmark's context: a short text, as a small task gets. " * 4
#: How many warm sandboxes ``engine_with_pool`` asks the engine to keep ready.
ENGINE_POOL = 2


async def _until_ready(pool: WarmPool, timeout_s: float) -> None:
    with anyio.fail_after(timeout_s):
        while pool.ready < 1:
            await anyio.sleep(0.02)


async def warm_start_times(config: SandboxConfig, n: int) -> list[float]:
    """``n`` warm starts (claim, context, first cell ``len(context)``), in seconds."""
    times: list[float] = []
    async with WarmPool(config, 1) as pool:
        for _ in range(n):
            await _until_ready(pool, config.start_timeout_s + 30)
            started = time.perf_counter()
            task_id = secrets.token_hex(6)
            async with pool.open(config, context=CONTEXT, task_id=task_id) as sandbox:
                result = await sandbox.execute("len(context)")
                times.append(time.perf_counter() - started)
            if result.error or result.result != str(len(CONTEXT)):
                raise RuntimeError(f"the warm sandbox's first cell failed: {result.error}")
            if getattr(sandbox, "pool_miss", None):
                raise RuntimeError(f"the pool started a cold sandbox: {sandbox.pool_miss}")
    return times


def engine_with_pool(config: EngineConfig, size: int = ENGINE_POOL) -> EngineConfig:
    """``config`` with the engine's warm pool on (``size`` sandboxes kept ready)."""
    return dataclasses.replace(config, warm_pool=size)


def engine_without_pool(config: EngineConfig) -> EngineConfig:
    """``config`` with the engine's warm pool off (every sandbox starts cold)."""
    return dataclasses.replace(config, warm_pool=0)
