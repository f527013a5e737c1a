"""Engine settings: :class:`Limits`, :class:`EngineConfig` and :func:`load_config`.

Settings come from command-line flags, the environment (``RLM_*``) and a TOML file, with the
precedence flags > environment > file > defaults. Provider API keys are *not* settings here:
litellm reads its usual variables (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ...).

TOML layout (every key optional)::

    model = "openai/gpt-4o-mini"      # omit for the embedded local model
    sub_model = "openai/gpt-4o-mini"  # defaults to model
    api_base = "http://localhost:8000/v1"
    prompt_profile = "auto"           # auto | frontier | small | rlm-trained

    [model_profiles]                  # used by auto: glob over the model or a served name
    "openai/qwen-local*" = "small"

    [limits]
    max_iterations = 20
    max_depth = 1
    max_wall_time = 600               # seconds
    max_tokens = 200000
    max_cost = 1.5                    # USD
    max_sub_calls = 100
    max_tool_calls = 50
    tool_timeout = 60                 # seconds per tool call

    [[tools]]                         # a host Python function, callable in the kernel
    function = "mypkg.lookups:find_user"

    [[mcp]]                           # an MCP server: command = [...] (stdio) or url = "..."
    command = ["uvx", "mcp-server-time"]

    [sandbox]
    image = "rlm-sandbox:latest"
    memory = "2g"
    cpus = 1.0
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import ConfigError
from engine.models import ModelSpec
from engine.models.capability import ModelProfileRule, parse_model_profiles
from engine.settings import (
    CACHE_MODES,
    NAMED_FILE_ONLY,
    SETTINGS,
    env_values,
    in_section,
    setting,
)
from engine.settings import parse_size as parse_size  # re-exported: the one size parser
from engine.tools import ToolsConfig
from engine.tools.settings import parse_functions, parse_mcp
from engine.user_files import read_toml

if TYPE_CHECKING:
    from engine.sandbox import SandboxConfig

DEFAULT_CONFIG_FILE = Path("rlm.toml")


def default_trajectory_dir() -> Path:
    """Where trajectories go when no path is given: ``~/.cache/rlm/trajectories``."""
    return Path.home() / ".cache" / "rlm" / "trajectories"


def _default(name: str) -> Any:
    return setting(name).default


@dataclass(frozen=True)
class Limits:
    """Budgets of a run. ``None`` means unlimited (defaults and checks: :mod:`engine.settings`).

    Tokens, cost, sub-calls and wall time are shared by the whole recursion tree;
    ``max_iterations`` counts root-model turns of each run separately. The top-level run is at
    depth 1, so ``max_depth=1`` (the default) means ``rlm_query`` falls back to a plain
    ``llm_query``, and ``max_depth=2`` lets the root start child RLMs.
    """

    max_iterations: int = _default("max_iterations")
    max_depth: int = _default("max_depth")
    max_wall_time_s: float | None = None
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    max_sub_calls: int | None = None
    max_tool_calls: int | None = None
    cell_timeout_s: float = _default("cell_timeout")
    output_max_chars: int = _default("output_max_chars")

    def __post_init__(self) -> None:
        for item in _LIMIT_SETTINGS:
            item.check_minimum(getattr(self, item.field or item.name))


@dataclass(frozen=True)
class EngineConfig:
    """Everything an :class:`engine.Engine` needs.

    ``model=None`` selects the embedded local model (started or reused on demand);
    ``sub_model=None`` uses the root model for sub-calls too; ``sandbox=None`` uses
    ``SandboxConfig.from_env()`` (defaults plus ``RLM_SANDBOX_*`` variables).
    ``prompt_profile`` names a profile of :mod:`engine.rlm.prompts` (checked by the Engine,
    which owns the registry). ``trajectory_path`` pins the JSONL trajectory file (one run per
    file: a second run overwrites it); otherwise each run writes
    ``<trajectory_dir>/<task-id>.jsonl``. ``record`` writes every model call to a cassette;
    ``replay`` answers every model call from one (no provider is contacted). ``tools`` are
    the host tools sandbox code may call. ``cache`` is the model-call cache's mode (off,
    deterministic or all; a replayed run never uses it), kept in ``cache_dir`` (default
    ``~/.cache/rlm/cache``) up to ``cache_size`` bytes. ``tenant`` names who the engine runs
    for where runs share something (the service sets a key's owner): its model-call cache
    entries are its own (no tenant reads or detects another's) and its calls of Python tools
    hold at most their share of the process's threads. ``output_schema`` names a JSON Schema
    file the final answer must match (see :mod:`engine.rlm.answer_schema`).
    """

    model: ModelSpec | None = None
    sub_model: ModelSpec | None = None
    limits: Limits = field(default_factory=Limits)
    sandbox: SandboxConfig | None = None
    prompt_profile: str = "auto"
    model_profiles: tuple[ModelProfileRule, ...] = ()
    trajectory_path: Path | None = None
    trajectory_dir: Path | None = None
    record: Path | None = None
    replay: Path | None = None
    max_in_flight: int = 16
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    output_schema: Path | None = None
    cache: str = "deterministic"
    cache_dir: Path | None = None
    cache_size: int | None = None
    tenant: str | None = None
    #: compaction: summarise older turns at this share of the root's window, at most this often
    compact_at: float = 0.8
    max_compactions: int = 2
    #: warm sandboxes kept ready (None: the command's default, see :mod:`engine.sandbox.pool`).
    warm_pool: int | None = None
    warm_pool_idle_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.prompt_profile:
            raise ConfigError("prompt_profile is empty; use auto or a profile name")
        if self.record is not None and self.replay is not None:
            raise ConfigError("record and replay cannot be used together; pick one")
        if self.cache not in CACHE_MODES:
            raise ConfigError(f"cache must be one of {', '.join(CACHE_MODES)} (got {self.cache!r})")
        if not 0 < self.compact_at <= 1:
            raise ConfigError(f"compact_at must be above 0 and at most 1 (got {self.compact_at})")
        if self.max_compactions < 0:
            raise ConfigError(f"max_compactions must be 0 or more (got {self.max_compactions})")
        if self.max_in_flight < 1:
            raise ConfigError(f"max_in_flight must be at least 1 (got {self.max_in_flight})")
        setting("warm_pool").check_minimum(self.warm_pool)
        setting("warm_pool_idle").check_minimum(self.warm_pool_idle_s)


# --- loading --------------------------------------------------------------------------------

_LIMIT_SETTINGS = tuple(s for s in in_section("limits") if s.field)
_SANDBOX_SETTINGS = in_section("sandbox")
SETTING_NAMES: tuple[str, ...] = tuple(s.name for s in SETTINGS)


def find_config_file(explicit: Path | None, env: Mapping[str, str]) -> Path | None:
    """Return the TOML file to read: ``explicit``, else ``$RLM_CONFIG``, else ``./rlm.toml``.

    An explicitly named file (flag or variable) must exist; ``./rlm.toml`` is optional.
    """
    named = explicit or (Path(env["RLM_CONFIG"]) if env.get("RLM_CONFIG") else None)
    if named is not None:
        named = named.expanduser()
        if not named.is_file():
            raise ConfigError(f"config file {named} does not exist; check --config / RLM_CONFIG")
        return named
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML config file into flat ``{setting name: value}``; unknown keys are errors."""
    data = read_toml(path, "config file")
    by_place = {(s.section, s.name): s for s in SETTINGS}
    sections = {s.section for s in SETTINGS if s.section}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key == "model_profiles":
            flat[key] = parse_model_profiles(value, None, str(path))
            continue
        if key in sections:
            if not isinstance(value, dict):
                raise ConfigError(f"config file {path}: [{key}] must be a table")
            for sub_key, sub_value in value.items():
                setting = by_place.get((key, sub_key))
                if setting is None:
                    raise ConfigError(
                        f"config file {path}: unknown key {key}.{sub_key!s}; "
                        f"known keys in [{key}]: "
                        + ", ".join(s.name for s in SETTINGS if s.section == key)
                    )
                flat[sub_key] = setting.convert(sub_value, f"{path}: {key}.{sub_key}")
            continue
        setting = by_place.get((None, key))
        if setting is None:
            raise ConfigError(
                f"config file {path}: unknown key {key!s}; known top-level keys: "
                + ", ".join(s.name for s in SETTINGS if s.section is None)
                + ", and the tables [limits], [sandbox], [model_profiles]"
            )
        flat[key] = setting.convert(value, f"{path}: {key}")
    return flat


def load_config(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> EngineConfig:
    """Build an :class:`EngineConfig` from flags > environment > TOML file > defaults.

    ``flags`` maps setting names (``model``, ``max_iterations``, ``max_cost``, ...; see
    :data:`engine.settings.SETTINGS`) to values, ``None`` meaning "not given". ``env``
    defaults to ``os.environ``; ``config_file`` to ``$RLM_CONFIG`` or ``./rlm.toml``.
    """
    return build_config(load_values(flags, env, config_file))


def load_values(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> dict[str, Any]:
    """The settings given (flags > environment > TOML file), parsed, by setting name.

    Defaults are not included: what is missing was not set (``rlm serve`` makes what the
    operator set a ceiling, see :func:`engine.settings.service_ceilings`).
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = find_config_file(config_file, env)
    if path is not None:
        found = read_config_file(path)
        if config_file is None and not env.get("RLM_CONFIG"):
            _refuse_named_file_only(found, path)
        values.update(found)
    values.update(env_values(env))
    for name, value in (flags or {}).items():
        if value is not None:
            item = setting(name)
            values[name] = item.convert(value, item.flag_name)
    return values


def _refuse_named_file_only(found: Mapping[str, Any], path: Path) -> None:
    """A ConfigError when a config file nobody named sets a :data:`NAMED_FILE_ONLY` setting."""
    refused = sorted(NAMED_FILE_ONLY.intersection(found))
    if refused:
        listed = ", ".join(refused)
        raise ConfigError(
            f"{path} (found in the working directory) sets {listed}, which a config file may "
            "set only when it is named: such settings run code on this host, send prompts and "
            "keys to a server, change the sandbox or pick files to read and write. If you "
            f"trust this file, pass --config {path} (or set RLM_CONFIG); otherwise remove "
            "those keys or run rlm elsewhere"
        )


def _tools_config(values: Mapping[str, Any]) -> ToolsConfig:
    tools: dict[str, Any] = {}
    for field_name, name, parse in (
        ("functions", "tools", parse_functions),
        ("mcp", "mcp", parse_mcp),
    ):
        if name in values:
            try:
                tools[field_name] = parse(values[name])
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"invalid value {values[name]!r} for {name}: {exc}") from exc
    if "tool_timeout" in values:
        tools["timeout_s"] = values["tool_timeout"]
    return ToolsConfig(**tools)


def build_config(values: Mapping[str, Any]) -> EngineConfig:
    """Turn parsed flat settings into an :class:`EngineConfig`."""
    spec_extra: dict[str, Any] = {}
    if "temperature" in values:
        spec_extra["temperature"] = values["temperature"]
    if "max_output_tokens" in values:
        spec_extra["max_tokens"] = values["max_output_tokens"]
    if "context_window" in values:
        spec_extra["context_window"] = values["context_window"]
    api_base = values.get("api_base") or None
    api_key = values.get("api_key") or None

    model: ModelSpec | None = None
    if values.get("model"):
        model = ModelSpec(values["model"], api_base=api_base, api_key=api_key, **spec_extra)
    sub_model: ModelSpec | None = None
    if values.get("sub_model") or "sub_api_base" in values:
        sub_name = values.get("sub_model") or values.get("model")
        if not sub_name:
            raise ConfigError("sub_api_base needs sub_model or model to be set")
        sub_base = values.get("sub_api_base", api_base)
        sub_model = ModelSpec(sub_name, api_base=sub_base or None, api_key=api_key, **spec_extra)

    limits = Limits(
        **{s.field or s.name: values[s.name] for s in _LIMIT_SETTINGS if s.name in values}
    )
    sandbox = None
    sandbox_values = {
        s.field or s.name: values[s.name] for s in _SANDBOX_SETTINGS if s.name in values
    }
    if sandbox_values:
        from engine.sandbox import SandboxConfig

        # from_env adds what the environment sets and the flat values do not (load_config
        # was given another env, or a value came from the file).
        sandbox = SandboxConfig.from_env(**sandbox_values)

    extra: dict[str, Any] = {}
    for name in (
        "max_in_flight",
        "cache",
        "cache_dir",
        "cache_size",
        "output_schema",
        "compact_at",
        "max_compactions",
        "warm_pool",
    ):
        if name in values:
            extra[name] = values[name]
    if "warm_pool_idle" in values:
        extra["warm_pool_idle_s"] = values["warm_pool_idle"]
    extra["tools"] = _tools_config(values)
    return EngineConfig(
        model=model,
        sub_model=sub_model,
        limits=limits,
        sandbox=sandbox,
        prompt_profile=values.get("prompt_profile", "auto"),
        model_profiles=values.get("model_profiles", ()),
        trajectory_path=values.get("trajectory"),
        trajectory_dir=values.get("trajectory_dir"),
        record=values.get("record"),
        replay=values.get("replay"),
        **extra,
    )
