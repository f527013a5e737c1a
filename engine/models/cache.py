"""A content-addressed cache of model calls, in SQLite, shared by runs, evals and the service.

The key is a SHA-256 over everything that decides a reply: the model string, the API base, the
normalised messages, the stop strings, the sampling parameters and any tools, and the cache's
``scope`` when it has one. The service scopes each job's cache to its key's owner: a shared
entry would tell one tenant that another sent exactly that prompt (the hit shows in the job's
result, its trajectory and the call's time) and hand it the reply. The value is the
reply and the usage the provider reported, so a hit can say how many tokens it saved.

Modes: ``off`` never reads or writes; ``deterministic`` (the default) caches only calls whose
reply is meant to be reproducible (temperature 0 or a fixed seed), so sampling a model twice on
purpose still gives two samples; ``all`` caches every call, which makes a repeated run send no
request at all.

Concurrency: many sandboxes of one process and several processes (an eval, the service) may
share one file. SQLite in WAL mode with a busy timeout serialises the writers; every operation is
one short transaction run in a worker thread, so the event loop never waits on the file lock.
Size: ``max_bytes`` bounds the stored replies; past it the least recently used entries go.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio.to_thread

from engine.errors import ConfigError
from engine.settings import CACHE_MODES

CacheMode = Literal["off", "deterministic", "all"]
DEFAULT_MAX_BYTES = 1 << 30
_SCHEMA_VERSION = 1


def default_cache_dir() -> Path:
    """Where the cache lives unless ``cache_dir`` (``RLM_CACHE_DIR``) says otherwise."""
    return Path.home() / ".cache" / "rlm" / "cache"


def parse_mode(value: str) -> CacheMode:
    """Check a cache mode given by a user; the error names the valid ones."""
    if value not in CACHE_MODES:
        raise ConfigError(f"cache mode must be one of {', '.join(CACHE_MODES)}, got {value!r}")
    return value  # type: ignore[return-value]


def cache_key(
    *,
    model: str,
    api_base: str | None,
    messages: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    scope: str | None = None,
) -> str:
    """The SHA-256 (hex) of a call's content. ``params`` holds sampling settings, stop, tools;
    ``scope`` keeps entries apart (None: the unscoped entries the CLI shares between runs)."""
    content: dict[str, Any] = {
        "v": _SCHEMA_VERSION,
        "model": model,
        "api_base": api_base,
        "messages": list(messages),
        "params": {k: v for k, v in params.items() if v is not None},
    }
    if scope is not None:
        content["scope"] = scope
    canonical = json.dumps(
        content,
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def is_deterministic(params: Mapping[str, Any]) -> bool:
    """Whether a call asks for a reproducible reply: temperature 0 or a fixed seed."""
    temperature = params.get("temperature")
    return params.get("seed") is not None or (temperature is not None and float(temperature) == 0)


@dataclass(frozen=True)
class CachedReply:
    """What a hit returns: the reply and the usage of the call that produced it."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class CallCache:
    """The SQLite cache file. Thread- and process-safe; see the module docstring.

    ``scope`` is part of every key this object reads and writes: objects of different scopes
    share the file but never an entry.
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        mode: CacheMode = "deterministic",
        max_bytes: int = DEFAULT_MAX_BYTES,
        scope: str | None = None,
    ) -> None:
        if max_bytes < 1:
            raise ConfigError(f"the cache size limit must be positive, got {max_bytes}")
        self.mode = parse_mode(mode)
        self.path = path or default_cache_dir() / "calls.sqlite"
        self.max_bytes = max_bytes
        self.scope = scope
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    @classmethod
    def at(
        cls,
        directory: Path | None,
        *,
        mode: str,
        max_bytes: int | None = None,
        scope: str | None = None,
    ) -> CallCache:
        """The cache file in ``directory`` (default :func:`default_cache_dir`)."""
        path = (directory or default_cache_dir()) / "calls.sqlite"
        return cls(
            path, mode=parse_mode(mode), max_bytes=max_bytes or DEFAULT_MAX_BYTES, scope=scope
        )

    def applies(self, params: Mapping[str, Any]) -> bool:
        """Whether this cache reads and writes a call with these sampling ``params``."""
        if self.mode == "off":
            return False
        return self.mode == "all" or is_deterministic(params)

    async def get(self, key: str) -> CachedReply | None:
        """The stored reply for ``key`` (and mark it recently used), or ``None``."""
        return await anyio.to_thread.run_sync(self._get, key)

    async def put(self, key: str, model: str, reply: CachedReply) -> None:
        """Store ``reply`` under ``key``, then evict past ``max_bytes``."""
        await anyio.to_thread.run_sync(self._put, key, model, reply)

    def stats(self) -> dict[str, int]:
        """Entries and stored bytes (for ``rlm cache`` style reporting and tests)."""
        with self._lock:
            db = self._connect()
            entries, size = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM calls"
            ).fetchone()
        return {"entries": int(entries), "bytes": int(size)}

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: explicit BEGIN IMMEDIATE below, so two writers queue on the
            # file lock (busy timeout) instead of failing with "database is locked".
            db = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=30000")
            db.execute(
                "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, model TEXT NOT NULL, "
                "value TEXT NOT NULL, size INTEGER NOT NULL, created REAL NOT NULL, "
                "used REAL NOT NULL)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS calls_used ON calls (used)")
            self._db = db
        return self._db

    def _get(self, key: str) -> CachedReply | None:
        with self._lock:
            db = self._connect()
            row = db.execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE calls SET used = ? WHERE key = ?", (time.time(), key))
        try:
            value = json.loads(row[0])
            return CachedReply(
                text=str(value["text"]),
                finish_reason=value.get("finish_reason"),
                prompt_tokens=int(value["prompt_tokens"]),
                completion_tokens=int(value["completion_tokens"]),
                cost_usd=float(value["cost_usd"]),
            )
        except (ValueError, KeyError, TypeError):
            # A row from another version of this cache: treat as a miss; the put replaces it.
            return None

    def _put(self, key: str, model: str, reply: CachedReply) -> None:
        value = json.dumps(reply.__dict__, ensure_ascii=False)
        size = len(value.encode("utf-8"))
        now = time.time()
        with self._lock:
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT OR REPLACE INTO calls (key, model, value, size, created, used) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (key, model, value, size, now, now),
                )
                self._evict(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _evict(self, db: sqlite3.Connection) -> None:
        (total,) = db.execute("SELECT COALESCE(SUM(size), 0) FROM calls").fetchone()
        if total <= self.max_bytes:
            return
        # Evict down to 90% so that a full cache does not pay an eviction on every put.
        target = int(self.max_bytes * 0.9)
        freed = 0
        doomed: list[str] = []
        for key, size in db.execute("SELECT key, size FROM calls ORDER BY used ASC"):
            if total - freed <= target:
                break
            doomed.append(key)
            freed += int(size)
        db.executemany("DELETE FROM calls WHERE key = ?", [(k,) for k in doomed])
