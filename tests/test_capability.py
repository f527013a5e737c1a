"""Profile by capability: the auto decision from a real HTTP server's metadata and from names.

The servers here are real HTTP servers (``http.server`` on an ephemeral port) answering with
the JSON shapes llama.cpp, vLLM and Ollama publish; no client is mocked.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from engine.config import load_config
from engine.errors import ConfigError
from engine.models import ModelSpec
from engine.models.capability import (
    ModelProfileRule,
    ServerFacts,
    choose_profile,
    decide,
    params_from_name,
    parse_model_profiles,
    probe_server,
)

pytestmark = pytest.mark.anyio

# llama.cpp's llama-server as measured here (xllamacpp, serving the 1.5B GGUF under an
# unrelated alias with -c 16384): GET /v1/models and GET /props, trimmed of long fields.
LLAMA_CPP = {
    "/v1/models": {
        "models": [
            {
                "name": "house-model",
                "model": "house-model",
                "type": "model",
                "capabilities": ["completion"],
                "details": {"format": "gguf", "parameter_size": "", "quantization_level": ""},
            }
        ],
        "object": "list",
        "data": [
            {
                "id": "house-model",
                "aliases": ["house-model"],
                "object": "model",
                "created": 1796115048,
                "owned_by": "llamacpp",
                "meta": {
                    "vocab_type": 2,
                    "n_vocab": 151936,
                    "n_ctx": 16384,
                    "n_ctx_train": 32768,
                    "n_embd": 1536,
                    "n_params": 1777088000,
                    "size": 1111370240,
                    "ftype": "Q4_K - Medium",
                },
            }
        ],
    },
    "/props": {
        "default_generation_settings": {"params": {"seed": 0, "temperature": 0.0}, "n_ctx": 16384},
        "total_slots": 2,
        "model_alias": "house-model",
        "model_path": "/root/.cache/rlm/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "build_info": "b0-unknown",
    },
}
# vLLM: `vllm serve Qwen/Qwen2.5-72B-Instruct --served-model-name prod --max-model-len 32768`.
VLLM = {
    "/v1/models": {
        "object": "list",
        "data": [
            {
                "id": "prod",
                "object": "model",
                "created": 1764000000,
                "owned_by": "vllm",
                "root": "Qwen/Qwen2.5-72B-Instruct",
                "parent": None,
                "max_model_len": 32768,
                "permission": [],
            }
        ],
    }
}
# Ollama: POST /api/show for a pulled model.
OLLAMA = {
    "/api/show": {
        "details": {"family": "qwen2", "parameter_size": "7.6B", "quantization_level": "Q4_K_M"},
        "model_info": {"general.architecture": "qwen2", "qwen2.context_length": 32768},
    },
    "/v1/models": {"object": "list", "data": [{"id": "qwen2.5:latest", "object": "model"}]},
}


class _Handler(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, Any]] = {}
    seen: ClassVar[list[tuple[str, str, str]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        self.seen.append((self.command, self.path, body))
        payload = self.routes.get(self.path)
        if payload is None:
            self.send_response(404)
            self.end_headers()
            return
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass


class MetadataServer:
    """A real HTTP server on 127.0.0.1 answering fixed JSON per path."""

    def __init__(self, routes: dict[str, Any]) -> None:
        handler = type("Handler", (_Handler,), {"routes": routes, "seen": []})
        self.handler = handler
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.root = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def seen(self) -> list[tuple[str, str, str]]:
        return self.handler.seen

    def __enter__(self) -> MetadataServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def llama_cpp() -> Iterator[MetadataServer]:
    with MetadataServer(LLAMA_CPP) as server:
        yield server


async def test_capability_llama_cpp_alias_gets_small_from_server_metadata(
    llama_cpp: MetadataServer,
) -> None:
    spec = ModelSpec("openai/house-model", api_base=f"{llama_cpp.root}/v1", api_key="k")
    choice = await choose_profile(spec, "auto")
    assert choice.profile == "small"
    assert choice.params_b == pytest.approx(1.777088)
    assert "server" in choice.reason
    # The served context size (-c), not the trained one, is what a request may use.
    assert choice.context_window == 16384
    assert "/root/.cache/rlm/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf" in choice.facts.names
    assert ("GET", "/props", "") in llama_cpp.seen


async def test_capability_vllm_root_name_gives_size() -> None:
    with MetadataServer(VLLM) as server:
        spec = ModelSpec("hosted_vllm/prod", api_base=f"{server.root}/v1")
        choice = await choose_profile(spec, "auto")
    assert choice.profile == "frontier"
    assert choice.params_b == 72
    assert "Qwen/Qwen2.5-72B-Instruct" in choice.reason
    assert choice.context_window == 32768


async def test_capability_ollama_show_reports_parameter_size() -> None:
    with MetadataServer(OLLAMA) as server:
        spec = ModelSpec("ollama/qwen2.5:latest", api_base=server.root)
        choice = await choose_profile(spec, "auto")
        posted = [s for s in server.seen if s[1] == "/api/show"]
    assert choice.profile == "small"
    assert choice.params_b == pytest.approx(7.6)
    assert choice.context_window == 32768
    assert json.loads(posted[0][2]) == {"model": "qwen2.5:latest"}


async def test_capability_unknown_server_and_name_gets_guardrails() -> None:
    listing = {"object": "list", "data": [{"id": "my-alias", "object": "model"}]}
    with MetadataServer({"/v1/models": listing}) as server:
        spec = ModelSpec("openai/my-alias", api_base=f"{server.root}/v1")
        choice = await choose_profile(spec, "auto")
    assert choice.profile == "small"
    assert "unknown" in choice.reason


async def test_capability_unreachable_server_decides_from_name() -> None:
    with MetadataServer({}) as server:
        dead = server.root
    spec = ModelSpec("openai/Qwen2.5-32B-Instruct", api_base=f"{dead}/v1")
    choice = await choose_profile(spec, "auto")
    assert (choice.profile, choice.params_b) == ("frontier", 32)
    assert choice.facts == ServerFacts()


async def test_capability_config_rule_wins_over_metadata(llama_cpp: MetadataServer) -> None:
    spec = ModelSpec("openai/house-model", api_base=f"{llama_cpp.root}/v1")
    # The rule may name what the server reports (the model file), not only the model string.
    rules = [ModelProfileRule("*qwen2.5-coder-1.5b*.gguf", "frontier")]
    choice = await choose_profile(spec, "auto", rules=rules)
    assert choice.profile == "frontier"
    assert "config rule" in choice.reason


async def test_capability_explicit_profile_is_not_probed(llama_cpp: MetadataServer) -> None:
    spec = ModelSpec("openai/house-model", api_base=f"{llama_cpp.root}/v1")
    choice = await choose_profile(spec, "frontier")
    assert choice.profile == "frontier"
    assert llama_cpp.seen == []


async def test_capability_probe_sends_the_api_key(llama_cpp: MetadataServer) -> None:
    seen_auth: list[str | None] = []

    class Auth(_Handler):
        routes: ClassVar[dict[str, Any]] = LLAMA_CPP
        seen: ClassVar[list[tuple[str, str, str]]] = []

        def do_GET(self) -> None:
            seen_auth.append(self.headers.get("Authorization"))
            self._answer()

    server = MetadataServer({})
    server.httpd.RequestHandlerClass = Auth
    with server:
        facts = await probe_server(ModelSpec("openai/m", api_base=f"{server.root}/v1", api_key="s"))
    assert facts.params == 1777088000
    assert seen_auth and all(a == "Bearer s" for a in seen_auth)


def test_capability_hosted_model_known_to_litellm_is_frontier() -> None:
    assert decide(ModelSpec("gpt-4o-mini"), ServerFacts()).profile == "frontier"
    assert decide(ModelSpec("anthropic/claude-sonnet-4-20250514"), ServerFacts()).profile == (
        "frontier"
    )


def test_capability_size_in_name_overrides_hosted() -> None:
    choice = decide(ModelSpec("groq/llama-3.1-8b-instant"), ServerFacts())
    assert (choice.profile, choice.params_b) == ("small", 8)


def test_capability_trained_checkpoint_is_recognised() -> None:
    facts = ServerFacts(names=("mit-oasys/rlm-qwen3-8b-v0.1",))
    assert decide(ModelSpec("hosted_vllm/rlm"), facts).profile == "rlm-trained"


@pytest.mark.parametrize(
    ("name", "billions"),
    [
        ("Qwen2.5-Coder-1.5B-Instruct-Q4_K_M.gguf", 1.5),
        ("qwen2.5-7b", 7),
        ("deepseek-coder-33b-instruct", 33),
        ("Qwen3-30B-A3B", 30),
        ("mixtral-8x7b-instruct", 56),
        ("SmolLM2-135M-Instruct", 0.135),
        ("llama-3.1-8b-instant", 8),
        ("gpt-4o-mini", None),
        ("claude-3-5-sonnet", None),
        ("qwen2.5:latest", None),
        ("bge-m3", None),
        ("model-q8_0-bf16", None),
    ],
)
def test_capability_params_from_name(name: str, billions: float | None) -> None:
    assert params_from_name(name) == (pytest.approx(billions) if billions else None)


def test_capability_toml_rules_are_validated() -> None:
    rules = parse_model_profiles(
        {"openai/qwen-*": "small"}, ["auto", "small", "frontier"], "rlm.toml"
    )
    assert rules == (ModelProfileRule("openai/qwen-*", "small"),)
    assert rules[0].matches(["OpenAI/Qwen-Local"])
    with pytest.raises(ConfigError, match=r"huge.*is not a profile; use one of frontier, small"):
        parse_model_profiles({"x": "huge"}, ["auto", "small", "frontier"], "rlm.toml")
    with pytest.raises(ConfigError, match="must be a table"):
        parse_model_profiles("small", ["small"], "rlm.toml")


def test_capability_rules_come_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "rlm.toml"
    path.write_text('model = "openai/x"\n\n[model_profiles]\n"openai/house-*" = "rlm-trained"\n')
    config = load_config({}, env={}, config_file=path)
    assert config.model_profiles == (ModelProfileRule("openai/house-*", "rlm-trained"),)
    path.write_text('[model_profiles]\n"openai/house-*" = 3\n')
    with pytest.raises(ConfigError, match=r"model_profiles.openai/house-\* = 3 is not a profile"):
        load_config({}, env={}, config_file=path)


async def test_capability_engine_records_why_auto_chose(
    llama_cpp: MetadataServer, tmp_path: Path
) -> None:
    from engine import Engine, EngineConfig

    spec = ModelSpec("openai/house-model", api_base=f"{llama_cpp.root}/v1")
    # These engines run no task: no warm sandbox either.
    async with Engine(EngineConfig(model=spec, warm_pool=0)) as engine:
        assert engine.profile.name == "small"
        assert "server" in engine.profile_reason
        # The served context size fills the window the spec left open.
        assert engine.root_spec.context_window == 16384
    rules = (ModelProfileRule("*house*", "frontier"),)
    async with Engine(EngineConfig(model=spec, model_profiles=rules, warm_pool=0)) as engine:
        assert (engine.profile.name, engine.profile_reason) == ("frontier", "config rule '*house*'")
    unknown = (ModelProfileRule("*house*", "tiny"),)
    with pytest.raises(ConfigError, match="unknown prompt profile 'tiny'"):
        async with Engine(EngineConfig(model=spec, model_profiles=unknown, warm_pool=0)):
            pass
