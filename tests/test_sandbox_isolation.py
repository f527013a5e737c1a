"""Escape attempts: each is contained, reported clearly, and leaves the host healthy."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine.errors import KernelDiedError
from engine.sandbox import Sandbox, SandboxConfig
from tests.conftest import engine_containers
from tests.sandbox_support import open_sandbox

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]


@pytest.fixture(scope="module")
async def shared() -> AsyncIterator[Sandbox]:
    """One sandbox for the probes that do not break it."""
    async with open_sandbox(SandboxConfig(tmp_bytes=16 << 20), context="ctx") as sandbox:
        yield sandbox


async def probe(sandbox: Sandbox, code: str) -> dict[str, object]:
    result = await sandbox.execute(code, cell_timeout_s=60)
    assert result.error is None, result.output_text()
    found: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


async def test_no_network_only_the_lo_interface(shared: Sandbox) -> None:
    found = await probe(
        shared,
        """
import json, os, socket
out = {"interfaces": sorted(os.listdir("/sys/class/net"))}
def attempt(fn):
    try:
        fn()
        return "open"
    except OSError as exc:
        return type(exc).__name__
def tcp():
    socket.create_connection(("1.1.1.1", 443), timeout=3)
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(b"x", ("8.8.8.8", 53))
    s.recvfrom(10)
def dns():
    socket.getaddrinfo("pypi.org", 443)
out["tcp"], out["udp"], out["dns"] = attempt(tcp), attempt(udp), attempt(dns)
print(json.dumps(out))
""",
    )
    assert found["interfaces"] == ["lo"]
    assert found["tcp"] != "open" and found["udp"] != "open" and found["dns"] != "open"


async def test_file_system_is_read_only_except_capped_tmp(shared: Sandbox) -> None:
    found = await probe(
        shared,
        """
import json, os
out = {}
for path in ["/escape", "/usr/escape", "/etc/escape", "/rlm/context/escape", "/opt/rlm/escape"]:
    try:
        open(path, "w").write("x")
        out[path] = "written"
    except OSError as exc:
        out[path] = type(exc).__name__
written = 0
try:
    with open("/tmp/fill", "wb") as f:
        while written < 64 * 2**20:
            f.write(b"\\0" * 2**20)
            f.flush()
            written += 2**20
    out["tmp"] = "no limit"
except OSError as exc:
    out["tmp"] = f"{type(exc).__name__} errno {exc.errno}"
os.remove("/tmp/fill")
out["written_mb"] = written // 2**20
print(json.dumps(out))
""",
    )
    for path in ["/escape", "/usr/escape", "/etc/escape", "/rlm/context/escape", "/opt/rlm/escape"]:
        assert found[path] in ("OSError", "PermissionError"), (path, found)
    assert found["tmp"] == "OSError errno 28"  # ENOSPC at the 16 MiB cap
    assert int(found["written_mb"]) <= 16  # type: ignore[call-overload]
    assert (await shared.execute("print('still fine')")).stdout == "still fine\n"


async def test_run_dir_is_read_only_after_start(shared: Sandbox) -> None:
    # A warm sandbox finds its context in ctx/, staged after the container started.
    folders = ["ctx"] if shared.warm else []
    found = await probe(
        shared,
        f"""
import json, os
run = os.environ["RLM_RUN_DIR"]
out = {{}}
for name in ["escape.bin", "ipc/escape.bin", *{[f + "/escape.bin" for f in folders]!r}]:
    try:
        with open(os.path.join(run, name), "wb") as f:
            f.write(b"x")
        out[name] = "written"
    except OSError as exc:
        out[name] = exc.errno
for name in ["kernel.json", ".", "ipc", *{folders!r}]:
    try:
        os.chmod(os.path.join(run, name), 0o777)
        out["chmod " + name] = "changed"
    except OSError as exc:
        out["chmod " + name] = exc.errno
print(json.dumps(out))
""",
    )
    # EROFS (30) from the read-only mount or EACCES/EPERM (13, 1) from the locked ipc/ folder.
    assert all(value in (1, 13, 30) for value in found.values()), found
    staged = folders or ["context.txt"]
    assert sorted(os.listdir(shared.run_dir)) == sorted([*staged, "ipc", "kernel.json"])


async def test_tmpfs_mounts_cap_files_as_well_as_bytes() -> None:
    # runc: the host kernel's tmpfs honours nr_inodes. (gVisor's own tmpfs ignores it; there
    # every file costs memory inside the sandbox's memory limit instead.)
    config = SandboxConfig(runtime="runc", tmpfs_inodes=500)
    async with open_sandbox(config) as sandbox:
        found = await probe(
            sandbox,
            """
import errno, json, os
made = 0
try:
    while made < 5000:
        open(f"/tmp/f{made}", "w").close()
        made += 1
    out = {"stopped": "no limit"}
except OSError as exc:
    out = {"stopped": errno.errorcode[exc.errno]}
out["made"] = made
print(json.dumps(out))
""",
        )
    assert found["stopped"] == "ENOSPC"
    assert int(str(found["made"])) < 500


async def test_unprivileged_user(shared: Sandbox) -> None:
    found = await probe(
        shared,
        """
import json, os
import ctypes
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
# prctl(PR_GET_NO_NEW_PRIVS): gVisor's /proc/self/status has no NoNewPrivs line.
nnp = ctypes.CDLL(None, use_errno=True).prctl(39, 0, 0, 0, 0)
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "cap": status["CapEff"].strip(),
                  "nnp": str(nnp), "capbnd": status["CapBnd"].strip()}))
""",
    )
    assert found["uid"] != 0 and found["gid"] != 0
    assert int(str(found["cap"]), 16) == 0 and int(str(found["capbnd"]), 16) == 0
    assert found["nnp"] == "1"


async def test_endless_cell_times_out_and_state_survives(shared: Sandbox) -> None:
    await shared.execute("kept = 'before the loop'")
    looped = await shared.execute("while True:\n    pass", cell_timeout_s=1.0)
    assert looped.timed_out and looped.error is not None
    assert looped.error.ename == "TimeoutError"
    assert (await shared.execute("kept")).result == "'before the loop'"
    sleeper = await shared.execute("import time\ntime.sleep(30)", cell_timeout_s=0.5)
    assert sleeper.timed_out
    assert (await shared.execute("1 + 1")).result == "2"


async def test_huge_output_is_truncated_and_bounded(shared: Sandbox) -> None:
    limit = shared.config.output_limit_chars
    printed = await shared.execute(
        "chunk = 'x' * 1_000_000 + '\\n'\n"
        "for _ in range(1024):\n    print(chunk, end='')\n"
        "print('THE END')",
        cell_timeout_s=300,
    )
    assert printed.ok
    assert printed.truncated
    assert len(printed.stdout) < 2 * limit + 1000
    assert "characters dropped" in printed.stdout
    assert printed.stdout.rstrip().endswith("THE END")
    single = await shared.execute("print('y' * 50_000_000)", cell_timeout_s=120)
    assert single.truncated and len(single.stdout) < 2 * limit + 1000
    assert (await shared.execute("print('ok')")).stdout == "ok\n"


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
async def test_fork_bomb_hits_the_pids_limit(runtime: str) -> None:
    # runc: the pids cgroup stops the bomb and the kernel lives on. gVisor runs the sandbox's
    # processes as threads of its own kernel, so with the cgroup full that kernel stops: the
    # sandbox dies, reported as such, and the host is unharmed either way.
    config = SandboxConfig(pids_limit=64 if runtime == "runc" else 256, runtime=runtime)
    async with open_sandbox(config) as sandbox:
        run = sandbox.execute(
            """
import os, signal, subprocess, sys, time, json
bomb = subprocess.Popen([sys.executable, "-c", '''
import os, time
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.01)
'''], start_new_session=True)
peak = 0
deadline = time.time() + 4
while time.time() < deadline:
    peak = max(peak, sum(1 for p in os.listdir("/proc") if p.isdigit()))
    time.sleep(0.05)
for _ in range(50):
    try:
        os.killpg(bomb.pid, signal.SIGKILL)
    except ProcessLookupError:
        break
    time.sleep(0.05)
try:
    bomb.wait(timeout=5)
except Exception:
    pass
print(json.dumps({"peak": peak}))
""",
            cell_timeout_s=60,
        )
        if runtime == "runsc":
            try:
                result = await run
            except KernelDiedError as exc:
                assert "reach its limit of 256 (e.g. a fork bomb)" in str(exc)
            else:
                assert result.ok, result.output_text()
                assert json.loads(result.stdout.strip().splitlines()[-1])["peak"] <= 256
        else:
            result = await run
            assert result.ok, result.output_text()
            peak = json.loads(result.stdout.strip().splitlines()[-1])["peak"]
            assert 32 <= peak <= 64
    # The host can still start processes and the orchestrator still works.
    assert os.system("true") == 0


async def test_memory_bomb_is_killed_and_reported_as_oom() -> None:
    config = SandboxConfig(memory_bytes=256 << 20)
    async with open_sandbox(config) as sandbox:
        task = f"rlm-{sandbox.task_id}"
        with pytest.raises(KernelDiedError, match=r"ran out of memory \(limit 256 MiB\)"):
            await sandbox.execute(
                "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 2**20))",
                cell_timeout_s=60,
            )
        with pytest.raises(KernelDiedError, match="out of memory"):
            await sandbox.execute("1")
    assert task not in engine_containers()


async def test_cell_that_ignores_interrupt_is_stopped_and_reported() -> None:
    config = SandboxConfig(interrupt_grace_s=1.0)
    async with open_sandbox(config) as sandbox:
        task = f"rlm-{sandbox.task_id}"
        with pytest.raises(KernelDiedError, match="kept running"):
            await sandbox.execute(
                "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                "while True:\n    time.sleep(0.1)",
                cell_timeout_s=1.0,
            )
    assert task not in engine_containers()


async def test_orphans_of_a_dead_orchestrator_are_reaped() -> None:
    from engine.sandbox import docker_api, reap_orphans
    from engine.sandbox.container import create
    from engine.sandbox.instance import instance_id

    dead_pid = 2**22 + 12345  # above pid_max's default range: never a live process

    def parked(name: str, instance: str) -> Any:
        return create(
            {
                "image": SandboxConfig().image,
                "command": ["sleep", "300"],
                "name": f"rlm-{name}{os.getpid()}",
                "labels": {
                    docker_api.LABEL: "1",
                    docker_api.LABEL_INSTANCE: instance,
                    docker_api.LABEL_TASK: f"{name}{os.getpid()}",
                    docker_api.LABEL_OWNER_PID: str(dead_pid),
                    docker_api.LABEL_OWNER_HOST: socket.gethostname(),
                },
                "network_mode": "none",
                "detach": True,
            }
        )

    container = parked("orphan", instance_id())
    # Another stack on the same daemon: same host name, a PID that is not alive here.
    neighbour = parked("neighbour", f"other-stack-{os.getpid()}")
    try:
        # Another test process of this installation may reap the orphan first: either way
        # it must be gone, and the neighbour's must not.
        reap_orphans()
        # One raw list call: the SDK's list inspects each container and fails with 404 when
        # another process removes one meanwhile.
        names = [c.name for c in docker_api.list_labelled()]
        assert container.name not in names
        assert neighbour.name in names
    finally:
        neighbour.remove(force=True)


def test_an_oom_kill_is_found_in_the_daemons_event_log() -> None:
    """The evidence death_reason falls back on when Docker leaves ``OOMKilled`` false.

    Docker 20.10 sets the flag only when containerd's OOM event beats the exit event; the
    daemon's ``oom`` event is logged either way. A memory bomb's container has one, a
    container stopped by ``docker kill`` has none; both under the sandbox's runtime.
    """
    from engine.sandbox import docker_api
    from engine.sandbox.container import create, oom_event_logged
    from engine.sandbox.runtime import choose

    config = SandboxConfig()

    def started(name: str, code: str) -> Any:
        return create(
            {
                "image": config.image,
                "command": ["python", "-c", code],
                "name": f"rlm-oomprobe-{name}{os.getpid()}",
                "network_mode": "none",
                "mem_limit": 64 << 20,
                "memswap_limit": 64 << 20,
                "runtime": choose(config.runtime).name,
                "detach": True,
            }
        )

    # The bomb waits first, as a sandbox's kernel starts before any cell runs: gVisor's shim
    # watches the container's memory cgroup only once the container is up, and a bomb that
    # fills 64 MiB in its first 0.1 s under a loaded host (3 of 8 tries, 3 busy loops beside
    # them) dies before the watch, leaving neither ``OOMKilled`` nor an ``oom`` event.
    bomb = started(
        "bomb", "import time\ntime.sleep(2)\nb = []\nwhile True:\n    b.append(bytearray(8 << 20))"
    )
    sleeper = started("sleeper", "import time; time.sleep(300)")
    try:
        assert bomb.wait(timeout=60)["StatusCode"] == 137
        sleeper.kill()
        assert sleeper.wait(timeout=60)["StatusCode"] == 137
        for container in (bomb, sleeper):
            container.reload()
        assert oom_event_logged(bomb, bomb.attrs["State"])
        assert not oom_event_logged(sleeper, sleeper.attrs["State"])
    finally:
        for container in (bomb, sleeper):
            docker_api.remove(str(container.id))
