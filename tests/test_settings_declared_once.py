"""Each setting is declared once (engine.settings) and every way to give it is derived from it."""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from engine import config as engine_config
from engine import settings
from engine.cli.run import add_engine_arguments
from engine.cli.serve import add_model_flags
from engine.config import Limits, load_config, load_values, read_config_file
from engine.errors import ConfigError
from engine.sandbox import SandboxConfig
from engine.sandbox import config as sandbox_config
from engine.service import openapi
from engine.service.requests import (
    LIMIT_SETTINGS,
    ApiError,
    capped_limits,
    check_ceilings,
    limits_with,
    parse_limits,
)

# A value each setting accepts, as text (what a flag, a variable or a TOML string gives).
SAMPLES = {
    int: "7",
    float: "2.5",
    str: "openai/some-model",
    Path: "/tmp/some-file.jsonl",
}


def _sample(item: settings.Setting) -> str:
    if item.parse is settings.parse_size:
        return "64m"
    if item.name == "database_url":
        return "postgresql://rlm@db.internal:5432/rlm"
    if item.name == "lease_seconds":
        return "45"
    if item.name == "prompt_profile":
        return "small"
    if item.name == "cache":
        return "all"
    return SAMPLES.get(item.kind, "x")


SCALARS = [s for s in settings.SETTINGS if s.kind in SAMPLES and not s.repeat]


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"rlm {command}")
    (add_engine_arguments if command == "run" else add_model_flags)(parser)
    return parser


@pytest.mark.parametrize("item", SCALARS, ids=lambda s: s.name)
def test_settings_every_setting_works_from_env_toml_and_its_flags(
    item: settings.Setting, tmp_path: Path
) -> None:
    text = _sample(item)
    expected = item.parse(text)
    from_env = load_values(env={item.env: text}, config_file=None)
    assert from_env == {item.name: expected}
    table = f"[{item.section}]\n" if item.section else ""
    toml = tmp_path / "rlm.toml"
    toml.write_text(f'{table}{item.name} = "{text}"\n')
    assert read_config_file(toml) == {item.name: expected}
    for command in item.commands:
        parsed = _parser(command).parse_args([item.flag_name, text])
        flags = settings.flag_values(parsed, command)
        assert load_values(flags, env={}, config_file=None) == {item.name: expected}


def test_settings_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    toml = tmp_path / "rlm.toml"
    toml.write_text("[limits]\nmax_iterations = 5\nmax_depth = 2\nmax_tokens = 100\n")
    env = {"RLM_MAX_ITERATIONS": "6", "RLM_MAX_DEPTH": "3"}
    cfg = load_config({"max_iterations": 7}, env=env, config_file=toml)
    assert (cfg.limits.max_iterations, cfg.limits.max_depth, cfg.limits.max_tokens) == (7, 3, 100)


def test_settings_limits_defaults_and_checks_come_from_the_declarations() -> None:
    limits = Limits()
    for item in settings.in_section("limits"):
        if item.field:
            assert getattr(limits, item.field) == item.default, item.name
    assert Limits().cell_timeout_s == settings.DEFAULT_CELL_TIMEOUT_S
    with pytest.raises(ConfigError, match="max_wall_time must be greater than 0"):
        Limits(max_wall_time_s=0)
    with pytest.raises(ConfigError, match="max_sub_calls must be 0 or more"):
        Limits(max_sub_calls=-1)
    assert Limits(max_sub_calls=0).max_sub_calls == 0


def test_settings_bad_values_name_where_they_came_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\$RLM_SANDBOX_MEMORY"):
        load_config(env={"RLM_SANDBOX_MEMORY": "lots"}, config_file=None)
    with pytest.raises(ConfigError, match="--max-cost"):
        load_config({"max_cost": "cheap"}, env={}, config_file=None)
    toml = tmp_path / "rlm.toml"
    toml.write_text('[sandbox]\ndisk = "huge"\n')
    with pytest.raises(ConfigError, match=r"sandbox\.disk.*512m, 2g or 2GiB"):
        read_config_file(toml)


def test_settings_one_size_parser() -> None:
    assert engine_config.parse_size is settings.parse_size
    assert sandbox_config.parse_size is settings.parse_size
    assert settings.parse_size("2GiB") == 2 << 30 and settings.parse_size("512m") == 512 << 20
    assert settings.parse_size(4096) == 4096
    with pytest.raises(ValueError, match=r"write e\.g\. 512m"):
        settings.parse_size("two gigs")


def test_settings_sandbox_variables_are_read_by_the_same_declarations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RLM_SANDBOX_MEMORY", "768m")
    monkeypatch.setenv("RLM_SANDBOX_TMP", "32m")
    monkeypatch.setenv("RLM_SANDBOX_CPUS", "0.5")
    monkeypatch.setenv("RLM_SANDBOX_RUNTIME", "runc")
    cfg = SandboxConfig.from_env(pids_limit=99)
    assert (cfg.memory_bytes, cfg.tmp_bytes, cfg.cpus) == (768 << 20, 32 << 20, 0.5)
    assert (cfg.runtime, cfg.pids_limit) == ("runc", 99)
    # The same values through load_config: one parse, one set of names.
    loaded = load_config(config_file=None)
    assert loaded.sandbox is not None and loaded.sandbox.memory_bytes == 768 << 20
    assert not hasattr(cfg, "default_timeout_s")  # one cell-timeout default (engine.settings)


def test_settings_flags_of_run_and_serve_are_derived() -> None:
    parsers = {command: _parser(command) for command in ("run", "serve")}
    serve_help = parsers["serve"].format_help()
    for item in settings.SETTINGS:
        for command, parser in parsers.items():
            # The parser's options, not its help text: a help may name another command's flag.
            has_flag = item.flag_name in parser._option_string_actions
            assert has_flag == (command in item.commands), (item.name, command)
            if command in item.commands:
                assert f"${item.env}" in parser.format_help()
    assert "a job may lower them, never raise them" in serve_help


def test_settings_unknown_flag_name_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'max_turns'"):
        load_config({"max_turns": 3}, env={}, config_file=None)


def test_settings_service_limits_are_the_api_settings() -> None:
    api = [s.name for s in settings.SETTINGS if s.api]
    assert list(LIMIT_SETTINGS) == api
    assert parse_limits({"max_iterations": 4, "max_cost": 0.5, "max_sub_calls": 0}) == {
        "max_iterations": 4,
        "max_cost": 0.5,
        "max_sub_calls": 0,
    }
    with pytest.raises(ApiError, match='unknown budget "turns"'):
        parse_limits({"turns": 3})
    with pytest.raises(ApiError, match="must be positive"):
        parse_limits({"max_wall_time": 0})
    limits = limits_with(Limits(), {"max_wall_time": 30, "max_tokens": 1000})
    assert (limits.max_wall_time_s, limits.max_tokens) == (30, 1000)
    schema = openapi.limits_schema({"max_iterations": 9})
    assert list(schema["properties"]) == api
    assert schema["properties"]["max_iterations"]["maximum"] == 9
    assert schema["properties"]["max_sub_calls"]["minimum"] == 0
    for name, prop in schema["properties"].items():
        assert prop["description"] == settings.setting(name).help
        assert prop["type"] == ("integer" if settings.setting(name).kind is int else "number")


def test_settings_operator_limits_are_ceilings() -> None:
    operator = load_values({"max_iterations": 3, "max_cost": 0.2}, env={}, config_file=None)
    ceilings = settings.service_ceilings(operator)
    assert ceilings["max_iterations"] == 3 and ceilings["max_cost"] == 0.2
    # Unset budgets get the safe ceilings: wall time, tokens, sub-calls, depth.
    safe = {s.name: s.safe_ceiling for s in settings.SETTINGS if s.safe_ceiling is not None}
    assert set(safe) >= {
        "max_wall_time",
        "max_tokens",
        "max_cost",
        "max_sub_calls",
        "max_depth",
        "max_iterations",
        "max_tool_calls",
        "cell_timeout",
    }
    for name in ("max_wall_time", "max_tokens", "max_sub_calls", "max_depth", "cell_timeout"):
        assert ceilings[name] == safe[name]
    check_ceilings({"max_iterations": 3, "max_cost": 0.1}, ceilings)
    with pytest.raises(ApiError) as refused:
        check_ceilings({"max_iterations": 50}, ceilings)
    assert refused.value.status == 422 and refused.value.param == "limits.max_iterations"
    assert "ceiling of 3" in str(refused.value) and "--max-iterations" in str(refused.value)
    # What a job gets when it sets nothing: the defaults, never above a ceiling.
    capped = capped_limits(Limits(max_iterations=3, max_cost_usd=0.2), ceilings)
    assert (capped.max_iterations, capped.max_cost_usd) == (3, 0.2)
    assert capped.max_wall_time_s == safe["max_wall_time"]
    assert capped.max_tokens == safe["max_tokens"] and isinstance(capped.max_tokens, int)
    assert dataclasses.replace(capped, max_depth=1).max_depth == 1
    assert capped_limits(Limits(), settings.service_ceilings({})).max_iterations == 20
    # Every budget a job may set has a ceiling, also when the operator set none.
    assert {s.name for s in settings.api_settings()} <= set(settings.service_ceilings({}))


def test_settings_the_call_cache_and_the_image_cache_are_two_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``RLM_CACHE_DIR`` moves the model-call cache only (conftest.py points it at a
    per-session directory); the image build's caches have ``RLM_IMAGE_CACHE_DIR``."""
    from engine.sandbox import image

    calls, builds = tmp_path / "calls", tmp_path / "builds"
    monkeypatch.setenv("RLM_CACHE_DIR", str(calls))
    monkeypatch.delenv(image.IMAGE_CACHE_ENV, raising=False)
    assert load_config(config_file=None).cache_dir == calls
    assert image.image_cache_dir() == Path.home() / ".cache" / "rlm"
    monkeypatch.setenv(image.IMAGE_CACHE_ENV, str(builds))
    assert image.image_cache_dir() == builds
    assert load_config(config_file=None).cache_dir == calls


def test_settings_cache_variables_are_read_where_they_are_declared() -> None:
    engine_root = Path(engine_config.__file__).parent
    sources = {
        p.relative_to(engine_root).as_posix(): p.read_text() for p in engine_root.rglob("*.py")
    }
    for variable, declared_in in (
        ("RLM_CACHE_DIR", {"settings.py"}),
        ("RLM_IMAGE_CACHE_DIR", {"sandbox/image.py"}),
        ("RLM_SERVICE_DATA_DIR", {"settings.py"}),
        ("RLM_SERVICE_MODELS", {"settings.py"}),
        ("RLM_DATABASE_URL", {"settings.py"}),
    ):
        named = {path for path, text in sources.items() if f'"{variable}"' in text}
        assert named == declared_in, variable


# --- rlm serve's own settings ---------------------------------------------------------------

# Three values of each serve-only setting, as text: the config file's, the environment's and
# the flag's ("{tmp}" is the test's directory).
SERVE_OWN = {
    "host": ("10.0.0.1", "10.0.0.2", "10.0.0.3"),
    "port": ("8001", "8002", "8003"),
    "data_dir": ("{tmp}/file-dir", "{tmp}/env-dir", "{tmp}/flag-dir"),
    "database_url": ("postgresql://a/rlm", "postgresql://b/rlm", "postgres://c:5433/rlm"),
    "lease_seconds": ("4", "5", "6.5"),
    "models": ("{tmp}/file.toml", "{tmp}/env.toml", "{tmp}/flag.toml"),
    "max_sandboxes": ("1", "2", "3"),
    "max_jobs_per_key": ("5", "6", "7"),
    "max_upload": ("1m", "2m", "3g"),
    "max_storage_per_key": ("0", "5m", "7g"),
    "retention_days": ("1", "2", "0.5"),
    "session_idle": ("60", "120", "5"),
    "max_sessions_per_key": ("1", "2", "3"),
    "max_streams_per_key": ("4", "5", "6"),
    "max_session_kernels": ("7", "8", "9"),
}
# Where each lands in ServiceSettings (host and port go to uvicorn).
SERVICE_FIELDS = {
    "max_upload": "max_upload_bytes",
    "lease_seconds": "lease_s",
    "session_idle": "session_idle_s",
}


def _toml_literal(item: settings.Setting, text: str) -> str:
    plain_number = item.kind in (int, float) and item.parse is not settings.parse_size
    return text if plain_number else f'"{text}"'


def test_settings_serve_own_settings_are_all_tested() -> None:
    serve_only = {s.name for s in settings.SETTINGS if s.commands == frozenset({"serve"})}
    assert set(SERVE_OWN) == serve_only
    # Top-level keys of the config file, like the session settings.
    assert all(settings.setting(name).section is None for name in SERVE_OWN)


@pytest.mark.parametrize("name", SERVE_OWN)
def test_settings_serve_own_setting_from_file_env_and_flag_in_that_order(
    name: str, tmp_path: Path
) -> None:
    from engine.service.command import register, service_settings

    item = settings.setting(name)
    in_file, in_env, in_flag = (text.format(tmp=tmp_path) for text in SERVE_OWN[name])
    if name == "models":
        for text in (in_file, in_env, in_flag):
            Path(text).write_text(f'[models.{Path(text).stem}]\nmodel = "openai/x"\n')
    toml = tmp_path / "rlm.toml"
    toml.write_text(f"{name} = {_toml_literal(item, in_file)}\n")
    env = {item.env: in_env}
    argv = ["serve", item.flag_name, in_flag]
    parser = argparse.ArgumentParser(prog="rlm")
    register(parser.add_subparsers())
    flags = settings.flag_values(parser.parse_args(argv), "serve")
    layers = (
        (load_values(env={}, config_file=toml), in_file),
        (load_values(env=env, config_file=toml), in_env),
        (load_values(flags, env=env, config_file=toml), in_flag),
    )
    for values, text in layers:
        expected = item.parse(text)
        assert settings.value_of(values, name) == expected, (name, text)
        if name in ("host", "port"):
            continue
        got = getattr(service_settings(values), SERVICE_FIELDS.get(name, name))
        if name == "models":
            assert got.names == [Path(text).stem]
        elif name == "data_dir":
            assert got == expected.resolve()
        elif name == "max_storage_per_key" and expected == 0:
            assert got is None  # 0 = no quota
        else:
            assert got == expected


def test_settings_serve_defaults_are_the_declared_ones(tmp_path: Path) -> None:
    from engine.service import ServiceSettings
    from engine.service.command import service_settings

    values = load_values(env={}, config_file=None)
    assert settings.value_of(values, "host") == "127.0.0.1"
    assert settings.value_of(values, "port") == 8080
    built = service_settings(values)
    assert built.data_dir == (Path.home() / ".local/share/rlm/service").resolve()
    assert built.database_url is None and built.retention_days is None
    assert built.max_upload_bytes == 1 << 30 and built.max_storage_per_key == 10 << 30
    # ServiceSettings' own defaults are the same declarations (one place).
    plain = ServiceSettings(data_dir=built.data_dir)
    for field in dataclasses.fields(ServiceSettings):
        if field.name not in ("models", "ceilings"):
            assert getattr(plain, field.name) == getattr(built, field.name), field.name


@pytest.mark.parametrize(
    ("layer", "name", "raw", "message"),
    [
        ("flag", "port", "0", r"invalid value '0' for --port: expected a TCP port from 1 to"),
        ("env", "port", "70000", r"\$RLM_SERVICE_PORT: expected a TCP port from 1 to 65535"),
        ("env", "max_sandboxes", "0", r"\$RLM_MAX_SANDBOXES: must be greater than 0"),
        ("file", "max_jobs_per_key", "0", r"rlm\.toml: max_jobs_per_key: must be greater than"),
        ("file", "database_url", "mysql://rlm:hunter2@db/rlm", r"database_url: expected a pos"),
        ("flag", "lease_seconds", "2", r"for --lease-seconds: must be at least 3$"),
        ("env", "retention_days", "0", r"\$RLM_RETENTION_DAYS: must be greater than 0"),
        ("file", "max_upload", "12q", r"rlm\.toml: max_upload: cannot read the size '12q'"),
        ("flag", "max_storage_per_key", "12q", r"--max-storage-per-key: cannot read the size"),
        ("env", "session_idle", "-1", r"\$RLM_SESSION_IDLE: must be greater than 0"),
    ],
)
def test_settings_bad_serve_values_name_their_flag_variable_or_key(
    layer: str, name: str, raw: str, message: str, tmp_path: Path
) -> None:
    item = settings.setting(name)
    toml = tmp_path / "rlm.toml"
    toml.write_text(f"{name} = {_toml_literal(item, raw)}\n")
    with pytest.raises(ConfigError, match=message) as refused:
        if layer == "flag":
            load_values({name: raw}, env={}, config_file=None)
        elif layer == "env":
            load_values(env={item.env: raw}, config_file=None)
        else:
            load_values(env={}, config_file=toml)
    assert "hunter2" not in str(refused.value)  # a database URL's password is never shown


def test_settings_bad_serve_values_stop_rlm_serve_with_a_clear_error(tmp_path: Path) -> None:
    from tests.service_support import REPO, rlm_command

    base = {k: v for k, v in os.environ.items() if not k.startswith("RLM_")}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    for argv, env, says in (
        (["--port", "0"], {}, "for --port: expected a TCP port from 1 to 65535"),
        ([], {"RLM_DATABASE_URL": "mysql://rlm:hunter2@db/rlm"}, "for $RLM_DATABASE_URL: exp"),
    ):
        done = subprocess.run(
            rlm_command("serve", "--data-dir", tmp_path / "data", *argv),
            cwd=tmp_path,
            env={**base, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith("rlm: error: invalid ") and says in done.stderr
        assert "Traceback" not in done.stderr and "hunter2" not in done.stderr
        assert not (tmp_path / "data").exists()  # stopped before it touched anything
