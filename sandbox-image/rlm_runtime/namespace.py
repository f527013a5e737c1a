"""The kernel namespace's contract, kept after every cell: ``context``, the helpers, ``answer``.

Pure and stdlib-only: the runtime's post-run hook (:mod:`rlm_runtime.session`) applies it in
the sandbox, and the orchestrator's in-process fake (``engine.sandbox.fake``) loads this same
file, so both say the same notes and keep the same state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

_MISSING = object()

CONTEXT_RESTORED = (
    "`context` was reassigned or deleted; it has been restored to the original "
    "context. Store your own data in other variables."
)


def restore(
    namespace: dict[str, Any], context: Any, helpers: Mapping[str, Any]
) -> tuple[bool, list[str]]:
    """Put back ``context`` and the helpers a cell replaced, and normalise ``answer``.

    Returns whether ``context`` had to be restored and the notes to show the model.
    """
    notes: list[str] = []
    restored = namespace.get("context", _MISSING) is not context
    if restored:
        namespace["context"] = context
        notes.append(CONTEXT_RESTORED)
    for name, helper in helpers.items():
        if namespace.get(name, _MISSING) is not helper:
            namespace[name] = helper
            notes.append(f"`{name}` was overwritten; it has been restored.")
    notes.extend(normalise_answer(namespace))
    return restored, notes


def normalise_answer(namespace: dict[str, Any]) -> list[str]:
    """Small models write ``answer = "..."``; keep what they meant and explain the contract."""
    answer = namespace.get("answer", _MISSING)
    if isinstance(answer, dict) and "content" in answer and "ready" in answer:
        return []
    if answer is _MISSING or answer is None:
        namespace["answer"] = {"content": "", "ready": False}
        return ["`answer` was deleted; it has been reset to {'content': '', 'ready': False}."]
    if isinstance(answer, dict):
        fixed = {"content": str(answer.get("content", "")), "ready": answer.get("ready") is True}
        namespace["answer"] = fixed
        return ["`answer` must have the keys 'content' and 'ready'; missing keys were added."]
    namespace["answer"] = {"content": str(answer), "ready": False}
    return [
        "`answer` must stay a dict. Your value was stored in answer['content']; "
        "set answer['ready'] = True when it is final."
    ]


def answer_helpers(
    namespace: Callable[[], dict[str, Any]], hidden: Callable[[], set[str]]
) -> dict[str, Callable[..., Any]]:
    """``FINAL``, ``FINAL_VAR`` and ``SHOW_VARS`` over the namespace ``namespace()`` returns.

    ``hidden()`` names what ``SHOW_VARS`` leaves out besides ``context``, ``answer`` and
    names starting with ``_`` (the helpers, the shell's own names).
    """

    def FINAL(value: Any) -> None:
        """Set the final answer to ``value`` and finish."""
        namespace()["answer"] = {"content": str(value), "ready": True}

    def FINAL_VAR(name: str) -> None:
        """Finish with the value of the variable called ``name`` as the answer."""
        if not isinstance(name, str):
            raise TypeError(
                "FINAL_VAR takes the variable's name as a string, e.g. FINAL_VAR('result')"
            )
        ns = namespace()
        if name not in ns:
            raise NameError(f"FINAL_VAR: no variable named {name!r}; SHOW_VARS() lists them")
        FINAL(ns[name])

    def SHOW_VARS() -> dict[str, str]:
        """List the user's variables with their types."""
        skip = hidden() | {"context", "answer"}
        return {
            name: type(value).__name__
            for name, value in namespace().items()
            if not name.startswith("_") and name not in skip
        }

    return {"FINAL": FINAL, "FINAL_VAR": FINAL_VAR, "SHOW_VARS": SHOW_VARS}
