"""``llm_map(..., choices=[...])``: one label per item, spelled as given, ready to count.

Pure logic: the kernel helper module is loaded from ``sandbox-image/rlm_runtime/helpers.py``
and its sub-calls answered by a scripted function in place of ``llm_batch`` (the kernel path
through the real bridge is covered in ``test_helpers_kernel.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.module_support import load_module

HELPERS_FILE = Path(__file__).parents[1] / "sandbox-image" / "rlm_runtime" / "helpers.py"
LABELS = ["abbreviation", "entity", "description and abstract concept", "human being", "location"]


helpers = load_module("rlm_helpers_under_test", HELPERS_FILE)


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("location", "location"),
        ("Location.", "location"),
        ("Label: LOCATION", "location"),
        ("**human being**", "human being"),
        ("It asks about a human being", "human being"),
        ("description", "description and abstract concept"),  # a shortened label
        ("Description and abstract", "description and abstract concept"),
        ("location or entity", None),  # two labels: ask again
        ("a place", None),
        ("", None),
        ("human", "human being"),
        ("abstract concept", "description and abstract concept"),  # its end
        ("Abstract concept.", "description and abstract concept"),
        ("being", "human being"),
        ("and", None),  # a short word of a label says nothing
        ("concept description", None),  # not a run of one label's words
    ],
)
def test_match_choice(answer: str, label: str | None) -> None:
    assert helpers.match_choice(answer, LABELS) == label


def test_a_label_inside_a_longer_one_is_not_a_second_answer() -> None:
    assert helpers.match_choice("New York City", ["york", "new york city"]) == "new york city"


def _scripted(replies: Callable[[str], str], prompts: list[str]) -> Callable[..., list[str]]:
    def batch(batch_prompts: list[str], model: str | None = None) -> list[str]:
        prompts.extend(batch_prompts)
        return [replies(p) for p in batch_prompts]

    return batch


def test_answers_come_back_as_the_given_labels_and_others_are_asked_again() -> None:
    items = ["Who wrote Hamlet ?", "Where is Lima ?", "What does NASA stand for ?"]
    truth = {"Hamlet": "Human being", "Lima": "a city, so: LOCATION", "NASA": "abbreviation"}
    prompts: list[str] = []

    def reply(prompt: str) -> str:
        items_part = prompt.partition("Items:")[2]
        numbered = re.findall(r"^\[(\d)\] (.*)$", items_part, flags=re.M)
        if numbered:  # the first round: a pack; the sub-model mislabels Lima as "a place"
            said = {n: next(v for k, v in truth.items() if k in text) for n, text in numbered}
            said |= {n: "a place" for n, text in numbered if "Lima" in text}
            return "\n".join(f"[{n}] {answer}" for n, answer in said.items())
        return next(v for k, v in truth.items() if k in prompt)

    labels = helpers.llm_map(
        items, "Label the question.", choices=LABELS, _batch=_scripted(reply, prompts)
    )
    assert labels == ["human being", "location", "abbreviation"]
    assert "one of these labels" in prompts[0] and "human being" in prompts[0]
    # Only the unmatched item was asked again.
    assert len(prompts) == 2 and "Lima" in prompts[1] and "Hamlet" not in prompts[1]


def test_an_item_never_labelled_says_what_it_answered() -> None:
    labels = helpers.llm_map(
        {"a": "Where is Lima ?"},
        "Label the question.",
        choices=LABELS,
        _batch=_scripted(lambda _prompt: "a place", []),
    )
    assert labels == {"a": "[ERROR] the answer 'a place' is none of the choices"}


@pytest.mark.parametrize("choices", ["location", ["only one"], ["x", ""], [1, 2]])
def test_bad_choices_are_a_clear_error(choices: object) -> None:
    with pytest.raises(TypeError, match="choices"):
        helpers.llm_map(["x"], "Label it.", choices=choices, _batch=_scripted(str, []))


@pytest.mark.parametrize("items", ["Who is Ada ?", b"raw bytes"])
def test_one_string_as_items_is_a_clear_error(items: object) -> None:
    # Seen with a 1.5B root: llm_map(line, ...) per line mapped over the line's characters,
    # one sub-call each. No sub-call is made.
    calls: list[str] = []
    with pytest.raises(TypeError, match="items is one string; pass a list"):
        helpers.llm_map(items, "Label it.", choices=LABELS, _batch=_scripted(str, calls))
    assert calls == []
