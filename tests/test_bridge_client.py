"""The in-sandbox bridge client against the real bridge server.

The client module (``sandbox-image/rlm_runtime/bridge_client.py``, stdlib only) is imported on
the host from its file, with the environment pointing at a temporary run directory, and
called from worker threads exactly as the kernel would call it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.bridge import BridgeServer
from engine.errors import BudgetExceededError, ModelError
from tests.module_support import load_module

TOKEN = "per-task-token"
CLIENT_FILE = Path(__file__).parents[1] / "sandbox-image" / "rlm_runtime" / "bridge_client.py"


bc = load_module("rlm_bridge_client_under_test", CLIENT_FILE)


class Orchestrator:
    """A real handler with observable behaviour: delays, failures, concurrency, contexts."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.max_in_flight = 0
        self.prompts: list[str] = []
        self.rlm_paths: list[Path | None] = []
        self.started = anyio.Event()
        self.cancelled = anyio.Event()

    async def llm_query(self, prompt: str, model: str | None) -> str:
        self.prompts.append(prompt)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if prompt == "hang":
                self.started.set()
                try:
                    await anyio.sleep_forever()
                except anyio.get_cancelled_exc_class():
                    self.cancelled.set()
                    raise
            if prompt.startswith("sleep "):
                # Later items finish first, so answers arriving in order proves reordering.
                await anyio.sleep(float(prompt.split()[1]))
            if prompt == "fail":
                raise ModelError("the provider is down; retry later")
            if prompt == "budget":
                raise BudgetExceededError("tokens", "token budget of 1000 used up")
            return f"{model or 'sub'}: {prompt.upper()}"
        finally:
            self.in_flight -= 1

    async def rlm_query(self, prompt: str, context_path: Path | None) -> str:
        self.rlm_paths.append(context_path)
        if context_path is None:
            return f"child({prompt}) without context"
        return f"child({prompt}) got {context_path.suffix}: {context_path.read_text()}"


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setenv("RLM_RUN_DIR", str(run))
    monkeypatch.setenv("RLM_BRIDGE_SOCKET", str(run / "bridge.sock"))
    monkeypatch.setenv("RLM_BRIDGE_TOKEN", TOKEN)
    monkeypatch.delenv("RLM_BRIDGE_TIMEOUT", raising=False)
    return run


def _server(run_dir: Path, handler: Orchestrator, **kwargs: Any) -> BridgeServer:
    return BridgeServer(run_dir / "bridge.sock", TOKEN, handler, **kwargs)


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking client function in a worker thread, as the kernel runs it."""
    with anyio.fail_after(30):
        return await anyio.to_thread.run_sync(lambda: fn(*args))


@pytest.mark.anyio
async def test_llm_query_round_trip(run_dir: Path) -> None:
    handler = Orchestrator()
    async with _server(run_dir, handler) as server:
        assert await _call(bc.llm_query, "hello") == "sub: HELLO"
        assert await _call(bc.llm_query, "ünïcode ✓", "big") == "big: ÜNÏCODE ✓"
        assert await _call(bc.llm_query, "") == "sub: "
        # The same thread keeps one connection alive across calls.
        three = await _call(lambda: [bc.llm_query(p) for p in ("a", "b", "c")])
        assert three == ["sub: A", "sub: B", "sub: C"]
        assert server.connections_accepted <= 4  # at most one per worker thread used
    assert handler.prompts == ["hello", "ünïcode ✓", "", "a", "b", "c"]


@pytest.mark.anyio
async def test_llm_batch_keeps_order_and_isolates_failures(run_dir: Path) -> None:
    handler = Orchestrator()
    prompts = ["sleep 0.3", "sleep 0.2", "fail", "sleep 0.1", "budget", "plain"]
    async with _server(run_dir, handler):
        answers = await _call(bc.llm_batch, prompts)
    assert answers == [
        "sub: SLEEP 0.3",
        "sub: SLEEP 0.2",
        "[ERROR] the provider is down; retry later",
        "sub: SLEEP 0.1",
        "[ERROR] token budget of 1000 used up",
        "sub: PLAIN",
    ]
    assert handler.max_in_flight >= 3  # the three sleeping items overlapped


@pytest.mark.anyio
async def test_llm_batch_many_prompts_and_edge_cases(run_dir: Path) -> None:
    handler = Orchestrator()
    prompts = [f"item {i}" for i in range(300)]
    async with _server(run_dir, handler):
        answers = await _call(bc.llm_batch, prompts, "m2")
        assert await _call(bc.llm_batch, []) == []
        assert await _call(bc.llm_batch, ("x", "y")) == ["sub: X", "sub: Y"]
    assert answers == [f"m2: ITEM {i}" for i in range(300)]


@pytest.mark.anyio
async def test_inputs_are_validated_client_side(run_dir: Path) -> None:
    handler = Orchestrator()
    async with _server(run_dir, handler):
        with pytest.raises(TypeError, match="prompt must be a str, not int"):
            await _call(bc.llm_query, 42)
        with pytest.raises(TypeError, match="model must be a non-empty str"):
            await _call(bc.llm_query, "x", 3)
        with pytest.raises(TypeError, match="list of prompt strings, not str"):
            await _call(bc.llm_batch, "just one prompt")
        with pytest.raises(TypeError, match=r"prompts\[1\] must be a str, not NoneType"):
            await _call(bc.llm_batch, ["ok", None])
        with pytest.raises(TypeError, match="prompt must be a str"):
            await _call(bc.rlm_query, b"bytes")
    assert handler.prompts == []


@pytest.mark.anyio
async def test_wrong_token_is_rejected(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLM_BRIDGE_TOKEN", "stolen-or-stale")
    handler = Orchestrator()
    async with _server(run_dir, handler):
        with pytest.raises(bc.BridgeCallError, match="HTTP 401 unauthorized"):
            await _call(bc.llm_query, "hi")
    assert handler.prompts == []


@pytest.mark.anyio
async def test_oversize_request_is_413(run_dir: Path) -> None:
    """Bigger than the socket buffers: the client is cut off mid-send and still reads the 413."""
    handler = Orchestrator()
    async with _server(run_dir, handler, max_body_bytes=4096) as server:
        with pytest.raises(bc.BridgeCallError, match="HTTP 413 payload_too_large"):
            await _call(bc.llm_query, "x" * (8 << 20))
        with pytest.raises(bc.BridgeCallError, match="HTTP 413"):
            await _call(bc.llm_batch, ["y" * 1000] * 10)
        # The refused connection was closed; the next call reconnects transparently.
        assert await _call(bc.llm_query, "small") == "sub: SMALL"
        assert server.connections_accepted >= 2
    assert handler.prompts == ["small"]


@pytest.mark.anyio
async def test_server_side_schema_errors_reach_the_client(run_dir: Path) -> None:
    async with _server(run_dir, Orchestrator(), max_batch=3):
        with pytest.raises(bc.BridgeCallError, match=r"422 invalid_request.*more than the limit"):
            await _call(bc.llm_batch, ["a", "b", "c", "d"])


@pytest.mark.anyio
async def test_budget_error_raises_budget_exhausted(run_dir: Path) -> None:
    async with _server(run_dir, Orchestrator()):
        with pytest.raises(bc.BudgetExhausted, match=r"^token budget of 1000 used up$"):
            await _call(bc.llm_query, "budget")
        with pytest.raises(bc.BridgeCallError, match=r"HTTP 502 ModelError.*provider is down"):
            await _call(bc.llm_query, "fail")
    assert issubclass(bc.BudgetExhausted, RuntimeError)
    assert issubclass(bc.BridgeCallError, RuntimeError)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ("plain text context", "child(q) got .txt: plain text context"),
        ({"rows": [1, 2], "name": "ü"}, 'child(q) got .json: {"rows": [1, 2], "name": "ü"}'),
        ([1, "two", None], 'child(q) got .json: [1, "two", null]'),
        (None, "child(q) without context"),
    ],
)
async def test_rlm_query_hands_context_over_and_cleans_up(
    run_dir: Path, context: object, expected: str
) -> None:
    handler = Orchestrator()
    async with _server(run_dir, handler) as server:
        assert await _call(bc.rlm_query, "q", context) == expected
        assert server.contexts.used_bytes == 0
    (path,) = handler.rlm_paths
    assert (path is None) == (context is None)
    if path is not None:
        assert not path.exists()
    assert list(run_dir.iterdir()) == []  # nothing written next to the socket


@pytest.mark.anyio
async def test_rlm_query_rejects_non_json_context(run_dir: Path) -> None:
    handler = Orchestrator()
    async with _server(run_dir, handler) as server:
        with pytest.raises(TypeError, match=r"JSON-serialisable.*set is not"):
            await _call(bc.rlm_query, "q", {1, 2, 3})
        # Found mid-stream, after a megabyte was sent: the bridge drops the partial upload.
        late = {"rows": ["x" * 1000] * 2000, "when": object()}
        with pytest.raises(TypeError, match="JSON-serialisable"):
            await _call(bc.rlm_query, "q", late)
        with anyio.fail_after(5):
            while server.contexts.used_bytes:
                await anyio.sleep(0.01)
        assert await _call(bc.llm_query, "still works") == "sub: STILL WORKS"
    assert handler.rlm_paths == []


@pytest.mark.anyio
async def test_no_bridge_gives_a_clear_message(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(bc.BridgeCallError, match="bridge is not available in this sandbox"):
        await _call(bc.llm_query, "hi")  # no server on the socket path
    with pytest.raises(bc.BridgeCallError, match="bridge is not available in this sandbox"):
        await _call(bc.rlm_query, "hi", "ctx")
    monkeypatch.delenv("RLM_BRIDGE_SOCKET")
    with pytest.raises(bc.BridgeCallError, match=r"bridge is not available.*not set"):
        await _call(bc.llm_batch, ["a"])
    monkeypatch.setenv("RLM_BRIDGE_SOCKET", str(run_dir / "bridge.sock"))
    monkeypatch.setenv("RLM_BRIDGE_TIMEOUT", "soon")
    with pytest.raises(bc.BridgeCallError, match="RLM_BRIDGE_TIMEOUT must be a number"):
        await _call(bc.llm_query, "hi")


@pytest.mark.anyio
async def test_timeout_closes_the_connection_and_cancels_the_call(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_BRIDGE_TIMEOUT", "0.5")
    handler = Orchestrator()
    async with _server(run_dir, handler):
        with pytest.raises(bc.BridgeCallError, match=r"did not answer /v1/llm_query within 0\.5 s"):
            await _call(bc.llm_query, "hang")
        with anyio.fail_after(5):
            await handler.cancelled.wait()  # the server saw the disconnect
        assert await _call(bc.llm_query, "next") == "sub: NEXT"


@pytest.mark.anyio
async def test_threads_get_their_own_connections(run_dir: Path) -> None:
    handler = Orchestrator()
    barrier = threading.Barrier(4)
    results: list[str] = []

    def worker(i: int) -> None:
        barrier.wait(timeout=10)
        results.append(bc.llm_query(f"sleep 0.2 from {i}"))

    async with _server(run_dir, handler) as server:

        def run_threads() -> None:
            threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=20)

        await _call(run_threads)
        assert server.connections_accepted == 4
    assert sorted(results) == [f"sub: SLEEP 0.2 FROM {i}" for i in range(4)]
    assert handler.max_in_flight == 4


@pytest.mark.anyio
async def test_server_shutdown_with_call_in_flight(run_dir: Path) -> None:
    handler = Orchestrator()
    outcome: list[BaseException] = []

    def blocked_call() -> None:
        try:
            bc.llm_query("hang")
        except BaseException as exc:
            outcome.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            async with _server(run_dir, handler):
                tg.start_soon(anyio.to_thread.run_sync, blocked_call)
                await handler.started.wait()
            # The server has stopped: its socket is gone and the handler was cancelled ...
            assert not (run_dir / "bridge.sock").exists()
            assert handler.cancelled.is_set()
        # ... and the blocked client returned with an error instead of hanging.
    (error,) = outcome
    assert isinstance(error, bc.BridgeCallError)
    assert "the task may be ending" in str(error)
    assert not os.path.exists(run_dir / "bridge.sock")


@pytest.mark.anyio
async def test_child_context_past_the_cap_is_refused_clearly(run_dir: Path) -> None:
    handler = Orchestrator()
    async with _server(run_dir, handler, max_child_context_bytes=1 << 20) as server:
        with pytest.raises(bc.BridgeCallError, match=r"HTTP 413 .*RLM_SANDBOX_DISK"):
            await _call(bc.rlm_query, "q", "x" * (3 << 20))
        assert server.contexts.used_bytes == 0
        assert server.contexts.peak_bytes <= 1 << 20
        assert await _call(bc.rlm_query, "q", "small") == "child(q) got .txt: small"
    assert len(handler.rlm_paths) == 1
