"""Untrusted text made writable as UTF-8 (engine/text.py)."""

from __future__ import annotations

import json

from engine.text import json_has_lone_surrogate, valid_json, valid_text


def test_lone_surrogates_become_replacement_characters() -> None:
    decoded = json.loads(r'"a\ud800b\udcff \ud83d\ude00 \ufffd"')  # the pair is one emoji
    assert valid_text(decoded) == "a\ufffdb\ufffd \U0001f600 \ufffd"
    valid_text(decoded).encode("utf-8")


def test_valid_values_are_returned_as_they_are() -> None:
    value = {"k": ["text", 1, None, {"nested": "\U0001f600"}]}
    assert valid_json(value) is value
    text = "plain"
    assert valid_text(text) is text


def test_keys_and_nested_strings_are_cleaned() -> None:
    value = {"k\udcff": ["ok", {"x": "\ud800"}], "n": 1}
    assert valid_json(value) == {"k\ufffd": ["ok", {"x": "\ufffd"}], "n": 1}


def test_json_bodies_with_lone_surrogates_are_found() -> None:
    for body, lone in (
        (rb'{"p": "\ud800 x"}', True),
        (rb'{"p": "\uDC80"}', True),
        (rb'{"p": "\ud83d\ude00"}', False),  # a pair: valid text
        (rb'{"p": "\u00e9 plain"}', False),
    ):
        assert json_has_lone_surrogate(body, json.loads(body)) is lone, body
