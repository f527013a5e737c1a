"""Helpers of the root-loop tests: scripted models (replay server) and a run that keeps events.

The root model ("root") and the sub model ("sub") are scripted in a cassette served by the
replay server over real HTTP. The sandbox backend is the caller's: the Docker one for the
end-to-end tests, :class:`engine.sandbox.fake.FakeBackend` for the loop's behaviour tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine import Engine, EngineConfig, Limits, RunResult
from engine.models import Cassette, ModelSpec, ReplayServer
from engine.rlm.trajectory import read_trajectory
from engine.sandbox.protocol import SandboxBackend


def root(content: str, *, repeat: bool = False, **usage: int) -> dict[str, Any]:
    """A scripted root-model reply (``usage`` sets its token counts)."""
    response: dict[str, Any] = {"content": content}
    if usage:
        response["usage"] = usage
    return {"match": {"model": "root"}, "response": response, "repeat": repeat}


def sub(contains: str | None, content: str, *, repeat: bool = False, **extra: Any) -> dict:
    """A scripted sub-model reply to a prompt containing ``contains`` (None: any prompt)."""
    match = {"model": "sub"} | ({"contains": contains} if contains else {})
    return {"match": match, "response": {"content": content}, "repeat": repeat, **extra}


def code(source: str, before: str = "Next step.") -> str:
    """A reply with one ```repl block, and text after it the loop must never run."""
    # The closing fence plus text after it: the replay server cuts at the stop sequence like
    # a real provider, so the invented "output" after the block must never reach the kernel.
    return f"{before}\n```repl\n{source}\n```\n\nOutput: (invented by the model)\n"


def done(answer: str) -> str:
    """A reply whose cell sets the final answer."""
    return code(f"answer['content'] = {answer!r}\nanswer['ready'] = True")


class Run:
    """One engine run against a scripted replay server; keeps what the tests inspect."""

    def __init__(self, tmp_path: Path, backend: SandboxBackend | None = None) -> None:
        self.tmp_path = tmp_path
        self.backend = backend
        self.trajectory = tmp_path / "trajectory.jsonl"
        self.server: ReplayServer | None = None
        self.result: RunResult | None = None
        self.events: list[dict[str, Any]] = []

    def config(
        self, server: ReplayServer, profile: str = "frontier", **limits: Any
    ) -> EngineConfig:
        """An engine configuration whose root and sub models are the replay server's."""
        return EngineConfig(
            model=ModelSpec("openai/root", api_base=server.base_url, api_key="x"),
            sub_model=ModelSpec("openai/sub", api_base=server.base_url, api_key="x"),
            limits=Limits(**limits),
            trajectory_path=self.trajectory,
            prompt_profile=profile,
        )

    async def __call__(
        self,
        entries: list[dict[str, Any]],
        query: str,
        context: Any = None,
        profile: str = "frontier",
        **limits: Any,
    ) -> RunResult:
        async with ReplayServer(Cassette(entries)) as server:
            self.server = server
            config = self.config(server, profile, **limits)
            async with Engine(config, backend=self.backend) as engine:
                self.result = await engine.run(query, context)
        self.events = read_trajectory(self.trajectory)
        return self.result

    def root_requests(self) -> list[dict[str, Any]]:
        assert self.server is not None
        return [r for r in self.server.requests if r["model"] == "root"]

    def last_user(self, request_index: int) -> str:
        """The last user message of the ``request_index``-th root request."""
        messages = self.root_requests()[request_index]["messages"]
        return next(m["content"] for m in reversed(messages) if m["role"] == "user")

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    def task_ids(self) -> set[str]:
        return {e["task_id"] for e in self.of_type("run_start")}


# --- scenarios run on both backends (the fake in test_loop_behaviour, Docker in test_rlm_engine)


async def llm_batch_under_one_cell(run: Run) -> None:
    """``llm_batch`` from a cell: six sub-calls, counted, each recorded under that cell."""
    sections = [f"SECTION {i}: " + "filler text " * 200 for i in range(6)]
    counts = [3, 1, 4, 1, 5, 9]
    reply = code(
        "chunks = context.split('\\n')\n"
        "found = llm_batch([f'Count the apples in: {c}' for c in chunks])\n"
        "print(found)\n"
        "answer['content'] = str(sum(int(f) for f in found))\nanswer['ready'] = True"
    )
    entries = [root(reply)] + [sub(f"SECTION {i}:", str(n)) for i, n in enumerate(counts)]
    result = await run(entries, "How many apples?", "\n".join(sections))
    assert result.answer == str(sum(counts)) and result.ready
    assert result.sub_calls == 6 and result.usage_sub.total_tokens > 0
    subs = run.of_type("sub_call")
    (cell,) = run.of_type("cell")
    assert len(subs) == 6 and {s["parent_id"] for s in subs} == {cell["id"]}
    assert sorted(s["response"] for s in subs) == sorted(str(n) for n in counts)


async def sub_call_waits_do_not_count_toward_the_cell_timeout(run: Run) -> None:
    """A cell waits 3 s on two slow sub-calls under a 2 s cell timeout and still finishes:
    the timeout stops the sandbox's own code, not waiting on the orchestrator."""
    reply = code(
        "a = llm_query('slow one')\nb = llm_query('slow two')\n"
        "answer['content'] = a + b\nanswer['ready'] = True"
    )
    entries = [root(reply), sub("slow one", "A", delay_s=1.5), sub("slow two", "B", delay_s=1.5)]
    result = await run(entries, "q", "ctx", cell_timeout_s=2)
    (cell,) = run.of_type("cell")
    assert cell["timed_out"] is False and cell["error"] is None
    assert (result.answer, result.ready) == ("AB", True)


async def llm_map_with_choices_counts_labels(run: Run) -> None:
    """``llm_map(..., choices=...)`` in a cell: answers come back as the labels, ready to count."""
    reply = code(
        "from collections import Counter\n"
        "labels = llm_map(context.split('\\n'), 'Label the question.', "
        "choices=['location', 'human being'])\n"
        "answer['content'] = str(sorted(Counter(labels).items()))\nanswer['ready'] = True"
    )
    questions = "Where is Lima ?\nWho wrote Hamlet ?\nWhere is Oslo ?"
    entries = [root(reply), sub("Items:", "[1] Location.\n[2] **Human being**\n[3] location")]
    result = await run(entries, "Count the labels.", questions)
    assert result.answer == "[('human being', 1), ('location', 2)]"
    (call,) = run.of_type("sub_call")
    assert "one of these labels" in call["prompt"]


async def rlm_query_child_one_level_down(run: Run, parent: str = "", child: str = "") -> None:
    """``rlm_query`` runs a child loop at depth 2 on its own context; ``parent``/``child`` are
    extra lines at the start of each cell."""
    parent_cell = code(
        f"{parent}word = rlm_query('What is the secret word?', context='the secret word is PLUM')\n"
        "answer['content'] = word.lower()\nanswer['ready'] = True"
    )
    child_cell = code(f"{child}answer['content'] = context.split()[-1]\nanswer['ready'] = True")
    entries = [root(parent_cell), {"match": {"model": "sub"}, "response": {"content": child_cell}}]
    result = await run(entries, "Find the word via a child.", max_depth=2)
    assert (result.answer, result.ready, result.sub_calls) == ("plum", True, 1)
    starts = run.of_type("run_start")
    assert [s["depth"] for s in starts] == [1, 2]
    assert len(run.task_ids()) == 2
    (call,) = run.of_type("sub_call")
    assert call["kind"] == "rlm_query" and call["response"] == "PLUM"
    assert starts[1]["parent_id"] == call["id"]
    assert [c["depth"] for c in run.of_type("cell")] == [2, 1]
    child_context = next(e for e in run.of_type("sandbox_ready") if e["depth"] == 2)["context"]
    assert child_context["length_chars"] == len("the secret word is PLUM")


async def sandbox_code_cannot_pick_an_unconfigured_model(run: Run) -> None:
    """``llm_query(model=...)`` from a cell is refused for a model the run was not given."""
    probe = (
        "try:\n    llm_query('hello', model='openai/gpt-4o')\n"
        "except Exception as exc:\n    print('refused:', exc)\n"
        "print('ok:', llm_query('hello', model='openai/sub'))"
    )
    entries = [root(code(probe)), sub("hello", "HI"), root(done("done"))]
    result = await run(entries, "q", "ctx")
    assert result.answer == "done"
    output = run.of_type("cell")[0]["output"]
    assert "refused:" in output and "not available to sandbox code" in output
    assert "ok: HI" in output
    assert run.server is not None
    assert [r["model"] for r in run.server.requests if r["model"] != "root"] == ["sub"]
