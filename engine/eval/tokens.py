"""Offline token counting for target lengths and baseline truncation.

tiktoken downloads its BPE files on first use, which fails without internet. litellm ships the
``cl100k_base`` and ``o200k_base`` files in its wheel (under ``litellm_core_utils/tokenizers``),
so we point tiktoken at that directory while building the encoding. If neither is usable we fall
back to the HuggingFace ``tokenizers`` package with the tokenizer.json litellm also ships, and
otherwise fail with an :class:`~engine.errors.EvalError` that says what to install.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import EvalError

DEFAULT_ENCODING = "cl100k_base"

_env_lock = threading.Lock()


@dataclass(frozen=True)
class Tokenizer:
    """A real BPE tokenizer: ``count``, ``encode`` and ``decode`` text."""

    name: str
    _impl: Any
    _kind: str  # "tiktoken" | "hf"

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (special-token strings are encoded as plain text)."""
        if self._kind == "tiktoken":
            return list(self._impl.encode(text, disallowed_special=()))
        return list(self._impl.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        """Text of token ids."""
        return str(self._impl.decode(ids))

    def count(self, text: str) -> int:
        """Number of tokens in ``text``."""
        return len(self.encode(text))


def _litellm_tokenizer_dir() -> Path | None:
    # find_spec on the top-level package does not import litellm (slow, needs env set-up).
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
    return path if path.is_dir() else None


def _tiktoken(name: str, cache_dir: Path) -> Tokenizer:
    import tiktoken
    import tiktoken_ext.openai_public as public

    constructor = getattr(public, name, None)
    if constructor is None:
        raise EvalError(f"unknown tiktoken encoding {name!r}; use cl100k_base or o200k_base")
    # tiktoken reads TIKTOKEN_CACHE_DIR when loading; set it only while building (litellm sets
    # the same value globally when imported, so this agrees with it).
    with _env_lock:
        old = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
        try:
            params = constructor()
        finally:
            if old is None:
                os.environ.pop("TIKTOKEN_CACHE_DIR", None)
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = old
    return Tokenizer(name=name, _impl=tiktoken.Encoding(**params), _kind="tiktoken")


def _hf(path: Path) -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer

    return Tokenizer(name=f"hf:{path.name}", _impl=HFTokenizer.from_file(str(path)), _kind="hf")


@functools.cache
def get_tokenizer(name: str = DEFAULT_ENCODING) -> Tokenizer:
    """Return the tokenizer ``name`` (a tiktoken encoding or a tokenizer.json path), offline.

    Raises :class:`EvalError` naming what is missing when no offline tokenizer is available.
    """
    if name.endswith(".json"):
        path = Path(name)
        if not path.is_file():
            raise EvalError(f"tokenizer file {path} does not exist")
        return _hf(path)
    problems: list[str] = []
    bundled = _litellm_tokenizer_dir()
    if bundled is not None:
        try:
            return _tiktoken(name, bundled)
        except EvalError:
            raise
        except Exception as exc:  # network error, missing file, hash mismatch
            problems.append(f"tiktoken {name}: {type(exc).__name__}: {exc}")
        hf_json = bundled / "anthropic_tokenizer.json"
        if hf_json.is_file():
            try:
                return _hf(hf_json)
            except Exception as exc:
                problems.append(f"tokenizers {hf_json}: {type(exc).__name__}: {exc}")
    else:
        problems.append("litellm (which ships the BPE files) is not installed")
    raise EvalError(
        "no offline tokenizer available to count tokens ("
        + "; ".join(problems)
        + "). Install litellm and tiktoken (`pip install 'rlm-engine[eval]'`), or give lengths "
        "in characters (--unit chars)."
    )
