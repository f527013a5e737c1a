"""The models a tenant may ask for: names the operator maps to specs, nothing else.

A request names a model (``"model"``, ``"sub_model"``, or ``"rlm/<name>"`` in the chat API);
the service looks the name up here and runs the operator's spec: its provider string,
endpoint, key and price. A tenant never passes a provider string, an ``api_base`` or a key,
so a job cannot spend the operator's credentials on a model or endpoint they did not choose.

The models file (``rlm serve --models FILE`` or ``$RLM_SERVICE_MODELS``), TOML::

    [models.fast]
    model = "openai/gpt-4o-mini"          # the litellm model string
    api_base = "https://example/v1"       # optional endpoint
    api_key_env = "OPENAI_API_KEY"        # optional: the variable that holds its key
    input_cost_per_million = 0.15         # optional price in USD (litellm's table otherwise;
    output_cost_per_million = 0.60        #   0 for a self-hosted model)
    max_output_tokens = 4096              # optional, also bounds a call's cost under a cap
    context_window = 128000               # optional
    concurrency = 8                       # optional cap on this model's calls in flight (per job)

The service's own root and sub models (``--model``, ``--sub-model``) are always allowed
under their configured names; a file entry of the same name fills in what their configuration
leaves unset (a price, an endpoint, a key), the configuration winning where both set a field.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.models import ModelSpec
from engine.service.requests import ApiError
from engine.user_files import read_toml

_PER_MILLION = 1_000_000
_KEYS = {
    "model": str,
    "api_base": str,
    "api_key_env": str,
    "input_cost_per_million": float,
    "output_cost_per_million": float,
    "max_output_tokens": int,
    "context_window": int,
    "concurrency": int,
    "temperature": float,
}


@dataclass(frozen=True)
class ModelAllowList:
    """Allowed model names and the specs they run (see the module docstring)."""

    specs: Mapping[str, ModelSpec]

    @property
    def names(self) -> list[str]:
        return sorted(self.specs)

    def resolve(self, name: str, param: str) -> ModelSpec:
        """The spec for ``name``, or a 422 that names the allowed models."""
        spec = self.specs.get(name)
        if spec is None:
            raise ApiError(
                422,
                "model_not_allowed",
                f"model {name!r} is not offered by this service; allowed: "
                f"{', '.join(self.names)} (GET /v1/models)",
                param,
            )
        return spec

    def with_defaults(self, *defaults: ModelSpec) -> ModelAllowList:
        """Also allow the service's own models under their names; a file entry of the same
        name fills the fields their configuration leaves unset (e.g. the price)."""
        merged = dict(self.specs)
        for spec in defaults:
            listed = self.specs.get(spec.model)
            if listed is not None:
                gaps = {
                    f.name: getattr(listed, f.name)
                    for f in dataclasses.fields(spec)
                    if getattr(spec, f.name) is None
                }
                spec = dataclasses.replace(spec, **gaps)
            merged[spec.model] = spec
        return ModelAllowList(merged)


def load_allow_list(path: Path | None, env: Mapping[str, str] | None = None) -> ModelAllowList:
    """Read the models file ``path`` (the ``models`` setting: ``--models``,
    ``$RLM_SERVICE_MODELS`` or the config file); empty when None. ``env`` holds the
    variables the files' ``api_key_env`` names (default ``os.environ``)."""
    env = os.environ if env is None else env
    if path is None:
        return ModelAllowList({})
    data = read_toml(path.expanduser(), "the models file")
    unknown = sorted(set(data) - {"models"})
    if unknown:
        raise ConfigError(
            f"models file {path}: unknown key(s) {', '.join(unknown)}; use [models.NAME] tables"
        )
    tables = data.get("models", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"models file {path}: [models] must hold tables like [models.fast]")
    specs = {name: _spec(path, name, table, env) for name, table in tables.items()}
    return ModelAllowList(specs)


def _spec(path: Path, name: str, table: Any, env: Mapping[str, str]) -> ModelSpec:
    where = f"models file {path}: [models.{name}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    for key, value in table.items():
        kind = _KEYS.get(key)
        if kind is None:
            raise ConfigError(f"{where}: unknown key {key!r}; known: {', '.join(_KEYS)}")
        ok = isinstance(value, int | float) if kind is float else isinstance(value, kind)
        if isinstance(value, bool) or not ok:
            raise ConfigError(f"{where}: {key} must be a {kind.__name__} (got {value!r})")
        if kind is float and not math.isfinite(value):
            # TOML has nan and inf: a nan price passes "must be 0 or more" and every cost
            # comparison after it.
            raise ConfigError(f"{where}: {key} must be a finite number (got {value!r})")
    if "model" not in table:
        raise ConfigError(f'{where} needs model = "<litellm model string>"')
    key = None
    if "api_key_env" in table:
        key = env.get(table["api_key_env"])
        if not key:
            raise ConfigError(f"{where}: the variable {table['api_key_env']} is not set")

    def price(field: str) -> float | None:
        value = table.get(field)
        if value is None:
            return None
        if value < 0:
            raise ConfigError(f"{where}: {field} must be 0 or more")
        return float(value) / _PER_MILLION

    try:
        return ModelSpec(
            table["model"],
            api_base=table.get("api_base"),
            api_key=key,
            max_tokens=table.get("max_output_tokens"),
            temperature=table.get("temperature"),
            concurrency=table.get("concurrency"),
            context_window=table.get("context_window"),
            input_cost_per_token=price("input_cost_per_million"),
            output_cost_per_token=price("output_cost_per_million"),
        )
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
