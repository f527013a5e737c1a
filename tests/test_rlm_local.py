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
    # The 1.5B model is not deterministic from run to run (llama.cpp's shared slots change the
    # numerics): a run is a sample, and one of two runs must count right.
    seen: list[object] = []
    for attempt in range(2):
        trajectory = tmp_path / f"t{attempt}.jsonl"
        config = EngineConfig(
            limits=Limits(max_iterations=8, max_wall_time_s=1500),
            trajectory_path=trajectory,
        )
        async with Engine(config) as engine:
            assert engine.profile.name == "small"
            result = await engine.run("How many lines in the log are ERROR lines?", log)
        events = read_trajectory(trajectory)
        assert result.error is None, result.error
        seen.append((result.answer, [e.get("reply") for e in events if e["type"] == "turn"]))
        if result.ready and str(errors) in result.answer:
            return
    raise AssertionError(f"no run of 2 counted {errors} ERROR lines: {seen}")
