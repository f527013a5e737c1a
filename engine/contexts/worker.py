"""The document-reading worker process (see :mod:`engine.contexts.isolate`).

``python -m engine.contexts.worker MEMORY_BYTES MAX_TEXT_BYTES``: caps its own address space
and output file size, then converts one document (or unpacks one archive, ``"op": "unpack"``)
per JSON line on stdin, answering one JSON line per job on stdout.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _limit(memory_bytes: int, max_text_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_text_bytes, max_text_bytes))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the cap fails with EFBIG


def _guarded(verb: str, display: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one job; its failures become ``{"ok": False, "error": ...}`` naming the file."""
    from engine.errors import ContextError

    try:
        return {"ok": True, **work()}
    except ContextError as exc:
        return {"ok": False, "error": str(exc)}
    except MemoryError:
        # A decompression bomb, or archive metadata read whole before anything can count
        # it (a zip's central directory of millions of entries, a pax header of gigabytes).
        return {"ok": False, "error": f"cannot {verb} {display}: it needs more memory than allowed"}
    except OSError as exc:
        return {"ok": False, "error": f"cannot {verb} {display}: {exc.strerror or exc}"}


def _unpack(job: dict[str, Any]) -> dict[str, Any]:
    from engine.contexts.archive import unpack_archive

    done = unpack_archive(Path(job["src"]), Path(job["dst"]), max_bytes=int(job["max_bytes"]))
    return {
        "files": done.files,
        "bytes": done.bytes,
        "skipped": done.skipped,
        "folders": done.folders,
    }


def _convert(job: dict[str, Any]) -> dict[str, Any]:
    from engine.contexts.extract import extract_text

    result = extract_text(Path(job["src"]), str(job["kind"]), str(job["display"]))
    fd = os.open(job["dst"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, int(job["mode"]))
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(result.text)
    os.chmod(job["dst"], int(job["mode"]))  # the umask cut the mode given to open
    return {"warnings": result.warnings}


def _run(job: dict[str, Any]) -> dict[str, Any]:
    display = str(job["display"])
    if job.get("op") == "unpack":
        return _guarded("unpack", display, lambda: _unpack(job))
    return _guarded("convert", display, lambda: _convert(job))


def main(argv: list[str]) -> int:
    _limit(int(argv[0]), int(argv[1]))
    for line in sys.stdin:
        reply = _run(json.loads(line))
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
