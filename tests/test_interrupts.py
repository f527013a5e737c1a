"""A Ctrl-C the kernel hands to a thread other than the main one still stops the command.

The kernel may deliver a process-directed signal to any one thread; Python only flags it there,
and the main thread runs the handler when it next runs Python code. An idle event loop sleeps in
``select`` without end, as `rlm chat` does at its prompt while a thread reads the line. Here the
signal is sent to such a thread on purpose, in a real process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

_SCRIPT = """
import signal, sys, threading, time
import anyio
from engine.interrupts import signals_wake_the_loop

reading = threading.Thread(target=threading.Event().wait, daemon=True)  # like input()
reading.start()

def ctrl_c_reaches_the_reading_thread():
    time.sleep(0.5)
    signal.pthread_kill(reading.ident, signal.SIGINT)

threading.Thread(target=ctrl_c_reaches_the_reading_thread, daemon=True).start()

async def main():
    if sys.argv[1] == "wake":
        async with signals_wake_the_loop():
            await anyio.Event().wait()
    else:
        await anyio.Event().wait()

try:
    anyio.run(main)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def _run(mode: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        # Ctrl-C as a terminal's foreground job has it: the suite may run as a background job,
        # whose SIGINT a shell sets to ignored, and an ignored signal stays ignored across exec.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_interrupts_a_signal_taken_by_another_thread_wakes_the_loop() -> None:
    done = _run("wake", timeout=60)
    assert done.stdout == "interrupted\n", done.stderr
    assert done.returncode == 0


def test_interrupts_without_it_the_idle_loop_never_sees_the_signal() -> None:
    # The failure the helper exists for: the main thread sleeps on, the handler never runs.
    with pytest.raises(subprocess.TimeoutExpired):
        _run("plain", timeout=5)
