"""Reasoning blocks: the ``<think>...</think>`` part of a reasoning model's reply.

Reasoning models (Qwen3 and the RLM checkpoint post-trained from it, DeepSeek-R1 and its
distillations, QwQ) write their reasoning in a tagged block before the answer, unless the
server moves it to a field of its own (vLLM and llama.cpp with a reasoning parser fill
``reasoning_content`` instead). The reasoning is not the answer: it drafts code that was never
meant to run and mentions ``FINAL(...)`` while weighing it, so code, answers and sub-call
results are read from what follows it.

Two shapes occur besides the plain block at the start of the reply: a chat template that
opens the block itself (DeepSeek-R1's) leaves only the closing tag in the reply, and a reply
cut short (by the output-token limit, or by a stop sequence matching a code fence the model
wrote while thinking) has an opening tag and no closing one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Only a tag at the very start of the reply opens a block, and only a tag at the start of a
# line closes one whose opening the chat template wrote: code that merely mentions "<think>"
# in a string is left alone.
_OPEN = re.compile(r"\A\s*<(think|thinking|reasoning)>", re.IGNORECASE)
_ORPHAN_CLOSE = re.compile(r"^[ \t]*</(think|thinking|reasoning)>", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class SplitReply:
    """A reply split into its reasoning and what it says after it."""

    #: the reply after its reasoning (the whole reply when it has none)
    text: str
    #: the reasoning, without its tags; "" when there is none
    reasoning: str = ""
    #: the reply ended inside its reasoning (no closing tag): ``text`` is then ""
    cut: bool = False


def split_reasoning(reply: str) -> SplitReply:
    """Separate ``reply``'s reasoning block (if any) from the rest."""
    opened = _OPEN.match(reply)
    if opened is not None:
        closing = re.compile(rf"</{opened.group(1)}>", re.IGNORECASE)
        closed = closing.search(reply, opened.end())
        if closed is None:
            return SplitReply("", reply[opened.end() :].strip(), cut=True)
        return SplitReply(
            reply[closed.end() :].lstrip(), reply[opened.end() : closed.start()].strip()
        )
    orphan = _ORPHAN_CLOSE.search(reply)
    if orphan is not None:
        return SplitReply(reply[orphan.end() :].lstrip(), reply[: orphan.start()].strip())
    return SplitReply(reply)


def answer_text(reply: str) -> str:
    """What ``reply`` answers, its reasoning left out ("" when it ended while reasoning)."""
    return split_reasoning(reply).text
