"""What a model call costs: the operator's price or litellm's, and a worst case before sending.

A cost cap is only as good as its prices, so a model without one is never counted as free
under a cap: :func:`call_estimate` raises a :class:`ConfigError` that says how to price it.

The worst case of a call, reserved against the cap before the call is sent, is an upper
bound, not a guess:

- prompt tokens: at most one token per UTF-8 byte of the messages (every byte-level BPE or
  byte-fallback tokenizer emits tokens of at least one byte), plus a per-message allowance for
  the chat template's role markers;
- completion tokens: at most ``max_tokens``, which is sent with every call under a cap
  (:data:`DEFAULT_OUTPUT_RESERVE` unless the model's ``max_tokens`` is set);
- prices: the highest of the model's context-length tiers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from engine.errors import ConfigError
from engine.models.spec import ModelSpec

# Completion tokens reserved (and sent as max_tokens) per call under a cost cap when the model
# sets none: larger than any reply the RLM loop needs, small enough not to starve the cap.
DEFAULT_OUTPUT_RESERVE = 8192
_TEMPLATE_TOKENS_PER_MESSAGE = 8
_TEMPLATE_TOKENS_PER_CALL = 16


@dataclass(frozen=True)
class Price:
    """US dollars per prompt and per completion token, and where the price came from."""

    input_per_token: float
    output_per_token: float
    source: str  # "config" (the operator's) or "litellm" (its price table)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens * self.input_per_token + completion_tokens * self.output_per_token


@dataclass(frozen=True)
class CallEstimate:
    """The worst case of one call: its cost bound and the ``max_tokens`` that makes it hold."""

    cost_usd: float
    max_tokens: int


def price_of(spec: ModelSpec) -> Price | None:
    """The model's price: the operator's (``ModelSpec`` cost fields), else litellm's, else None."""
    if spec.input_cost_per_token is not None or spec.output_cost_per_token is not None:
        return Price(spec.input_cost_per_token or 0.0, spec.output_cost_per_token or 0.0, "config")
    info = _model_info(spec.model)
    if info is None:
        return None
    prompt = _highest(info, "input_cost_per_token")
    completion = _highest(info, "output_cost_per_token")
    if prompt is None and completion is None:
        return None
    return Price(prompt or 0.0, completion or 0.0, "litellm")


def require_price(spec: ModelSpec) -> Price:
    """The model's price, or a :class:`ConfigError` saying how to set one."""
    price = price_of(spec)
    if price is None:
        raise ConfigError(unpriced_message(spec.model))
    return price


def unpriced_message(model: str, *, service: bool = False) -> str:
    """Why an unpriced model cannot run under a cost cap, and what to do: in ``rlm run`` (or
    from Python) drop the cap or price the model; in the service, whose jobs always run under
    one (the operator's ``max_cost``, else a safe ceiling), only the operator can price it."""
    why = f"model {model!r} has no known price, so a cost cap (max_cost) cannot be enforced for it"
    if service:
        return (
            f"{why}, and every job of this service runs under one; the service's operator "
            "prices it in the --models file ([models.NAME] with input_cost_per_million and "
            "output_cost_per_million, 0 for a self-hosted model) and restarts the service"
        )
    return (
        f"{why}; run without --max-cost, or give it a price (0 for a self-hosted model): "
        "input_cost_per_million and output_cost_per_million in rlm serve's --models file, or "
        "ModelSpec's input_cost_per_token and output_cost_per_token from Python"
    )


def output_reserve(spec: ModelSpec) -> int:
    """Completion tokens to reserve (and send as ``max_tokens``) for one call under a cap."""
    if spec.max_tokens is not None:
        return spec.max_tokens
    info = _model_info(spec.model) or {}
    limit = info.get("max_output_tokens")
    if isinstance(limit, int) and limit > 0:
        return min(limit, DEFAULT_OUTPUT_RESERVE)
    return DEFAULT_OUTPUT_RESERVE


def prompt_token_bound(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
) -> int:
    """An upper bound on the prompt tokens of ``messages`` (and tool schemas, which the
    provider renders into the prompt) for any byte-level tokenizer."""
    total = _TEMPLATE_TOKENS_PER_CALL
    for message in messages:
        total += len(json.dumps(message, ensure_ascii=False).encode("utf-8"))
        total += _TEMPLATE_TOKENS_PER_MESSAGE
    if tools:
        total += len(json.dumps(tools, ensure_ascii=False).encode("utf-8"))
    return total


def call_estimate(
    spec: ModelSpec, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
) -> CallEstimate:
    """The worst-case cost of one call; raises :class:`ConfigError` for an unpriced model."""
    price = require_price(spec)
    reserve = output_reserve(spec)
    return CallEstimate(price.cost(prompt_token_bound(messages, tools), reserve), reserve)


def _model_info(model: str) -> dict[str, Any] | None:
    from engine.models._litellm import load_litellm

    try:
        info = load_litellm().get_model_info(model)
    except Exception:  # litellm raises several types for "not mapped"
        return None
    return dict(info) if info else None


def _highest(info: dict[str, Any], key: str) -> float | None:
    """The highest of ``key`` and its context-length tiers (``key + "_above_128k_tokens"``)."""
    values = [
        float(value)
        for name, value in info.items()
        if (name == key or name.startswith(key + "_above_"))
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    ]
    return max(values) if values else None
