"""Every engine setting, declared once: name, type, default, variable, flag, API name, help.

The rest is derived from :data:`SETTINGS`: the ``RLM_*`` environment and the TOML keys
(:mod:`engine.config`), the flags of ``rlm run`` and ``rlm serve`` (:func:`add_arguments`),
the ``limits`` a service job may set (:func:`api_settings`, validated by
:mod:`engine.service.requests`, described in the OpenAPI document) and the service's
ceilings (:func:`service_ceilings`). To add a setting, add a row here and the field it sets
(a :class:`engine.config.Limits` field for ``section="limits"``).

This module imports nothing of the engine but :mod:`engine.errors`, so every layer may use
it, and :func:`parse_size` is the one size parser.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConfigError

__all__ = [
    "CACHE_MODES",
    "DEFAULT_CELL_TIMEOUT_S",
    "SETTINGS",
    "Setting",
    "add_arguments",
    "api_settings",
    "parse_size",
    "service_ceilings",
    "setting",
    "value_of",
]

#: The model-call cache's modes (see :mod:`engine.models.cache`).
CACHE_MODES: tuple[str, ...] = ("off", "deterministic", "all")

#: How long one cell may run, in seconds, unless a limit says otherwise (the one default).
DEFAULT_CELL_TIMEOUT_S = 120.0

#: A minimum meaning "greater than 0" (:attr:`Setting.minimum`).
_POSITIVE = 1e-9

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: object) -> int:
    """Bytes from ``"512m"``, ``"2GiB"``, ``"1g"`` or a byte count (binary units).

    Raises :class:`ConfigError` (a ``ValueError`` too) naming the accepted forms.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise SizeError(f"cannot read the size {text!r}: write e.g. 512m, 2g or 2GiB")
    number, unit, _ = match.groups()
    return int(float(number) * _UNITS[unit.lower()])


class SizeError(ConfigError, ValueError):
    """A size that is not a number of bytes or ``<number><k|m|g|t>``."""


def _parse_int(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    if isinstance(value, int):
        return value
    return int(str(value).strip().replace("_", ""))


def _parse_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expected a number")
    return float(value)


def _parse_str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _parse_path(value: object) -> Path:
    if isinstance(value, Path):
        return value.expanduser()
    return Path(_parse_str(value)).expanduser()


def _parse_port(value: object) -> int:
    port = _parse_int(value)
    if not 0 < port < 1 << 16:
        raise ValueError("expected a TCP port from 1 to 65535")
    return port


def _parse_database_url(value: object) -> str:
    url = _parse_str(value).strip()
    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError(
            "expected a postgresql:// URL (postgresql://user:password@host:port/db); leave it "
            "out to keep the jobs in SQLite in --data-dir"
        )
    return url


def _parse_cache_mode(value: object) -> str:
    mode = _parse_str(value).strip().lower()
    if mode not in CACHE_MODES:
        raise ValueError(f"expected one of {', '.join(CACHE_MODES)}")
    return mode


def _parse_list(value: object) -> list[Any] | str:
    # Tools and MCP servers: checked in full by engine.tools.settings when the configuration
    # is built (this module stays below the packages it describes).
    if isinstance(value, str):
        return value
    if not isinstance(value, list | tuple):
        raise ValueError("expected a list (TOML: [[tools]] / [[mcp]] tables) or a string")
    return list(value)


@dataclass(frozen=True)
class Setting:
    """One setting and every place it can be given.

    ``name`` is the TOML key (inside ``section``), the flag's dest, the key of
    :func:`engine.config.load_config`'s ``flags`` and, for ``api`` settings, the name in a
    service job's ``limits``. ``field`` is the attribute it sets (on ``Limits`` for the
    ``limits`` section, on ``SandboxConfig`` for ``sandbox``). ``flag`` None means no flag;
    ``commands`` says which commands have it. ``ceiling`` marks a budget whose service value
    is a maximum a job may lower but not raise, ``safe_ceiling`` the maximum ``rlm serve``
    applies when the operator sets none.
    """

    name: str
    kind: type
    parse: Callable[[Any], Any]
    env: str
    help: str
    section: str | None = None
    field: str | None = None
    default: Any = None
    flag: str | None = None
    commands: frozenset[str] = frozenset({"run", "serve"})
    api: bool = False
    #: the smallest allowed value (``_POSITIVE``: greater than 0); None: no check. Checked
    #: when a value is read (:meth:`convert`) and by the dataclasses a value ends up in.
    minimum: float | None = None
    ceiling: bool = False
    safe_ceiling: float | None = None
    repeat: bool = False  # the flag may be given several times (a list)
    metavar: str | None = None
    secret: bool = False  # never shown in an error (a database URL carries a password)

    @property
    def flag_name(self) -> str:
        return self.flag or f"--{self.name.replace('_', '-')}"

    def convert(self, value: Any, where: str) -> Any:
        """``value`` parsed and checked against :attr:`minimum`, or a :class:`ConfigError`
        naming ``where`` it came from (the flag, ``$VARIABLE`` or TOML key)."""
        shown = "value" if self.secret else f"value {value!r}"
        try:
            parsed = self.parse(value)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"invalid {shown} for {where}: {exc}") from exc
        problem = self.below_minimum(parsed)
        if problem:
            raise ConfigError(f"invalid {shown} for {where}: {problem}")
        return parsed

    def check_minimum(self, value: float | None) -> None:
        """Raise ConfigError when ``value`` is below :attr:`minimum` (None is unlimited)."""
        problem = self.below_minimum(value)
        if problem:
            raise ConfigError(f"{self.name} {problem} (got {value})")

    def below_minimum(self, value: float | None) -> str | None:
        """What is wrong with ``value`` given :attr:`minimum` ("must be ..."), else None."""
        if value is None or self.minimum is None:
            return None
        # NaN passes every comparison below (and every ceiling's): ``nan <= 0`` is False, so
        # a NaN cost cap would never be reached. Infinity is no budget either.
        if not is_finite(value):
            return "must be a finite number"
        if self.minimum == _POSITIVE:
            return "must be greater than 0" if value <= 0 else None
        if value < self.minimum:
            return (
                "must be 0 or more" if self.minimum == 0 else f"must be at least {self.minimum:g}"
            )
        return None


def is_finite(value: float) -> bool:
    """Whether ``value`` is a number a budget can hold: not NaN, not infinite, and (an int)
    convertible to a float (``math.isfinite`` raises OverflowError past about 1e308)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


_RUN = frozenset({"run"})
_SERVE = frozenset({"serve"})
_NONE: frozenset[str] = frozenset()

SETTINGS: tuple[Setting, ...] = (
    # --- models ---------------------------------------------------------------------------
    Setting("model", str, _parse_str, "RLM_MODEL", "root model, a litellm string "
            "(e.g. openai/gpt-4o-mini; default: the embedded local model)", flag="--model"),
    Setting("sub_model", str, _parse_str, "RLM_SUB_MODEL", "sub-call model (default: --model)",
            flag="--sub-model"),
    Setting("api_base", str, _parse_str, "RLM_API_BASE", "OpenAI-compatible server URL",
            flag="--api-base"),
    Setting("sub_api_base", str, _parse_str, "RLM_SUB_API_BASE", "server URL of the sub model",
            commands=_NONE),
    Setting("api_key", str, _parse_str, "RLM_API_KEY", "API key for --api-base", commands=_NONE),
    Setting("temperature", float, _parse_float, "RLM_TEMPERATURE", "sampling temperature",
            commands=_NONE),
    Setting("max_output_tokens", int, _parse_int, "RLM_MAX_OUTPUT_TOKENS",
            "most tokens of one model reply", commands=_NONE),
    Setting("context_window", int, _parse_int, "RLM_CONTEXT_WINDOW",
            "the root model's context window in tokens", commands=_NONE),
    Setting("max_in_flight", int, _parse_int, "RLM_MAX_IN_FLIGHT",
            "model calls in flight at once", default=16, commands=_NONE),
    Setting("prompt_profile", str, _parse_str, "RLM_PROMPT_PROFILE",
            "prompt profile: auto (default: chosen from what the model can do), frontier, "
            "small or rlm-trained", default="auto", flag="--profile", metavar="NAME"),
    Setting("compact_at", float, _parse_float, "RLM_COMPACT_AT",
            "share of the root model's context window at which older turns are summarised "
            "into a note (compaction; 0 < x <= 1)", default=0.8, commands=_NONE,
            minimum=_POSITIVE),
    Setting("max_compactions", int, _parse_int, "RLM_MAX_COMPACTIONS",
            "compactions per run; past it older outputs are only elided", default=2,
            commands=_NONE, minimum=0),
    # --- the service (rlm serve's own; top-level TOML keys) ----------------------------------
    Setting("host", str, _parse_str, "RLM_SERVICE_HOST", "address to bind (default 127.0.0.1)",
            default="127.0.0.1", commands=_SERVE, metavar="ADDRESS"),
    Setting("port", int, _parse_port, "RLM_SERVICE_PORT", "TCP port to listen on",
            default=8080, commands=_SERVE),
    Setting("data_dir", Path, _parse_path, "RLM_SERVICE_DATA_DIR",
            "jobs database and uploads (default ~/.local/share/rlm/service)",
            default=Path("~/.local/share/rlm/service"), commands=_SERVE, metavar="DIR"),
    Setting("database_url", str, _parse_database_url, "RLM_DATABASE_URL",
            "keep jobs in PostgreSQL (postgresql://user:password@host:port/db) so several "
            "replicas share them (default: SQLite in --data-dir)", commands=_SERVE,
            metavar="URL", secret=True),
    Setting("lease_seconds", float, _parse_float, "RLM_LEASE_SECONDS",
            "with --database-url: a replica that stops renewing its job leases for this long "
            "is presumed dead and its jobs run elsewhere", default=30.0, commands=_SERVE,
            minimum=3, metavar="SECONDS"),
    Setting("models", Path, _parse_path, "RLM_SERVICE_MODELS",
            "TOML file of the models jobs may name ([models.NAME] with model, api_base, "
            "api_key_env, prices); the service's own --model and --sub-model are always "
            "allowed", commands=_SERVE, metavar="FILE"),
    Setting("max_sandboxes", int, _parse_int, "RLM_MAX_SANDBOXES",
            "jobs running at once (child sandboxes of rlm_query included)", default=4,
            commands=_SERVE, minimum=_POSITIVE),
    Setting("max_jobs_per_key", int, _parse_int, "RLM_MAX_JOBS_PER_KEY",
            "queued + running jobs one API key may have", default=16, commands=_SERVE,
            minimum=_POSITIVE),
    Setting("max_upload", int, parse_size, "RLM_MAX_UPLOAD", "largest upload",
            default=1 << 30, commands=_SERVE, minimum=_POSITIVE, metavar="SIZE"),
    Setting("max_storage_per_key", int, parse_size, "RLM_MAX_STORAGE_PER_KEY",
            "bytes one API key may keep (uploads, inline contexts, trajectories; 0 = no quota)",
            default=10 << 30, commands=_SERVE, minimum=0, metavar="SIZE"),
    Setting("retention_days", float, _parse_float, "RLM_RETENTION_DAYS",
            "delete ended jobs, closed sessions and unused uploads older than this many days "
            "(default: keep)", commands=_SERVE, minimum=_POSITIVE, metavar="DAYS"),
    # --- service sessions -------------------------------------------------------------------
    Setting("session_idle", float, _parse_float, "RLM_SESSION_IDLE",
            "seconds a session may sit idle before its kernel is closed (its history stays "
            "readable)", default=900.0, commands=_SERVE, minimum=_POSITIVE),
    Setting("max_sessions_per_key", int, _parse_int, "RLM_MAX_SESSIONS_PER_KEY",
            "open sessions (each a live kernel) one API key may have", default=4,
            commands=_SERVE, minimum=_POSITIVE),
    Setting("max_streams_per_key", int, _parse_int, "RLM_MAX_STREAMS_PER_KEY",
            "requests one API key may hold open at once: event streams, chat completions "
            "and session messages waiting for their answer, uploads and JSON bodies being "
            "received (429 past it)", default=32, commands=_SERVE, minimum=_POSITIVE),
    Setting("max_session_kernels", int, _parse_int, "RLM_MAX_SESSION_KERNELS",
            "session kernels this service process keeps alive at once, over all keys (an idle "
            "session's kernel holds no job slot, so this bounds them)", default=16,
            commands=_SERVE, minimum=_POSITIVE),
    # --- the model-call cache --------------------------------------------------------------
    Setting("cache", str, _parse_cache_mode, "RLM_CACHE",
            "model-call cache: off, deterministic (calls with temperature 0 or a seed; the "
            "default) or all", default="deterministic", metavar="MODE"),
    Setting("cache_dir", Path, _parse_path, "RLM_CACHE_DIR",
            "directory of the model-call cache (default ~/.cache/rlm/cache)", commands=_NONE),
    Setting("cache_size", int, parse_size, "RLM_CACHE_SIZE",
            "most bytes of replies the model-call cache keeps (default 1g)", commands=_NONE),
    # --- files ----------------------------------------------------------------------------
    Setting("trajectory", Path, _parse_path, "RLM_TRAJECTORY", "JSONL trajectory path",
            commands=_RUN),
    Setting("trajectory_dir", Path, _parse_path, "RLM_TRAJECTORY_DIR",
            "directory of trajectories (one file per run)", commands=_NONE),
    Setting("output_schema", Path, _parse_path, "RLM_OUTPUT_SCHEMA",
            "a JSON Schema file the final answer must match", commands=_RUN),
    Setting("record", Path, _parse_path, "RLM_RECORD",
            "record every model call to this cassette", commands=_RUN),
    Setting("replay", Path, _parse_path, "RLM_REPLAY",
            "answer every model call from this cassette"),
    # --- limits (shared by the whole recursion tree) --------------------------------------
    Setting("max_iterations", int, _parse_int, "RLM_MAX_ITERATIONS",
            "root-model turns of each run", "limits", "max_iterations", 20, api=True,
            minimum=_POSITIVE, ceiling=True, safe_ceiling=50),
    Setting("max_depth", int, _parse_int, "RLM_MAX_DEPTH",
            "recursion depth; 1 = rlm_query is a plain llm_query", "limits", "max_depth", 1,
            api=True, minimum=_POSITIVE, ceiling=True, safe_ceiling=3),
    Setting("max_wall_time", float, _parse_float, "RLM_MAX_WALL_TIME",
            "seconds of wall time in total", "limits", "max_wall_time_s", api=True,
            minimum=_POSITIVE, ceiling=True, safe_ceiling=3600),
    Setting("max_tokens", int, _parse_int, "RLM_MAX_TOKENS",
            "tokens in total (root and sub-calls)", "limits", "max_tokens", api=True,
            minimum=_POSITIVE, ceiling=True, safe_ceiling=2_000_000),
    Setting("max_cost", float, _parse_float, "RLM_MAX_COST", "cost in total, USD", "limits",
            "max_cost_usd", api=True, minimum=_POSITIVE, ceiling=True, safe_ceiling=10.0),
    Setting("max_sub_calls", int, _parse_int, "RLM_MAX_SUB_CALLS",
            "sub-calls in total (each llm_batch item counts)", "limits", "max_sub_calls",
            api=True, minimum=0, ceiling=True, safe_ceiling=1000),
    Setting("max_tool_calls", int, _parse_int, "RLM_MAX_TOOL_CALLS", "host tool calls in total",
            "limits", "max_tool_calls", api=True, minimum=0, ceiling=True, safe_ceiling=1000),
    Setting("tool_timeout", float, _parse_float, "RLM_TOOL_TIMEOUT",
            "seconds per host tool call (default 60)", "limits", minimum=_POSITIVE),
    Setting("cell_timeout", float, _parse_float, "RLM_CELL_TIMEOUT",
            "seconds one cell may run", "limits", "cell_timeout_s", DEFAULT_CELL_TIMEOUT_S,
            api=True, minimum=_POSITIVE, ceiling=True, safe_ceiling=600),
    Setting("output_max_chars", int, _parse_int, "RLM_OUTPUT_MAX_CHARS",
            "characters of each cell's output the root model sees", "limits",
            "output_max_chars", 8_000, commands=_NONE, minimum=_POSITIVE),
    # --- host tools -----------------------------------------------------------------------
    Setting("tools", list, _parse_list, "RLM_TOOL_FUNCTIONS",
            "a Python function of this host as a tool (repeatable)", flag="--tool",
            repeat=True, metavar="MODULE:FUNCTION"),
    Setting("mcp", list, _parse_list, "RLM_MCP_SERVERS",
            "an MCP server's tools: a command (stdio) or a streamable-HTTP URL (repeatable)",
            repeat=True, metavar="'COMMAND ARGS' | URL"),
    # --- the sandbox ----------------------------------------------------------------------
    Setting("warm_pool", int, _parse_int, "RLM_WARM_POOL",
            "warm sandboxes kept ready for tasks (default: 2 in rlm serve, counted within "
            "--max-sandboxes; rlm run starts 1 while it sets up, and keeps 1 ready for "
            "rlm_query children when --max-depth > 1)", minimum=0, metavar="N"),
    Setting("warm_pool_idle", float, _parse_float, "RLM_WARM_POOL_IDLE",
            "seconds without a task before the warm pool empties (default 300)",
            minimum=_POSITIVE, metavar="SECONDS"),
    Setting("image", str, _parse_str, "RLM_SANDBOX_IMAGE", "sandbox image", "sandbox", "image",
            commands=_NONE),
    Setting("runtime", str, _parse_str, "RLM_SANDBOX_RUNTIME",
            "Docker runtime (default: runsc when registered)", "sandbox", "runtime",
            commands=_NONE),
    Setting("memory", int, parse_size, "RLM_SANDBOX_MEMORY", "sandbox memory, e.g. 2g",
            "sandbox", "memory_bytes", commands=_NONE),
    Setting("max_memory", int, parse_size, "RLM_SANDBOX_MAX_MEMORY",
            "the most sandbox memory a large context may raise it to (default: the host's)",
            "sandbox", "max_memory_bytes", commands=_NONE),
    Setting("cpus", float, _parse_float, "RLM_SANDBOX_CPUS", "sandbox CPUs", "sandbox", "cpus",
            commands=_NONE),
    Setting("pids_limit", int, _parse_int, "RLM_SANDBOX_PIDS", "sandbox process limit",
            "sandbox", "pids_limit", commands=_NONE),
    Setting("tmp", int, parse_size, "RLM_SANDBOX_TMP", "size of the sandbox's /tmp",
            "sandbox", "tmp_bytes", commands=_NONE),
    Setting("disk", int, parse_size, "RLM_SANDBOX_DISK",
            "bytes of child contexts the sandbox may hand the host", "sandbox", "disk_bytes",
            commands=_NONE),
)  # fmt: skip

#: Settings that a config file found in the working directory (``./rlm.toml``, not named by
#: ``--config`` or ``$RLM_CONFIG``) may not set. Each runs code on the host (a Python tool is
#: imported, an MCP command is started), sends the prompts and a key elsewhere (a server
#: URL, a key), swaps or weakens the sandbox (image, runtime), or reads or writes a path of
#: the file's choosing. A cloned repository's rlm.toml must not do that to whoever runs
#: ``rlm`` in it (measured: ``[[mcp]] command = "touch FILE"`` ran on ``rlm run``); limits
#: and model choices it may set. A file named explicitly is the user's own choice.
NAMED_FILE_ONLY: frozenset[str] = frozenset(
    {
        "api_base", "sub_api_base", "api_key", "tools", "mcp", "image", "runtime",
        "database_url", "data_dir", "models", "cache_dir", "trajectory", "trajectory_dir",
        "record", "replay",
    }
)  # fmt: skip

_BY_NAME = {s.name: s for s in SETTINGS}
_GROUPS = {
    "service": "the service (its own settings; top-level keys in the config file)",
    "limits": "limits (shared by the whole recursion tree)",
    "tools": "host tools (callable from the sandbox by their names)",
}
_SERVE_LIMITS = (
    "limits of a job: its defaults and the most a job may ask for (a job may lower them, "
    "never raise them)"
)


def setting(name: str) -> Setting:
    """The setting called ``name``."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ConfigError(f"unknown setting {name!r}") from None


def in_section(section: str) -> tuple[Setting, ...]:
    """The settings of a TOML table (``limits``, ``sandbox``)."""
    return tuple(s for s in SETTINGS if s.section == section)


def api_settings() -> tuple[Setting, ...]:
    """The budgets a service job may set in ``limits`` (API name = setting name)."""
    return tuple(s for s in SETTINGS if s.api)


def service_ceilings(operator: Mapping[str, Any]) -> dict[str, float]:
    """The most a service job may ask for, by API name.

    ``operator`` holds the settings the operator gave (flags, environment, TOML): each such
    budget is a ceiling. A budget the operator left out gets its safe ceiling, if it has one.
    """
    ceilings: dict[str, float] = {}
    for item in SETTINGS:
        if not item.ceiling:
            continue
        value = operator.get(item.name)
        if value is None:
            value = item.safe_ceiling
        if value is not None:
            ceilings[item.name] = value
    return ceilings


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """Add the flags of ``command`` (``run`` or ``serve``), grouped, with their help.

    Every flag defaults to None (not given), so the environment and the config file apply.
    """
    groups: dict[str, Any] = {}

    def group_of(item: Setting) -> Any:
        if item.name in ("tools", "mcp", "max_tool_calls", "tool_timeout"):
            key = "tools"
        elif item.commands == _SERVE:
            key = "service"
        else:
            key = item.section or ""
        if key not in _GROUPS:
            return parser
        if key not in groups:
            title = _SERVE_LIMITS if key == "limits" and command == "serve" else _GROUPS[key]
            groups[key] = parser.add_argument_group(title)
        return groups[key]

    for item in SETTINGS:
        if command not in item.commands:
            continue
        kwargs: dict[str, Any] = {"dest": item.name, "default": None, "help": _help(item)}
        if item.repeat:
            kwargs["action"] = "append"
        elif item.kind in (int, float, Path) and item.parse is not parse_size:
            kwargs["type"] = item.kind
        if item.metavar:
            kwargs["metavar"] = item.metavar
        group_of(item).add_argument(item.flag_name, **kwargs)


def _number(value: float) -> str:
    if value != int(value):
        return f"{value:g}"
    # Thousands grouped from five digits on (2,000,000), not in a port number (8080).
    return f"{int(value):,}" if abs(value) >= 10_000 else str(int(value))


def _size(value: int) -> str:
    for unit in "tgmk":
        if value and value % _UNITS[unit] == 0:
            return f"{value // _UNITS[unit]}{unit}"
    return str(value)


def _help(item: Setting) -> str:
    extra = []
    if item.default is not None and item.parse is parse_size:
        extra.append(f"default {_size(item.default)}")
    elif item.default is not None and item.kind in (int, float):
        extra.append(f"default {_number(item.default)}")
    if item.safe_ceiling is not None:
        extra.append(f"rlm serve caps it at {_number(item.safe_ceiling)} unless set")
    extra.append(f"${item.env}")
    return f"{item.help} ({'; '.join(extra)})"


def flag_values(args: argparse.Namespace, command: str = "run") -> dict[str, Any]:
    """The settings of ``command`` given as flags in ``args`` (None = not given), for
    ``load_config`` (another command's flag of the same name, e.g. ``rlm mcp --port``, is not
    one of them)."""
    return {
        s.name: getattr(args, s.name)
        for s in SETTINGS
        if command in s.commands and hasattr(args, s.name)
    }


def value_of(values: Mapping[str, Any], name: str) -> Any:
    """The setting ``name`` from layered ``values`` (:func:`engine.config.load_values`), else
    its declared default."""
    return values[name] if name in values else setting(name).default


def env_values(env: Mapping[str, str], names: Iterable[Setting] = SETTINGS) -> dict[str, Any]:
    """The settings set in ``env`` (empty values are unset), parsed."""
    values: dict[str, Any] = {}
    for item in names:
        raw = env.get(item.env)
        if raw is not None and raw.strip() != "":
            values[item.name] = item.convert(raw, f"${item.env}")
    return values
