"""Attack: a tenant's output schema whose ``pattern`` backtracks for hours on the answer.

A service job's ``output_schema`` is the tenant's, and the answer it is checked against is
the model's (which the tenant steers through the query and context). Python's regex engine
cannot be interrupted, so in the orchestrator's process ``^(a+)+$`` against 40 characters
would freeze its event loop (every tenant's jobs) for hours. The check runs in a process
of its own, killed at a deadline; the event loop must keep running meanwhile.
"""

from __future__ import annotations

import http.server
import itertools
import json
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest

from engine.errors import ConfigError
from engine.rlm.answer_schema import CHECK_MEMORY_BYTES, AnswerSchema, Verdict
from engine.service.requests import ApiError, parse_output_schema
from tests.attacks.conftest import AttackReport, RssMeter

pytestmark = pytest.mark.anyio

DEADLINE_S = 2.0  # the service's is CHECK_TIMEOUT_S (10 s)


async def test_backtracking_pattern_in_the_output_schema(
    rss_meter: RssMeter, attack_report: AttackReport
) -> None:
    schema = AnswerSchema({"type": "string", "pattern": "^(a+)+$"})
    ticks: list[float] = []

    async def event_loop_ticks() -> None:
        while True:
            ticks.append(time.monotonic())
            await anyio.sleep(0.05)

    async with anyio.create_task_group() as group:
        group.start_soon(event_loop_ticks)
        verdict = await schema.check_isolated(json.dumps("a" * 40 + "b"), timeout_s=DEADLINE_S)
        group.cancel_scope.cancel()
    assert verdict.answer is None and verdict.problem is not None
    assert "took longer" in verdict.problem
    # A check on the event loop would have blocked it for the whole deadline: no tick
    # between the first and the verdict.
    assert len(ticks) > 2, ticks
    longest_stall = max(b - a for a, b in itertools.pairwise(ticks))
    attack_report(
        "output schema pattern ^(a+)+$ against a 41-character answer (hours of backtracking)",
        f"schema checked in its own process, killed after the deadline (here {DEADLINE_S:g} s; "
        "10 s in runs)",
        f"answer refused ('took longer than {DEADLINE_S:g} s'); the event loop never stalled "
        f"more than {longest_stall:.2f} s",
        rss_growth=rss_meter.growth(),
    )


async def test_output_schema_refs_outside_the_schema(
    tmp_path: Path, rss_meter: RssMeter, attack_report: AttackReport
) -> None:
    """``$ref``s to the network and to host files: jsonschema's default registry fetched any
    URI with urlopen while the answer was checked (http: a request from the service's host,
    file: a read of the host's files), so a tenant could probe the operator's network."""
    hits: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = json.dumps({"type": "integer"}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    secret = tmp_path / "operator.json"
    secret.write_text(json.dumps({"enum": ["the operator's secret"]}))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/schema.json"
    hostile = {
        "http": {"$ref": url},
        "file": {"$ref": secret.as_uri()},
        "nested in items": {"type": "array", "items": {"$ref": url}},
        "relative to a remote $id": {"$id": url, "$ref": "other.json"},
        "$dynamicRef": {"$defs": {"x": {"$dynamicRef": url + "#a"}}},
    }
    refused = []
    try:
        for name, schema in hostile.items():
            with pytest.raises(ConfigError, match="never fetches"):
                AnswerSchema(schema)
            with pytest.raises(ApiError) as caught:  # what POST /v1/jobs checks it with
                parse_output_schema(schema, "output_schema")
            assert caught.value.status == 422
            refused.append(name)
        # The checking process builds its own validator: even handed the schema directly,
        # it neither fetches nor reads (the check fails instead).
        verdict = await _check_raw({"$ref": url}, "5")
        assert verdict.answer is None
    finally:
        server.shutdown()
        thread.join()
    assert hits == []
    # Refs inside the schema, to an $id it declares and to a meta-schema still work.
    inside = {
        "$defs": {"n": {"$anchor": "n", "type": "integer"}, "m": {"$id": "m.json", "minimum": 1}},
        "allOf": [{"$ref": "#/$defs/n"}, {"$ref": "#n"}, {"$ref": "m.json"}],
    }
    assert AnswerSchema(inside).check("5").answer == "5"
    assert AnswerSchema(inside).check("0").answer is None
    assert AnswerSchema({"$ref": "https://json-schema.org/draft/2020-12/schema"}).check("{}")
    attack_report(
        "output schema $refs to the network and host files (" + ", ".join(refused) + ")",
        "refs resolve only inside the schema and to the bundled meta-schemas (an empty "
        "referencing registry); a ref that does not resolve is refused when the schema is "
        "given",
        f"all {len(refused)} refused (ConfigError, 422 in the service); 0 requests reached the "
        "listening server (before: the check fetched the URL and read the file)",
        rss_growth=rss_meter.growth(),
    )


async def _check_raw(schema: dict[str, object], answer: str) -> Verdict:
    """What the checking process says for ``schema`` handed to it unchecked."""
    job = json.dumps({"schema": schema, "answer": answer}).encode()
    command = [sys.executable, "-m", "engine.rlm.answer_check", str(CHECK_MEMORY_BYTES)]
    done = await anyio.run_process(command, input=job, check=False)
    if done.returncode != 0:
        return Verdict(None, problem=done.stderr.decode(errors="replace")[-300:])
    reply = json.loads(done.stdout)
    return Verdict(reply["answer"], reply["value"], reply["problem"])
