"""How an item gets answered: ``rlm`` (the Engine) or ``base`` (one direct model call)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread

from engine.errors import ModelUnavailableError, RLMError
from engine.eval.base import EvalItem
from engine.eval.tokens import get_tokenizer
from engine.models import ModelClient, ModelSpec

BASE_SYSTEM = (
    "You answer questions about a long context. Read the context, then answer the question "
    "exactly in the requested format."
)
# Room kept free in the base model's window for the question, chat template and the answer.
PROMPT_OVERHEAD_TOKENS = 256
DEFAULT_ANSWER_TOKENS = 1024


@dataclass(frozen=True)
class Outcome:
    """What one method produced for one item."""

    prediction: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    wall_s: float = 0.0
    iterations: int = 0
    sub_calls: int = 0
    trajectory_path: str | None = None
    stop_reason: str | None = None
    error: str | None = None
    truncated_tokens: int = 0
    window_tokens: int | None = None


class Method(Protocol):
    """An answering strategy."""

    name: str

    async def answer(self, item: EvalItem) -> Outcome: ...


def context_text(context: Any) -> str:
    """The context as prompt text (strings as is, anything else as JSON)."""
    return context if isinstance(context, str) else json.dumps(context, ensure_ascii=False)


def fit_tokens(text: str, max_tokens: int) -> tuple[str, int]:
    """Keep the head and tail of ``text`` within ``max_tokens``; (text, tokens dropped).

    The baseline's context cut, counted in tokens, which only the base model (one direct call)
    sees; what the RLM root model sees is cut by :func:`engine.truncate.truncate_middle`.
    """
    tok = get_tokenizer()
    ids = tok.encode(text)
    if len(ids) <= max_tokens:
        return text, 0
    dropped = len(ids) - max_tokens
    marker = f"\n\n[... {dropped} tokens of the context omitted here ...]\n\n"
    keep = max(0, max_tokens - tok.count(marker))
    head, tail = keep - keep // 2, keep // 2
    return tok.decode(ids[:head]) + marker + tok.decode(ids[len(ids) - tail :]), dropped


class BaseMethod:
    """The baseline: the model called directly, context truncated to its window."""

    name = "base"

    def __init__(self, client: ModelClient, spec: ModelSpec, window_tokens: int) -> None:
        self.client = client
        self.spec = spec
        self.window_tokens = window_tokens

    def build_messages(self, item: EvalItem) -> tuple[list[dict[str, str]], int]:
        """The chat for ``item`` and how many context tokens were cut to fit the window."""
        answer_room = self.spec.max_tokens or DEFAULT_ANSWER_TOKENS
        tok = get_tokenizer()
        # 5% slack: the model's own tokenizer may count a little more than cl100k does.
        budget = int(self.window_tokens * 0.95) - answer_room - PROMPT_OVERHEAD_TOKENS
        budget -= tok.count(item.query) + tok.count(BASE_SYSTEM)
        text, dropped = fit_tokens(context_text(item.context), max(0, budget))
        user = f"Context:\n{text}\n\nQuestion: {item.query}"
        return [{"role": "system", "content": BASE_SYSTEM}, {"role": "user", "content": user}], (
            dropped
        )

    async def answer(self, item: EvalItem) -> Outcome:
        started = time.monotonic()
        # Tokenizing a long context takes a while; keep the event loop free meanwhile.
        messages, dropped = await anyio.to_thread.run_sync(self.build_messages, item)
        try:
            done = await self.client.complete(self.spec, messages, role="root")
        except ModelUnavailableError:
            raise  # the server is down or unknown: stop the run rather than score every item 0
        except RLMError as exc:
            return Outcome(
                "",
                wall_s=time.monotonic() - started,
                error=str(exc),
                stop_reason="error",
                truncated_tokens=dropped,
                window_tokens=self.window_tokens,
            )
        return Outcome(
            prediction=done.answer,
            prompt_tokens=done.usage.prompt_tokens,
            completion_tokens=done.usage.completion_tokens,
            cost_usd=done.usage.cost_usd,
            wall_s=time.monotonic() - started,
            iterations=1,
            stop_reason=done.finish_reason,
            truncated_tokens=dropped,
            window_tokens=self.window_tokens,
        )


class RLMMethod:
    """The RLM: ``Engine.run(query, context=...)`` with the context as a sandbox variable."""

    name = "rlm"

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    async def answer(self, item: EvalItem) -> Outcome:
        started = time.monotonic()
        try:
            result = await self.engine.run(item.query, context=item.context)
        except RLMError as exc:
            return Outcome(
                "", wall_s=time.monotonic() - started, error=str(exc), stop_reason="error"
            )
        usage = result.usage_total
        path = result.trajectory_path
        return Outcome(
            prediction=result.answer or "",
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=usage.cost_usd,
            wall_s=float(result.wall_s),
            iterations=result.iterations,
            sub_calls=result.sub_calls,
            trajectory_path=str(path) if isinstance(path, Path | str) else None,
            stop_reason=result.stop_reason,
            error=result.error,
        )
