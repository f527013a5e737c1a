"""What the bridge calls into: the orchestrator's implementation of the sub-call functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import anyio

from engine.errors import BridgeRequestError, RLMError
from engine.log import get_logger

log = get_logger(__name__)


@runtime_checkable
class BridgeHandler(Protocol):
    """Serves the sub-calls that code in the sandbox makes through the bridge.

    The bridge validates and authenticates every request before it reaches the handler, and
    runs ``llm_batch`` items itself by calling :meth:`llm_query` once per prompt, concurrently;
    the handler (or the scheduler behind it) enforces the real concurrency limits and budgets.

    Raise :class:`engine.errors.BudgetExceededError` when a budget is used up (the sandbox sees
    HTTP 429 and ``BudgetExhausted``) and other :class:`engine.errors.RLMError` subclasses for
    failures the model should see (HTTP 502). Both messages reach the model verbatim.
    """

    async def llm_query(self, prompt: str, model: str | None) -> str:
        """Answer one prompt with a sub-model (``model`` None means the configured default)."""
        ...

    async def rlm_query(self, prompt: str, context_path: Path | None) -> str:
        """Run a child RLM on ``prompt``; ``context_path`` is a private copy of its context.

        The file at ``context_path`` belongs to the bridge and is deleted once this returns.
        """
        ...


@runtime_checkable
class ToolHandler(Protocol):
    """A :class:`BridgeHandler` that also serves host tools (``POST /v1/tool``).

    Raise :class:`engine.errors.ToolError` when a tool fails (HTTP 502, type ``tool_error``,
    with the tool's exception type so the sandbox can raise the same kind).
    """

    async def call_tool(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Run host tool ``name``; return a JSON-able value."""
        ...

    async def llm_query_tools(self, prompt: str, model: str | None, tools: tuple[str, ...]) -> str:
        """Answer ``prompt`` with a sub-model that may call the named tools."""
        ...


async def answer_batch(
    handler: BridgeHandler, prompts: list[str], model: str | None, tools: tuple[str, ...] = ()
) -> list[str]:
    """Answer ``prompts`` concurrently with :meth:`BridgeHandler.llm_query`, in order.

    With ``tools`` each prompt goes to :meth:`ToolHandler.llm_query_tools` instead.

    A failed item becomes ``"[ERROR] <message>"`` instead of failing the batch, so one bad
    prompt does not throw away the others' answers (and their cost).
    """
    results = [""] * len(prompts)
    if tools and not isinstance(handler, ToolHandler):
        raise BridgeRequestError(404, "not_found", "this sandbox has no tools")

    async def one(index: int, prompt: str) -> None:
        try:
            if tools:
                assert isinstance(handler, ToolHandler)
                text = await handler.llm_query_tools(prompt, model, tools)
            else:
                text = await handler.llm_query(prompt, model)
            results[index] = checked_text(text)
        except RLMError as exc:
            results[index] = f"[ERROR] {exc}"
        except Exception as exc:
            log.exception("bridge handler failed", item=index)
            results[index] = f"[ERROR] {type(exc).__name__}: {exc}"

    async with anyio.create_task_group() as task_group:
        for index, prompt in enumerate(prompts):
            task_group.start_soon(one, index, prompt)
    return results


def checked_text(value: object) -> str:
    """``value`` if it is a str (a handler's answer); TypeError otherwise."""
    if not isinstance(value, str):
        raise TypeError(f"the bridge handler returned {type(value).__name__}, not str")
    return value
