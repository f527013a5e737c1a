"""The peer side of ``bench_sandbox.py``: the official ``rlms`` package's ``DockerREPL``, timed.

This script runs in the peer's own virtual environment (``out/bench/peer-venv``, where
``bench_sandbox.py`` installs ``rlms`` from PyPI), never in ours: it imports only the standard
library and ``rlm``. It reads its settings as JSON from argv[1] and prints one JSON object:

* ``start_s``: ``DockerREPL(image=...)`` (proxy thread, ``docker run``, the in-container
  ``pip install`` attempt and the ``import requests`` check) plus the first cell ``1``;
* per context size: ``usable_s`` (construct with ``context_payload=<text>``, which writes the
  text into the mounted workspace and reads it in a cell, then run ``len(context)``) and
  ``cell_s``, the times of the trivial cell ``x = 1`` in that REPL;
* ``cleanup_s``: ``cleanup()`` (``docker exec rm``, ``docker rm -f``, proxy shutdown).

The peer is used as designed (``docker exec`` of a fresh Python per cell, state pickled with
dill in the mounted workspace, an HTTP proxy thread on the host); see ``bench_sandbox.py`` for
the one adaptation (the image).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def _text(size_mb: int) -> str:
    # The same filler as our side (bench_sandbox.context_text), rebuilt here: this script may
    # not import the engine.
    line = ("The quick brown fox jumps over the lazy dog. " * 2)[:89] + "\n"
    return (line * ((size_mb << 20) // len(line) + 1))[: size_mb << 20]


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - started, value


def _check(result: Any, what: str) -> None:
    # A cell that failed in the peer is a broken measurement, not a fast cell.
    if "Traceback" in (result.stderr or ""):
        raise SystemExit(f"peer cell {what!r} failed: {result.stderr[-2000:]}")


def main() -> None:
    settings = json.loads(sys.argv[1])
    os.environ["RLM_DOCKER_WORKSPACE_DIR"] = settings["workspace"]
    from rlm.environments.docker_repl import DockerREPL

    image = settings["image"]
    out: dict[str, Any] = {"start_s": [], "cleanup_s": [], "by_context_mb": {}}
    for _ in range(settings["starts"]):
        started = time.perf_counter()
        env = DockerREPL(image=image)
        try:
            result = env.execute_code("1")
            out["start_s"].append(time.perf_counter() - started)
            _check(result, "1")
        finally:
            took, _ = _timed(env.cleanup)
            out["cleanup_s"].append(took)

    for size_mb, cells in zip(settings["sizes_mb"], settings["cells"], strict=True):
        text = _text(size_mb) if size_mb else None
        started = time.perf_counter()
        env = DockerREPL(image=image, context_payload=text)
        try:
            result = env.execute_code("len(context)" if text else "1")
            usable = time.perf_counter() - started
            _check(result, "len(context)")
            times = []
            for _ in range(cells):
                took, result = _timed(env.execute_code, "x = 1")
                _check(result, "x = 1")
                times.append(took)
            out["by_context_mb"][str(size_mb)] = {"usable_s": usable, "cell_s": times}
        finally:
            env.cleanup()
        del text
    print(json.dumps(out))


if __name__ == "__main__":
    main()
