"""What the engine knows about one tool: its name, parameters and description.

A :class:`ToolSpec` is built on the host (from a Python function's signature or an MCP tool's
input schema) and drives three things: the stub function generated in the kernel (same name
and parameters), the tool list in the root model's system prompt, and the JSON schema a
sub-model sees for function calling.
"""

from __future__ import annotations

import builtins
import keyword
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.errors import ConfigError

ParamKind = Literal[
    "POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD", "VAR_POSITIONAL", "KEYWORD_ONLY", "VAR_KEYWORD"
]

# The kernel contract (docs/architecture.md) plus names the prompts promise or that code
# cannot do without; a tool with one of these names would silently replace it.
CONTRACT_NAMES: frozenset[str] = frozenset(
    {
        "context",
        "answer",
        "llm_query",
        "llm_batch",
        "rlm_query",
        "FINAL",
        "FINAL_VAR",
        "SHOW_VARS",
        "search",
        "llm_map",
        "pairs_of",
        "in_date_range",
        "rlm_runtime",
        "get_ipython",
        "exit",
        "quit",
        "In",
        "Out",
    }
)
RESERVED_NAMES: frozenset[str] = CONTRACT_NAMES | frozenset(dir(builtins))

# JSON schema type -> the Python annotation shown in signatures.
_JSON_TO_PY = {
    "string": "str",
    "integer": "int",
    "number": "float",
    "boolean": "bool",
    "array": "list",
    "object": "dict",
    "null": "None",
}
_PY_TO_JSON = {v: k for k, v in _JSON_TO_PY.items()}
DESCRIPTION_CHARS = 1_000


@dataclass(frozen=True)
class ToolParam:
    """One parameter; ``default`` is the repr of its default (None: required)."""

    name: str
    kind: ParamKind = "POSITIONAL_OR_KEYWORD"
    default: str | None = None
    annotation: str | None = None
    description: str | None = None

    def render(self) -> str:
        prefix = {"VAR_POSITIONAL": "*", "VAR_KEYWORD": "**"}.get(self.kind, "")
        text = prefix + self.name
        if self.annotation:
            text += f": {self.annotation}"
        if self.default is not None:
            text += f" = {self.default}" if self.annotation else f"={self.default}"
        return text


@dataclass(frozen=True)
class ToolSpec:
    """A tool as the kernel, the prompts and the sub-models see it.

    ``call_name`` is the name the tool has where it lives (a Python attribute or an MCP tool
    name, which may not be a Python identifier); ``name`` is what the kernel calls it.
    ``input_schema`` is the JSON schema of its keyword arguments (for function calling).
    """

    name: str
    description: str
    params: tuple[ToolParam, ...]
    origin: str
    call_name: str = ""
    returns: str | None = None
    input_schema: dict[str, Any] = field(default_factory=dict)

    def signature(self) -> str:
        """``name(a: int, b: str = 'x') -> dict``, with ``*`` before keyword-only parameters."""
        parts: list[str] = []
        star = False
        for index, param in enumerate(self.params):
            if param.kind == "KEYWORD_ONLY" and not star:
                parts.append("*")
                star = True
            if param.kind == "VAR_POSITIONAL":
                star = True
            parts.append(param.render())
            nxt = self.params[index + 1] if index + 1 < len(self.params) else None
            if param.kind == "POSITIONAL_ONLY" and (nxt is None or nxt.kind != "POSITIONAL_ONLY"):
                parts.append("/")
        text = f"{self.name}({', '.join(parts)})"
        return f"{text} -> {self.returns}" if self.returns else text

    def kernel_json(self) -> dict[str, Any]:
        """What the kernel needs to build the stub (no host details)."""
        return {
            "name": self.name,
            "doc": f"{self.signature()}\n\n{self.description}".strip(),
            "params": [{"name": p.name, "kind": p.kind, "default": p.default} for p in self.params],
        }

    def function_schema(self) -> dict[str, Any]:
        """The OpenAI/litellm ``tools`` entry for function calling."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description[:DESCRIPTION_CHARS] or self.signature(),
                "parameters": self.input_schema or {"type": "object", "properties": {}},
            },
        }


def python_annotation(schema: dict[str, Any]) -> str | None:
    """The Python type name of a JSON schema (``str``, ``list``...), or None if unknown."""
    kind = schema.get("type")
    if isinstance(kind, str):
        return _JSON_TO_PY.get(kind)
    if isinstance(kind, list):
        names = [_JSON_TO_PY[k] for k in kind if k in _JSON_TO_PY]
        return " | ".join(names) or None
    return None


def json_type(annotation: str | None) -> str | None:
    """The JSON schema type of a simple Python annotation (``int`` -> ``integer``)."""
    if annotation is None:
        return None
    return _PY_TO_JSON.get(annotation.removeprefix("builtins."))


def python_name(name: str) -> str:
    """An MCP tool name as a Python identifier (``get-weather`` -> ``get_weather``)."""
    cleaned = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
    if not cleaned or cleaned[0].isdigit():
        cleaned = f"tool_{cleaned}"
    return cleaned


def check_names(specs: list[ToolSpec]) -> None:
    """Refuse tool names that are not identifiers, clash with the kernel, or repeat."""
    seen: dict[str, str] = {}
    for spec in specs:
        name = spec.name
        if not name.isidentifier() or keyword.iskeyword(name):
            raise ConfigError(
                f"tool {spec.origin}: {name!r} is not a valid Python name; "
                'rename it (TOML: name = "...")'
            )
        if name in RESERVED_NAMES or name.startswith("_"):
            raise ConfigError(
                f"tool {spec.origin}: the name {name!r} clashes with the kernel contract or a "
                "Python builtin (context, answer, llm_query, llm_batch, rlm_query, FINAL, "
                "FINAL_VAR, SHOW_VARS, print, ...); give the tool another name "
                '(TOML: [[tools]] name = "...")'
            )
        if name in seen:
            raise ConfigError(
                f"two tools are called {name!r} ({seen[name]} and {spec.origin}); "
                'rename one of them (TOML: name = "...")'
            )
        seen[name] = spec.origin
