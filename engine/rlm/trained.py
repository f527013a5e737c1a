"""The conventions of the paper's post-trained RLM checkpoints, read from the official package.

RLM-Qwen3-8B (``mit-oasys/rlm-qwen3-8b-v0.1``, arXiv:2512.24601) was post-trained on
trajectories produced with one fixed system prompt, per-turn user message and REPL output
format, those of the ``rlms`` package (import name ``rlm``). A model trained on a format works
best when it sees that format, so the ``rlm-trained`` profile builds its messages with the
package's own functions at run time instead of keeping a copy here that would drift from it:
``build_rlm_system_prompt`` (system prompt plus the context metadata message),
``build_user_prompt`` ("Turn i/N:", with the first-turn safeguard) and ``format_iteration``
("REPL output:" messages). Install it with ``pip install 'rlm-engine[trained]'``.

The kernel speaks the package's names too: ``llm_query_batched`` and ``rlm_query_batched``
are there besides ``llm_batch`` (see ``rlm_runtime/helpers.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import Any

from engine.errors import ConfigError

#: The post-trained checkpoints this profile targets (Hugging Face ids).
TRAINED_CHECKPOINTS: tuple[str, ...] = ("mit-oasys/rlm-qwen3-8b-v0.1",)
#: The distribution that holds the prompts, and the versions this adapter was written against.
PACKAGE = "rlms"
TESTED_VERSIONS = ("0.1.3",)


def _missing() -> ConfigError:
    return ConfigError(
        "the rlm-trained profile takes its prompt from the official `rlms` package, which is "
        "not installed; install it with: pip install 'rlm-engine[trained]' (or pip install "
        "rlms), or choose another profile with --profile"
    )


def load_package() -> tuple[ModuleType, ModuleType, ModuleType]:
    """Import the package's prompt, parsing and types modules; a clear error when missing."""
    try:
        from rlm.core import types
        from rlm.utils import parsing, prompts
    except ImportError as exc:
        raise _missing() from exc
    for needed in ("build_rlm_system_prompt", "build_user_prompt", "RLM_SYSTEM_PROMPT"):
        if not hasattr(prompts, needed):
            raise ConfigError(
                f"the installed rlms {package_version()} has no rlm.utils.prompts.{needed}; "
                f"install a version this engine supports: pip install 'rlms=={TESTED_VERSIONS[-1]}'"
            )
    return prompts, parsing, types


def package_version() -> str | None:
    """The installed ``rlms`` version, or None."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class ContextShape:
    """What the package's context metadata needs: the Python type and the item lengths."""

    type_name: str  # "str", "list", "dict", ...
    total_chars: int
    items: int | None = None


def opening_messages(
    query: str,
    context: ContextShape,
    *,
    max_iterations: int,
    tools: dict[str, str] | None = None,
) -> tuple[str, str]:
    """(system prompt, first user message) exactly as the package builds them.

    The package sends the context metadata and the first "Turn 1/N" prompt as two user
    messages; they are joined here with a blank line, so the loop keeps one user message per
    turn. ``tools`` (name -> description) is rendered by the package as its custom tools.
    """
    prompts, _, types = load_package()
    meta = types.QueryMetadata.__new__(types.QueryMetadata)
    meta.context_type = context.type_name
    meta.context_total_length = context.total_chars
    count = context.items or 1
    meta.context_lengths = [context.total_chars // count] * count
    custom = {
        name: {"tool": _placeholder, "description": text} for name, text in (tools or {}).items()
    }
    system, metadata_message = prompts.build_rlm_system_prompt(
        prompts.RLM_SYSTEM_PROMPT, meta, custom_tools=custom or None, root_prompt=query
    )
    first = prompts.build_user_prompt(query, 0, max_iterations=max_iterations)
    return str(system["content"]), f"{metadata_message['content']}\n\n{first['content']}"


def turn_message(iteration: int, *, max_iterations: int) -> str:
    """The package's per-turn prompt for 0-based ``iteration`` (``Turn 2/N:`` for 1)."""
    prompts, _, _ = load_package()
    return str(prompts.build_user_prompt(None, iteration, max_iterations=max_iterations)["content"])


def outputs_message(reply: str, cells: list[tuple[str, str]], max_chars: int = 20_000) -> str:
    """The package's "REPL output:" message for a reply's cells, given as (code, output)."""
    _, parsing, types = load_package()
    blocks = [types.CodeBlock(code, types.REPLResult(out, "", {})) for code, out in cells]
    iteration = types.RLMIteration(prompt="", response=reply, code_blocks=blocks)
    messages: list[dict[str, Any]] = parsing.format_iteration(iteration, max_chars)
    return str(messages[-1]["content"]) if len(messages) > 1 else ""


def _placeholder(*_args: Any, **_kwargs: Any) -> None:
    """Stands for a kernel helper in the package's tool list (only its name is rendered)."""
