"""The rlm-trained profile's conventions come from the installed ``rlms`` package, at run time."""

from __future__ import annotations

import sys

import pytest

from engine.errors import ConfigError
from engine.rlm import trained


def test_trained_prompt_is_the_installed_package_prompt() -> None:
    from rlm.utils import prompts as official

    system, first = trained.opening_messages(
        "What is the key?",
        trained.ContextShape("str", 50_000),
        max_iterations=12,
        tools={"search": "find text in the context"},
    )
    # The package's own system prompt and orchestrator addendum, with our helper as its tool.
    head = official.RLM_SYSTEM_PROMPT.format(custom_tools_section="\0").split("\0")[0]
    assert system.startswith(head)
    assert official.ORCHESTRATOR_ADDENDUM in system
    assert "- `search`: find text in the context" in system
    assert first.startswith("Answer the following: What is the key?")
    assert "Your context is a str of 50000 total characters." in first
    assert first.endswith("Turn 1/12:")
    assert trained.turn_message(1, max_iterations=12) == "Turn 2/12:"
    assert trained.outputs_message("r", [("print(1)", "1\n")]) == "REPL output:\n\n1\n"
    assert trained.package_version() is not None


def test_trained_profile_without_the_package_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes the import fail as if the package were not installed.
    for name in ("rlm", "rlm.core", "rlm.core.types", "rlm.utils", "rlm.utils.prompts"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ConfigError, match=r"pip install 'rlm-engine\[trained\]'"):
        trained.opening_messages("q", trained.ContextShape("str", 1), max_iterations=3)
