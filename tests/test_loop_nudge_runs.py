"""The loop's interventions end to end: the fake sandbox (the kernel's contract and helpers,
no Docker), the root model replayed.

Each script is what a weak model did in issue 14; the checks are what the loop sends back to
the model (the replay server keeps every request) and the ``nudge`` events it writes.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from engine import RunResult
from engine.sandbox.fake import FakeBackend
from tests.loop_support import Run

pytestmark = pytest.mark.anyio

ESSAY = "The founders met every week and talked about what users wanted. " * 60
NEEDLE = "One of the special magic numbers for quiet-lake is: 4719203. "
HAYSTACK = ESSAY + NEEDLE + ESSAY
QUERY = "What is the special magic number for quiet-lake mentioned in the provided text?"


def root(reply: str) -> dict[str, Any]:
    return {"match": {"model": "root"}, "response": {"content": reply}}


def cell(source: str, before: str = "Next.") -> dict[str, Any]:
    return root(f"{before}\n```repl\n{source}\n```")


async def run(
    tmp_path: Path, entries: list[dict[str, Any]], context: Any, query: str = QUERY
) -> tuple[RunResult, list[dict[str, Any]], list[dict[str, Any]]]:
    runner = Run(tmp_path, FakeBackend())
    result = await runner(entries, query, context, "small", max_iterations=len(entries))
    return result, runner.events, runner.root_requests()


def reasons(events: list[dict[str, Any]]) -> list[str]:
    return [e["reason"] for e in events if e["type"] == "nudge"]


# What each record of short_records asks about, and the question's statement of the options.
PLACES = ["place", "person", "place", "thing", "place"] * 4
ASKS_ABOUT = "Each line asks about one of these: person, place, thing."

# A root that guesses a label over short_records(PLACES) until the loop labels the records:
# doubted, repeated once (asked again), repeated twice (the loop runs the labelling, whose
# sub-calls the last entry answers with the right labels).
GUESSED_UNTIL_LABELLED = [
    *[cell("answer['content'] = 'person'\nanswer['ready'] = True", "It is person.")] * 3,
    {
        "match": {"model": "sub"},
        "response": {"content": "\n".join(f"[{i}] {k}" for i, k in enumerate(PLACES[:10], 1))},
        "repeat": True,
    },
]


def short_records(kinds: list[str]) -> str:
    """One short question per line, each about a place, a person or a thing: the labels
    are not written in the records."""
    asks = {"place": "Where is Lima ?", "person": "Who is Ada ?", "thing": "What is a lute ?"}
    return "".join(f"Day {i} || User: {10 + i} || {asks[k]}\n" for i, k in enumerate(kinds))


async def test_loop_repeated_reply_is_not_fed_back_and_sampling_changes(tmp_path: Path) -> None:
    peek = cell("print(context[:200])", "Let me look.")
    entries = [
        peek,
        peek,  # greedy decoding: the same reply again
        cell("print(search('quiet-lake'))"),
        cell("answer['content'] = '4719203'\nanswer['ready'] = True"),
    ]
    result, events, requests = await run(tmp_path, entries, HAYSTACK)
    assert (result.answer, result.ready) == ("4719203", True)
    assert reasons(events) == ["partial_view", "repeated_reply"]
    third = requests[2]
    replies = [m["content"] for m in third["messages"] if m["role"] == "assistant"]
    assert len(replies) == 1, "the repeated reply must not be in the conversation"
    assert "same as an earlier one" in third["messages"][-1]["content"]
    # Varied sampling with a fixed seed from the call after the repeat on.
    assert "seed" not in requests[1]
    assert (third["temperature"], third["seed"]) == (0.7, 1001)


async def test_loop_an_empty_answer_marked_ready_is_never_final(tmp_path: Path) -> None:
    # Seen on OOLONG-Pairs (issue 14): the 1.5B root set `answer['content'] = None` with
    # `answer['ready'] = True`, and the run ended with the answer "None". None or blank
    # content is no answer: the cell's output says so and the run goes on, each time.
    entries = [
        cell("print(search('quiet-lake'))"),
        cell("answer['content'] = None\nanswer['ready'] = True"),
        cell("answer['content'] = '  '\nanswer['ready'] = True"),
        cell("answer['content'] = '4719203'\nanswer['ready'] = True"),
    ]
    result, events, requests = await run(tmp_path, entries, HAYSTACK)
    assert (result.answer, result.ready) == ("4719203", True)
    assert reasons(events) == ["empty_answer", "empty_answer"]
    cells = [e for e in events if e["type"] == "cell"]
    assert [c["answer_ready"] for c in cells] == [False, False, False, True]
    assert all("answer['content'] is empty" in c["output"] for c in cells[1:3])
    assert "answer['content'] is empty" in requests[2]["messages"][-1]["content"]
    # A run whose turns end on an empty answer has none, and it is not ready.
    ended, _, _ = await run(tmp_path / "ended", entries[:2], HAYSTACK)
    assert (ended.answer, ended.ready) == ("", False)


async def test_loop_context_literal_is_refused(tmp_path: Path) -> None:
    entries = [
        cell(f'context = """{HAYSTACK[:300]}"""\nprint(len(context))', "I load the text."),
        cell("print(search('quiet-lake'))"),
        cell("answer['content'] = '4719203'\nanswer['ready'] = True"),
    ]
    result, events, requests = await run(tmp_path, entries, HAYSTACK)
    assert result.answer == "4719203" and result.ready
    assert reasons(events) == ["context_literal"]
    ran = [e["code"] for e in events if e["type"] == "cell"]
    assert not any("context = " in code for code in ran), "the copying cell must not run"
    assert "already loaded" in requests[1]["messages"][-1]["content"]


async def test_loop_failed_search_gets_the_helper_suggested(tmp_path: Path) -> None:
    entries = [
        cell("import re\nprint(re.search(r'lake quiet is: (\\d+)', context).group(1))"),
        cell("print(search('quiet-lake'))"),
        cell("answer['content'] = '4719203'\nanswer['ready'] = True"),
    ]
    result, events, requests = await run(tmp_path, entries, HAYSTACK)
    assert result.answer == "4719203"
    assert reasons(events) == ["failed_search"]
    told = requests[1]["messages"][-1]["content"]
    assert "That search failed (AttributeError" in told
    assert "print(search('quiet-lake'))" in told


async def test_loop_answer_after_listing_files_goes_back_once(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "engine" / "rlm").mkdir(parents=True)
    (repo / "engine" / "cli.py").write_text("def main(reply):\n    run(FINAL, reply)\n" * 40)
    (repo / "engine" / "rlm" / "parser.py").write_text(
        "import re\n\n\ndef find_final(reply):\n    return re.search('FINAL', reply)\n" * 10
    )
    query = "Which file defines the function that finds FINAL(...) in a reply?"
    entries = [
        cell("print(list(context))"),
        cell("answer['content'] = 'engine/cli.py'\nanswer['ready'] = True"),
        cell(
            suggested := "found = search('def finds FINAL reply', max_hits=4, window=100)\n"
            "print(found if found else search('finds FINAL reply', max_hits=4, window=100))"
        ),
        cell("answer['content'] = 'engine/rlm/parser.py'\nanswer['ready'] = True"),
    ]
    result, events, requests = await run(tmp_path, entries, repo, query)
    assert (result.answer, result.ready, result.iterations) == ("engine/rlm/parser.py", True, 4)
    assert reasons(events) == ["unsupported_answer"]
    # The question's words searched together, with 'def': it asks where a function is
    # defined ('finds' is the rarest: only its stem occurs, in find_final).
    doubt = requests[2]["messages"][-1]["content"]
    assert suggested in doubt
    # Run as suggested, the definition is the first hit ('reply' and 'FINAL' occur in cli.py
    # too, never all together).
    shown = [e["output"] for e in events if e["type"] == "cell" and e["code"] == suggested]
    assert shown and "[1] file 'engine/rlm/parser.py', char 12, line 4:" in shown[0]


async def test_loop_cut_print_then_guess_is_steered_to_the_rare_word(tmp_path: Path) -> None:
    # The embedded model's failure on the demo: print(context) (the middle is cut), then a
    # guessed code. The advice must name a word the context holds (counted in the kernel
    # before the first cell), not merely a long word of the question ("somewhere").
    filler = "The village baker walked along the canal while the bells were ringing. " * 300
    text = filler + "Note: the secret access code is 88-XQ-41, keep it safe. " + filler
    query = "What is the secret access code mentioned somewhere in the text?"
    entries = [
        cell("print(context)", "I look at the text."),
        cell("answer['content'] = '12345'\nanswer['ready'] = True\nprint('done')"),
        cell("print(search('secret'))"),
        cell("answer['content'] = '88-XQ-41'\nanswer['ready'] = True"),
    ]
    runner = Run(tmp_path, FakeBackend())
    result = await runner(entries, query, text, "small", max_iterations=4, output_max_chars=4000)
    assert (result.answer, result.ready) == ("88-XQ-41", True)
    assert reasons(runner.events) == ["output_cut", "unsupported_answer"]
    cut = runner.last_user(1)
    assert "characters in its middle were dropped" in cut and "search('secret')" in cut
    doubt = runner.last_user(2)
    assert "print(search('12345'))\nprint(search('secret'))" in doubt
    # The doubt is the next step, not output followed by "store the answer if shown".
    assert "If the output above contains the answer" not in doubt
    # The model's cells are the only cells: the probe is not one of them.
    assert [e["code"] for e in runner.of_type("cell")] == [
        "print(context)",
        "answer['content'] = '12345'\nanswer['ready'] = True\nprint('done')",
        "print(search('secret'))",
        "answer['content'] = '88-XQ-41'\nanswer['ready'] = True",
    ]


async def test_loop_a_model_stuck_on_one_reply_gets_the_search_run_for_it(tmp_path: Path) -> None:
    # Seen in the served S-NIAH bench: the same guess sent for 12 turns, nudges and varied
    # sampling notwithstanding. At the second repeat the loop runs the search itself.
    filler = "A travelling merchant sang a song about the old mill by the river. " * 200
    text = filler + "For the record, the vault number for amber-fox is 5512093. " + filler
    query = "What is the vault number for amber-fox mentioned in the provided text?"
    guess = cell("answer['content'] = '12345'\nanswer['ready'] = True", "The answer is 12345.")
    entries = [
        cell("print(len(context))"),
        guess,  # doubted: no output has shown it
        guess,  # repeated once: asked again, sampling varied
        guess,  # repeated twice: the loop runs the search
        cell("answer['content'] = '5512093'\nanswer['ready'] = True"),
    ]
    runner = Run(tmp_path, FakeBackend())
    result = await runner(entries, query, text, "small", max_iterations=5)
    assert (result.answer, result.ready) == ("5512093", True)
    assert reasons(runner.events) == [
        "unsupported_answer",
        "repeated_reply",
        "repeated_reply",
        "auto_step",
    ]
    auto = [e for e in runner.of_type("cell") if e["kind"] == "auto_step"]
    assert [e["code"] for e in auto] == ["print(search('amber-fox'))"]
    assert "5512093" in auto[0]["output"]
    told = runner.last_user(4)
    assert "The engine ran this step for you" in told and "5512093" in told
    # After the engine's step the conversation restarts: the system prompt and the step's
    # output, none of the turns that led to the stuck reply (the kernel's history has them).
    after = runner.root_requests()[4]["messages"]
    assert [m["role"] for m in after] == ["system", "user"] and "12345" not in after[1]["content"]
    history = [e for e in runner.of_type("cell") if "history" in e["code"]]
    assert not history, "storing the history is the engine's cell, not the model's"


async def test_loop_a_model_stuck_on_a_file_name_gets_the_file_searches_run(
    tmp_path: Path,
) -> None:
    # Seen with the embedded model on a code question: a file name answered after listing the
    # keys, resent through the doubt and two repeats; the engine's search for one rare word
    # then listed a file that merely used it, and the root answered that one.
    repo = tmp_path / "repo"
    (repo / "billing").mkdir(parents=True)
    (repo / "billing" / "report.py").write_text(
        "from billing.dates import parse_invoice_date\n\n"
        + "def totals(rows):\n    # dates of each invoice, parsed first\n    return rows\n" * 30
    )
    (repo / "billing" / "dates.py").write_text(
        "import datetime\n\n\ndef parse_invoice_date(text):\n"
        '    """Parse the date printed on an invoice."""\n'
        "    return datetime.date.fromisoformat(text)\n"
    )
    (repo / "README.md").write_text("Invoices are parsed nightly; dates are UTC.\n" * 20)
    query = "Which file defines the function that parses invoice dates?"
    guess = cell("answer['content'] = 'billing.py'\nanswer['ready'] = True")
    entries = [
        cell("print(list(context))"),
        guess,  # doubted
        guess,  # repeated once
        guess,  # repeated twice: the loop runs the file searches
        cell("answer['content'] = 'billing/dates.py'\nanswer['ready'] = True"),
    ]
    result, events, _ = await run(tmp_path, entries, repo, query)
    assert (result.answer, result.ready) == ("billing/dates.py", True)
    assert reasons(events)[-1] == "auto_step"
    (auto,) = [e for e in events if e["type"] == "cell" and e["kind"] == "auto_step"]
    assert auto["code"].startswith("found = search('def ")
    assert "[1] file 'billing/dates.py'" in auto["output"]


async def test_loop_a_resent_answer_that_a_search_has_shown_since_is_accepted(
    tmp_path: Path,
) -> None:
    # Seen in the embedded S-NIAH bench: the needle was in the preview; the root printed the
    # number as a literal, answered, was asked to check, resent the answer twice, and the
    # engine's search showed it. Resent replies are not run, so the right answer never stood
    # until the turn limit.
    filler = "A travelling merchant sang a song about the old mill by the river. " * 200
    text = "Intro. The special magic number for keen-mirror is: 1833793. " + filler
    query = "What is the special magic number for keen-mirror mentioned in the provided text?"
    answer = cell("answer['content'] = '1833793'\nanswer['ready'] = True", "The answer.")
    entries = [
        cell("print('1833793')"),  # its own literal: shows a guess, not the content
        answer,  # doubted: no output of content has shown it
        answer,  # repeated once
        answer,  # repeated twice: the loop runs the search, which shows the number
        answer,  # resent once more: now the search shows it, so it runs and stands
    ]
    runner = Run(tmp_path, FakeBackend())
    result = await runner(entries, query, text, "small", max_iterations=6)
    assert (result.answer, result.ready, result.iterations) == ("1833793", True, 5)
    assert reasons(runner.events) == [
        "unsupported_answer",
        "repeated_reply",
        "repeated_reply",
        "auto_step",
    ]


async def test_loop_an_error_that_echoes_a_name_does_not_show_the_answer(tmp_path: Path) -> None:
    # Seen on OOLONG-Pairs (issue 14): the 1.5B root ran a cell `none`, whose NameError
    # printed "name 'none' is not defined", then answered 'none'; doubted, it resent the
    # answer, which ran as if an output had shown 'none', and stood without any labels.
    text = short_records(PLACES)
    query = f"{ASKS_ABOUT} Find all pairs of users who both asked about a person."
    answer = cell("answer['content'] = 'none'\nanswer['ready'] = True")
    entries = [
        cell("print(context[:100])"),  # a small slice: steered to a search
        cell("none"),
        answer,  # doubted: no sub-model has labelled a record
        answer,  # repeated once: not run
        answer,  # repeated twice: the loop runs the labelling
        GUESSED_UNTIL_LABELLED[-1],
    ]
    runner = Run(tmp_path, FakeBackend())
    result = await runner(entries, query, text, "small", max_iterations=5)
    assert not result.ready
    assert reasons(runner.events) == [
        "partial_view",
        "unsupported_answer",
        "repeated_reply",
        "repeated_reply",
        "auto_step",
    ]
    (auto,) = [e for e in runner.of_type("cell") if e["kind"] == "auto_step"]
    assert "llm_map(items" in auto["code"] and "with_label" in auto["output"]


async def test_loop_a_resent_guess_no_content_shows_stays_refused(tmp_path: Path) -> None:
    filler = "A travelling merchant sang a song about the old mill by the river. " * 200
    text = filler + "For the record, the vault number for amber-fox is 5512093. " + filler
    query = "What is the vault number for amber-fox mentioned in the provided text?"
    guess = cell("print('12345')\nanswer['content'] = '12345'\nanswer['ready'] = True")
    entries = [cell("print(len(context))"), guess, guess, guess, guess]
    runner = Run(tmp_path, FakeBackend())
    result = await runner(entries, query, text, "small", max_iterations=5)
    assert not result.ready and result.stop_reason == "max_iterations"
    # The guess printed by its own cell is no evidence; the engine's search shows 5512093.
    assert reasons(runner.events)[:4] == [
        "unsupported_answer",
        "repeated_reply",
        "repeated_reply",
        "auto_step",
    ]


async def test_loop_guessed_count_gets_label_then_count_code_that_runs(tmp_path: Path) -> None:
    # OOLONG-like (issue 14): one record per line, the labels named in the question, a root
    # that guesses the count. The advice is code; a model that runs it as written gets the
    # count from sub-model labels.
    kinds = ["place", "person", "place", "thing", "place"] * 16
    # Lines as long as OOLONG's: the preview shows two whole lines, too few to tell records
    # from prose; the loop counts the lines in the kernel before the first cell.
    pad = "in the records kept by the county office for the year before the flood " * 2
    asks = {
        "place": f"Where is Lima, {pad}?",
        "person": f"Who is Ada, {pad}?",
        "thing": f"What is a lute, {pad}?",
    }
    text = "".join(f"Day {i} || User: {10 + i} || {asks[k]}\n" for i, k in enumerate(kinds))
    query = "Each line asks about one of these: person, place, thing. How many ask about a place?"
    guess = [cell("print(len(context))"), cell("answer['content'] = '1'\nanswer['ready'] = True")]
    runner = Run(tmp_path, FakeBackend())
    first = await runner(guess, query, text, "small", max_iterations=2)
    assert not first.ready and reasons(runner.events) == ["unsupported_answer"]
    doubt = runner.of_type("nudge")[0]["message"]
    suggested = doubt.split("```repl\n")[1].split("```")[0]
    # Each sub-call gets ten lines (llm_map's default pack); the period of five repeats.
    numbered = "\n".join(f"[{i}] {k}" for i, k in enumerate(kinds[:10], start=1))
    entries = [
        *guess,
        cell(suggested, "I label every line."),
        {"match": {"model": "sub"}, "response": {"content": numbered}, "repeat": True},
        cell("answer['content'] = str(labels.count('place'))\nanswer['ready'] = True"),
    ]
    runner = Run(tmp_path / "again", FakeBackend())
    result = await runner(entries, query, text, "small", max_iterations=4)
    assert (result.answer, result.ready) == ("48", True)
    (out,) = [e["output"] for e in runner.of_type("cell") if "llm_map" in e["code"]]
    assert "80 items" in out and "(48, 'place')" in out


async def test_loop_a_stuck_model_over_labelled_records_gets_the_labelling_run(
    tmp_path: Path,
) -> None:
    # Seen on OOLONG (issue 14): the 1.5B root sent one guessed label for four turns; the
    # loop's own step, a search for 'Instance' (a word on every line), showed it nothing.
    # Over records whose labels the question names, the loop's step is the labelling.
    text, query = short_records(PLACES), f"{ASKS_ABOUT} Which is the most common?"
    entries = [
        cell("print(context[:100])"),
        *GUESSED_UNTIL_LABELLED,
        cell("answer['content'] = 'place'\nanswer['ready'] = True"),
    ]
    runner = Run(tmp_path, FakeBackend())
    result = await runner(entries, query, text, "small", max_iterations=5)
    assert (result.answer, result.ready) == ("place", True)
    assert reasons(runner.events)[-1] == "auto_step"
    (auto,) = [e for e in runner.of_type("cell") if e["kind"] == "auto_step"]
    assert (
        "llm_map(items" in auto["code"] and "choices=['person', 'place', 'thing']" in auto["code"]
    )
    assert "20 items" in auto["output"] and "(12, 'place')" in auto["output"]
    assert "(4, 'person')" in auto["output"]
    # The extremes are named, ties listed together, so "least common" needs no reading of rows.
    assert "most common: place (12)" in auto["output"]
    assert "least common: person, thing (4)" in auto["output"]
    # The sub-model is told what the records are, not the question about all of them.
    assert runner.server is not None
    sub = [r for r in runner.server.requests if r["model"] == "sub"]
    asked = sub[0]["messages"][-1]["content"]
    assert ASKS_ABOUT in asked
    assert "Which is the most common?" not in asked
    assert "(12, 'place')" in runner.last_user(4)


async def test_loop_a_count_of_an_option_the_context_never_holds_goes_back(
    tmp_path: Path,
) -> None:
    # Seen on OOLONG (issue 14): the 1.5B root counted the lines holding a label's own words,
    # in records that do not carry their labels, and its 0 stood since the code named an
    # option. The loop counts the options in the kernel before the first cell: an option the
    # context never holds cannot be counted by looking for it.
    text, query = short_records(PLACES), f"{ASKS_ABOUT} How many ask about a place?"
    count = "answer['content'] = str(context.lower().count('place'))\nanswer['ready'] = True"
    result, events, _ = await run(tmp_path, [cell(count)], text, query)
    assert not result.ready and reasons(events) == ["unsupported_answer"]
    (nudge,) = [e for e in events if e["type"] == "nudge"]
    assert "judged by a sub-model" in nudge["message"] and "llm_map(items" in nudge["message"]
    # Where the context holds the option in a few records (not a label column), counting it
    # is reading, and the count stands.
    noted = text.replace("Where is Lima ?", "Which place is Lima ?", 3)
    result, events, _ = await run(tmp_path / "written", [cell(count)], noted, query)
    assert (result.answer, result.ready, reasons(events)) == ("3", True, [])


async def test_loop_a_count_of_every_record_after_the_labelling_goes_back(tmp_path: Path) -> None:
    # Seen on OOLONG (issue 14): the labelling step had counted 23 records of the label asked
    # about, and the 1.5B root answered 287, the count of every line. That goes back once,
    # with the labels' own count named; a count from the labels then stands.
    kinds, text = PLACES, short_records(PLACES)
    query = f"{ASKS_ABOUT} How many lines ask about a person?"
    labelling = "items = context.splitlines()\nlabels = llm_map(items, 'Which?', choices=" + (
        "['person', 'place', 'thing'])"
    )
    numbered = "\n".join(f"[{i}] {k}" for i, k in enumerate(kinds[:10], start=1))
    entries = [
        cell(labelling),
        {"match": {"model": "sub"}, "response": {"content": numbered}, "repeat": True},
        cell("answer['content'] = str(len(context.split('\\n')))\nanswer['ready'] = True"),
        cell("answer['content'] = str(labels.count('person'))\nanswer['ready'] = True"),
    ]
    result, events, requests = await run(tmp_path, entries, text, query)
    assert (result.answer, result.ready) == ("4", True)
    assert reasons(events) == ["unsupported_answer"]
    doubt = requests[2]["messages"][-1]["content"]
    assert "'21'" in doubt and "number of all the records" in doubt
    assert "labels.count('person')" in doubt


async def test_loop_the_labelling_counts_per_value_of_the_field_the_question_names(
    tmp_path: Path,
) -> None:
    # OOLONG-Pairs-like (issue 14): questions about users by label ("pairs of users who
    # both asked about a person"). The labelling step counts the labels per user too.
    users = [7, 8, 9]
    asks = {"place": "Where is Lima ?", "person": "Who is Ada ?", "thing": "What is a lute ?"}
    text = "".join(
        f"Date: Jan {i + 1:02}, 2024 || User: {users[i % 3]} || Instance: {asks[k]}\n"
        for i, k in enumerate(PLACES)
    )
    query = (
        f"{ASKS_ABOUT} Find all pairs of users who both have at least one line about a "
        "person. List each pair on its own line."
    )
    guess = [cell("answer['content'] = '(7, 8)'\nanswer['ready'] = True")]
    runner = Run(tmp_path, FakeBackend())
    await runner(guess, query, text, "small", max_iterations=1)
    suggested = runner.of_type("nudge")[0]["message"].split("```repl\n")[1].split("```")[0]
    numbered = "\n".join(f"[{i}] {k}" for i, k in enumerate(PLACES[:10], start=1))
    entries = [
        *guess,
        cell(suggested, "I label every line."),
        {"match": {"model": "sub"}, "response": {"content": numbered}, "repeat": True},
    ]
    runner = Run(tmp_path / "again", FakeBackend())
    await runner(entries, query, text, "small", max_iterations=2)
    (out,) = [e["output"] for e in runner.of_type("cell") if "llm_map" in e["code"]]
    assert "3 User values; labels per User (per_field):" in out
    table = out.split("(per_field):\n")[1].split("\nUser values with")[0].splitlines()
    shown = {int(line.split(" ", 1)[0]): ast.literal_eval(line.split(" ", 1)[1]) for line in table}
    expected: dict[int, Counter[str]] = {}
    for i, kind in enumerate(PLACES):
        expected.setdefault(users[i % 3], Counter())[kind] += 1
    assert shown == {user: dict(counts) for user, counts in expected.items()}
    assert all(shown[user]["person"] for user in (7, 8, 9))  # the cycle of 3 mixes them
    # And for each label, the users with at least one record of it.
    listed = out.split("(with_label[label]):\n")[1].split("\nlabelled (a text)")[0].splitlines()
    holders = {ast.literal_eval(line.split(" ", 2)[0]): line.split(" ", 2)[2] for line in listed}
    assert holders == {
        kind: str(sorted(str(user) for user, counts in expected.items() if counts[kind]))
        for kind in set(PLACES)
    }


def dated_records(kinds: list[str], users: list[int]) -> str:
    """``Date || User || Instance`` lines, the users in turn, each asking about one kind."""
    asks = {"place": "Where is Lima ?", "person": "Who is Ada ?", "thing": "What is a lute ?"}
    return "".join(
        f"Date: Jan {i + 1:02}, 2024 || User: {users[i % len(users)]} || Instance: {asks[k]}\n"
        for i, k in enumerate(kinds)
    )


async def offered_labelling(tmp_path: Path, query: str, text: str) -> str:
    """The labelling step the loop offers a root that guesses 'none' first."""
    guess = cell("answer['content'] = 'none'\nanswer['ready'] = True")
    runner = Run(tmp_path, FakeBackend())
    await runner([guess], query, text, "small", max_iterations=1)
    message: str = runner.of_type("nudge")[0]["message"]
    return message.split("```repl\n")[1].split("```")[0]


def labelled_then_repeated(
    guess: dict[str, Any], labelling: str, kinds: list[str]
) -> list[dict[str, Any]]:
    """A root that guesses, runs the offered labelling (the sub-model answers ``kinds``, ten
    per pack), prints the counts and then sends that same cell again."""
    sub = "\n".join(f"[{i}] {k}" for i, k in enumerate(kinds[:10], 1))
    return [
        guess,
        cell(labelling, "I label every line."),
        {"match": {"model": "sub"}, "response": {"content": sub}, "repeat": True},
        cell("print(counts)"),
        cell("print(counts)"),
    ]


@pytest.mark.parametrize("resends", [False, True])
async def test_loop_code_that_looks_for_a_label_in_the_records_is_offered_over_labelled(
    tmp_path: Path, resends: bool
) -> None:
    # Seen on OOLONG-Pairs (issue 14), every item: after the labelling, the 1.5B root looked
    # for a label's words in the records (`'human being' in line`), which never hold them.
    # The labelling step also writes the labels into `labelled`; the root's own code, run
    # over it, is offered back, and the answer from it stands. A repeat after the labelling
    # is steered to the records of the label asked about, not to the labelling again. A root
    # that resends its own code instead (seen on item 9) gets that code run over `labelled`
    # by the loop, and the answer it sets passes the same checks as any cell's.
    users = [7, 8, 9, 6]
    # Ten kinds per pack of ten (the sub-model's reply below is the same for every pack).
    kinds = ["person", *["place", "thing"] * 4, "place"] * 2
    text = dated_records(kinds, users)
    query = f"{ASKS_ABOUT} Find all users with at least one line about a 'person'."
    guess = cell("answer['content'] = 'none'\nanswer['ready'] = True")
    labelling = await offered_labelling(tmp_path, query, text)
    words = (
        "found = [line.split(' || ')[1] for line in context.split('\\n') if 'person' in line]\n"
        "answer['content'] = ', '.join(sorted(set(found))) or 'none'\nanswer['ready'] = True"
    )
    over = words.replace("in context.split", "in labelled.split")
    entries = [
        *labelled_then_repeated(guess, labelling, kinds),  # the repeat: to the 'person' records
        cell(words),  # looks for 'person' in the records: its own code over `labelled`
        cell(words) if resends else cell(over),
    ]
    runner = Run(tmp_path / "again", FakeBackend())
    result = await runner(entries, query, text, "small", max_iterations=6)
    expected = sorted({f"User: {users[i % 4]}" for i, k in enumerate(kinds) if k == "person"})
    assert (result.answer, result.ready) == (", ".join(expected), True)
    assert expected == ["User: 7", "User: 9"]  # 6 and 8 never asked about a person
    nudges = runner.of_type("nudge")
    offered = [n for n in nudges if n["reason"] == "unsupported_answer"][-1]
    assert f"```repl\n{over}\n```" in offered["message"]
    repeat = next(n for n in nudges if n["reason"] == "repeated_reply")
    assert "if line.endswith(' || Label: person')]" in repeat["message"]
    assert "llm_map" not in repeat["message"]
    tail = ["repeated_reply", "unsupported_answer"]
    if resends:
        tail += ["repeated_reply", "auto_step"]
        (auto,) = [c for c in runner.of_type("cell") if c["kind"] == "auto_step"]
        assert (auto["code"], auto["answer_ready"]) == (over, True)
    assert [n["reason"] for n in nudges][-len(tail) :] == tail


# Users and what each line asks about, the records, and a question about pairs of users
# (users 8, 9 and 12 have a line about a thing).
PAIR_USERS = [7, 8, 9, 6, 12]
PAIR_KINDS = ["person", "thing", "place", "place", "thing", "place", "person", "thing", "place",
              "place"] * 2  # fmt: skip
PAIRS_TASK = (
    PAIR_USERS,
    PAIR_KINDS,
    dated_records(PAIR_KINDS, PAIR_USERS),
    f"{ASKS_ABOUT} Find all pairs of users who both have a line about a 'thing'.",
)


async def test_loop_a_question_about_pairs_is_pointed_at_pairs_of_the_kept_values(
    tmp_path: Path,
) -> None:
    # Seen on OOLONG-Pairs (issue 14): with the labels per user printed, the 1.5B root paired
    # labels instead of users, or counted over `context`'s lines again. The labelling step
    # says how `pairs_of` lists pairs of users; a repeat after it is pointed at the users
    # the question's test keeps and their pairs; the pairs the root sets from it stand.
    users, kinds, text, query = PAIRS_TASK
    guess = cell("answer['content'] = 'none'\nanswer['ready'] = True")
    labelling = await offered_labelling(tmp_path, query, text)
    own = "found = pairs_of(with_label['thing'])\nprint(found)"
    entries = [
        *labelled_then_repeated(guess, labelling, kinds),  # the repeat: to the kept users' pairs
        cell(own),
        cell("answer['content'] = str(found)\nanswer['ready'] = True"),
    ]
    runner = Run(tmp_path / "again", FakeBackend())
    result = await runner(entries, query, text, "small", max_iterations=6)
    holders = sorted({users[i % 5] for i, k in enumerate(kinds) if k == "thing"})
    assert holders == [8, 9, 12]  # 6 and 7 never asked about a thing
    expected = "\n".join(f"({a}, {b})" for i, a in enumerate(holders) for b in holders[i + 1 :])
    assert (result.answer, result.ready) == (expected, True)
    (labelled,) = [c for c in runner.of_type("cell") if "llm_map(items" in c["code"]]
    # The labelling itself ends with the pairs of the question's test as read (here the
    # right ones), printed whole.
    assert labelled["output"].endswith(f"str(found) answers with all of them:\n{expected}")
    assert (
        "keep = [v for v, row in sorted(per_field.items()) if row.get('thing', 0) >= 1]"
        in (labelled["code"])
    )
    nudges = runner.of_type("nudge")
    repeat = next(n for n in nudges if n["reason"] == "repeated_reply")
    assert "row.get('thing', 0) >= 1]  # the question's test, as read" in repeat["message"]
    assert "found = pairs_of(keep)" in repeat["message"]
    assert [n["reason"] for n in nudges][-1] == "repeated_reply"  # the answer was not doubted


async def test_loop_a_model_stuck_after_the_labelling_is_shown_the_labels_again(
    tmp_path: Path,
) -> None:
    # Seen on OOLONG-Pairs (issue 14): stuck again after the engine's labelling, the 1.5B
    # root got a search for 'List' (a word of the question) run for it, and the conversation
    # restarted from that output: the labels' counts were gone, and no search tells labels
    # apart. Over such records the loop shows the counts again instead, and no search.
    text, query = short_records(PLACES), f"{ASKS_ABOUT} Which is the most common?"
    guess = GUESSED_UNTIL_LABELLED[0]
    entries = [
        *GUESSED_UNTIL_LABELLED,
        guess,  # stuck again: the counts are shown again
        guess,  # and again: nothing left to run for it
        cell("answer['content'] = 'place'\nanswer['ready'] = True"),
    ]
    runner = Run(tmp_path, FakeBackend())
    result = await runner(entries, query, text, "small", max_iterations=6)
    assert (result.answer, result.ready) == ("place", True)
    auto = [e for e in runner.of_type("cell") if e["kind"] == "auto_step"]
    assert len(auto) == 2 and "llm_map(items" in auto[0]["code"]
    assert "llm_map" not in auto[1]["code"] and "search(" not in auto[1]["code"]
    assert "most common: place (12)" in auto[1]["output"]
    sub = [r for r in runner.server.requests if r["model"] == "sub"] if runner.server else []
    assert len(sub) == 2  # 20 records in packs of ten: labelled once


async def test_loop_a_model_stuck_after_the_labelling_is_shown_the_pairs_on_their_own(
    tmp_path: Path,
) -> None:
    # Seen on OOLONG-Pairs (issue 14), item 8: the labelling's output ended with the right
    # pairs below a long table, and the labels shown again ended the same way; the 1.5B root
    # answered 'none' until its turns ran out. Stuck after the labelling (and the doubt of
    # its 'none'), a root asked about pairs gets the pairs step run for it first: the kept
    # values and their pairs, nothing else; the answer it sets from `found` stands.
    users, kinds, text, query = PAIRS_TASK
    guess = cell("answer['content'] = 'none'\nanswer['ready'] = True")
    sub = "\n".join(f"[{i}] {k}" for i, k in enumerate(kinds[:10], 1))
    entries = [
        *[guess] * 3,  # doubted, asked again, then the loop runs the labelling
        {"match": {"model": "sub"}, "response": {"content": sub}, "repeat": True},
        guess,  # doubted: the labelling printed pairs
        guess,  # stuck again: the pairs step
        cell("answer['content'] = str(found)\nanswer['ready'] = True"),
    ]
    runner = Run(tmp_path, FakeBackend())
    result = await runner(entries, query, text, "small", max_iterations=8)
    holders = sorted({users[i % 5] for i, k in enumerate(kinds) if k == "thing"})
    expected = "\n".join(f"({a}, {b})" for i, a in enumerate(holders) for b in holders[i + 1 :])
    assert (result.answer, result.ready) == (expected, True)
    auto = [e for e in runner.of_type("cell") if e["kind"] == "auto_step"]
    assert len(auto) == 2 and "llm_map(items" in auto[0]["code"]
    assert "found = pairs_of(keep)" in auto[1]["code"] and "llm_map" not in auto[1]["code"]
    # The step's output is the kept users and their pairs, not the table again.
    assert auto[1]["output"].splitlines() == [
        "3 User values pass it (keep): ['12', '8', '9']",
        "3 pairs (found); answer['content'] = str(found) answers with all of them:",
        *expected.splitlines(),
    ]
    # What the root is told after the step: the step and its output, from a fresh start.
    assert runner.server is not None
    request = [r for r in runner.server.requests if r["model"] != "sub"][-1]
    assert [m["role"] for m in request["messages"]] == ["system", "user"]
    assert expected in request["messages"][-1]["content"]


@pytest.mark.parametrize("follows", [True, False])
async def test_loop_one_printed_pair_as_the_answer_goes_back_once(
    tmp_path: Path, follows: bool
) -> None:
    # Seen on OOLONG-Pairs (issue 14): the kernel printed every qualifying pair and the 1.5B
    # root typed one of them as its answer. It goes back once, with the variable the cell
    # printed; a root sure of its one line sets it again, and that stands.
    _, kinds, text, query = PAIRS_TASK
    guess = cell("answer['content'] = 'none'\nanswer['ready'] = True")
    labelling = await offered_labelling(tmp_path, query, text)
    sub = "\n".join(f"[{i}] {k}" for i, k in enumerate(kinds[:10], 1))
    one = cell("answer['content'] = '(9, 12)'\nanswer['ready'] = True", "The answer.")
    entries = [
        guess,
        cell(labelling, "I label every line."),
        {"match": {"model": "sub"}, "response": {"content": sub}, "repeat": True},
        cell("found = pairs_of(with_label['thing'])\nprint(len(found), 'pairs')\nprint(found)"),
        one,
        cell("answer['content'] = str(found)\nanswer['ready'] = True") if follows else one,
    ]
    runner = Run(tmp_path / "again", FakeBackend())
    result = await runner(entries, query, text, "small", max_iterations=5)
    expected = "(8, 9)\n(8, 12)\n(9, 12)" if follows else "(9, 12)"
    assert (result.answer, result.ready, result.iterations) == (expected, True, 5)
    (doubt,) = [n for n in runner.of_type("nudge") if n["reason"] == "partial_listing"]
    assert "'(9, 12)', which is one of the 3 lines" in doubt["message"]
    assert "answer['content'] = str(found)" in doubt["message"]
    # The doubt is the model's next step, and the answer was unset in the kernel.
    assert doubt["message"] in runner.root_requests()[4]["messages"][-1]["content"]


async def test_loop_part_of_a_listing_of_file_names_goes_back_for_a_list_question(
    tmp_path: Path,
) -> None:
    # Not the pairs the check was built on: a dict of files, a question asking for every
    # file that uses something, and an answer of two of the three names a cell printed.
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (repo / "pkg" / f"{name}.py").write_text(f"import httpx\n\n\ndef {name}():\n    pass\n")
    (repo / "pkg" / "d.py").write_text("import json\n" * 5)
    query = "List every file of the project that imports httpx."
    code = (
        "users = sorted(p for p, t in context.items() if 'import httpx' in t)\n"
        "print('\\n'.join(users))"
    )
    entries = [
        cell(code),
        cell("answer['content'] = 'pkg/a.py\\npkg/c.py'\nanswer['ready'] = True"),
        cell("answer['content'] = '\\n'.join(users)\nanswer['ready'] = True"),
    ]
    result, events, _ = await run(tmp_path, entries, repo, query)
    assert (result.answer, result.ready) == ("pkg/a.py\npkg/b.py\npkg/c.py", True)
    assert reasons(events) == ["partial_listing"]
    (doubt,) = [e for e in events if e["type"] == "nudge"]
    assert "which is 2 of the 3 lines" in doubt["message"]
    assert "answer['content'] = str(users)" in doubt["message"]


async def test_loop_one_line_of_a_listing_stands_for_a_question_about_one_value(
    tmp_path: Path,
) -> None:
    # "Which file ..." asks for one: the name that is one line of the printed hits stands.
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "a.py").write_text("import httpx\n")
    (repo / "pkg" / "b.py").write_text("import json\n")
    query = "Which file among all the files of the project imports httpx?"
    entries = [
        cell("print('\\n'.join(sorted(context)))\nprint(search('httpx'))"),
        cell("answer['content'] = 'pkg/a.py'\nanswer['ready'] = True"),
    ]
    result, events, _ = await run(tmp_path, entries, repo, query)
    assert (result.answer, result.ready) == ("pkg/a.py", True)
    assert "partial_listing" not in reasons(events)
