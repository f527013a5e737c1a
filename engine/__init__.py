"""rlm-engine: run Recursive Language Model jobs in locked-down sandboxes.

::

    from engine import Engine, EngineConfig, Limits, run
    from engine.models import ModelSpec

    result = run("How many ERROR lines?", Path("app.log"),
                 EngineConfig(model=ModelSpec("openai/gpt-4o-mini")))
    print(result.answer, result.stop_reason)

Names are imported lazily so that ``import engine.errors`` (or the CLI) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.errors import (
    BridgeError,
    BudgetExceededError,
    ChildRunError,
    ConfigError,
    ContextError,
    DockerUnavailableError,
    ImageError,
    KernelDiedError,
    KernelStartError,
    LocalModelError,
    ModelError,
    ModelUnavailableError,
    ReplayMismatchError,
    RLMError,
    SandboxClosedError,
    SandboxError,
)
from engine.lazy import lazy_getattr

if TYPE_CHECKING:
    from engine.config import EngineConfig, Limits
    from engine.rlm import Engine, RunResult, run

_LAZY = {
    "Engine": "engine.rlm",
    "RunResult": "engine.rlm",
    "run": "engine.rlm",
    "EngineConfig": "engine.config",
    "Limits": "engine.config",
}

__all__ = [
    "BridgeError",
    "BudgetExceededError",
    "ChildRunError",
    "ConfigError",
    "ContextError",
    "DockerUnavailableError",
    "Engine",
    "EngineConfig",
    "ImageError",
    "KernelDiedError",
    "KernelStartError",
    "Limits",
    "LocalModelError",
    "ModelError",
    "ModelUnavailableError",
    "RLMError",
    "ReplayMismatchError",
    "RunResult",
    "SandboxClosedError",
    "SandboxError",
    "run",
]


__getattr__ = lazy_getattr(__name__, _LAZY)
