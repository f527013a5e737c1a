"""Build the engine's Docker image offline, the same way as the sandbox image.

    python deploy/build.py [build] [--tag rlm-engine:latest] [--force]
    python deploy/build.py lock      # re-pin deploy/requirements.txt from the project's venv

The base image is the sandbox's Debian base (bootstrapped from the host's apt sources if
missing); the wheels pinned in ``deploy/requirements.txt`` are downloaded on the host for the
base image's Python, so the Dockerfile never touches a network. The image is tagged with a hash
of everything that goes into it (base image, Dockerfile, pins, source), which makes a rebuild
with nothing changed a no-op taking about a second.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as metadata
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
REQUIREMENTS = DEPLOY / "requirements.txt"
DEFAULT_TAG = "rlm-engine:latest"
FINGERPRINT_LABEL = "rlm-engine.fingerprint"
# What the engine needs at run time: pyproject's dependencies plus these extras (read from
# pyproject.toml, so a dependency added there is never missing from the image).
RUNTIME_EXTRAS = ("local",)
_SOURCE_DIRS = ("engine", "sandbox-image")

sys.path.insert(0, str(REPO))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def runtime_requirements() -> list[str]:
    """pyproject.toml's dependencies and those of :data:`RUNTIME_EXTRAS`."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return [*project["dependencies"], *(r for name in RUNTIME_EXTRAS for r in extras[name])]


def lock(target: Path = REQUIREMENTS) -> list[str]:
    """Pin the run-time dependency closure to the versions installed in this environment."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    environment = default_environment()
    pins: dict[str, str] = {}
    stack: list[tuple[str, tuple[str, ...]]] = [
        (req.name, tuple(req.extras)) for req in map(Requirement, runtime_requirements())
    ]
    while stack:
        name, extras = stack.pop()
        key = name.lower().replace("_", "-")
        if key in pins:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError as exc:
            raise SystemExit(f"{name} is not installed here; run `make venv` first") from exc
        pins[key] = dist.version
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker and not any(
                requirement.marker.evaluate({**environment, "extra": extra})
                for extra in (extras or ("",))
            ):
                continue
            stack.append((requirement.name, tuple(requirement.extras)))
    lines = [f"{name}=={version}" for name, version in sorted(pins.items())]
    header = "# The engine image's pinned dependencies; regenerate: python deploy/build.py lock\n"
    target.write_text(header + "\n".join(lines) + "\n")
    return lines


def source_files() -> list[Path]:
    files = [DEPLOY / "Dockerfile", REQUIREMENTS, REPO / "pyproject.toml"]
    for folder in _SOURCE_DIRS:
        files += sorted(
            p
            for p in (REPO / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        )
    return files


def fingerprint(base_id: str, python_version: str) -> str:
    digest = hashlib.sha256(f"{base_id}\n{python_version}\n".encode())
    for path in source_files():
        digest.update(str(path.relative_to(REPO)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def python_version(image: str) -> str:
    from engine.sandbox import docker_api

    output = docker_api.client().containers.run(
        image,
        ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        network_mode="none",
        remove=True,
    )
    return output.decode().strip()


def build(tag: str = DEFAULT_TAG, *, force: bool = False) -> str:
    """Build (or reuse) the engine image; returns the fingerprint-pinned tag."""

    from engine.sandbox import docker_api
    from engine.sandbox.image import docker_build, ensure_base_image, ensure_wheelhouse

    started = time.perf_counter()
    client = docker_api.client()
    base = ensure_base_image(progress=say)
    version = python_version(base)
    print_tag = tag.rsplit(":", 1)[0] if ":" in tag.rsplit("/", 1)[-1] else tag
    pinned = f"{print_tag}:{fingerprint(client.images.get(base).id, version)[:12]}"
    if not force and reuse(client, pinned, tag, started):
        return pinned
    wheelhouse = ensure_wheelhouse(REQUIREMENTS, version, progress=say)
    with tempfile.TemporaryDirectory(prefix="rlm-engine-image-") as tmp:
        context = Path(tmp)
        shutil.copy2(DEPLOY / "Dockerfile", context / "Dockerfile")
        shutil.copy2(REQUIREMENTS, context / "requirements.txt")
        (context / "wheelhouse").mkdir()
        for wheel in wheelhouse.glob("*.whl"):
            try:
                os.link(wheel, context / "wheelhouse" / wheel.name)
            except OSError:
                shutil.copy2(wheel, context / "wheelhouse" / wheel.name)
        for folder in _SOURCE_DIRS:
            shutil.copytree(
                REPO / folder,
                context / "src" / folder,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
        say(f"building {pinned} from {base}")
        labels = {FINGERPRINT_LABEL: pinned.rsplit(":", 1)[1], "rlm-engine.image": "engine"}
        docker_build(context, pinned, base, labels, what="engine", progress=say)
    client.images.get(pinned).tag(tag)
    say(f"built {tag} ({pinned}) in {time.perf_counter() - started:.0f} s")
    _remove_stale(client, print_tag, pinned)
    return pinned


def reuse(client: Any, pinned: str, tag: str, started: float) -> bool:
    """Tag the existing image ``pinned`` as ``tag``; False when there is none (build it)."""
    import docker.errors

    try:
        client.images.get(pinned).tag(tag)
    except docker.errors.ImageNotFound:
        return False
    say(f"image {tag} is up to date ({pinned}, {time.perf_counter() - started:.1f} s)")
    return True


def _remove_stale(client: object, repository: str, keep: str) -> None:
    """Untag earlier fingerprint-pinned builds so that old images do not pile up."""
    import docker.errors

    for image in client.images.list(name=repository):  # type: ignore[attr-defined]
        for name in image.tags:
            suffix = name.rsplit(":", 1)[-1]
            if (
                name == keep
                or len(suffix) != 12
                or not all(c in "0123456789abcdef" for c in suffix)
            ):
                continue
            try:
                client.images.remove(name)  # type: ignore[attr-defined]
            except docker.errors.APIError:
                continue  # still used by a container; the next build tries again


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", nargs="?", default="build", choices=["build", "lock"])
    parser.add_argument("--tag", default=DEFAULT_TAG)
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args()
    if args.action == "lock":
        print(f"pinned {len(lock())} packages in {REQUIREMENTS}")
        return 0
    from engine.errors import RLMError

    try:
        print(build(args.tag, force=args.force))
    except RLMError as exc:
        print(f"deploy/build.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
