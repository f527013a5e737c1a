"""The root model's prompts: the system prompt and every message the loop sends, per profile.

A :class:`Profile` owns all the text the root model sees. Two are built in: ``frontier``
(concise; strong models follow a contract from a short description) and ``small`` (very
explicit, for models like Qwen2.5-Coder-1.5B, which tend to reassign ``context``, answer in
prose instead of setting ``answer`` and need a worked example to copy). To add one, subclass
:class:`Profile` (override only what differs) and :func:`register_profile` an instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from engine.config import Limits
from engine.errors import ConfigError
from engine.rlm.listing import asks_for_many

if TYPE_CHECKING:
    from engine.sandbox.results import ContextInfo, ExecResult

PREVIEW_CHARS = 400
#: The profile name that picks ``small`` for the embedded local model and ``frontier`` otherwise.
AUTO = "auto"


@dataclass(frozen=True)
class PromptInputs:
    """Facts the system prompt states: the context, the budgets and the recursion depth."""

    context: ContextInfo | None
    limits: Limits
    depth: int
    sub_calls_left: int | None = None
    sub_window_chars: int = 100_000
    #: the host tools section (engine.tools.ToolRegistry.prompt_section), "" without tools.
    tools: str = ""


def sub_window_chars(context_window: int | None) -> int:
    """How many characters of text one sub-call can be given, from its context window.

    About 3 characters per token, leaving a quarter of the window for the instruction and the
    reply; unknown windows are assumed to be large (frontier models).
    """
    if not context_window:
        return 100_000
    return max(int(context_window * 3 * 0.75) // 1000 * 1000, 1000)


def describe_context(info: ContextInfo | None) -> str:
    """One paragraph describing the context variable (never its content beyond a preview)."""
    if info is None or info.kind == "none":
        return "There is no context for this task: `context` is None. Answer from the query."
    items = f", {info.items:,} items" if info.items is not None else ""
    preview = info.preview[:PREVIEW_CHARS]
    cut = " (preview cut)" if len(info.preview) > PREVIEW_CHARS else ""
    notes = f"\n{info.notes}" if info.notes else ""
    return (
        f"`context` is a Python `{info.type_name}` ({info.kind}) of {info.length_chars:,} "
        f"characters{items}.{notes}\nPreview{cut}:\n<preview>\n{preview}\n</preview>"
    )


def describe_budget(inputs: PromptInputs, output_chars: int | None = None) -> str:
    """The limits the model should plan around, one per line (``output_chars``: what the
    profile shows of each output, when it shows less than the limit)."""
    limits = inputs.limits
    lines = [f"- at most {limits.max_iterations} replies (turns) from you;"]
    if inputs.sub_calls_left is not None:
        lines.append(f"- at most {inputs.sub_calls_left} sub-calls (each llm_batch item counts);")
    if inputs.tools and limits.max_tool_calls is not None:
        lines.append(f"- at most {limits.max_tool_calls} tool calls in total;")
    if limits.max_wall_time_s is not None:
        lines.append(f"- {limits.max_wall_time_s:g} seconds of wall time in total;")
    if limits.max_tokens is not None:
        lines.append(f"- {limits.max_tokens:,} tokens in total (you and all sub-calls);")
    if limits.max_cost_usd is not None:
        lines.append(f"- ${limits.max_cost_usd:g} in total;")
    lines.append(
        f"- each cell may run for {limits.cell_timeout_s:g} seconds (time spent waiting on "
        "sub-LLM calls does not count);"
    )
    lines.append(
        f"- you see at most {output_chars or limits.output_max_chars:,} characters of each "
        "cell's output "
        "(the middle of longer output is cut), so print summaries, not whole chunks."
    )
    return "\n".join(lines)


_FRONTIER = """\
You are the root of a Recursive Language Model (RLM). You must answer a query about a context \
that may be far too long to read. You never see the context directly: you write Python code \
that runs in a persistent IPython kernel where it is loaded, and you call sub-LLMs from that \
code to read or analyse pieces of it.

The kernel provides:
- `context`: the data (described below). Never reassign it.
- `llm_query(prompt, model=None) -> str`: one call to a sub-LLM that can read about \
{window:,} characters. Give it the text to read inside the prompt.
- `llm_batch(prompts, model=None) -> list[str]`: many `llm_query` calls run in parallel, \
answers in order; far faster than a loop. A failed item is a string starting with "[ERROR]".
{rlm_query}
- `search(pattern, context=None, *, regex=False, window=200, max_hits=20)`: numbered \
snippets around each match (case-insensitive; positions, lines, file names for a dict of \
files); never raises, and says what to try when nothing matches. Print the result.
- `llm_map(items, instruction, *, choices=None, batch_size=10) -> list[str]`: one sub-LLM \
answer per item (several items per call, unreadable answers retried); a dict gives a dict. \
With `choices=[...labels]` each answer is exactly one of the labels, ready to count.
- `pairs_of(values, others=None)`: every pair of distinct values once as (smaller, larger); \
with `others`, one value from each. Prints one `(a, b)` per line (`none` if empty).
- `in_date_range(items, after=None, before=None, *, inclusive=False)`: the items whose date \
("Jun 26, 2023", "2023-06-26") is after/before the given day (that day left out unless \
`inclusive=True`).
- `answer`: a dict. When you are certain, set `answer["content"]` (a string) and then \
`answer["ready"] = True`; the run ends after that cell. `FINAL(value)` does both at once.
- `SHOW_VARS()` lists your variables. Variables persist between cells.

Reply with short reasoning and one ```repl code block. You then get the cell's printed \
output in the next message; never invent output. Use code (slicing, regex, counting) for \
exact work and sub-LLMs for semantic work; chunk long text and use `llm_batch`.

Example:
```repl
print(len(context)); print(context[:300])
```
(later)
```repl
chunks = [context[i:i + {chunk}] for i in range(0, len(context), {chunk})]
found = llm_batch([f"List the people named in this text, or NONE:\\n{{c}}" for c in chunks])
names = sorted({{n.strip() for f in found if f != "NONE" for n in f.splitlines() if n.strip()}})
print(names)
```
```repl
answer["content"] = ", ".join(names)
answer["ready"] = True
```

The context: {context}

Budget:
{budget}
"""

_SMALL = """\
You answer a question about a long text by writing Python code. The text is NOT shown to you. \
It is stored in a Python variable named `context` inside a Python kernel. You write code, the \
code runs, and you see what it prints.

RULES (follow all of them):
1. Every reply must contain exactly one code block that starts with ```repl and ends with ```.
2. Never write `context = ...`. Never change `context`. Read it only.
3. Use print() to see results. Print short things: lengths, counts, matches, small slices \
like context[:500]. Never print the whole context.
4. To find a fact, search `context` for a word from the question: `print(search("word"))` \
prints each match with the text around it, numbered, and never fails. If nothing matches, \
search for another word from the question.
5. To ask another language model about a piece of text: `llm_query("question\\n" + piece)` \
returns a string. A piece must be at most {window:,} characters. For many pieces use \
`llm_batch(list_of_prompts)`, which returns a list of strings, or \
`llm_map(list_of_pieces, "question")`, which returns one answer per piece.
{rlm_query}
6. Never make up an answer. The answer must be copied from what your code printed.
7. When you know the answer, you MUST put it into the kernel like this:
```repl
answer["content"] = "the answer"
answer["ready"] = True
```
Writing the answer as normal text does NOT count. Only `answer["ready"] = True` ends the task.
8. Do not guess what the code prints. Wait for the output in the next message.
9. Never send the same code twice: it prints the same thing again. Read the output you got. \
If it shows the answer, your next reply sets `answer`.

WORKED EXAMPLE
Question: What is the name of the ship's captain?

Your reply 1:
First I look at the context.
```repl
print(len(context))
print(context[:300])
```

Message back: the output, for example
48210
The morning was cold. The crew loaded the boxes onto the deck ...

Your reply 2:
I search for the word "captain" and print the text around each match.
```repl
print(search("captain"))
```

Message back:
search('captain'): 1 hit
[1] char 20,114, line 301:
... the harbour was quiet that night. The captain of the ship is Maria Lopez, and she ...

Your reply 3:
The output shows the answer: the captain is Maria Lopez. I set the answer.
```repl
answer["content"] = "Maria Lopez"
answer["ready"] = True
```

For counting questions, count with code, e.g. \
`print(sum(1 for line in context.split("\\n") if "CANCELLED" in line))`.

When the question needs a judgement about every line or item (its kind, category, topic or \
sentiment, which a word search cannot tell), let a sub-model label each one with `llm_map` \
and `choices`, then count with code:
```repl
lines = [line for line in context.split("\\n") if line.strip()]
kinds = llm_map(lines, "What is this line about?", choices=["refund", "delivery", "other"])
from collections import Counter
print(Counter(kinds).most_common())
```
Use the labels the question names. `kinds[i]` is the label of `lines[i]`, so you can also \
count by other fields of the line (a user, a date). For records after or before a day, \
`lines = in_date_range(lines, after="Jun 26, 2023")` keeps those records (that day left \
out) first.

For a question about pairs (of users, of items), first pick the values that qualify with code, \
then `pairs_of(values)` lists every pair once as `(a, b)` lines; `pairs_of(some, others)` \
pairs each of `some` with each of `others`.

YOUR TASK
{context}

Limits:
{budget}
"""


_PROSE_EXAMPLE = '```repl\nanswer["content"] = "<your answer>"\nanswer["ready"] = True\n```'


class Profile:
    """The ``frontier`` profile, and the base of every other: all text the root model sees."""

    name: ClassVar[str] = "frontier"
    template: ClassVar[str] = _FRONTIER
    #: Whether the loop's advice after a cell (engine.rlm.nudges) replaces the usual ending of
    #: the outputs message (weak models follow one instruction better than two) or is a note.
    advice_replaces_ending: ClassVar[bool] = False
    #: The most characters of a cell's output this profile shows (the limit's
    #: ``output_max_chars`` applies too; the lower wins); ``None``: the limit alone.
    output_cap: ClassVar[int | None] = None

    def output_chars(self, limits: Limits) -> int:
        """How many characters of each cell's output the root model sees."""
        cap = self.output_cap
        return limits.output_max_chars if cap is None else min(cap, limits.output_max_chars)

    def system_prompt(self, inputs: PromptInputs) -> str:
        """The system prompt: the kernel's contract, the context, the budget and the tools."""
        window = inputs.sub_window_chars
        text = self.template.format(
            window=window,
            chunk=f"{max(window // 2, 1000):_}",
            rlm_query=self.rlm_query_line(inputs),
            context=describe_context(inputs.context),
            budget=describe_budget(inputs, self.output_chars(inputs.limits)),
        )
        if inputs.tools:
            text += (
                f"\n{inputs.tools}\n`llm_query(prompt, tools=[names])` (also `llm_batch`) "
                "lets sub-LLMs call them.\n"
            )
        return text

    def rlm_query_line(self, inputs: PromptInputs) -> str:
        """The system prompt's line on ``rlm_query`` (a child RLM, or at the depth limit not)."""
        if inputs.depth + 1 <= inputs.limits.max_depth:
            return (
                "- `rlm_query(prompt, context=None) -> str`: start a child RLM that has its own "
                "kernel with `context` set to the value you pass; use it for sub-tasks that are "
                "themselves too long for one sub-LLM call."
            )
        return (
            "- `rlm_query(prompt, context=None) -> str`: at this depth it is the same as "
            "`llm_query` (put the text into the prompt yourself)."
        )

    def first_user_message(self, query: str, inputs: PromptInputs | None = None) -> str:
        """The opening user message carrying the query (``inputs``: as the system prompt's)."""
        return (
            f"Query: {query}\n\n"
            "You have not seen the context yet; start by inspecting it. Reply with a ```repl block."
        )

    def outputs_message(
        self,
        outputs: list[str],
        *,
        query: str,
        turn: int,
        max_turns: int,
        notes: list[str] | None = None,
        next_step: str | None = None,
    ) -> str:
        """The user message carrying the outputs of the cells of one reply.

        ``next_step`` replaces the usual ending when the loop knows better, e.g. after a cell
        that saw only a slice of the context (see :attr:`advice_replaces_ending`).
        """
        parts = self.output_parts(outputs, notes)
        return self.outputs_ending(parts, query=query, left=max_turns - turn, next_step=next_step)

    def outputs_ending(
        self, parts: list[str], *, query: str, left: int, next_step: str | None
    ) -> str:
        """Join the outputs' ``parts`` and end the message (``left``: turns left)."""
        if left == 1:
            # Without this, a run whose model was still exploring ends with no answer set,
            # though its outputs may already hold one (seen on OOLONG-Pairs: the pairs were
            # printed, and the turn limit came first).
            parts.append(
                "[1 turn left] This is your last turn: no code runs after it. Set "
                'answer["content"] to the best answer the outputs so far support and '
                'answer["ready"] = True.'
            )
        else:
            parts.append(f"[{left} turns left] Continue, or set the answer when certain.")
        return "\n\n".join(parts)

    def output_parts(self, outputs: list[str], notes: list[str] | None) -> list[str]:
        """Each cell's output as a fenced block (numbered when several), then ``notes``."""
        parts: list[str] = []
        for index, output in enumerate(outputs, start=1):
            label = f"Output of cell {index}" if len(outputs) > 1 else "Output"
            body = output if output.strip() else "(no output; use print() to see values)"
            parts.append(f"{label}:\n```\n{body}\n```")
        parts.extend(notes or [])
        return parts

    def no_code_nudge(self) -> str:
        """Reply to a turn with no code before any cell has run."""
        return (
            "Your reply contained no ```repl block, so nothing ran and the context is still "
            "unexamined. Continue with code."
        )

    def prose_answer_nudge(self) -> str:
        """Reply to a turn that answers in prose instead of setting ``answer``."""
        return (
            "That reply had no code, so the run is not finished. If that is your final answer, "
            "set it in the kernel:\n" + _PROSE_EXAMPLE + "\nOtherwise continue with code."
        )

    def reasoning_cut_note(self, *, by_stop: bool) -> str:
        """Recorded (``by_stop``: the turn is asked again) or sent when a reply ended inside
        its reasoning block (``<think>`` with no ``</think>``), so none of it ran."""
        if by_stop:
            return (
                "[rlm: the reply was cut inside its <think> block by the stop sequence at a "
                "code fence; the turn is asked again without stop sequences]"
            )
        return (
            "Your reply ended inside its <think> block (the output-token limit), so nothing "
            "ran. Think briefly, close the block with </think>, then write one ```repl block."
        )

    def repeated_code_note(self) -> str:
        """Stands in for the output of a cell identical to one that already ran (not re-run)."""
        return (
            "[rlm: not run: this cell is identical to one that already ran, and its output is "
            "shown earlier. Change the code, or set the answer if you have it.]"
        )

    def empty_answer_note(self) -> str:
        """Appended to the output of a cell that marked an empty answer ready (not final)."""
        return (
            "[rlm] answer['ready'] is True but answer['content'] is empty (None or blank), so "
            "there is no answer yet and the run goes on: put the answer itself in "
            "answer['content'] as text, then set answer['ready'] = True again."
        )

    def auto_step_message(self, code: str, output: str, *, left: int, query: str) -> str:
        """What a model stuck repeating one reply is told after the loop ran ``code`` for it."""
        body = output if output.strip() else "(no output)"
        return (
            "Your reply was the same as earlier ones again, so it was not run. The engine ran "
            f"this step for you instead:\n```repl\n{code}\n```\nIt printed:\n```\n{body}\n```"
            f'\nThe question is: "{query}"\nIf this output shows the answer, store that value '
            'in a ```repl block (answer["content"] = ..., then answer["ready"] = True); if not, '
            f"write different code. {left} replies left."
        )

    def final_var_missing_note(self, name: str) -> str:
        """Reply when ``FINAL_VAR(name)`` names a variable the kernel does not have."""
        return (
            f"FINAL_VAR({name}) failed: the kernel has no variable `{name}`. Create it first, or "
            'set answer["content"] and answer["ready"] = True in a ```repl block.'
        )

    def cell_extras(self, result: ExecResult, cell_timeout_s: float) -> list[str]:
        """Advice to append to a cell's output as the model should see it (after a timeout).

        The sandbox already reports the timeout itself; this says what to do about it.
        """
        if result.timed_out:
            return [
                f"[rlm] cells are stopped after {cell_timeout_s:g} s. Do less work per cell, "
                "and use llm_batch instead of a loop of llm_query calls."
            ]
        return []


class SmallProfile(Profile):
    """Very explicit wording, a worked example, and a next step spelled out after every cell."""

    name: ClassVar[str] = "small"
    template: ClassVar[str] = _SMALL
    advice_replaces_ending: ClassVar[bool] = True
    # A small model reads slowly (20-40 tokens/s on a CPU) and from a short window: 8,000
    # characters of `print(context)` cost it 60-500 s per turn in the any-model bench, only to
    # be told the output was cut and to search instead. Half of that still holds ~8 search hits.
    output_cap: ClassVar[int | None] = 4_000

    def rlm_query_line(self, inputs: PromptInputs) -> str:
        # The small profile numbers its rules; the extra function is a note, not a rule.
        return "   " + super().rlm_query_line(inputs).removeprefix("- ")

    def first_user_message(self, query: str, inputs: PromptInputs | None = None) -> str:
        return (
            f"Question: {query}\n\n"
            "You have not looked at `context` yet. Reply 1: look at it with a ```repl block."
        )

    def outputs_ending(
        self, parts: list[str], *, query: str, left: int, next_step: str | None
    ) -> str:
        shown = "\n\n".join(parts)
        opening = f"Your code ran. Here is what it printed:\n\n{shown}\n\n"
        opening += f'The question is: "{query}"\n'
        if left == 1:
            # The last reply: another step would never be read (see Profile.outputs_ending).
            advice = f"{next_step}\n" if next_step is not None else ""
            return (
                f"{opening}{advice}Your next reply is the LAST one: no code runs after it. "
                "Reply with one ```repl block that stores the best answer the outputs so far "
                f'support:\n```repl\nanswer["content"] = {self._answer_form(query)}\n'
                'answer["ready"] = True\n```'
            )
        if next_step is not None:
            return f"{opening}{next_step} {left} replies left."
        # Small models tend to resend their last code verbatim, and, asked a yes/no question
        # about the output, may store their verdict as the answer. Spell out both next steps
        # and say what goes into the answer: the value itself, or, for a question asking for
        # every item of a kind, all of them (told "a value from the output", the 1.5B root
        # stored one of the pairs it had printed).
        store = (
            "all the items it asks for (not one of them; e.g. the variable your code printed "
            "them from)"
            if asks_for_many(query)
            else "the answer itself (a value from the output, e.g. a number, a name or a code)"
        )
        store += (
            ", not a sentence about the output:\n```repl\n"
            f'answer["content"] = {self._answer_form(query)}\n'
        )
        return (
            opening
            + "If the output above contains the answer, reply with one ```repl block that stores "
            + store
            + 'answer["ready"] = True\n```\n'
            "If it does not contain the answer yet, reply with one ```repl block with DIFFERENT "
            f"code that finds it (never the same code again). {left} replies left."
        )

    @staticmethod
    def _answer_form(query: str) -> str:
        """What the example stores: the answer typed, or all the items a listing holds."""
        if asks_for_many(query):
            return "str(<the variable holding them all>)"
        return '"<the answer>"'

    def no_code_nudge(self) -> str:
        return (
            "Your reply had no ```repl code block, so nothing ran. You cannot see `context` "
            "without code. Reply with one ```repl block, for example:\n"
            "```repl\nprint(len(context))\nprint(context[:500])\n```"
        )

    def prose_answer_nudge(self) -> str:
        return (
            "You wrote the answer as text. That does NOT finish the task. If you are sure, "
            "reply with this code block (put your answer in the string):\n" + _PROSE_EXAMPLE
        )

    def repeated_code_note(self) -> str:
        return (
            "[rlm: NOT RUN. This code is the same as code you already ran; its output is above. "
            "Write DIFFERENT code, or if you know the answer set answer['content'] and "
            "answer['ready'] = True.]"
        )


# The kernel helpers as the rlm-trained profile lists them among the package's custom tools.
KERNEL_HELPERS = {
    "search": "`search(pattern, context=None, *, regex=False, window=200, max_hits=20)`: "
    "numbered snippets around each match of `pattern` (case-insensitive) with positions; "
    "never raises, says what to try when nothing matches. Print the result.",
    "llm_map": "`llm_map(items, instruction, *, choices=None, batch_size=10) -> list[str]`: one "
    "sub-LLM answer per item, several items packed per call, unreadable answers retried; with "
    "`choices=[...]` each answer is exactly one of those labels.",
    "pairs_of": "`pairs_of(values, others=None)`: every pair of distinct values once as "
    "(smaller, larger); with `others`, one value from each. Prints one `(a, b)` per line.",
    "in_date_range": "`in_date_range(items, after=None, before=None, *, inclusive=False)`: the "
    "items whose date is after/before the given day (that day left out unless `inclusive=True`).",
}


class TrainedProfile(Profile):
    """The format the paper's post-trained RLM checkpoints were trained on (``rlm-trained``).

    System prompt, first message ("Answer the following: ...", context metadata, "Turn 1/N:")
    and each outputs message ("REPL output:", then "Turn i/N:") are built by the official
    ``rlms`` package's own functions at run time (:mod:`engine.rlm.trained`); nudges and notes
    are the frontier profile's.
    """

    name: ClassVar[str] = "rlm-trained"

    def system_prompt(self, inputs: PromptInputs) -> str:
        text = self._opening(inputs, "")[0]
        return f"{text}\n\n{inputs.tools}" if inputs.tools else text

    def first_user_message(self, query: str, inputs: PromptInputs | None = None) -> str:
        if inputs is None:
            return super().first_user_message(query)
        return self._opening(inputs, query)[1]

    def outputs_message(
        self,
        outputs: list[str],
        *,
        query: str,
        turn: int,
        max_turns: int,
        notes: list[str] | None = None,
        next_step: str | None = None,
    ) -> str:
        from engine.rlm import trained

        body = trained.outputs_message("", [("", output) for output in outputs])
        extra = [*(notes or []), *([next_step] if next_step else [])]
        # The package's prompt for the next turn: "Turn {turn + 1}/{max_turns}:".
        return "\n\n".join([body, *extra, trained.turn_message(turn, max_iterations=max_turns)])

    @staticmethod
    def _opening(inputs: PromptInputs, query: str) -> tuple[str, str]:
        from engine.rlm import trained

        info = inputs.context
        shape = trained.ContextShape(
            info.type_name if info is not None else "NoneType",
            info.length_chars if info is not None else 0,
            info.items if info is not None else None,
        )
        return trained.opening_messages(
            query, shape, max_iterations=inputs.limits.max_iterations, tools=KERNEL_HELPERS
        )


_PROFILES: dict[str, Profile] = {}


def register_profile(profile: Profile) -> Profile:
    """Make ``profile`` selectable by its name (``--profile``, ``prompt_profile``)."""
    if profile.name == AUTO or not profile.name:
        raise ConfigError(f"a profile cannot be called {profile.name!r}")
    _PROFILES[profile.name] = profile
    return profile


def profile_names() -> tuple[str, ...]:
    """Every name ``prompt_profile`` accepts: ``auto`` and the registered profiles."""
    return (AUTO, *_PROFILES)


def get_profile(name: str) -> Profile:
    """The registered profile called ``name``; an unknown name is a :class:`ConfigError`."""
    profile = _PROFILES.get(name)
    if profile is None:
        raise ConfigError(
            f"unknown prompt profile {name!r}; use one of {', '.join(profile_names())}"
        )
    return profile


def resolve_profile(name: str, *, local_model: bool) -> Profile:
    """The profile called ``name``; ``auto`` is ``small`` for the embedded local model and
    ``frontier`` otherwise."""
    if name == AUTO:
        return get_profile("small" if local_model else "frontier")
    return get_profile(name)


FRONTIER = register_profile(Profile())
SMALL = register_profile(SmallProfile())
TRAINED = register_profile(TrainedProfile())


# --- compaction and sessions: text every profile shares ------------------------------------

COMPACTION_SYSTEM = (
    "You summarise the earlier turns of a coding session into a compact note for the same "
    "assistant to continue from. Keep every fact found (numbers, names, partial results), the "
    "names of the Python variables that hold results, what was tried and failed, and what is "
    "left to do. Do not solve the task; write at most 25 short lines, no code blocks."
)

#: Per earlier query in a session's account: the most characters of its query and answer.
SESSION_QUERY_CHARS = 300
SESSION_ANSWER_CHARS = 600
#: The most earlier queries and kernel variables a session's account lists.
SESSION_MAX_TURNS = 10
SESSION_MAX_VARIABLES = 40


def compaction_request(query: str, transcript: str) -> str:
    """The user message asking the root model to summarise older turns."""
    return (
        f"The task: {query}\n\nSummarise these earlier turns (code the assistant ran and "
        f"what it printed) into the note:\n\n{transcript}"
    )


def compaction_note(note: str, count: int) -> str:
    """What replaces the summarised turns in the root's conversation."""
    return (
        f"[Earlier turns were summarised to fit the context window (compaction {count}); "
        "the full transcript is in the kernel variable `history`, a list of "
        "{'role', 'content'} messages, if you need a detail.]\n"
        f"Summary of the earlier turns:\n{note}"
    )


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def session_account(
    turns: list[tuple[str, str, str]],
    variables: dict[str, str],
    *,
    kernel_note: str = "",
) -> str:
    """A short account of a session's earlier queries for the next query's first message.

    ``turns`` are (query, answer, stop reason) of the earlier queries, ``variables`` the
    kernel's variables they left (name: type and size). Whole transcripts are never included.
    """
    if not turns and not kernel_note:
        return ""
    lines = [
        f"This query continues a session: {len(turns)} earlier quer"
        f"{'y' if len(turns) == 1 else 'ies'} ran on this same kernel."
    ]
    if kernel_note:
        lines.append(kernel_note)
    shown = turns[-SESSION_MAX_TURNS:]
    if len(shown) < len(turns):
        lines.append(f"(the first {len(turns) - len(shown)} are left out)")
    for number, (query, answer, stop) in enumerate(shown, start=len(turns) - len(shown) + 1):
        status = "" if stop in ("answer", "final") else f" [stopped: {stop}]"
        lines.append(
            f"{number}. Q: {_cut(query, SESSION_QUERY_CHARS)}\n"
            f"   A: {_cut(answer, SESSION_ANSWER_CHARS) or '(no answer)'}{status}"
        )
    if variables:
        listed = list(variables.items())[:SESSION_MAX_VARIABLES]
        names = ", ".join(f"{name} ({kind})" for name, kind in listed)
        more = len(variables) - len(listed)
        lines.append(
            f"Variables they left in the kernel, still set: {names}"
            + (f" and {more} more (SHOW_VARS() lists them)" if more > 0 else "")
        )
    lines.append('`answer` was reset for this query: set answer["content"] and answer["ready"].')
    return "\n".join(lines)
