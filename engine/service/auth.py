"""API-key authentication: ``Authorization: Bearer <key>`` against a configured list.

Keys are never stored: jobs and files belong to an *owner*, a short hash of the key, so a
key sees only its own jobs and rotating keys needs no database change.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable

from engine.errors import ConfigError

ENV_KEYS = "RLM_API_KEYS"
ENV_METRICS_KEYS = "RLM_METRICS_KEYS"
ANONYMOUS = "anonymous"


def owner_of(key: str) -> str:
    """The owner id of an API key (16 hex digits of its sha256)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


class ApiKeys:
    """The accepted keys; ``enabled=False`` (``rlm serve --no-auth``) lets every request in."""

    def __init__(
        self, keys: Iterable[str], *, enabled: bool = True, variable: str = ENV_KEYS
    ) -> None:
        self._keys = tuple(k for k in (key.strip() for key in keys) if k)
        self.enabled = enabled
        if enabled and not self._keys:
            raise ConfigError(
                f"no API keys configured: set {variable} to a comma-separated list of keys "
                f"(e.g. {variable}=$(openssl rand -hex 24)), or pass --no-auth to serve "
                "without authentication on a trusted network"
            )
        for key in self._keys:
            if len(key) < 8:
                raise ConfigError(
                    f"an API key in {variable} is shorter than 8 characters; use long random "
                    "keys (e.g. `openssl rand -hex 24`)"
                )

    @classmethod
    def from_env(cls, *, enabled: bool = True) -> ApiKeys:
        """Keys from ``$RLM_API_KEYS`` (comma-separated)."""
        return cls(os.environ.get(ENV_KEYS, "").split(","), enabled=enabled)

    @classmethod
    def metrics_from_env(cls, *, enabled: bool = True) -> ApiKeys | None:
        """The operator's keys for ``/metrics`` from ``$RLM_METRICS_KEYS``; None when unset
        (``/metrics`` is then closed, unless authentication is off altogether)."""
        if not enabled:
            return cls((), enabled=False)
        raw = os.environ.get(ENV_METRICS_KEYS, "").split(",")
        if not any(key.strip() for key in raw):
            return None
        return cls(raw, variable=ENV_METRICS_KEYS)

    def authenticate(self, authorization: str | None) -> str | None:
        """Return the owner for an ``Authorization`` header value, or None if refused."""
        if not self.enabled:
            return ANONYMOUS
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        token = token.strip()
        # Compare against every key so the time taken does not tell which one nearly matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(key.encode("utf-8"), token.encode("utf-8"))
        return owner_of(token) if matched else None
