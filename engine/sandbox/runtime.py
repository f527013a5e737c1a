"""Which OCI runtime sandboxes use: gVisor (``runsc``) when Docker has it, else the default.

gVisor puts a user-space kernel between the sandbox and the host's kernel, so a kernel bug
reachable from the sandbox's system calls no longer reaches the host. It must be registered
with ``--network=none --host-uds=all`` (no network stack; the bridge and kernel sockets are
host Unix sockets).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from engine.sandbox import docker_api

GVISOR = "runsc"
#: How to register gVisor, for messages.
GVISOR_HINT = (
    'register it in /etc/docker/daemon.json and restart dockerd: {"runtimes": {"runsc": '
    '{"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none", "--host-uds=all"]}}}'
)

_lock = threading.Lock()
_registered: frozenset[str] | None = None


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtime a sandbox gets (``None``: Docker's default) and why, for ``rlm doctor``."""

    name: str | None
    reason: str

    @property
    def label(self) -> str:
        if self.name == GVISOR:
            return "runsc (gVisor)"
        return self.name or "Docker's default (runc)"


def registered_runtimes() -> frozenset[str]:
    """The runtimes the Docker daemon knows (asked once per process)."""
    global _registered
    with _lock:
        if _registered is None:
            _registered = frozenset(docker_api.client().info().get("Runtimes", {}) or {})
        return _registered


def choose(configured: str | None) -> RuntimeChoice:
    """The runtime for a sandbox configured with ``configured`` (blocking: asks Docker)."""
    if configured:
        return RuntimeChoice(configured, "set by RLM_SANDBOX_RUNTIME or --runtime")
    if GVISOR in registered_runtimes():
        return RuntimeChoice(GVISOR, "gVisor is registered with Docker, so it is the default")
    return RuntimeChoice(None, f"gVisor ({GVISOR}) is not registered with Docker")
