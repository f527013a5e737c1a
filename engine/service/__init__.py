"""The HTTP service (``rlm serve``): jobs API, OpenAI-compatible chat, trajectory viewer.

Modules: ``store`` (the job store interface; ``store_sqlite``, ``store_pg`` its backends;
``replicas``: several services on one PostgreSQL), ``jobs`` (runner with admission control),
``requests`` (validation), ``openai_compat`` (chat completions), ``files`` (uploads),
``auth`` (API keys), ``metrics`` (Prometheus), ``openapi`` (the API document), ``app`` (the
starlette app), ``viewer`` (static HTML/JS of the trajectory viewer, also used by ``rlm view``).
"""

from engine.service.app import create_app
from engine.service.auth import ApiKeys
from engine.service.jobs import JobService, ServiceSettings
from engine.service.store import JobStore, open_store

__all__ = ["ApiKeys", "JobService", "JobStore", "ServiceSettings", "create_app", "open_store"]
