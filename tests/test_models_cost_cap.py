"""The cost cap holds at dispatch: worst-case reservations, pricing, a 1,000-prompt batch."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import Engine, EngineConfig, Limits
from engine.errors import BudgetExceededError, ConfigError
from engine.models import Cassette, ModelSpec, ReplayServer
from engine.models.pricing import call_estimate, price_of, prompt_token_bound, unpriced_message
from engine.models.usage import Usage, UsageLedger
from tests.loop_support import code

pytestmark = pytest.mark.anyio

PRICE = 1e-6  # USD per token, prompt and completion alike


def _refuse(detail: str) -> BudgetExceededError:
    return BudgetExceededError("max_cost", f"cost budget used up ({detail})")


def _texts() -> list[str]:
    rng = random.Random(7)
    ascii_words = " ".join(
        rng.choice(["def", "x", "=", "(", ")", "ERROR", "42"]) for _ in range(500)
    )
    scripts = "".join(
        chr(rng.choice([0x4E00, 0x0410, 0x05D0, 0x1F600]) + rng.randrange(50)) for _ in range(500)
    )
    noise = "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(2000))
    return [ascii_words, scripts, noise, "a" * 5000, "\n".join(["    return x"] * 200)]


@pytest.mark.parametrize("encoding", ["cl100k_base", "o200k_base"])
def test_prompt_bound_is_above_real_tokenizers(
    encoding: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # litellm requires tiktoken on every Python it supports: no skip that could hide this.
    import litellm
    import tiktoken

    # litellm ships the encodings (no download): tiktoken's cache names them by URL hash.
    bundled = Path(litellm.__file__).parent / "litellm_core_utils" / "tokenizers"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(bundled))
    enc = tiktoken.get_encoding(encoding)
    for text in _texts():
        messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]
        counted = sum(len(enc.encode(m["content"])) + 4 for m in messages) + 3
        assert prompt_token_bound(messages) >= counted


def test_unpriced_model_under_a_cap_is_refused_with_how_to_price_it() -> None:
    spec = ModelSpec("openai/my-own-model", api_base="http://127.0.0.1:9/v1")
    assert price_of(spec) is None
    with pytest.raises(ConfigError, match="input_cost_per_million") as refused:
        call_estimate(spec, [{"role": "user", "content": "hi"}])
    assert "run without --max-cost" in str(refused.value)
    # A service job always runs under a cap (the operator's or the safe ceiling): its advice
    # is the operator's price in the models file, never "run without max_cost".
    served = unpriced_message(spec.model, service=True)
    assert "--models file" in served and "0 for a self-hosted model" in served
    assert "without" not in served
    priced = ModelSpec("openai/my-own-model", input_cost_per_token=0.0, output_cost_per_token=0.0)
    assert call_estimate(priced, [{"role": "user", "content": "hi"}]).cost_usd == 0.0
    known = price_of(ModelSpec("openai/gpt-4o-mini"))
    assert known is not None and known.source == "litellm" and known.input_per_token > 0


async def test_ledger_waits_for_calls_in_flight_then_refuses() -> None:
    ledger = UsageLedger()
    ledger.cap_cost(1.0, _refuse)
    await ledger.admit(0.6)  # in flight, reserving 0.6
    admitted = anyio.Event()

    async def second() -> None:
        await ledger.admit(0.6)  # 0.6 + 0.6 > 1: waits for the first call to settle
        admitted.set()

    async with anyio.create_task_group() as group:
        group.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        assert not admitted.is_set()
        ledger.record(model="m", role="sub", usage=Usage(cost_usd=0.1), status="ok")
        ledger.settle(0.6)  # the first call cost 0.1: room again for 0.6
    assert admitted.is_set() and ledger.reserved_usd == pytest.approx(0.6)
    ledger.record(model="m", role="sub", usage=Usage(cost_usd=0.5), status="ok")
    ledger.settle(0.6)
    # 0.6 spent: a call that may cost 0.5 can never fit, with nothing in flight to wait for.
    with pytest.raises(BudgetExceededError, match="past the cap"):
        await ledger.admit(0.5)
    await ledger.admit(0.4)  # this one still fits exactly


def _batch_cassette(items: int) -> list[dict[str, Any]]:
    batch = code(
        f"r = llm_batch([f'ITEM {{i}}' for i in range({items})])\n"
        "ok = [x for x in r if not x.startswith('[ERROR]')]\n"
        "refused = [x for x in r if x.startswith('[ERROR]')]\n"
        "answer['content'] = f'{len(ok)} ok; ' + (refused[0] if refused else '')"
    )
    return [
        {
            "match": {"model": "root"},
            "response": {
                "content": batch,
                "usage": {"prompt_tokens": 3000, "completion_tokens": 60},
            },
        },
        {
            "match": {"model": "root"},
            "response": {"content": code("answer['ready'] = True")},
            "repeat": True,
        },
        {
            "match": {"model": "sub", "contains": "ITEM"},
            "response": {"content": "ok", "usage": {"prompt_tokens": 40, "completion_tokens": 10}},
            "repeat": True,
        },
    ]


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
async def test_a_1000_prompt_batch_stops_at_the_cost_cap(tmp_path: Path) -> None:
    cap = 0.01
    items = 1000
    async with ReplayServer(Cassette(_batch_cassette(items))) as server:
        prices = {"input_cost_per_token": PRICE, "output_cost_per_token": PRICE}
        cheap = {"input_cost_per_token": PRICE / 10, "output_cost_per_token": PRICE / 10}
        config = EngineConfig(
            model=ModelSpec(
                "openai/root", api_base=server.base_url, api_key="x", max_tokens=256, **cheap
            ),
            sub_model=ModelSpec(
                "openai/sub", api_base=server.base_url, api_key="x", max_tokens=16, **prices
            ),
            limits=Limits(max_cost_usd=cap, max_iterations=3, cell_timeout_s=600),
            trajectory_path=tmp_path / "trajectory.jsonl",
            prompt_profile="frontier",
        )
        async with Engine(config) as engine:
            result = await engine.run("Run the batch", None)
        sent = [r for r in server.requests if r.get("model") == "sub"]
    # Every sub-call costs $0.00005 at this price: all 1,000 would cost $0.05, five times the cap.
    assert result.usage_total.cost_usd <= cap, result.usage_total
    assert result.stop_reason == "max_cost"
    ok = int(result.answer.split(" ok;")[0])
    assert 100 < ok < items and len(sent) == ok
    assert "cost budget" in result.answer and "past the cap" in result.answer
