"""Host tools as kernel functions: one generated stub per tool, calling the bridge.

The orchestrator passes the tool list in ``RLM_TOOLS`` (JSON: name, doc, parameters). Each
stub has the tool's own name and signature (``help(lookup)`` and ``inspect.signature`` show
it), checks the call against it, posts ``{"name", "args", "kwargs"}`` to ``/v1/tool`` and
returns the tool's JSON result as Python values. A tool that fails raises here: the same
builtin exception type when the host's was one (``KeyError``, ``ValueError``...), else
``ToolError``, with the tool's message. Standard library only.
"""

from __future__ import annotations

import builtins
import inspect
import json
import os
from collections.abc import Callable
from typing import Any

from rlm_runtime import bridge_client

__all__ = ["ToolError", "make_tools"]


class ToolError(RuntimeError):
    """A host tool failed; the message is the tool's."""


class _Default:
    """A parameter default as the host wrote it; only shown, never sent."""

    def __init__(self, text: str) -> None:
        self._text = text

    def __repr__(self) -> str:
        return self._text


def make_tools() -> dict[str, Callable[..., Any]]:
    """The stubs of the tools listed in ``RLM_TOOLS`` (none when it is unset)."""
    raw = os.environ.get("RLM_TOOLS", "")
    if not raw:
        return {}
    return {spec["name"]: _stub(spec) for spec in json.loads(raw)}


def _stub(spec: dict[str, Any]) -> Callable[..., Any]:
    name: str = spec["name"]
    params = []
    for p in spec["params"]:
        default = inspect.Parameter.empty if p["default"] is None else _Default(p["default"])
        params.append(
            inspect.Parameter(p["name"], getattr(inspect.Parameter, p["kind"]), default=default)
        )
    signature = inspect.Signature(params)

    def tool(*args: Any, **kwargs: Any) -> Any:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{name}{signature}: {exc}") from None
        for label, value in [
            *((f"argument {i + 1}", a) for i, a in enumerate(args)),
            *((f"argument {k!r}", v) for k, v in kwargs.items()),
        ]:
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                raise TypeError(
                    f"{name}: {label} (of type {type(value).__name__}) cannot be sent to the "
                    "host; pass str, numbers, bools, None, lists or dicts"
                ) from None
        try:
            reply = bridge_client._call(
                "/v1/tool", {"name": name, "args": list(args), "kwargs": kwargs}
            )
        except bridge_client.BridgeCallError as exc:
            if getattr(exc, "kind", None) != "tool_error":
                raise
            raise _tool_exception(
                getattr(exc, "detail", str(exc)), getattr(exc, "exception", None)
            ) from None
        return reply.get("result")

    tool.__name__ = tool.__qualname__ = name
    tool.__doc__ = spec.get("doc") or None
    tool.__signature__ = signature  # type: ignore[attr-defined]
    return tool


def _tool_exception(message: str, exception: str | None) -> Exception:
    kind = getattr(builtins, exception or "", None)
    if isinstance(kind, type) and issubclass(kind, Exception) and not issubclass(kind, Warning):
        try:
            return kind(message)
        except Exception:  # an exception type whose constructor needs more arguments
            pass
    return ToolError(message)
