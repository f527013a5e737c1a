"""``rlm run`` as a user runs it: a real process, exit codes, stdout/stderr, no tracebacks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import engine_containers

# Runs the real entry point; registers `run` if the CLI's module list does not have it yet.
_ENTRY = (
    "import sys\n"
    "from engine.cli import main as m\n"
    "if 'engine.cli.run' not in m._COMMAND_MODULES:\n"
    "    m._COMMAND_MODULES = (*m._COMMAND_MODULES, 'engine.cli.run')\n"
    "sys.exit(m.main(sys.argv[1:]))\n"
)


def _env() -> dict[str, str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return {k: v for k, v in env.items() if not k.startswith("RLM_")}


def rlm(
    *args: str | Path, cwd: Path, stdin: str | bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``rlm ARGS``; ``stdin`` as text, or as bytes to feed what is not UTF-8."""
    done = subprocess.run(
        [sys.executable, "-c", _ENTRY, *map(str, args)],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        timeout=300,
        input=stdin.encode() if isinstance(stdin, str) else stdin,
    )
    out, err = (stream.decode("utf-8", "replace") for stream in (done.stdout, done.stderr))
    return subprocess.CompletedProcess(done.args, done.returncode, out, err)


def _cassette(path: Path, *replies: str, repeat: bool = False) -> Path:
    lines = [
        json.dumps({"match": {"model": "root"}, "response": {"content": r}, "repeat": repeat})
        for r in replies
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


SOLVE = "```repl\nanswer['content'] = str(context.count('b'))\nanswer['ready'] = True\n```"
PARTIAL = "```repl\nanswer['content'] = 'half done'\n```"


def assert_cleaned_up(trajectory: Path) -> None:
    """No container of the run recorded in ``trajectory`` is left."""
    events = [json.loads(line) for line in trajectory.read_text().splitlines()]
    task_ids = {e["task_id"] for e in events}
    assert task_ids and not [n for n in engine_containers() if any(t in n for t in task_ids)]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "ctx.txt").write_text("abcabcabb")
    return tmp_path


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
def test_answer_printed_and_exit_0(files: Path) -> None:
    cassette = _cassette(files / "c.jsonl", SOLVE)
    done = rlm(
        "run", "--context", files / "ctx.txt", "--query", "how many b?", "--model",
        "openai/root", "--replay", cassette, "--trajectory", files / "t.jsonl", cwd=files,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "4\n"
    assert "Traceback" not in done.stderr
    events = [json.loads(line) for line in (files / "t.jsonl").read_text().splitlines()]
    assert events[-1]["type"] == "run_end" and events[-1]["answer"] == "4"
    assert_cleaned_up(files / "t.jsonl")


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
def test_limit_exit_3_names_the_limit_and_prints_partial_answer(files: Path) -> None:
    cassette = _cassette(files / "c.jsonl", PARTIAL, repeat=True)
    (files / "rlm.toml").write_text("[limits]\nmax_iterations = 2\n")  # picked up from cwd
    done = rlm(
        "run", "-c", files / "ctx.txt", "-q", "q", "--model", "openai/root",
        "--replay", cassette, "--trajectory", files / "t.jsonl", cwd=files,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert done.stdout == "half done\n"
    assert "iteration limit (--max-iterations)" in done.stderr
    assert "after 2 turns" in done.stderr
    assert_cleaned_up(files / "t.jsonl")

    as_json = rlm(
        "run", "-c", files / "ctx.txt", "-q", "q", "--model", "openai/root", "--replay",
        cassette, "--max-iterations", "1", "--json", "--trajectory", files / "t2.jsonl",
        cwd=files,
    )  # fmt: skip
    assert as_json.returncode == 3
    data = json.loads(as_json.stdout)
    assert data["stop_reason"] == "max_iterations" and data["iterations"] == 1
    assert data["answer"] == "half done" and data["ready"] is False
    assert data["usage_total"]["total_tokens"] > 0


def test_missing_context_file_exit_1_without_traceback(files: Path) -> None:
    done = rlm("run", "--context", files / "nope.txt", "--query", "q", cwd=files)
    assert done.returncode == 1
    assert "nope.txt does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_unknown_config_key_exit_1(files: Path) -> None:
    (files / "bad.toml").write_text("[limits]\nmax_iterashuns = 3\n")
    done = rlm("run", "--config", files / "bad.toml", "-q", "q", cwd=files)
    assert done.returncode == 1
    assert "unknown key limits.max_iterashuns" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
def test_unreachable_model_exit_1_with_clear_message(files: Path) -> None:
    done = rlm(
        "run", "-c", files / "ctx.txt", "-q", "q", "--model", "openai/x", "--api-base",
        "http://127.0.0.1:9/v1", "--trajectory", files / "t.jsonl", cwd=files,
    )  # fmt: skip
    assert done.returncode == 1
    assert "rlm: error:" in done.stderr and "127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stderr
    assert_cleaned_up(files / "t.jsonl")


def test_docker_down_exit_1_with_clear_message(
    files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{files}/no-docker.sock")
    done = rlm(
        "run", "-c", files / "ctx.txt", "-q", "q", "--model", "openai/x",
        "--trajectory", files / "t.jsonl", cwd=files,
    )  # fmt: skip
    assert done.returncode == 1
    assert "rlm: error: cannot reach the Docker daemon" in done.stderr
    assert "Traceback" not in done.stderr


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
@pytest.mark.parametrize(("sig", "status", "said"), [
    (signal.SIGINT, 130, "rlm: interrupted"),
    (signal.SIGTERM, 143, "rlm: stopped by SIGTERM"),
])  # fmt: skip
def test_signal_mid_cell_stops_the_run_and_removes_its_sandbox(
    files: Path, sig: signal.Signals, status: int, said: str
) -> None:
    """Ctrl-C, and the SIGTERM of `kill`, `timeout` or `docker stop`, both end a run whose cell
    is busy: the run is cancelled, its sandbox removed, and the status says which it was."""
    cassette = _cassette(files / "c.jsonl", "```repl\nimport time\ntime.sleep(300)\n```")
    trajectory = files / "t.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", _ENTRY, "run", "--context", str(files / "ctx.txt"), "--query",
         "q", "--model", "openai/root", "--replay", str(cassette), "--trajectory",
         str(trajectory), "--no-progress"],
        cwd=files, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # As from a terminal: a pytest-xdist worker ignores SIGINT, and children inherit that.
        preexec_fn=_default_sigint,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        # The cell is running once its turn is recorded and the task's container exists.
        while time.monotonic() < deadline and proc.poll() is None:
            text = trajectory.read_text() if trajectory.is_file() else ""
            events = [json.loads(line) for line in text.split("\n")[:-1]]  # whole lines only
            task_ids = {e["task_id"] for e in events if e["type"] == "turn"}
            if any(t in name for t in task_ids for name in engine_containers()):
                break
            time.sleep(0.3)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == status, err
    assert said in err and "Traceback" not in err
    assert_cleaned_up(trajectory)
