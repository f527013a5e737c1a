"""The root loop of a Recursive Language Model and the :class:`Engine` that runs it.

Modules: ``parser`` (code blocks, FINAL), ``prompts`` (system prompts, profiles), ``truncate``
(cell output), ``budget`` (shared limits), ``trajectory`` (JSONL events), ``result``
(:class:`RunResult`), ``loop`` (one run's turns), ``engine`` (:class:`Engine`, ``run``).

Names are imported lazily, so that a process that needs one small module (the answer
checker, ``python -m engine.rlm.answer_check``) does not import the whole engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.lazy import lazy_getattr

if TYPE_CHECKING:
    from engine.rlm.engine import Engine, TaskBridge, new_task_id
    from engine.rlm.result import STOP_REASONS, RunResult
    from engine.rlm.sync import run

_LAZY = {
    "Engine": "engine.rlm.engine",
    "TaskBridge": "engine.rlm.engine",
    "new_task_id": "engine.rlm.engine",
    "STOP_REASONS": "engine.rlm.result",
    "RunResult": "engine.rlm.result",
    "run": "engine.rlm.sync",
}

__all__ = ["STOP_REASONS", "Engine", "RunResult", "TaskBridge", "new_task_id", "run"]


__getattr__ = lazy_getattr(__name__, _LAZY)
