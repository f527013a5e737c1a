"""Where benchmark data lives (kept apart from the fetching code so readers import little)."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    """The benchmark data directory: ``$RLM_DATA_DIR``, else ``~/.cache/rlm/data``."""
    env = os.environ.get("RLM_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rlm" / "data"
