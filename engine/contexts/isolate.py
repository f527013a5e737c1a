"""Document extraction in a separate process under kernel-enforced limits.

PDF, DOCX and HTML parsers read untrusted bytes (a service tenant's upload, a file in a
folder someone else wrote). A decompression bomb or a pathological file must not grow the
orchestrator's memory or stall it, so the parsers run in a worker process
(``python -m engine.contexts.worker``) that caps itself with ``setrlimit`` before reading
any input: address space (``memory_bytes``), size of the text it may write
(``max_text_bytes``). The parent gives each file ``timeout_s`` of wall time and kills the
worker past it. Any failure is a :class:`ContextError` naming the file; the next file gets
a fresh worker. One worker serves a whole preparation, so a folder of many documents pays
the start-up (importing the parsers) once.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from engine.contexts.archive import Unpacked
from engine.errors import ContextError

EXTRACT_MEMORY_BYTES = 1 << 30
EXTRACT_TIMEOUT_S = 120.0
MAX_TEXT_BYTES = 1 << 30
#: Wall time for unpacking one archive (up to the upload cap, 1 GiB by default, of xz).
UNPACK_TIMEOUT_S = 600.0
_REPLY_LIMIT = 1 << 20


# The worker parses hostile bytes: it gets no API keys or other secrets from the environment.
_ENV_ALLOWED = ("PATH", "PYTHONPATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")


def worker_env() -> dict[str, str]:
    """The environment of a process that reads hostile input: an allow-list, no secrets."""
    env = {name: os.environ[name] for name in _ENV_ALLOWED if name in os.environ}
    return {**env, "PYTHONUNBUFFERED": "1"}


class Extractor:
    """Converts documents to text files through a resource-limited worker process.

    Use as a context manager (or call :meth:`close`) so the worker is stopped.
    """

    def __init__(
        self,
        *,
        memory_bytes: int = EXTRACT_MEMORY_BYTES,
        timeout_s: float = EXTRACT_TIMEOUT_S,
        max_text_bytes: int = MAX_TEXT_BYTES,
    ) -> None:
        self.memory_bytes = memory_bytes
        self.timeout_s = timeout_s
        self.max_text_bytes = max_text_bytes
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Extractor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def extract(self, source: Path, kind: str, display: str, dest: Path, mode: int) -> list[str]:
        """Write the text of ``source`` (a ``kind`` document) to the new file ``dest``.

        Returns the reader's warnings (e.g. pages without text). Raises
        :class:`ContextError` naming ``display`` when the file cannot be read, or the worker
        runs out of time or memory.
        """
        job: dict[str, Any] = {"src": str(source), "kind": kind, "display": display}
        job |= {"dst": str(dest), "mode": mode}
        try:
            reply = self._call(job, display, kind, self.timeout_s)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        if not reply.get("ok"):
            dest.unlink(missing_ok=True)
            raise ContextError(str(reply.get("error") or f"cannot read {display}"))
        return [str(w) for w in reply.get("warnings") or []]

    def unpack(self, archive: Path, dest: Path, max_bytes: int) -> Unpacked:
        """Unpack ``archive`` into the new folder ``dest`` in the worker (see
        :func:`engine.contexts.archive.unpack_archive`).

        The archive's own structures are parsed there too: zipfile reads a zip's whole
        central directory (millions of entries in a 100 MB upload, several GB of objects)
        and tarfile a pax header whole before any cap of ours applies, so they meet the
        worker's memory limit instead of the orchestrator's. Raises :class:`ContextError`
        naming the archive; ``dest`` is gone then.
        """
        job = {"op": "unpack", "src": str(archive), "dst": str(dest), "max_bytes": max_bytes}
        job["display"] = archive.name
        try:
            reply = self._call(job, archive.name, "archive", max(self.timeout_s, UNPACK_TIMEOUT_S))
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        if not reply.get("ok"):
            shutil.rmtree(dest, ignore_errors=True)
            raise ContextError(str(reply.get("error") or f"cannot unpack {archive.name}"))
        counts = [reply.get(key) for key in ("files", "bytes", "skipped", "folders")]
        if not all(isinstance(n, int) and n >= 0 for n in counts):
            raise ContextError(f"cannot unpack {archive.name}: the worker misbehaved")
        return Unpacked(*counts)  # type: ignore[arg-type]

    def close(self) -> None:
        """Stop the worker (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def _call(
        self, job: dict[str, Any], display: str, kind: str, timeout_s: float
    ) -> dict[str, Any]:
        """Send one job to the worker and read its reply (the worker is stopped on failure)."""
        proc = self._worker()
        try:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(job).encode() + b"\n")
            proc.stdin.flush()
            return self._reply(proc, display, kind, timeout_s)
        except BaseException:
            self.close()
            raise

    def _worker(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "engine.contexts.worker",
                    str(self.memory_bytes),
                    str(self.max_text_bytes),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,  # parsers log warnings about odd files there
                env=worker_env(),
            )
        return self._proc

    def _reply(
        self, proc: subprocess.Popen[bytes], display: str, kind: str, timeout_s: float
    ) -> dict[str, Any]:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        data = b""
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready = select.select([fd], [], [], max(left, 0))[0] if left > 0 else []
            if not ready:
                proc.kill()
                raise ContextError(
                    f"cannot read {display} as {kind.upper()}: reading it took longer than "
                    f"{timeout_s:g} s; convert it to text yourself or leave it out"
                )
            chunk = os.read(fd, 65536)
            if not chunk:
                code = proc.wait()
                raise ContextError(
                    f"cannot read {display} as {kind.upper()}: the document reader stopped "
                    f"(exit status {code}, memory limit {self.memory_bytes >> 20} MiB); convert "
                    "it to text yourself or leave it out"
                )
            data += chunk
            if len(data) > _REPLY_LIMIT:
                raise ContextError(f"cannot read {display}: the document reader misbehaved")
        reply = json.loads(data)
        return reply if isinstance(reply, dict) else {}
