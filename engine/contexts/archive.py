"""Unpacking an uploaded archive (zip or tar) into a folder context, safely.

Only regular files are written: links, devices and pipes are dropped, and so are members
with absolute paths or ``..``. The unpacked bytes and the member count are capped while
unpacking (a zip's declared sizes are not trusted), so an archive bomb stops at the cap
with an error instead of filling the disk.
"""

from __future__ import annotations

import functools
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from engine.errors import ContextError

ARCHIVE_SUFFIXES = (
    ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz",
)  # fmt: skip
MAX_MEMBERS = 100_000
#: Folders a member's path may nest. Each level is a directory (an inode) on the host: 100,000
#: members of 2,000 levels each would ask for 200 million of them from one small upload.
MAX_PATH_PARTS = 64
_CHUNK = 1 << 20


@dataclass
class Unpacked:
    """What unpacking wrote and what it left out."""

    files: int = 0
    bytes: int = 0
    skipped: int = 0  # links, special files, unsafe paths, duplicates, paths nested too deep
    folders: int = 0  # created for the files' paths; they count as members too


def archive_stem(name: str) -> str | None:
    """The name without its archive extension (``repo.tar.gz`` -> ``repo``), or None."""
    lower = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def unpack_archive(
    archive: Path, dest: Path, *, max_bytes: int, max_members: int = MAX_MEMBERS
) -> Unpacked:
    """Unpack ``archive`` into the new folder ``dest`` (files 0600, folders 0700).

    Raises :class:`ContextError` naming the archive when it is damaged, encrypted, holds
    more than ``max_members`` entries (folders its paths create included) or unpacks to more
    than ``max_bytes``; ``dest`` is removed then.
    """
    dest.mkdir(mode=0o700)
    result = Unpacked()
    try:
        members = _zip_members(archive) if zipfile.is_zipfile(archive) else _tar_members(archive)
        for count, (name, opener) in enumerate(members, start=1):
            if count + result.folders > max_members:
                raise ContextError(
                    f"the archive {archive.name} has more than {max_members:,} entries; split it"
                )
            target = _target(dest, name)
            if target is None or opener is None:
                result.skipped += 1
                continue
            _write_member(archive.name, opener, target, dest, result, max_bytes)
    except ContextError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except (OSError, zipfile.BadZipFile, tarfile.TarError, RuntimeError, EOFError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise ContextError(
            f"cannot unpack the archive {archive.name}: {exc}; check that it is a valid, "
            "unencrypted zip or tar file"
        ) from exc
    return result


# Each member: its path in the archive and a function opening its bytes (None: not a file).
_Opener = Callable[[], IO[bytes] | None]


def _zip_members(archive: Path) -> Iterator[tuple[str, _Opener | None]]:
    with zipfile.ZipFile(archive) as handle:
        for info in handle.infolist():
            if info.is_dir():
                continue
            # No file type (archivers that store no Unix mode) or a regular file: not a
            # symlink or device.
            plain = stat.S_IFMT(info.external_attr >> 16) in (0, stat.S_IFREG)
            yield info.filename, (functools.partial(handle.open, info) if plain else None)


def _tar_members(archive: Path) -> Iterator[tuple[str, _Opener | None]]:
    with tarfile.open(archive, "r:*") as handle:
        for member in handle:
            if member.isdir():
                continue
            regular = member.isreg()
            yield member.name, (functools.partial(handle.extractfile, member) if regular else None)
            # Streamed: do not keep every header in memory (TarFile.members is undocumented
            # in the stubs, but iteration reads on from the file once it is empty).
            handle.members.clear()  # type: ignore[attr-defined]


def _target(dest: Path, name: str) -> Path | None:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or parts[0] == "/" or any(p in ("..", "") for p in parts):
        return None
    if len(parts) > MAX_PATH_PARTS:
        return None
    return dest.joinpath(*parts)


def _write_member(
    archive: str, opener: _Opener, target: Path, dest: Path, result: Unpacked, max_bytes: int
) -> None:
    parent = target.parent
    if not parent.is_dir():
        missing, folder = 0, parent
        while folder != dest and not folder.exists():
            missing, folder = missing + 1, folder.parent
        try:
            parent.mkdir(parents=True, mode=0o700)
        except (FileExistsError, NotADirectoryError):
            result.skipped += 1  # a file and a folder with the same name
            return
        result.folders += missing
    try:
        out = open(target, "xb")  # noqa: SIM115 (closed below, also on errors)
    except (FileExistsError, IsADirectoryError):
        result.skipped += 1  # a duplicate entry
        return
    source = opener()
    if source is None:
        out.close()
        result.skipped += 1
        return
    with out, source:
        target.chmod(0o600)
        while chunk := source.read(_CHUNK):
            result.bytes += len(chunk)
            if result.bytes > max_bytes:
                raise ContextError(
                    f"the archive {archive} unpacks to more than {max_bytes:,} bytes (the "
                    "upload limit); split it or raise --max-upload"
                )
            out.write(chunk)
    result.files += 1
