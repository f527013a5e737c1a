"""The :class:`Engine`: owns model access for its lifetime and runs RLM tasks.

Each run gets one :class:`UsageLedger`, one :class:`CallScheduler` and one :class:`Budget`
shared by its whole recursion tree; each task in the tree (the top-level run and every child
started by ``rlm_query``) gets its own sandbox, bridge token and bridge server, all closed
when the task ends.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import os
import secrets
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from engine.config import EngineConfig, default_trajectory_dir
from engine.contexts import ContextSpec, PreparedContext, prepare_context
from engine.errors import (
    BudgetExceededError,
    ChildRunError,
    ConfigError,
    RLMError,
    SubCallRefusedError,
)
from engine.lifecycle import AsyncResource
from engine.log import get_logger
from engine.models import (
    CallScheduler,
    CassetteRecorder,
    ModelClient,
    ModelSpec,
    ReplayServer,
    UsageLedger,
    replay_spec,
    wire_model,
)
from engine.models.cache import CallCache
from engine.rlm.answer_schema import AnswerSchema
from engine.rlm.budget import Budget
from engine.rlm.loop import LoopOutcome, LoopSettings, RunEvents, run_root_loop
from engine.rlm.prompts import get_profile, resolve_profile, sub_window_chars
from engine.rlm.query import check_query
from engine.rlm.result import RunResult, usage_dict
from engine.rlm.slots import SandboxSlots
from engine.rlm.trajectory import EventCallback, Trajectory
from engine.tools import ToolBudget, ToolRegistry
from engine.tools.sub_model import HeldResults, run_tool_loop
from engine.truncate import truncate_middle

if TYPE_CHECKING:
    from engine.rlm.session import EngineSession, SessionTurn
    from engine.sandbox.config import SandboxConfig
    from engine.sandbox.pool import WarmPool
    from engine.sandbox.protocol import CodeSandbox, SandboxBackend

log = get_logger(__name__)

# Sub-call prompts can be whole chunks of the context; the trajectory keeps a readable cut.
TRAJECTORY_PROMPT_CHARS = 20_000
TOP_DEPTH = 1
_BUDGET_REASONS = frozenset({"max_wall_time", "max_tokens", "max_cost", "max_sub_calls"})


def new_task_id() -> str:
    """A short random task id (also used in sandbox names and trajectory file names)."""
    return secrets.token_hex(6)


@dataclasses.dataclass
class TaskTree:
    """What the tasks of one top-level run share."""

    client: ModelClient
    budget: Budget
    trajectory: Trajectory
    tools: ToolRegistry
    tool_budget: ToolBudget
    schema: AnswerSchema | None = None  # the top-level run's output schema (children: none)
    #: tool results its sub-models' tool loops hold at once (``llm_batch`` runs many)
    tool_results: HeldResults = dataclasses.field(default_factory=HeldResults)


def run_pool_plan(config: EngineConfig) -> tuple[int, bool]:
    """The warm pool an engine opens for itself (``rlm run``, the Python API): its size and
    whether it refills.

    ``warm_pool`` when set (a refilling pool). By default one sandbox, started while the engine
    sets up (the model server, the profile), which the first task claims; it refills only when
    runs may start ``rlm_query`` children (``max_depth > 1``), so that one is ready for the
    first child. A run that can start no children never pays for a second container (measured:
    a one-shot replayed run took 5.0 s at p50 with it against 6.8 s with no pool).
    """
    if config.warm_pool is not None:
        return config.warm_pool, True
    return 1, config.limits.max_depth > 1


class Engine(AsyncResource):
    """Runs RLM tasks; use as an async context manager.

    Entering starts what the configuration needs for all runs: the replay server
    (``config.replay``) or the embedded local model (``config.model is None``); leaving stops
    what was started. :meth:`run` may be called several times, also concurrently.

    The engine is also a :class:`engine.bridge.BridgeHandler` for callers outside a run
    (:meth:`llm_query`, :meth:`rlm_query`); inside a run every task serves its sandbox with its
    own handler, bound to the task's budget and trajectory.
    """

    def __init__(
        self,
        config: EngineConfig | None = None,
        tools: ToolRegistry | None = None,
        *,
        backend: SandboxBackend | None = None,
        slots: SandboxSlots | None = None,
        pool: WarmPool | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        self.backend = backend
        #: the warm sandbox pool lent by the caller (a service's); None: the engine opens its
        #: own when ``config.warm_pool`` asks for one (see :meth:`_open`).
        self._pool = pool
        # The service's global sandbox limit: child sandboxes take a slot too.
        self.slots = slots
        self._root: ModelSpec | None = None
        self._sub: ModelSpec | None = None
        self._replay_url: str | None = None
        self._recorder: CassetteRecorder | None = None
        self._cache: CallCache | None = None
        self._schema: AnswerSchema | None = None
        self._client: ModelClient | None = None
        self._sub_base: ModelSpec | None = None
        self._names: dict[str, ModelSpec] = {}
        #: the host tools of every run (MCP servers are connected while the engine is open);
        #: an open registry passed in is borrowed (its owner closes it), e.g. by service jobs.
        self._own_tools = tools is None
        if tools is None:
            self.tools = ToolRegistry(self.config.tools)
            self.tools.tenant = self.config.tenant
        else:
            self.tools = tools.for_tenant(self.config.tenant)
        # Settled when the engine starts (``auto`` may ask the model's server).
        self.profile = resolve_profile(
            self.config.prompt_profile, local_model=self.config.model is None
        )
        self.profile_reason = "set explicitly"

    # --- lifecycle ---------------------------------------------------------------------------

    async def _open(self, stack: AsyncExitStack) -> None:
        cfg = self.config
        if self.backend is None:
            from engine.rlm.backend import DockerBackend

            backend = DockerBackend(cfg.sandbox, pool=self._pool)
            size, refill = run_pool_plan(cfg)
            if backend.pool is None and size:
                from engine.sandbox.pool import WarmPool

                # Opened first: its sandboxes start while the model is being set up.
                backend.pool = await stack.enter_async_context(
                    WarmPool(backend.config, size, idle_s=cfg.warm_pool_idle_s, refill=refill)
                )
            self.backend = backend
        if cfg.replay is not None:
            if not cfg.replay.is_file():
                raise ConfigError(f"replay cassette {cfg.replay} does not exist; check --replay")
            server = await stack.enter_async_context(ReplayServer(cfg.replay))
            self._replay_url = server.base_url
        root = cfg.model
        if root is None:
            if self._replay_url is not None:
                # Replaying a local-model recording: same model name, no server needed.
                from engine.local import local_model_spec

                root = local_model_spec()
            else:
                from engine.local import LocalModelServer

                local = await stack.enter_async_context(LocalModelServer())
                root = local.spec
            # The embedded model runs on this machine: its calls cost nothing, also under a cap.
            root = dataclasses.replace(root, input_cost_per_token=0.0, output_cost_per_token=0.0)
        root = await self._choose_profile(root)
        sub = cfg.sub_model or root
        self._sub_base = sub
        self._names = {}
        for spec in (sub, root):  # root last: it wins when both share a name
            self._names[spec.model] = spec
            self._names[wire_model(spec.model)] = spec
        self._root, self._sub = self._effective(root), self._effective(sub)
        if cfg.tools and self._own_tools:
            await stack.enter_async_context(self.tools)
        if cfg.record is not None:
            self._recorder = CassetteRecorder(cfg.record)
        if cfg.output_schema is not None:
            self._schema = AnswerSchema.from_file(cfg.output_schema)
        # A replayed run is deterministic already, and its answers must not reach the cache.
        if cfg.cache != "off" and self._replay_url is None:
            self._cache = CallCache.at(
                cfg.cache_dir, mode=cfg.cache, max_bytes=cfg.cache_size, scope=cfg.tenant
            )
            stack.callback(self._cache.close)
        self._client = self.new_client()

    async def _choose_profile(self, root: ModelSpec) -> ModelSpec:
        """Settle ``auto`` from what the root model can do; fill in its context window.

        The embedded model is known to need the small profile. Any other model is judged by
        :func:`engine.models.capability.choose_profile` (its server's metadata, its size,
        litellm's model map); a replayed run has no server to ask, so names decide.
        """
        from engine.models.capability import ProfileChoice, choose_profile

        requested = self.config.prompt_profile
        if requested == "auto" and self.config.model is None:
            choice = ProfileChoice("small", "the embedded local model")
        else:
            for rule in self.config.model_profiles:
                get_profile(rule.profile)  # a rule naming no profile is an error at start
            choice = await choose_profile(
                root,
                requested,
                rules=self.config.model_profiles,
                probe=self._replay_url is None,
            )
        if choice.profile == "rlm-trained":
            from engine.rlm import trained

            try:
                trained.load_package()
            except ConfigError:
                if requested != "auto":
                    raise
                # auto recognised a trained checkpoint; without its prompt, the guardrails.
                reason = f"{choice.reason}, but rlms is not installed"
                choice = dataclasses.replace(choice, profile="small", reason=reason)
        self.profile, self.profile_reason = get_profile(choice.profile), choice.reason
        log.info("prompt profile", model=root.model, profile=choice.profile, reason=choice.reason)
        if root.context_window is None and choice.context_window:
            return dataclasses.replace(root, context_window=choice.context_window)
        return root

    def _effective(self, spec: ModelSpec) -> ModelSpec:
        return replay_spec(spec, self._replay_url) if self._replay_url else spec

    def as_called(self, spec: ModelSpec) -> ModelSpec:
        """``spec`` as this engine calls it (pointed at the replay server when replaying)."""
        return self._effective(spec)

    def new_client(self) -> ModelClient:
        """A model client with this engine's recorder and cache (one per run or session)."""
        return ModelClient(
            CallScheduler(self.config.max_in_flight), recorder=self._recorder, cache=self._cache
        )

    @property
    def answer_schema(self) -> AnswerSchema | None:
        """The configured output schema (``output_schema`` file), if any."""
        return self._schema

    @property
    def root_spec(self) -> ModelSpec:
        """The root model as called (after replay redirection)."""
        if self._root is None:
            raise RLMError("the engine is not started; use `async with Engine(config)`")
        return self._root

    @property
    def sub_spec(self) -> ModelSpec:
        """The sub-call model as called (after replay redirection)."""
        if self._sub is None:
            raise RLMError("the engine is not started; use `async with Engine(config)`")
        return self._sub

    def spec_for(self, model: str | None) -> ModelSpec:
        """The spec for a sub-call naming ``model`` (None = the sub model).

        Only the configured root and sub models may be named: the code asking is untrusted,
        and any other model string would spend the operator's credentials on a model they
        did not choose.
        """
        if model is None:
            return self.sub_spec
        known = self._names.get(model)
        if known is None:
            allowed = ", ".join(sorted({spec.model for spec in self._names.values()}))
            raise SubCallRefusedError(
                "model_not_allowed",
                f"model {model!r} is not available to sandbox code; use model=None (the sub "
                f"model) or one of: {allowed}",
            )
        return self._effective(known)

    # --- running -----------------------------------------------------------------------------

    async def run(
        self,
        query: str,
        context: Any = None,
        on_event: EventCallback | None = None,
        *,
        task_id: str | None = None,
        tools: list[str] | None = None,
        output_schema: dict[str, Any] | None = None,
    ) -> RunResult:
        """Answer ``query`` about ``context``.

        ``context`` is a ``Path`` to a file or folder, a list of paths, or an
        :class:`engine.contexts.ContextSpec` (all prepared on the host first: ``.gitignore``
        honoured, binary files and outside symlinks skipped, PDF/DOCX/HTML converted to text,
        see :mod:`engine.contexts`), a ``str``, any JSON-able value, or None.

        ``tools`` restricts the run to these of the engine's tools (None: all of them).
        ``output_schema`` (a JSON Schema) overrides the configured ``output_schema`` file: the
        final answer must match it, and ``RunResult.answer_json`` holds the validated value.

        Failures during the run (Docker down, model unreachable, kernel died) are returned as
        ``RunResult(stop_reason="error", error=...)``; only invalid arguments raise (a context
        that cannot be used raises :class:`ContextError` naming the file). Events go to the
        trajectory file and, as dicts, to ``on_event``.
        """
        root = self.root_spec
        check_query(query)
        registry = self.tools.restrict(tools)
        schema = self._schema
        if output_schema is not None:
            schema = AnswerSchema(output_schema, source="output_schema")
        task_id = task_id or new_task_id()
        spec = context_spec(context)
        prepared: PreparedContext | None = None
        if spec is not None:
            prepared = await anyio.to_thread.run_sync(
                prepare_context,
                spec,
                self.scratch_root(),
                f"ctx-{task_id}",
                self.sandbox_config().max_context_bytes,
            )
        try:
            return await self._run_top(
                query, context, prepared, on_event, task_id, root, registry, schema
            )
        finally:
            if prepared is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(prepared.cleanup)

    def scratch_root(self) -> Path:
        """Where prepared contexts are built (beside the run directories)."""
        # Prepared contexts are bind-mounted like run directories, so they live beside them.
        return self.sandbox_config().run_root

    def sandbox_config(self) -> SandboxConfig:
        """The configuration this engine's sandboxes start from."""
        from engine.sandbox import SandboxConfig

        return self.config.sandbox or SandboxConfig.from_env()

    async def _run_top(
        self,
        query: str,
        context: Any,
        prepared: PreparedContext | None,
        on_event: EventCallback | None,
        task_id: str,
        root: ModelSpec,
        registry: ToolRegistry,
        schema: AnswerSchema | None,
    ) -> RunResult:
        path = self.config.trajectory_path or (
            (self.config.trajectory_dir or default_trajectory_dir()) / f"{task_id}.jsonl"
        )
        ledger = UsageLedger()
        with Trajectory(path, on_event) as trajectory:
            tree = TaskTree(
                self.new_client(),
                Budget(self.config.limits, ledger),
                trajectory,
                registry,
                ToolBudget(self.config.limits.max_tool_calls),
                schema,
            )
            async with anyio.create_task_group() as group:
                # litellm takes seconds to import; do it while the sandbox starts.
                group.start_soon(_warm_up_litellm)
                result = await self.run_task(
                    tree,
                    query=query,
                    context=context,
                    depth=TOP_DEPTH,
                    parent_id=None,
                    spec=root,
                    role="root",
                    task_id=task_id,
                    prepared=prepared,
                )
        return result

    async def run_task(
        self,
        tree: TaskTree,
        *,
        query: str,
        context: Any,
        depth: int,
        parent_id: int | None,
        spec: ModelSpec,
        role: str,
        task_id: str,
        prepared: PreparedContext | None = None,
    ) -> RunResult:
        """Run one task of the tree in its own sandbox with its own bridge (the top-level run,
        or a child for :class:`TaskBridge`; not for callers outside the run layer).

        ``prepared`` is the top-level context as prepared on the host (``context`` is then
        what the caller passed, for the trajectory); children get their context as is.
        """
        cfg = self.config
        backend = self.backend
        if backend is None:
            raise RLMError("the engine is not started; use `async with Engine(config)`")
        events = RunEvents(tree.trajectory, task_id, depth)
        events.run_id = tree.trajectory.emit(
            "run_start",
            task_id=task_id,
            depth=depth,
            parent_id=parent_id,
            query=query,
            model=spec.model,
            sub_model=self.sub_spec.model,
            profile=self.profile.name,
            profile_reason=self.profile_reason,
            limits=dataclasses.asdict(cfg.limits),
            context_arg=_describe_context_arg(context, prepared),
        )
        started = time.monotonic()
        handler = TaskBridge(self, tree, events)
        # The kernel's stubs of the host tools (rlm_runtime.tools).
        env = {"RLM_TOOLS": tree.tools.kernel_json()} if len(tree.tools) else {}
        outcome: LoopOutcome
        try:
            staged = prepared.path if prepared is not None else context
            async with backend.open(
                context=staged, task_id=task_id, depth=depth, handler=handler, env=env
            ) as sandbox:
                outcome = await self.loop_in(
                    tree,
                    events,
                    sandbox,
                    query=query,
                    spec=spec,
                    role=role,
                    prepared=prepared,
                    started=started,
                )
        except RLMError as exc:
            outcome = LoopOutcome("", False, "error", 0, str(exc))
        except anyio.get_cancelled_exc_class():
            self.end_event(tree, events, LoopOutcome("", False, "cancelled", 0), started)
            raise
        return self.end_event(tree, events, outcome, started)

    async def loop_in(
        self,
        tree: TaskTree,
        events: RunEvents,
        sandbox: CodeSandbox,
        *,
        query: str,
        spec: ModelSpec,
        role: str,
        prepared: PreparedContext | None = None,
        earlier: str = "",
        started: float | None = None,
    ) -> LoopOutcome:
        """Run one root loop in an open sandbox (a task's own, or a session's live kernel).

        ``earlier`` is the account of a session's earlier queries for the first message.
        """
        info = sandbox.context_info
        notes = prepared.describe() if prepared is not None else None
        if info is not None and notes:
            info = dataclasses.replace(info, notes=notes)
        events.emit(
            "sandbox_ready",
            startup_s=round(time.monotonic() - (started or time.monotonic()), 3),
            warm=sandbox.warm,
            pool_miss=sandbox.pool_miss,
            context=dataclasses.asdict(info) if info is not None else None,
        )
        settings = LoopSettings(
            query=query,
            client=tree.client,
            spec=spec,
            role=role,
            profile=self.profile,
            limits=self.config.limits,
            budget=tree.budget,
            events=events,
            context_info=info,
            sub_context_window=self.sub_spec.context_window,
            tools_prompt=tree.tools.prompt_section(),
            answer_schema=tree.schema if events.depth == TOP_DEPTH else None,
            earlier=earlier,
            max_compactions=self.config.max_compactions,
            compact_at=self.config.compact_at,
        )
        return await run_root_loop(settings, sandbox)

    def end_event(
        self, tree: TaskTree, events: RunEvents, outcome: LoopOutcome, started: float
    ) -> RunResult:
        """Write the run's ``run_end`` event and return its result."""
        ledger = tree.budget.ledger
        result = RunResult(
            answer=outcome.answer,
            ready=outcome.ready,
            stop_reason=outcome.stop_reason,
            iterations=outcome.iterations,
            sub_calls=tree.budget.sub_calls,
            usage_root=ledger.totals("root"),
            usage_sub=ledger.totals("sub"),
            usage_total=ledger.totals(),
            wall_s=round(time.monotonic() - started, 3),
            trajectory_path=tree.trajectory.path,
            task_id=events.task_id,
            error=outcome.error,
            cache={"hits": ledger.cache_hits, "saved": usage_dict(ledger.cache_saved)},
            # The loop finished only with an answer the schema accepted, as canonical JSON.
            answer_json=(
                json.loads(outcome.answer)
                if tree.schema is not None and events.depth == TOP_DEPTH and outcome.ready
                else None
            ),
        )
        events.emit(
            "run_end",
            answer=result.answer,
            ready=result.ready,
            stop_reason=result.stop_reason,
            iterations=result.iterations,
            sub_calls=result.sub_calls,
            usage=usage_dict(result.usage_total),
            usage_root=usage_dict(result.usage_root),
            usage_sub=usage_dict(result.usage_sub),
            wall_s=result.wall_s,
            tool_calls=tree.tool_budget.used,
            cache=result.cache,
            error=result.error,
        )
        if result.error:
            log.info("run failed", task_id=result.task_id, error=result.error)
        return result

    def session(
        self,
        context: Any = None,
        *,
        session_id: str | None = None,
        tools: list[str] | None = None,
        history: Sequence[SessionTurn] = (),
        kernel_note: str = "",
    ) -> EngineSession:
        """A session: several queries on one live kernel (``async with``, then ``ask``).

        ``context`` is as for :meth:`run`. Each query has its own budgets and trajectory; the
        variables of earlier queries survive, and the root is told a short account of them.
        ``history`` and ``kernel_note`` continue a session whose kernel was lost.
        """
        from engine.rlm.session import EngineSession

        return EngineSession(
            self,
            context,
            session_id=session_id,
            tools=tools,
            history=history,
            kernel_note=kernel_note,
        )

    # --- BridgeHandler for callers outside a run ----------------------------------------------

    async def llm_query(self, prompt: str, model: str | None = None) -> str:
        """One sub-model call outside any run (no budget, not in a trajectory)."""
        if self._client is None:
            raise RLMError("the engine is not started; use `async with Engine(config)`")
        messages = [{"role": "user", "content": prompt}]
        completion = await self._client.complete(self.spec_for(model), messages, role="sub")
        return completion.answer

    async def rlm_query(self, prompt: str, context_path: Path | None = None) -> str:
        """A full RLM run outside any run; returns its answer (partial at a limit)."""
        result = await self.run(prompt, context_path)
        if result.error:
            raise ChildRunError(f"the RLM run failed: {result.error}")
        return result.answer


class TaskBridge:
    """The :class:`BridgeHandler` of one task: sub-calls counted against the tree's budget."""

    def __init__(self, engine: Engine, tree: TaskTree, events: RunEvents) -> None:
        self._engine = engine
        self._tree = tree
        self._events = events

    async def llm_query(self, prompt: str, model: str | None, tools: tuple[str, ...] = ()) -> str:
        """Call the sub model once; counts as one sub-call.

        With ``tools`` the sub-model may call those host tools first (function calling);
        its tool calls are trajectory events nested under this sub-call.
        """
        spec = self._engine.spec_for(model)
        registry = self._tools_for_sub_call(tools)
        self._tree.budget.reserve_sub_call()
        return await self._sub_call(spec, prompt, tools, registry)

    async def _sub_call(
        self,
        spec: ModelSpec,
        prompt: str,
        tools: tuple[str, ...] = (),
        registry: ToolRegistry | None = None,
    ) -> str:
        """One sub-model call whose sub-call the caller has reserved already."""
        event_id = self._tree.trajectory.reserve_id()
        parent = self._events.current_cell
        started = time.monotonic()
        status, response, usage, error = "error", None, None, None
        extra: dict[str, Any] = {"tools": list(tools)} if tools else {}
        try:
            if registry is not None:
                looped = await run_tool_loop(
                    self._tree.client,
                    spec,
                    prompt,
                    registry,
                    lambda name, args, kwargs: self._tool(name, args, kwargs, event_id),
                    ledger=self._tree.budget.ledger,
                    held=self._tree.tool_results,
                )
                extra |= {"tool_rounds": looped.steps, "tool_calls": looped.tool_calls}
                status, response, usage = "ok", looped.text, usage_dict(looped.usage)
                return looped.text
            completion = await self._tree.client.complete(
                spec,
                [{"role": "user", "content": prompt}],
                role="sub",
                ledger=self._tree.budget.ledger,
            )
            status, response, usage = "ok", completion.text, usage_dict(completion.usage)
            if completion.cached:
                extra["cached"] = True
            # A reasoning model's <think> block is not the answer the cell asked for.
            return completion.answer
        except anyio.get_cancelled_exc_class():
            status = "cancelled"
            raise
        except RLMError as exc:
            error = str(exc)
            raise
        finally:
            self._events.emit(
                "sub_call",
                parent_id=parent,
                event_id=event_id,
                kind="llm_query",
                model=spec.model,
                prompt=truncate_middle(prompt, TRAJECTORY_PROMPT_CHARS),
                prompt_chars=len(prompt),
                response=response,
                usage=usage,
                status=status,
                duration_s=round(time.monotonic() - started, 3),
                error=error,
                **extra,
            )

    # --- host tools (engine.bridge.ToolHandler) ----------------------------------------------

    async def llm_query_tools(self, prompt: str, model: str | None, tools: tuple[str, ...]) -> str:
        """``llm_query(prompt, tools=[...])`` from the sandbox."""
        return await self.llm_query(prompt, model, tools)

    async def call_tool(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """A tool call from sandbox code; its event's parent is the running cell."""
        return await self._tool(name, args, kwargs, self._events.current_cell)

    def _tools_for_sub_call(self, names: tuple[str, ...]) -> ToolRegistry | None:
        if not names:
            return None
        try:
            return self._tree.tools.restrict(names)
        except ConfigError as exc:
            raise SubCallRefusedError("invalid_request", f"llm_query tools: {exc}") from None

    async def _tool(
        self, name: str, args: list[Any], kwargs: dict[str, Any], parent: int | None
    ) -> Any:
        """Run one tool call: count it against the budget and write a ``tool_call`` event."""
        self._tree.tools.spec(name)  # an unknown name is an error, not a counted call
        self._tree.tool_budget.reserve()
        event_id = self._tree.trajectory.reserve_id()
        started = time.monotonic()
        status, size, error = "error", None, None
        try:
            result = await self._tree.tools.call(name, args, kwargs)
            status, size = "ok", len(json.dumps(result, ensure_ascii=False))
            return result
        except anyio.get_cancelled_exc_class():
            status = "cancelled"
            raise
        except RLMError as exc:
            error = str(exc)
            raise
        finally:
            self._events.emit(
                "tool_call",
                parent_id=parent,
                event_id=event_id,
                name=name,
                arguments=truncate_middle(
                    json.dumps({"args": args, "kwargs": kwargs}, ensure_ascii=False, default=str),
                    TRAJECTORY_PROMPT_CHARS,
                ),
                result_chars=size,
                status=status,
                duration_s=round(time.monotonic() - started, 3),
                error=error,
            )

    async def rlm_query(self, prompt: str, context_path: Path | None) -> str:
        """Run a child RLM at depth + 1, or a plain sub-call at the depth limit."""
        depth = self._events.depth
        limits = self._tree.budget.limits
        if depth + 1 > limits.max_depth:
            spec = self._engine.sub_spec
            # The budget first: a call refused there reads nothing of the context.
            self._tree.budget.reserve_sub_call()
            if context_path is not None:
                room = max(sub_window_chars(spec.context_window) - len(prompt), 0)
                text = await anyio.to_thread.run_sync(read_head, context_path, room)
                prompt = f"{prompt}\n\nContext:\n{text}"
            return await self._sub_call(spec, prompt)
        budget = self._tree.budget
        budget.reserve_sub_call()
        event_id = self._tree.trajectory.reserve_id()
        parent = self._events.current_cell
        started = time.monotonic()
        status = "cancelled"
        result: RunResult | None = None
        try:
            async with self._child_slot():
                result = await self._engine.run_task(
                    self._tree,
                    query=prompt,
                    context=context_path,
                    depth=depth + 1,
                    parent_id=event_id,
                    spec=self._engine.sub_spec,
                    role="sub",
                    task_id=new_task_id(),
                )
            status = "ok" if result.error is None else "error"
        finally:
            self._events.emit(
                "sub_call",
                parent_id=parent,
                event_id=event_id,
                kind="rlm_query",
                model=self._engine.sub_spec.model,
                prompt=truncate_middle(prompt, TRAJECTORY_PROMPT_CHARS),
                prompt_chars=len(prompt),
                response=result.answer if result else None,
                stop_reason=result.stop_reason if result else "cancelled",
                status=status,
                duration_s=round(time.monotonic() - started, 3),
                error=result.error if result else None,
            )
        if result.answer:
            return result.answer
        if result.stop_reason in _BUDGET_REASONS:
            raise BudgetExceededError(result.stop_reason, budget.describe(result.stop_reason))
        detail = f": {result.error}" if result.error else ""
        raise ChildRunError(
            f"the child RLM stopped ({result.stop_reason}) without an answer{detail}; "
            "split the task differently or use llm_query"
        )

    def _child_slot(self) -> AbstractAsyncContextManager[None]:
        """A slot of the engine's global sandbox limit for a child sandbox (none: no limit)."""
        slots = self._engine.slots
        if slots is None:
            return nullcontext()
        return slots.child(self._tree.budget.remaining_wall_s())


def read_head(path: Path, max_chars: int) -> str:
    """At most ``max_chars`` characters from the start of a UTF-8 file, never more in memory.

    Reads ``max_chars`` bytes (a character is at least one byte); a cut file ends with a note
    saying how much was left out, so the model knows its view is partial.
    """
    with path.open("rb") as handle:
        data = handle.read(max_chars)
        total = os.fstat(handle.fileno()).st_size
    # Not final when cut: a character split at the cut is left out, not replaced.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = decoder.decode(data, final=len(data) >= total)
    if len(data) < total:
        text += (
            f"\n[rlm: context cut to its first {len(data):,} of {total:,} bytes to fit the "
            "sub-model's window; pass smaller parts to rlm_query to see the rest]"
        )
    return text


async def _warm_up_litellm() -> None:
    from engine.models import load_litellm

    await anyio.to_thread.run_sync(load_litellm, abandon_on_cancel=True)


def context_spec(context: Any) -> ContextSpec | None:
    """The host-side preparation a context needs (None: a value staged as it is)."""
    if isinstance(context, ContextSpec):
        return context
    if isinstance(context, Path):
        return ContextSpec.from_paths([context])
    if isinstance(context, list | tuple) and context and all(isinstance(p, Path) for p in context):
        return ContextSpec.from_paths(list(context))
    return None


def _describe_context_arg(context: Any, prepared: PreparedContext | None) -> dict[str, Any]:
    """How the context was passed (never its content) for the run_start event."""
    if prepared is not None:
        spec = context_spec(context)
        sources = [str(s.path) for s in spec.sources] if spec is not None else []
        arg: dict[str, Any] = (
            {"kind": "path", "path": sources[0]}
            if len(sources) == 1
            else {"kind": "paths", "paths": sources}
        )
        return {**arg, "manifest": prepared.manifest.to_dict()}
    if context is None:
        return {"kind": "none"}
    if isinstance(context, Path):
        return {"kind": "path", "path": str(context)}
    if isinstance(context, str):
        return {"kind": "text", "chars": len(context)}
    return {"kind": "value", "type": type(context).__name__}
