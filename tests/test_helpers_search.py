"""``search`` when a phrase is not in the context word for word: stems, proximity, files.

Pure logic: the kernel helper module is loaded from ``sandbox-image/rlm_runtime/helpers.py``
(the kernel path is covered in ``test_helpers_kernel.py``). The files are made up here, not
taken from any benchmark item: a small package where a question's words occur in several
files but together only where the thing is defined.
"""

from __future__ import annotations

from pathlib import Path

from tests.module_support import load_module

HELPERS_FILE = Path(__file__).parents[1] / "sandbox-image" / "rlm_runtime" / "helpers.py"
helpers = load_module("rlm_helpers_search_under_test", HELPERS_FILE)

FILES = {
    "shop/cart.py": (
        "from shop.prices import compute_total\n\n"
        "def checkout(cart):\n    # the total of the cart, taxes included\n"
        "    return compute_total(cart.items)\n"
    ),
    "shop/prices.py": (
        "TAX = 0.2\n\n\n"
        "def compute_total(items):\n"
        '    """Compute the total price of the items, with taxes."""\n'
        "    return sum(i.price for i in items) * (1 + TAX)\n"
    ),
    "docs/notes.md": (
        "Taxes are computed at checkout. " + "Filler text. " * 40 + "Total: see prices."
    ),
}


def sources(result: object) -> list[object]:
    return [hit.source for hit in result]  # type: ignore[attr-defined]


def test_an_inflected_word_is_found_by_its_stem() -> None:
    result = helpers.search("computes", FILES)
    assert "not found as written; these match 'comput'" in result.message
    # compute_total in cart.py and prices.py (twice each), "computed" in notes.md.
    assert [(hit.source, hit.match.lower()) for hit in result] == [
        ("shop/cart.py", "comput"),
        ("shop/cart.py", "comput"),
        ("shop/prices.py", "comput"),
        ("shop/prices.py", "comput"),
        ("docs/notes.md", "comput"),
    ]
    assert helpers.search("replies", {"a.py": "def reply(): ..."})[0].match == "reply"
    plural = helpers.search("reply", {"a.py": "two replies"})
    assert plural[0].match == "replies" and "these match 'replies'" in plural.message
    # A word found as written is not widened to its stem.
    assert [hit.match for hit in helpers.search("checkout", FILES)] == ["checkout", "checkout"]


def test_a_phrase_is_found_where_its_words_are_closest_first() -> None:
    result = helpers.search("def computes total taxes", FILES, window=100)
    assert "tightest first" in result.message
    # prices.py holds all four words (taxes as TAX) within a few lines; cart.py holds them
    # further apart; notes.md has no 'def'.
    assert sources(result) == ["shop/prices.py", "shop/cart.py"]
    assert "def compute_total" in result[0].match
    assert len(result[0].match) < len(result[1].match)


def test_words_far_apart_fall_back_to_the_files_holding_them_all() -> None:
    result = helpers.search("checkout prices", FILES, window=20)
    assert "the files holding all of" in result.message
    assert sources(result) == ["shop/cart.py", "docs/notes.md"]  # prices.py lacks 'checkout'
    # A text is one item: no such fallback, a clear no-match message instead.
    text = FILES["docs/notes.md"]
    assert helpers.search("checkout prices", text, window=20).message.startswith(
        "search('checkout prices'): no match."
    )


def test_words_in_either_order_and_overlapping_places_are_listed_once() -> None:
    text = "alpha beta gamma. " * 3 + "x" * 500 + " gamma ... alpha, then beta"
    result = helpers.search("beta alpha", text, window=30)
    starts = [hit.position for hit in result]
    assert len(starts) == len(set(starts)) == 4
    assert result[0].match == "alpha beta"  # tightest: the two words side by side
