"""Choose a prompt profile from what the root model can do, not from a name this engine knows.

``--profile auto`` used to mean "``small`` for the embedded model, ``frontier`` for any other
name", so a user serving the same 1.5B model under their own alias got the frontier prompt
and a loop that failed (issue 14). :func:`choose_profile` decides from evidence instead, in
this order:

1. a per-model rule from the config file (``[model_profiles]``, glob patterns);
2. a known post-trained RLM checkpoint (``rlm-qwen3-8b``...): the ``rlm-trained`` profile;
3. the parameter count: reported by a self-hosted server (llama.cpp's ``/v1/models`` meta and
   ``/props``, Ollama's ``/api/show``), else read from the served ids, the model file's name
   or the model string (``1.5b``, ``7B``, ``8x7b``, ``135m``); below
   :data:`SMALL_MAX_PARAMS_B` billion parameters means ``small``;
4. a model litellm knows (hosted APIs such as ``gpt-4o`` or ``claude-...``): ``frontier``;
5. otherwise ``small``: when unsure, start with the guardrails of a weak model, which a
   strong model follows without harm while a weak one fails without them.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from engine.errors import ConfigError
from engine.log import get_logger
from engine.models.spec import ModelSpec, wire_model

log = get_logger(__name__)

# Models of up to about 15B parameters (Qwen2.5-Coder-1.5B measured in issue 14; 3B-14B
# models share its failure modes: copying the context preview, repeating cells, guessing)
# get the weak-model guardrails. Larger ones follow the short contract.
SMALL_MAX_PARAMS_B = 15.0
PROBE_TIMEOUT_S = 3.0

# Providers whose models run on a server the user operates, which can describe itself.
SELF_HOSTED_PROVIDERS = frozenset(
    {"hosted_vllm", "vllm", "ollama", "ollama_chat", "lm_studio", "llamafile", "custom_openai"}
)
_OLLAMA = frozenset({"ollama", "ollama_chat"})
_OLLAMA_DEFAULT_BASE = "http://localhost:11434"

# The paper's post-trained checkpoints (mit-oasys/rlm-qwen3-8b-v0.1 and later versions).
_TRAINED_RLM = re.compile(r"rlm[-_]?qwen", re.IGNORECASE)

# "1.5b", "7B", "32b-instruct", "135m", "8x7b" (a mixture: 8 experts of 7B). The number must
# not follow a digit or a dot ("qwen2.5-7b" reads 7, not 5-7) and the unit must end a word.
_PARAMS = re.compile(r"(?<![\w.])(?:(\d+)x)?(\d+(?:\.\d+)?)\s*([bm])(?![a-z])", re.IGNORECASE)
_OLLAMA_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bmk])\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ServerFacts:
    """What a self-hosted server said about the model it serves (all optional)."""

    names: tuple[str, ...] = ()  # ids, roots, aliases, model file names
    params: int | None = None  # exact parameter count
    context_window: int | None = None  # tokens per request the server accepts
    endpoints: tuple[str, ...] = ()  # which endpoints answered, for the decision's reason


@dataclass(frozen=True)
class ProfileChoice:
    """The profile a run uses and why (the reason goes into the trajectory)."""

    profile: str
    reason: str
    params_b: float | None = None
    context_window: int | None = None
    facts: ServerFacts = field(default_factory=ServerFacts)


@dataclass(frozen=True)
class ModelProfileRule:
    """``pattern`` (a glob over the model string or a name the server reports) -> profile."""

    pattern: str
    profile: str

    def matches(self, names: Iterable[str]) -> bool:
        pattern = self.pattern.lower()
        return any(fnmatch.fnmatchcase(name.lower(), pattern) for name in names)


def parse_model_profiles(
    table: Any, known: Iterable[str] | None, where: str
) -> tuple[ModelProfileRule, ...]:
    """Validate a ``[model_profiles]`` TOML table: ``"<glob>" = "<profile>"`` per line.

    ``known`` lists the profile names to accept (None: any name; the Engine checks it)::

        [model_profiles]
        "openai/qwen-local*" = "small"
        "hosted_vllm/*rlm-qwen3*" = "rlm-trained"
    """
    if not isinstance(table, Mapping):
        raise ConfigError(f'{where}: [model_profiles] must be a table of "pattern" = "profile"')
    allowed = None if known is None else sorted(set(known) - {"auto"})
    rules = []
    for pattern, profile in table.items():
        if not isinstance(profile, str) or (allowed is not None and profile not in allowed):
            names = f"use one of {', '.join(allowed)}" if allowed else "give a profile name"
            raise ConfigError(
                f"{where}: model_profiles.{pattern!s} = {profile!r} is not a profile; {names}"
            )
        rules.append(ModelProfileRule(str(pattern), profile))
    return tuple(rules)


def params_from_name(name: str) -> float | None:
    """The parameter count, in billions, written in a model name or file name, if any.

    The largest figure wins (``Qwen3-30B-A3B`` is 30B in total); ``8x7b`` counts 56B.
    """
    best: float | None = None
    for experts, number, unit in _PARAMS.findall(name):
        value = float(number) * (int(experts) if experts else 1)
        if unit.lower() == "m":
            value /= 1000
        best = value if best is None else max(best, value)
    return best


def is_self_hosted(spec: ModelSpec) -> bool:
    """Whether ``spec`` names a server the user runs (so it can be asked what it serves)."""
    provider = spec.provider
    if provider in SELF_HOSTED_PROVIDERS:
        return True
    # openai/<name> at a custom api_base is any OpenAI-compatible server (llama.cpp, vLLM,
    # LM Studio, a proxy); asking costs one short request and a proxy just answers less.
    return spec.api_base is not None and provider in (None, "openai", "text-completion-openai")


async def probe_server(spec: ModelSpec, timeout_s: float = PROBE_TIMEOUT_S) -> ServerFacts:
    """Ask the server behind ``spec`` what it serves; never raises (empty facts on failure)."""
    base = (spec.api_base or (_OLLAMA_DEFAULT_BASE if spec.provider in _OLLAMA else "")).rstrip("/")
    if not base:
        return ServerFacts()
    root = base.removesuffix("/v1")
    headers = {"Authorization": f"Bearer {spec.api_key}"} if spec.api_key else {}
    facts: list[ServerFacts] = []
    with anyio.move_on_after(timeout_s * 2):
        async with httpx.AsyncClient(timeout=timeout_s, headers=headers) as client:
            if spec.provider in _OLLAMA:
                facts.append(await _ollama_show(client, root, spec.wire_model))
            facts.append(await _openai_models(client, f"{root}/v1", spec.wire_model))
            facts.append(await _llama_cpp_props(client, root))
    return _merge(facts)


async def _get_json(
    client: httpx.AsyncClient, method: str, url: str, body: Any = None
) -> Any | None:
    try:
        response = await client.request(method, url, json=body)
        if response.status_code != 200:
            return None
        return response.json()
    except (httpx.HTTPError, ValueError) as exc:
        log.debug("model server probe failed", url=url, error=repr(exc))
        return None


async def _openai_models(client: httpx.AsyncClient, base: str, wanted: str) -> ServerFacts:
    """``GET /v1/models``: vLLM adds ``root`` and ``max_model_len``; llama.cpp adds ``meta``."""
    data = await _get_json(client, "GET", f"{base}/models")
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        return ServerFacts()
    models = [m for m in data["data"] if isinstance(m, dict)]
    # The entry for the model we call; a one-model server may announce another name.
    chosen = [m for m in models if m.get("id") == wanted] or (models if len(models) == 1 else [])
    names: list[str] = []
    params = window = None
    for model in chosen:
        names += [str(model[k]) for k in ("id", "root") if isinstance(model.get(k), str)]
        meta = model.get("meta")
        meta = meta if isinstance(meta, dict) else {}
        params = _int(meta.get("n_params")) or params
        window = (
            _int(model.get("max_model_len"))
            or _int(meta.get("n_ctx"))
            or _int(meta.get("n_ctx_train"))
            or window
        )
    # Newer llama.cpp also lists {"models": [{"name", "model"}]} with the file's name.
    for entry in data.get("models") or []:
        if isinstance(entry, dict):
            names += [str(entry[k]) for k in ("name", "model") if isinstance(entry.get(k), str)]
    return ServerFacts(tuple(names), params, window, ("/v1/models",))


async def _llama_cpp_props(client: httpx.AsyncClient, root: str) -> ServerFacts:
    """llama.cpp's ``GET /props``: the model file's path and the served context size."""
    data = await _get_json(client, "GET", f"{root}/props")
    if not isinstance(data, dict):
        return ServerFacts()
    names = [str(data[k]) for k in ("model_path", "model_alias") if isinstance(data.get(k), str)]
    settings = data.get("default_generation_settings")
    window = _int(settings.get("n_ctx")) if isinstance(settings, dict) else None
    return ServerFacts(tuple(names), None, window, ("/props",))


async def _ollama_show(client: httpx.AsyncClient, root: str, model: str) -> ServerFacts:
    """Ollama's ``POST /api/show``: parameter count and context length of a pulled model."""
    data = await _get_json(client, "POST", f"{root}/api/show", {"model": model})
    if not isinstance(data, dict):
        return ServerFacts()
    info = data.get("model_info")
    info = info if isinstance(info, dict) else {}
    params = _int(info.get("general.parameter_count"))
    details = data.get("details")
    details = details if isinstance(details, dict) else {}
    if params is None and isinstance(details.get("parameter_size"), str):
        match = _OLLAMA_SIZE.match(details["parameter_size"])
        if match:
            scale = {"b": 1e9, "m": 1e6, "k": 1e3}[match.group(2).lower()]
            params = int(float(match.group(1)) * scale)
    window = next(
        (_int(v) for k, v in info.items() if k.endswith(".context_length") and _int(v)), None
    )
    return ServerFacts((model,), params, window, ("/api/show",))


def _merge(parts: Iterable[ServerFacts]) -> ServerFacts:
    names: list[str] = []
    params = window = None
    endpoints: list[str] = []
    for part in parts:
        names += [n for n in dict.fromkeys(part.names) if n not in names]
        params = params or part.params
        # The served size (llama.cpp -c, vLLM max_model_len) over the trained one.
        window = (
            part.context_window
            if "/props" in part.endpoints and part.context_window
            else (window or part.context_window)
        )
        if part.names or part.params or part.context_window:
            endpoints += part.endpoints
    return ServerFacts(tuple(names), params, window, tuple(endpoints))


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and value > 0:
        return int(value)
    return None


def litellm_knows(model: str) -> bool:
    """Whether litellm's model map has ``model`` (a hosted model with published limits)."""
    from engine.models._litellm import load_litellm

    try:
        info = load_litellm().get_model_info(model)
    except Exception:  # litellm raises a bare Exception for unknown models
        return False
    return bool(info)


async def choose_profile(
    spec: ModelSpec,
    requested: str,
    *,
    rules: Iterable[ModelProfileRule] = (),
    probe: bool = True,
) -> ProfileChoice:
    """Resolve ``requested`` (a profile name or ``auto``) for the root model ``spec``.

    ``probe=False`` decides from names only (replayed runs: there is no real server).
    """
    if requested != "auto":
        return ProfileChoice(requested, "set explicitly")
    facts = await probe_server(spec) if probe and is_self_hosted(spec) else ServerFacts()
    names = (spec.model, spec.wire_model, *facts.names)
    for rule in rules:
        if rule.matches(names):
            return ProfileChoice(
                rule.profile,
                f"config rule {rule.pattern!r}",
                context_window=facts.context_window,
                facts=facts,
            )
    return decide(spec, facts)


def decide(spec: ModelSpec, facts: ServerFacts) -> ProfileChoice:
    """The ``auto`` decision from the model string and what its server reported (no I/O)."""
    names = (spec.model, *facts.names)
    window = facts.context_window
    if any(_TRAINED_RLM.search(name) for name in names):
        return ProfileChoice(
            "rlm-trained", "a post-trained RLM checkpoint", context_window=window, facts=facts
        )
    params_b: float | None = None
    source = ""
    if facts.params:
        params_b, source = facts.params / 1e9, f"the server ({', '.join(facts.endpoints)})"
    else:
        found = [(p, n) for n in names if (p := params_from_name(_basename(n))) is not None]
        if found:
            params_b, source = found[0][0], f"the name {found[0][1]!r}"
    if params_b is not None:
        size = f"{params_b:g}B parameters per {source}"
        if params_b < SMALL_MAX_PARAMS_B:
            return ProfileChoice("small", size, params_b, window, facts)
        return ProfileChoice("frontier", size, params_b, window, facts)
    hosted = [] if spec.provider in SELF_HOSTED_PROVIDERS else [spec.model]
    known = next((n for n in [*hosted, *facts.names] if litellm_knows(n)), None)
    if known is not None:
        reason = f"{known!r} is a hosted model litellm knows"
        return ProfileChoice("frontier", reason, None, window, facts)
    return ProfileChoice("small", "model size unknown: weak-model guardrails", None, window, facts)


def _basename(name: str) -> str:
    # "/models/Qwen2.5-Coder-1.5B-Q4_K_M.gguf" and "Qwen/Qwen2.5-7B" -> the last part.
    return wire_model(name).replace("\\", "/").rsplit("/", 1)[-1] or name
