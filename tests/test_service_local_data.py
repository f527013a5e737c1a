"""What a service process keeps on disk of deleted records is found and removed: a folder
the store no longer knows (older than the grace period), a session message's trajectory,
never a name that is not an id, never through a symlink (engine/service/local_data.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from engine.service import local_data

OLD = time.time() - 2 * local_data.GRACE_S


def make(path: Path, *, old: bool = True, folder: bool = True) -> Path:
    if folder:
        path.mkdir(parents=True)
        (path / "context.txt").write_text("x")
        if old:
            os.utime(path / "context.txt", (OLD, OLD))
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}\n")
    if old:
        os.utime(path, (OLD, OLD))
    return path


def known_of(*ids: str) -> tuple[list[list[str]], Callable[[Iterable[str]], set[str]]]:
    asked: list[list[str]] = []

    def known(candidates: Iterable[str]) -> set[str]:
        names = sorted(candidates)
        asked.append(names)
        return set(ids) & set(names)

    return asked, known


def test_orphans_are_the_old_folders_and_message_files_the_store_lost(tmp_path: Path) -> None:
    jobs, files = tmp_path / "jobs", tmp_path / "files"
    kept_job = make(jobs / "00000000000000aa")
    lost_job = make(jobs / "00000000000000bb")
    young_job = make(jobs / "00000000000000cc", old=False)  # its row may be on its way
    session = make(jobs / "sess-0000000000000001")
    kept_message = make(session / "00000000000000dd.jsonl", folder=False)
    lost_message = make(session / "00000000000000ee.jsonl", folder=False)
    lost_session = make(jobs / "sess-0000000000000002")
    kept_file = make(files / "file-00000000000000000001")
    lost_file = make(files / "file-00000000000000000002")
    stray = make(jobs / "not an id")
    (jobs / "00000000000000ff").symlink_to(kept_job)
    asked, known = known_of(
        "00000000000000aa", "sess-0000000000000001", "00000000000000dd", "file-00000000000000000001"
    )
    found = local_data.orphans(jobs, files, known)
    assert sorted(found) == sorted([lost_job, lost_message, lost_session, lost_file])
    assert len(asked) == 1  # one question to the store for all of them
    assert "not an id" not in asked[0] and "00000000000000ff" not in asked[0]
    assert local_data.remove(found) == 4
    left = {path for path in [*jobs.rglob("*"), *files.rglob("*")] if path.parent in (jobs, files)}
    assert left == {kept_job, young_job, session, kept_file, stray, jobs / "00000000000000ff"}
    assert kept_message.exists() and not lost_message.exists()
    assert (kept_job / "context.txt").exists()  # the symlink was not followed


def test_a_folder_written_to_lately_is_young_even_when_the_folder_is_old(tmp_path: Path) -> None:
    jobs, files = tmp_path / "jobs", tmp_path / "files"
    upload = make(files / "file-00000000000000000003")
    (upload / "context.txt").write_text("still arriving")  # an upload being written
    _, known = known_of()
    assert local_data.orphans(jobs, files, known) == []
    # Later, when the grace period has passed:
    later = time.time() + 2 * local_data.GRACE_S
    assert local_data.orphans(jobs, files, known, now=later) == [upload]


def test_nothing_on_disk_asks_the_store_nothing(tmp_path: Path) -> None:
    asked, known = known_of()
    assert local_data.orphans(tmp_path / "jobs", tmp_path / "files", known) == []
    assert asked == []


def test_drop_removes_a_records_copies_and_refuses_what_is_not_an_id(tmp_path: Path) -> None:
    jobs, files = tmp_path / "jobs", tmp_path / "files"
    job = make(jobs / "00000000000000aa")
    upload = make(files / "file-00000000000000000001")
    message = make(jobs / "sess-0000000000000001" / "00000000000000bb.jsonl", folder=False)
    outside = make(tmp_path / "outside")
    assert local_data.drop(jobs, files, "00000000000000aa")
    assert local_data.drop(jobs, files, "file-00000000000000000001")
    assert local_data.drop(jobs, files, "00000000000000bb", "sess-0000000000000001")
    assert not job.exists() and not upload.exists() and not message.exists()
    assert message.parent.exists()  # the session itself is not deleted
    for bad in ("..", "../outside", "a/b", "", " x", "-rf"):
        assert not local_data.drop(jobs, files, bad)
    assert not local_data.drop(jobs, files, "00000000000000cc", "../outside")
    assert outside.exists()
