"""A cap on what the sandbox writes to its run directory on the host.

The run directory is a bind mount (the kernel's sockets and the child contexts of
``rlm_query`` live there), so Docker's tmpfs size limits do not cover it, and a filesystem
quota would need root and a particular filesystem. Instead a thread measures the directory a
few times a second and, the first time the sandbox's writes pass the limit, calls back to
stop the container. Between two checks a fast writer can overshoot by what it writes in one
interval (a few hundred MB at disk speed); the limit bounds the damage, it is not exact.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.log import get_logger
from engine.sandbox.config import format_size

log = get_logger(__name__)

#: How often the run directory is measured.
CHECK_INTERVAL_S = 0.25
#: More entries than this is a flood of files (inodes fill a disk too), whatever their size.
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class Usage:
    """Bytes and directory entries under a run directory."""

    bytes: int
    entries: int


def measure(root: Path, *, max_entries: int = MAX_ENTRIES) -> Usage:
    """Add up the files under ``root`` without following symlinks.

    A file counts with the larger of its length and its allocated blocks: a sparse file costs
    no disk here, but it would cost its full length when the bridge copies it. Stops counting
    once more than ``max_entries`` entries were seen.
    """
    total = 0
    entries = 0
    pending = [os.fspath(root)]
    while pending and entries <= max_entries:
        folder = pending.pop()
        try:
            scan = os.scandir(folder)
        except OSError:
            continue  # removed or replaced while we looked: the next check sees the new state
        with scan:
            for entry in scan:
                entries += 1
                if entries > max_entries:
                    break
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    pending.append(entry.path)
                elif stat.S_ISREG(info.st_mode):
                    total += max(info.st_size, info.st_blocks * 512)
    return Usage(total, entries)


class RunDirGuard:
    """Stops a sandbox whose writes to ``run_dir`` grow past ``limit_bytes``.

    What is in the directory when the guard starts (the staged context) is not counted.
    ``on_exceeded`` is called once, from the guard's thread, with a message for the user.
    """

    def __init__(
        self,
        run_dir: Path,
        limit_bytes: int,
        on_exceeded: Callable[[str], None],
        *,
        interval_s: float = CHECK_INTERVAL_S,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.run_dir = run_dir
        self.limit_bytes = limit_bytes
        self._on_exceeded = on_exceeded
        self._interval_s = interval_s
        self._max_entries = max_entries
        self._baseline = Usage(0, 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Take the baseline and start checking."""
        if self._thread is not None:
            return
        self._baseline = measure(self.run_dir, max_entries=self._max_entries)
        self._thread = threading.Thread(
            target=self._watch, name=f"rlm-disk-guard-{self.run_dir.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop checking; waits for a check in progress (they take microseconds)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def check(self) -> str | None:
        """Measure once; the reason to stop the sandbox, or ``None`` while within limits."""
        usage = measure(self.run_dir, max_entries=self._max_entries)
        written = usage.bytes - self._baseline.bytes
        if written > self.limit_bytes:
            return (
                f"the sandbox wrote more than {format_size(self.limit_bytes)} to its run "
                f"directory ({format_size(written)} seen), so it was stopped; keep large "
                "intermediate data in memory or /tmp, pass smaller contexts to rlm_query, or "
                "raise the limit with RLM_SANDBOX_DISK"
            )
        if usage.entries - self._baseline.entries > self._max_entries:
            return (
                f"the sandbox created more than {self._max_entries:,} files in its run "
                "directory, so it was stopped; child contexts are deleted after each "
                "rlm_query, so this is not needed for normal work"
            )
        return None

    def _watch(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                reason = self.check()
            except Exception as exc:  # a guard that dies silently would be worse than a log
                log.warning("sandbox.disk_guard_failed", run_dir=str(self.run_dir), error=str(exc))
                continue
            if reason is not None:
                log.warning("sandbox.disk_limit", run_dir=str(self.run_dir), reason=reason)
                self._on_exceeded(reason)
                return
