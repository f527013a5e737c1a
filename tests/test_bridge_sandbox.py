"""The bridge end to end: the real client inside a real sandbox kernel (Docker, no network).

Checks what only the real set-up can show: the sandbox user (uid 1000) can reach the socket
on its read-only run directory, stream child contexts through it, gets ``BudgetExhausted``
as a Python exception, and a cell timeout (a KeyboardInterrupt inside the client) cancels
the sub-call on the host.
"""

from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path

import anyio
import pytest

from engine.bridge import BridgeServer
from engine.errors import BudgetExceededError
from engine.sandbox import Sandbox, SandboxConfig

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]


class Orchestrator:
    def __init__(self) -> None:
        self.children: list[tuple[str, str | None]] = []
        self.started = anyio.Event()
        self.cancelled = anyio.Event()

    async def llm_query(self, prompt: str, model: str | None) -> str:
        if prompt == "budget":
            raise BudgetExceededError("sub_calls", "sub-call budget of 2 calls used up")
        if prompt == "hang":
            self.started.set()
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                self.cancelled.set()
                raise
        return f"{model or 'sub'} says {prompt[::-1]}"

    async def rlm_query(self, prompt: str, context_path: Path | None) -> str:
        text = None if context_path is None else context_path.read_text()
        self.children.append((prompt, text))
        return f"child done: {prompt}"


async def test_client_in_a_real_sandbox() -> None:
    token = secrets.token_urlsafe(32)
    config = dataclasses.replace(SandboxConfig(), env={"RLM_BRIDGE_TOKEN": token})
    handler = Orchestrator()
    async with Sandbox(config, context="the context") as sandbox:
        run_dir = sandbox.run_dir
        async with BridgeServer(run_dir / "bridge.sock", token, handler):
            calls = await sandbox.execute(
                "print(llm_query('abc'))\n"
                "print(llm_batch(['one', 'two', 'budget'], model='m2'))\n"
                "print(rlm_query('sum the rows', context={'rows': [1, 2, 3]}))\n"
                "import os; print(sorted(os.listdir('/rlm/run')))",
                cell_timeout_s=60,
            )
            assert calls.error is None, calls.output_text()
            assert calls.stdout.splitlines() == [
                "sub says cba",
                "['m2 says eno', 'm2 says owt', '[ERROR] sub-call budget of 2 calls used up']",
                "child done: sum the rows",
                "['bridge.sock', 'context.txt', 'ipc', 'kernel.json']",
            ]
            assert handler.children == [("sum the rows", '{"rows": [1, 2, 3]}')]

            budget = await sandbox.execute("llm_query('budget')", cell_timeout_s=60)
            assert budget.error is not None
            assert budget.error.ename == "BudgetExhausted"
            assert budget.error.evalue == "sub-call budget of 2 calls used up"

            # A cell timeout interrupts the kernel inside the blocked client call: the
            # client drops its connection and the bridge cancels the sub-call.
            hung = await sandbox.execute("llm_query('hang')", cell_timeout_s=3)
            assert hung.timed_out
            with anyio.fail_after(10):
                await handler.cancelled.wait()
            after = await sandbox.execute("print(llm_query('again'))", cell_timeout_s=60)
            assert after.stdout == "sub says niaga\n"

        gone = await sandbox.execute("llm_query('x')", cell_timeout_s=60)
        assert gone.error is not None and gone.error.ename == "BridgeCallError"
        assert "the bridge is not available in this sandbox" in gone.error.evalue
