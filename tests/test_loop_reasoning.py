"""Reasoning models (Qwen3, the RLM checkpoint post-trained from it, DeepSeek-R1): their
``<think>`` block drafts code and answers that must never run, and its code fences must not end
the reply. Real loop, replay server over HTTP (which cuts at stop strings as a provider does),
the in-process fake sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine import RunResult
from engine.models.reasoning import answer_text, split_reasoning
from engine.rlm.parser import cut_at_stop
from engine.sandbox.fake import FakeBackend
from tests.loop_support import Run, code, done, root, sub

pytestmark = pytest.mark.anyio

FENCE = "```"
# Drafts inside the reasoning: a cell that would say the wrong thing, and a FINAL at a line
# start, the two things the loop would otherwise act on.
DRAFT = (
    "The context is a list of lines. A first try:\n"
    f"{FENCE}python\nanswer['content'] = 'DRAFT'\nanswer['ready'] = True\n{FENCE}\n"
    "That would guess. Better count first.\nFINAL(DRAFT)\n"
)


@pytest.fixture
async def run(tmp_path: Path) -> AsyncIterator[Run]:
    yield Run(tmp_path, FakeBackend(interrupt_grace_s=1.0))


def test_reasoning_split_covers_the_shapes_models_write() -> None:
    plain = f"{FENCE}repl\nprint(1)\n{FENCE}"
    assert split_reasoning(plain).text == plain and split_reasoning(plain).reasoning == ""
    full = split_reasoning(f"<think>\n{DRAFT}</think>\n\n{plain}")
    assert (full.text, full.cut) == (plain, False) and "FINAL(DRAFT)" in full.reasoning
    # DeepSeek-R1's template opens the block in the prompt: only the closing tag is written.
    orphan = split_reasoning(f"{DRAFT}</think>\n{plain}")
    assert orphan.text == plain and "DRAFT" in orphan.reasoning
    cut = split_reasoning(f"<think>{DRAFT}")
    assert (cut.text, cut.cut) == ("", True)
    # Code that only mentions a tag is not reasoning.
    mention = f'{FENCE}repl\nprint(context.count("<think>"), "</think>")\n{FENCE}'
    assert split_reasoning(mention).text == mention
    assert answer_text("<thinking>hmm</thinking>\nParis") == "Paris"
    assert cut_at_stop(f"{plain}\nOutput: 1\n\nFINAL(1)") == f"{FENCE}repl\nprint(1)"


async def test_reasoning_drafts_never_run_and_fences_inside_it_do_not_end_the_reply(
    run: Run,
) -> None:
    """The first request stops at the draft's fence (inside <think>): the loop asks again
    without stop strings, runs only the cell after </think>, and never the imagined output."""
    cell = "answer['content'] = str(len(context.split()))\nanswer['ready'] = True"
    reply = f"<think>\n{DRAFT}</think>\n\n" + code(cell) + "FINAL(IMAGINED)\n"
    result = await run([root(reply, repeat=True)], "How many words?", "one two three")
    assert (result.answer, result.ready) == ("3", True)
    requests = run.root_requests()
    assert len(requests) == 2
    assert requests[0].get("stop") and not requests[1].get("stop")
    (nudge,) = run.of_type("nudge")
    assert nudge["reason"] == "reasoning_cut" and "asked again" in nudge["message"]
    (ran,) = run.of_type("cell")
    assert "DRAFT" not in ran["code"]
    turns = run.of_type("turn")
    assert "<think>" in turns[0]["reply"] and "FINAL(IMAGINED)" in turns[1]["reply"]


async def test_reasoning_is_left_out_of_the_conversation_and_an_r1_reply_works(
    run: Run,
) -> None:
    """An R1-style reply (closing tag only) runs its cell at once; the next request holds the
    reply without its reasoning."""
    first = "Count the characters, not guess.\nFINAL(DRAFT)\n</think>\n" + code(
        "print(len(context))"
    )
    entries = [root(first), root(done("13"))]
    result = await run(entries, "How long is the context?", "one two three")
    assert (result.answer, result.ready) == ("13", True)
    second = run.root_requests()[1]["messages"]
    assistant = [m["content"] for m in second if m["role"] == "assistant"]
    assert assistant and all("DRAFT" not in text for text in assistant)
    assert run.of_type("nudge") == []


async def test_a_reply_cut_inside_its_reasoning_by_the_token_limit_is_told_so(
    run: Run,
) -> None:
    cut = root("<think>\nThe context is short, so first")
    cut["response"]["finish_reason"] = "length"
    result = await run([cut, root(done("ok"))], "q", "ctx")
    _told_to_think_briefly(run, result)


async def test_reasoning_a_server_returned_apart_and_cut_by_the_token_limit_is_told_so(
    run: Run,
) -> None:
    # Such a server closes the block itself: </think> and no answer after it.
    cut = root("<think>\nThe context is short, so first\n</think>\n\n")
    cut["response"]["finish_reason"] = "length"
    result = await run([cut, root(done("ok"))], "q", "ctx")
    _told_to_think_briefly(run, result)


def _told_to_think_briefly(run: Run, result: RunResult) -> None:
    assert (result.answer, result.ready) == ("ok", True)
    (nudge,) = run.of_type("nudge")
    assert nudge["reason"] == "reasoning_cut" and "</think>" in nudge["message"]
    assert "inside its <think> block" in run.last_user(1)
    assert run.of_type("cell")[0]["code"].startswith("answer['content'] = 'ok'")


async def test_a_sub_model_s_reasoning_is_not_its_answer(run: Run) -> None:
    """llm_query returns what follows the sub-model's <think> block; the trajectory keeps it all."""
    cell = (
        "capital = llm_query('Capital of France? One word.')\n"
        "answer['content'] = capital.strip()\nanswer['ready'] = True"
    )
    entries = [root(code(cell)), sub("Capital", "<think>Lyon? No, Paris.</think>\n\nParis")]
    result = await run(entries, "q", "ctx")
    assert result.answer == "Paris"
    (call,) = run.of_type("sub_call")
    assert "<think>" in call["response"]
