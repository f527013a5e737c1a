"""Batch evaluation: generate items, answer them with ``rlm`` and/or ``base``, score, report.

Results go to ``<out>/results.jsonl`` one durable line per (item, method) as soon as each is
scored; re-running with the same settings skips the keys already there, so a killed run
resumes where it stopped. ``summary.md`` and the PNG plots are rebuilt at the end.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from engine.config import EngineConfig
from engine.errors import ConfigError, EvalError, RLMError
from engine.eval.base import EvalItem, Unit
from engine.eval.methods import BaseMethod, Method, Outcome, RLMMethod
from engine.eval.registry import get_benchmark
from engine.eval.report import write_report
from engine.eval.results import ResultStore
from engine.log import get_logger
from engine.models import CallScheduler, ModelClient, ModelSpec, ReplayServer, replay_spec
from engine.models.cache import CallCache

log = get_logger(__name__)

METHODS = ("rlm", "base")
DEFAULT_BASE_WINDOW = 32_768


def parse_methods(text: str) -> tuple[str, ...]:
    """``rlm``, ``base`` or ``both`` (also a comma list) -> method names."""
    if text == "both":
        return METHODS
    names = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    bad = [n for n in names if n not in METHODS]
    if bad or not names:
        raise ConfigError(f"unknown method {', '.join(bad) or text!r}; use rlm, base or both")
    return names


@dataclass(frozen=True)
class ServiceTarget:
    """An ``rlm serve`` (or a load balancer in front of replicas) that runs the rlm items."""

    url: str
    api_key: str | None = None
    limits: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation: benchmarks x lengths x ``n`` items x methods, written to ``out_dir``.

    ``engine`` carries the models, limits, sandbox and replay settings; ``engine.model=None``
    means the embedded local model. ``base_window`` (tokens) caps the baseline's prompt; by
    default the model's ``context_window``, else 32k. Items whose result recorded an error are
    run again on resume unless ``retry_errors`` is False; ``max_consecutive_errors`` failures
    in a row stop the run (a dead model server should not turn every item into an error).
    """

    benches: tuple[str, ...]
    lengths: tuple[int, ...]
    out_dir: Path
    n: int = 5
    seed: int = 0
    methods: tuple[str, ...] = ("rlm",)
    unit: Unit = "tokens"
    concurrency: int = 1
    engine: EngineConfig = field(default_factory=EngineConfig)
    base_window: int | None = None
    retry_errors: bool = True
    max_consecutive_errors: int = 5
    service: ServiceTarget | None = None

    def __post_init__(self) -> None:
        if self.service is not None and "base" in self.methods:
            raise ConfigError(
                "--service runs the rlm method on the service; use --method rlm (the base "
                "method calls a model directly: run it without --service)"
            )
        if self.n < 1:
            raise ConfigError(f"--n must be at least 1 (got {self.n})")
        if self.max_consecutive_errors < 1:
            raise ConfigError("max_consecutive_errors must be at least 1")
        if self.concurrency < 1:
            raise ConfigError(f"--concurrency must be at least 1 (got {self.concurrency})")
        for m in self.methods:
            if m not in METHODS:
                raise ConfigError(f"unknown method {m!r}; use rlm, base or both")
        for b in self.benches:
            get_benchmark(b)


def generate_items(cfg: EvalConfig) -> list[EvalItem]:
    """Every item of the run, in bench, length, index order (deterministic in the seed)."""
    items: list[EvalItem] = []
    for name in cfg.benches:
        bench = get_benchmark(name)
        for length in cfg.lengths:
            items.extend(bench.items(length, cfg.n, cfg.seed, cfg.unit))
    return items


def _small_meta(meta: dict[str, Any], limit: int = 600) -> dict[str, Any]:
    # Keep the descriptive facts (family, depth, ...) and drop bulky hidden data (records).
    out = {}
    for key, value in meta.items():
        if len(json.dumps(value, default=str)) <= limit:
            out[key] = value
    return out


def make_record(
    item: EvalItem, method: str, outcome: Outcome, score: float, model: str, sub_model: str | None
) -> dict[str, Any]:
    """The results.jsonl line for one (item, method)."""
    return {
        "key": item.key,
        "bench": item.bench,
        "length": item.length,
        "unit": item.unit,
        "seed": item.seed,
        "index": item.index,
        "method": method,
        "model": model,
        "sub_model": sub_model if method == "rlm" else None,
        "query": item.query,
        "gold": item.gold,
        "prediction": outcome.prediction,
        "score": score,
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "total_tokens": outcome.prompt_tokens + outcome.completion_tokens,
        "cost_usd": outcome.cost_usd,
        "wall_s": round(outcome.wall_s, 3),
        "iterations": outcome.iterations,
        "sub_calls": outcome.sub_calls,
        "trajectory_path": outcome.trajectory_path,
        "stop_reason": outcome.stop_reason,
        "error": outcome.error,
        "truncated_tokens": outcome.truncated_tokens,
        "base_window": outcome.window_tokens,
        "meta": _small_meta(item.meta),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


async def _standalone_spec(engine_cfg: EngineConfig, stack: AsyncExitStack) -> ModelSpec:
    # The baseline without an Engine resolves the model the way the Engine does: a replay
    # server for ``replay``, the local model server (started or reused) for no model.
    if engine_cfg.replay is not None:
        from engine.local import local_model_spec

        server = await stack.enter_async_context(ReplayServer(engine_cfg.replay))
        return replay_spec(engine_cfg.model or local_model_spec(), server.base_url)
    if engine_cfg.model is None:
        from engine.local import LocalModelServer

        local = await stack.enter_async_context(LocalModelServer())
        return local.spec
    return engine_cfg.model


async def open_methods(
    cfg: EvalConfig, stack: AsyncExitStack
) -> tuple[dict[str, Method], dict[str, tuple[str, str | None]]]:
    """The answering methods of ``cfg`` and (model, sub-model) names per method.

    With ``rlm`` the Engine is opened first and ``base`` calls the very endpoint the Engine's
    root model uses (replay server or local model included). Everything opened lives as long
    as ``stack``.
    """
    engine_cfg = cfg.engine
    methods: dict[str, Method] = {}
    names: dict[str, tuple[str, str | None]] = {}
    base_spec: ModelSpec | None = None
    if "rlm" in cfg.methods and cfg.service is not None:
        # The alternative method runner: every item a job of the service.
        from engine.eval.service_method import ServiceMethod

        target = cfg.service
        method = await stack.enter_async_context(
            ServiceMethod(
                target.url,
                target.api_key,
                limits=target.limits,
                trajectory_dir=cfg.out_dir / "trajectories",
            )
        )
        methods["rlm"] = method
        names["rlm"] = (await method.model_name(), None)
    elif "rlm" in cfg.methods:
        from engine import Engine

        if engine_cfg.trajectory_dir is None and engine_cfg.trajectory_path is None:
            engine_cfg = dataclasses.replace(
                engine_cfg, trajectory_dir=cfg.out_dir / "trajectories"
            )
        engine = await stack.enter_async_context(Engine(engine_cfg))
        methods["rlm"] = RLMMethod(engine)
        base_spec = engine.root_spec
        names["rlm"] = (engine.root_spec.model, engine.sub_spec.model)
    if "base" in cfg.methods:
        if base_spec is None:
            base_spec = await _standalone_spec(engine_cfg, stack)
        window = cfg.base_window or base_spec.context_window or DEFAULT_BASE_WINDOW
        cache = None
        if engine_cfg.cache != "off" and engine_cfg.replay is None:
            cache = CallCache.at(
                engine_cfg.cache_dir, mode=engine_cfg.cache, max_bytes=engine_cfg.cache_size
            )
            stack.callback(cache.close)
        client = ModelClient(CallScheduler(max_in_flight=engine_cfg.max_in_flight), cache=cache)
        methods["base"] = BaseMethod(client, base_spec, window)
        names["base"] = (base_spec.model, None)
    return methods, names


class EvalRunner:
    """Runs an :class:`EvalConfig`; ``on_start(total, skipped)`` and ``on_result(record)``
    let a front end draw progress."""

    def __init__(
        self,
        cfg: EvalConfig,
        *,
        on_start: Callable[[int, int], None] | None = None,
        on_result: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.on_start = on_start
        self.on_result = on_result

    async def run(self) -> list[Path]:
        """Evaluate everything not yet in results.jsonl, then write the report; its paths."""
        cfg = self.cfg
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        items = await anyio.to_thread.run_sync(generate_items, cfg)
        with ResultStore(cfg.out_dir / "results.jsonl") as store:
            done = store.load()
            todo = [
                (item, method)
                for item in items
                for method in cfg.methods
                if not self._finished(done.get((item.key, method)))
            ]
            total = len(items) * len(cfg.methods)
            if self.on_start is not None:
                self.on_start(total, total - len(todo))
            log.info("eval plan", total=total, todo=len(todo), out=str(cfg.out_dir))
            try:
                if todo:
                    await self._run_all(todo, store, done)
            except BaseExceptionGroup as group:
                # Task groups (ours and the servers') wrap errors; surface our own error,
                # whose message says what to do, instead of a group traceback.
                first = _first_rlm_error(group)
                if first is None:
                    raise
                raise first from group
            finally:
                paths = write_report(cfg.out_dir)
        return paths

    def _finished(self, record: dict[str, Any] | None) -> bool:
        if record is None:
            return False
        return not (self.cfg.retry_errors and record.get("error"))

    async def _run_all(
        self,
        todo: list[tuple[EvalItem, str]],
        store: ResultStore,
        done: dict[tuple[str, str], dict[str, Any]],
    ) -> None:
        cfg = self.cfg
        async with AsyncExitStack() as stack:
            methods, names = await open_methods(cfg, stack)
            earlier = {(m, r.get("model")) for (_, m), r in done.items() if m in names}
            mixed = sorted(str(model) for m, model in earlier if model != names[m][0])
            if mixed:
                # The resume key has no model in it (so a renamed endpoint still resumes);
                # say so when the finished lines came from another model.
                log.warning(
                    "results.jsonl holds items scored with another model; they are not re-run",
                    out=str(cfg.out_dir),
                    earlier_models=mixed,
                    hint="use a new --out per model",
                )
            limiter = anyio.CapacityLimiter(cfg.concurrency)
            benches = {b.name: b for b in map(get_benchmark, cfg.benches)}  # aliases resolved

            streak = 0

            async def one(item: EvalItem, method: str) -> None:
                nonlocal streak
                async with limiter:
                    outcome = await methods[method].answer(item)
                failed = outcome.error is not None and not outcome.prediction
                score = 0.0 if failed else benches[item.bench].score(item, outcome.prediction)
                record = make_record(item, method, outcome, score, *names[method])
                store.append(record)
                if self.on_result is not None:
                    self.on_result(record)
                streak = streak + 1 if outcome.error else 0
                if streak >= cfg.max_consecutive_errors:
                    raise EvalError(
                        f"{streak} items in a row failed; the last error: {outcome.error}. Fix "
                        "the cause and run the same command again: scored items are kept and "
                        "failed ones are retried."
                    )

            async with anyio.create_task_group() as tg:
                for item, method in todo:
                    tg.start_soon(one, item, method)


def _first_rlm_error(group: BaseExceptionGroup) -> RLMError | None:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _first_rlm_error(exc)
            if found is not None:
                return found
        elif isinstance(exc, RLMError):
            return exc
    return None


def run_eval(
    cfg: EvalConfig,
    *,
    on_start: Callable[[int, int], None] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[Path]:
    """Synchronous helper around :class:`EvalRunner` (for scripts and the CLI)."""
    runner = EvalRunner(cfg, on_start=on_start, on_result=on_result)
    return anyio.run(runner.run)
