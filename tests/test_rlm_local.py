"""The default path end to end: the embedded local model (small profile) solves a task.

Slow (a 1.5B model on CPU) and opt-in: ``pytest -m local_model tests/test_rlm_local.py``.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from engine import Engine, EngineConfig, Limits
from engine.rlm.trajectory import read_trajectory

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.docker,
    pytest.mark.local_model,
    pytest.mark.usefixtures("docker_ready"),
]


async def test_local_model_counts_error_lines(tmp_path: Path) -> None:
    rng = random.Random(7)
    errors = rng.randint(10, 40)
    lines = [f"2024-01-01 INFO request {i} ok" for i in range(2000)]
    for index in rng.sample(range(2000), errors):
        lines[index] = f"2024-01-01 ERROR request {index} failed"
    log = tmp_path / "app.log"
    log.write_text("\n".join(lines) + "\n")
    config = EngineConfig(
        limits=Limits(max_iterations=8, max_wall_time_s=1500),
        trajectory_path=tmp_path / "t.jsonl",
    )
    async with Engine(config) as engine:
        assert engine.profile.name == "small"
        result = await engine.run("How many lines in the log are ERROR lines?", log)
    events = read_trajectory(tmp_path / "t.jsonl")
    assert result.error is None, result.error
    assert result.ready, [e.get("reply") for e in events if e["type"] == "turn"]
    assert str(errors) in result.answer
