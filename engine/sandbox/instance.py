"""This engine's instance id: which sandbox containers on a shared Docker daemon are ours.

Every container is labelled with it, and the orphan reaper only ever touches containers with
its own id, so two stacks on one daemon (two compose projects, say, whose engine containers
share a host name and PID numbers) never reap each other's sandboxes. The id is
``$RLM_INSTANCE_ID`` or a random id kept in ``~/.cache/rlm/instance-id``: stable across
restarts of one installation (so a restarted engine reaps what its crashed predecessor left),
different between installations.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
from pathlib import Path

from engine.errors import ConfigError

_VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def instance_file() -> Path:
    return Path.home() / ".cache" / "rlm" / "instance-id"


@functools.cache
def instance_id() -> str:
    """The id of this installation (``$RLM_INSTANCE_ID`` wins), created on first use."""
    configured = os.environ.get("RLM_INSTANCE_ID", "").strip()
    if configured:
        if not _VALID.fullmatch(configured):
            raise ConfigError(
                f"RLM_INSTANCE_ID {configured!r} is not valid: use up to 64 letters, digits, "
                "'.', '_' or '-'"
            )
        return configured
    path = instance_file()
    with contextlib.suppress(OSError):
        existing = path.read_text(encoding="utf-8").strip()
        if _VALID.fullmatch(existing):
            return existing
    fresh = secrets.token_hex(8)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".instance-id.{os.getpid()}")
        tmp.write_text(fresh + "\n", encoding="utf-8")
        # link, not replace: two processes starting at once agree on the first id written.
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        existing = path.read_text(encoding="utf-8").strip()
    except OSError:
        return fresh  # an unwritable home: this process's sandboxes still share one id
    return existing if _VALID.fullmatch(existing) else fresh
