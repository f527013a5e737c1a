"""Sandboxes: one hardened Jupyter kernel per task inside a Docker container.

The public API is :class:`Sandbox` (an async context manager), its :class:`SandboxConfig`, and
the :class:`ExecResult` that :meth:`Sandbox.execute` returns.
"""

from engine.sandbox.config import DEFAULT_IMAGE, SandboxConfig, format_size, parse_size
from engine.sandbox.reaper import reap_orphans
from engine.sandbox.results import CellError, ContextInfo, ExecResult, KernelState
from engine.sandbox.sandbox import Sandbox

__all__ = [
    "DEFAULT_IMAGE",
    "CellError",
    "ContextInfo",
    "ExecResult",
    "KernelState",
    "Sandbox",
    "SandboxConfig",
    "format_size",
    "parse_size",
    "reap_orphans",
]
