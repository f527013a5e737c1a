"""The HTTP service (``rlm serve``): jobs API, OpenAI-compatible chat, trajectory viewer.

Modules: ``store`` (the job store interface; ``store_sqlite``, ``store_pg`` its backends;
``replicas``: several services on one PostgreSQL), ``jobs`` (runner with admission control),
``requests`` (validation), ``openai_compat`` (chat completions), ``files`` (uploads),
``auth`` (API keys), ``metrics`` (Prometheus), ``openapi`` (the API document), ``app`` (the
starlette app), ``command`` (``rlm serve`` and ``python -m engine.service``), ``viewer``
(static HTML/JS of the trajectory viewer, also used by ``rlm view``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.service.app import create_app
    from engine.service.auth import ApiKeys
    from engine.service.jobs import JobService, ServiceSettings
    from engine.service.store import JobStore, open_store

# Imported on first use, so that `rlm` (whose `serve` command lives in
# engine.service.command) does not load starlette, the stores and the engine at start-up.
_LAZY = {
    "create_app": "engine.service.app",
    "ApiKeys": "engine.service.auth",
    "JobService": "engine.service.jobs",
    "ServiceSettings": "engine.service.jobs",
    "JobStore": "engine.service.store",
    "open_store": "engine.service.store",
}

__all__ = ["ApiKeys", "JobService", "JobStore", "ServiceSettings", "create_app", "open_store"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.service' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
