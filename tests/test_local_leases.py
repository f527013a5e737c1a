"""Leases on a local model server: real files, real flocks, real processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import LocalModelError
from engine.local.leases import Release, ServerLeases


def _holder(directory: Path, what: str) -> subprocess.Popen[str]:
    """A process that takes a lease (or the server lock) in ``directory`` and waits."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from engine.local.leases import ServerLeases
        leases = ServerLeases(Path({str(directory)!r}))
        held = leases.take() if {what!r} == "lease" else leases.hold_server_lock()
        print("held", flush=True)
        sys.stdin.readline()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


@pytest.fixture
def leases(tmp_path: Path) -> Iterator[ServerLeases]:
    yield ServerLeases(tmp_path / "port-1")


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.kill()  # no clean-up code runs: only the kernel releases its locks
    proc.wait()


def test_the_last_release_is_last(leases: ServerLeases) -> None:
    first, second = leases.take(), leases.take()
    assert first is not None and second is not None
    assert leases.release(first).last is False
    outcome = leases.release(second)
    assert outcome.last is True and outcome.server_pid is None  # nothing managed to stop
    assert list((leases.directory / "leases").iterdir()) == []


def test_a_killed_users_lease_no_longer_counts(leases: ServerLeases) -> None:
    other = _holder(leases.directory, "lease")
    mine = leases.take()
    assert mine is not None
    assert leases.stop_if_unused() is False
    _kill(other)
    assert leases.release(mine).last is True
    assert list((leases.directory / "leases").iterdir()) == []  # the dead lease was removed


def test_last_user_is_told_to_stop_the_managed_server(leases: ServerLeases) -> None:
    server = _holder(leases.directory, "server")
    try:
        mine = leases.take()
        assert mine is not None and leases.server_running()
        outcome = leases.release(mine)
        assert outcome == Release(last=True, server_pid=server.pid)
        # Stopping: a newcomer must not adopt it, but wait and then start its own.
        assert leases.take() is None
    finally:
        _kill(server)
    assert not leases.server_running()
    again = leases.take()
    assert again is not None
    assert not (leases.directory / "stopping").exists()
    leases.release(again)


def test_a_server_with_no_users_stops_itself(leases: ServerLeases) -> None:
    mine = leases.take()
    assert mine is not None
    assert leases.stop_if_unused() is False
    leases.release(mine)
    assert leases.stop_if_unused() is True
    assert (leases.directory / "stopping").exists()


def test_unwritable_lease_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(LocalModelError, match="cannot create the local model's lease directory"):
        ServerLeases(blocker / "port-1").take()


def test_unusable_lease_file_is_a_clear_error(leases: ServerLeases) -> None:
    (leases.directory / "registry.lock").mkdir(parents=True)
    with pytest.raises(LocalModelError, match="cannot open the local model's lease file"):
        leases.take()
