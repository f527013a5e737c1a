"""Sandbox settings: resource limits and hardening knobs, with safe defaults."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import ConfigError
from engine.settings import env_values, in_section
from engine.settings import parse_size as parse_size  # re-exported: the one size parser

DEFAULT_IMAGE = "rlm-sandbox:latest"
SANDBOX_UID = 1000
SANDBOX_GID = 1000
#: The uid the sandbox runs as when the orchestrator itself runs as ``SANDBOX_UID``: the
#: sandbox must never own what the host created, or it could chmod a locked directory back.
ALTERNATE_UID = 1001


def format_size(num_bytes: int) -> str:
    """Format bytes the way users write limits: ``2 GiB``, ``256 MiB``."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if num_bytes >= scale:
            value = num_bytes / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{num_bytes} B"


def sandbox_ids() -> tuple[int, int]:
    """The uid and gid the sandbox's processes run as (never the orchestrator's own uid)."""
    if os.geteuid() == SANDBOX_UID:
        return ALTERNATE_UID, SANDBOX_GID
    return SANDBOX_UID, SANDBOX_GID


def default_run_root() -> Path:
    """Where per-task run directories live (``$RLM_RUN_DIR`` or ``~/.cache/rlm/run``)."""
    configured = os.environ.get("RLM_RUN_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "rlm" / "run"


def host_memory_bytes() -> int:
    """The physical memory of this host (what the kernel reports), or 0 when unknown."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0


#: Room a loading context needs besides its bytes (see :meth:`SandboxConfig.memory_for_context`).
_CONTEXT_MEMORY_FACTOR = 2.5
_CONTEXT_MEMORY_EXTRA = 256 << 20


@dataclass(frozen=True)
class SandboxConfig:
    """Limits and settings of one sandbox. All defaults are safe for untrusted code.

    ``memory_bytes`` is raised automatically when the context needs more room (a large text
    context needs about 2.5 times its size while it loads), never past ``max_memory_bytes``
    (the host's memory by default): a context that would need more is refused.

    The only writable file systems inside the sandbox are tmpfs mounts (``/tmp``, the home
    directory, ``/dev/shm``) whose sizes and inode counts the kernel caps; the run directory on
    the host is mounted read-only. ``runtime`` None means gVisor (``runsc``) when Docker has it
    registered, else Docker's default; name a runtime (e.g. ``runc``) to choose one.
    """

    image: str = field(default_factory=lambda: os.environ.get("RLM_SANDBOX_IMAGE") or DEFAULT_IMAGE)
    runtime: str | None = None
    memory_bytes: int = 2 << 30
    cpus: float = 1.0
    pids_limit: int = 256
    tmp_bytes: int = 256 << 20
    home_bytes: int = 64 << 20
    shm_bytes: int = 64 << 20
    #: files and directories each tmpfs may hold (a flood of empty files costs kernel memory).
    tmpfs_inodes: int = 16_384
    #: the bytes of child contexts (``rlm_query``) the sandbox may hand the host at once; they
    #: stream through the bridge into a private host file. Raised to twice the context's size
    #: for large contexts.
    disk_bytes: int = 2 << 30
    output_limit_chars: int = 200_000
    interrupt_grace_s: float = 5.0
    start_timeout_s: float = 60.0
    auto_memory: bool = True
    #: The most ``auto_memory`` may raise the memory limit to. Sizes are apparent sizes, so a
    #: sparse 1 TiB text file (a few bytes on disk) asked for a 2.5 TiB limit, i.e. none,
    #: and its loading then took the host's memory.
    max_memory_bytes: int = field(default_factory=host_memory_bytes)
    run_root: Path = field(default_factory=default_run_root)
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.memory_bytes < 128 << 20:
            raise ConfigError("sandbox memory must be at least 128m")
        if self.cpus <= 0:
            raise ConfigError("sandbox cpus must be positive, e.g. 1 or 0.5")
        if self.pids_limit < 32:
            raise ConfigError("sandbox pids limit must be at least 32 (the kernel needs threads)")
        if min(self.tmp_bytes, self.home_bytes, self.shm_bytes) < 1 << 20:
            raise ConfigError("sandbox tmpfs sizes must be at least 1m each")
        if self.tmpfs_inodes < 64:
            raise ConfigError("sandbox tmpfs inode limit must be at least 64")
        if self.disk_bytes < 1 << 20:
            raise ConfigError("sandbox disk limit must be at least 1m, e.g. 2g")
        if self.output_limit_chars < 1000:
            raise ConfigError("sandbox output limit must be at least 1000 characters")
        for key in self.env:
            if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
                raise ConfigError(f"sandbox environment variable name {key!r} is not valid")

    def memory_for_context(self, context_bytes: int) -> int:
        """The memory limit a context of ``context_bytes`` needs (the configured one or more)."""
        if not self.auto_memory or not context_bytes:
            return self.memory_bytes
        # Reading text needs the bytes and the decoded str at once; leave room for work too.
        needed = int(context_bytes * _CONTEXT_MEMORY_FACTOR) + _CONTEXT_MEMORY_EXTRA
        return max(self.memory_bytes, needed)

    @property
    def max_context_bytes(self) -> int | None:
        """The largest context a sandbox may be given (None: no ceiling is known)."""
        if not self.max_memory_bytes:
            return None
        room = max(self.max_memory_bytes, self.memory_bytes) - _CONTEXT_MEMORY_EXTRA
        return max(int(room / _CONTEXT_MEMORY_FACTOR), 0)

    @classmethod
    def from_env(cls, **overrides: object) -> SandboxConfig:
        """Build a config from the ``RLM_SANDBOX_*`` variables (see :mod:`engine.settings`),
        then ``overrides`` (field names)."""
        fields = {item.name: item.field for item in in_section("sandbox") if item.field}
        parsed = env_values(os.environ, in_section("sandbox"))
        values: dict[str, object] = {fields[name]: value for name, value in parsed.items()}
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
