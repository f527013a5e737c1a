"""The built wheel, installed into a fresh virtual environment, is a working ``rlm``.

Builds the wheel (``pip wheel --no-deps``, hatchling in an isolated build), creates a venv
without the checkout or the shared venv on its path, installs the wheel there offline from a
local wheelhouse (``pip download``-ed once per dependency set into ``~/.cache/rlm/test-wheels``,
so later runs need no index), and runs that venv's ``rlm``: ``doctor`` (also with Docker
unreachable and with the image missing), ``image build`` from the files the wheel carries, its
wheelhouse step (``pip download`` through the venv's pip) into an empty cache, ``sandbox exec``
in a real container, and ``run`` with a replayed model.

Select with ``-m package``; about 2-3 minutes when the wheelhouse is cached.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.package, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[1]
IMAGE_SOURCE = ROOT / "sandbox-image"
WHEEL_TAG = "rlm-sandbox:h-package-wheel"


def _run(command: list[str], *, timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)


def _checked(command: list[str], *, timeout: float, **kwargs: Any) -> str:
    done = _run(command, timeout=timeout, **kwargs)
    assert done.returncode == 0, f"{command[:4]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _checked([*pip, "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)], timeout=300)
    (built,) = out.glob("rlm_engine-*.whl")
    return built


def _requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(name).decode())
    return sorted(metadata.get_all("Requires-Dist") or [])


def _wheelhouse(wheel: Path) -> Path:
    """Wheels of every dependency of ``wheel`` (not of extras), downloaded once per set."""
    key = json.dumps([_requirements(wheel), sys.version_info[:2]]).encode()
    # The user's cache, kept across test sessions (a per-session dir would download the
    # whole set again on every run).
    wheels = Path.home() / ".cache" / "rlm" / "test-wheels"
    target = wheels / hashlib.sha256(key).hexdigest()[:16]
    wheels.mkdir(parents=True, exist_ok=True)
    # Another test session (a parallel run, another checkout) may fill the same set.
    with (wheels / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / ".complete").exists():
            target.mkdir(exist_ok=True)
            pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
            _checked([*pip, "download", "-q", "-d", str(target), str(wheel)], timeout=900)
            (target / ".complete").write_text("")
        # Sets for older dependency lists are not needed again (about 100 MB each).
        for stale in wheels.iterdir():
            if stale not in (target, wheels / ".lock"):
                shutil.rmtree(stale, ignore_errors=True)
    return target


def _clean_env(**extra: str) -> dict[str, str]:
    """No checkout, shared venv or test settings leaking into the installed ``rlm``."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("RLM_")}
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    return {**env, **extra}


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    wheelhouse = _wheelhouse(wheel)
    path = tmp_path_factory.mktemp("venv")
    # The interpreter the shared venv was made from, not the venv itself.
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    _checked([str(base), "-m", "venv", str(path)], timeout=300, env=_clean_env())
    pip = [str(path / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    _checked(
        [*pip, "install", "-q", "--no-index", "--find-links", str(wheelhouse), str(wheel)],
        timeout=600,
        env=_clean_env(),
    )
    yield path


def _rlm(
    venv: Path, *args: str, cwd: Path, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    return _run([str(venv / "bin" / "rlm"), *args], timeout=timeout, cwd=cwd, env=_clean_env(**env))


def test_the_wheel_carries_the_sandbox_image_files(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        expected = {
            "engine/_sandbox_image/" + str(path.relative_to(IMAGE_SOURCE))
            for path in IMAGE_SOURCE.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        }
        assert "engine/_sandbox_image/Dockerfile" in expected
        assert expected <= names
        for name in expected:
            source = IMAGE_SOURCE / name.removeprefix("engine/_sandbox_image/")
            assert archive.read(name) == source.read_bytes(), name
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "rlm = engine.cli.main:main" in archive.read(entry_points).decode()
        assert not [n for n in names if n.startswith(("tests/", "benchmarks/"))]


def test_installed_engine_is_the_wheel_not_the_checkout(venv: Path, tmp_path: Path) -> None:
    code = (
        "import engine, engine.sandbox.image as image; "
        "print(engine.__file__); print(image.image_source_dir())"
    )
    out = _checked(
        [str(venv / "bin" / "python"), "-c", code], timeout=60, cwd=tmp_path, env=_clean_env()
    )
    module, source = out.split()
    assert Path(module).is_relative_to(venv) and not Path(module).is_relative_to(ROOT)
    assert Path(source) == Path(module).parent / "_sandbox_image"


def test_doctor_says_what_is_missing(venv: Path, tmp_path: Path) -> None:
    down = _rlm(venv, "doctor", cwd=tmp_path, DOCKER_HOST="unix:///nonexistent/docker.sock")
    assert down.returncode == 1
    assert "[FAIL] docker: cannot reach the Docker daemon" in down.stdout
    assert "fix: Start the Docker daemon" in down.stdout
    # The model is checked even when Docker is down; this venv has no xllamacpp.
    assert "[warn] model: the embedded local model" in down.stdout
    assert "needs xllamacpp" in down.stdout and "pip install 'rlm-engine[local]'" in down.stdout
    no_image = _rlm(venv, "doctor", cwd=tmp_path, RLM_SANDBOX_IMAGE="rlm-sandbox:no-such-tag")
    assert no_image.returncode == 1
    assert "[FAIL] image: rlm-sandbox:no-such-tag is not built" in no_image.stdout
    assert "fix: run `rlm image build`" in no_image.stdout
    assert "Traceback" not in down.stderr + no_image.stderr
    hosted = _rlm(venv, "doctor", cwd=tmp_path, RLM_MODEL="openai/gpt-4o-mini", DOCKER_HOST="x")
    assert "[ok  ] model: openai/gpt-4o-mini" in hosted.stdout


def test_wheelhouse_step_runs_from_the_installed_package(venv: Path, tmp_path: Path) -> None:
    # The image build's wheelhouse step (pip download for the image's Python, through this
    # venv's own pip) on a one-line requirements file, into an empty cache.
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("typing_extensions==4.16.0\n")
    code = (
        "import sys; from pathlib import Path; from engine.sandbox.image import ensure_wheelhouse; "
        "print(ensure_wheelhouse(Path(sys.argv[1]), '3.11'))"
    )
    out = _checked(
        [str(venv / "bin" / "python"), "-c", code, str(requirements)],
        timeout=300,
        cwd=tmp_path,
        env=_clean_env(RLM_IMAGE_CACHE_DIR=str(tmp_path / "cache")),
    )
    wheelhouse = Path(out.strip())
    assert wheelhouse.is_relative_to(tmp_path / "cache" / "wheelhouse")
    wheels = [path.name for path in wheelhouse.glob("*.whl")]
    assert wheels == ["typing_extensions-4.16.0-py3-none-any.whl"]


@pytest.mark.usefixtures("docker_ready")
def test_image_build_doctor_exec_and_run_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    built = _rlm(venv, "image", "build", "--tag", WHEEL_TAG, cwd=tmp_path, timeout=1200)
    assert built.returncode == 0, built.stderr
    assert f"{WHEEL_TAG} " in built.stdout
    # Same files, same fingerprint: the wheel's image is the checkout's image.
    from engine.sandbox import docker_api
    from engine.sandbox.image import _fingerprint, _python_version, ensure_base_image

    client = docker_api.client()
    base = ensure_base_image()
    checkout = _fingerprint(IMAGE_SOURCE, client.images.get(base).id, _python_version(base))
    labels = client.images.get(WHEEL_TAG).attrs["Config"]["Labels"]
    assert labels["rlm-engine.fingerprint"] == checkout

    doctor = _rlm(venv, "doctor", cwd=tmp_path, RLM_SANDBOX_IMAGE=WHEEL_TAG)
    lines = doctor.stdout.splitlines()
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    for name in ("docker", "image", "sandbox", "non-root", "network", "read-only root"):
        assert any(line.startswith(f"[ok  ] {name}:") for line in lines), (name, doctor.stdout)

    executed = _rlm(
        venv,
        "sandbox",
        "exec",
        "--code",
        "import sys, os; print(sys.version_info[:2] >= (3, 11), os.getuid(), 6 * 7)",
        cwd=tmp_path,
        RLM_SANDBOX_IMAGE=WHEEL_TAG,
    )
    assert executed.returncode == 0, executed.stderr
    assert executed.stdout.split() == ["True", "1000", "42"]

    (tmp_path / "ctx.txt").write_text("abcabcabb")
    solve = "```repl\nanswer['content'] = str(context.count('b'))\nanswer['ready'] = True\n```"
    cassette = tmp_path / "c.jsonl"
    cassette.write_text(json.dumps({"match": {"model": "root"}, "response": {"content": solve}}))
    ran = _rlm(
        venv,
        "run",
        "--context",
        "ctx.txt",
        "--query",
        "how many b?",
        "--model",
        "openai/root",
        "--replay",
        str(cassette),
        cwd=tmp_path,
        RLM_SANDBOX_IMAGE=WHEEL_TAG,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "4\n"
