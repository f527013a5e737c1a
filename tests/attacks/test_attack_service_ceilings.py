"""Attack: a tenant asks for budgets above the operator's limits on a real `rlm serve`."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from engine.models import Cassette, ReplayServer
from tests.attacks.conftest import AttackReport, RssMeter
from tests.service_support import Service, code, innocent_answer, root

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

CASSETTE = [root("INNOCENT", code("answer['content'] = '45'\nanswer['ready'] = True"))]
RAISED = {
    "max_iterations": 50,
    "max_wall_time": 86_400,
    "max_tokens": 10**9,
    "max_cost": 1_000,
    "max_sub_calls": 10**6,
    "max_depth": 9,
}
#: JSON bodies Python's decoder raises on (other than a syntax error): each must be the
#: tenant's 400, not a 500 with a traceback in the service's log.
UNDECODABLE = {
    "arrays nested 100,000 deep": b"[" * 100_000 + b"]" * 100_000,
    "a context nested 5,000 deep": b'{"query": "q", "context": '
    + b"[" * 5_000
    + b"]" * 5_000
    + b"}",
    "a 5,000-digit integer": b'{"query": "q", "max_retries": ' + b"9" * 5_000 + b"}",
    "bytes that are not UTF-8": b'{"query": "\xff"}',
}


async def test_attack_limits_above_the_operators_ceilings(
    tmp_path: Path, attack_report: AttackReport
) -> None:
    async with ReplayServer(Cassette(CASSETTE)) as replay:
        service = Service(tmp_path / "data", replay.base_url, "--max-iterations", "3")
        await anyio.to_thread.run_sync(service.start)
        try:
            assert service.proc is not None
            meter = RssMeter(service.proc.pid).start()
            refused = []
            async with service.client() as client:
                for name, value in RAISED.items():
                    response = await client.post(
                        "/v1/jobs", json={"query": "q", "limits": {name: value}}
                    )
                    assert response.status_code == 422, (name, response.text)
                    assert "ceiling" in response.json()["error"]["message"]
                    refused.append(name)
                chat = await client.post(
                    "/v1/chat/completions",
                    json={
                        "model": "rlm",
                        "messages": [{"role": "user", "content": "q"}],
                        "rlm": {"limits": {"max_iterations": 50}},
                    },
                )
                assert chat.status_code == 422 and "ceiling of 3" in chat.text
                undecodable = []
                for name, body in UNDECODABLE.items():
                    for route in ("/v1/jobs", "/v1/chat/completions"):
                        response = await client.post(
                            route, content=body, headers={"content-type": "application/json"}
                        )
                        assert response.status_code == 400, (name, route, response.text)
                        assert response.json()["error"]["type"] == "invalid_json"
                    undecodable.append(name)
            assert await innocent_answer(service) == "45"
            growth = meter.growth()
        finally:
            await anyio.to_thread.run_sync(service.stop)
    attack_report(
        "ask for budgets above the operator's (iterations, time, tokens, cost, sub-calls, depth)",
        "service limits are ceilings (rlm serve flags, TOML, safe defaults)",
        f"422 naming the ceiling for {len(refused)} budgets and the chat API",
        rss_growth=growth,
    )
    attack_report(
        "JSON bodies the decoder raises on (" + ", ".join(undecodable) + ")",
        "decoder errors are the request's (400 invalid_json); large bodies decoded off the "
        "event loop",
        f"400 for all {len(undecodable)} on /v1/jobs and /v1/chat/completions; service up",
        rss_growth=growth,
    )
