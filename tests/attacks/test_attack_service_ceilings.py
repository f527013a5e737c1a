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
    # Valid JSON, but not text: an inline context holding one was a 500 (it cannot be
    # written as UTF-8), and a session request dropped the connection.
    "a lone surrogate escaped in the context": b'{"query": "q", "context": "a \\ud800 b"}',
}

#: Numbers no budget can hold. Every comparison with NaN is False, so a NaN passed the
#: minimum and the ceiling: a NaN ``max_cost`` was a job without a cost cap (it ran), and a
#: NaN or infinity anywhere in a stored request made the job's JSON unrenderable (500).
NON_FINITE = {
    "max_cost NaN": b'{"query": "q", "limits": {"max_cost": NaN}}',
    "max_wall_time Infinity": b'{"query": "q", "limits": {"max_wall_time": Infinity}}',
    "cell_timeout 1e309 (infinity)": b'{"query": "q", "limits": {"cell_timeout": 1e309}}',
    "max_iterations of 400 digits": b'{"query": "q", "limits": {"max_iterations": '
    + b"9" * 400
    + b"}}",
    "output_schema maximum -Infinity": b'{"query": "q", "output_schema": {"type": "number", '
    b'"maximum": -Infinity}}',
}

#: 8 MiB bodies of tiny values: ``{}`` is 2 bytes of JSON and a 64-byte dict, so a 64 MiB
#: inline context of them grew the service by 1.6 GiB while it was decoded (then 413).
_EMPTY_DICTS = b",".join([b"{}"] * (8 << 20 >> 2))
TINY_VALUES = {
    "/v1/jobs": b'{"query": "q", "context": [' + _EMPTY_DICTS + b"]}",
    "/v1/chat/completions": b'{"model": "rlm", "messages": [{"role": "user", "content": "q"}], '
    b'"rlm": {"context": [' + _EMPTY_DICTS + b"]}}",
    "/v1/sessions": b'{"context": [' + _EMPTY_DICTS + b"]}",
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
                non_finite = []
                for name, body in NON_FINITE.items():
                    for route, wrap in (("/v1/jobs", body), ("/v1/chat/completions", None)):
                        if wrap is None:  # the same value in the chat API's rlm extension
                            inner = body.replace(b'"query": "q", ', b"")
                            wrap = (
                                b'{"model": "rlm", "messages": [{"role": "user", "content": '
                                b'"q"}], "rlm": ' + inner + b"}"
                            )
                        response = await client.post(
                            route, content=wrap, headers={"content-type": "application/json"}
                        )
                        assert response.status_code in (400, 422), (name, route, response.text)
                        assert "finite" in response.json()["error"]["message"], response.text
                    non_finite.append(name)
                tiny = []
                for route, body in TINY_VALUES.items():
                    response = await client.post(
                        route, content=body, headers={"content-type": "application/json"}
                    )
                    assert response.status_code == 413, (route, response.text)
                    assert "values" in response.json()["error"]["message"], response.text
                    tiny.append(route)
                # None of them was stored (or run).
                assert (await client.get("/v1/jobs")).json()["data"] == []
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
        "numbers no budget can hold (" + ", ".join(non_finite) + ")",
        "strict JSON (no NaN or Infinity, no float past the range); budgets must be finite",
        f"400 or 422 for all {len(non_finite)} on /v1/jobs and /v1/chat/completions; no job "
        "stored (before: a NaN max_cost job ran without a cost cap, and 500s)",
        rss_growth=growth,
    )
    attack_report(
        "8 MiB JSON bodies of empty objects (" + ", ".join(tiny) + ")",
        "what a body's values cost decoded (96 bytes each) is bounded by the body limit "
        "(65 MiB: about 700,000 values), counted before decoding",
        f"413 for all {len(tiny)} (before: a 64 MiB inline context of them grew the service "
        "by 1,610 MiB while decoded, then 413)",
        rss_growth=growth,
    )
    attack_report(
        "JSON bodies the decoder raises on (" + ", ".join(undecodable) + ")",
        "decoder errors are the request's (400 invalid_json); large bodies decoded off the "
        "event loop",
        f"400 for all {len(undecodable)} on /v1/jobs and /v1/chat/completions; service up",
        rss_growth=growth,
    )
