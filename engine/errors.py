"""One exception hierarchy for the whole engine.

Every error the engine raises on purpose derives from :class:`RLMError`, and its message says
what went wrong *and what to do about it*, so the CLI can print ``str(error)`` and exit without
a traceback.
"""

from __future__ import annotations


class RLMError(Exception):
    """Base class of every error raised by rlm-engine."""


class ConfigError(RLMError):
    """A setting, flag or input file is invalid."""


class ContextError(RLMError):
    """The task's context cannot be used (missing, unreadable, unsupported, too large)."""


# --- sandbox -------------------------------------------------------------------------------


class SandboxError(RLMError):
    """The sandbox could not be created or used."""


class DockerUnavailableError(SandboxError):
    """The Docker daemon cannot be reached."""


class ImageError(SandboxError):
    """The sandbox image is missing or could not be built."""


class KernelStartError(SandboxError):
    """The kernel inside the sandbox did not start."""


class KernelDiedError(SandboxError):
    """The kernel (or its container) died; ``reason`` says why (e.g. out of memory)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SandboxClosedError(SandboxError):
    """The sandbox was used after it was closed."""


# --- models and bridge ---------------------------------------------------------------------


class ModelError(RLMError):
    """A model call failed after its retries."""


class ModelUnavailableError(ModelError):
    """The model server cannot be reached or the model is not known to it."""


class ReplayMismatchError(ModelError):
    """Replay mode met a request the cassette has no recorded response for."""


class BridgeError(RLMError):
    """The sandbox-to-orchestrator bridge rejected or failed a request."""


class SubCallRefusedError(RLMError):
    """Sandbox code asked for something it may not have: a model the operator did not
    configure (``kind="model_not_allowed"``) or tools the task does not offer
    (``kind="invalid_request"``). The bridge answers 403 or 422 with the message."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class BudgetExceededError(RLMError):
    """A task budget (tokens, cost, sub-calls, time, depth) is used up."""

    def __init__(self, budget: str, message: str) -> None:
        super().__init__(message)
        self.budget = budget


# --- local model ---------------------------------------------------------------------------


class LocalModelError(RLMError):
    """The embedded local model could not be fetched, verified or served."""


# --- evaluation and service ----------------------------------------------------------------


class EvalError(RLMError):
    """A benchmark could not be generated, loaded, run or scored."""


class DataMissingError(EvalError):
    """A data file a benchmark needs is absent; the message names it."""


class ServiceError(RLMError):
    """The HTTP service could not start or serve."""


# --- bridge (appended by the bridge engineer) ----------------------------------------------


class BridgeRequestError(BridgeError):
    """The bridge refused a request; ``status`` is the HTTP status, ``kind`` the error type."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


# --- root loop -----------------------------------------------------------------------------


class ChildRunError(RLMError):
    """A child RLM started by ``rlm_query`` failed or stopped without an answer."""


# --- tools ---------------------------------------------------------------------------------


class ToolError(RLMError):
    """A host-side tool failed; the message (and ``exception``, the tool's exception type)
    reach the sandbox code that called it."""

    def __init__(self, message: str, exception: str | None = None) -> None:
        super().__init__(message)
        self.exception = exception


class ToolTimeoutError(ToolError):
    """A host-side tool did not finish within its timeout."""
