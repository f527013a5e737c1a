"""Build the sandbox image with no container registry.

The base image is used if present (or pulled, when the user names a registry image); else a
Debian root file system is bootstrapped with ``debootstrap`` from the host's own apt sources
and imported. Python packages come from a wheelhouse downloaded on the host with ``pip
download`` for the base image's Python, so the Dockerfile never touches a network. The final
image is tagged with a hash of everything that goes into it, which makes a rebuild with nothing
changed a no-op.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker.errors

from engine.errors import ImageError
from engine.sandbox import docker_api
from engine.sandbox.config import DEFAULT_IMAGE

Progress = Callable[[str], None]

_BASE_PACKAGES = "python3,python3-venv"
_FINGERPRINT_LABEL = "rlm-engine.fingerprint"


@dataclass(frozen=True)
class BuildResult:
    """What ``build_image`` did."""

    tag: str
    fingerprint: str
    cached: bool
    seconds: float


def image_source_dir() -> Path:
    """The ``sandbox-image/`` directory (a checkout's, else the copy inside the package)."""
    override = os.environ.get("RLM_SANDBOX_IMAGE_DIR")
    candidates = [Path(override)] if override else []
    package_root = Path(__file__).resolve().parents[1]
    candidates += [package_root.parent / "sandbox-image", package_root / "_sandbox_image"]
    for candidate in candidates:
        if (candidate / "Dockerfile").is_file():
            return candidate
    raise ImageError(
        "cannot find the sandbox-image/ directory with the Dockerfile; set "
        "RLM_SANDBOX_IMAGE_DIR to it"
    )


#: The variable naming the root of the image build's caches (declared here only). Not
#: ``RLM_CACHE_DIR``: that is the model-call cache's directory (``engine.settings``).
IMAGE_CACHE_ENV = "RLM_IMAGE_CACHE_DIR"


def image_cache_dir() -> Path:
    """The root of the image build's caches: ``$RLM_IMAGE_CACHE_DIR``, else ``~/.cache/rlm``.

    The wheelhouse of each requirements file (``wheelhouse/``) and debootstrap's work
    directories (``bootstrap/``) go under it; the sandbox and engine images share them.
    """
    configured = os.environ.get(IMAGE_CACHE_ENV, "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "rlm"


def build_image(
    tag: str = DEFAULT_IMAGE,
    *,
    base: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> BuildResult:
    """Build (or reuse) the sandbox image and tag it ``tag``. Blocking; takes minutes cold."""
    say = progress or (lambda _message: None)
    started = time.perf_counter()
    client = docker_api.client()
    source = image_source_dir()
    base_image = ensure_base_image(base, progress=say)
    python_version = _python_version(base_image)
    requirements = source / "requirements.txt"
    base_id = str(client.images.get(base_image).id)  # an image always has one; typed optional
    fingerprint = _fingerprint(source, base_id, python_version)
    repository = tag.rsplit(":", 1)[0] if ":" in tag.rsplit("/", 1)[-1] else tag
    pinned_tag = f"{repository}:{fingerprint[:12]}"
    if not force and _image_exists(pinned_tag):
        client.images.get(pinned_tag).tag(tag)
        say(f"image {tag} is up to date ({pinned_tag})")
        return BuildResult(tag, fingerprint, True, time.perf_counter() - started)
    wheelhouse = ensure_wheelhouse(requirements, python_version, progress=say)
    say(f"building {pinned_tag} from {base_image}")
    with tempfile.TemporaryDirectory(prefix="rlm-image-") as tmp:
        context = Path(tmp)
        shutil.copy2(source / "Dockerfile", context / "Dockerfile")
        shutil.copy2(requirements, context / "requirements.txt")
        shutil.copytree(
            source / "rlm_runtime",
            context / "rlm_runtime",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        _link_tree(wheelhouse, context / "wheelhouse")
        labels = {_FINGERPRINT_LABEL: fingerprint, "rlm-engine.image": "sandbox"}
        docker_build(context, pinned_tag, base_image, labels, what="sandbox", progress=say)
    client.images.get(pinned_tag).tag(tag)
    say(f"built {tag} ({pinned_tag})")
    return BuildResult(tag, fingerprint, False, time.perf_counter() - started)


def docker_build(
    context: Path,
    tag: str,
    base_image: str,
    labels: dict[str, str],
    *,
    what: str,
    progress: Progress,
) -> None:
    """Build the Dockerfile in ``context`` as ``tag`` with ``BASE_IMAGE=base_image``, offline.

    Each build step goes to ``progress``; a failed step raises :class:`ImageError` naming
    ``what`` image it was. Shared by the sandbox image and the deploy images (``deploy/``).
    """
    for line in docker_api.client().api.build(
        path=str(context),
        tag=tag,
        buildargs={"BASE_IMAGE": base_image},
        labels=labels,
        rm=True,
        forcerm=True,
        decode=True,
    ):
        if "error" in line:
            raise ImageError(f"the {what} image build failed: {line['error'].strip()}")
        text = str(line.get("stream", "")).strip()
        if text and not text.startswith("--->"):  # the builder's layer ids: noise
            progress(text)


def _fingerprint(source: Path, base_id: str, python_version: str) -> str:
    digest = hashlib.sha256()
    digest.update(f"{base_id}\n{python_version}\n".encode())
    files = [source / "Dockerfile", source / "requirements.txt"]
    files += sorted(
        path
        for path in (source / "rlm_runtime").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    )
    for path in files:
        digest.update(str(path.relative_to(source)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _image_exists(name: str) -> bool:
    try:
        docker_api.client().images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def _link_tree(source: Path, target: Path) -> None:
    target.mkdir()
    for item in source.iterdir():
        if item.name.endswith(".whl"):
            try:
                os.link(item, target / item.name)
            except OSError:
                shutil.copy2(item, target / item.name)


# --- base image ----------------------------------------------------------------------------


def host_codename() -> str:
    """The host's distribution codename (``bookworm``), read from /etc/os-release."""
    values = _os_release()
    codename = values.get("VERSION_CODENAME") or values.get("UBUNTU_CODENAME")
    if not codename:
        raise ImageError(
            "cannot tell the host's distribution codename from /etc/os-release; set "
            "RLM_SANDBOX_BASE_IMAGE to an image that has python3 and python3-venv"
        )
    return codename


def _os_release() -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        lines = Path("/etc/os-release").read_text().splitlines()
    except OSError:
        return values
    for line in lines:
        if "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip('"')
    return values


def ensure_base_image(base: str | None = None, *, progress: Progress | None = None) -> str:
    """Return the name of a usable base image, bootstrapping one if needed."""
    say = progress or (lambda _message: None)
    chosen = base or os.environ.get("RLM_SANDBOX_BASE_IMAGE")
    if chosen:
        if _image_exists(chosen):
            return chosen
        say(f"pulling base image {chosen}")
        try:
            docker_api.client().images.pull(chosen)
        except docker.errors.APIError as exc:
            raise ImageError(
                f"the base image {chosen} is not present and cannot be pulled "
                f"({exc.explanation}); unset RLM_SANDBOX_BASE_IMAGE to bootstrap one locally"
            ) from exc
        return chosen
    codename = host_codename()
    name = f"rlm-sandbox-base:{codename}"
    if not _image_exists(name):
        bootstrap_base_image(name, codename, progress=say)
    return name


def apt_mirror(codename: str) -> str:
    """The host's apt mirror that serves ``codename`` (``$RLM_DEBOOTSTRAP_MIRROR`` wins)."""
    override = os.environ.get("RLM_DEBOOTSTRAP_MIRROR")
    if override:
        return override
    for types, uris, suites, components in _apt_sources():
        if "deb" in types and codename in suites and "main" in components and uris:
            return uris[0]
    raise ImageError(
        f"no apt source for '{codename} main' in /etc/apt/sources.list(.d); set "
        "RLM_DEBOOTSTRAP_MIRROR to a Debian/Ubuntu mirror URL"
    )


def _apt_sources() -> Iterator[tuple[list[str], list[str], list[str], list[str]]]:
    one_line = ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]
    for path in one_line:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split("#", 1)[0].split()
            if len(words) >= 3 and words[0] in ("deb", "deb-src"):
                rest = [word for word in words[1:] if not word.startswith("[")]
                rest = [word for word in rest if "=" not in word and not word.endswith("]")]
                if len(rest) >= 2:
                    yield [words[0]], [rest[0]], [rest[1]], rest[2:]
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        for stanza in text.split("\n\n"):
            fields: dict[str, list[str]] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.split()
            if fields.get("enabled", ["yes"])[0].lower() == "no":
                continue
            yield (
                fields.get("types", []),
                fields.get("uris", []),
                fields.get("suites", []),
                fields.get("components", []),
            )


def bootstrap_base_image(name: str, codename: str, *, progress: Progress | None = None) -> None:
    """debootstrap a minimal root file system with python3 and import it as ``name``."""
    say = progress or (lambda _message: None)
    if shutil.which("debootstrap") is None:
        raise ImageError(
            "no base image and no debootstrap to make one: install it "
            "(`apt-get install debootstrap`) or set RLM_SANDBOX_BASE_IMAGE"
        )
    if os.geteuid() != 0:
        raise ImageError(
            "bootstrapping the base image with debootstrap needs root: run `sudo make image` "
            "once, or set RLM_SANDBOX_BASE_IMAGE to an image with python3 and python3-venv"
        )
    mirror = apt_mirror(codename)
    work = image_cache_dir() / "bootstrap"
    work.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f"{codename}-", dir=work))
    tarball = root.with_suffix(".tar")
    try:
        say(f"bootstrapping {codename} from {mirror} (about a minute)")
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={_BASE_PACKAGES}",
                codename,
                str(root),
                mirror,
            ],
            "debootstrap",
        )
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (root / leftover).glob("*"):
                if item.is_file():
                    item.unlink()
        _run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(tarball), "."], "tar")
        say(f"importing {name}")
        docker_api.client().api.import_image_from_file(
            str(tarball),
            repository=name.split(":")[0],
            tag=name.split(":")[1],
            changes=[
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "ENV LANG=C.UTF-8",
                "LABEL rlm-engine.image=base",
            ],
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
        tarball.unlink(missing_ok=True)
    if not _image_exists(name):
        raise ImageError(f"importing the bootstrapped base image {name} failed")


def _run(command: list[str], what: str) -> None:
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        tail = "\n".join((completed.stderr or completed.stdout).strip().splitlines()[-8:])
        raise ImageError(f"{what} failed (exit {completed.returncode}):\n{tail}")


def _python_version(image: str) -> str:
    try:
        output = docker_api.client().containers.run(
            image,
            ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            network_mode="none",
            remove=True,
        )
    except docker.errors.DockerException as exc:
        raise ImageError(f"the base image {image} has no working python3: {exc}") from exc
    return str(output.decode().strip())


# --- wheelhouse ----------------------------------------------------------------------------


def ensure_wheelhouse(
    requirements: Path, python_version: str, *, progress: Progress | None = None
) -> Path:
    """Download the pinned wheels for the image's Python (once per requirements file, under
    :func:`image_cache_dir`)."""
    say = progress or (lambda _message: None)
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    target = image_cache_dir() / "wheelhouse" / f"py{python_version}-{digest}"
    stamp = target / ".complete"
    if stamp.exists():
        return target
    if importlib.util.find_spec("pip") is None:
        # A venv made with --without-pip (or by uv) has none; the wheels come from pip download.
        raise ImageError(
            f"the sandbox's wheels are downloaded with pip, and this Python ({sys.executable}) "
            "has no pip: install it (`python -m ensurepip`) or build the image once from an "
            "environment that has pip"
        )
    target.mkdir(parents=True, exist_ok=True)
    machine = platform.machine()
    platforms = [
        f"manylinux_2_{minor}_{machine}" for minor in (36, 35, 34, 31, 28, 27, 26, 24, 17, 12, 5)
    ] + [f"manylinux2014_{machine}", f"manylinux1_{machine}", f"linux_{machine}"]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        "-d",
        str(target),
        "-r",
        str(requirements),
    ]
    for tag in platforms:
        command += ["--platform", tag]
    say(f"downloading the sandbox's pinned wheels for Python {python_version}")
    _run(command, "pip download of the sandbox wheels")
    stamp.write_text(digest)
    return target
