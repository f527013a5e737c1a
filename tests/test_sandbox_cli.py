"""`rlm sandbox exec` and `rlm doctor` as a user runs them: real processes, real Docker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]


def rlm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_exec_prints_output_and_exit_status(tmp_path: Path) -> None:
    context = tmp_path / "c.txt"
    context.write_text("one two three")
    ok = rlm("sandbox", "exec", "--context", str(context), "--code", "print(len(context.split()))")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "3\n"
    failed = rlm("sandbox", "exec", "--code", "raise ValueError('bad input')")
    assert failed.returncode == 1
    assert "ValueError: bad input" in failed.stderr
    timed = rlm("sandbox", "exec", "--cell-timeout", "1", "--json", "--code", "while True: pass")
    assert timed.returncode == 1
    assert json.loads(timed.stdout)["timed_out"] is True


def test_exec_reports_a_missing_context_clearly() -> None:
    missing = rlm("sandbox", "exec", "--context", "/nonexistent/ctx.txt", "--code", "1")
    assert missing.returncode == 1
    assert missing.stderr.startswith("rlm: error: context /nonexistent/ctx.txt does not exist")
    assert "Traceback" not in missing.stderr


def test_exec_prepares_a_context_folder_as_rlm_run_does(tmp_path: Path) -> None:
    folder = tmp_path / "repo"
    (folder / "build").mkdir(parents=True)
    (folder / ".gitignore").write_text("build/\n")
    (folder / "main.py").write_text("print('hi')\n")
    (folder / "build" / "out.txt").write_text("generated\n")
    (folder / "logo.png").write_bytes(b"\x89PNG\x00\x01binary")
    listed = rlm("sandbox", "exec", "--context", str(folder), "--code", "print(sorted(context))")
    assert listed.returncode == 0, listed.stderr
    # .gitignore honoured, the binary file skipped: the same folder `rlm run` would give.
    assert listed.stdout == "['.gitignore', 'main.py']\n"
    only = rlm(
        "sandbox", "exec", "--context", str(folder), "--include", "*.py",
        "--code", "print(sorted(context))",
    )  # fmt: skip
    assert only.stdout == "['main.py']\n", only.stderr


def test_doctor_checks_isolation() -> None:
    doctor = rlm("doctor")
    assert doctor.returncode == 0, doctor.stdout
    for name in ("docker", "image", "sandbox", "non-root", "capabilities", "network", "run dir"):
        assert f"[ok  ] {name}:" in doctor.stdout
    missing = rlm("doctor", "--runtime", "no-such-runtime")
    assert missing.returncode == 1
    assert "[FAIL] runtime" in missing.stdout and "daemon.json" in missing.stdout
