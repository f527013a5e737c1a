"""The contract between the run layer and a sandbox backend (Docker, or the in-process fake).

The root loop needs only :class:`CodeSandbox`: run a cell, get a typed :class:`ExecResult`.
The engine opens one per task through a :class:`SandboxBackend`, handing it the task's
:class:`~engine.bridge.BridgeHandler` so that ``llm_query``/``rlm_query`` in the sandbox reach
the orchestrator, however the backend carries them.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from engine.bridge.handler import BridgeHandler
from engine.sandbox.results import ContextInfo, ExecResult


class CodeSandbox(Protocol):
    """One task's running kernel."""

    #: How the context was loaded (None until started).
    context_info: ContextInfo | None
    #: Whether the task claimed a warm sandbox from a pool (see :mod:`engine.sandbox.pool`).
    warm: bool
    #: Why a task that asked a warm pool got a cold sandbox (None: it did not ask, or got one).
    pool_miss: str | None

    async def execute(self, code: str, cell_timeout_s: float) -> ExecResult:
        """Run ``code``; interrupt it after ``cell_timeout_s`` seconds, keeping the kernel's state.

        Raises :class:`engine.errors.KernelDiedError` when the kernel is gone.
        """
        ...

    async def freeze(self) -> None:
        """Stop the kernel's processes until the next :meth:`execute` (which thaws them):
        a session's kernel between questions uses no CPU."""
        ...


class SandboxBackend(Protocol):
    """Opens the sandbox of one task; leaving the context removes it."""

    def open(
        self,
        *,
        context: Any,
        task_id: str,
        depth: int,
        handler: BridgeHandler,
        env: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[CodeSandbox]:
        """A started sandbox with ``context`` loaded and sub-calls served by ``handler``.

        ``depth`` is the task's recursion depth (1 for the top-level run); ``env`` adds
        variables to the kernel's environment (e.g. ``RLM_TOOLS``, the host tools' stubs).
        """
        ...
