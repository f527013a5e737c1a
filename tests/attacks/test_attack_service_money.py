"""Attacks on the operator's bill through a real `rlm serve`: spend past the cap, an unpriced
model, a model string or endpoint of the tenant's choosing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from engine.models import Cassette, ReplayServer
from tests.attacks.conftest import AttackReport, RssMeter
from tests.service_support import Service, code, innocent_answer, wait_final

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

CAP = 0.01
BATCH = code(
    "r = llm_batch([f'ITEM {i}' for i in range(1000)])\n"
    "answer['content'] = str(sum(not x.startswith('[ERROR]') for x in r))"
)
STEAL = code(
    "try:\n"
    "    r = llm_query('hi', model='openai/gpt-4o')\n"
    "except Exception as exc:\n"
    "    r = f'refused: {exc}'\n"
    "answer['content'] = r\nanswer['ready'] = True"
)
CASSETTE = [
    {
        "match": {"model": "root", "contains": "SPEND"},
        "response": {"content": BATCH, "usage": {"prompt_tokens": 3000, "completion_tokens": 60}},
    },
    {
        "match": {"model": "root", "contains": "STEAL"},
        "response": {"content": STEAL},
        "repeat": True,
    },
    {
        "match": {"model": "root"},
        "response": {"content": code("answer['content'] = '45'\nanswer['ready'] = True")},
        "repeat": True,
    },
    {
        "match": {"model": "sub", "contains": "ITEM"},
        "response": {"content": "ok", "usage": {"prompt_tokens": 40, "completion_tokens": 10}},
        "repeat": True,
    },
]


def _models_file(path: Path, base_url: str) -> Path:
    # $1 per million tokens: every sub-call of the batch costs $0.00005, all 1,000 $0.05.
    price = "input_cost_per_million = 1\noutput_cost_per_million = 1\n"
    cheap = "input_cost_per_million = 0.1\noutput_cost_per_million = 0.1\n"
    entries = {
        "openai/root": "max_output_tokens = 256\n" + cheap,
        "openai/sub": "max_output_tokens = 16\n" + price,
        "mystery": "",  # no price: litellm does not know it either
    }
    path.write_text(
        "".join(
            f'[models."{name}"]\nmodel = "openai/{name.split("/")[-1]}"\n'
            f'api_base = "{base_url}"\napi_key_env = "RLM_API_KEY"\n{extra}\n'
            for name, extra in entries.items()
        )
    )
    return path


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[Service, ReplayServer]]:
    async with ReplayServer(Cassette(CASSETTE)) as replay:
        models = _models_file(tmp_path / "models.toml", replay.base_url)
        svc = Service(
            tmp_path / "data",
            None,
            "--model",
            "openai/root",
            "--sub-model",
            "openai/sub",
            "--models",
            str(models),
            "--max-cost",
            str(CAP),
        )
        await anyio.to_thread.run_sync(svc.start)
        try:
            yield svc, replay
        finally:
            await anyio.to_thread.run_sync(svc.stop)


async def _meter(service: Service) -> RssMeter:
    assert service.proc is not None
    return RssMeter(service.proc.pid).start()


async def test_attack_1000_prompt_batch_against_the_cost_cap(
    service: tuple[Service, ReplayServer], attack_report: AttackReport
) -> None:
    svc, replay = service
    meter = await _meter(svc)
    async with svc.client() as client:
        job = (await client.post("/v1/jobs", json={"query": "SPEND it all"})).json()
        done = await wait_final(client, job["id"], timeout=600)
    result = done["result"]
    spent = result["usage_total"]["cost_usd"]
    sent = len([r for r in replay.requests if r.get("model") == "sub"])
    assert spent <= CAP, result["usage_total"]
    assert result["stop_reason"] == "max_cost" and 0 < sent < 1000
    assert await innocent_answer(svc) == "45"
    growth = meter.growth()
    attack_report(
        "llm_batch of 1,000 prompts under a $0.01 cap (all would cost $0.05)",
        "cost cap checked at dispatch with worst-case reservations",
        f"stopped at max_cost: {sent} calls sent, ${spent:.4f} spent (cap ${CAP})",
        rss_growth=growth,
    )


async def test_attack_unpriced_or_unlisted_model_and_endpoint(
    service: tuple[Service, ReplayServer], attack_report: AttackReport
) -> None:
    svc, replay = service
    meter = await _meter(svc)
    async with svc.client() as client:
        unpriced = await client.post("/v1/jobs", json={"query": "q", "model": "mystery"})
        unlisted = await client.post("/v1/jobs", json={"query": "q", "model": "openai/gpt-4o"})
        endpoint = await client.post(
            "/v1/jobs", json={"query": "q", "model": "openai/root", "api_base": "http://evil/v1"}
        )
        chat = await client.post(
            "/v1/chat/completions",
            json={"model": "rlm/openai/gpt-4o", "messages": [{"role": "user", "content": "q"}]},
        )
        # Sandbox code naming another model on the operator's key is refused by the bridge.
        stolen = (await client.post("/v1/jobs", json={"query": "STEAL"})).json()
        steal = await wait_final(client, stolen["id"])
    assert unpriced.status_code == 422 and unpriced.json()["error"]["type"] == "model_not_priced"
    assert "input_cost_per_million" in unpriced.text
    for response in (unlisted, chat):
        assert response.status_code == 422, response.text
        assert "allowed: mystery, openai/root, openai/sub" in response.text
    assert endpoint.status_code == 422 and "api_base" in endpoint.text
    assert steal["answer"].startswith("refused:") and "not available" in steal["answer"]
    assert not [r for r in replay.requests if "gpt-4o" in str(r.get("model"))]
    growth = meter.growth()
    attack_report(
        "ask for an unpriced model, any model string or endpoint, from the API and sandbox code",
        "operator's model allow-list; unpriced models refused under a cost cap",
        "422 model_not_priced / model_not_allowed / unknown field; bridge 403 in the sandbox",
        rss_growth=growth,
    )
