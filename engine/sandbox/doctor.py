"""``rlm doctor``: check that sandboxes can run here, and say what to fix."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import docker.errors

from engine.errors import RLMError
from engine.sandbox import docker_api
from engine.sandbox import runtime as runtimes
from engine.sandbox.config import SandboxConfig, format_size

_PROBE = r"""
import json, os, socket
checks = {"uid": os.getuid()}
with open("/proc/self/status") as f:
    status = dict(line.split(":", 1) for line in f if ":" in line)
checks["cap_eff"] = status["CapEff"].strip()
import ctypes  # prctl(PR_GET_NO_NEW_PRIVS): gVisor's status file has no NoNewPrivs line
checks["no_new_privs"] = str(ctypes.CDLL(None).prctl(39, 0, 0, 0, 0))
checks["interfaces"] = sorted(os.listdir("/sys/class/net"))
try:
    open("/rlm-doctor-probe", "w")
    checks["root_writable"] = True
except OSError:
    checks["root_writable"] = False
try:
    open(os.environ["RLM_RUN_DIR"] + "/rlm-doctor-probe", "w")
    checks["run_dir_writable"] = True
except OSError:
    checks["run_dir_writable"] = False
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2)
    checks["egress"] = True
except OSError:
    checks["egress"] = False
print(json.dumps(checks))
"""


@dataclass(frozen=True)
class Check:
    """One line of ``rlm doctor``: what was checked, the result, and how to fix a failure.

    A failed ``optional`` check is a warning: it names something only some uses need (the
    embedded local model, when models are hosted) and does not fail ``rlm doctor``.
    """

    name: str
    ok: bool
    detail: str
    fix: str = ""
    optional: bool = False


def run_checks(runtime: str | None = None) -> Iterator[Check]:
    """Yield checks one by one, so a slow check shows the ones before it first."""
    try:
        client = docker_api.client()
        version = client.version()
        yield Check("docker", True, f"daemon {version.get('Version')} reachable")
    except RLMError as exc:
        # The message ends with the hint; show it once, as the fix.
        detail = str(exc).replace(docker_api.DOCKER_HINT, "").strip()
        yield Check("docker", False, detail, docker_api.DOCKER_HINT)
        return
    config = SandboxConfig.from_env(**({"runtime": runtime} if runtime else {}))
    registered = client.info().get("Runtimes", {}) or {}
    if config.runtime and config.runtime not in registered:
        yield Check(
            "runtime",
            False,
            f"Docker has no runtime {config.runtime!r} (has: {', '.join(registered)})",
            runtimes.GVISOR_HINT,
        )
        return
    choice = runtimes.choose(config.runtime)
    if choice.name == runtimes.GVISOR or config.runtime:
        yield Check("runtime", True, f"{choice.label} in force ({choice.reason})")
    else:
        yield Check(
            "runtime",
            True,
            f"{choice.label} in force: {choice.reason}; install gVisor for a second wall "
            "between sandboxes and the host kernel",
            runtimes.GVISOR_HINT,
        )
    try:
        image = client.images.get(config.image)
        size = format_size(image.attrs.get("Size", 0))
        yield Check("image", True, f"{config.image} present ({size})")
    except docker.errors.ImageNotFound:
        yield Check(
            "image",
            False,
            f"{config.image} is not built",
            "run `rlm image build` (`make image` in a checkout); it needs Docker and, the "
            "first time, debootstrap (or RLM_SANDBOX_BASE_IMAGE) and PyPI for the wheels",
        )
        return
    try:
        probe, seconds = anyio.run(_probe, config)
    except RLMError as exc:
        yield Check("sandbox", False, f"a sandbox did not start: {exc}", "see the message above")
        return
    yield Check("sandbox", True, f"kernel ready and first cell run in {seconds:.2f} s")
    yield Check("non-root", probe["uid"] != 0, f"uid {probe['uid']}")
    yield Check(
        "capabilities",
        int(str(probe["cap_eff"]), 16) == 0 and probe["no_new_privs"] == "1",
        f"CapEff {probe['cap_eff']}, NoNewPrivs {probe['no_new_privs']}",
    )
    yield Check(
        "network",
        probe["interfaces"] == ["lo"] and not probe["egress"],
        f"interfaces {probe['interfaces']}, egress {'open' if probe['egress'] else 'blocked'}",
    )
    yield Check(
        "read-only root",
        not probe["root_writable"],
        "writes to / fail" if not probe["root_writable"] else "/ is writable",
    )
    yield _run_dir_check(bool(probe["run_dir_writable"]), config)
    yield Check(
        "limits",
        True,
        f"memory {format_size(config.memory_bytes)}, cpus {config.cpus:g}, "
        f"pids {config.pids_limit}, /tmp {format_size(config.tmp_bytes)}",
    )


def _run_dir_check(writable: bool, config: SandboxConfig) -> Check:
    cap = format_size(config.disk_bytes)
    if not writable:
        return Check(
            "run dir",
            True,
            f"read-only for the sandbox; child contexts stream through the bridge (at most {cap} "
            f"on the host at once); /tmp, home and /dev/shm are capped tmpfs "
            f"({config.tmpfs_inodes:,} files each)",
        )
    return Check(
        "run dir",
        False,
        "the sandbox can write its run directory after start-up",
        "check that the run directory's file system honours permissions (RLM_RUN_DIR)",
    )


async def _probe(config: SandboxConfig) -> tuple[dict[str, object], float]:
    from engine.sandbox.sandbox import Sandbox

    started = anyio.current_time()
    async with Sandbox(config) as sandbox:
        result = await sandbox.execute(_PROBE, cell_timeout_s=30)
    seconds = anyio.current_time() - started
    if not result.ok:
        raise RLMError(f"the probe cell failed: {result.output_text()[-500:]}")
    return json.loads(result.stdout.strip().splitlines()[-1]), seconds
