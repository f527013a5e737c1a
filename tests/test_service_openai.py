"""The OpenAI-compatible endpoint, driven by the official `openai` client over real HTTP."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator

import anyio
import openai
import pytest

from engine.models import Cassette, ReplayServer
from tests.service_support import API_KEY, Service, code, root, wait_final

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

WRONG_TYPE = code(
    "import json\nanswer['content'] = json.dumps({'errors': 'many'})\nanswer['ready'] = True"
)
CASSETTE = [
    root(
        "CHAT-COUNT",
        code(
            "text = context[0]['content']\n"
            "answer['content'] = f\"{sum('ERROR' in l for l in text.splitlines())} errors\"\n"
            "answer['ready'] = True"
        ),
    ),
    root(
        "FILE-COUNT",
        code(
            "answer['content'] = str(sum('ERROR' in l for l in context.splitlines()))\n"
            "answer['ready'] = True"
        ),
    ),
    root("LIMIT-ONE", code("print('still looking')\nanswer['content'] = 'partial'")),
    # Structured answers: a first answer the schema refuses, then one it accepts.
    root("STRUCTURED-CHAT", WRONG_TYPE, repeat=False),
    root("STRUCTURED-JOB", WRONG_TYPE, repeat=False),
    root(
        "does not match the output schema",
        code(
            "import json\ntext = context if isinstance(context, str) else context[0]['content']\n"
            "n = sum('ERROR' in l for l in text.splitlines())\n"
            "answer['content'] = json.dumps({'errors': n})\nanswer['ready'] = True"
        ),
    ),
    root(
        "LONG-ANSWER",
        code(
            "answer['content'] = ' '.join(f'word{i}' for i in range(300))\nanswer['ready'] = True"
        ),
    ),
]


def log_text(errors: int, lines: int = 3000) -> str:
    rng = random.Random(errors)
    rows = [f"2024-01-01 INFO request {i} served in {rng.randint(1, 99)} ms" for i in range(lines)]
    for index in rng.sample(range(lines), errors):
        rows[index] = f"2024-01-01 ERROR request {index} failed"
    return "\n".join(rows)


@pytest.fixture(scope="module")
async def replay() -> AsyncIterator[ReplayServer]:
    async with ReplayServer(Cassette(CASSETTE)) as server:
        yield server


@pytest.fixture(scope="module")
async def service(
    replay: ReplayServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Service]:
    svc = Service(tmp_path_factory.mktemp("svc") / "data", replay.base_url)
    await anyio.to_thread.run_sync(svc.start)
    try:
        yield svc
    finally:
        await anyio.to_thread.run_sync(svc.stop)


def client_for(service: Service, key: str = API_KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=service.url + "/v1", api_key=key, max_retries=0)


async def test_models_lists_the_rlm(service: Service) -> None:
    async with client_for(service) as client:
        ids = [model.id async for model in client.models.list()]
    # The root model first, then every other model the service allows (here its sub model).
    assert ids == ["rlm", "rlm/openai/root", "rlm/openai/sub"]


async def test_chat_conversation_is_the_context(service: Service, replay: ReplayServer) -> None:
    document = log_text(41)
    async with client_for(service) as client:
        completion = await client.chat.completions.create(
            model="rlm",
            messages=[
                {"role": "user", "content": document},
                {"role": "user", "content": "CHAT-COUNT: how many ERROR lines are there?"},
            ],
        )
    choice = completion.choices[0]
    assert choice.message.content == "41 errors" and choice.finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    extension = completion.model_extra["rlm"]
    assert extension["stop_reason"] == "answer" and extension["iterations"] == 1
    # The root model saw a description of the conversation, never the document itself.
    job_requests = [r for r in replay.requests if "CHAT-COUNT" in json.dumps(r)]
    assert job_requests
    for request in job_requests:
        assert "ERROR request" not in json.dumps(request["messages"])[:20000]
        assert len(json.dumps(request["messages"])) < len(document)


async def test_streaming_sends_progress_comments_then_the_answer(service: Service) -> None:
    async with client_for(service) as client:
        stream = await client.chat.completions.create(
            model="rlm/openai/root",
            messages=[{"role": "user", "content": "LONG-ANSWER please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces, finishes, usage = [], [], None
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                pieces.append(choice.delta.content or "")
                if choice.finish_reason:
                    finishes.append(choice.finish_reason)
    text = "".join(pieces)
    assert text == " ".join(f"word{i}" for i in range(300))
    assert len([p for p in pieces if p]) > 1  # streamed in pieces
    assert finishes == ["stop"]
    assert usage is not None and usage.total_tokens > 0

    # Raw SSE: progress travels as comment lines only, never inside a data event.
    async with service.client() as http:
        body = {
            "model": "rlm",
            "messages": [{"role": "user", "content": "LONG-ANSWER again"}],
            "stream": True,
        }
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = [line async for line in response.aiter_lines()]
    comments = [line for line in lines if line.startswith(": rlm {")]
    progress = [json.loads(line[len(": rlm ") :])["type"] for line in comments]
    assert progress[0] == "run_start" and "turn" in progress and "cell" in progress
    assert progress[-1] == "run_end"
    data = [line[len("data: ") :] for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    first_content = next(i for i, line in enumerate(lines) if '"content": "word0' in line)
    assert max(i for i, line in enumerate(lines) if line.startswith(": rlm {")) < first_content
    assert not any("run_start" in d for d in data)


async def test_attached_file_is_the_context(service: Service) -> None:
    async with service.client() as http:
        upload = await http.post(
            "/v1/files", params={"filename": "server.log"}, content=log_text(17).encode()
        )
        file_id = upload.json()["id"]
    async with client_for(service) as client:
        completion = await client.chat.completions.create(
            model="rlm",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "FILE-COUNT: how many errors in the log?"},
                        {"type": "file", "file": {"file_id": file_id}},
                    ],
                }
            ],
        )
    assert completion.choices[0].message.content == "17"


COUNT_SCHEMA = {
    "type": "object",
    "properties": {"errors": {"type": "integer"}},
    "required": ["errors"],
    "additionalProperties": False,
}


async def test_response_format_json_schema_makes_a_validated_json_answer(service: Service) -> None:
    async with client_for(service) as client:
        completion = await client.chat.completions.create(
            model="rlm",
            messages=[
                {"role": "user", "content": log_text(7)},
                {"role": "user", "content": "STRUCTURED-CHAT: how many ERROR lines?"},
            ],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "count", "schema": COUNT_SCHEMA},
            },
        )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert json.loads(choice.message.content or "") == {"errors": 7}
    # The first answer ({"errors": "many"}) went back to the root with its validation errors.
    assert completion.model_extra["rlm"]["iterations"] == 2


async def test_job_output_schema_gives_answer_json(service: Service) -> None:
    async with service.client() as http:
        response = await http.post(
            "/v1/jobs",
            json={
                "query": "STRUCTURED-JOB count the ERROR lines",
                "context": log_text(3),
                "output_schema": COUNT_SCHEMA,
            },
        )
        assert response.status_code == 201, response.text
        assert response.json()["request"]["output_schema"] == COUNT_SCHEMA
        job = await wait_final(http, response.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["answer_json"] == {"errors": 3}
    assert json.loads(job["answer"]) == {"errors": 3}


async def test_invalid_schemas_are_refused_with_422(service: Service) -> None:
    bad = {"type": "object", "properties": {"errors": {"type": "integr"}}}
    async with service.client() as http:
        response = await http.post("/v1/jobs", json={"query": "q", "output_schema": bad})
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["param"] == "output_schema"
        assert "not a valid JSON Schema at properties/errors/type" in error["message"]
        response = await http.post("/v1/jobs", json={"query": "q", "output_schema": [1]})
        assert response.status_code == 422
        assert "must be a JSON object" in response.json()["error"]["message"]
    async with client_for(service) as client:
        with pytest.raises(openai.UnprocessableEntityError, match="not a valid JSON Schema"):
            await client.chat.completions.create(
                model="rlm",
                messages=[{"role": "user", "content": "hi"}],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": bad},
                },
            )
        with pytest.raises(openai.UnprocessableEntityError, match="response_format"):
            await client.chat.completions.create(
                model="rlm",
                messages=[{"role": "user", "content": "hi"}],
                extra_body={"response_format": {"type": "yaml"}},
            )


async def test_limit_stop_is_finish_reason_length(service: Service) -> None:
    async with client_for(service) as client:
        completion = await client.chat.completions.create(
            model="rlm",
            messages=[{"role": "user", "content": "LIMIT-ONE: find it"}],
            extra_body={"rlm": {"limits": {"max_iterations": 1}}},
        )
    choice = completion.choices[0]
    assert (choice.message.content, choice.finish_reason) == ("partial", "length")
    assert completion.model_extra["rlm"]["stop_reason"] == "max_iterations"


async def test_errors_surface_as_openai_exceptions(service: Service) -> None:
    async with client_for(service) as client:
        with pytest.raises(openai.NotFoundError, match='use "rlm"'):
            await client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(openai.UnprocessableEntityError, match=r"rlm\.limits\.max_iterations"):
            await client.chat.completions.create(
                model="rlm",
                messages=[{"role": "user", "content": "hi"}],
                extra_body={"rlm": {"limits": {"max_iterations": 0}}},
            )
        with pytest.raises(openai.UnprocessableEntityError, match="at least one user message"):
            await client.chat.completions.create(
                model="rlm", messages=[{"role": "system", "content": "only a system prompt"}]
            )
        # No cassette entry for this conversation: the run fails and says why.
        with pytest.raises(openai.APIStatusError, match="RLM run failed") as failure:
            await client.chat.completions.create(
                model="rlm", messages=[{"role": "user", "content": "UNSCRIPTED question"}]
            )
        assert failure.value.status_code == 502
    async with client_for(service, key="not-a-valid-key") as client:
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(
                model="rlm", messages=[{"role": "user", "content": "hi"}]
            )
