"""Remove what a crashed orchestrator left behind: containers and run directories."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import docker.errors

from engine.log import get_logger
from engine.sandbox import docker_api
from engine.sandbox.instance import instance_id
from engine.sandbox.rundir import remove_run_dir

log = get_logger(__name__)

_reaped = False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def own_containers_filter() -> list[str]:
    """The label filter for this instance's engine containers (never another stack's)."""
    return [docker_api.LABEL, f"{docker_api.LABEL_INSTANCE}={instance_id()}"]


def reap_orphans(*, all_owners: bool = False, restarted: bool = False) -> int:
    """Remove this instance's engine containers whose owning process on this host is gone.

    Only containers labelled with this engine's instance id (see
    :mod:`engine.sandbox.instance`) are considered, so another stack on the same Docker daemon
    is never touched. With ``all_owners`` every engine container on the daemon is removed
    (``rlm sandbox reap --all``). With ``restarted``, containers that name *this* process but
    were created before it started are removed too: in a container a restarted service often
    gets the same pid again. Returns how many containers were removed.
    """
    host, mine = socket.gethostname(), os.getpid()
    started = process_start_time() if restarted else 0.0
    labels_wanted = [docker_api.LABEL] if all_owners else own_containers_filter()
    removed = 0
    for container in docker_api.list_labelled(labels_wanted):
        labels = container.labels
        owner_host = labels.get(docker_api.LABEL_OWNER_HOST)
        try:
            owner_pid = int(labels.get(docker_api.LABEL_OWNER_PID, "0"))
        except ValueError:
            owner_pid = 0
        here = owner_host == host
        orphaned = here and (owner_pid <= 0 or not _pid_alive(owner_pid))
        earlier_self = restarted and here and owner_pid == mine and container.created < started - 1
        if (all_owners or orphaned or earlier_self) and _remove(container):
            removed += 1
            log.info("reaper.removed", container=container.name, owner_pid=owner_pid)
    return removed


def _remove(container: docker_api.Listed) -> bool:
    """Remove one container and its run directory; False when it was not removed."""
    try:
        if not docker_api.remove(container.id):
            return False
    except docker.errors.APIError as exc:
        log.warning("reaper.remove_failed", container=container.name, error=str(exc))
        return False
    labels = container.labels
    run_dir = labels.get(docker_api.LABEL_RUN_DIR)
    if run_dir and Path(run_dir).name == labels.get(docker_api.LABEL_TASK):
        remove_run_dir(Path(run_dir))
    return True


def process_start_time() -> float:
    """This process's start, as a Unix time (from /proc; now when unknown)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


async def reap_orphans_once() -> None:
    """Reap orphans the first time this process starts a sandbox.

    Two sandboxes starting at once may both reap; removing a container twice is harmless.
    """
    global _reaped
    if _reaped:
        return
    count = await docker_api.call(reap_orphans)
    if count:
        log.warning("reaper.orphans_removed", count=count)
    _reaped = True
