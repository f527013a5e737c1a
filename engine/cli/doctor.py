"""The checks of ``rlm doctor``: the sandbox (Docker, runtime, image, limits), then the model."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

from engine.errors import RLMError
from engine.sandbox.config import format_size
from engine.sandbox.doctor import Check, run_checks

_HOSTED = "or use a hosted model: --model / RLM_MODEL (e.g. openai/gpt-4o-mini) and its API key"


def all_checks(runtime: str | None = None) -> Iterator[Check]:
    """The sandbox checks, then whether ``rlm run`` has a model (even when Docker is down)."""
    yield from run_checks(runtime=runtime)
    from engine.config import load_config

    try:
        model = load_config().model
    except RLMError as exc:
        yield Check("config", False, str(exc), "fix the setting the message names")
        return
    yield model_check(model.model if model is not None else None)


def model_check(model: str | None) -> Check:
    """Is there a model to run with: the configured one, or the embedded local model?"""
    if model:
        return Check("model", True, f"{model} (set by RLM_MODEL or the config file)")
    from engine.local import get_entry
    from engine.local.pull import find_model

    entry = get_entry()
    if importlib.util.find_spec("xllamacpp") is None:
        return Check(
            "model",
            False,
            f"the embedded local model ({entry.name}) needs xllamacpp, which is not installed",
            f"pip install 'rlm-engine[local]' then `rlm model pull`, {_HOSTED}",
            optional=True,
        )
    path = find_model(entry)
    if path is None:
        return Check(
            "model",
            False,
            f"the embedded local model {entry.name} is not downloaded ({format_size(entry.size)})",
            f"run `rlm model pull`, {_HOSTED}",
            optional=True,
        )
    return Check("model", True, f"embedded local model {entry.name} ({path})")
