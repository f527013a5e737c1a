"""Shared fixtures: the anyio backend, Docker availability, and a leak check."""

from __future__ import annotations

import os
from collections.abc import Iterator

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def private_call_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The model-call cache of this test session only, not the user's ``~/.cache/rlm/cache``.

    Scripted replay servers listen on ephemeral ports that repeat across sessions; a call
    cached by an earlier session under the same URL would be answered from the cache and
    skip the script's next reply.
    """
    from engine.models import cache

    directory = tmp_path_factory.mktemp("call-cache")
    saved, saved_env = cache.default_cache_dir, os.environ.get("RLM_CACHE_DIR")
    cache.default_cache_dir = lambda: directory  # type: ignore[assignment]
    os.environ["RLM_CACHE_DIR"] = str(directory)  # the CLI and service in subprocesses
    yield
    cache.default_cache_dir = saved  # type: ignore[assignment]
    if saved_env is None:
        os.environ.pop("RLM_CACHE_DIR", None)
    else:
        os.environ["RLM_CACHE_DIR"] = saved_env


@pytest.fixture(scope="session")
def docker_ready() -> None:
    """Fail (not skip) when Docker or the image is missing: CI must exercise the sandbox."""
    from engine.sandbox import DEFAULT_IMAGE, docker_api

    client = docker_api.client()
    client.images.get(DEFAULT_IMAGE)


def engine_containers() -> list[str]:
    from engine.sandbox import docker_api

    client = docker_api.client()
    # One raw list call: containers.list() inspects each container afterwards, and fails
    # with 404 when another test process removes one in between.
    listed = client.api.containers(all=True, filters={"label": docker_api.LABEL_TASK})
    return [name.lstrip("/") for c in listed for name in c.get("Names") or []]


@pytest.fixture(scope="session", autouse=True)
def no_sandbox_left_behind() -> Iterator[None]:
    """After the whole suite, no container started by this test process may remain."""
    yield
    try:
        from engine.sandbox import docker_api

        client = docker_api.client()
    except Exception:  # no Docker at all: the Docker tests have failed already
        return
    leftovers = [
        c.name
        for c in client.containers.list(
            all=True, filters={"label": f"{docker_api.LABEL_OWNER_PID}={os.getpid()}"}
        )
    ]
    assert leftovers == [], f"sandbox containers left behind by the suite: {leftovers}"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[object]:
    """A private PostgreSQL cluster for the whole session (started on first use)."""
    from tests.pg_support import PgCluster

    cluster = PgCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: object) -> str:
    """The URL of a fresh, empty database on the private cluster."""
    from tests.pg_support import PgCluster

    assert isinstance(pg_cluster, PgCluster)
    return pg_cluster.database()
