"""Attacks on the orchestrator through the kernel's ZMQ channels, from a real sandbox."""

from __future__ import annotations

import anyio
import pytest

from engine.errors import KernelDiedError
from engine.sandbox import SandboxConfig
from engine.sandbox.kernel import CELL_OUTPUT_CHARS
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


#: Sends frames the kernel's own code never would, signed with the connection file's key
#: (which the sandbox can read): ``forge(kind, content, parent=..., header=..., reply=...)``.
FORGE = r"""
import json
kernel = get_ipython().kernel
session = kernel.session
def forge(kind, content, parent=None, header=None, reply=False):
    if header is None:
        header = json.dumps(session.msg_header(kind), default=str)
    if parent is None:
        parent = json.dumps(kernel.get_parent("shell")["header"], default=str)
    frames = [f.encode() if isinstance(f, str) else f for f in (header, parent, "{}", content)]
    if reply:  # on the shell socket, to the client that sent this cell
        socket, idents = kernel.shell_stream, list(kernel._parent_ident["shell"])
    else:
        socket, idents = kernel.iopub_socket, [b"stream"]
    socket.send_multipart([*idents, b"<IDS|MSG>", session.sign(frames), *frames])
"""

#: Forgeries the orchestrator must refuse; each stops its sandbox with a reason.
FORGERIES = {
    "stream text a number": 'forge("stream", \'{"name": "stdout", "text": 123}\')',
    "parent header a string": "forge('stream', '{}', parent='\"x\"')",
    "traceback of numbers": 'forge("error", \'{"ename": "E", "evalue": "", "traceback": [1]}\')',
    "JSON nested 100,000 deep": 'forge("stream", "[" * 100_000 + "]" * 100_000)',
    "header without msg_id": 'forge("stream", \'{"name": "stdout", "text": "x"}\', header="{}")',
}

#: A fake execute_reply whose user_expressions is a list, then the idle status.
FAKE_REPLY = """
forge("execute_reply", json.dumps({"status": "ok", "user_expressions": [1]}), reply=True)
forge("status", '{"execution_state": "idle"}')
import time; time.sleep(1)
"""
#: A fake execute_reply whose state report is JSON nested 100,000 deep.
DEEP_STATE_REPLY = """
deep = "[" * 100_000 + "]" * 100_000
state = {"rlm": {"status": "ok", "data": {"text/plain": deep}}}
forge("execute_reply", json.dumps({"status": "ok", "user_expressions": state}), reply=True)
forge("status", '{"execution_state": "idle"}')
import time; time.sleep(1)
"""


async def test_forged_kernel_messages(rss_meter: RssMeter, attack_report: AttackReport) -> None:
    reasons: dict[str, str] = {}
    config = SandboxConfig(runtime="runc")  # the protocol is the same under gVisor
    for name, forgery in FORGERIES.items():
        async with open_sandbox(config) as sandbox:
            with pytest.raises(KernelDiedError) as stopped:
                await sandbox.execute(FORGE + forgery, cell_timeout_s=60)
            reasons[name] = str(stopped.value)
            with pytest.raises(KernelDiedError):  # stays stopped
                await sandbox.execute("1")
    for name, reason in reasons.items():
        assert "malformed kernel message" in reason or "cannot be decoded" in reason, name
    async with open_sandbox(config) as sandbox:
        for reply in (FAKE_REPLY, DEEP_STATE_REPLY):
            faked = await sandbox.execute(FORGE + reply, cell_timeout_s=60)
            # Read as a broken runtime's report: no answer, nothing trusted.
            assert not faked.state.answer_ready and faked.state.answer_content == ""
        assert (await sandbox.execute("print('alive')")).stdout == "alive\n"
    attack_report(
        f"forged Jupyter messages signed with the kernel's key ({len(FORGERIES)} kinds; "
        "fake execute_replies)",
        "every message type-checked before it is read (engine/sandbox/kernel_messages.py)",
        f"all {len(FORGERIES)} stopped their sandbox with the reason; fake replies (a list, "
        "JSON nested 100,000 deep) read as no answer",
        rss_growth=rss_meter.growth(),
    )


#: Megabyte stream messages for the running cell itself, past the kernel's output cap.
CELL_FLOOD = """
text = json.dumps({"name": "stdout", "text": "F" * 1_000_000})
while True:
    forge("stream", text)
"""


async def test_forged_output_flood_for_the_running_cell(
    rss_meter: RssMeter, attack_report: AttackReport
) -> None:
    async with open_sandbox(SandboxConfig(runtime="runc")) as sandbox:
        with pytest.raises(KernelDiedError) as stopped:
            await sandbox.execute(FORGE + CELL_FLOOD, cell_timeout_s=60)
    reason = str(stopped.value)
    assert f"more than {CELL_OUTPUT_CHARS:,} characters of output in one cell" in reason
    attack_report(
        "a cell forging 1 MB output messages for itself (past the kernel's output cap)",
        f"{CELL_OUTPUT_CHARS:,} output characters per cell (else the orchestrator decodes "
        "~300 MB/s of JSON for the whole cell timeout)",
        f"stopped: {reason.split(', past')[0]}",
        rss_growth=rss_meter.growth(),
    )
