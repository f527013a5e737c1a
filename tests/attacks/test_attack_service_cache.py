"""Attacks through the model-call cache of a real `rlm serve`: one key probes for the prompts
another key sent.

The operator runs the sub model at temperature 0, so its calls are cached
(``engine/models/cache.py``). The victim's job sends a private prompt; the attacker's job sends
the same prompt and a different one, from sandbox code that times each call, and reads its
job's result (``cache.hits``) and trajectory (``cached`` on a sub-call). A hit would tell the
attacker that someone sent exactly that prompt, and return the reply the victim was given.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from engine.models import Cassette, ReplayServer
from tests.attacks.conftest import AttackReport, RssMeter
from tests.service_support import OTHER_KEY, Service, code, root, sub, wait_final

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

SECRET = "PRIVATE patient 4471 tested positive for condition K"
GUESS = "PRIVATE patient 4471 tested positive for condition J"
#: Every sub-call the provider answers takes this long; a cache hit takes none of it.
DELAY_S = 1.0


def _probe(prompts: list[str]) -> str:
    """Sandbox code that times one sub-call per prompt and answers the timings."""
    return code(
        "import json, time\n"
        "took = []\n"
        f"for prompt in {prompts!r}:\n"
        "    start = time.monotonic()\n"
        "    llm_query(prompt)\n"
        "    took.append(round(time.monotonic() - start, 2))\n"
        "answer['content'] = json.dumps(took)\nanswer['ready'] = True"
    )


CASSETTE = [
    root("VICTIM", _probe([SECRET])),
    root("ATTACKER", _probe([SECRET, GUESS])),
    root("AGAIN", _probe([GUESS])),
    sub("PRIVATE", "noted", delay_s=DELAY_S),
]


def _models_file(path: Path, base_url: str) -> Path:
    # Free (a replay bills nothing) and at temperature 0, so every sub-call is cacheable.
    path.write_text(
        "".join(
            f'[models."openai/{name}"]\nmodel = "openai/{name}"\n'
            f'api_base = "{base_url}"\napi_key_env = "RLM_API_KEY"\ntemperature = 0\n'
            "input_cost_per_million = 0\noutput_cost_per_million = 0\n\n"
            for name in ("root", "sub")
        )
    )
    return path


@asynccontextmanager
async def _serve(tmp_path: Path, *more: str) -> AsyncIterator[Service]:
    """`rlm serve` of the replayed models with its cache in ``tmp_path``; ``more`` flags."""
    async with ReplayServer(Cassette(CASSETTE)) as replay:
        models = _models_file(tmp_path / "models.toml", replay.base_url)
        flags = ("--model", "openai/root", "--sub-model", "openai/sub", "--models", str(models))
        env = {"RLM_CACHE_DIR": str(tmp_path / "cache")}
        svc = Service(tmp_path / "data", None, *flags, *more, env=env)
        await anyio.to_thread.run_sync(svc.start)
        try:
            yield svc
        finally:
            await anyio.to_thread.run_sync(svc.stop)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    async with _serve(tmp_path) as svc:
        yield svc


async def _run(service: Service, key: str, query: str) -> tuple[list[float], int, list[bool]]:
    """Run one job: the sub-calls' timings its code saw, its result's cache hits and the
    ``cached`` mark of each sub-call in its trajectory."""
    async with service.client(key) as client:
        job = (await client.post("/v1/jobs", json={"query": query})).json()
        done = await wait_final(client, job["id"])
        assert done["status"] == "succeeded", done
        events = (await client.get(f"/v1/jobs/{job['id']}/trajectory")).text.splitlines()
    marks = [
        bool(event.get("cached"))
        for event in map(json.loads, filter(None, events))
        if event.get("type") == "sub_call"
    ]
    return json.loads(done["answer"]), int(done["result"]["cache"]["hits"]), marks


async def test_attack_probe_another_keys_prompts_through_the_cache(
    service: Service, attack_report: AttackReport
) -> None:
    assert service.proc is not None
    meter = RssMeter(service.proc.pid).start()
    victim = await _run(service, "test-key-0123456789", "VICTIM")
    assert victim == ([pytest.approx(DELAY_S, abs=0.9)], 0, [False]), victim
    took, hits, marks = await _run(service, OTHER_KEY, "ATTACKER")
    # The victim's prompt is as new to the attacker as one nobody sent: same time, no hit.
    assert hits == 0 and marks == [False, False], (took, hits, marks)
    assert min(took) >= DELAY_S * 0.8, took
    # The cache still serves each key its own calls again.
    again = await _run(service, OTHER_KEY, "AGAIN")
    assert again[1:] == (1, [True]) and again[0][0] < DELAY_S * 0.8, again
    attack_report(
        "probe whether another key sent a prompt: send it again and read the job's cache hits, "
        "the trajectory's cached marks and the call's time",
        "the model-call cache is kept apart per key (the key's owner hash is part of each "
        "entry's key)",
        f"the victim's prompt and a guess both missed ({took[0]:.1f} s and {took[1]:.1f} s, "
        "0 hits); the attacker's own repeat hit (before: the victim's prompt answered in 0.01 s, "
        "1 hit, marked cached; --cache off and RLM_CACHE_DIR did not reach jobs)",
        rss_growth=meter.growth(),
    )


async def test_the_operators_cache_mode_applies_to_jobs(tmp_path: Path) -> None:
    """``--cache off`` reaches every job (jobs used the default mode whatever the operator set,
    and the default directory whatever ``RLM_CACHE_DIR`` said)."""
    async with _serve(tmp_path, "--cache", "off") as svc:
        runs = [await _run(svc, OTHER_KEY, "AGAIN") for _ in range(2)]
    assert [hits for _, hits, _ in runs] == [0, 0], runs
