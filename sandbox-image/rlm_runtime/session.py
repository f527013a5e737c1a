"""Set up the kernel namespace for one task and report its state after every cell."""

from __future__ import annotations

import errno
import json
import sys
from typing import Any

from rlm_runtime import context_loader, message_cap
from rlm_runtime import helpers as kernel_helpers
from rlm_runtime import namespace as namespace_contract
from rlm_runtime.output_cap import StreamCap

_PROTECTED_HELPERS = ("llm_query", "llm_batch", "rlm_query", "FINAL", "FINAL_VAR", "SHOW_VARS")


class _State:
    """Everything the runtime keeps about the task, out of the user's namespace."""

    def __init__(self) -> None:
        self.shell: Any = None
        self.context: Any = None
        self.context_info: dict[str, Any] = {}
        self.helpers: dict[str, Any] = {}
        self.caps: list[StreamCap] = []
        self.context_restored = False
        self.output_dropped = 0
        self.output_limit = 1_000_000
        self.hidden: set[str] = set()


_state = _State()


class _JSON:
    """An object whose repr is JSON, so ``user_expressions`` hand the host plain JSON.

    Never clipped by ``message_cap`` (cut JSON is unreadable); whoever builds one keeps it
    small enough.
    """

    rlm_exact = True

    def __init__(self, payload: dict[str, Any]) -> None:
        self._text = json.dumps(payload, ensure_ascii=False, default=str)

    def __repr__(self) -> str:
        return self._text


def setup(context_path: str | None, output_limit: int = 1_000_000) -> _JSON:
    """Load the context and install ``context``, ``answer`` and the helper functions.

    Returns the context's description (kind, type, length, items, preview, load time).
    """
    from IPython import get_ipython

    shell = get_ipython()
    _state.shell = shell
    _state.output_limit = output_limit
    _state.context, _state.context_info = context_loader.load(context_path)
    _state.helpers = _make_helpers(shell)
    namespace = shell.user_ns
    namespace["context"] = _state.context
    namespace["answer"] = {"content": "", "ready": False}
    namespace.update(_state.helpers)
    _state.hidden = set(namespace) - {"context", "answer", *_state.helpers}
    _state.caps = [StreamCap(sys.stdout, output_limit), StreamCap(sys.stderr, output_limit)]
    message_cap.install(shell, output_limit)
    shell.events.register("pre_run_cell", _pre_run_cell)
    shell.events.register("post_run_cell", _post_run_cell)
    return _JSON(_state.context_info)


def state() -> _JSON:
    """The answer and housekeeping flags, read by the host after each cell."""
    answer = _state.shell.user_ns.get("answer") if _state.shell else None
    content, ready = "", False
    if isinstance(answer, dict):
        content = answer.get("content", "")
        ready = answer.get("ready", False) is True
    # None is no answer (not the text "None"); other values are read as their text.
    if content is None:
        content = ""
    elif not isinstance(content, str):
        content = str(content)
    # The reply carrying this must fit the orchestrator's frame limit (8x the output limit),
    # even when every character is escaped twice (about 7 bytes each).
    content = message_cap.clip(content, _state.output_limit)
    return _JSON(
        {
            "answer_content": content,
            "answer_ready": ready,
            "context_restored": _state.context_restored,
            "output_dropped": _state.output_dropped,
        }
    )


def _pre_run_cell(_info: Any) -> None:
    _state.context_restored = False
    _state.output_dropped = 0
    for cap in _state.caps:
        cap.reset()


def _post_run_cell(result: Any) -> None:
    message_cap.clip_error(result, _state.output_limit)
    namespace = _state.shell.user_ns
    notes: list[str] = []
    if _storage_error(result.error_in_exec):
        notes.append(_STORAGE_NOTE)
    restored, kept = namespace_contract.restore(namespace, _state.context, _state.helpers)
    _state.context_restored = _state.context_restored or restored
    notes.extend(kept)
    for note in notes:
        print(f"[rlm] {note}")
    _state.output_dropped = sum(cap.finish() for cap in _state.caps)


def _make_helpers(shell: Any) -> dict[str, Any]:
    helpers = namespace_contract.answer_helpers(
        lambda: shell.user_ns, lambda: _state.hidden | set(_state.helpers)
    )
    helpers.update(kernel_helpers.make_helpers(lambda: _state.context))
    try:
        from rlm_runtime import bridge_client, tools
    except ImportError:  # pragma: no cover - the image always ships it
        return helpers
    for name in ("llm_query", "llm_batch", "rlm_query"):
        helpers[name] = getattr(bridge_client, name)
    helpers.update(tools.make_tools())  # host tools, each under its own name
    return helpers


_STORAGE = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)


def _storage_error(err: object) -> bool:
    """A write refused by a full tmpfs or a read-only mount (gVisor says EACCES for those)."""
    if not isinstance(err, OSError):
        return False
    if err.errno in _STORAGE:
        return True
    name = err.filename if isinstance(err.filename, str) else ""
    return err.errno == errno.EACCES and name.startswith(("/rlm/", "/opt/", "/usr/", "/etc/"))


_STORAGE_NOTE = (
    "the sandbox can write only to /tmp, /home/sandbox and /dev/shm, small in-memory file "
    "systems with a size and file-count cap; everything else is read-only. Keep large data in "
    "variables, and delete files you no longer need."
)
