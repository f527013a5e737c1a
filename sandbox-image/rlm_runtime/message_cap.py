"""Keep every message the kernel sends under the orchestrator's frame limit.

The orchestrator drops (disconnects) any ZMQ frame over about eight times the output limit,
so a hostile cell cannot make it buffer a gigabyte. Honest cells must then never come close:
results and errors are clipped here, like prints are by ``output_cap``, and only the
``text/plain`` form of a displayed value is computed and sent (the orchestrator reads no
other). Code in the sandbox can undo all of this; the orchestrator's limit still holds.
"""

from __future__ import annotations

from typing import Any


def clip(text: str, limit: int) -> str:
    """Head and tail of ``text`` with a marker, at most about ``limit`` characters."""
    if len(text) <= limit:
        return text
    half = max(limit // 2, 1)
    marker = f"\n[rlm: {len(text) - 2 * half} characters cut here]\n"
    return f"{text[:half]}{marker}{text[-half:]}"


def install(shell: Any, limit: int) -> None:
    """Clip displayed values and tracebacks of ``shell`` to ``limit`` characters each."""
    shell.display_formatter.active_types = ["text/plain"]
    plain = shell.display_formatter.formatters["text/plain"]
    base = type(plain)

    class ClippedPlainText(base):  # type: ignore[misc, valid-type]
        def __call__(self, obj: Any) -> Any:
            text = super().__call__(obj)
            if getattr(obj, "rlm_exact", False) or not isinstance(text, str):
                return text  # the runtime's own JSON for the host, sized by its maker
            return clip(text, limit)

    plain.__class__ = ClippedPlainText
    show = shell._showtraceback

    def clipped_traceback(etype: Any, evalue: Any, stb: Any) -> Any:
        lines = [clip(str(line), limit) for line in stb] if isinstance(stb, list) else stb
        if isinstance(lines, list) and sum(len(line) for line in lines) > limit:
            lines = [clip("\n".join(lines), limit)]
        return show(etype, clip(_text(evalue), limit), lines)

    shell._showtraceback = clipped_traceback


def clip_error(result: Any, limit: int) -> None:
    """Clip the exception a cell raised, which the execute reply repeats as ``str(err)``."""
    for field in ("error_before_exec", "error_in_exec"):
        err = getattr(result, field, None)
        if err is None:
            continue
        text = _text(err)
        if len(text) > limit:
            # Same class name (the reply shows it), short message.
            stand_in = type(type(err).__name__, (Exception,), {})(clip(text, limit))
            setattr(result, field, stand_in)


def _text(value: Any) -> str:
    try:
        return str(value)
    except Exception as exc:  # a hostile __str__
        return f"<unprintable: {type(exc).__name__}>"
