"""Set up and run the peer for ``bench_sandbox.py``: ``rlms`` (alexzhang13/rlm) ``DockerREPL``.

* Its own virtual environment, ``out/bench/peer-venv``, with ``rlms==PEER_VERSION`` installed
  from PyPI by ``pip`` (kept between runs; reinstalled when the version differs). Our venv
  stays untouched, and the peer's code runs exactly as published.
* Its image, built offline from OUR sandbox image (no registry: ``docker pull`` does not work
  here). ``DockerREPL`` needs ``python``, ``requests`` and ``dill`` in the image and runs
  ``pip install dill requests`` in the container at start-up; our image has no pip and no
  network, so the two packages (and ``requests``' own dependencies) are installed on the host
  into a folder that the derived image adds to ``PYTHONPATH`` (their docstring: "use any
  Python 3.11+ image with: pip install dill requests"). The derived image also runs as root,
  like the peer's default ``python:3.11-slim``: ``DockerREPL`` writes its pickled state into
  a bind-mounted host folder created by the host user, which our image's uid 1000 may not
  write. Its in-container ``pip install`` then fails at once (no pip) and is ignored by the
  peer, as designed.
* Nothing else is changed: ``docker run`` under Docker's default runtime with the peer's own
  flags, ``docker exec`` per cell, its HTTP proxy on the host.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import docker

from benchmarks.results import DEFAULT_DIR

PEER_VERSION = "0.1.3"
PEER_PACKAGES = ("requests", "dill")
DRIVER = Path(__file__).resolve().with_name("peer_rlms.py")
IMAGE_REPO = "rlm-bench-peer"

_DOCKERFILE = """\
FROM {base}
COPY site /opt/peer-site
ENV PYTHONPATH=/opt/peer-site:/opt/rlm-runtime
USER 0:0
LABEL rlm-engine.bench=peer
"""


def _pip(venv: Path, *args: str) -> None:
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "-q", "--disable-pip-version-check", *args],
        check=True,
    )


def _installed_version(venv: Path) -> str | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    probe = "import importlib.metadata as m; print(m.version('rlms'))"
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def ensure_venv(venv: Path = DEFAULT_DIR / "peer-venv", version: str = PEER_VERSION) -> Path:
    """The peer's venv with ``rlms==version`` (installed from PyPI if missing); its python."""
    if _installed_version(venv) != version:
        print(f"installing rlms=={version} into {venv} (PyPI, once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        _pip(venv, "install", f"rlms=={version}")
    return venv / "bin" / "python"


def ensure_image(base: str, venv: Path = DEFAULT_DIR / "peer-venv") -> str:
    """Our image ``base`` plus ``requests`` and ``dill``, as root; built once per base image."""
    client = docker.from_env()
    try:
        base_id = client.images.get(base).id.split(":", 1)[-1]
        tag = f"{IMAGE_REPO}:{base_id[:12]}"
        try:
            client.images.get(tag)
            return tag
        except docker.errors.ImageNotFound:
            pass
        print(f"building {tag} from {base} (offline)", flush=True)
        with tempfile.TemporaryDirectory(prefix="rlm-bench-peer-") as tmp:
            folder = Path(tmp)
            _pip(venv, "install", "--target", str(folder / "site"), *PEER_PACKAGES)
            shutil.rmtree(folder / "site" / "bin", ignore_errors=True)
            (folder / "Dockerfile").write_text(_DOCKERFILE.format(base=base))
            client.images.build(path=str(folder), tag=tag, rm=True, pull=False)
        return tag
    finally:
        client.close()


def run_peer(
    python: Path,
    image: str,
    *,
    starts: int,
    sizes_mb: list[int],
    cells: list[int],
    workspace: Path = DEFAULT_DIR / "peer-workspace",
) -> dict[str, Any]:
    """Run ``peer_rlms.py`` in the peer's venv and return its measurements."""
    workspace.mkdir(parents=True, exist_ok=True)
    settings = {
        "image": image,
        "starts": starts,
        "sizes_mb": sizes_mb,
        "cells": cells,
        "workspace": str(workspace),
    }
    out = subprocess.run(
        [str(python), str(DRIVER), json.dumps(settings)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"the peer benchmark failed: {out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result
