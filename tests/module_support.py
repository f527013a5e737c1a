"""Loading a source file as a module: the sandbox runtime and benchmark scripts, which are not
packages the tests can import by name."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_module(name: str, path: Path) -> ModuleType:
    """Execute ``path`` as module ``name``, registered in ``sys.modules`` first (dataclasses
    resolve their annotations through it)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
