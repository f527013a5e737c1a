"""Sessions: several queries, one after another, on one live kernel.

An :class:`EngineSession` prepares the context once and keeps its sandbox open; each
:meth:`EngineSession.ask` runs a root loop in it, with its own budget and trajectory, so the
variables an earlier query made are still there. The root of a later query is told a short
account of the earlier queries and answers and of the variables they left (never their
transcripts). A kernel that died is started again with the same context, and the next query
is told that its variables are gone.

The sandbox's bridge is opened once, so its handler is a :class:`_TurnBridge` that passes
each sub-call to the bridge of the query running now.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from engine.config import default_trajectory_dir
from engine.errors import KernelDiedError, RLMError, SubCallRefusedError
from engine.lifecycle import AsyncResource
from engine.log import get_logger
from engine.models import UsageLedger
from engine.rlm import prompts
from engine.rlm.answer_schema import AnswerSchema
from engine.rlm.budget import Budget
from engine.rlm.loop import LoopOutcome, RunEvents
from engine.rlm.query import check_query
from engine.rlm.result import RunResult
from engine.rlm.trajectory import EventCallback, Trajectory
from engine.tools import ToolBudget

if TYPE_CHECKING:
    from engine.contexts import PreparedContext
    from engine.rlm.engine import Engine, TaskBridge
    from engine.sandbox.protocol import CodeSandbox

log = get_logger(__name__)

#: Seconds the bookkeeping cells (reset ``answer``, list the variables) may take.
_HOUSEKEEPING_TIMEOUT_S = 30.0
#: Lists the user's variables with their type and size, as one JSON line (SHOW_VARS skips
#: the helpers, ``context`` and ``answer``).
_VARIABLES_CELL = (
    "import json as _j\n"
    "print(_j.dumps({_n: [_t, len(globals()[_n]) if hasattr(globals()[_n], '__len__') "
    "else None] for _n, _t in list(SHOW_VARS().items())[:200]}))\n"
    "del _j"
)
_RESET_CELL = 'answer = {"content": "", "ready": False}'
_NAME_CHARS = 60


@dataclass(frozen=True)
class SessionTurn:
    """One query of a session and how it ended."""

    query: str
    answer: str
    stop_reason: str
    task_id: str
    #: set when this query started on a fresh kernel (the earlier one was lost)
    kernel_note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "query": self.query,
            "answer": self.answer,
            "stop_reason": self.stop_reason,
            "task_id": self.task_id,
            "kernel_note": self.kernel_note,
        }


class _TurnBridge:
    """The session sandbox's bridge handler: sub-calls go to the running query's bridge."""

    def __init__(self) -> None:
        self.current: TaskBridge | None = None

    def _bridge(self) -> TaskBridge:
        if self.current is None:
            raise SubCallRefusedError(
                "invalid_request", "no query is running in this session; sub-calls are refused"
            )
        return self.current

    async def llm_query(self, prompt: str, model: str | None) -> str:
        return await self._bridge().llm_query(prompt, model)

    async def rlm_query(self, prompt: str, context_path: Path | None) -> str:
        return await self._bridge().rlm_query(prompt, context_path)

    async def call_tool(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        return await self._bridge().call_tool(name, args, kwargs)

    async def llm_query_tools(self, prompt: str, model: str | None, tools: tuple[str, ...]) -> str:
        return await self._bridge().llm_query_tools(prompt, model, tools)


class EngineSession(AsyncResource):
    """Queries on one live kernel; make one with :meth:`engine.Engine.session`.

    Use as an async context manager (entering prepares the context and starts the kernel;
    leaving removes the sandbox). :meth:`ask` runs one query at a time; concurrent calls wait.
    ``history`` are earlier turns of this session whose kernel is gone (e.g. before a service
    restart): the first query is told so, and that its variables are lost.
    """

    def __init__(
        self,
        engine: Engine,
        context: Any = None,
        *,
        session_id: str | None = None,
        tools: list[str] | None = None,
        history: Sequence[SessionTurn] = (),
        kernel_note: str = "",
    ) -> None:
        from engine.rlm.engine import new_task_id

        self.engine = engine
        self.context = context
        self.id = session_id or new_task_id()
        self.turns: list[SessionTurn] = list(history)
        self._registry = engine.tools.restrict(tools)
        self._bridge = _TurnBridge()
        self._lock = anyio.Lock()
        self._prepared: PreparedContext | None = None
        self._sandbox: CodeSandbox | None = None
        self._kernel: AsyncExitStack | None = None
        self._kernels = 0
        self._kernel_note = kernel_note
        self._variables: dict[str, str] = {}

    # --- the kernel ------------------------------------------------------------------------

    async def _open(self, stack: AsyncExitStack) -> None:
        from engine.contexts import prepare_context
        from engine.rlm.engine import context_spec

        spec = context_spec(self.context)
        if spec is not None:
            self._prepared = await anyio.to_thread.run_sync(
                prepare_context,
                spec,
                self.engine.scratch_root(),
                f"ctx-{self.id}",
                self.engine.sandbox_config().max_context_bytes,
            )
            stack.callback(self._prepared.cleanup)
        stack.push_async_callback(self._stop_kernel)
        await self._start_kernel()

    async def _start_kernel(self) -> CodeSandbox:
        backend = self.engine.backend
        if backend is None:
            raise RLMError("the engine is not started; use `async with Engine(config)`")
        from engine.rlm.engine import TOP_DEPTH

        staged = self._prepared.path if self._prepared is not None else self.context
        env = {"RLM_TOOLS": self._registry.kernel_json()} if len(self._registry) else {}
        self._kernels += 1
        kernel = AsyncExitStack()
        # Nothing is on the stack if opening fails: there is nothing to close then.
        self._sandbox = await kernel.enter_async_context(
            backend.open(
                context=staged,
                task_id=f"{self.id}-k{self._kernels}",
                depth=TOP_DEPTH,
                handler=self._bridge,
                env=env,
            )
        )
        self._kernel = kernel
        return self._sandbox

    async def _stop_kernel(self) -> None:
        kernel, self._kernel, self._sandbox = self._kernel, None, None
        if kernel is not None:
            # Not in a shielded scope of its own: the sandbox's task groups must be left in
            # the scope they were entered in (the sandbox shields its own clean-up).
            await kernel.aclose()

    async def _ready_kernel(self) -> CodeSandbox:
        """The live kernel with ``answer`` reset; a dead one is replaced (and noted)."""
        if self._sandbox is not None:
            try:
                await self._sandbox.execute(_RESET_CELL, cell_timeout_s=_HOUSEKEEPING_TIMEOUT_S)
                return self._sandbox
            except KernelDiedError as exc:
                log.warning("session.kernel_died", session=self.id, reason=exc.reason)
                self._kernel_note = (
                    "The kernel died after the last query and was started again with the same "
                    "context: the variables of earlier queries are gone."
                )
            await self._stop_kernel()
        self._variables = {}
        return await self._start_kernel()

    async def _read_variables(self) -> dict[str, str]:
        """The user's variables as ``name: "type, N items"``, from the kernel (untrusted)."""
        if self._sandbox is None:
            return {}
        try:
            result = await self._sandbox.execute(
                _VARIABLES_CELL, cell_timeout_s=_HOUSEKEEPING_TIMEOUT_S
            )
            listed = json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout else {}
        except (RLMError, ValueError, IndexError, RecursionError):
            return {}
        if not isinstance(listed, dict):
            return {}
        variables: dict[str, str] = {}
        for name, described in list(listed.items())[: prompts.SESSION_MAX_VARIABLES * 2]:
            if not isinstance(described, list) or len(described) != 2:
                continue
            kind, size = described
            text = str(kind)[:_NAME_CHARS]
            if isinstance(size, int) and not isinstance(size, bool):
                text += f", len {size:,}"
            variables[str(name)[:_NAME_CHARS]] = text
        return variables

    # --- queries ---------------------------------------------------------------------------

    def account(self) -> str:
        """What the next query's root is told about the earlier ones."""
        return prompts.session_account(
            [(t.query, t.answer, t.stop_reason) for t in self.turns],
            self._variables,
            kernel_note=self._kernel_note,
        )

    async def ask(
        self,
        query: str,
        on_event: EventCallback | None = None,
        *,
        task_id: str | None = None,
        output_schema: dict[str, Any] | None = None,
    ) -> RunResult:
        """Answer ``query`` on the session's kernel (see :meth:`engine.Engine.run`)."""
        if not self.is_open:
            raise RLMError("the session is not open; use `async with engine.session(...)`")
        check_query(query)
        schema = (
            AnswerSchema(output_schema, source="output_schema")
            if output_schema is not None
            else self.engine.answer_schema
        )
        async with self._lock:
            return await self._ask(query, on_event, task_id, schema)

    async def _ask(
        self,
        query: str,
        on_event: EventCallback | None,
        task_id: str | None,
        schema: AnswerSchema | None,
    ) -> RunResult:
        from engine.rlm.engine import TOP_DEPTH, TaskBridge, TaskTree, new_task_id

        engine = self.engine
        cfg = engine.config
        task_id = task_id or new_task_id()
        number = len(self.turns) + 1
        ledger = UsageLedger()
        kernel_note = ""
        with Trajectory(self._trajectory_path(task_id, number), on_event) as trajectory:
            tree = TaskTree(
                engine.new_client(),
                Budget(cfg.limits, ledger),
                trajectory,
                self._registry,
                ToolBudget(cfg.limits.max_tool_calls),
                schema,
            )
            events = RunEvents(trajectory, task_id, TOP_DEPTH)
            events.run_id = trajectory.emit(
                "run_start",
                task_id=task_id,
                depth=TOP_DEPTH,
                parent_id=None,
                query=query,
                model=engine.root_spec.model,
                sub_model=engine.sub_spec.model,
                profile=engine.profile.name,
                profile_reason=engine.profile_reason,
                limits=dataclasses.asdict(cfg.limits),
                session={"id": self.id, "turn": number},
            )
            started = time.monotonic()
            self._bridge.current = TaskBridge(engine, tree, events)
            outcome: LoopOutcome
            try:
                sandbox = await self._ready_kernel()
                earlier = self.account()
                kernel_note, self._kernel_note = self._kernel_note, ""
                outcome = await engine.loop_in(
                    tree,
                    events,
                    sandbox,
                    query=query,
                    spec=engine.root_spec,
                    role="root",
                    prepared=self._prepared,
                    earlier=earlier,
                    started=started,
                )
            except RLMError as exc:
                outcome = LoopOutcome("", False, "error", 0, str(exc))
            except anyio.get_cancelled_exc_class():
                engine.end_event(tree, events, LoopOutcome("", False, "cancelled", 0), started)
                raise
            finally:
                self._bridge.current = None
            result = engine.end_event(tree, events, outcome, started)
        self._variables = await self._read_variables()
        if self._sandbox is not None:  # no CPU for whatever it left running until the next
            await self._sandbox.freeze()
        self.turns.append(
            SessionTurn(query, result.answer, result.stop_reason, task_id, kernel_note)
        )
        return result

    def _trajectory_path(self, task_id: str, number: int) -> Path:
        cfg = self.engine.config
        if cfg.trajectory_path is not None:
            # One file per query beside the pinned path: a second query must not overwrite it.
            pinned = cfg.trajectory_path
            return pinned.with_name(f"{pinned.stem}.{number}{pinned.suffix}")
        return (cfg.trajectory_dir or default_trajectory_dir()) / f"{task_id}.jsonl"

    @property
    def variables(self) -> dict[str, str]:
        """The kernel's user variables after the last query (name: type and size)."""
        return dict(self._variables)
