"""Tools in the service: the operator's config decides them, a job may only restrict them.

A real `rlm serve` process with ``--tool`` and a replayed root model; jobs run in real
sandboxes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
import pytest

from engine.models import Cassette, ReplayServer
from tests.service_support import Service, code, root, wait_final

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

PROBE = (
    "try:\n    print('team', lookup('bob')['team'])\n"
    "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    "FINAL('probed')"
)
CASSETTE = [root("TOOL-PROBE", code(PROBE))]


@pytest.fixture(scope="module")
async def service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    async with ReplayServer(Cassette(CASSETTE)) as replay:
        data = tmp_path_factory.mktemp("service") / "data"
        svc = Service(data, replay.base_url, "--tool", "tests.test_tools_python:lookup")
        await anyio.to_thread.run_sync(svc.start)
        try:
            yield svc
        finally:
            await anyio.to_thread.run_sync(svc.stop)


async def _probe(service: Service, **extra: object) -> str:
    async with service.client() as client:
        response = await client.post("/v1/jobs", json={"query": "TOOL-PROBE", **extra})
        assert response.status_code == 201, response.text
        job = await wait_final(client, response.json()["id"])
        assert job["status"] == "succeeded", job
        events = (await client.get(f"/v1/jobs/{job['id']}/trajectory")).text
    cell = next(e for e in map(json.loads, events.splitlines()) if e["type"] == "cell")
    return str(cell["output"])


async def test_jobs_get_the_operators_tools(service: Service) -> None:
    assert "team web" in await _probe(service)
    assert "team web" in await _probe(service, tools=["lookup"])


async def test_a_job_can_restrict_tools_to_none(service: Service) -> None:
    assert "NameError name 'lookup' is not defined" in await _probe(service, tools=[])


async def test_a_job_can_lower_the_tool_budget(service: Service) -> None:
    output = await _probe(service, limits={"max_tool_calls": 0})
    assert "BudgetExhausted tool-call budget of 0 calls used up" in output


async def test_a_job_cannot_add_tools(service: Service) -> None:
    async with service.client() as client:
        added = await client.post("/v1/jobs", json={"query": "TOOL-PROBE", "tools": ["os_system"]})
        malformed = await client.post("/v1/jobs", json={"query": "TOOL-PROBE", "tools": "lookup"})
    assert added.status_code == 422
    assert (
        "unknown tool 'os_system'; a job can only restrict the service's tools (lookup)"
        in (added.json()["error"]["message"])
    )
    assert malformed.status_code == 422 and malformed.json()["error"]["param"] == "tools"
