"""Engine settings: :class:`Limits`, :class:`EngineConfig` and :func:`load_config`.

Settings come from command-line flags, the environment (``RLM_*``) and a TOML file, with the
precedence flags > environment > file > defaults. Provider API keys are *not* settings here:
litellm reads its usual variables (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ...).

TOML layout (every key optional)::

    model = "openai/gpt-4o-mini"      # omit for the embedded local model
    sub_model = "openai/gpt-4o-mini"  # defaults to model
    api_base = "http://localhost:8000/v1"
    prompt_profile = "auto"           # auto | frontier | small

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
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import ConfigError
from engine.models import ModelSpec
from engine.tools import ToolsConfig
from engine.tools.settings import parse_functions, parse_mcp

if TYPE_CHECKING:
    from engine.sandbox import SandboxConfig

DEFAULT_CONFIG_FILE = Path("rlm.toml")


def default_trajectory_dir() -> Path:
    """Where trajectories go when no path is given: ``~/.cache/rlm/trajectories``."""
    return Path.home() / ".cache" / "rlm" / "trajectories"


@dataclass(frozen=True)
class Limits:
    """Budgets of a run. ``None`` means unlimited.

    Tokens, cost, sub-calls and wall time are shared by the whole recursion tree;
    ``max_iterations`` counts root-model turns of each run separately. The top-level run is at
    depth 1, so ``max_depth=1`` (the default) means ``rlm_query`` falls back to a plain
    ``llm_query``, and ``max_depth=2`` lets the root start child RLMs.
    """

    max_iterations: int = 20
    max_depth: int = 1
    max_wall_time_s: float | None = None
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    max_sub_calls: int | None = None
    max_tool_calls: int | None = None
    cell_timeout_s: float = 120.0
    output_max_chars: int = 8_000

    def __post_init__(self) -> None:
        positive = {
            "max_iterations": self.max_iterations,
            "max_depth": self.max_depth,
            "max_wall_time": self.max_wall_time_s,
            "max_tokens": self.max_tokens,
            "max_cost": self.max_cost_usd,
            "cell_timeout": self.cell_timeout_s,
            "output_max_chars": self.output_max_chars,
        }
        for name, value in positive.items():
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be greater than 0 (got {value})")
        if self.max_sub_calls is not None and self.max_sub_calls < 0:
            raise ConfigError(f"max_sub_calls must be 0 or more (got {self.max_sub_calls})")
        if self.max_tool_calls is not None and self.max_tool_calls < 0:
            raise ConfigError(f"max_tool_calls must be 0 or more (got {self.max_tool_calls})")


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
    the host tools sandbox code may call.
    """

    model: ModelSpec | None = None
    sub_model: ModelSpec | None = None
    limits: Limits = field(default_factory=Limits)
    sandbox: SandboxConfig | None = None
    prompt_profile: str = "auto"
    trajectory_path: Path | None = None
    trajectory_dir: Path | None = None
    record: Path | None = None
    replay: Path | None = None
    max_in_flight: int = 16
    tools: ToolsConfig = field(default_factory=ToolsConfig)

    def __post_init__(self) -> None:
        if not self.prompt_profile:
            raise ConfigError("prompt_profile is empty; use auto or a profile name")
        if self.record is not None and self.replay is not None:
            raise ConfigError("record and replay cannot be used together; pick one")
        if self.max_in_flight < 1:
            raise ConfigError(f"max_in_flight must be at least 1 (got {self.max_in_flight})")


# --- loading --------------------------------------------------------------------------------


def _parse_int(text: Any) -> int:
    if isinstance(text, bool):
        raise ValueError("expected an integer")
    if isinstance(text, int):
        return text
    return int(str(text).strip().replace("_", ""))


def _parse_float(text: Any) -> float:
    if isinstance(text, bool):
        raise ValueError("expected a number")
    return float(text)


def _parse_str(text: Any) -> str:
    if not isinstance(text, str):
        raise ValueError("expected a string")
    return text


def _parse_path(text: Any) -> Path:
    if isinstance(text, Path):
        return text.expanduser()
    return Path(_parse_str(text)).expanduser()


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: Any) -> int:
    """Parse a byte size: an integer, or a string like ``"512m"``, ``"2g"``, ``"2GiB"``."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError("expected a size such as 2g, 512m or a number of bytes")
    factor = 1024 ** " kmgt".index(match.group(2).lower() or " ")
    return int(float(match.group(1)) * factor)


@dataclass(frozen=True)
class _Setting:
    name: str  # flag dest and TOML key
    section: str | None  # TOML table, None = top level
    env: str
    parse: Callable[[Any], Any]


_SETTINGS: tuple[_Setting, ...] = (
    _Setting("model", None, "RLM_MODEL", _parse_str),
    _Setting("sub_model", None, "RLM_SUB_MODEL", _parse_str),
    _Setting("api_base", None, "RLM_API_BASE", _parse_str),
    _Setting("sub_api_base", None, "RLM_SUB_API_BASE", _parse_str),
    _Setting("api_key", None, "RLM_API_KEY", _parse_str),
    _Setting("temperature", None, "RLM_TEMPERATURE", _parse_float),
    _Setting("max_output_tokens", None, "RLM_MAX_OUTPUT_TOKENS", _parse_int),
    _Setting("context_window", None, "RLM_CONTEXT_WINDOW", _parse_int),
    _Setting("max_in_flight", None, "RLM_MAX_IN_FLIGHT", _parse_int),
    _Setting("prompt_profile", None, "RLM_PROMPT_PROFILE", _parse_str),
    _Setting("trajectory", None, "RLM_TRAJECTORY", _parse_path),
    _Setting("trajectory_dir", None, "RLM_TRAJECTORY_DIR", _parse_path),
    _Setting("record", None, "RLM_RECORD", _parse_path),
    _Setting("replay", None, "RLM_REPLAY", _parse_path),
    _Setting("max_iterations", "limits", "RLM_MAX_ITERATIONS", _parse_int),
    _Setting("max_depth", "limits", "RLM_MAX_DEPTH", _parse_int),
    _Setting("max_wall_time", "limits", "RLM_MAX_WALL_TIME", _parse_float),
    _Setting("max_tokens", "limits", "RLM_MAX_TOKENS", _parse_int),
    _Setting("max_cost", "limits", "RLM_MAX_COST", _parse_float),
    _Setting("max_sub_calls", "limits", "RLM_MAX_SUB_CALLS", _parse_int),
    _Setting("max_tool_calls", "limits", "RLM_MAX_TOOL_CALLS", _parse_int),
    _Setting("tool_timeout", "limits", "RLM_TOOL_TIMEOUT", _parse_float),
    _Setting("tools", None, "RLM_TOOL_FUNCTIONS", parse_functions),
    _Setting("mcp", None, "RLM_MCP_SERVERS", parse_mcp),
    _Setting("cell_timeout", "limits", "RLM_CELL_TIMEOUT", _parse_float),
    _Setting("output_max_chars", "limits", "RLM_OUTPUT_MAX_CHARS", _parse_int),
    _Setting("image", "sandbox", "RLM_SANDBOX_IMAGE", _parse_str),
    _Setting("memory", "sandbox", "RLM_SANDBOX_MEMORY", parse_size),
    _Setting("cpus", "sandbox", "RLM_SANDBOX_CPUS", _parse_float),
    _Setting("pids_limit", "sandbox", "RLM_SANDBOX_PIDS", _parse_int),
    _Setting("disk", "sandbox", "RLM_SANDBOX_DISK", parse_size),
)

_LIMIT_FIELDS = {
    "max_iterations": "max_iterations",
    "max_depth": "max_depth",
    "max_wall_time": "max_wall_time_s",
    "max_tokens": "max_tokens",
    "max_cost": "max_cost_usd",
    "max_sub_calls": "max_sub_calls",
    "max_tool_calls": "max_tool_calls",
    "cell_timeout": "cell_timeout_s",
    "output_max_chars": "output_max_chars",
}
_SANDBOX_FIELDS = {
    "image": "image",
    "memory": "memory_bytes",
    "cpus": "cpus",
    "pids_limit": "pids_limit",
    "disk": "disk_bytes",
}

SETTING_NAMES: tuple[str, ...] = tuple(s.name for s in _SETTINGS)


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
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    by_place = {(s.section, s.name): s for s in _SETTINGS}
    sections = {s.section for s in _SETTINGS if s.section}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in sections:
            if not isinstance(value, dict):
                raise ConfigError(f"config file {path}: [{key}] must be a table")
            for sub_key, sub_value in value.items():
                setting = by_place.get((key, sub_key))
                if setting is None:
                    raise ConfigError(
                        f"config file {path}: unknown key {key}.{sub_key!s}; "
                        f"known keys in [{key}]: "
                        + ", ".join(s.name for s in _SETTINGS if s.section == key)
                    )
                flat[sub_key] = _convert(setting, sub_value, f"{path}: {key}.{sub_key}")
            continue
        setting = by_place.get((None, key))
        if setting is None:
            raise ConfigError(
                f"config file {path}: unknown key {key!s}; known top-level keys: "
                + ", ".join(s.name for s in _SETTINGS if s.section is None)
                + ", and the tables [limits], [sandbox]"
            )
        flat[key] = _convert(setting, value, f"{path}: {key}")
    return flat


def _convert(setting: _Setting, value: Any, where: str) -> Any:
    try:
        return setting.parse(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid value {value!r} for {where}: {exc}") from exc


def load_config(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> EngineConfig:
    """Build an :class:`EngineConfig` from flags > environment > TOML file > defaults.

    ``flags`` maps setting names (``model``, ``max_iterations``, ``max_cost``, ...; see
    :data:`SETTING_NAMES`) to values, ``None`` meaning "not given". ``env`` defaults to
    ``os.environ``; ``config_file`` to ``$RLM_CONFIG`` or ``./rlm.toml``.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = find_config_file(config_file, env)
    if path is not None:
        values.update(read_config_file(path))
    for setting in _SETTINGS:
        raw = env.get(setting.env)
        if raw is not None and raw.strip() != "":
            values[setting.name] = _convert(setting, raw, f"${setting.env}")
    for name, value in (flags or {}).items():
        if value is None:
            continue
        setting = next((s for s in _SETTINGS if s.name == name), None)
        if setting is None:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = _convert(setting, value, f"--{name.replace('_', '-')}")
    return build_config(values)


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
        **{field_: values[name] for name, field_ in _LIMIT_FIELDS.items() if name in values}
    )
    sandbox = None
    sandbox_values = {f: values[n] for n, f in _SANDBOX_FIELDS.items() if n in values}
    if sandbox_values:
        from engine.sandbox import SandboxConfig

        # from_env keeps the sandbox's own variables (runtime, tmp size) the table lacks.
        sandbox = SandboxConfig.from_env(**sandbox_values)

    extra: dict[str, Any] = {}
    if "max_in_flight" in values:
        extra["max_in_flight"] = values["max_in_flight"]
    tool_values = {"functions": "tools", "mcp": "mcp", "timeout_s": "tool_timeout"}
    extra["tools"] = ToolsConfig(**{f: values[n] for f, n in tool_values.items() if n in values})
    return EngineConfig(
        model=model,
        sub_model=sub_model,
        limits=limits,
        sandbox=sandbox,
        prompt_profile=values.get("prompt_profile", "auto"),
        trajectory_path=values.get("trajectory"),
        trajectory_dir=values.get("trajectory_dir"),
        record=values.get("record"),
        replay=values.get("replay"),
        **extra,
    )
