"""Sandbox settings that need no Docker: limits, the instance id."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.sandbox import SandboxConfig, instance


def test_disk_and_tmpfs_limits_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLM_SANDBOX_DISK", "3g")
    assert SandboxConfig.from_env().disk_bytes == 3 << 30
    with pytest.raises(ConfigError, match="disk limit must be at least 1m"):
        SandboxConfig(disk_bytes=1000)
    with pytest.raises(ConfigError, match="inode limit must be at least 64"):
        SandboxConfig(tmpfs_inodes=10)
    with pytest.raises(ConfigError, match="tmpfs sizes must be at least 1m"):
        SandboxConfig(shm_bytes=4096)


def test_image_default_honours_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLM_SANDBOX_IMAGE", "rlm-sandbox:other")
    assert SandboxConfig().image == "rlm-sandbox:other"
    monkeypatch.delenv("RLM_SANDBOX_IMAGE")
    assert SandboxConfig().image == "rlm-sandbox:latest"


@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RLM_INSTANCE_ID", raising=False)
    instance.instance_id.cache_clear()
    yield tmp_path
    instance.instance_id.cache_clear()


def test_instance_id_is_created_once_and_kept(fresh_home: Path) -> None:
    first = instance.instance_id()
    assert (fresh_home / ".cache" / "rlm" / "instance-id").read_text().strip() == first
    instance.instance_id.cache_clear()
    assert instance.instance_id() == first  # a restarted engine reaps its predecessor's


def test_instance_id_from_the_environment(
    fresh_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_INSTANCE_ID", "stack-b")
    assert instance.instance_id() == "stack-b"
    instance.instance_id.cache_clear()
    monkeypatch.setenv("RLM_INSTANCE_ID", "no spaces/here")
    with pytest.raises(ConfigError, match="RLM_INSTANCE_ID"):
        instance.instance_id()
