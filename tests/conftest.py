"""Shared fixtures: the anyio backend, Docker availability, and a leak check.

Also how pytest-xdist (``make test`` runs ``-n 3 --dist loadgroup``) splits the suite; see
:func:`pytest_itemcollected`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest

# Scopes whose fixture a worker builds once for all the tests it runs from that module.
_SHARED_SCOPES = frozenset({"module", "class", "package"})


def _shared_fixture_module(item: pytest.Item) -> str | None:
    """The module of ``item`` when it uses a module-, class- or package-scoped fixture."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    for definitions in info.name2fixturedefs.values():
        if definitions and definitions[-1].scope in _SHARED_SCOPES:  # the one in force
            return item.nodeid.split("::", 1)[0]
    return None


def pytest_itemcollected(item: pytest.Item) -> None:
    """Group tests for ``--dist loadgroup`` so that parallel workers share nothing costly.

    - ``local_model`` tests all go to one worker: they share the real llama.cpp server on the
      default port (leases keep that safe) and each saturates the CPU, so running two at once
      only makes both slower.
    - Tests that use a module-scoped fixture (a started service, a built wheel) go to one worker
      per module, so the fixture is built once, not once per worker.
    Everything else is spread test by test. An explicit ``xdist_group`` mark wins. xdist hands
    out the groups first (biggest first), so no worker starts a long group at the end. Without
    xdist the marks are inert. (Done per item as it is collected: xdist reads the marks in its
    own ``pytest_collection_modifyitems``, which may run before ours would.)
    """
    if item.get_closest_marker("xdist_group") is not None:
        return
    if item.get_closest_marker("local_model") is not None:
        item.add_marker(pytest.mark.xdist_group("local_model"))
        return
    module = _shared_fixture_module(item)
    if module is not None:
        item.add_marker(pytest.mark.xdist_group(module))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give grouped tests the ``@group`` node id suffix ``--dist loadgroup`` schedules by.

    pytest-xdist 3.8 writes the suffix into ``item._nodeid``, which pytest 9.2 no longer reads
    (its node ids are structured): every group is silently spread over all workers
    (pytest-dev/pytest-xdist#1386). This sets the structured id the way the proposed fix
    (#1388) does, and does nothing once xdist's own suffix is in place.
    """
    if not getattr(config.option, "loadgroup", False):  # xdist sets it on its workers
        return
    from _pytest.nodeid import NodeId

    for item in items:
        names = {
            str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
            for mark in item.iter_markers("xdist_group")
        }
        suffix = "@" + "_".join(sorted(names))
        if names and not item.nodeid.endswith(suffix) and hasattr(item, "_id"):
            item._id = NodeId.parse(item.nodeid + suffix)


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
