"""How the sandbox tests open a sandbox: cold, or claimed from a warm pool.

``RLM_TEST_WARM_POOL=1`` runs the isolation and attack tests against warm sandboxes (each
claimed from a pool of the test's own configuration), to show that pooling weakens none of
the limits: ``RLM_TEST_WARM_POOL=1 pytest tests/test_sandbox_isolation.py tests/attacks``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from engine.sandbox import Sandbox, SandboxConfig
from engine.sandbox.pool import WarmPool


def warm_pool_on() -> bool:
    return os.environ.get("RLM_TEST_WARM_POOL") == "1"


@asynccontextmanager
async def open_sandbox(
    config: SandboxConfig | None = None, *, context: Any = None
) -> AsyncIterator[Sandbox]:
    """A started sandbox of ``config`` with ``context``; a warm one under RLM_TEST_WARM_POOL."""
    config = config or SandboxConfig()
    if not warm_pool_on():
        async with Sandbox(config, context=context) as sandbox:
            yield sandbox
        return
    async with WarmPool(config, 1) as pool:
        task_id = secrets.token_hex(6)
        async with pool.open(config, context=context, task_id=task_id) as sandbox:
            assert sandbox.warm, sandbox.pool_miss
            yield sandbox
