"""The model client: one chat completion through litellm, scheduled, accounted, recorded."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import anyio

from engine.errors import ModelError, ModelUnavailableError, ReplayMismatchError, RLMError
from engine.log import get_logger
from engine.models._litellm import load_litellm
from engine.models.cache import CachedReply, CallCache, cache_key
from engine.models.cassette import CassetteRecorder
from engine.models.errors import Failure, classify, describe
from engine.models.messages import normalize_messages
from engine.models.pricing import CallEstimate, call_estimate, price_of
from engine.models.reasoning import answer_text
from engine.models.replay import MISMATCH_MARKER
from engine.models.scheduler import CallScheduler, RetriesExhaustedError
from engine.models.spec import ModelSpec
from engine.models.usage import Usage, UsageLedger
from engine.text import valid_text

log = get_logger(__name__)

DEFAULT_TIMEOUT_S = 600.0
#: The most characters of one reply the engine keeps (about 500,000 tokens; no model writes
#: that much in one turn). A provider answering tens of MB per turn grew the orchestrator by
#: 460 MiB and the trajectory by 90 MB in three turns, as each reply went back in the next
#: request; a longer reply is cut here and reported as cut by the length limit.
MAX_REPLY_CHARS = 2_000_000


@dataclass(frozen=True)
class ToolCall:
    """One function call the model asked for; ``arguments`` is its JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Completion:
    """The result of one model call (``tool_calls`` when it was given tools and used them)."""

    text: str
    usage: Usage
    model: str
    finish_reason: str | None
    duration_s: float
    cached: bool = False
    tool_calls: tuple[ToolCall, ...] = ()

    @property
    def answer(self) -> str:
        """The reply without a reasoning model's ``<think>`` block ("" if it ended inside it)."""
        return answer_text(self.text)


class ModelClient:
    """Calls models through litellm under a :class:`CallScheduler`.

    Every call is recorded in the given :class:`UsageLedger` exactly once, with status ``ok``,
    ``error`` or ``cancelled``; successful calls are also appended to ``recorder`` if set.
    Failures raise :class:`ModelError` (or :class:`ModelUnavailableError` when the server is
    unreachable or does not know the model, :class:`ReplayMismatchError` when a replay
    cassette has no answer) with a message that says what to do.

    With a :class:`CallCache`, a call the cache applies to is answered from it when it can be:
    such a hit sends no request, costs nothing (the ledger counts it as a hit with the usage it
    saved) and comes back with ``Completion.cached`` set. A broken cache file never fails a
    call: it is logged and the call goes to the provider.
    """

    def __init__(
        self,
        scheduler: CallScheduler | None = None,
        recorder: CassetteRecorder | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        cache: CallCache | None = None,
    ) -> None:
        self.scheduler = scheduler or CallScheduler()
        self.cache = cache
        self.recorder = recorder
        self.timeout_s = timeout_s
        self._unpriced: set[str] = set()

    async def complete(
        self,
        spec: ModelSpec,
        messages: list[dict[str, Any]],
        *,
        stop: list[str] | None = None,
        role: str = "root",
        ledger: UsageLedger | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> Completion:
        """Send a chat to ``spec`` and return the assistant's reply.

        Consecutive same-role messages are merged first (llama.cpp rejects two assistant
        turns in a row). ``stop`` strings are passed to the provider. ``role`` labels the
        call in the ledger (``root``, ``sub``, ...). ``tools`` are function schemas the
        model may call (OpenAI format); its calls come back in ``Completion.tool_calls``.

        Under the ledger's cost cap the call's worst case (:func:`call_estimate`) is reserved
        when the scheduler is about to send it; a call refused there raises the cap's error and
        is not recorded (nothing was sent). An unpriced model under a cap raises ConfigError.
        """
        litellm = load_litellm()
        chat = normalize_messages(messages)
        kwargs = self._request(spec, chat, stop)
        if tools:
            kwargs["tools"] = tools
        # The cache stores text replies only, so calls that may answer with tool calls skip it.
        key = None if tools else self._cache_key(spec, chat, kwargs)
        if key is not None:
            hit = await self._cache_get(key)
            if hit is not None:
                return self._hit(spec, chat, stop, hit, role=role, ledger=ledger)
        estimate: CallEstimate | None = None
        if ledger is not None and ledger.cost_cap_usd is not None:
            estimate = call_estimate(spec, chat, tools)
            kwargs.setdefault("max_tokens", estimate.max_tokens)  # what makes the bound hold
        started = time.monotonic()
        usage = Usage()
        status = "error"
        sent = admitted = False

        async def send() -> Any:
            # Runs when the scheduler grants a slot, i.e. at dispatch: only now is the
            # cap checked, against the spend and every reservation of calls in flight.
            nonlocal sent, admitted
            if estimate is not None and ledger is not None and not admitted:
                await ledger.admit(estimate.cost_usd)
                admitted = True
            sent = True
            # litellm's timeout is httpx's, which is per read: a server sending a byte now and
            # then held a call for ever. This deadline covers the whole call.
            with anyio.fail_after(self.timeout_s):
                return await litellm.acompletion(**kwargs)

        try:
            response = await self.scheduler.run(spec.model, send, limit=spec.concurrency)
            text, finish_reason, usage = self._read(spec, response)
            calls = _tool_calls(response)
            status = "ok"
        except anyio.get_cancelled_exc_class():
            status = "cancelled"
            raise
        except RLMError:
            raise
        except RetriesExhaustedError as exc:
            raise self._error(spec, classify(exc.last), exc.attempts) from exc.last
        except Exception as exc:
            raise self._error(spec, classify(exc), 1) from exc
        finally:
            if ledger is not None:
                if sent:
                    ledger.record(model=spec.model, role=role, usage=usage, status=status)
                if admitted and estimate is not None:
                    ledger.settle(estimate.cost_usd)
        duration = time.monotonic() - started
        log.debug(
            "model call",
            model=spec.model,
            role=role,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=usage.cost_usd,
            duration_s=round(duration, 3),
        )
        if self.recorder is not None:
            self.recorder.record(
                model=spec.wire_model,
                messages=chat,
                stop=stop,
                content=text,
                finish_reason=finish_reason,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                tool_calls=[dataclasses.asdict(c) for c in calls] or None,
            )
        if key is not None:
            reply = CachedReply(
                text, finish_reason, usage.prompt_tokens, usage.completion_tokens, usage.cost_usd
            )
            await self._cache_put(key, spec.model, reply)
        return Completion(text, usage, spec.model, finish_reason, duration, tool_calls=calls)

    def _cache_key(
        self, spec: ModelSpec, chat: list[dict[str, Any]], kwargs: dict[str, Any]
    ) -> str | None:
        if self.cache is None:
            return None
        params = {k: kwargs.get(k) for k in ("temperature", "seed", "max_tokens", "stop", "tools")}
        if not self.cache.applies(params):
            return None
        return cache_key(
            model=spec.model,
            api_base=spec.api_base,
            messages=chat,
            params=params,
            scope=self.cache.scope,
        )

    async def _cache_get(self, key: str) -> CachedReply | None:
        assert self.cache is not None
        try:
            return await self.cache.get(key)
        except sqlite3.Error as exc:
            log.warning("model-call cache unreadable; calling the provider", error=str(exc))
            return None

    async def _cache_put(self, key: str, model: str, reply: CachedReply) -> None:
        assert self.cache is not None
        try:
            await self.cache.put(key, model, reply)
        except sqlite3.Error as exc:
            log.warning("model-call cache not written", error=str(exc))

    def _hit(
        self,
        spec: ModelSpec,
        chat: list[dict[str, Any]],
        stop: list[str] | None,
        hit: CachedReply,
        *,
        role: str,
        ledger: UsageLedger | None,
    ) -> Completion:
        saved = Usage(hit.prompt_tokens, hit.completion_tokens, hit.cost_usd)
        if ledger is not None:
            ledger.record_hit(saved=saved)
        log.debug("model call answered from the cache", model=spec.model, role=role)
        if self.recorder is not None:
            self.recorder.record(
                model=spec.wire_model,
                messages=chat,
                stop=stop,
                content=hit.text,
                finish_reason=hit.finish_reason,
                prompt_tokens=hit.prompt_tokens,
                completion_tokens=hit.completion_tokens,
            )
        return Completion(hit.text, Usage(), spec.model, hit.finish_reason, 0.0, cached=True)

    def _request(
        self, spec: ModelSpec, chat: list[dict[str, Any]], stop: list[str] | None
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": spec.model,
            "messages": chat,
            "timeout": self.timeout_s,
            # The scheduler owns retries; the SDK's own would hide 429s and double the waits.
            "max_retries": 0,
            "num_retries": 0,
            # A provider that lacks an optional parameter (e.g. stop) should still answer.
            "drop_params": True,
        }
        if stop:
            kwargs["stop"] = list(stop)
        if spec.api_base:
            kwargs["api_base"] = spec.api_base
        if spec.api_key:
            kwargs["api_key"] = spec.api_key
        elif spec.api_base and spec.provider == "openai" and not os.environ.get("OPENAI_API_KEY"):
            # Local OpenAI-compatible servers need no key, but the SDK refuses to send none.
            kwargs["api_key"] = "no-key"
        if spec.max_tokens is not None:
            kwargs["max_tokens"] = spec.max_tokens
        if spec.temperature is not None:
            kwargs["temperature"] = spec.temperature
        if spec.seed is not None:
            kwargs["seed"] = spec.seed
        return kwargs

    def _read(self, spec: ModelSpec, response: Any) -> tuple[str, str | None, Usage]:
        if not getattr(response, "choices", None):
            raise ModelError(
                f"model {spec.model} returned no choices (the provider may have filtered the "
                "reply); retry or rephrase the prompt"
            )
        choice = response.choices[0]
        text = getattr(choice.message, "content", None) or ""
        finish_reason = choice.finish_reason
        if not isinstance(text, str):
            raise ModelError(f"model {spec.model} returned content that is not text")
        # Reasoning the server (or litellm) moved out of the content goes back in front of it
        # as a <think> block: one text for the trajectory, cassettes and the cache, and
        # Completion.answer is what follows it either way.
        reasoning = getattr(choice.message, "reasoning_content", None)
        if isinstance(reasoning, str) and reasoning.strip():
            text = f"<think>\n{reasoning.strip()}\n</think>\n\n{text.lstrip()}"
        if len(text) > MAX_REPLY_CHARS:
            log.warning("model reply cut", model=spec.model, chars=len(text))
            text, finish_reason = text[:MAX_REPLY_CHARS], "length"
        # JSON may escape lone surrogates, which no UTF-8 writer (trajectory, cache) accepts.
        text = valid_text(text)
        raw = getattr(response, "usage", None)
        # A provider's counts are not trusted to be sane: a negative one would lower the run's
        # token count and spend, and so lift its token budget and cost cap.
        prompt = max(0, int(getattr(raw, "prompt_tokens", 0) or 0))
        completion = max(0, int(getattr(raw, "completion_tokens", 0) or 0))
        cost = self._cost(spec, response, prompt, completion)
        return text, finish_reason, Usage(prompt, completion, cost)

    def _cost(self, spec: ModelSpec, response: Any, prompt: int, completion: int) -> float:
        if spec.input_cost_per_token is not None or spec.output_cost_per_token is not None:
            price = price_of(spec)  # the operator's price wins over litellm's table
            assert price is not None
            return price.cost(prompt, completion)
        if spec.model in self._unpriced:
            return 0.0
        try:
            cost = float(load_litellm().completion_cost(completion_response=response) or 0.0)
            # Never below 0 (NaN included), which would lift the cost cap; +inf stops the run.
            return cost if cost >= 0 else 0.0
        except Exception:
            # Unknown to litellm's price table (local or replayed models): cost 0.
            self._unpriced.add(spec.model)
            return 0.0

    def _error(self, spec: ModelSpec, failure: Failure, attempts: int) -> ModelError:
        message = describe(
            failure,
            model=spec.model,
            api_base=spec.api_base,
            provider=spec.provider,
            attempts=attempts,
        )
        log.warning("model call failed", model=spec.model, kind=failure.kind, status=failure.status)
        if failure.kind == "client" and MISMATCH_MARKER in failure.message:
            return ReplayMismatchError(failure.message)
        if failure.kind in ("connection", "not_found"):
            return ModelUnavailableError(message)
        return ModelError(message)


def _tool_calls(response: Any) -> tuple[ToolCall, ...]:
    message = response.choices[0].message
    calls = getattr(message, "tool_calls", None) or []
    out = []
    for index, call in enumerate(calls):
        function = getattr(call, "function", None)
        name = getattr(function, "name", None)
        if not name:
            continue
        arguments = getattr(function, "arguments", None) or "{}"
        # Cut like a reply (cut JSON is refused as any garbage is), and writable as UTF-8.
        arguments = valid_text(str(arguments)[:MAX_REPLY_CHARS])
        ident = valid_text(str(getattr(call, "id", None) or f"call_{index}"))
        out.append(ToolCall(ident, valid_text(str(name)), arguments))
    return tuple(out)
