"""Access to the Docker daemon: one shared client, called from worker threads."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio.to_thread
import docker
import docker.errors

from engine.errors import DockerUnavailableError

T = TypeVar("T")

LABEL = "rlm-engine"
LABEL_TASK = "rlm-engine.task"
LABEL_OWNER_PID = "rlm-engine.owner-pid"
LABEL_OWNER_HOST = "rlm-engine.owner-host"
LABEL_RUN_DIR = "rlm-engine.run-dir"
LABEL_INSTANCE = "rlm-engine.instance"
#: Set on a warm pool's sandboxes (the pool's id), idle or claimed.
LABEL_POOL = "rlm-engine.pool"

_client: docker.DockerClient | None = None
_lock = threading.Lock()

DOCKER_HINT = (
    "Start the Docker daemon (e.g. `sudo dockerd &` or `sudo systemctl start docker`), "
    "check that this user may use it (`docker info`), or set DOCKER_HOST."
)


def client() -> docker.DockerClient:
    """The process-wide Docker client; raises DockerUnavailableError with what to do."""
    global _client
    with _lock:
        if _client is None:
            try:
                candidate = docker.from_env(timeout=120, max_pool_size=64)
                candidate.ping()
            except docker.errors.DockerException as exc:
                raise DockerUnavailableError(
                    f"cannot reach the Docker daemon ({_short(exc)}). {DOCKER_HINT}"
                ) from exc
            _client = candidate
        return _client


@dataclass(frozen=True)
class Listed:
    """An engine container as the daemon's list call reports it."""

    id: str
    name: str
    labels: dict[str, str]
    created: float  # seconds since the epoch


def list_labelled(label: str | list[str] = LABEL) -> list[Listed]:
    """Containers (running or not) carrying ``label`` (every one of a list), from one list call.

    The SDK's ``containers.list`` inspects every container after listing it, so a container
    that another process removes in between makes the whole listing fail with 404; the raw
    list call has everything the reaper needs and no such race.
    """
    rows = client().api.containers(all=True, filters={"label": label})
    return [
        Listed(
            id=str(row["Id"]),
            name=str((row.get("Names") or ["/" + str(row["Id"])[:12]])[0]).lstrip("/"),
            labels=dict(row.get("Labels") or {}),
            created=float(row.get("Created") or 0),
        )
        for row in rows
    ]


def remove(container_id: str) -> bool:
    """Force-remove a container and its anonymous volumes; ``False`` if it was already gone.

    A paused (frozen) container is thawed first: Docker's kill cannot end a frozen process,
    waits 10 s for it, and then fails the removal (seen under gVisor, and once under load with
    "PID ... is zombie and can not be killed").
    """
    api = client().api
    try:
        paused = bool(api.inspect_container(container_id)["State"].get("Paused"))
    except docker.errors.NotFound:
        return False
    for attempt in range(_REMOVE_ATTEMPTS):
        if paused:
            with contextlib.suppress(docker.errors.APIError):
                api.unpause(container_id)
        try:
            api.remove_container(container_id, force=True, v=True)
            return True
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as exc:
            if attempt == _REMOVE_ATTEMPTS - 1 or "already in progress" in str(exc):
                raise
            # Paused meanwhile, or a kill the runtime has not finished: look again, retry.
            time.sleep(0.5)
            try:
                paused = bool(api.inspect_container(container_id)["State"].get("Paused"))
            except docker.errors.NotFound:
                return False
    raise AssertionError("unreachable: the last attempt returns or raises")


_REMOVE_ATTEMPTS = 3


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking Docker SDK call in a worker thread."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
