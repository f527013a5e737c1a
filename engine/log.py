"""Logging set-up: structlog, JSON for services and pipes, pretty on a terminal."""

from __future__ import annotations

import logging
import os
import sys
from typing import Literal

import structlog

_configured = False


def configure_logging(
    level: str | None = None,
    fmt: Literal["auto", "json", "pretty"] | None = None,
) -> None:
    """Configure structlog once for the process.

    ``level`` defaults to ``$RLM_LOG_LEVEL`` or ``warning``; ``fmt`` to ``$RLM_LOG_FORMAT`` or
    ``auto`` (pretty when stderr is a terminal, JSON otherwise). Logs go to stderr so that
    stdout stays clean for answers and JSON results.
    """
    global _configured
    level_name = (level or os.environ.get("RLM_LOG_LEVEL") or "warning").upper()
    numeric = logging.getLevelName(level_name)
    if not isinstance(numeric, int):
        numeric = logging.WARNING
    chosen = fmt or os.environ.get("RLM_LOG_FORMAT", "auto")
    pretty = chosen == "pretty" or (chosen == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if pretty
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Third-party libraries log through stdlib logging; keep them quiet unless asked.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
    for noisy in ("LiteLLM", "litellm", "httpx", "docker", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    _configured = True


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """Return a structlog logger bound to ``name``."""
    if not _configured:
        configure_logging()
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
