"""The Docker sandbox backend: a hardened container per task, its bridge on a Unix socket."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from engine.bridge import BridgeHandler, BridgeServer
from engine.sandbox import Sandbox, SandboxConfig
from engine.sandbox.pool import WarmPool
from engine.sandbox.rundir import BRIDGE_SOCKET


class DockerBackend:
    """Opens a :class:`~engine.sandbox.Sandbox` and serves its bridge for one task.

    ``config`` None reads :meth:`SandboxConfig.from_env` once, here, not for every task.
    With a ``pool`` (an open :class:`WarmPool`, owned by the caller) a task claims a warm
    sandbox when the pool can serve it, else it starts a cold one.
    """

    def __init__(
        self, config: SandboxConfig | None = None, *, pool: WarmPool | None = None
    ) -> None:
        self.config = config or SandboxConfig.from_env()
        self.pool = pool

    @asynccontextmanager
    async def open(
        self,
        *,
        context: Any,
        task_id: str,
        depth: int,
        handler: BridgeHandler,
        env: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Sandbox]:
        token = secrets.token_urlsafe(32)
        base = self.config
        extra = {"RLM_BRIDGE_TOKEN": token, "RLM_DEPTH": str(depth)}
        config = dataclasses.replace(base, env={**base.env, **(env or {}), **extra})
        opened = (
            self.pool.open(config, context=context, task_id=task_id)
            if self.pool is not None
            else Sandbox(config, context=context, task_id=task_id)
        )
        async with opened as sandbox:
            bridge = BridgeServer(
                sandbox.run_dir / BRIDGE_SOCKET,
                token,
                handler,
                max_child_context_bytes=sandbox.disk_limit_bytes,
            )
            sandbox.wait_clock = bridge.waits.seconds
            async with bridge:
                yield sandbox
