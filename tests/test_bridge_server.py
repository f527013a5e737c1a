"""The bridge server at the HTTP level: real Unix socket, real HTTP (httpx and raw bytes)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from engine.bridge import BridgeHandler, BridgeServer
from engine.bridge.server import BridgeLimits
from engine.errors import BridgeError, BudgetExceededError, ConfigError, ModelError

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Orchestrator:
    """A small real handler: answers from the prompt text, records what it was given."""

    def __init__(self) -> None:
        self.llm_calls: list[tuple[str, str | None]] = []
        self.rlm_calls: list[tuple[str, Path | None, str | None]] = []
        self.started = anyio.Event()
        self.cancelled = anyio.Event()

    async def llm_query(self, prompt: str, model: str | None) -> str:
        self.llm_calls.append((prompt, model))
        if prompt == "budget":
            raise BudgetExceededError("sub_calls", "the sub-call budget (3 calls) is used up")
        if prompt == "model-error":
            raise ModelError("the provider returned 500 three times")
        if prompt == "crash":
            raise ValueError("handler bug")
        if prompt == "slow":
            await anyio.sleep(0.2)
        if prompt == "huge reply":
            return "b" * (8 << 20)
        if prompt.strip() == "hang":
            self.started.set()
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                self.cancelled.set()
                raise
        return f"answer to {prompt!r} by {model or 'default'}"

    async def rlm_query(self, prompt: str, context_path: Path | None) -> str:
        text = None
        if context_path is not None:
            text = context_path.read_text()
            assert stat.S_IMODE(context_path.stat().st_mode) == 0o644  # child can mount it
            assert stat.S_IMODE(context_path.parent.stat().st_mode) == 0o700
        self.rlm_calls.append((prompt, context_path, text))
        return f"child answer to {prompt!r}"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    return run


def _client(sock: Path) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(uds=str(sock))
    return httpx.AsyncClient(transport=transport, base_url="http://bridge", timeout=10)


def _server(run_dir: Path, handler: BridgeHandler, **kwargs: Any) -> BridgeServer:
    return BridgeServer(run_dir / "bridge.sock", TOKEN, handler, **kwargs)


def test_orchestrator_fits_the_handler_protocol() -> None:
    assert isinstance(Orchestrator(), BridgeHandler)


@pytest.mark.anyio
async def test_llm_query_round_trip_and_keep_alive(run_dir: Path) -> None:
    handler = Orchestrator()
    async with _server(run_dir, handler) as server, _client(server.socket_path) as client:
        mode = stat.S_IMODE(os.stat(server.socket_path).st_mode)
        assert mode == 0o666
        first = await client.post("/v1/llm_query", json={"prompt": "hi"}, headers=AUTH)
        second = await client.post(
            "/v1/llm_query", json={"prompt": "yo", "model": "sub-2"}, headers=AUTH
        )
        assert first.status_code == 200
        assert first.json() == {"response": "answer to 'hi' by default"}
        assert second.json() == {"response": "answer to 'yo' by sub-2"}
        assert server.connections_accepted == 1  # both requests on one kept-alive connection
    assert handler.llm_calls == [("hi", None), ("yo", "sub-2")]
    assert not server.socket_path.exists()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}],
)
async def test_wrong_or_missing_token_is_401(run_dir: Path, headers: dict[str, str]) -> None:
    handler = Orchestrator()
    async with _server(run_dir, handler) as server, _client(server.socket_path) as client:
        response = await client.post("/v1/llm_query", json={"prompt": "hi"}, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "unauthorized"
    assert "RLM_BRIDGE_TOKEN" in response.json()["error"]["message"]
    assert handler.llm_calls == []


@pytest.mark.anyio
async def test_unknown_path_404_and_wrong_method_405(run_dir: Path) -> None:
    async with _server(run_dir, Orchestrator()) as server, _client(server.socket_path) as client:
        missing = await client.post("/v1/nope", json={"prompt": "hi"}, headers=AUTH)
        wrong_method = await client.get("/v1/llm_query", headers=AUTH)
    assert missing.status_code == 404
    assert "/v1/llm_query" in missing.json()["error"]["message"]
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    assert wrong_method.json()["error"]["type"] == "method_not_allowed"


@pytest.mark.anyio
async def test_oversize_body_is_413_before_reading_it(run_dir: Path) -> None:
    """A declared Content-Length over the limit is refused without the body being sent."""
    handler = Orchestrator()
    async with _server(run_dir, handler, max_body_bytes=1000) as server:
        stream = await anyio.connect_unix(server.socket_path)
        async with stream:
            head = (
                "POST /v1/llm_query HTTP/1.1\r\nHost: bridge\r\n"
                f"Authorization: Bearer {TOKEN}\r\nContent-Length: 50000000\r\n\r\n"
            )
            await stream.send(head.encode())  # and no body at all
            with anyio.fail_after(5):
                raw = await _read_until_closed(stream)
    status_line, _, rest = raw.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large"
    body = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["type"] == "payload_too_large"
    assert "50000000" in body["error"]["message"]
    assert handler.llm_calls == []


@pytest.mark.anyio
async def test_oversize_chunked_body_is_413(run_dir: Path) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the server has to count
        for _ in range(10):
            yield b"x" * 500

    async with (
        _server(run_dir, Orchestrator(), max_body_bytes=1000) as server,
        _client(server.socket_path) as client,
    ):
        response = await client.post("/v1/llm_query", content=chunks(), headers=AUTH)
        with anyio.fail_after(5):  # the refused body's bytes go back to the budget
            while server._buffered.free != server._buffered.total:
                await anyio.sleep(0.01)
    assert response.status_code == 413


def _raw_request(body: bytes, *extra: str) -> bytes:
    head = [
        "POST /v1/llm_query HTTP/1.1",
        "Host: bridge",
        f"Authorization: Bearer {TOKEN}",
        f"Content-Length: {len(body)}",
        *extra,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@pytest.mark.anyio
async def test_pipelined_requests_are_answered_in_order(run_dir: Path) -> None:
    """A second request arriving while the first runs is kept, not taken for a disconnect."""
    handler = Orchestrator()
    async with _server(run_dir, handler) as server:
        stream = await anyio.connect_unix(server.socket_path)
        async with stream:
            last = _raw_request(b'{"prompt": "second"}', "Connection: close")
            await stream.send(_raw_request(b'{"prompt": "slow"}'))
            await anyio.sleep(0.05)  # the first call is running when the second arrives
            await stream.send(last)
            with anyio.fail_after(5):
                raw = await _read_until_closed(stream)
    assert raw.count(b"HTTP/1.1 200 OK") == 2
    assert raw.index(b"answer to 'slow'") < raw.index(b"answer to 'second'")
    assert [prompt for prompt, _ in handler.llm_calls] == ["slow", "second"]


@pytest.mark.anyio
async def test_expect_100_continue(run_dir: Path) -> None:
    async with _server(run_dir, Orchestrator()) as server:
        stream = await anyio.connect_unix(server.socket_path)
        async with stream:
            body = b'{"prompt": "big"}'
            request = _raw_request(body, "Expect: 100-continue", "Connection: close")
            await stream.send(request[: -len(body)])  # headers only, then wait
            with anyio.fail_after(5):
                interim = await stream.receive()
                assert interim.startswith(b"HTTP/1.1 100 ")
                await stream.send(body)
                raw = await _read_until_closed(stream)
    assert raw.startswith(b"HTTP/1.1 200 OK")
    assert raw.endswith(b'{"response": "answer to \'big\' by default"}')


async def _read_until_closed(stream: anyio.abc.ByteStream) -> bytes:
    data = b""
    while True:
        try:
            data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return data


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/llm_query", {}, "'prompt'"),
        ("/v1/llm_query", {"prompt": 3}, "'prompt'"),
        ("/v1/llm_query", {"prompt": "x", "model": 5}, "'model'"),
        ("/v1/llm_query", {"prompt": "x", "temperature": 1}, "'temperature'"),
        ("/v1/llm_batch", {"prompts": "one"}, "'prompts'"),
        ("/v1/llm_batch", {"prompts": ["a", None]}, "'prompts[1]'"),
        ("/v1/llm_batch", {"prompts": ["a"] * 11}, "'prompts'"),
        ("/v1/rlm_query", {"prompt": "x", "context_id": 7}, "'context_id'"),
        ("/v1/llm_query", ["not", "an", "object"], "JSON object"),
    ],
)
async def test_bad_schema_is_422_naming_the_field(
    run_dir: Path, path: str, body: object, field: str
) -> None:
    handler = Orchestrator()
    async with (
        _server(run_dir, handler, max_batch=10) as server,
        _client(server.socket_path) as client,
    ):
        response = await client.post(path, json=body, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request"
    assert field in response.json()["error"]["message"]
    assert handler.llm_calls == []


@pytest.mark.anyio
async def test_invalid_json_is_422_and_connection_stays_usable(run_dir: Path) -> None:
    async with _server(run_dir, Orchestrator()) as server, _client(server.socket_path) as client:
        bad = await client.post("/v1/llm_query", content=b"{not json", headers=AUTH)
        good = await client.post("/v1/llm_query", json={"prompt": "ok"}, headers=AUTH)
        assert server.connections_accepted == 1
    assert bad.status_code == 422
    assert "not valid UTF-8 JSON" in bad.json()["error"]["message"]
    assert good.status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        b"[" * 50_000 + b"]" * 50_000,  # nested past the JSON decoder's recursion limit
        b'{"prompt": ' + b"9" * 5_000 + b"}",  # past Python's 4,300-digit int limit
        b'{"prompt": "\xff"}',  # not UTF-8
    ],
    ids=["deep", "huge-int", "not-utf8"],
)
async def test_json_the_decoder_refuses_is_422_not_500(run_dir: Path, body: bytes) -> None:
    # The sandbox chooses every byte: a body the decoder raises on is its bad request.
    async with _server(run_dir, Orchestrator()) as server, _client(server.socket_path) as client:
        response = await client.post("/v1/llm_query", content=body, headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["type"] == "invalid_request"


@pytest.mark.anyio
async def test_a_body_of_tiny_values_is_413_before_it_is_decoded(run_dir: Path) -> None:
    # 4 MiB of {} would decode to about 130 MiB of dicts: past the 16 MiB of bodies a
    # sandbox may hold, once its values are counted (engine/json_size.py).
    body = b'{"prompts": [' + b",".join([b"{}"] * (1 << 20)) + b"]}"
    async with _server(run_dir, Orchestrator()) as server, _client(server.socket_path) as client:
        response = await client.post("/v1/llm_batch", content=body, headers=AUTH)
        after = await client.post("/v1/llm_batch", json={"prompts": ["a"] * 1024}, headers=AUTH)
    assert response.status_code == 413, response.text
    assert "values" in response.json()["error"]["message"]
    assert after.status_code == 200


@pytest.mark.anyio
async def test_handler_errors_map_to_429_502_500(run_dir: Path) -> None:
    async with _server(run_dir, Orchestrator()) as server, _client(server.socket_path) as client:
        budget = await client.post("/v1/llm_query", json={"prompt": "budget"}, headers=AUTH)
        model = await client.post("/v1/llm_query", json={"prompt": "model-error"}, headers=AUTH)
        crash = await client.post("/v1/llm_query", json={"prompt": "crash"}, headers=AUTH)
        after = await client.post("/v1/llm_query", json={"prompt": "still up"}, headers=AUTH)
    assert budget.status_code == 429
    assert budget.json()["error"] == {
        "type": "budget_exceeded",
        "message": "the sub-call budget (3 calls) is used up",
        "budget": "sub_calls",
    }
    assert model.status_code == 502
    assert model.json()["error"]["type"] == "ModelError"
    assert crash.status_code == 500
    assert "ValueError: handler bug" in crash.json()["error"]["message"]
    assert after.status_code == 200


@pytest.mark.anyio
async def test_batch_isolates_failures(run_dir: Path) -> None:
    prompts = ["a", "model-error", "budget", "crash", "b"]
    async with _server(run_dir, Orchestrator()) as server, _client(server.socket_path) as client:
        response = await client.post("/v1/llm_batch", json={"prompts": prompts}, headers=AUTH)
    assert response.status_code == 200
    answers = response.json()["responses"]
    assert answers[0] == "answer to 'a' by default"
    assert answers[1] == "[ERROR] the provider returned 500 three times"
    assert answers[2] == "[ERROR] the sub-call budget (3 calls) is used up"
    assert answers[3] == "[ERROR] ValueError: handler bug"
    assert answers[4] == "answer to 'b' by default"


async def _upload(
    client: httpx.AsyncClient, data: Any, content_type: str = "text/plain; charset=utf-8"
) -> httpx.Response:
    headers = {**AUTH, "Content-Type": content_type}
    return await client.post("/v1/contexts", content=data, headers=headers)


@pytest.mark.anyio
async def test_rlm_query_gets_an_uploaded_context_as_a_private_file_once(run_dir: Path) -> None:
    handler = Orchestrator()
    async with _server(run_dir, handler) as server, _client(server.socket_path) as client:
        uploaded = await _upload(client, b'{"k": [1, 2]}', "application/json")
        assert uploaded.status_code == 200, uploaded.text
        context_id = uploaded.json()["context_id"]
        assert uploaded.json()["bytes"] == 13
        assert server.contexts.used_bytes == 13
        body = {"prompt": "sum it", "context_id": context_id}
        response = await client.post("/v1/rlm_query", json=body, headers=AUTH)
        again = await client.post("/v1/rlm_query", json=body, headers=AUTH)
        plain = await client.post("/v1/rlm_query", json={"prompt": "no ctx"}, headers=AUTH)
        assert server.contexts.used_bytes == 0
    assert response.json() == {"response": "child answer to 'sum it'"}
    assert again.status_code == 422 and "already used" in again.json()["error"]["message"]
    assert plain.json() == {"response": "child answer to 'no ctx'"}
    (prompt, path, text), (_, no_path, _) = handler.rlm_calls
    assert (prompt, text, no_path) == ("sum it", '{"k": [1, 2]}', None)
    assert path is not None and path.suffix == ".json"
    assert not path.is_relative_to(run_dir)  # the sandbox never sees the handed-over file
    assert not path.exists()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "context_id", ["../secret.txt", "/etc/passwd", "children/abc.json", "0" * 24, 7, ""]
)
async def test_bad_or_unknown_context_id_is_422(run_dir: Path, context_id: object) -> None:
    handler = Orchestrator()
    async with _server(run_dir, handler) as server, _client(server.socket_path) as client:
        body = {"prompt": "x", "context_id": context_id}
        response = await client.post("/v1/rlm_query", json=body, headers=AUTH)
    assert response.status_code == 422
    assert "context_id" in response.json()["error"]["message"]
    assert handler.rlm_calls == []


@pytest.mark.anyio
async def test_child_contexts_past_the_cap_are_413_and_leave_nothing(run_dir: Path) -> None:
    """The cap covers every context held at once, however it is sent."""

    async def chunks(total: int) -> AsyncIterator[bytes]:  # chunked: no Content-Length
        for _ in range(total // 65536):
            yield b"x" * 65536

    handler = Orchestrator()
    server = _server(run_dir, handler, max_child_context_bytes=1 << 20)
    async with server, _client(server.socket_path) as client:
        fits = await _upload(client, b"x" * (1 << 20))
        full = await _upload(client, b"y")
        assert fits.status_code == 200 and full.status_code == 413
        body = {"prompt": "fits", "context_id": fits.json()["context_id"]}
        assert (await client.post("/v1/rlm_query", json=body, headers=AUTH)).status_code == 200
        declared = await _upload(client, b"z" * ((1 << 20) + 1))
        streamed = await _upload(client, chunks(4 << 20))
        files = list(Path(server.contexts._root or "/nonexistent").iterdir())
        used = server.contexts.used_bytes
    for refused in (full, declared, streamed):
        assert refused.status_code == 413
        message = refused.json()["error"]["message"]
        assert "1.0 MiB on the host at once" in message and "RLM_SANDBOX_DISK" in message
    assert server.contexts.peak_bytes <= 1 << 20
    assert files == [] and used == 0
    assert [call[0] for call in handler.rlm_calls] == ["fits"]


@pytest.mark.anyio
async def test_context_upload_needs_a_known_type_and_few_pending(run_dir: Path) -> None:
    async with _server(run_dir, Orchestrator()) as server, _client(server.socket_path) as client:
        wrong = await _upload(client, b"x", "application/octet-stream")
        pending = [await _upload(client, b"x") for _ in range(server.contexts.max_pending)]
        one_more = await _upload(client, b"x")
    assert wrong.status_code == 415 and "text/plain" in wrong.json()["error"]["message"]
    assert all(r.status_code == 200 for r in pending)
    assert one_more.status_code == 429
    assert one_more.json()["error"]["type"] == "too_many_contexts"


# --- limits on what a client can make the bridge hold ------------------------------------------


@pytest.mark.anyio
async def test_connections_past_the_cap_get_503(run_dir: Path) -> None:
    limits = BridgeLimits(max_connections=3)
    async with _server(run_dir, Orchestrator(), limits=limits) as server:
        held = [await anyio.connect_unix(server.socket_path) for _ in range(3)]
        extra = await anyio.connect_unix(server.socket_path)
        with anyio.fail_after(5):
            raw = await _read_until_closed(extra)
        assert raw.startswith(b"HTTP/1.1 503 ")
        assert b"too_many_connections" in raw
        for stream in held:
            await stream.aclose()
        assert server.connections_refused == 1
        # Closed connections free their slots.
        async with _client(server.socket_path) as client:
            await _answered_once_free(client, "hi", timeout=5)


@pytest.mark.anyio
@pytest.mark.parametrize("stage", ["head", "body"])
async def test_slow_clients_get_408_and_are_closed(run_dir: Path, stage: str) -> None:
    limits = BridgeLimits(header_timeout_s=0.5, body_timeout_s=0.5, min_body_rate=1 << 20)
    handler = Orchestrator()
    async with _server(run_dir, handler, limits=limits) as server:
        stream = await anyio.connect_unix(server.socket_path)
        request = _raw_request(b'{"prompt": "' + b"p" * 100 + b'"}')
        split = request.index(b"\r\n\r\n") + (4 if stage == "body" else -10)
        await stream.send(request[:split])

        async def dribble() -> None:  # one byte at a time, slower than the floor
            for byte in request[split:]:
                await anyio.sleep(0.2)
                await stream.send(bytes([byte]))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(dribble)
                raw = await _read_until_closed(stream)
                tg.cancel_scope.cancel()
    assert raw.startswith(b"HTTP/1.1 408 ")
    assert b"did not arrive in time" in raw
    assert handler.llm_calls == []


@pytest.mark.anyio
async def test_clients_that_never_read_their_replies_are_closed(run_dir: Path) -> None:
    # Both connections ask for an 8 MiB reply and never read it: the reply fills the socket
    # and, without a deadline on sending, held both connections (all there are) for ever.
    limits = BridgeLimits(max_connections=2, body_timeout_s=0.5, min_body_rate=64 << 20)
    async with _server(run_dir, Orchestrator(), limits=limits) as server:
        hogs = [await anyio.connect_unix(server.socket_path) for _ in range(2)]
        for hog in hogs:
            await hog.send(_raw_request(b'{"prompt": "huge reply"}'))
        async with _client(server.socket_path) as client:
            response = await _answered_once_free(client, "after", timeout=10)
        for hog in hogs:
            await hog.aclose()
    assert response.json()["response"] == "answer to 'after' by default"


async def _answered_once_free(
    client: httpx.AsyncClient, prompt: str, timeout: float
) -> httpx.Response:
    """Ask until a connection slot is free (503 until then); the first 200 response."""
    with anyio.fail_after(timeout):
        while True:
            response = await client.post("/v1/llm_query", json={"prompt": prompt}, headers=AUTH)
            if response.status_code == 200:
                return response
            assert response.status_code == 503
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_idle_keep_alive_connection_is_closed(run_dir: Path) -> None:
    limits = BridgeLimits(idle_timeout_s=0.3)
    async with _server(run_dir, Orchestrator(), limits=limits) as server:
        stream = await anyio.connect_unix(server.socket_path)
        with anyio.fail_after(5):
            assert await _read_until_closed(stream) == b""


@pytest.mark.anyio
async def test_bodies_in_memory_share_one_budget(run_dir: Path) -> None:
    """Two bodies that together pass the budget are served one after the other."""
    limits = BridgeLimits(max_buffered_bytes=64 << 10)
    handler = Orchestrator()
    async with _server(run_dir, handler, limits=limits) as server:
        assert server._max_body == 64 << 10  # no single body can exceed the budget
        prompt = "hang" + " " * (40 << 10)
        first = await anyio.connect_unix(server.socket_path)
        await first.send(_raw_request(json.dumps({"prompt": prompt}).encode()))
        with anyio.fail_after(5):
            await handler.started.wait()
        assert server._buffered.free < 40 << 10
        async with _client(server.socket_path) as client, anyio.create_task_group() as tg:
            results: list[httpx.Response] = []

            async def second() -> None:
                body = {"prompt": "x" * (40 << 10)}
                results.append(await client.post("/v1/llm_query", json=body, headers=AUTH))

            tg.start_soon(second)
            await anyio.sleep(0.3)
            assert results == [] and len(handler.llm_calls) == 1  # waiting for room
            await first.aclose()  # cancels the first call and frees its bytes
        assert results[0].status_code == 200
        assert server._buffered.free == server._buffered.total


@pytest.mark.anyio
async def test_client_disconnect_cancels_the_call(run_dir: Path) -> None:
    handler = Orchestrator()
    async with _server(run_dir, handler) as server:
        stream = await anyio.connect_unix(server.socket_path)
        body = b'{"prompt": "hang"}'
        head = (
            "POST /v1/llm_query HTTP/1.1\r\nHost: bridge\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        await stream.send(head.encode() + body)
        with anyio.fail_after(5):
            await handler.started.wait()
            await stream.aclose()
            await handler.cancelled.wait()


@pytest.mark.anyio
async def test_shutdown_with_call_in_flight(run_dir: Path) -> None:
    handler = Orchestrator()
    async with _client(run_dir / "bridge.sock") as client:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg, _server(run_dir, handler) as server:

                async def call() -> None:
                    with pytest.raises(httpx.HTTPError):
                        await client.post("/v1/llm_query", json={"prompt": "hang"}, headers=AUTH)

                tg.start_soon(call)
                await handler.started.wait()
            # Leaving the server cancelled the handler and closed the connection.
    assert handler.cancelled.is_set()
    assert not server.socket_path.exists()


@pytest.mark.anyio
async def test_stale_socket_is_replaced_but_other_files_are_not(run_dir: Path) -> None:
    async with _server(run_dir, Orchestrator()):
        pass
    # A socket left behind by a killed process is fine to reuse.
    import socket

    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(run_dir / "bridge.sock"))
    stale.close()
    async with _server(run_dir, Orchestrator()) as server, _client(server.socket_path) as client:
        response = await client.post("/v1/llm_query", json={"prompt": "a"}, headers=AUTH)
        assert response.status_code == 200
    (run_dir / "bridge.sock").write_text("not a socket")
    with pytest.raises(BridgeError, match="is not a socket"):
        async with _server(run_dir, Orchestrator()):
            pass
    assert (run_dir / "bridge.sock").read_text() == "not a socket"


@pytest.mark.anyio
async def test_socket_path_too_long_is_a_clear_error(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    server = BridgeServer(deep / "bridge.sock", TOKEN, Orchestrator())
    with pytest.raises(BridgeError, match="too long for a Unix socket"):
        async with server:
            pass


def test_empty_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="token"):
        BridgeServer(tmp_path / "s", "", Orchestrator())
