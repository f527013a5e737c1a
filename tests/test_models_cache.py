"""The model-call cache: real SQLite files, real HTTP to the replay server through litellm."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import anyio
import pytest

from engine.errors import ConfigError
from engine.models import Cassette, ModelClient, ModelSpec, ReplayServer, UsageLedger
from engine.models.cache import CachedReply, CallCache, cache_key, is_deterministic, parse_mode

pytestmark = pytest.mark.anyio


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


CASSETTE = [
    {
        "match": {"model": "root"},
        "response": {
            "content": "an answer",
            "usage": {"prompt_tokens": 50, "completion_tokens": 7},
        },
        "repeat": True,
    }
]


def test_key_depends_on_every_input() -> None:
    base = {"model": "m", "api_base": None, "messages": user("hi"), "params": {"temperature": 0}}
    key = cache_key(**base)  # type: ignore[arg-type]
    assert key == cache_key(**base)  # type: ignore[arg-type]
    variants = [
        {**base, "model": "m2"},
        {**base, "api_base": "http://x/v1"},
        {**base, "messages": user("hi!")},
        {**base, "params": {"temperature": 0, "stop": ["```"]}},
        {**base, "params": {"temperature": 0, "seed": 1}},
        {**base, "params": {"temperature": 0, "tools": [{"name": "t"}]}},
        {**base, "scope": "owner-a"},
        {**base, "scope": "owner-b"},
    ]
    assert len({cache_key(**v) for v in variants} | {key}) == len(variants) + 1  # type: ignore[arg-type]
    # An unset parameter and a parameter set to None are the same call.
    assert cache_key(**{**base, "params": {"temperature": 0, "seed": None}}) == key  # type: ignore[arg-type]
    # No scope is the key the CLI always used: existing entries stay valid.
    assert cache_key(**{**base, "scope": None}) == key  # type: ignore[arg-type]


def test_deterministic_means_temperature_zero_or_a_seed() -> None:
    assert is_deterministic({"temperature": 0})
    assert is_deterministic({"temperature": 0.7, "seed": 3})
    assert not is_deterministic({"temperature": 0.7})
    assert not is_deterministic({})
    with pytest.raises(ConfigError, match="off, deterministic, all"):
        parse_mode("sometimes")


async def test_all_mode_repeated_run_sends_no_request(tmp_path: Path) -> None:
    cache = CallCache(tmp_path / "calls.sqlite", mode="all")
    spec_args = {"temperature": 0.9}
    async with ReplayServer(Cassette(CASSETTE)) as server:
        spec = ModelSpec("openai/root", api_base=server.base_url, **spec_args)
        first_ledger, second_ledger = UsageLedger(), UsageLedger()
        first = await ModelClient(cache=cache).complete(spec, user("q"), ledger=first_ledger)
        # A second client on the same file: as a later run or another process would be.
        second = await ModelClient(cache=CallCache(cache.path, mode="all")).complete(
            spec, user("q"), ledger=second_ledger
        )
        assert len(server.requests) == 1
    assert not first.cached and second.cached
    assert second.text == first.text == "an answer"
    assert second.usage.total_tokens == 0
    assert second_ledger.calls() == 0 and second_ledger.cache_hits == 1
    assert second_ledger.cache_saved.prompt_tokens == 50
    assert second_ledger.to_dict()["cache"]["saved"]["completion_tokens"] == 7
    assert first_ledger.cache_hits == 0


async def test_deterministic_mode_skips_sampled_calls(tmp_path: Path) -> None:
    cache = CallCache(tmp_path / "calls.sqlite")
    async with ReplayServer(Cassette(CASSETTE)) as server:
        client = ModelClient(cache=cache)
        sampled = ModelSpec("openai/root", api_base=server.base_url, temperature=0.8)
        greedy = ModelSpec("openai/root", api_base=server.base_url, temperature=0.0)
        seeded = ModelSpec("openai/root", api_base=server.base_url, temperature=0.8, seed=7)
        for spec in (sampled, sampled, greedy, greedy, seeded, seeded):
            await client.complete(spec, user("q"))
        assert len(server.requests) == 4  # both sampled calls, one greedy, one seeded
        assert server.requests[-1]["seed"] == 7
    assert cache.stats()["entries"] == 2


async def test_off_mode_never_touches_the_file(tmp_path: Path) -> None:
    cache = CallCache(tmp_path / "calls.sqlite", mode="off")
    async with ReplayServer(Cassette(CASSETTE)) as server:
        spec = ModelSpec("openai/root", api_base=server.base_url, temperature=0)
        for _ in range(2):
            await ModelClient(cache=cache).complete(spec, user("q"))
        assert len(server.requests) == 2
    assert not cache.path.exists()


async def test_a_corrupt_cache_file_does_not_fail_calls(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    async with ReplayServer(Cassette(CASSETTE)) as server:
        spec = ModelSpec("openai/root", api_base=server.base_url, temperature=0)
        reply = await ModelClient(cache=CallCache(path)).complete(spec, user("q"))
    assert reply.text == "an answer" and not reply.cached


async def test_size_bound_evicts_least_recently_used(tmp_path: Path) -> None:
    cache = CallCache(tmp_path / "calls.sqlite", mode="all", max_bytes=2_000)
    reply = CachedReply("x" * 300, "stop", 1, 1, 0.0)
    for i in range(5):
        await cache.put(f"k{i}", "m", reply)
    await cache.get("k0")  # k0 is now the most recently used
    await cache.put("k5", "m", reply)  # past the bound: the oldest entries go
    stats = cache.stats()
    assert stats["bytes"] <= 2_000
    assert await cache.get("k0") is not None
    assert await cache.get("k1") is None


def _writer(path: str, start: int) -> None:
    cache = CallCache(Path(path), mode="all")
    for i in range(start, start + 50):
        anyio.run(cache.put, f"k{i}", "m", CachedReply(f"v{i}", None, 1, 1, 0.0))


def test_concurrent_processes_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), n * 100)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = CallCache(path, mode="all")
    assert cache.stats()["entries"] == 200
    hit = anyio.run(cache.get, "k305")
    assert hit is not None and hit.text == "v305"


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
async def test_a_repeated_run_with_cache_all_sends_no_request(tmp_path: Path) -> None:
    from engine import Engine, EngineConfig, Limits
    from engine.rlm.trajectory import read_trajectory

    fence = "Looking.\n```repl\n{}\n```\n"
    entries = [
        {
            "match": {"model": "root", "contains": "SEEN"},
            "response": {
                "content": fence.format(
                    'answer["content"] = llm_query("x")\nanswer["ready"] = True'
                )
            },
        },
        {"match": {"model": "root"}, "response": {"content": fence.format('print("SEEN")')}},
        {"match": {"model": "sub"}, "response": {"content": "42"}, "repeat": True},
    ]
    results = []
    async with ReplayServer(Cassette(entries)) as server:
        for n in range(2):
            config = EngineConfig(
                model=ModelSpec("openai/root", api_base=server.base_url, api_key="x"),
                sub_model=ModelSpec("openai/sub", api_base=server.base_url, api_key="x"),
                limits=Limits(max_iterations=4),
                trajectory_path=tmp_path / f"run{n}.jsonl",
                cache="all",
                cache_dir=tmp_path / "cache",
            )
            async with Engine(config) as engine:
                results.append(await engine.run("What is it?", "some context"))
        assert len(server.requests) == 3  # the first run only: two root turns, one sub-call
    first, second = results
    assert first.answer == second.answer == "42" and second.ready
    assert second.usage_total.total_tokens == 0
    assert second.cache is not None and second.cache["hits"] == 3
    assert second.cache["saved"]["total_tokens"] == first.usage_total.total_tokens
    events = read_trajectory(tmp_path / "run1.jsonl")
    assert all(e["cached"] for e in events if e["type"] == "turn")
    assert [e.get("cached") for e in events if e["type"] == "sub_call"] == [True]
