"""Attacks on the orchestrator through the kernel's ZMQ channels, from a real sandbox."""

from __future__ import annotations

import anyio
import pytest

from engine.errors import KernelDiedError
from engine.sandbox import SandboxConfig
from tests.attacks.conftest import AttackReport, RssMeter
from tests.sandbox_support import open_sandbox

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

#: A background thread publishing megabyte messages on iopub as fast as it can, for no cell.
FLOOD = r"""
import threading
kernel = get_ipython().kernel
def flood():
    text = "F" * 1_000_000
    while True:
        kernel.session.send(kernel.iopub_socket, "stream", {"name": "stdout", "text": text})
threading.Thread(target=flood, daemon=True).start()
print("flooding")
"""


async def innocent_cells() -> None:
    async with open_sandbox(SandboxConfig()) as sandbox:
        for n in range(3):
            result = await sandbox.execute(f"print(sum(range({n} * 1000)))", cell_timeout_s=60)
            assert result.ok and result.stdout == f"{sum(range(n * 1000))}\n"


async def test_iopub_flood_between_cells(rss_meter: RssMeter, attack_report: AttackReport) -> None:
    reason = ""

    async def attacker() -> None:
        nonlocal reason
        async with open_sandbox(SandboxConfig()) as sandbox:
            with pytest.raises(KernelDiedError) as stopped:
                await sandbox.execute(FLOOD, cell_timeout_s=60)
                for _ in range(60):  # the task goes on working, cell after cell
                    await sandbox.execute("import time; time.sleep(0.5)", cell_timeout_s=60)
            reason = str(stopped.value)
            with pytest.raises(KernelDiedError):  # stays stopped, with the same reason
                await sandbox.execute("1")

    async with anyio.create_task_group() as tg:
        tg.start_soon(attacker)
        tg.start_soon(innocent_cells)
    assert "output messages" in reason and "so it was stopped" in reason
    attack_report(
        "iopub flood: a thread publishing 1 MB messages between cells",
        "ZMQ RCVHWM 4 and MAXMSGSIZE; drained before each cell; foreign-output rate",
        f"stopped: {reason.split(', so')[0]}",
        rss_growth=rss_meter.growth(),
    )
