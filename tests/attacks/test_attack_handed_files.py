"""Attack: files a user was handed, given to the CLI (cassettes, trajectories, TOML configs).

Each reader must give a clear error naming the file in bounded time and memory: before,
JSON nested 100,000 deep, a 5,000-digit integer or bytes that are not UTF-8 were tracebacks
(`rlm replay serve`, `rlm view`, `rlm export`, `--config`, `--models`), `/dev/zero` was read
until memory ran out, a NaN `delay_s` or a `nan` price passed every check, an event that is a
list was a traceback in `rlm export`, and 20,000 events each the child of the next took
`rlm export` 51 s (a million, days).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from engine.cli.main import main
from tests.attacks.conftest import AttackReport, RssMeter

HOSTILE_JSONL = {
    "nested 100,000 deep": b"[" * 100_000 + b"]" * 100_000 + b"\n",
    "a 5,000-digit integer": b'{"key": ' + b"9" * 5_000 + b"}\n",
    "not UTF-8": b'{"key": 1, "type": "\xff"}\n',
    "an event that is a list": b"[1, 2]\n",
    "an id that is a list": b'{"id": [1], "type": "run_start"}\n',
}
HOSTILE_TOML = {
    "not UTF-8": b'model = "\xff"\n',
    "arrays nested 100,000 deep": b"model = " + b"[" * 100_000 + b"]" * 100_000 + b"\n",
}


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """The CLI configures logging to the sys.stderr of the moment (capsys's, closed after the
    test): later tests in this process would log to a closed file."""
    saved = structlog.get_config()
    handlers, level = logging.root.handlers[:], logging.root.level
    yield
    structlog.configure(**saved)
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)


def _rlm(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(list(argv))
    return status, capsys.readouterr().err


def test_hostile_files_given_to_the_cli(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    rss_meter: RssMeter,
    attack_report: AttackReport,
) -> None:
    refused: list[str] = []

    def refused_with(what: str, status: int, err: str, *needles: str) -> None:
        assert status == 1, (what, err)
        assert "rlm: error:" in err and "Traceback" not in err, (what, err)
        assert all(n in err for n in needles), (what, err)
        refused.append(what)

    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    for name, body in HOSTILE_JSONL.items():
        path = tmp_path / "hostile.jsonl"
        path.write_bytes(body)
        # The viewer shows any id as text; export builds runs from ids.
        commands = [["export"]] if "id" in name else [["view", "--no-open"], ["export"]]
        for command in commands:
            refused_with(f"{command[0]} {name}", *_rlm(capsys, *command, str(path)), str(path))
        if name != "an event that is a list":  # a list is a cassette entry's error, not read
            status, err = _rlm(capsys, "replay", "serve", str(path))
            refused_with(f"replay {name}", status, err, f"{path}:1")
    for special in ("/dev/zero", str(fifo)):
        for command in (["view", "--no-open"], ["export"], ["replay", "serve"]):
            status, err = _rlm(capsys, *command, special)
            refused_with(f"{command[0]} {special}", status, err, "not a regular file")
    nan_delay = tmp_path / "nan.jsonl"
    nan_delay.write_text('{"response": {"content": "x"}, "delay_s": NaN}\n')
    refused_with("replay NaN delay", *_rlm(capsys, "replay", "serve", str(nan_delay)), "finite")

    for name, body in HOSTILE_TOML.items():
        path = tmp_path / "hostile.toml"
        path.write_bytes(body)
        status, err = _rlm(capsys, "run", "--config", str(path), "-q", "q")
        refused_with(f"--config {name}", status, err, str(path))
    models = tmp_path / "models.toml"
    models.write_text('[models.a]\nmodel = "openai/a"\ninput_cost_per_million = nan\n')
    status, err = _rlm(capsys, "serve", "--models", str(models), "--data-dir", str(tmp_path))
    refused_with("--models nan price", status, err, "finite")

    # 20,000 events, each the child of the next: every event's walk up to its run was
    # remembered by none of the others (51 s before; now one walk in all).
    chain = tmp_path / "chain.jsonl"
    lines = [json.dumps({"id": 0, "type": "run_start", "query": "q"})]
    lines += [json.dumps({"id": i, "type": "cell", "parent_id": i + 1}) for i in range(1, 20_000)]
    chain.write_text("\n".join(lines) + "\n")
    status, err = _rlm(capsys, "export", str(chain))
    assert status == 0 and "rlm export: 1 skipped (no turn)" in err, err
    attack_report(
        "hostile files handed to the CLI (JSON nested 100,000 deep, a 5,000-digit integer, "
        "not UTF-8, a list for an event or id, /dev/zero, a FIFO, NaN delay_s, nan price, "
        "deep TOML; 20,000 chained events to export)",
        "one reader of handed files (engine/user_files.py: regular files only, at most 1 GiB, "
        "values bounded, every decoder error named with file and line); export remembers "
        "each event's run",
        f"all {len(refused)} refused with 'rlm: error: ...' naming the file, no traceback; the "
        "chain exported in one walk (before: 13 tracebacks, /dev/zero read until out of "
        "memory, 51 s for the chain)",
        rss_growth=rss_meter.growth(),
    )
