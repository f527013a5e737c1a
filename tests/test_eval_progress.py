"""``rlm eval``'s progress: a rich bar on a terminal, plain lines through a pipe."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from engine.eval.progress import EvalProgress

ROOT = Path(__file__).resolve().parents[1]
RECORDS: list[dict[str, Any]] = [
    {"score": 1.0, "cost_usd": 0.01},
    {"score": 0.0, "cost_usd": 0.02, "error": "model timed out"},
    {"score": 1.0, "cost_usd": 0.005},
]


def _plain_env() -> dict[str, str]:
    """The caller's environment minus anything that would make rich treat a pipe as a tty."""
    drop = {"TTY_COMPATIBLE", "TTY_INTERACTIVE", "FORCE_COLOR", "PYTHONPATH"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_plain_lines_when_stderr_is_a_pipe() -> None:
    script = textwrap.dedent(
        f"""
        from engine.eval.progress import EvalProgress
        progress = EvalProgress()
        progress.start(total=4, skipped=1)
        for record in {RECORDS!r}:
            progress.result(record)
        progress.close()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=_plain_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = done.stderr.splitlines()
    assert "\x1b" not in done.stderr and "\r" not in done.stderr
    assert lines[0] == "rlm eval: resuming, 1/4 already done"
    # One line at the start, then one per finished item, each a full line.
    assert len(lines) == 5
    assert lines[1].startswith("[######------------------] 1/4 acc -- $0.0000 ETA --")
    assert " 2/4 acc 100.0% $0.0100 " in lines[2]
    assert " 3/4 acc 50.0% $0.0300 " in lines[3] and lines[3].endswith("errors 1")
    assert lines[4].startswith("[########################] 4/4 acc 66.7% $0.0350 ETA 0s")
    assert done.stdout == ""


def test_rich_bar_on_a_terminal() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=150, color_system="standard")
    progress = EvalProgress(console)
    progress.start(total=4, skipped=1)
    for record in RECORDS:
        progress.result(record)
    progress.close()
    output = screen.getvalue()
    # Drawn in place: cursor hidden while live, and a bar of block characters.
    assert "\x1b[?25l" in output and "━" in output
    assert "resuming, 1/4 already done" in output
    final = output.rsplit("\r", 1)[-1]
    assert "4/4" in final and "acc 66.7%" in final and "$0.0350" in final
    assert "errors 1" in final


def test_result_before_start_is_a_clear_error() -> None:
    progress = EvalProgress(Console(file=io.StringIO()))
    with pytest.raises(RuntimeError, match=r"before start\(\)"):
        progress.result({"score": 1.0})
