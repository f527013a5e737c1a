"""The document-reading worker process (see :mod:`engine.contexts.isolate`).

``python -m engine.contexts.worker MEMORY_BYTES MAX_TEXT_BYTES``: caps its own address space
and output file size, then converts one document per JSON line on stdin, answering one JSON
line per job on stdout.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
from pathlib import Path
from typing import Any


def _limit(memory_bytes: int, max_text_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_text_bytes, max_text_bytes))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the cap fails with EFBIG


def _run(job: dict[str, Any]) -> dict[str, Any]:
    from engine.contexts.extract import extract_text
    from engine.errors import ContextError

    display = str(job["display"])
    try:
        result = extract_text(Path(job["src"]), str(job["kind"]), display)
        fd = os.open(job["dst"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, int(job["mode"]))
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(result.text)
        os.chmod(job["dst"], int(job["mode"]))  # the umask cut the mode given to open
    except ContextError as exc:
        return {"ok": False, "error": str(exc)}
    except MemoryError:
        return {"ok": False, "error": f"cannot read {display}: it needs more memory than allowed"}
    except OSError as exc:
        return {"ok": False, "error": f"cannot convert {display}: {exc.strerror or exc}"}
    return {"ok": True, "warnings": result.warnings}


def main(argv: list[str]) -> int:
    _limit(int(argv[0]), int(argv[1]))
    for line in sys.stdin:
        reply = _run(json.loads(line))
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
