"""End to end with the embedded local model: a needle in a ~25,000-character haystack.

The model never sees the haystack: it must find the secret by running code on `context` in
the sandbox. Slow (a 1.5B model on CPU) and needs Docker: marked ``local_model`` and ``docker``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import Engine, EngineConfig, Limits
from engine.rlm.demo import is_correct, make_haystack
from engine.rlm.trajectory import read_trajectory

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.docker,
    pytest.mark.local_model,
    pytest.mark.usefixtures("docker_ready"),
]


# The 1.5B model is not deterministic from run to run (llama.cpp's shared slots change the
# numerics), so a run is a sample: the test asks that one of two runs finds the needle, and
# that every run's trajectory keeps the secret out of the prompt.
ATTEMPTS = 2


async def test_local_model_finds_the_needle_through_sandbox_code(tmp_path: Path) -> None:
    hay = make_haystack(25_000, seed=11)
    seen: list[object] = []
    for attempt in range(ATTEMPTS):
        trajectory = tmp_path / f"t{attempt}.jsonl"
        config = EngineConfig(
            model=None,
            limits=Limits(max_iterations=8, max_wall_time_s=1200),
            trajectory_path=trajectory,
        )
        async with Engine(config) as engine:
            result = await engine.run(hay.question, hay.text)
        events = read_trajectory(trajectory)
        replies = [e.get("reply") for e in events if e["type"] == "turn"]
        assert result.error is None, result.error
        start = next(e for e in events if e["type"] == "run_start")
        assert hay.secret not in str(start)
        seen.append((result.answer, replies))
        if result.ready and is_correct(result.answer, hay.secret):
            # The secret reached the model only as the output of code (which reads `context`,
            # itself or through a kernel helper such as search()), never in the prompt.
            cells = [e for e in events if e["type"] == "cell"]
            assert any(hay.secret in e["output"] for e in cells), replies
            return
    pytest.fail(f"no run of {ATTEMPTS} found {hay.secret!r}: {seen}")
