"""The same sandbox under gVisor (runsc): one setting away, and exercised in CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.sandbox import Sandbox, SandboxConfig, docker_api

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]


@pytest.fixture(scope="module")
def runsc() -> str:
    runtimes = docker_api.client().info().get("Runtimes", {})
    assert "runsc" in runtimes, (
        "gVisor is not registered with Docker; run scripts/install-system-deps.sh"
    )
    return "runsc"


async def test_gvisor_sandbox_runs_isolated_with_context(runsc: str, tmp_path: Path) -> None:
    path = tmp_path / "ctx.txt"
    path.write_text("secret number 7\n" * 10)
    async with Sandbox(SandboxConfig(runtime=runsc), context=path) as sandbox:
        result = await sandbox.execute(
            "import json, os, socket\n"
            "try:\n"
            "    socket.create_connection(('1.1.1.1', 443), timeout=2); net = 'open'\n"
            "except OSError as exc:\n"
            "    net = type(exc).__name__\n"
            "print(json.dumps({'uid': os.getuid(), 'ifaces': sorted(os.listdir('/sys/class/net')),"
            " 'net': net, 'n': context.count('7')}))"
        )
        assert result.ok, result.output_text()
        found = json.loads(result.stdout)
        assert found["uid"] != 0 and found["ifaces"] == ["lo"] and found["net"] != "open"
        assert found["n"] == 10
        looped = await sandbox.execute("y = 1\nwhile True: pass", cell_timeout_s=1.0)
        assert looped.timed_out
        assert (await sandbox.execute("y")).result == "1"
