"""Sub-model calls that may use tools: ``llm_query(prompt, tools=[...])``.

The sub-model gets the tools as function schemas (litellm function calling); each call it
asks for runs on the host and its result (JSON) or error goes back as a ``tool`` message,
until it answers in text or the step limit is reached.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from engine.errors import BudgetExceededError, ModelError, ToolError
from engine.models import ModelClient, ModelSpec, UsageLedger
from engine.models.usage import Usage
from engine.tools.registry import ToolRegistry

ToolCaller = Callable[[str, list[Any], dict[str, Any]], Awaitable[Any]]
DEFAULT_MAX_STEPS = 8
#: Characters of tool results one loop keeps in its messages (held in the orchestrator's
#: memory and sent back whole every round; about 500,000 tokens, past any context window): a
#: sub-model asking for 200 calls of a tool returning 990,000 characters grew the orchestrator
#: by 764 MiB in one sub-call, and the run's tool budget allowed 1,000 such calls.
MAX_RESULT_CHARS = 2_000_000
#: Characters of tool results the loops of one run tree hold at once: ``llm_batch(prompts,
#: tools=...)`` runs a loop per prompt, all at once, and 300 of them each holding a
#: 990,000-character result while waiting for their next round grew the orchestrator by
#: 324 MiB.
MAX_HELD_CHARS = 16_000_000


class HeldResults:
    """Counts the characters of tool results that the loops of one run tree hold."""

    def __init__(self, limit: int = MAX_HELD_CHARS) -> None:
        self.limit = limit
        self.held = 0

    def take(self, chars: int) -> bool:
        """Count ``chars`` more if they fit under the limit; False (nothing counted) if not."""
        if self.held + chars > self.limit:
            return False
        self.held += chars
        return True

    def give(self, chars: int) -> None:
        self.held -= chars


@dataclass(frozen=True)
class ToolLoopResult:
    """The sub-model's answer, its summed usage and how many tool rounds it took."""

    text: str
    usage: Usage
    steps: int
    tool_calls: int


async def run_tool_loop(
    client: ModelClient,
    spec: ModelSpec,
    prompt: str,
    registry: ToolRegistry,
    call_tool: ToolCaller,
    *,
    ledger: UsageLedger | None,
    max_steps: int = DEFAULT_MAX_STEPS,
    held: HeldResults | None = None,
) -> ToolLoopResult:
    """Ask ``spec`` ``prompt`` with ``registry``'s tools; ``call_tool`` runs each call.

    A failing tool (or a used-up tool budget) is reported to the model as the tool's result,
    so it can recover or answer without it; the loop itself fails only when the model is
    still calling tools after ``max_steps`` rounds. The results it keeps are bounded by
    :data:`MAX_RESULT_CHARS`, and counted in ``held`` (the run tree's, shared by its loops)
    until the loop ends; a result that fits neither is replaced by an error.
    """
    schemas = [s.function_schema() for s in registry.specs]
    messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    usage = Usage()
    calls = 0
    kept = 0  # characters of tool results in ``messages``
    full = False  # a result did not fit: the loop's later calls are not made
    taken = 0  # characters counted in ``held``
    try:
        for step in range(1, max_steps + 1):
            completion = await client.complete(
                spec, messages, role="sub", ledger=ledger, tools=schemas
            )
            usage = usage + completion.usage
            if not completion.tool_calls:
                return ToolLoopResult(completion.answer, usage, step, calls)
            messages.append(
                {
                    "role": "assistant",
                    "content": completion.answer or None,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments},
                        }
                        for c in completion.tool_calls
                    ],
                }
            )
            for call in completion.tool_calls:
                if full:
                    content = (
                        f"ERROR: not called: this question's tool results reached their limit of "
                        f"{MAX_RESULT_CHARS:,} characters; answer from the results you have"
                    )
                else:
                    calls += 1
                    content = await _one(call.name, call.arguments, registry, call_tool)
                    if kept + len(content) > MAX_RESULT_CHARS:
                        full = True
                        content = (
                            f"ERROR: {call.name} returned {len(content):,} characters, more than "
                            f"the {MAX_RESULT_CHARS - kept:,} left of this question's "
                            f"{MAX_RESULT_CHARS:,} characters of tool results; answer from the "
                            "results you have"
                        )
                    elif held is not None and not held.take(len(content)):
                        content = (
                            f"ERROR: {call.name} returned {len(content):,} characters, but the "
                            f"questions of this run hold {held.held:,} characters of tool results "
                            f"at once (at most {held.limit:,}); answer from the results you have, "
                            "or ask for less"
                        )
                    else:
                        taken += len(content)
                kept += len(content)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
    finally:
        if held is not None:
            held.give(taken)
    raise ModelError(
        f"the sub-model {spec.model} was still calling tools after {max_steps} rounds; "
        "ask it a narrower question or give it fewer tools"
    )


async def _one(name: str, arguments: str, registry: ToolRegistry, call_tool: ToolCaller) -> str:
    if name not in registry.names:
        return f"ERROR: there is no tool {name!r}; use one of: {', '.join(registry.names)}"
    try:
        kwargs = json.loads(arguments or "{}")
    except (ValueError, RecursionError) as exc:  # a model's text: may nest without end
        return f"ERROR: the arguments are not valid JSON ({exc}); send a JSON object"
    if not isinstance(kwargs, dict):
        return "ERROR: the arguments must be a JSON object of parameter names to values"
    try:
        result = await call_tool(name, [], kwargs)
    except (ToolError, BudgetExceededError) as exc:
        return f"ERROR: {exc}"
    return json.dumps(result, ensure_ascii=False)
