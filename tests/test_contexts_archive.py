"""Unpacking uploaded archives: regular files only, safe paths, capped bytes and entries."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from engine.contexts.archive import MAX_PATH_PARTS, archive_stem, unpack_archive
from engine.errors import ContextError


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(Path(folder, name).relative_to(root)): Path(folder, name).read_bytes()
        for folder, _dirs, names in os.walk(root)
        for name in names
    }


def test_archive_stems() -> None:
    names = ["repo.zip", "a.tar.gz", "b.TGZ", "c.tar.xz", "d.txt", ".zip"]
    assert [archive_stem(n) for n in names] == ["repo", "a", "b", "c", None, None]


def test_zip_keeps_regular_files_and_drops_links_and_unsafe_paths(tmp_path: Path) -> None:
    archive = tmp_path / "repo.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("src/main.py", "print(1)\n")
        handle.writestr("README.md", "# r\n")
        handle.writestr("../escape.txt", "out")
        handle.writestr("/abs.txt", "out")
        link = zipfile.ZipInfo("link-to-passwd")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        handle.writestr(link, "/etc/passwd")
    result = unpack_archive(archive, tmp_path / "out", max_bytes=1 << 20)
    assert tree(tmp_path / "out") == {"src/main.py": b"print(1)\n", "README.md": b"# r\n"}
    assert (result.files, result.skipped) == (2, 3)
    assert not (tmp_path / "escape.txt").exists()
    assert stat.S_IMODE((tmp_path / "out" / "README.md").stat().st_mode) == 0o600


def test_tar_gz_drops_symlinks_hardlinks_and_devices(tmp_path: Path) -> None:
    archive = tmp_path / "docs.tar.gz"
    with tarfile.open(archive, "w:gz") as handle:
        data = b"hello\n"
        info = tarfile.TarInfo("docs/a.txt")
        info.size = len(data)
        handle.addfile(info, io.BytesIO(data))
        for name, kind in (("docs/sym", tarfile.SYMTYPE), ("docs/hard", tarfile.LNKTYPE)):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = kind, "/etc/shadow"
            handle.addfile(link)
        device = tarfile.TarInfo("docs/null")
        device.type = tarfile.CHRTYPE
        handle.addfile(device)
    result = unpack_archive(archive, tmp_path / "out", max_bytes=1 << 20)
    assert tree(tmp_path / "out") == {"docs/a.txt": b"hello\n"}
    assert result.skipped == 3


def test_zip_bomb_stops_at_the_byte_cap_and_leaves_nothing(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as handle:
        handle.writestr("zeros.txt", b"0" * (8 << 20))  # 8 MiB that compresses to ~8 KiB
    assert archive.stat().st_size < 64 << 10
    with pytest.raises(ContextError, match=r"bomb\.zip unpacks to more than 1,048,576 bytes"):
        unpack_archive(archive, tmp_path / "out", max_bytes=1 << 20)
    assert not (tmp_path / "out").exists()


def test_too_many_entries_and_damaged_archives_are_errors(tmp_path: Path) -> None:
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as handle:
        for index in range(11):
            handle.writestr(f"f{index}.txt", "x")
    with pytest.raises(ContextError, match="more than 10 entries"):
        unpack_archive(many, tmp_path / "out", max_bytes=1 << 20, max_members=10)
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b\x08\0garbage")
    with pytest.raises(ContextError, match=r"cannot unpack the archive broken\.tar\.gz"):
        unpack_archive(broken, tmp_path / "out2", max_bytes=1 << 20)
    assert not (tmp_path / "out2").exists()


def test_folders_count_as_entries_and_paths_nest_at_most_64_deep(tmp_path: Path) -> None:
    # Each folder of a member's path is an inode on the host, like a file.
    nested = tmp_path / "nested.zip"
    with zipfile.ZipFile(nested, "w") as handle:
        for index in range(3):
            handle.writestr(f"m{index}/" + "d/" * 3 + "f.txt", "x")  # 4 folders each
        handle.writestr("deep/" * MAX_PATH_PARTS + "f.txt", "x")
    result = unpack_archive(nested, tmp_path / "out", max_bytes=1 << 20)
    assert (result.files, result.folders, result.skipped) == (3, 12, 1)
    assert not (tmp_path / "out" / "deep").exists()
    with pytest.raises(ContextError, match="more than 10 entries"):
        unpack_archive(nested, tmp_path / "out2", max_bytes=1 << 20, max_members=10)
    assert not (tmp_path / "out2").exists()
