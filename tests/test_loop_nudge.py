"""The loop's interventions (engine/rlm/nudges.py) on the failures measured in issue 14.

Pure logic: each case is a cell or reply a weak model actually wrote (or one of the same
kind), over text, list and dict-of-files contexts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.rlm.nudges import (
    Watcher,
    asked_option,
    copies_preview,
    grouping_field,
    key_terms,
    labelling_instruction,
    named_options,
    options_probe_code,
    options_written,
    over_labelled,
    parse_lines,
    parse_options_probe,
    parse_probe,
    probe_code,
    reads_content,
    record_lines,
    typed_values,
)
from engine.truncate import marker, truncate_middle
from tests.module_support import load_module

ESSAY = (
    "Want to start a startup? Get funded by Y Combinator. In the summer of 2005 a group of "
    "founders came to Cambridge to work on their ideas, and most of what they learned was "
    "that the hard part is not the idea but the execution. "
) * 40
QUERY = (
    "What is the special magic number for quiet-lake mentioned in the provided text? "
    "Answer with the number only."
)


HELPERS_FILE = Path(__file__).parents[1] / "sandbox-image" / "rlm_runtime" / "helpers.py"


@dataclass
class Info:
    kind: str
    type_name: str
    length_chars: int
    items: int | None
    preview: str


def text_watcher(text: str = ESSAY) -> Watcher:
    return Watcher.for_context(QUERY, Info("text", "str", len(text), None, text[:400]))


def files_watcher() -> Watcher:
    files = {"engine/cli/run.py": "x" * 5000, "engine/rlm/parser.py": "def find_final(): ..."}
    info = Info("directory", "dict", 5021, 2, "files: " + ", ".join(files))
    return Watcher.for_context("Which file defines the function that finds FINAL(...)?", info)


def list_watcher() -> Watcher:
    preview = (
        '[{"id": 1, "text": "Service was slow and the soup was cold"}, {"id": 2, "text": "ok"}]'
    )
    info = Info("jsonl", "list", 90_000, 900, preview)
    return Watcher.for_context("How many reviews are negative?", info)


def test_loop_refuses_a_cell_that_recreates_context_from_the_preview() -> None:
    watcher = text_watcher()
    copied = f'context = """{ESSAY[:300]}"""\nprint(len(context))'
    nudge = watcher.before_cell(copied)
    assert nudge is not None and nudge.reason == "context_literal"
    assert "already loaded" in nudge.message and f"{len(ESSAY):,} characters" in nudge.message
    assert "search('quiet-lake')" in nudge.message
    # Searching for a phrase, or a short literal, is not a copy.
    assert watcher.before_cell("print(search('start a startup'))") is None
    assert watcher.before_cell(f"x = {ESSAY[:100]!r}") is None


def test_loop_refuses_a_copied_preview_of_a_list_context() -> None:
    watcher = list_watcher()
    cell = (
        'context = [{"id": 1, "text": "Service was slow and the soup was cold"}, '
        '{"id": 2, "text": "ok"}, {"id": 3, "text": "more rows typed by the model here"}]'
    )
    nudge = watcher.before_cell(cell)
    assert nudge is not None and "900 items" in nudge.message


def test_loop_repeated_reply_is_detected_and_sampling_varied_with_a_fixed_seed() -> None:
    watcher = text_watcher()
    reply = "Let me look.\n```repl\nprint(context[:200])\n```"
    assert watcher.repeated_reply(reply) is None
    assert watcher.sampling(0.0) == {}
    nudge = watcher.repeated_reply(reply.replace("\n", "\n  "))  # whitespace does not matter
    assert nudge is not None and nudge.reason == "repeated_reply"
    assert "print(search('quiet-lake'))" in nudge.message
    assert watcher.sampling(None) == {"temperature": 0.7, "seed": 1001}
    assert watcher.sampling(0.0) == {"temperature": 0.7, "seed": 1001}
    # A user who chose a temperature keeps it.
    assert watcher.sampling(0.4) == {}
    assert watcher.repeated_reply(reply) is not None
    assert watcher.sampling(None)["seed"] == 1002


def test_loop_failed_search_suggests_the_search_helper() -> None:
    watcher = text_watcher()
    raised = watcher.after_cell(
        "import re\nm = re.search(r'lake quiet number (\\d+)', context)\nprint(m.group(1))",
        "AttributeError: 'NoneType' object has no attribute 'group'",
        "AttributeError: 'NoneType' object has no attribute 'group'",
    )
    assert raised is not None and raised.reason == "failed_search"
    assert "failed (AttributeError" in raised.message
    assert "print(search('quiet-lake'))" in raised.message
    empty = watcher.after_cell("print(re.findall(r'quiet lake', context))", "[]", None)
    assert empty is not None and "found nothing" in empty.message
    # A membership test that printed False is a search that found nothing (issue 14's run).
    absent = watcher.after_cell('print("magic number for quiet-lake" in context)', "False", None)
    assert absent is not None and absent.reason == "failed_search"
    helper = watcher.after_cell(
        "print(search('quiet lake'))", "search('quiet lake'): no match.", None
    )
    assert helper is not None and helper.reason == "failed_search"
    found = watcher.after_cell("print(search('quiet-lake'))", "[1] char 5: ...is: 4719203", None)
    assert found is None


def test_loop_small_slice_steers_to_a_search_for_text_and_lists() -> None:
    watcher = text_watcher()
    nudge = watcher.after_cell("print(context[:200])", ESSAY[:200], None)
    assert nudge is not None and nudge.reason == "partial_view"
    assert f"only 200 of the {len(ESSAY):,} characters" in nudge.message
    assert watcher.after_cell(f"print(context[:{len(ESSAY)}])", "...", None) is None
    rows = list_watcher()
    nudge = rows.after_cell("print(context[:5])", "[...]", None)
    assert nudge is not None and "only 5 of the 900 items" in nudge.message


def test_loop_answer_typed_after_listing_file_names_goes_back_once() -> None:
    watcher = files_watcher()
    listing = "['engine/cli/run.py', 'engine/rlm/parser.py']"
    assert watcher.after_cell("print(list(context))", listing, None) is None
    code = "answer['content'] = 'engine/cli/run.py'\nanswer['ready'] = True"
    nudge = watcher.unsupported_answer("engine/cli/run.py", code)
    assert nudge is not None and nudge.reason == "unsupported_answer"
    # The question's words together, with 'def' first: it asks where something is defined.
    assert (
        "found = search('def FINAL finds', max_hits=4, window=100)\n"
        "print(found if found else search('FINAL finds', max_hits=4, window=100))"
    ) in nudge.message
    # Once only: the model may insist.
    assert watcher.unsupported_answer("engine/cli/run.py", code) is None


def test_loop_file_searches_follow_the_question() -> None:
    info = Info("directory", "dict", 9000, 3, "files: a.py, b.py, c.py")
    which = Watcher.for_context("Which module talks to the payment gateway?", info)
    assert which.file_searches() == [
        "print(search('payment gateway module', max_hits=4, window=100))"
    ]
    assert which.next_step()[1] == which.file_searches()[0]
    cls = Watcher.for_context("Which class retries failed uploads?", info)
    assert cls.file_searches()[0].startswith("found = search('class ")
    # Other contexts keep the one-word search.
    assert text_watcher().file_searches() == []
    assert text_watcher().next_step()[1] == "print(search('quiet-lake'))"


def test_loop_answer_after_reading_files_is_accepted() -> None:
    watcher = files_watcher()
    watcher.after_cell("print(search('def find_final'))", "[1] file 'engine/rlm/parser.py'", None)
    code = "answer['content'] = 'engine/rlm/parser.py'\nanswer['ready'] = True"
    assert watcher.unsupported_answer("engine/rlm/parser.py", code) is None


def test_loop_guessed_number_after_a_preview_slice_goes_back() -> None:
    watcher = text_watcher()
    watcher.after_cell("print(context[:300])", ESSAY[:300], None)
    nudge = watcher.unsupported_answer(
        "1234567", "answer['content'] = '1234567'\nanswer['ready'] = True"
    )
    assert nudge is not None and "print(search('1234567'))" in nudge.message


def test_loop_answer_found_by_search_or_computed_is_accepted() -> None:
    found = text_watcher()
    found.after_cell("print(search('quiet-lake'))", "... quiet-lake is: 4719203. ...", None)
    assert found.unsupported_answer("4719203", "answer['content'] = '4719203'") is None
    computed = text_watcher()
    code = "n = context.count('startup')\nanswer['content'] = str(n)\nanswer['ready'] = True"
    assert computed.unsupported_answer("40", code) is None
    tiny = Watcher.for_context("What colour?", Info("text", "str", 8, None, "blue sky"))
    assert tiny.unsupported_answer("blue", "answer['content'] = 'blue'") is None


def test_loop_a_short_guess_inside_a_longer_number_is_not_support() -> None:
    # Seen with the local model: it printed the line count (2001), then answered "2".
    watcher = text_watcher()
    code = "print(len(context.split('\\n')))"
    watcher.after_cell(code, "2001", None)
    nudge = watcher.unsupported_answer("2", "answer['content'] = '2'\nanswer['ready'] = True")
    assert nudge is not None and nudge.reason == "unsupported_answer"
    # A partial preview that happens to hold the value ("request 2") does not support it either.
    log = Info("text", "str", 60_000, None, "2024-01-01 INFO request 2 ok\n" * 20)
    previewed = Watcher.for_context("How many ERROR lines?", log)
    previewed.after_cell(code, "2001", None)
    nudge = previewed.unsupported_answer("2", "answer['content'] = '2'")
    # A short value is checked by computing it from the question's terms, not by searching "2".
    assert nudge is not None and "search('ERROR', max_hits=100_000)" in nudge.message
    shown = text_watcher()
    shown.after_cell("print(context.count('ERROR'), 'errors')", "2 errors", None)
    assert shown.unsupported_answer("2", "answer['content'] = '2'") is None


def test_loop_sub_call_answers_count_as_reading() -> None:
    rows = list_watcher()
    rows.after_cell("labels = llm_map(context, 'positive or negative?')", "", None)
    assert rows.unsupported_answer("312", "answer['content'] = '312'") is None


@pytest.mark.parametrize(
    ("code", "kind", "expected"),
    [
        ("print(len(context))", "text", False),
        ("print(context[:100])", "text", True),
        ("print(list(context))", "directory", False),
        ("print(sorted(context.keys()))", "directory", False),
        ("print(context['a.py'])", "directory", True),
        ("for name, text in context.items(): print(name, len(text))", "directory", True),
        ("for row in context: print(row)", "jsonl", True),
        ("print(search('x'))", "text", True),
        ("print(type(context))", "text", False),
        ("print('key' in context)", "text", True),
        ("print(context", "text", True),  # does not parse: assume it reads
    ],
)
def test_loop_reads_content(code: str, kind: str, expected: bool) -> None:
    assert reads_content(code, kind) is expected


def test_loop_helpers_of_the_watcher() -> None:
    assert key_terms(QUERY) == ["quiet-lake", "magic"]
    assert typed_values("answer['content'] = '42'\nx = 7") == {"content", "42", "7"}
    assert copies_preview(f"t = {ESSAY[50:250]!r}", ESSAY[:400])
    assert not copies_preview("t = 'short'", ESSAY[:400])


def test_loop_cut_output_steers_to_a_search() -> None:
    watcher = text_watcher()
    # The marker the model really sees (engine.truncate), as any layer that cuts writes it.
    output = truncate_middle(ESSAY * 4, 7_000)
    nudge = watcher.after_cell("print(context)", output, None)
    assert nudge is not None and nudge.reason == "output_cut"
    dropped = len(ESSAY * 4) - (len(output) - len(marker(len(ESSAY * 4))))
    assert f"{dropped:,} characters in its middle were dropped" in nudge.message
    assert "print(search('quiet-lake'))" in nudge.message


def test_loop_same_error_twice_asks_for_another_approach() -> None:
    watcher = text_watcher()
    error = "IndexError: list index out of range"
    assert watcher.after_cell('print(context.split("\\n")[1000])', error, error) is None
    nudge = watcher.after_cell('print(context.split("\\n")[1001])', error, error)
    assert nudge is not None and nudge.reason == "repeated_error"
    assert "failed the same way" in nudge.message and "search('quiet-lake')" in nudge.message
    assert watcher.after_cell("print(len(context))", "8000", None) is None


def test_loop_search_words_rank_by_how_often_the_context_holds_them() -> None:
    query = "What is the secret access code mentioned somewhere in the text?"
    # Without counts: distinctive, then long words ("somewhere" is neither rare nor useful).
    assert key_terms(query)[0] == "somewhere"
    hits = {"secret": 1, "access": 1, "code": 3, "somewhere": 0}
    # With counts: present and rarest first; an absent word last.
    assert key_terms(query, hits=hits) == ["secret", "access", "code"]
    watcher = Watcher.for_context(query, Info("text", "str", 30_000, None, "A quiet town."))
    watcher.term_hits = hits
    cut = watcher.after_cell("print(context)", truncate_middle("x" * 20_000, 8_000), None)
    assert cut is not None and "print(search('secret'))" in cut.message


def test_loop_probe_output_is_parsed_strictly() -> None:
    query = "Which quiet-lake code?"
    code = probe_code(query)
    assert code is not None and "quiet-lake" in code and "search(" in code
    assert probe_code("what is it?") is None  # nothing worth counting
    assert parse_probe('{"quiet-lake": 2, "code": 7}', query) == {"quiet-lake": 2, "code": 7}
    # The sandbox's output is untrusted: unknown words, non-counts and garbage are dropped.
    hostile = '{"quiet-lake": -1, "code": true, "evil": 1, "Which": 5}'
    assert parse_probe(hostile, query) == {}
    assert parse_probe('{"code": 10000000}', query) == {"code": 1000}
    assert parse_probe("Traceback ...", query) == {}
    assert parse_probe("[1, 2]", query) == {}
    assert parse_probe("[" * 5_000 + "]" * 5_000, query) == {}  # past the decoder's recursion


def test_loop_options_probe_counts_each_named_option_and_is_parsed_strictly() -> None:
    query = "Each ticket is one of these kinds: bug, feature request, question. How many bugs?"
    code = options_probe_code(query)
    assert code is not None and "['bug', 'feature request', 'question']" in code
    assert "regex=True" in code  # as written: no stem or near-words fallback
    assert options_probe_code("How many tickets are there?") is None
    out = '{"bug": 3, "feature request": 0, "question": 12, "evil": 1}'
    assert parse_options_probe(out, query) == {"bug": 3, "feature request": 0, "question": 12}
    assert parse_options_probe('{"bug": -1, "question": false}', query) == {}
    assert parse_options_probe('{"bug": 99999999}', query) == {"bug": 1000}
    assert parse_options_probe("Traceback ...", query) == {}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            "Each question belongs to one of these labels: abbreviation, entity, human being, "
            "location. Which label is the most common?",
            ["abbreviation", "entity", "human being", "location"],
        ),
        ("Classify each ticket as one of: bug, feature request or question.",
         ["bug", "feature request", "question"]),
        ("Is 'refund' or 'delivery' the more frequent topic?", ["refund", "delivery"]),
        ('How many reviews are "positive" and how many "negative"?', ["positive", "negative"]),
        # Answer formats are not options; one quoted phrase is not a choice; apostrophes are
        # not quotes; a colon before prose is not a list.
        ("Give your final answer in the form 'Answer: <number>'. How many lines?", []),
        ("How many lines mention 'timeout'?", []),
        ("What is the ship's captain's name and the crew's?", []),
        ("Note: the text is long, so read it in parts. Who won?", []),
    ],
)  # fmt: skip
def test_loop_named_options(query: str, expected: list[str]) -> None:
    assert named_options(query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # What the records are and what the labels classify goes to the sub-model; the
        # question about all records and the answer format do not.
        (
            "Each line is a support ticket. A ticket belongs to one of: billing, shipping, "
            "other. Which topic is the most common? Give your final answer in the form "
            "'Topic: <topic>'.",
            "Each line is a support ticket. A ticket belongs to one of: billing, shipping, "
            "other.\nWhich label fits this one?",
        ),
        ("Which is more frequent, 'refund' or 'delivery'?", "Which label fits this one?"),
        ("Reviews follow! Rate each: good, bad, mixed. Answer with the count.",
         "Reviews follow! Rate each: good, bad, mixed.\nWhich label fits this one?"),
        # A request about all records is not the sub-model's task either: it names the label
        # the request is about, and a small sub-model then gives that label to most records.
        ("Each ticket is one of these kinds: bug, feature request, question. Find every user "
         "with at least one 'bug' ticket. List them one per line. If no user qualifies, "
         "answer 'none'.",
         "Each ticket is one of these kinds: bug, feature request, question.\n"
         "Which label fits this one?"),
        ("Each row is a sentence. Classify each as positive, negative or neutral. Count the "
         "positive ones.",
         "Each row is a sentence. Classify each as positive, negative or neutral.\n"
         "Which label fits this one?"),
    ],
)  # fmt: skip
def test_loop_labelling_instruction_carries_the_querys_description(
    query: str, expected: str
) -> None:
    assert labelling_instruction(query) == expected


def test_loop_labelling_instruction_is_bounded() -> None:
    instruction = labelling_instruction("The records are tickets. " * 200 + "Which is top?")
    assert len(instruction) < 900 and instruction.endswith(" ...\nWhich label fits this one?")


def test_loop_records_are_short_lines_or_list_items() -> None:
    rows = "".join(f"2024-05-0{i} || user {i} || Where is the nearest station?\n" for i in range(9))
    assert record_lines(rows)
    assert not record_lines(ESSAY[:400])  # prose: one long line
    assert not record_lines("a\nb\n")  # too few lines to tell


def test_loop_guessed_count_over_labelled_records_asks_for_labels_then_counts() -> None:
    # Measured (issue 14, OOLONG): the root printed the line count, then typed "1" as the
    # number of lines with a label the question named. A search cannot tell labels apart.
    query = (
        "Each line is a question of one of these kinds: person, place, number. "
        "How many lines ask about a place?"
    )
    rows = "".join(f"Date: Jan {i:02} || User: {i} || Who wrote Hamlet ?\n" for i in range(1, 30))
    info = Info("text", "str", 90_000, None, rows[:500])
    watcher = Watcher.for_context(query, info)
    watcher.after_cell("print(len(context.split('\\n')))", "2001", None)
    nudge = watcher.unsupported_answer("1", "answer['content'] = '1'\nanswer['ready'] = True")
    assert nudge is not None and nudge.reason == "unsupported_answer"
    assert 'items = [line for line in context.split("\\n") if line.strip()]' in nudge.message
    assert "choices=['person', 'place', 'number']" in nudge.message
    code = nudge.message.split("```repl\n")[1].split("```")[0]
    compile(code, "<advice>", "exec")  # the advice is code the model can run as it is
    # A list context is its own records, whatever the answer's length.
    listed = Watcher.for_context(
        "Is each review 'positive' or 'negative'? Which is more common?",
        Info("jsonl", "list", 90_000, 900, '[{"id": 1, "text": "cold soup"}]'),
    )
    nudge = listed.unsupported_answer("negative", "answer['content'] = 'negative'")
    assert nudge is not None and "items = list(context)" in nudge.message
    assert "choices=['positive', 'negative']" in nudge.message
    # Prose, or a question that names no options: the search advice as before.
    prose = Watcher.for_context(query, Info("text", "str", 90_000, None, ESSAY[:400]))
    nudge = prose.unsupported_answer("1", "answer['content'] = '1'")
    assert nudge is not None and "llm_map" not in nudge.message
    plain = Watcher.for_context("How many lines ask about a place?", info)
    nudge = plain.unsupported_answer("1", "answer['content'] = '1'")
    assert nudge is not None and "llm_map" not in nudge.message


def test_loop_every_advice_over_labelled_records_suggests_labelling() -> None:
    # Measured (issue 14, OOLONG): after search("label") found nothing, the advice to search
    # for 'Instance' (a word on every line) led nowhere. Labels are judged, not searched.
    query = "Each ticket is one of: bug, feature request, question. Which is the most common?"
    rows = "".join(f"#{i} | user {i} | The export button does nothing\n" for i in range(40))
    watcher = Watcher.for_context(query, Info("text", "str", 80_000, None, rows[:600]))
    failed = watcher.after_cell("print(search('label'))", "search('label'): no match", None)
    assert failed is not None and failed.reason == "failed_search"
    assert "choices=['bug', 'feature request', 'question']" in failed.message
    assert watcher.repeated_reply("Next.\n```repl\nprint(1)\n```") is None
    repeat = watcher.repeated_reply("Next.\n```repl\nprint(1)\n```")
    assert repeat is not None and "llm_map(items" in repeat.message
    sliced = watcher.after_cell("print(context[:300])", rows[:300], None)
    assert sliced is not None and "llm_map(items" in sliced.message
    # The same question over prose keeps the search advice.
    prose = Watcher.for_context(query, Info("text", "str", 80_000, None, ESSAY[:400]))
    failed = prose.after_cell("print(search('label'))", "search('label'): no match", None)
    assert failed is not None and "llm_map" not in failed.message
    # Once the labelling ran (its labels are in the kernel), a failed cell is pointed at the
    # records of the option asked about, not at the labelling again (seen on OOLONG-Pairs).
    asked = "Each ticket is one of: bug, feature request, question. Which users filed a 'bug'?"
    done = Watcher.for_context(asked, Info("text", "str", 80_000, None, rows[:600]))
    assert done.after_cell("labelled_items = [f'{i}' for i in items]", "", None) is None
    error = "NameError: name 'combinations' is not defined"
    code = (
        "users = [l.split(' | ')[1] for l in context.split('\\n')]\nprint(combinations(users, 2))"
    )
    failed = done.after_cell(code, error, error)
    assert failed is not None and failed.reason == "failed_search"
    assert "llm_map" not in failed.message
    assert "line.endswith(' || Label: bug')]" in failed.message


def test_loop_records_are_told_by_the_line_count_the_kernel_printed() -> None:
    # OOLONG's lines are ~100 characters: a 400-character preview holds three of them.
    query = "Each line is one of these kinds: person, place, number. Which kind is most common?"
    line = "Date: Oct 12, 2020 || User: 22149 || Instance: What is the capital of Ethiopia ?\n"
    info = Info("text", "str", 26_000, None, (line * 5)[:150])
    watcher = Watcher.for_context(query, info)
    assert watcher.labelling_code() is None  # one whole line in the preview: cannot tell
    watcher.lines = parse_lines("277\n", info.length_chars)
    assert watcher.lines == 277 and watcher.labelling_code() is not None
    # Prose: few, long lines (paragraphs), whatever the preview looks like.
    prose = Watcher.for_context(query, Info("text", "str", 80_000, None, line * 5))
    prose.lines = 12
    assert prose.labelling_code() is None
    # The count is the sandbox's output: only a count the text can have is taken.
    for hostile in ("-5", "0", "26002", "1e9", "12 lines", "", "9" * 40):
        assert parse_lines(hostile, 26_000) is None, hostile


def test_loop_a_partly_copied_step_is_sent_back_whole() -> None:
    # Measured (issue 14, OOLONG): the root copied the labelling step's last two lines (the
    # counting) without the lines that make `items` and `labels`, got a NameError, then
    # guessed. The tickets and labels here are made up.
    query = "Each ticket is one of: bug, feature request, question. Which is the most common?"
    rows = "".join(f"#{i} | user {i} | The export button does nothing\n" for i in range(40))
    watcher = Watcher.for_context(query, Info("text", "str", 80_000, None, rows[:600]))
    step = watcher.next_step()[1]
    tail = "\n".join(step.splitlines()[-2:])
    nudge = watcher.after_cell(tail, "", "NameError: name 'items' is not defined")
    assert nudge is not None and nudge.reason == "partial_copy"
    assert "`items` is not defined" in nudge.message and f"```repl\n{step}\n```" in nudge.message
    # A NameError in the model's own code, or for a name the step does not define, is not.
    own = watcher.after_cell("print(total)", "", "NameError: name 'total' is not defined")
    assert own is None or own.reason != "partial_copy"
    other = watcher.after_cell(tail, "", "NameError: name 'Counter' is not defined")
    assert other is None or other.reason != "partial_copy"
    # The same for the search a files context gets.
    info = Info("directory", "dict", 9000, 3, "files: a.py, b.py, c.py")
    files = Watcher.for_context("Which function parses the invoice dates?", info)
    assert files.after_cell("print(hits)", "", "NameError: name 'hits' is not defined") is None


def test_loop_an_answer_about_unwritten_labels_before_any_sub_model_is_checked() -> None:
    # Measured (issue 14, OOLONG, 1.5B root): a user id read in a 300-character slice answered
    # "which user has the most 'entity' questions", and a count of every line answered a
    # count of one label; both stood, since the slice showed the id and code computed the
    # count. The records and labels here are made up.
    query = (
        "Each ticket is one of these kinds: bug, feature request, question. "
        "Which user filed the most bug tickets? Answer as 'User: <id>'."
    )
    rows = "".join(f"#{i} | user {100 + i} | The export button does nothing\n" for i in range(40))
    info = Info("text", "str", 80_000, None, rows[:600])
    sliced = Watcher.for_context(query, info)
    sliced.after_cell("print(context[:300])", rows[:300], None)
    nudge = sliced.unsupported_answer("User: 101", "answer['content'] = 'User: 101'")
    assert nudge is not None and nudge.reason == "unsupported_answer"
    assert "judged by a sub-model" in nudge.message and "llm_map(items" in nudge.message
    computed = Watcher.for_context(query, info)
    count = "answer['content'] = str(len(context.split('\\n')))\nanswer['ready'] = True"
    nudge = computed.unsupported_answer("40", count)
    assert nudge is not None and "judged by a sub-model" in nudge.message
    # Asked once per run, as every doubt.
    assert computed.unsupported_answer("40", count) is None
    # After a sub-model judged the records, or in the cell that asks one, answers stand.
    labelled = Watcher.for_context(query, info)
    labelled.after_cell("labels = llm_map(items, 'Which kind?', choices=['bug', 'question'])",
                        "", None)  # fmt: skip
    assert labelled.unsupported_answer("40", count) is None
    both = Watcher.for_context(query, info)
    assert both.unsupported_answer("40", "labels = llm_map(items, 'Kind?')\n" + count) is None
    # Code that looked for an option's words itself is judged as before (computed: stands).
    searched = Watcher.for_context(query, info)
    assert searched.unsupported_answer("3", "answer['content'] = str(context.count('bug'))") is None
    # Records that carry the labels as words: a count by code is reading, not judging.
    carried = "".join(f"#{i} | {('bug', 'question')[i % 2]} | user {i}\n" for i in range(40))
    written = Watcher.for_context(query, Info("text", "str", 80_000, None, carried[:600]))
    assert written.unsupported_answer("40", count) is None
    assert options_written(carried[:600], ["bug", "feature request", "question"])
    assert not options_written(rows[:600], ["bug", "feature request", "question"])


def test_loop_a_count_of_every_record_is_doubted_once_over_records_with_named_options() -> None:
    query = "Each ticket is one of these kinds: bug, feature request, question. How many bugs?"
    rows = "".join(f"#{i} | user {100 + i} | The export button does nothing\n" for i in range(40))
    info = Info("text", "str", len(rows), None, rows[:600])
    watcher = Watcher.for_context(query, info)
    watcher.lines = 41  # 40 records and the empty line after the last newline
    watcher.sub_calls = True  # the labelling ran
    computed = "answer['content'] = str(n)\nanswer['ready'] = True"
    for total in ("40", "41", "Bugs: 40"):
        fresh = Watcher.for_context(query, info)
        fresh.lines, fresh.sub_calls = 41, True
        nudge = fresh.unsupported_answer(total, computed)
        assert nudge is not None and "number of all the records" in nudge.message, total
        assert "labels.count('bug')" in nudge.message
    # Any other count stands; the doubt is sent once.
    assert watcher.unsupported_answer("12", computed) is None
    assert watcher.unsupported_answer("40", computed) is not None
    assert watcher.unsupported_answer("40", computed) is None
    # No named options, or a context that is not records: no such doubt.
    plain = Watcher.for_context("How many tickets?", info)
    plain.lines, plain.sub_calls = 41, True
    assert plain.unsupported_answer("40", computed) is None


def test_loop_an_answer_from_looking_for_an_absent_label_after_the_labelling_goes_back() -> None:
    # Seen on OOLONG-Pairs (issue 14): after the labelling step printed the labels per user,
    # the 1.5B root rebound `labels` and filled it by testing each line for a label's words,
    # which no line holds, and answered 'none'.
    query = (
        "Each line is one of these kinds: bug, feature request, question. Find all pairs of "
        "users who both filed a feature request."
    )
    rows = "".join(
        f"Day {i} || User: {i % 7} || The export button does nothing\n" for i in range(40)
    )
    info = Info("text", "str", len(rows), None, rows[:600])
    misread = (
        "labels = {}\nfor line in context.splitlines():\n"
        "    if 'feature request' in line:\n        labels[line] = 1\n"
        "answer['content'] = 'none' if not labels else str(labels)\nanswer['ready'] = True"
    )

    def labelled(hits: dict[str, int]) -> Watcher:
        watcher = Watcher.for_context(query, info)
        watcher.sub_calls, watcher.option_hits = True, hits
        return watcher

    absent = {"bug": 0, "feature request": 0, "question": 0}
    watcher = labelled(absent)
    nudge = watcher.unsupported_answer("none", misread)
    assert nudge is not None and "looks for 'feature request'" in nudge.message
    assert "`per_field` (for each User, its labels' counts)" in nudge.message
    assert watcher.unsupported_answer("none", misread) is None  # once
    # Reading the labels the sub-model gave stands; so does looking for an option the
    # records hold, or one the probe did not count.
    assert "`with_label[label]` (the User values with at least one" in nudge.message
    reads = "pairs = [u for u, row in per_field.items() if row.get('feature request')]\n"
    assert labelled(absent).unsupported_answer("none", reads + "answer['ready'] = True") is None
    users = "users = with_label.get('feature request', [])\nanswer['content'] = str(users)\n"
    assert labelled(absent).unsupported_answer("none", users + "answer['ready'] = True") is None
    held = {**absent, "feature request": 3}
    assert labelled(held).unsupported_answer("none", misread) is None
    assert labelled({}).unsupported_answer("none", misread) is None
    # Held by a few of the 40 records, by chance ("What is the abbreviation of ..." holds
    # 'abbreviation'), the option is still not their label; held by half, it may be.
    counted = labelled(held)
    counted.lines = 40
    chance = counted.unsupported_answer("none", misread)
    assert chance is not None and "occur only 3 times in the records, by chance" in chance.message
    column = labelled({**absent, "feature request": 20})
    column.lines = 40
    assert column.unsupported_answer("none", misread) is None
    # Typing a label as the answer is not looking for it in the records.
    typed = "answer['content'] = 'feature request'\nanswer['ready'] = True"
    doubt = labelled(absent).unsupported_answer("feature request", typed)
    assert doubt is None or "looks for" not in doubt.message  # (a typed guess's own doubt)


def test_the_grouping_field_is_the_one_the_questions_own_words_name() -> None:
    # Seen on OOLONG-Pairs (issue 14): the query quotes the records' form, which names every
    # field; five preview lines with four distinct dates and five users grouped by date.
    rows = "".join(
        f"Date: {day}, 2021 || User: {user} || Instance: Where is the tallest tower ?\n"
        for day, user in [
            ("Feb 28", 3867),
            ("Mar 04", 4220),
            ("Mar 04", 2425),
            ("Mar 06", 2946),
            ("Mar 09", 6811),
        ]
    )
    form = "Each line has the form 'Date: <date> || User: <user id> || Instance: <question>'."
    assert grouping_field(f"{form} Find all pairs of users who asked about a place.", rows) == (
        "User"
    )
    assert grouping_field(f"{form} On which dates was a place asked about?", rows) == "Date"
    # Named only inside the quoted form: of those, the one with the fewest distinct values;
    # the long text field is never a grouping.
    assert grouping_field(f"{form} How many lines are about a place?", rows) == "Date"
    assert grouping_field("Which user asked about a place?", rows) == "User"
    assert grouping_field("Which instance is about a place?", rows) is None
    assert grouping_field("Which user asked about a place?", rows.splitlines()[0]) is None


def test_code_over_the_labelled_records_changes_only_the_names_of_the_records() -> None:
    code = (
        "rows = [l for l in context.split('\\n') if 'person' in l]  # context\n"
        "more = [i for i in items if 'context' in i]\nprint(obj.context, len(rows + more))"
    )
    assert over_labelled(code) == (
        "rows = [l for l in labelled.split('\\n') if 'person' in l]  # context\n"
        "more = [i for i in labelled_items if 'context' in i]\nprint(obj.context, len(rows + more))"
    )
    keyword = "print(search('person', context=items))"
    assert over_labelled(keyword) == "print(search('person', context=labelled_items))"
    assert over_labelled("print(len(labels))") is None
    assert over_labelled("x = '") is None  # does not tokenize


def test_the_option_asked_about_is_the_one_named_again() -> None:
    listed = "Each line is one of these labels: bug, feature request, question."
    assert asked_option(f"{listed} Find pairs of users who both filed a 'question'.") == (
        "question"
    )
    both = f"{listed} Users with a 'feature request' and no 'bug'?"
    assert asked_option(both) == "feature request"
    assert asked_option(f"{listed} Which label is the most common?") is None
    assert asked_option("How many lines?") is None


def test_after_the_labelling_a_pairs_question_steps_to_pairs_of_the_kept_values() -> None:
    # The step's code runs over what the labelling bound (`per_field`) with the kernel's
    # `pairs_of`; a question that asks for no pairs keeps the step to the label's records.
    rows = "".join(f"Day {i} || User: {u} || Who is Ada ?\n" for i, u in enumerate([5, 40, 7]))
    listed = "Each line asks about one of these: person, place, thing."
    info = Info("text", "str", len(rows), None, rows)
    pairs = Watcher.for_context(
        f"{listed} Find all pairs of users who asked about a 'place'.", info
    )
    pairs.labelled = True
    how, code = pairs.next_step()
    assert "check it against the question" in how and "pairs_of(keep)" in code
    helpers = load_module("rlm_helpers_for_nudges", HELPERS_FILE)
    per_field = {"5": {"place": 2}, "40": {"place": 1, "thing": 1}, "7": {"thing": 3}, "9": {}}
    printed: list[str] = []
    namespace = {"per_field": per_field, "pairs_of": helpers.pairs_of}
    namespace["print"] = lambda *args: printed.append(" ".join(map(str, args)))
    exec(code, namespace)
    assert printed == [
        "2 User values pass it (keep): ['40', '5']",
        "1 pairs (found); answer['content'] = str(found) answers with all of them:",
        "(5, 40)",
    ]
    rows_step = Watcher.for_context(f"{listed} Which users asked about a 'place'?", info)
    rows_step.labelled = True
    assert "pairs_of" not in rows_step.next_step()[1]
    assert "LABEL" not in rows_step.next_step()[1] and "endswith" in rows_step.next_step()[1]


def test_a_root_stuck_after_the_labelling_gets_each_step_after_it_once() -> None:
    # The labels' counts again, then the records of the label asked about; for a question
    # about pairs, the pairs of the kept values first (seen on OOLONG-Pairs, item 8: the
    # pairs at the end of a long table, twice, and the 1.5B root answered 'none'). Never the
    # labelling again, never a word search.
    rows = "".join(f"Day {i} || User: {u} || Who is Ada ?\n" for i, u in enumerate([5, 40, 7]))
    listed = "Each line asks about one of these: person, place, thing."
    info = Info("text", "str", len(rows), None, rows)
    ran_steps = {}
    for ask in (
        "Find all pairs of users who asked about a 'place'.",
        "Which users asked about a 'place'?",
        "Which is the most common?",
    ):
        watcher = Watcher.for_context(f"{listed} {ask}", info)
        watcher.repeats = 2
        labelling = watcher.labelling_code()
        assert labelling is not None
        ran = {labelling}
        watcher.after_cell(labelling, "3 items", None)
        steps: list[str] = []
        while (step := watcher.auto_step(ran)) is not None:
            steps.append(step)
            ran.add(step)
        assert all("llm_map" not in step and "print(search(" not in step for step in steps)
        ran_steps[ask] = steps
    pairs, users, common = ran_steps.values()
    assert len(pairs) == 2 and pairs[0].startswith("keep = ") and "pairs_of(keep)" in pairs[0]
    assert pairs[1].startswith("if isinstance(globals().get('labels')")  # the counts again
    assert len(users) == 2 and users[0].startswith("if isinstance(globals().get('labels')")
    assert "endswith(' || Label: place')" in users[1]  # then the records labelled 'place'
    assert len(common) == 1 and common[0].startswith("if isinstance(")  # no label asked about


def test_an_answer_with_no_pair_below_printed_pairs_goes_back_once() -> None:
    # Seen on OOLONG-Pairs with the 1.5B root: below the pairs the engine's step printed, it
    # answered the users they pair (`str(keep)`), or resent 'none' until the turn limit.
    rows = "".join(f"Day {i} || User: {u} || Who is Ada ?\n" for i, u in enumerate([5, 40, 7]))
    info = Info("text", "str", len(rows), None, rows)
    query = "Each line asks about one of these: person, place, thing. Find all pairs of users "
    watcher = Watcher.for_context(query + "who asked about a 'place'.", info)
    typed = "answer['content'] = 'none'\nanswer['ready'] = True"
    assert not watcher.resent_answer_shown(typed)  # nothing printed pairs yet
    step = "found = pairs_of(keep)\nprint(len(found), 'pairs:')\nprint(found)"
    watcher.after_cell(step, "3 pairs:\n(5, 7)\n(5, 40)\n(7, 40)", None)
    assert watcher.resent_answer_shown(typed)  # a resent 'none' runs, to be sent back
    doubt = watcher.unsupported_answer("['5', '7', '40']", "answer['content'] = str(keep)")
    assert doubt is not None and doubt.reason == "unpaired_answer"
    assert "printed 3 of them" in doubt.message and "str(found)" in doubt.message
    # How to insist, truthfully: the same reply again is a repeat and is not run.
    assert "sent again unchanged is not run" in doubt.message
    assert watcher.unsupported_answer("none", typed) is None  # once: the root may insist
    assert not watcher.resent_answer_shown(typed)
    # A question that asks for no pairs is never sent back for it.
    users = Watcher.for_context(query.replace("pairs of ", "") + "who asked about a 'place'.", info)
    users.after_cell(step, "3 pairs:\n(5, 7)\n(5, 40)\n(7, 40)", None)
    nudge = users.unsupported_answer("['5', '7', '40']", "answer['content'] = str(keep)")
    assert nudge is None or nudge.reason != "unpaired_answer"
