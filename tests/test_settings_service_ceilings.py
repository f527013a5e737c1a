"""The operator's limits are ceilings: a real ``rlm serve`` refuses a job that asks for more.

Flags, the environment and the config file all set ceilings; budgets the operator left out get
the safe ceilings of engine.settings. The service is a real process; the models are replayed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from engine.models import Cassette, ReplayServer
from engine.settings import setting
from tests.service_support import Service, code, root, wait_final

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

CASSETTE = [root("CEIL", code("answer['content'] = 'within'\nanswer['ready'] = True"))]


@pytest.fixture(scope="module")
async def service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    folder = tmp_path_factory.mktemp("ceilings")
    toml = folder / "rlm.toml"
    toml.write_text("[limits]\nmax_tokens = 50000\n")
    async with ReplayServer(Cassette(CASSETTE)) as replay:
        svc = Service(folder / "data", replay.base_url, "--max-iterations", "3")
        await anyio.to_thread.run_sync(svc.start, "--config", str(toml), "--max-cost", "0.5")
        try:
            yield svc
        finally:
            await anyio.to_thread.run_sync(svc.stop)


@pytest.mark.parametrize(
    ("budget", "asked", "ceiling", "source"),
    [
        ("max_iterations", 50, 3, "flag"),
        ("max_cost", 2.0, 0.5, "flag"),
        ("max_tokens", 60_000, 50_000, "config file"),
        ("max_depth", 10, setting("max_depth").safe_ceiling, "safe default"),
        ("max_wall_time", 86_400, setting("max_wall_time").safe_ceiling, "safe default"),
        ("max_sub_calls", 5000, setting("max_sub_calls").safe_ceiling, "safe default"),
    ],
)
async def test_settings_job_above_a_ceiling_gets_422_naming_it(
    service: Service, budget: str, asked: float, ceiling: float, source: str
) -> None:
    async with service.client() as http:
        response = await http.post("/v1/jobs", json={"query": "CEIL", "limits": {budget: asked}})
        assert response.status_code == 422, (source, response.text)
        error = response.json()["error"]
        assert error["param"] == f"limits.{budget}"
        assert f"ceiling of {ceiling:g}" in error["message"]
        assert setting(budget).flag_name in error["message"]
        chat = {
            "model": "rlm",
            "messages": [{"role": "user", "content": "CEIL"}],
            "rlm": {"limits": {budget: asked}},
        }
        response = await http.post("/v1/chat/completions", json=chat)
        assert response.status_code == 422, response.text


async def test_settings_openapi_shows_the_ceilings(service: Service) -> None:
    async with service.client() as http:
        document = (await http.get("/openapi.json")).json()
    limits = document["components"]["schemas"]["Limits"]["properties"]
    assert limits["max_iterations"]["maximum"] == 3
    assert limits["max_tokens"]["maximum"] == 50_000
    assert limits["max_depth"]["maximum"] == setting("max_depth").safe_ceiling


async def test_settings_job_may_lower_a_ceiling_and_runs(service: Service) -> None:
    async with service.client() as http:
        response = await http.post(
            "/v1/jobs", json={"query": "CEIL", "context": "c", "limits": {"max_iterations": 2}}
        )
        assert response.status_code == 201, response.text
        job = await wait_final(http, response.json()["id"])
    assert (job["status"], job["answer"]) == ("succeeded", "within"), job
