"""The root loop: ask the root model for code, run it in the sandbox, repeat until answered.

One call of :func:`run_root_loop` drives one run (top-level or child) in an already started
sandbox. It ends when the kernel's ``answer["ready"]`` becomes True, when the reply's prose
holds ``FINAL(...)`` / ``FINAL_VAR(...)``, or when a limit is hit; at a limit it returns the
best answer so far with ``ready=False``.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from engine.config import Limits
from engine.errors import BudgetExceededError, KernelDiedError, RLMError
from engine.log import get_logger
from engine.models import ModelClient, ModelSpec
from engine.models.reasoning import split_reasoning
from engine.rlm import prompts
from engine.rlm.answer_schema import AnswerSchema
from engine.rlm.budget import Budget
from engine.rlm.nudges import (
    DOUBT_REASONS,
    LINES_PROBE,
    Nudge,
    Watcher,
    options_probe_code,
    parse_lines,
    parse_options_probe,
    parse_probe,
    probe_code,
)
from engine.rlm.parser import (
    STOP_SEQUENCES,
    FinalDirective,
    cut_at_stop,
    extract_code_blocks,
    find_final,
    literal_text,
    prose_text,
)
from engine.rlm.result import usage_dict
from engine.rlm.trajectory import Trajectory
from engine.truncate import truncate_middle

if TYPE_CHECKING:
    from engine.sandbox.protocol import CodeSandbox
    from engine.sandbox.results import ContextInfo

log = get_logger(__name__)

# Words that make a code-less reply look like an attempt to answer (weak models do this).
_ANSWERISH = re.compile(
    r"\b(answer|final|result|therefore|conclusion|in summary|the total|there (are|is))\b",
    re.IGNORECASE,
)
# Older turns' outputs are elided when the conversation would not fit the model's window.
_CHARS_PER_TOKEN = 3.5
_WINDOW_SHARE = 0.8
# The search-word probe is advice, not work: it gets a few seconds at most.
PROBE_TIMEOUT_S = 10.0
# Compaction keeps the system prompt and the query, and the last exchange (reply, outputs).
_KEPT_HEAD = 2
_KEPT_TAIL = 2


@dataclass
class RunEvents:
    """Trajectory events of one run, stamped with its task id, depth and parent ids."""

    trajectory: Trajectory
    task_id: str
    depth: int
    run_id: int = 0
    current_cell: int | None = None

    def emit(self, type_: str, *, parent_id: int | None = None, **fields: Any) -> int:
        """Write an event whose parent defaults to this run's ``run_start``."""
        return self.trajectory.emit(
            type_,
            task_id=self.task_id,
            depth=self.depth,
            parent_id=self.run_id if parent_id is None else parent_id,
            **fields,
        )


@dataclass(frozen=True)
class LoopOutcome:
    """How one root loop ended."""

    answer: str
    ready: bool
    stop_reason: str
    iterations: int
    error: str | None = None


@dataclass
class LoopSettings:
    """Everything a root loop uses besides the sandbox."""

    query: str
    client: ModelClient
    spec: ModelSpec
    role: str
    profile: prompts.Profile
    limits: Limits
    budget: Budget
    events: RunEvents
    context_info: ContextInfo | None = None
    sub_context_window: int | None = None
    tools_prompt: str = ""
    answer_schema: AnswerSchema | None = None
    #: a session's account of its earlier queries (prompts.session_account), "" otherwise
    earlier: str = ""
    #: compaction: at this share of the root's window older turns become a note, at most
    #: ``max_compactions`` times per run (0: never; older outputs are then only elided)
    compact_at: float = 0.8
    max_compactions: int = 2


@dataclass
class _State:
    iterations: int = 0
    answer_content: str = ""
    last_prose: str = ""
    explored: bool = False
    done: LoopOutcome | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    cells_run: set[str] = field(default_factory=set)
    watcher: Watcher = field(default_factory=lambda: Watcher(""))
    #: compaction: the system prompt and query as first sent, and the messages summarised so
    #: far; with the current ones they make the kernel's ``history``
    original_head: list[dict[str, str]] = field(default_factory=list)
    archived: list[dict[str, str]] = field(default_factory=list)
    compactions: int = 0
    note: str = ""
    #: the code-fence stop sequences are sent; off once one cut a reply inside its reasoning
    stops: bool = True

    def best_answer(self) -> str:
        return self.answer_content or self.last_prose

    def finish(self, answer: str, reason: str) -> None:
        self.done = LoopOutcome(answer, True, reason, self.iterations)

    def stop(self, reason: str, error: str | None = None) -> None:
        self.done = LoopOutcome(self.best_answer(), False, reason, self.iterations, error)


async def run_root_loop(settings: LoopSettings, sandbox: CodeSandbox) -> LoopOutcome:
    """Drive the root model until it answers or a limit is hit; never raises RLMError."""
    state = _State()
    remaining = settings.budget.remaining_wall_s()
    with anyio.move_on_after(math.inf if remaining is None else remaining) as scope:
        try:
            await _iterate(settings, sandbox, state)
        except KernelDiedError as exc:
            state.stop("error", f"the sandbox kernel died: {exc.reason}")
        except RLMError as exc:
            state.stop("error", str(exc))
    if state.done is None:
        if scope.cancelled_caught:
            state.stop("max_wall_time")
        else:
            # The last turn may also have used up a shared budget; name that limit first.
            state.stop(settings.budget.exceeded() or "max_iterations")
    assert state.done is not None
    return state.done


async def _iterate(s: LoopSettings, sandbox: CodeSandbox, state: _State) -> None:
    inputs = prompts.PromptInputs(
        context=s.context_info,
        limits=s.limits,
        depth=s.events.depth,
        sub_calls_left=_sub_calls_left(s.budget),
        sub_window_chars=prompts.sub_window_chars(s.sub_context_window),
        tools=s.tools_prompt,
    )
    state.watcher = Watcher.for_context(s.query, s.context_info)
    await _probe_search_words(s, sandbox, state.watcher)
    state.messages = [
        {"role": "system", "content": s.profile.system_prompt(inputs)},
        {"role": "user", "content": _first_message(s, inputs)},
    ]
    sent = 0  # messages before this index were recorded with an earlier turn event
    for turn in range(1, s.limits.max_iterations + 1):
        reason = s.budget.exceeded()
        if reason is not None:
            state.stop(reason)
            return
        state.iterations = turn
        if needs_compaction(state.messages, s.spec.context_window, s.compact_at) and (
            state.compactions < s.max_compactions
        ):
            unsent = len(state.messages) - sent
            if await compact(s, sandbox, state, turn):
                sent = len(state.messages) - unsent
            if state.done is not None:
                return
        # After a repeated reply under greedy decoding, the same prompt would repeat it again.
        varied = state.watcher.sampling(s.spec.temperature)
        try:
            completion = await s.client.complete(
                dataclasses.replace(s.spec, **varied) if varied else s.spec,
                fit_to_window(state.messages, s.spec.context_window),
                stop=list(STOP_SEQUENCES) if state.stops else None,
                role=s.role,
                ledger=s.budget.ledger,
            )
        except BudgetExceededError as exc:  # the cost cap refused this turn at dispatch
            state.stop(exc.budget)
            return
        turn_id = s.events.emit(
            "turn",
            iteration=turn,
            # What this turn was sent that no earlier turn event holds: with the replies, the
            # whole conversation as first sent (before any eliding), for `rlm export`.
            messages=state.messages[sent:],
            reply=completion.text,
            finish_reason=completion.finish_reason,
            usage=usage_dict(completion.usage),
            duration_s=round(completion.duration_s, 3),
            cached=completion.cached,
        )
        said = split_reasoning(completion.text)
        # A server that returns reasoning apart closes the block itself, even when the token
        # limit ended the reply while the model was still thinking.
        if said.cut or (said.reasoning and not said.text and completion.finish_reason == "length"):
            _reasoning_cut(s, state, turn, turn_id, completion.finish_reason)
            sent = len(state.messages)
            continue
        # Code and answers are read from what follows a reasoning model's <think> block, and
        # only that goes back into the conversation (its drafts were never meant to run).
        reply = said.text if state.stops else cut_at_stop(said.text)
        blocks = extract_code_blocks(reply)
        resent = any(state.watcher.resent_answer_shown(code) for code in blocks)
        repeated = None if resent else state.watcher.repeated_reply(reply)
        if repeated is not None:
            # Feeding the model its own repetition back makes the next reply the same again:
            # the reply stays out of the conversation and the prompt changes instead.
            _nudge(s, turn_id, turn, repeated)
            sent = len(state.messages)
            message = repeated.message
            step = state.watcher.auto_step(state.cells_run)
            if step is not None:
                message, ready = await _auto_step(s, sandbox, state, turn, turn_id, step)
                if ready and await _auto_step_answered(s, sandbox, state, turn, turn_id, step):
                    return
                # A model stuck on one reply keeps re-reading the turns that led to it: seen
                # on OOLONG, the 1.5B root resent its guessed label next to the engine's
                # correct count. It restarts from the system prompt and the step's output.
                await _restart(s, sandbox, state)
                sent = len(state.messages)
            state.messages.append({"role": "user", "content": message})
            continue
        # An empty assistant message is rejected by some servers; keep the turn visible.
        state.messages.append({"role": "assistant", "content": reply or "(empty reply)"})
        sent = len(state.messages)
        if blocks:
            await _run_cells(s, sandbox, state, turn, turn_id, blocks, reply)
        else:
            await _no_code(s, sandbox, state, turn, turn_id, reply)
        if state.done is not None:
            return


def _reasoning_cut(
    s: LoopSettings, state: _State, turn: int, turn_id: int, finish_reason: str | None
) -> None:
    """A reply that ended inside its reasoning: nothing in it is meant to run or answer.

    A stop sequence ends a reply at the first code fence the model closes, also one it writes
    while thinking: from then on the run sends none, and the reply is cut at that fence here,
    after the reasoning (:func:`cut_at_stop`). A reply cut by the token limit is told so.
    """
    if state.stops and finish_reason != "length":
        state.stops = False
        reason, message = "reasoning_cut", s.profile.reasoning_cut_note(by_stop=True)
        # Nothing went back to the model: the same conversation is asked again.
        _nudge(s, turn_id, turn, Nudge(reason, message))
        return
    message = s.profile.reasoning_cut_note(by_stop=False)
    _nudge(s, turn_id, turn, Nudge("reasoning_cut", message))
    state.messages.append({"role": "assistant", "content": "(the reply ended inside <think>)"})
    state.messages.append({"role": "user", "content": message})


async def _restart(s: LoopSettings, sandbox: CodeSandbox, state: _State) -> None:
    """Drop the conversation after the system prompt (the caller adds the next message).

    The kernel keeps its variables, and its ``history`` keeps every message as first sent,
    as after a compaction.
    """
    if not state.original_head:
        state.original_head = [dict(m) for m in state.messages[:_KEPT_HEAD]]
    state.archived.extend(state.messages[_KEPT_HEAD:])  # the query is in the original head
    await _store_history(s, sandbox, [*state.original_head, *state.archived])
    state.messages = state.messages[:1]


async def _auto_step(
    s: LoopSettings, sandbox: CodeSandbox, state: _State, turn: int, turn_id: int, code: str
) -> tuple[str, bool]:
    """Run the suggested step for a model that keeps sending one reply; what it is told, and
    whether the step set the answer.

    Asking again has failed twice (even with varied sampling), so the loop takes the step
    itself, recorded as a cell of kind ``auto_step``: a read-only search or labelling, or
    the model's own code run over the labelled records (which may set the answer).
    """
    state.cells_run.add(code)
    s.events.emit(
        "nudge",
        parent_id=turn_id,
        iteration=turn,
        reason="auto_step",
        message=f"the reply repeated {state.watcher.repeats} times; the engine ran {code}",
    )
    output, ready, error = await _run_cell(s, sandbox, state, turn, turn_id, 1, code, "auto_step")
    state.watcher.after_cell(code, output, error)
    message = s.profile.auto_step_message(
        code, output, left=s.limits.max_iterations - turn, query=s.query
    )
    return message, ready


async def _auto_step_answered(
    s: LoopSettings, sandbox: CodeSandbox, state: _State, turn: int, turn_id: int, code: str
) -> bool:
    """Finish with the answer an auto step's code set, if no check doubts it; else unset it.

    Only the model's own code (run over the labelled records) sets an answer; the checks are
    those of any cell, so a step cannot make an answer stand that the model's cell could not.
    """
    doubt = state.watcher.unsupported_answer(state.answer_content, code)
    if doubt is None:
        doubt = await _schema_problem(s, state, state.answer_content, "answer")
        if doubt is None:
            return True
    await sandbox.execute('answer["ready"] = False', cell_timeout_s=s.limits.cell_timeout_s)
    _nudge(s, turn_id, turn, doubt)
    return False


async def _probe_search_words(s: LoopSettings, sandbox: CodeSandbox, watcher: Watcher) -> None:
    """Count the query's words in the context, so advice names a word the context holds.

    A word picked from the question alone is often absent ("somewhere") or everywhere
    ("text"); a search for it leads a weak model nowhere. The count runs in the task's own
    kernel (every context kind, through ``search``) before the model's first cell; its output
    is the sandbox's, so it is parsed strictly and only ever picks among the query's words.
    A text context's lines are counted too: whether it is a set of records decides what the
    advice suggests (a search, or labelling every record). So are the options the query
    names, as written: a count by searching for an option the context never holds proves
    nothing (see :meth:`Watcher._judged_unread`).
    """
    if watcher.kind == "none":
        return
    code = probe_code(s.query)
    if code is not None:
        output = await _probe(s, sandbox, code)
        if output is not None:
            watcher.term_hits = parse_probe(output, s.query)
    code = options_probe_code(s.query)
    if code is not None:
        output = await _probe(s, sandbox, code)
        if output is not None:
            watcher.option_hits = parse_options_probe(output, s.query)
    if watcher.kind == "text":
        output = await _probe(s, sandbox, LINES_PROBE)
        if output is not None:
            watcher.lines = parse_lines(output, watcher.length)


async def _probe(s: LoopSettings, sandbox: CodeSandbox, code: str) -> str | None:
    """Run one probe cell; its output, or None if it failed (advice only: the run goes on)."""
    try:
        result = await sandbox.execute(
            code, cell_timeout_s=min(PROBE_TIMEOUT_S, s.limits.cell_timeout_s)
        )
    except KernelDiedError:
        raise
    except RLMError as exc:
        log.warning("context probe failed", error=str(exc))
        return None
    if result.error is not None or result.timed_out:
        return None
    return result.output_text()


async def _run_cells(
    s: LoopSettings,
    sandbox: CodeSandbox,
    state: _State,
    turn: int,
    turn_id: int,
    blocks: list[str],
    reply: str,
) -> None:
    outputs: list[str] = []
    advice: Nudge | None = None
    for index, code in enumerate(blocks, start=1):
        refused = state.watcher.before_cell(code)
        if refused is not None:
            _nudge(s, turn_id, turn, refused)
            outputs.append(refused.message)
            continue
        if code.strip() in state.cells_run and not state.watcher.resent_answer_shown(code):
            # Weak models loop by resending a cell; running it again only repeats the output.
            note = s.profile.repeated_code_note()
            s.events.emit(
                "nudge", parent_id=turn_id, iteration=turn, reason="repeated_code", message=note
            )
            outputs.append(note)
            continue
        state.cells_run.add(code.strip())
        output, ready, error = await _run_cell(s, sandbox, state, turn, turn_id, index, code)
        state.explored = True
        if ready:
            doubt = state.watcher.unsupported_answer(state.answer_content, code)
            if doubt is None:
                doubt = await _schema_problem(s, state, state.answer_content, "answer")
                if doubt is None:
                    return
            # Sent back: the kernel's answer stays, but is no longer final. The doubt is the
            # next step (it outranks any advice about the cell), not a line of the output: a
            # weak model reads the output as data and the usual ending as "set the answer".
            await sandbox.execute('answer["ready"] = False', cell_timeout_s=s.limits.cell_timeout_s)
            _nudge(s, turn_id, turn, doubt)
            if doubt.reason in DOUBT_REASONS:
                advice = doubt
            else:  # schema errors are the cell's output, as a validator's would be
                output = f"{output}\n{doubt.message}" if output else doubt.message
        outputs.append(output)
        found = state.watcher.after_cell(code, output, error)
        if advice is None and found is not None:
            advice = found
            _nudge(s, turn_id, turn, found)
        if advice is not None and advice.reason in DOUBT_REASONS:
            break  # the cells after a doubted answer were written assuming it was right
    notes: list[str] = []
    next_step = None
    if advice is not None:
        # Some profiles (small) replace their usual ending with the advice; others add it.
        if s.profile.advice_replaces_ending:
            next_step = advice.message
        else:
            notes.append(advice.message)
    final = find_final(reply)
    if final is not None:
        note = await _resolve_final(s, sandbox, state, final, turn_id)
        if state.done is not None:
            return
        notes.append(note)
    if s.budget.refused:
        # A sub-call was refused: tell the model once more; the next turn check stops the run.
        notes.append(f"[{s.budget.describe(s.budget.refused)}]")
    state.messages.append(
        {
            "role": "user",
            "content": s.profile.outputs_message(
                outputs,
                query=s.query,
                turn=turn,
                max_turns=s.limits.max_iterations,
                notes=[n for n in notes if n],
                next_step=next_step,
            ),
        }
    )


async def _run_cell(
    s: LoopSettings,
    sandbox: CodeSandbox,
    state: _State,
    turn: int,
    turn_id: int,
    index: int,
    code: str,
    kind: str = "code",
) -> tuple[str, bool, str | None]:
    """Execute one cell; return (output as the model sees it, answer ready, error or None)."""
    cell_id = s.events.trajectory.reserve_id()
    s.events.current_cell = cell_id
    try:
        result = await sandbox.execute(code, cell_timeout_s=s.limits.cell_timeout_s)
    finally:
        s.events.current_cell = None
    if result.state.answer_content:
        state.answer_content = result.state.answer_content
    ready = result.state.answer_ready
    text = result.output_text()
    extras = s.profile.cell_extras(result, s.limits.cell_timeout_s)
    empty = ready and not result.state.answer_content.strip()
    if empty:
        # An empty answer marked ready is no answer: seen on OOLONG-Pairs with the 1.5B root,
        # `answer['content'] = None` ended a run with the answer "None". It is never final.
        await sandbox.execute('answer["ready"] = False', cell_timeout_s=s.limits.cell_timeout_s)
        ready = False
        extras = [*extras, s.profile.empty_answer_note()]
    if extras:
        text = "\n".join([text, *extras]) if text else "\n".join(extras)
    output = truncate_middle(text, s.profile.output_chars(s.limits))
    error = result.error
    error_text = f"{error.ename}: {error.evalue}" if error is not None else None
    s.events.emit(
        "cell",
        parent_id=turn_id,
        event_id=cell_id,
        iteration=turn,
        index=index,
        kind=kind,
        code=code,
        output=output,
        duration_s=round(result.duration_s, 3),
        timed_out=result.timed_out,
        error=error_text,
        answer_ready=ready,
    )
    if empty:
        _nudge(s, turn_id, turn, Nudge("empty_answer", s.profile.empty_answer_note()))
    return output, ready, error_text


async def _no_code(
    s: LoopSettings,
    sandbox: CodeSandbox,
    state: _State,
    turn: int,
    turn_id: int,
    reply: str,
) -> None:
    notes: list[str] = []
    final = find_final(reply)
    if final is not None:
        note = await _resolve_final(s, sandbox, state, final, turn_id)
        if state.done is not None:
            return
        notes.append(note)
    prose = prose_text(reply)
    if prose:
        state.last_prose = prose
    if notes:
        reason, message = "final_var_missing", "\n".join(notes)
    elif state.explored and prose and looks_like_answer(prose):
        reason, message = "prose_answer", s.profile.prose_answer_nudge()
    else:
        reason, message = "no_code", s.profile.no_code_nudge()
    s.events.emit("nudge", parent_id=turn_id, iteration=turn, reason=reason, message=message)
    state.messages.append({"role": "user", "content": message})


async def _resolve_final(
    s: LoopSettings,
    sandbox: CodeSandbox,
    state: _State,
    final: FinalDirective,
    turn_id: int,
) -> str:
    """Settle a FINAL/FINAL_VAR written in prose; finish the run or return a note for the model.

    ``FINAL_VAR(name)`` and ``FINAL(<python expression>)`` are evaluated in the kernel (so
    ``FINAL(result)`` means the variable); a literal or plain text is the answer itself.
    """
    code: str | None
    if final.kind == "final_var":
        code = f"FINAL_VAR({final.argument!r})"
    else:
        literal = literal_text(final.argument)
        if literal is not None:
            return await _finish_checked(s, state, literal, "final", turn_id)
        code = f"FINAL({final.argument})" if _is_expression(final.argument) else None
    if code is not None:
        _, ready, _ = await _run_cell(
            s, sandbox, state, state.iterations, turn_id, 0, code, "final"
        )
        if ready:
            note = await _finish_checked(s, state, state.answer_content, "final", turn_id)
            if note:
                await sandbox.execute(
                    'answer["ready"] = False', cell_timeout_s=s.limits.cell_timeout_s
                )
            return note
    if final.kind == "final_var":
        return s.profile.final_var_missing_note(final.argument)
    # Not something the kernel could evaluate: the text itself is the answer.
    return await _finish_checked(s, state, final.argument, "final", turn_id)


def _first_message(s: LoopSettings, inputs: prompts.PromptInputs) -> str:
    message = s.profile.first_user_message(s.query, inputs)
    if s.earlier:
        message = f"{s.earlier}\n\n{message}"
    if s.answer_schema is not None:
        message = f"{message}\n\n{s.answer_schema.instructions()}"
    return message


async def _schema_problem(s: LoopSettings, state: _State, answer: str, reason: str) -> Nudge | None:
    """Finish with ``answer`` if it passes the output schema (if any); else what is wrong."""
    if s.answer_schema is None:
        state.finish(answer, reason)
        return None
    verdict = await s.answer_schema.check_isolated(answer)
    if verdict.answer is None:
        return Nudge("answer_invalid", verdict.problem or "the answer does not match the schema")
    state.finish(verdict.answer, reason)
    return None


async def _finish_checked(
    s: LoopSettings, state: _State, answer: str, reason: str, turn_id: int
) -> str:
    """Finish, or return the schema's complaint as the note for the model (and record it)."""
    problem = await _schema_problem(s, state, answer, reason)
    if problem is None:
        return ""
    _nudge(s, turn_id, state.iterations, problem)
    return problem.message


def _nudge(s: LoopSettings, turn_id: int, turn: int, nudge: Nudge) -> None:
    s.events.emit(
        "nudge", parent_id=turn_id, iteration=turn, reason=nudge.reason, message=nudge.message
    )


def _is_expression(text: str) -> bool:
    try:
        ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        return False
    return True


def looks_like_answer(prose: str) -> bool:
    """Whether a code-less reply reads like an answer rather than a plan or a question."""
    return len(prose) <= 400 or bool(_ANSWERISH.search(prose))


def _sub_calls_left(budget: Budget) -> int | None:
    limit = budget.limits.max_sub_calls
    return None if limit is None else max(limit - budget.sub_calls, 0)


def _chars(messages: list[dict[str, str]]) -> int:
    return sum(len(m["content"]) for m in messages)


def needs_compaction(
    messages: list[dict[str, str]], context_window: int | None, share: float
) -> bool:
    """Whether the conversation has reached ``share`` of the window and has older turns to
    summarise (beyond the system prompt, the query and the last exchange)."""
    if not context_window or len(messages) <= _KEPT_HEAD + _KEPT_TAIL:
        return False
    return _chars(messages) > context_window * _CHARS_PER_TOKEN * share


async def compact(s: LoopSettings, sandbox: CodeSandbox, state: _State, turn: int) -> bool:
    """Summarise the older turns into a note; the full history goes to the kernel.

    The conversation becomes: system prompt, query (with the note), last exchange. The
    kernel's ``history`` holds every message as first sent, so nothing is lost to the root.
    Returns whether it compacted (a failed summary leaves the conversation as it is; the
    oldest outputs are then elided to fit, as without compaction).
    """
    head, older, tail = (
        state.messages[:_KEPT_HEAD],
        state.messages[_KEPT_HEAD:-_KEPT_TAIL],
        state.messages[-_KEPT_TAIL:],
    )
    if not state.original_head:
        state.original_head = [dict(m) for m in head]
    window_chars = int((s.spec.context_window or 0) * _CHARS_PER_TOKEN * s.compact_at)
    turns = "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in older)
    if state.note:  # an earlier summary covers what came before these turns
        turns = f"[summary of the turns before]\n{state.note}\n\n{turns}"
    transcript = truncate_middle(turns, max(window_chars // 2, 2000))
    request = [
        {"role": "system", "content": prompts.COMPACTION_SYSTEM},
        {"role": "user", "content": prompts.compaction_request(s.query, transcript)},
    ]
    before = _chars(state.messages)
    try:
        completion = await s.client.complete(s.spec, request, role=s.role, ledger=s.budget.ledger)
    except BudgetExceededError as exc:
        state.stop(exc.budget)
        return False
    except RLMError as exc:
        s.events.emit("compaction", iteration=turn, status="error", error=str(exc))
        state.compactions = s.max_compactions  # do not ask again every turn
        return False
    note = completion.answer.strip() or "(the summary came back empty)"
    state.archived.extend(older)
    await _store_history(s, sandbox, [*state.original_head, *state.archived, *tail])
    state.compactions += 1
    state.note = note
    first = dict(state.original_head[-1])
    first["content"] = f"{first['content']}\n\n{prompts.compaction_note(note, state.compactions)}"
    state.messages = [*head[:-1], first, *tail]
    s.events.emit(
        "compaction",
        iteration=turn,
        status="ok",
        messages_summarised=len(older),
        chars_before=before,
        chars_after=_chars(state.messages),
        note=note,
        usage=usage_dict(completion.usage),
        compactions=state.compactions,
    )
    return True


async def _store_history(
    s: LoopSettings, sandbox: CodeSandbox, history: list[dict[str, str]]
) -> None:
    """Set the kernel's ``history`` to the full conversation (JSON decoded in the kernel)."""
    payload = json.dumps(history, ensure_ascii=False)
    code = f"import json as _json\nhistory = _json.loads({payload!r})\ndel _json"
    result = await sandbox.execute(code, cell_timeout_s=s.limits.cell_timeout_s)
    if result.error is not None:
        raise RLMError(f"could not store the history in the kernel: {result.error.evalue}")


def fit_to_window(
    messages: list[dict[str, str]], context_window: int | None
) -> list[dict[str, str]]:
    """Return ``messages`` with the oldest cell outputs elided if they would overflow the window.

    The system prompt, the query and the last exchange are always kept; the history itself is
    not changed (the trajectory keeps everything).
    """
    if not context_window:
        return messages
    budget_chars = int(context_window * _CHARS_PER_TOKEN * _WINDOW_SHARE)
    total = sum(len(m["content"]) for m in messages)
    if total <= budget_chars:
        return messages
    fitted = [dict(m) for m in messages]
    placeholder = "[output of an earlier turn omitted to fit the context window]"
    for message in fitted[2:-2]:
        if total <= budget_chars:
            break
        if message["role"] == "user" and len(message["content"]) > len(placeholder):
            total -= len(message["content"]) - len(placeholder)
            message["content"] = placeholder
    return fitted
