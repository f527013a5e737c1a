"""Attacks on the host's disk from inside a real sandbox, under runc and under gVisor.

The sandbox has no host-writable storage once it is up (read-only run directory, locked
``ipc/``), and every writable mount is a size- and inode-capped tmpfs: each attack must fail
inside the sandbox (ENOSPC, EROFS or EACCES) while nothing lands on the host's disk, and an
innocent sandbox running at the same time must finish its work correctly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.sandbox import Sandbox, SandboxConfig, docker_api
from engine.sandbox.container import LOG_MAX_BYTES
from tests.attacks.conftest import AttackReport, RssMeter
from tests.sandbox_support import open_sandbox

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

RUNTIMES = ["runc", "runsc"]
TMP_CAP = 32 << 20
INODES = 2_000

#: Helpers every attack cell starts with: try an action, report the errno's name.
PRELUDE = r"""
import errno, json, os
RUN = os.environ["RLM_RUN_DIR"]
TARGETS = ["/tmp", "/home/sandbox", "/dev/shm", RUN, RUN + "/ipc", "/rlm/context", "/",
           "/var/tmp", "/opt"]
def outcome(fn):
    try:
        return fn()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
"""


def _config(runtime: str) -> SandboxConfig:
    return SandboxConfig(
        runtime=runtime,
        tmp_bytes=TMP_CAP,
        home_bytes=TMP_CAP,
        shm_bytes=TMP_CAP,
        tmpfs_inodes=INODES,
    )


def host_bytes(sandbox: Sandbox) -> int:
    """What the sandbox's files cost the host's disk: its run directory's allocated blocks
    and the container's writable layer."""
    total = 0
    for folder, _dirs, files in os.walk(sandbox.run_dir):
        for name in files:
            total += os.lstat(Path(folder, name)).st_blocks * 512
    assert sandbox._container is not None
    (row,) = docker_api.client().api.containers(
        all=True, filters={"id": sandbox._container.id}, size=True
    )
    return total + int(row.get("SizeRw") or 0)


async def innocent_work() -> None:
    """A well-behaved task in its own sandbox, running while the attack does."""
    async with open_sandbox(SandboxConfig()) as sandbox:
        result = await sandbox.execute(
            "import hashlib\n"
            "data = b'innocent' * 100_000\n"
            "open('/tmp/work.bin', 'wb').write(data)\n"
            "print(hashlib.sha256(open('/tmp/work.bin', 'rb').read()).hexdigest())",
            cell_timeout_s=120,
        )
    import hashlib

    assert result.ok, result.output_text()
    assert result.stdout.strip() == hashlib.sha256(b"innocent" * 100_000).hexdigest()


async def attack(
    runtime: str, code: str, check: Callable[[dict[str, Any]], None]
) -> tuple[dict[str, Any], int]:
    """Run ``code`` (after the prelude) in a fresh sandbox beside an innocent one."""
    found: dict[str, Any] = {}
    written = 0

    async def attacker() -> None:
        nonlocal found, written
        async with open_sandbox(_config(runtime), context="the task's context") as sandbox:
            before = host_bytes(sandbox)
            result = await sandbox.execute(PRELUDE + code, cell_timeout_s=300)
            assert result.error is None, result.output_text()
            found = json.loads(result.stdout.strip().splitlines()[-1])
            written = max(0, host_bytes(sandbox) - before)
            # The sandbox is still usable: the attack only hurt itself.
            assert (await sandbox.execute("print('alive')")).stdout == "alive\n"

    async with anyio.create_task_group() as tg:
        tg.start_soon(attacker)
        tg.start_soon(innocent_work)
    check(found)
    return found, written


def nothing_on_host(
    report: AttackReport, meter: RssMeter, written: int, attack: str, limit: str, outcome: str
) -> None:
    """Record a disk attack: nothing it wrote may be on the host's disk."""
    report(attack, limit, outcome, rss_growth=meter.growth(), host_bytes=written, host_cap=0)


def refused_outside_tmpfs(found: dict[str, Any], tmpfs_results: tuple[str, ...]) -> None:
    for target, result in found.items():
        if target in ("/tmp", "/home/sandbox", "/dev/shm"):
            assert result in tmpfs_results, (target, result)
        else:
            assert result in ("EROFS", "EACCES", "EPERM", "ENOENT"), (target, result)


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_unlinked_open_file(
    runtime: str, rss_meter: RssMeter, attack_report: AttackReport
) -> None:
    """Open, unlink, then write: no directory entry for a poller to see."""
    code = r"""
out = {}
for target in TARGETS:
    def write():
        path = os.path.join(target, "ghost.bin")
        f = open(path, "wb")
        os.unlink(path)
        block = b"g" * 2**20
        for _ in range(128):
            f.write(block)
            f.flush()
        return "no limit"
    out[target] = outcome(write)
print(json.dumps(out))
"""
    _found, written = await attack(runtime, code, lambda f: refused_outside_tmpfs(f, ("ENOSPC",)))
    nothing_on_host(
        attack_report,
        rss_meter,
        written,
        f"unlinked open file, 128 MiB ({runtime})",
        "tmpfs size cap (kernel); run dir read-only",
        f"ENOSPC at {TMP_CAP >> 20} MiB on every tmpfs; EROFS/EACCES elsewhere",
    )


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_many_small_files(
    runtime: str, rss_meter: RssMeter, attack_report: AttackReport
) -> None:
    """More one-byte files than any entry scan would count."""
    code = r"""
out, made = {}, {}
for target in TARGETS:
    count = 0
    def flood():
        global count
        while count < 200_000:
            with open(os.path.join(target, f"s{count}"), "wb") as f:
                f.write(b"x")
            count += 1
        return "no limit"
    out[target] = outcome(flood)
    made[target] = count
print(json.dumps({"out": out, "made": made}))
"""

    def check(found: dict[str, Any]) -> None:
        refused_outside_tmpfs(found["out"], ("ENOSPC",))
        for target in ("/tmp", "/home/sandbox", "/dev/shm"):
            # runc: the inode cap; gVisor: each file takes a page of the size cap.
            cap = INODES if runtime == "runc" else TMP_CAP // 4096
            assert found["made"][target] <= cap

    found, written = await attack(runtime, code, check)
    nothing_on_host(
        attack_report,
        rss_meter,
        written,
        f"many small files ({runtime})",
        "tmpfs inode cap (runc) / size cap per page (gVisor)",
        f"ENOSPC after {found['made']['/tmp']:,} files in /tmp; EROFS/EACCES elsewhere",
    )


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_sparse_file(runtime: str, rss_meter: RssMeter, attack_report: AttackReport) -> None:
    """A 1 TiB file of holes, then real blocks written all over it."""
    code = r"""
out = {}
for target in TARGETS:
    def sparse():
        with open(os.path.join(target, "sparse.bin"), "wb") as f:
            f.truncate(2**40)
            for i in range(4096):
                f.seek(i * 2**28)
                f.write(b"s" * 2**16)
                f.flush()
        return "no limit"
    out[target] = outcome(sparse)
print(json.dumps(out))
"""

    def check(found: dict[str, Any]) -> None:
        # A tmpfs may refuse the 1 TiB length itself (EFBIG) or the blocks (ENOSPC).
        refused_outside_tmpfs(found, ("ENOSPC", "EFBIG"))

    found, written = await attack(runtime, code, check)
    nothing_on_host(
        attack_report,
        rss_meter,
        written,
        f"sparse 1 TiB file ({runtime})",
        "tmpfs size cap (kernel); run dir read-only",
        f"/tmp: {found['/tmp']}; EROFS/EACCES elsewhere",
    )


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_big_write_to_every_writable_path(
    runtime: str, rss_meter: RssMeter, attack_report: AttackReport
) -> None:
    """Find every writable mount and fill each one; none may reach the host's disk."""
    code = r"""
mounts = set()
for line in open("/proc/self/mountinfo"):
    mounts.add(line.split()[4])
candidates = sorted(set(TARGETS) | {m for m in mounts if os.path.isdir(m)})
out, sizes = {}, {}
for target in candidates:
    if target.startswith(("/proc", "/sys")):
        continue
    total = 0
    def fill():
        global total
        with open(os.path.join(target, "fill.bin"), "wb") as f:
            while total < 2**30:
                f.write(b"f" * 2**20)
                f.flush()
                total += 2**20
        return "no limit"
    out[target] = outcome(fill)
    sizes[target] = total
    try:
        os.remove(os.path.join(target, "fill.bin"))
    except OSError:
        pass
print(json.dumps({"out": out, "sizes": sizes}))
"""

    def check(found: dict[str, Any]) -> None:
        for target, result in found["out"].items():
            assert result != "no limit", target
            if result == "ENOSPC":
                assert found["sizes"][target] <= TMP_CAP, target
            else:
                # EINVAL: /dev/mqueue holds message queues, not files.
                refused = ("EROFS", "EACCES", "EPERM", "ENOENT", "ENOTDIR", "EINVAL")
                assert result in refused, (target, result)

    found, written = await attack(runtime, code, check)
    full = sorted(t for t, r in found["out"].items() if r == "ENOSPC")
    nothing_on_host(
        attack_report,
        rss_meter,
        written,
        f"1 GiB write to every writable path ({runtime})",
        "tmpfs size caps; read-only root, run dir and context",
        f"ENOSPC within {TMP_CAP >> 20} MiB on {', '.join(full)}; "
        f"{len(found['out']) - len(full)} other paths refused",
    )


#: 16 MiB (16 times the log cap) to the kernel's stdout at the file-descriptor level,
#: bypassing ``print`` (ipykernel copies fd 1 and 2 to the container's own output, which
#: Docker writes to the host's disk), half with ``os.write`` and half from a subprocess.
LOG_FLOOD = r"""
import os, subprocess
for _ in range(8):
    os.write(1, b"L" * (1 << 20))
subprocess.run("head -c 8388608 /dev/zero | tr '\\0' 'S'", shell=True, check=True)
print("flooded")
"""


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_stdout_flood_into_the_container_log(
    runtime: str, rss_meter: RssMeter, attack_report: AttackReport
) -> None:
    async with open_sandbox(_config(runtime)) as sandbox:
        result = await sandbox.execute(LOG_FLOOD, cell_timeout_s=300)
        assert result.ok and result.truncated, result.output_text()[-500:]
        assert sandbox._container is not None
        sandbox._container.reload()
        log_config = sandbox._container.attrs["HostConfig"]["LogConfig"]
        assert log_config["Config"] == {"max-size": str(LOG_MAX_BYTES), "max-file": "1"}
        try:  # Docker's own directory: readable when the tests run as root
            logged = os.stat(sandbox._container.attrs["LogPath"]).st_size
        except PermissionError:
            pytest.skip("the container's log file is not readable by this user")
    attack_report(
        f"16 MiB written to fd 1 (os.write, a subprocess), into Docker's log ({runtime})",
        f"container log capped by Docker (json-file, max-size {LOG_MAX_BYTES >> 20} MiB, one file)",
        f"the cell's output clipped to {len(result.stdout):,} characters; "
        f"{logged / (1 << 20):.1f} MiB on the host's disk",
        rss_growth=rss_meter.growth(),
        host_bytes=logged,
        host_cap=LOG_MAX_BYTES + (64 << 10),  # one log entry past the rotation point
    )
