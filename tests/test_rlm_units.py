"""Pure parts of the root loop: truncation, budgets, trajectory, prompts, history fitting."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine import Engine, EngineConfig
from engine.config import Limits
from engine.errors import BudgetExceededError, ConfigError
from engine.models import Usage, UsageLedger
from engine.rlm import prompts
from engine.rlm.budget import Budget
from engine.rlm.loop import fit_to_window, looks_like_answer
from engine.rlm.query import check_query
from engine.rlm.trajectory import Trajectory, read_trajectory
from engine.sandbox import ContextInfo
from engine.sandbox.image import image_source_dir
from engine.truncate import marker, truncate_middle
from tests.module_support import load_module


def test_truncate_keeps_head_and_tail_and_counts_dropped() -> None:
    text = "H" * 5000 + "M" * 10_000 + "T" * 5000
    out = truncate_middle(text, 8000)
    assert out.startswith("H" * 1000)
    assert out.endswith("T" * 1000)
    assert len(out) <= 8000
    kept = out.count("H") + out.count("M") + out.count("T")
    assert f"[rlm: output truncated: {len(text) - kept} characters dropped]" in out


def test_truncate_leaves_short_text_alone() -> None:
    assert truncate_middle("short", 8000) == "short"


def test_the_kernels_output_cap_writes_the_one_truncation_marker() -> None:
    # The runtime cannot import the engine, so it spells the marker itself: the model must
    # see the same text from the kernel's cap as from the orchestrator's cuts.
    output_cap = load_module(
        "output_cap_under_test", image_source_dir() / "rlm_runtime" / "output_cap.py"
    )
    written: list[str] = []
    stream = SimpleNamespace(write=written.append)
    cap = output_cap.StreamCap(stream, 1000)
    cap.write("a" * 1500 + "b" * 2500)
    dropped = cap.finish()
    assert dropped == 2000
    assert "".join(written) == "a" * 1000 + marker(dropped) + "b" * 1000


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "the query is empty"),
        (" \n\t", "the query is empty"),
        (b"caf\xe9?".decode("utf-8", "surrogateescape"), "(byte 0xe9 at character 4)"),
        ("x\ud800", "(U+D800 at character 2)"),  # a JSON string may escape a lone surrogate
    ],
)
def test_a_query_that_cannot_be_asked_is_refused_with_the_reason(query: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_query(query)
    check_query("café? ✓")  # any text that is UTF-8 passes


def test_budget_limits_in_order() -> None:
    ledger = UsageLedger()
    clock = _Clock()
    budget = Budget(
        Limits(max_tokens=100, max_cost_usd=1.0, max_wall_time_s=10, max_sub_calls=2),
        ledger,
        clock,
    )
    assert budget.exceeded() is None
    budget.reserve_sub_call()
    budget.reserve_sub_call()
    with pytest.raises(BudgetExceededError) as info:
        budget.reserve_sub_call()
    assert info.value.budget == "max_sub_calls"
    assert "answer['ready'] = True" in str(info.value)
    assert budget.exceeded() == "max_sub_calls"
    ledger.record(model="m", role="sub", usage=Usage(0, 0, 1.5), status="ok")
    assert budget.exceeded() == "max_cost"
    ledger.record(model="m", role="root", usage=Usage(60, 40), status="ok")
    assert budget.exceeded() == "max_tokens"
    clock.now += 10
    assert budget.exceeded() == "max_wall_time"
    assert budget.remaining_wall_s() == 0


def test_budget_unlimited() -> None:
    budget = Budget(Limits(), UsageLedger())
    for _ in range(1000):
        budget.reserve_sub_call()
    assert budget.exceeded() is None
    assert budget.remaining_wall_s() is None
    assert budget.sub_calls == 1000


def test_trajectory_writes_flushed_jsonl_and_calls_back(tmp_path: Path) -> None:
    seen: list[dict] = []
    path = tmp_path / "sub" / "t.jsonl"
    with Trajectory(path, seen.append) as trajectory:
        run_id = trajectory.emit("run_start", task_id="t1", depth=1, parent_id=None, query="q")
        cell_id = trajectory.reserve_id()
        trajectory.emit("sub_call", task_id="t1", depth=1, parent_id=cell_id, prompt="p")
        trajectory.emit("cell", task_id="t1", depth=1, parent_id=run_id, event_id=cell_id)
        # Flushed per event: readable while the run is still going.
        lines = path.read_text().splitlines()
        assert len(lines) == 3
    events = read_trajectory(path)
    assert events == seen
    assert [e["type"] for e in events] == ["run_start", "sub_call", "cell"]
    assert events[1]["parent_id"] == events[2]["id"] == cell_id
    for event in events:
        assert {"id", "parent_id", "task_id", "depth", "t", "type"} <= event.keys()
    json.dumps(events)


def test_trajectory_survives_a_failing_callback(tmp_path: Path) -> None:
    def broken(event: dict) -> None:
        raise RuntimeError("display gone")

    with Trajectory(tmp_path / "t.jsonl", broken) as trajectory:
        trajectory.emit("turn", task_id="t", depth=1, parent_id=None)
    assert len(read_trajectory(tmp_path / "t.jsonl")) == 1


def _info() -> ContextInfo:
    return ContextInfo("text", "str", 123_456, None, "line one\nline two", 0.01)


def test_system_prompts_describe_context_budget_and_contract() -> None:
    limits = Limits(max_iterations=7, max_sub_calls=30, max_cost_usd=2.5)
    inputs = prompts.PromptInputs(_info(), limits, depth=1, sub_calls_left=30)
    for profile in ("frontier", "small"):
        text = prompts.get_profile(profile).system_prompt(inputs)
        assert "123,456 characters" in text
        assert "line one" in text
        assert "7 replies" in text
        assert "30 sub-calls" in text
        assert "$2.5" in text
        assert 'answer["ready"] = True' in text
        assert "```repl" in text
        assert "llm_batch" in text
        for placeholder in ("{context}", "{budget}", "{rlm_query}", "{{"):
            assert placeholder not in text
    small = prompts.SMALL.system_prompt(inputs)
    assert "Never write `context = ...`" in small
    assert "WORKED EXAMPLE" in small


def test_rlm_query_line_depends_on_depth() -> None:
    shallow = prompts.PromptInputs(_info(), Limits(max_depth=1), depth=1)
    deep = prompts.PromptInputs(_info(), Limits(max_depth=2), depth=1)
    assert "same as `llm_query`" in prompts.FRONTIER.system_prompt(shallow)
    assert "child RLM" in prompts.FRONTIER.system_prompt(deep)


def test_no_context_prompt() -> None:
    info = ContextInfo("none", "NoneType", 0, None, "", 0.0)
    text = prompts.FRONTIER.system_prompt(prompts.PromptInputs(info, Limits(), depth=1))
    assert "no context" in text


def test_resolve_profile() -> None:
    assert prompts.resolve_profile("auto", local_model=True) is prompts.SMALL
    assert prompts.resolve_profile("auto", local_model=False) is prompts.FRONTIER
    assert prompts.resolve_profile("small", local_model=False) is prompts.SMALL
    assert prompts.profile_names() == ("auto", "frontier", "small", "rlm-trained")


def test_unknown_profile_is_an_error_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown prompt profile 'huge'.*auto, frontier, small"):
        prompts.resolve_profile("huge", local_model=False)
    with pytest.raises(ConfigError, match="prompt profile"):
        Engine(EngineConfig(prompt_profile="huge"))


def test_a_registered_profile_changes_only_what_it_overrides() -> None:
    class Terse(prompts.Profile):
        name = "terse-test"

        def no_code_nudge(self) -> str:
            return "Code, please."

    terse = prompts.register_profile(Terse())
    try:
        assert prompts.get_profile("terse-test") is terse
        assert terse.no_code_nudge() == "Code, please."
        assert terse.repeated_code_note() == prompts.FRONTIER.repeated_code_note()
        with pytest.raises(ConfigError, match="cannot be called 'auto'"):
            prompts.register_profile(type("Auto", (prompts.Profile,), {"name": "auto"})())
    finally:
        prompts._PROFILES.pop("terse-test")


def test_outputs_message_numbers_cells_and_counts_turns() -> None:
    text = prompts.FRONTIER.outputs_message(["a", ""], query="q", turn=3, max_turns=10)
    assert "Output of cell 1:\n```\na\n```" in text
    assert "(no output; use print() to see values)" in text
    assert "[7 turns left]" in text


def test_small_ending_asks_for_every_item_when_the_question_lists() -> None:
    # Told to store "a value from the output", the 1.5B root stored one of the pairs it had
    # printed; a question asking for every item of a kind is told to store them all.
    many = prompts.SMALL.outputs_message(["(1, 2)\n(1, 3)"], query="List all pairs.", turn=1,
                                         max_turns=5)  # fmt: skip
    one = prompts.SMALL.outputs_message(["7"], query="What is the number?", turn=1, max_turns=5)
    assert 'answer["content"] = str(<the variable holding them all>)' in many
    assert "not one of them" in many and "<the answer>" not in many
    assert 'answer["content"] = "<the answer>"' in one and "holding them all" not in one


def test_the_last_turn_asks_for_the_best_answer_so_far() -> None:
    # A run still exploring at its last turn ended with no answer set, though its outputs
    # held one (OOLONG-Pairs); every profile's last outputs message asks for the answer.
    frontier = prompts.FRONTIER.outputs_message(["a"], query="q", turn=4, max_turns=5)
    assert "[1 turn left] This is your last turn: no code runs after it." in frontier
    assert "[2 turns left] Continue" in prompts.FRONTIER.outputs_message(
        ["a"], query="q", turn=3, max_turns=5
    )
    last = prompts.SMALL.outputs_message(
        ["(1, 2)"], query="List all pairs.", turn=4, max_turns=5, next_step="Check it."
    )
    assert last.endswith(
        "Check it.\nYour next reply is the LAST one: no code runs after it. Reply with one "
        "```repl block that stores the best answer the outputs so far support:\n```repl\n"
        'answer["content"] = str(<the variable holding them all>)\nanswer["ready"] = True\n```'
    )
    one = prompts.SMALL.outputs_message(["7"], query="What is it?", turn=4, max_turns=5)
    assert 'answer["content"] = "<the answer>"' in one and "LAST" in one
    assert "DIFFERENT" not in one


def test_looks_like_answer() -> None:
    assert looks_like_answer("42")
    assert looks_like_answer("After reviewing everything, " + "x " * 300 + "the answer is 42")
    assert not looks_like_answer("Let me think about how to approach this. " * 20)


def test_fit_to_window_elides_oldest_outputs_only() -> None:
    messages = [
        {"role": "system", "content": "S" * 100},
        {"role": "user", "content": "query"},
        {"role": "assistant", "content": "code1"},
        {"role": "user", "content": "O" * 5000},
        {"role": "assistant", "content": "code2"},
        {"role": "user", "content": "P" * 5000},
        {"role": "assistant", "content": "code3"},
        {"role": "user", "content": "Q" * 5000},
    ]
    assert fit_to_window(messages, None) is messages
    assert fit_to_window(messages, 100_000) is messages
    fitted = fit_to_window(messages, 4000)  # room for ~11,200 characters
    assert fitted[3]["content"].startswith("[output of an earlier turn omitted")
    assert fitted[5]["content"] == "P" * 5000
    assert fitted[7]["content"] == "Q" * 5000
    assert messages[3]["content"] == "O" * 5000
