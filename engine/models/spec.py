"""What model to call and how: :class:`ModelSpec` and helpers for provider model strings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# litellm provider prefixes, as in ``openai/gpt-4o``. litellm knows more; these cover the
# common ones without importing litellm (slow) just to split a model string.
_FALLBACK_PROVIDERS = frozenset(
    {
        "openai",
        "text-completion-openai",
        "azure",
        "azure_ai",
        "anthropic",
        "bedrock",
        "vertex_ai",
        "gemini",
        "mistral",
        "groq",
        "together_ai",
        "fireworks_ai",
        "deepseek",
        "openrouter",
        "hosted_vllm",
        "vllm",
        "ollama",
        "ollama_chat",
        "lm_studio",
        "llamafile",
        "huggingface",
        "cohere",
        "xai",
        "perplexity",
        "deepinfra",
        "cerebras",
        "sambanova",
        "nvidia_nim",
        "custom_openai",
        "litellm_proxy",
    }
)


@dataclass(frozen=True)
class ModelSpec:
    """A model as litellm addresses it, plus per-model call settings.

    ``model`` is any litellm model string (``openai/gpt-4o-mini``, ``anthropic/claude-...``,
    ``hosted_vllm/...``, ``ollama/...``); with ``api_base`` set, ``openai/<name>`` talks to any
    OpenAI-compatible server. ``seed`` asks the provider for reproducible sampling (with
    ``temperature`` 0 or a seed, the model-call cache treats a call as deterministic).
    ``concurrency`` caps this model's in-flight calls;
    ``context_window`` (tokens) is informational for prompt budgeting.
    ``input_cost_per_token`` / ``output_cost_per_token`` (USD) are the operator's price; unset,
    litellm's price table is used (see :mod:`engine.models.pricing`).
    """

    model: str
    api_base: str | None = None
    api_key: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    concurrency: int | None = None
    context_window: int | None = None
    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None

    def __post_init__(self) -> None:
        if not self.model or not self.model.strip():
            raise ValueError("ModelSpec.model must be a non-empty litellm model string")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"ModelSpec.concurrency must be >= 1, got {self.concurrency}")
        for price in (self.input_cost_per_token, self.output_cost_per_token):
            if price is not None and price < 0:
                raise ValueError(f"ModelSpec prices must be 0 or more, got {price}")

    @property
    def provider(self) -> str | None:
        """The provider prefix of ``model`` (``openai`` for ``openai/gpt-4o``), if any."""
        head, sep, _ = self.model.partition("/")
        return head if sep and head in _provider_names() else None

    @property
    def wire_model(self) -> str:
        """The model name the provider's server receives (the string without its provider)."""
        return wire_model(self.model)


def _provider_names() -> frozenset[str]:
    try:
        import sys

        litellm = sys.modules.get("litellm")
        if litellm is not None:
            return _FALLBACK_PROVIDERS | {
                str(getattr(p, "value", p)) for p in litellm.provider_list
            }
    except Exception:  # a litellm without provider_list must not break model parsing
        pass
    return _FALLBACK_PROVIDERS


def wire_model(model: str) -> str:
    """Strip a litellm provider prefix: ``openai/root`` -> ``root``, ``gpt-4o`` -> ``gpt-4o``."""
    head, sep, rest = model.partition("/")
    return rest if sep and head in _provider_names() else model


def replay_spec(spec: ModelSpec, base_url: str) -> ModelSpec:
    """Point ``spec`` at a replay server: same wire model name, OpenAI protocol, fake key.

    ``anthropic/claude-x`` becomes ``openai/claude-x`` at ``base_url``, so the replay server sees
    the model name a recording of the real provider saw. A model with a price (the operator's,
    or litellm's for the replayed name) keeps it, so replays show what the calls would cost;
    any other is priced at 0, which is true of a replay (nothing is billed), so a cost cap
    still applies to it.
    """
    from engine.models.pricing import price_of

    replayed = dataclasses.replace(
        spec, model=f"openai/{wire_model(spec.model)}", api_base=base_url, api_key="replay"
    )
    if price_of(replayed) is None:
        replayed = dataclasses.replace(
            replayed, input_cost_per_token=0.0, output_cost_per_token=0.0
        )
    return replayed
