"""The run-directory disk guard on a real directory (no Docker needed)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.sandbox.config import SandboxConfig
from engine.sandbox.disk_guard import RunDirGuard, measure


def test_measure_counts_files_and_nested_dirs_but_not_link_targets(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 1000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y" * 500)
    big = tmp_path.parent / f"{tmp_path.name}-outside"
    big.write_bytes(b"z" * 100_000)
    (tmp_path / "link").symlink_to(big)
    usage = measure(tmp_path)
    assert usage.entries == 4
    assert 1500 <= usage.bytes < 100_000


def test_a_sparse_file_counts_with_its_length(tmp_path: Path) -> None:
    with (tmp_path / "sparse").open("wb") as handle:
        handle.truncate(1 << 40)  # 1 TiB of nothing on disk, but a 1 TiB copy for the bridge
    assert measure(tmp_path).bytes == 1 << 40


def test_measure_stops_at_the_entry_cap(tmp_path: Path) -> None:
    for i in range(30):
        (tmp_path / f"f{i}").touch()
    assert measure(tmp_path, max_entries=10).entries == 11


def test_guard_ignores_the_baseline_and_trips_once_on_growth(tmp_path: Path) -> None:
    (tmp_path / "context.txt").write_bytes(b"c" * 50_000)  # staged before the guard starts
    reasons: list[str] = []
    tripped = threading.Event()

    def on_exceeded(reason: str) -> None:
        reasons.append(reason)
        tripped.set()

    guard = RunDirGuard(tmp_path, 10_000, on_exceeded, interval_s=0.01)
    guard.start()
    try:
        assert guard.check() is None
        (tmp_path / "small").write_bytes(b"s" * 5_000)
        assert guard.check() is None
        (tmp_path / "big").write_bytes(b"b" * 20_000)
        assert tripped.wait(5)
    finally:
        guard.stop()
    assert len(reasons) == 1
    assert "wrote more than 9.8 KiB to its run directory" in reasons[0]
    assert "RLM_SANDBOX_DISK" in reasons[0]


def test_guard_trips_on_a_flood_of_empty_files(tmp_path: Path) -> None:
    guard = RunDirGuard(tmp_path, 1 << 30, lambda _reason: None, max_entries=20)
    guard.start()
    guard.stop()
    for i in range(25):
        (tmp_path / f"f{i}").touch()
    reason = guard.check()
    assert reason is not None and "more than 20 files" in reason


def test_stop_ends_the_thread(tmp_path: Path) -> None:
    guard = RunDirGuard(tmp_path, 1 << 20, lambda _reason: None, interval_s=0.01)
    guard.start()
    names = {t.name for t in threading.enumerate()}
    assert f"rlm-disk-guard-{tmp_path.name}" in names
    guard.stop()
    assert f"rlm-disk-guard-{tmp_path.name}" not in {t.name for t in threading.enumerate()}


def test_disk_limit_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLM_SANDBOX_DISK", "3g")
    assert SandboxConfig.from_env().disk_bytes == 3 << 30
    monkeypatch.setenv("RLM_SANDBOX_DISK", "lots")
    with pytest.raises(ConfigError, match="cannot read the size 'lots'"):
        SandboxConfig.from_env()
    with pytest.raises(ConfigError, match="disk limit must be at least 1m"):
        SandboxConfig(disk_bytes=1000)
