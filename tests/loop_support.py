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
