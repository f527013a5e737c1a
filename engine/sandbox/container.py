"""Create the hardened container of one sandbox, and explain how it died."""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import socket
from pathlib import Path
from typing import Any

import docker.errors
import docker.types
from docker.models.containers import Container

from engine.errors import ImageError, SandboxError
from engine.sandbox import docker_api
from engine.sandbox.config import SandboxConfig, format_size, sandbox_ids
from engine.sandbox.rundir import (
    CONTAINER_BRIDGE_SOCKET,
    CONTAINER_CONNECTION_FILE,
    CONTAINER_RUN_DIR,
    IPC_DIR,
    StagedContext,
)

#: What Docker keeps of the container's stdout and stderr on the host's disk. The kernel copies
#: every byte written to file descriptors 1 and 2 (a subprocess, ``os.write``) there, and the
#: daemon's default log driver keeps it all: without this cap a cell could fill the host's
#: disk under /var/lib/docker at disk speed. Only the last lines are read (the exit reason).
LOG_MAX_BYTES = 1 << 20
#: Characters of the container's last log line quoted in a death reason (tenant-written text).
_LOG_LINE_CHARS = 300

# Hardware hints that some processors need for OpenBLAS to run correctly; not secrets.
_PASSTHROUGH_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def sandbox_environment(config: SandboxConfig) -> dict[str, str]:
    """The container's whole environment: an allow-list, never the host's environment."""
    threads = str(max(1, math.ceil(config.cpus)))
    env = {
        "HOME": "/home/sandbox",
        "PATH": "/opt/rlm/bin:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        "OMP_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "RLM_RUN_DIR": CONTAINER_RUN_DIR,
        "RLM_BRIDGE_SOCKET": CONTAINER_BRIDGE_SOCKET,
    }
    for name in _PASSTHROUGH_ENV:
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(config.env)
    return env


def container_kwargs(
    config: SandboxConfig,
    *,
    task_id: str,
    run_dir: Path,
    context: StagedContext,
    memory_bytes: int,
    runtime: str | None,
    instance: str,
    pool: str | None = None,
) -> dict[str, Any]:
    """Arguments for ``containers.create``: every hardening setting in one place.

    Nothing the sandbox can write lands on the host's disk: the run directory is mounted
    read-only (only ``ipc/`` is writable, until :func:`rundir.lock_run_dir`), and every writable
    mount is a tmpfs whose size and inode count the kernel caps (its pages also count against
    the container's memory limit).
    """
    uid, gid = sandbox_ids()
    labels = {
        docker_api.LABEL: "1",
        docker_api.LABEL_INSTANCE: instance,
        docker_api.LABEL_TASK: task_id,
        docker_api.LABEL_OWNER_PID: str(os.getpid()),
        docker_api.LABEL_OWNER_HOST: socket.gethostname(),
        docker_api.LABEL_RUN_DIR: str(run_dir),
    }
    if pool is not None:  # a warm pool's sandbox: its pool removes it by this label
        labels[docker_api.LABEL_POOL] = pool
    volumes = {
        str(run_dir): {"bind": CONTAINER_RUN_DIR, "mode": "ro"},
        str(run_dir / IPC_DIR): {"bind": f"{CONTAINER_RUN_DIR}/{IPC_DIR}", "mode": "rw"},
    }
    if context.mount and context.host_path is not None and context.container_path:
        volumes[str(context.host_path)] = {"bind": context.container_path, "mode": "ro"}
    tmpfs_opts = f"rw,nosuid,nodev,noexec,uid={uid},gid={gid},nr_inodes={config.tmpfs_inodes}"
    return {
        "image": config.image,
        "command": ["python", "-m", "rlm_runtime.launch", CONTAINER_CONNECTION_FILE],
        "name": f"rlm-{task_id}",
        "hostname": "sandbox",
        "labels": labels,
        "user": f"{uid}:{gid}",
        "environment": sandbox_environment(config),
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {
            "/tmp": f"{tmpfs_opts},mode=1777,size={config.tmp_bytes}",
            "/home/sandbox": f"{tmpfs_opts},mode=0700,size={config.home_bytes}",
            # Replaces Docker's own /dev/shm, whose inode count is not capped.
            "/dev/shm": f"{tmpfs_opts},mode=1777,size={config.shm_bytes}",
        },
        "volumes": volumes,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "ipc_mode": "private",
        "pids_limit": config.pids_limit,
        "mem_limit": memory_bytes,
        "memswap_limit": memory_bytes,  # equal to memory: no swap
        "nano_cpus": int(config.cpus * 1e9),
        "ulimits": [docker.types.Ulimit(name="nofile", soft=4096, hard=4096)],
        # Docker enforces the cap (rotation into one file); set explicitly, so a daemon whose
        # default driver keeps everything (json-file without max-size) changes nothing here.
        "log_config": docker.types.LogConfig(
            type=docker.types.LogConfig.types.JSON,
            config={"max-size": str(LOG_MAX_BYTES), "max-file": "1"},
        ),
        "init": True,  # tini reaps zombies and forwards SIGINT to the kernel
        "runtime": runtime,
        "detach": True,
        "stdin_open": False,
        "tty": False,
    }


def create(kwargs: dict[str, Any]) -> Container:
    """Create and start the container (blocking; call through ``docker_api.call``)."""
    client = docker_api.client()
    kwargs = {key: value for key, value in kwargs.items() if value is not None}
    try:
        container = client.containers.create(**kwargs)
    except docker.errors.ImageNotFound as exc:
        raise ImageError(
            f"the sandbox image {kwargs['image']} is not built; run `make image` "
            "(or `rlm image build`)"
        ) from exc
    except docker.errors.APIError as exc:
        raise SandboxError(f"Docker refused to create the sandbox: {exc.explanation}") from exc
    try:
        container.start()
    except docker.errors.APIError as exc:
        remove(container)
        hint = ""
        if kwargs.get("runtime"):
            hint = f" (is the runtime {kwargs['runtime']!r} registered in Docker's daemon.json?)"
        raise SandboxError(f"Docker could not start the sandbox{hint}: {exc.explanation}") from exc
    return container


def remove(container: Container) -> None:
    """Force-remove ``container`` (blocking), also a paused one; gone already is fine."""
    try:
        docker_api.remove(str(container.id))
    except docker.errors.APIError as exc:
        if "already in progress" not in str(exc):
            raise


def death_reason(
    container: Container, memory_bytes: int, *, gvisor_pids: int | None = None
) -> str | None:
    """Why the container stopped, in words for the user; ``None`` while it runs.

    ``gvisor_pids`` is the pids limit of a sandbox under gVisor: its user-space kernel runs
    the sandbox's processes as its own threads and exits with status 2 (a Go runtime fatal
    error) when the cgroup lets it create no more.
    """
    try:
        container.reload()
    except docker.errors.NotFound:
        return "the sandbox container disappeared (removed from outside the engine)"
    state = container.attrs.get("State", {})
    if state.get("Running"):
        return None
    code = state.get("ExitCode")
    if code == 137 and not state.get("OOMKilled"):
        state = _after_oom_event(container, state)
    if state.get("OOMKilled") or (code == 137 and _memory_exhausted(container)):
        return f"sandbox ran out of memory (limit {format_size(memory_bytes)})"
    if code == 2 and gvisor_pids is not None:
        return (
            "the gVisor sandbox stopped (status 2), which it does when the sandbox's processes "
            f"and threads reach its limit of {gvisor_pids} (e.g. a fork bomb); its variables "
            "are lost. Start fewer processes or threads, or raise RLM_SANDBOX_PIDS"
        )
    if code == 139:
        return "the sandbox kernel crashed (segmentation fault)"
    if code == 137:
        return "the sandbox kernel was killed (SIGKILL)"
    logs = ""
    with contextlib.suppress(docker.errors.APIError):
        logs = container.logs(tail=5).decode("utf-8", "replace").strip()
    detail = f": {logs.splitlines()[-1][:_LOG_LINE_CHARS]}" if logs else ""
    return f"the sandbox kernel exited with status {code}{detail}"


def _after_oom_event(container: Container, state: dict[str, Any]) -> dict[str, Any]:
    """The state of a SIGKILLed container, with ``OOMKilled`` set if Docker saw an OOM kill.

    Docker 20.10 sets ``OOMKilled`` only when containerd's OOM event reaches it before the
    exit event; when the two come the other way round (a loaded host: one full CI run in
    three reported a memory bomb as a plain SIGKILL), the flag stays false for good, but the
    daemon still logs an ``oom`` event for the container. So ask the daemon's event log.
    """
    if oom_event_logged(container, state):
        return {**state, "OOMKilled": True}
    return state


#: How long after the container's exit its ``oom`` event may still arrive.
_OOM_EVENT_WAIT_S = 2.0


def oom_event_logged(container: Container, state: dict[str, Any]) -> bool:
    """Whether the daemon logged an ``oom`` event for ``container`` in its last run.

    One events call replays the daemon's log from the container's start and waits for new
    events until :data:`_OOM_EVENT_WAIT_S` after its exit, both in the daemon's own clock
    (so a remote daemon's skewed clock does not matter); it returns at the first ``oom``.
    """
    started = _docker_time(state.get("StartedAt"))
    finished = _docker_time(state.get("FinishedAt"))
    if started is None or finished is None:
        return False
    try:
        stream = docker_api.client().api.events(
            since=math.floor(started),
            until=math.ceil(finished + _OOM_EVENT_WAIT_S),
            filters={"container": str(container.id), "event": "oom"},
            decode=True,
        )
    except docker.errors.APIError:
        return False
    try:
        return any(True for _ in stream)
    except (docker.errors.APIError, OSError, ValueError):
        return False
    finally:
        with contextlib.suppress(Exception):
            stream.close()


def _docker_time(text: object) -> float | None:
    """Seconds since the epoch of a Docker RFC 3339 timestamp (Python 3.11's parser takes its
    nanoseconds and ``Z``); None for Go's zero time (never) or anything else."""
    if not isinstance(text, str) or text.startswith("0001-"):
        return None
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _memory_exhausted(container: Container) -> bool:
    # With cgroup v1 and tini as PID 1, Docker does not always raise OOMKilled when the
    # kernel (a child of PID 1) is the process the OOM killer picked.
    try:
        stats = container.stats(stream=False)
    except docker.errors.APIError:
        return False
    if not isinstance(stats, dict):  # stream=False gives one dict (the stubs allow both)
        return False
    memory = stats.get("memory_stats", {})
    limit = memory.get("limit") or 0
    peak = memory.get("max_usage") or 0
    return bool(limit and peak >= limit * 0.95)
