"""The self-correcting part of the root loop: spot the ways weak models lose runs, and steer.

Measured with a 1.5B model (issue 14): it copies the context preview into a string literal and
re-runs it, repeats the same reply under greedy decoding until the turn limit, gives up after a
search that raised or found nothing, reads one 200-character slice and guesses, and answers
right after listing file names without opening any file. :class:`Watcher` keeps what a run
has seen and returns a :class:`Nudge` (a reason and the message the model gets) at each of
these points; the loop writes every nudge as a ``nudge`` trajectory event. Nothing here is
specific to a profile or to a context type (text, list, dict of files).
"""

from __future__ import annotations

import ast
import io
import json
import re
import tokenize
from dataclasses import dataclass, field
from typing import Any

from engine.rlm.conditions import PairTest, pair_test
from engine.rlm.dates import date_range, records_dated
from engine.rlm.listing import PAIRS_WORD as _PAIRS
from engine.rlm.listing import QUOTED_SPAN as _QUOTED_SPAN
from engine.rlm.listing import (
    PartialListing,
    asks_for_many,
    asks_for_pairs,
    partial_listing,
    unpaired_answer,
)
from engine.rlm.listing import normal_space as _normal
from engine.truncate import MARKER_PATTERN

# A string literal at least this long that shares a run of this many characters with the
# context preview is the preview copied into code, not a search term.
LITERAL_MIN_CHARS = 120
LITERAL_SHARED_RUN = 60
# The search-word probe: how many words of the query it counts, and where it stops counting.
PROBE_TERMS = 6
PROBE_MAX_HITS = 1_000
# After this many repeated replies the loop stops asking: it runs the suggested search itself
# and shows the model its output (a model stuck on one reply under varied sampling too).
AUTO_STEP_AFTER = 2
# The labelling step (Watcher.labelling_code) is run for a stuck model only over at most this
# many records: one sub-call per ~10 of them, within the run's sub-call and cost budgets.
AUTO_LABEL_MAX_RECORDS = 2_000
# Sampling used after a repeated reply when decoding was greedy: varied, but reproducible.
VARIED_TEMPERATURE = 0.7
VARIED_SEED_BASE = 1_000

_SEARCH_CALL = re.compile(
    r"\b(search|re\.(search|findall|finditer|match)|\.find|\.index)\s*\(|\bin\s+context\b"
)
_EMPTY_OUTPUT = re.compile(r"^\s*(\[\]|\(\)|\{\}|None|False|-1|0|''|\"\"|set\(\))?\s*$")
_NAME_ERROR = re.compile(r"NameError: name '(\w+)' is not defined")
# "not found word for word" / "not found as written" head a search's hits found another way.
_NO_MATCH = re.compile(
    r"no match|not found(?! word for word| as written)|nothing found", re.IGNORECASE
)
_SLICE = re.compile(r"\bcontext\s*\[\s*(-?\d*)\s*:\s*(-?\d*)\s*\]")
_STOPWORD_TEXT = (
    "the a an of for in on at to is are was were be what which who whom whose when where why "
    "how does do did mentioned provided text context answer only with and or from that this "
    "these those it its by as about please give find tell me number file folder function "
    "defines define special"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
# "one of these labels: a, b, c" (a list after a colon) and 'quoted' or "quoted" phrases: the
# options a question names. A quoted phrase with a colon or angle brackets is an answer format
# ('Label: <label>'), not an option.
_COLON_LIST = re.compile(r":\s*([^:.?!\n]+)")
_LIST_SEP = re.compile(r"\s*,\s*(?:or\s+|and\s+)?|\s+or\s+")
_QUOTED = re.compile(r"(?<![\w'])'([^'\n]{2,60})'(?!\w)|\"([^\"\n]{2,60})\"")
# Any quoted span of a query, and any "<placeholder>" of a quoted form.
_PAIRS_OF = re.compile(r"(?<!\w)pairs?\s+of\s+(\w+)", re.I)
_FORMAT_CHARS = re.compile(r"[:<>{}]")
# The query's sentences, and those that ask for an answer's form ("Give your final answer in
# the form ..."), which a sub-model labelling one record must not follow.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_ANSWER_FORMAT = re.compile(
    r"^(answer|respond|reply)\b|\b(final answer|your answer|in the form|in the format)\b", re.I
)
# A sentence asking for the task's result, not describing the records: it starts with a verb
# of a request about all records ("Find all pairs of users where both have a 'human being'
# question", "List every qualifying pair") or says what to answer when ("If no pair
# qualifies, answer 'none'"). Labelling verbs ("Rate each", "Classify") are not in the list.
_TASK_REQUEST = re.compile(
    r"^(find|list|count|give|return|determine|identify|compute|calculate|tell|name|output|"
    r"report|provide|select|choose|state|write|print|show|rank|sort|compare|estimate|"
    r"summari[sz]e|explain)\b|^if\b.*\b(answer|reply|respond|return|say|write|output)\b",
    re.I,
)
# The names Watcher.labelling_code binds to the sub-model's labels.
_LABEL_NAMES = frozenset({"labels", "per_field", "with_label", "labelled", "labelled_items"})
# A field that groups records has short values (a user id, a name), not the labelled text.
FIELD_VALUE_MAX_CHARS = 24
# A field's name in a record: "User: 44161", "user_id=7" at the start or after a separator.
_FIELD_NAME = re.compile(r"(?:^|\|\|?|[,;\t])\s*([A-Za-z][\w ]{0,19}?)\s*[:=]\s")
#: At most this much of the query describes the records to the labelling sub-model.
LABEL_DESCRIPTION_CHARS = 800
# What the labelling step appends to each record in ``labelled``, and what it says of it.
LABEL_SUFFIX = " || Label: "
LABELLED_NOTE = (
    "labelled (a text) and labelled_items (a list): the records, each with "
    f"'{LABEL_SUFFIX.strip()} <its label>' written at its end"
)
# What advice says when it suggests labelling every record (Watcher.labelling_code).
LABEL_STEP = (
    "label every record with a sub-model and count with code (`labels[i]` is the label of "
    "`items[i]`, so you can also count by other fields of an item)"
)
# A text context is a list of records when it has at least this many lines and they are this
# short on average (log lines, rows, one data point per line). Counted in the kernel when it
# can be (LINES_PROBE); otherwise judged from the preview's complete lines, of which there are
# few (a preview is a few hundred characters).
RECORD_MIN_LINES = 5
RECORD_MIN_PREVIEW_LINES = 3
RECORD_MAX_CHARS = 400
# A question about where code defines something ("which file defines the function that ...").
_ASKS_DEFINITION = re.compile(
    r"\b(defin\w*|declar\w*|implement\w*|functions?|methods?|class(es)?)\b", re.IGNORECASE
)
# What each suggested search of a dict of files shows: a few short hits, so that two or three
# of them fit the output a small profile shows (4,000 characters).
FILE_SEARCH_HITS = 4
FILE_SEARCH_WINDOW = 100
#: A cell printing how many lines a text context has (nothing is allocated: one count).
LINES_PROBE = "print(context.count('\\n') + 1 if isinstance(context, str) else -1)"
_NAMES_ONLY = frozenset({"len", "list", "sorted", "set", "type", "tuple", "print", "enumerate"})
_KEY_METHODS = frozenset({"keys"})
_SUB_MODEL_HELPERS = ("llm_query", "llm_batch", "llm_map", "rlm_query")
#: The reasons of nudges that send an answer back as doubtful (the loop unsets it and makes the
#: nudge the model's next step).
DOUBT_REASONS = frozenset({"unsupported_answer", "partial_listing", "unpaired_answer"})
# How much of the cell that printed a listing a doubt quotes.
LISTING_CODE_CHARS = 400
_CONTENT_HELPERS = frozenset(
    {"search", "llm_query", "llm_batch", "llm_map", "rlm_query", "llm_query_batched"}
)


@dataclass(frozen=True)
class Nudge:
    """One intervention: why (``reason``, for the trajectory) and what the model is told."""

    reason: str
    message: str


def key_terms(query: str, limit: int = 3, hits: dict[str, int] | None = None) -> list[str]:
    """Words of ``query`` worth searching for, best first.

    With ``hits`` (how often each word occurs in the context, see :func:`probe_code`), words
    the context holds come first, the rarest first: a word that occurs once or twice leads to
    the passage the question is about, one that is absent leads nowhere. Otherwise (and among
    equals) distinctive words come first (digits, hyphens, capitals), then longer ones.
    """
    words = re.findall(r"[A-Za-z0-9_][\w.-]*[\w]|\w", query)
    seen: list[str] = []
    for word in words:
        if word.lower() in _STOPWORDS or len(word) < 3 or word in seen:
            continue
        seen.append(word)

    def rank(word: str) -> tuple[int, int, int]:
        special = any(c.isdigit() or c in "-_." for c in word) or word[:1].isupper()
        found = (hits or {}).get(word)
        # Unknown counts (no probe) rank as "present, frequent": the old order decides.
        order = PROBE_MAX_HITS + 1 if found is None else (found if found else PROBE_MAX_HITS + 2)
        return (order, 0 if special else 1, -len(word))

    return sorted(seen, key=rank)[:limit]


def named_options(query: str) -> list[str]:
    """The options ``query`` names, in order: a list after a colon ("belongs to one of these
    labels: abbreviation, entity, location") or else two or more quoted phrases; [] if none.

    These are what a judgement of each record chooses from (see :meth:`Watcher.
    unsupported_answer`); a question that names no options gets no such advice.
    """
    for match in _COLON_LIST.finditer(query):
        parts = [p.strip(" '\"") for p in _LIST_SEP.split(match.group(1).strip())]
        parts = [p for p in parts if p]
        if len(parts) >= 3 and all(len(p.split()) <= 5 for p in parts):
            return list(dict.fromkeys(parts))
    phrases = [a or b for a, b in _QUOTED.findall(query)]
    options = list(dict.fromkeys(p.strip() for p in phrases if not _FORMAT_CHARS.search(p)))
    return options if len(options) >= 2 else []


def labelling_instruction(query: str) -> str:
    """The instruction for labelling one record: the query's statements (what the records are
    and what the options mean), without its questions, requests and answer-format requests,
    then the ask.

    A sub-model sees one pack of records and never the question: told only "which label fits",
    it does not know what the labels classify. Told the request ("find the users with a
    'human being' question"), the 1.5B sub-model labelled 146 of 270 OOLONG-Pairs records
    'human being'.
    """
    kept = [
        sentence
        for sentence in _SENTENCE_END.split(query.strip())
        if sentence.strip()
        and not sentence.rstrip().endswith("?")
        and not _ANSWER_FORMAT.search(sentence.strip())
        and not _TASK_REQUEST.search(sentence.strip())
    ]
    described = " ".join(kept)
    if len(described) > LABEL_DESCRIPTION_CHARS:
        described = described[:LABEL_DESCRIPTION_CHARS].rsplit(" ", 1)[0] + " ..."
    ask = "Which label fits this one?"
    return f"{described}\n{ask}" if described else ask


def asked_option(query: str) -> str | None:
    """The option of :func:`named_options` that ``query`` names again after listing it (the
    one its question is about), the earliest such; None if it names none again."""
    again: list[tuple[int, str]] = []
    for option in named_options(query):
        found = list(_named(option).finditer(query))
        if len(found) >= 2:
            again.append((found[1].start(), option))
    return min(again)[1] if again else None


def complete_lines(preview: str) -> list[str]:
    """The non-blank lines of ``preview`` but its last, which the preview may have cut."""
    return [line for line in preview.split("\n")[:-1] if line.strip()]


def record_lines(preview: str) -> bool:
    """Whether a text whose beginning is ``preview`` looks like one record per line."""
    lines = complete_lines(preview)
    if len(lines) < RECORD_MIN_PREVIEW_LINES:
        return False
    return sum(len(line) for line in lines) / len(lines) <= RECORD_MAX_CHARS


def parse_lines(output: str, length: int) -> int | None:
    """The line count a :data:`LINES_PROBE` cell printed, or None; untrusted output: only a
    count a text of ``length`` characters can have is taken."""
    text = output.strip()
    if not text.isdigit() or len(text) > 20:
        return None
    count = int(text)
    return count if 1 <= count <= length + 1 else None


def probe_code(query: str) -> str | None:
    """A cell that prints, as JSON, how often each candidate search word of ``query`` occurs
    in ``context`` (capped at :data:`PROBE_MAX_HITS`); None when the query has no such word.

    It defines no variable, so the model's namespace is as it was.
    """
    terms = key_terms(query, limit=PROBE_TERMS)
    if not terms:
        return None
    return (
        "print(__import__('json').dumps({t: len(search(t, window=0, "
        f"max_hits={PROBE_MAX_HITS})) for t in {terms!r}}}))"
    )


def options_probe_code(query: str) -> str | None:
    """A cell that prints, as JSON, how often each option ``query`` names occurs in
    ``context`` as written (whole words, any case; capped at :data:`PROBE_MAX_HITS`); None
    when the query names no options. It defines no variable."""
    options = named_options(query)
    if not options:
        return None
    return (
        "print(__import__('json').dumps({o: len(search(r'(?<!\\w)' + __import__('re')."
        "escape(o) + r'(?!\\w)', regex=True, window=0, "
        f"max_hits={PROBE_MAX_HITS})) for o in {options!r}}}))"
    )


def parse_options_probe(output: str, query: str) -> dict[str, int]:
    """The counts an :func:`options_probe_code` cell printed; anything else is ignored."""
    return _parse_counts(output, set(named_options(query)))


def parse_probe(output: str, query: str) -> dict[str, int]:
    """The counts a :func:`probe_code` cell printed; untrusted output: anything else is ignored."""
    return _parse_counts(output, set(key_terms(query, limit=PROBE_TERMS)))


def _parse_counts(output: str, allowed: set[str]) -> dict[str, int]:
    """Counts of the ``allowed`` keys in a probe's JSON output, each capped; the sandbox's
    output is untrusted, so any other key, value or shape is ignored."""
    try:
        data = json.loads(output.strip()[:10_000])
    except (ValueError, RecursionError):  # 10,000 characters can nest 5,000 deep
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        k: min(v, PROBE_MAX_HITS)
        for k, v in data.items()
        if k in allowed and isinstance(v, int) and not isinstance(v, bool) and v >= 0
    }


def literal_texts(code: str) -> list[str]:
    """String constants in ``code``, and the source of list/dict/tuple/set displays."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return []
    texts: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            texts.append(node.value)
        elif isinstance(node, ast.List | ast.Dict | ast.Tuple | ast.Set):
            texts.append(ast.get_source_segment(code, node) or "")
    return texts


def copies_preview(code: str, preview: str) -> bool:
    """Whether ``code`` holds a long literal (a string, or a list/dict written out) copied
    from the context ``preview``."""
    if len(preview) < LITERAL_SHARED_RUN:
        return False
    step = LITERAL_SHARED_RUN // 2
    for literal in literal_texts(code):
        if len(literal) < LITERAL_MIN_CHARS:
            continue
        for start in range(0, max(1, len(literal) - LITERAL_SHARED_RUN + 1), step):
            if literal[start : start + LITERAL_SHARED_RUN] in preview:
                return True
    return False


def reads_content(code: str, kind: str) -> bool:
    """Whether ``code`` looks at the content of ``context`` (not just its size or names).

    Listing a dict's keys, ``len(context)`` or ``type(context)`` read no content; a slice, a
    subscript, a method such as ``.find``/``.split``/``.values``, passing ``context`` to another
    function, or a helper that reads it (``search``, ``llm_*``) do.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return "context" in code
    parents: dict[int, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[id(child)] = node
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else None
            if name in _CONTENT_HELPERS:
                return True
        if not (isinstance(node, ast.Name) and node.id == "context"):
            continue
        parent = parents.get(id(node))
        if isinstance(parent, ast.Subscript):
            return True
        if isinstance(parent, ast.Attribute):
            if parent.attr not in _KEY_METHODS:
                return True
            continue
        if isinstance(parent, ast.Call) and node in parent.args:
            func = parent.func
            if isinstance(func, ast.Name) and func.id in _NAMES_ONLY:
                # print(context) shows content; list/sorted of a dict only its names.
                if func.id == "print" or (kind != "directory" and func.id in {"list", "tuple"}):
                    return True
                continue
            return True
        if isinstance(parent, ast.comprehension | ast.For) and kind != "directory":
            return True
        if isinstance(parent, ast.Compare) and kind == "text":
            return True
    return False


def _shows(value: str, output: str) -> bool:
    """Whether ``output`` shows ``value`` as a whole token, not inside a longer one.

    A short answer such as "2" occurs inside almost any output ("2001 lines"); only a match
    not glued to other letters or digits counts as the output having shown it.
    """
    pattern = r"(?<![0-9A-Za-z])" + re.escape(_normal(value)) + r"(?![0-9A-Za-z])"
    return re.search(pattern, _normal(output)) is not None


@dataclass
class Watcher:
    """What one run has seen; the loop asks it before and after each cell and on each reply."""

    query: str
    kind: str = "text"  # the context's kind: text, json, jsonl, directory, none
    preview: str = ""
    length: int = 0  # characters (text) or items (list, dict)
    replies: list[str] = field(default_factory=list)
    #: Each output seen, with the code that printed it ("" for the preview).
    seen_output: list[tuple[str, str]] = field(default_factory=list)
    read_content: bool = False
    sub_calls: bool = False
    labelled: bool = False  # the labelling step bound `labelled` in the kernel
    rewrite: str | None = None  # the model's code over `labelled`, offered back once
    repeats: int = 0
    challenged: bool = False
    total_challenged: bool = False  # an answer that counted every record was sent back
    absent_challenged: bool = False  # an answer that looked for an absent label was sent back
    listing_challenged: bool = False  # an answer that was part of a printed listing went back
    pairs_challenged: bool = False  # an answer with no pair, after pairs were printed, went back
    whole_seen: bool = False  # the preview showed the entire context
    last_error: str | None = None  # the exception type of the last cell, if it failed
    term_hits: dict[str, int] = field(default_factory=dict)  # from the probe, if it ran
    option_hits: dict[str, int] = field(default_factory=dict)  # named options, as written
    lines: int | None = None  # a text context's line count, from LINES_PROBE if it ran

    def terms(self, limit: int = 3) -> list[str]:
        """The query's words to suggest searching for, rarest in the context first."""
        return key_terms(self.query, limit, self.term_hits)

    @classmethod
    def for_context(cls, query: str, info: Any) -> Watcher:
        """A watcher for a run over the context described by ``info`` (a ContextInfo or None)."""
        if info is None or getattr(info, "kind", "none") == "none":
            return cls(query, "none")
        items = getattr(info, "items", None)
        length = items if items is not None and info.kind != "text" else info.length_chars
        watcher = cls(query, info.kind, info.preview or "", length or 0)
        # A context the preview showed in full has been read, and the preview is output seen.
        # A partial preview is not: a short value in it ("request 2") would "support" any
        # guess that happens to match it.
        watcher.whole_seen = watcher.read_content = info.length_chars <= len(watcher.preview)
        if watcher.whole_seen:
            watcher.seen_output.append(("", watcher.preview))
        return watcher

    # --- replies -----------------------------------------------------------------------------

    def repeated_reply(self, reply: str) -> Nudge | None:
        """A reply identical to an earlier one: the model is looping."""
        text = _normal(reply)
        repeated = bool(text) and text in self.replies
        self.replies.append(text)
        if not repeated:
            return None
        self.repeats += 1
        return Nudge("repeated_reply", self._repeat_message())

    def _repeat_message(self) -> str:
        how, example = self.next_step()
        return (
            "Your last reply was the same as an earlier one, so it was not run again and it "
            f"would only give the same result. Take a different step now. For example, {how}:"
            f"\n```repl\n{example}\n```\n"
            "If you already have the answer, set answer['content'] and answer['ready'] = True."
        )

    def auto_step(self, already_run: set[str]) -> str | None:
        """The cell the loop runs for a model stuck repeating itself, or None.

        The step the advice suggested (:meth:`next_step`): labelling every record when the
        question names options over at most :data:`AUTO_LABEL_MAX_RECORDS` records, the
        :meth:`file_searches` over a dict of files, else a search for the question's rarest
        word the context holds that has not run yet (each at most once); after the labelling
        ran over records that do not carry their labels, the steps after it, each once
        (:meth:`_after_labelling_steps`) and no search; first of all, the model's own code over
        ``labelled`` when the last doubt offered it; None before :data:`AUTO_STEP_AFTER`
        repeats, or when there is nothing worth searching.
        """
        if self.repeats < AUTO_STEP_AFTER or self.kind == "none":
            return None
        if self.rewrite is not None and self.rewrite not in already_run:
            # The advice was the model's own code over the labelled records; the model
            # resent its code instead (seen on OOLONG-Pairs with the 1.5B root).
            return self.rewrite
        labelling = self.labelling_code()
        records = self.lines if self.kind == "text" else self.length
        if (
            labelling is not None
            and labelling not in already_run
            and records is not None
            and records <= AUTO_LABEL_MAX_RECORDS
        ):
            return labelling
        if (
            labelling is not None
            and labelling in already_run
            and not options_written(self.preview, named_options(self.query))
        ):
            # Over labelled records a word search cannot tell labels apart, and its output
            # would replace what the root had: the steps after the labelling instead, once.
            steps = self._after_labelling_steps()
            return next((code for code in steps if code not in already_run), None)
        files = "\n".join(self.file_searches())
        if files and files not in already_run:
            return files
        for term in self.terms(limit=PROBE_TERMS):
            if self.term_hits.get(term) == 0:
                continue  # the probe found it nowhere: its search shows nothing
            code = f"print(search({term!r}))"
            if code not in already_run:
                return code
        return None

    def _after_labelling_steps(self) -> list[str]:
        """What an auto step runs for a root stuck after the labelling, in order, each once.

        The labels' counts again (:meth:`labels_shown_code`), then the records of the label
        the question asks about; for a question about pairs, the pairs of the values its test
        keeps first (:meth:`_pairs_step`). Seen on OOLONG-Pairs with the 1.5B root: the
        labelling's output ended with the right ten pairs, shown twice, each time below a
        60-row table; the root answered 'none' until its turns ran out. The pairs step's own
        output is those pairs and little else.
        """
        steps = []
        shown = self.labels_shown_code()
        if shown is not None:
            steps.append(shown)
        if self.labelled and asked_option(self.query) is not None:
            _, step = self._labelled_step()
            steps.insert(0 if self._paired_field() is not None else len(steps), step)
        return steps

    def sampling(self, temperature: float | None) -> dict[str, Any]:
        """Sampling overrides for the next call: varied (fixed seed) after a repeat when greedy."""
        if self.repeats and not temperature:
            return {"temperature": VARIED_TEMPERATURE, "seed": VARIED_SEED_BASE + self.repeats}
        return {}

    # --- before a cell -------------------------------------------------------------------------

    def before_cell(self, code: str) -> Nudge | None:
        """A cell that must not run: it re-creates ``context`` from a literal copy."""
        if self.kind == "none" or not copies_preview(code, self.preview):
            return None
        _, example = self.next_step()
        return Nudge(
            "context_literal",
            "[rlm: NOT RUN. This cell writes part of the context into the code as a string. "
            "The context is already loaded: the variable `context` holds all of it "
            f"({self.length:,} {'characters' if self.kind == 'text' else 'items'}), and the "
            "preview you saw is only its beginning. Use `context` directly, e.g.\n"
            f"```repl\n{example}\n```]",
        )

    # --- after a cell --------------------------------------------------------------------------

    def after_cell(self, code: str, output: str, error: str | None) -> Nudge | None:
        """Record what the cell read; a failed search or a small slice gets advice."""
        if reads_content(code, self.kind):
            self.read_content = True
        if _calls_sub_model(code):
            self.sub_calls = True
        if error is None and "labelled_items" in assigned_names(code):
            self.labelled = True
        self.seen_output.append((code, output))
        if self.kind == "none":
            return None
        partial = self._partial_copy(code, error)
        if partial is not None:
            self.last_error = None
            return partial
        same_error = error is not None and self.last_error == error.split(":")[0]
        self.last_error = error.split(":")[0] if error is not None else None
        if same_error and error is not None:
            # Small edits of a failing cell (an index + 1 each turn) fail the same way forever.
            return Nudge("repeated_error", self._error_advice(error))
        searched = bool(_SEARCH_CALL.search(code))
        failed = error is not None or _EMPTY_OUTPUT.match(output) or _NO_MATCH.search(output[:300])
        if searched and failed:
            return Nudge("failed_search", self._search_advice(error))
        cut = MARKER_PATTERN.search(output)
        if cut and not searched:
            return Nudge("output_cut", self._cut_advice(cut.group(1)))
        return self._small_slice(code)

    def _partial_copy(self, code: str, error: str | None) -> Nudge | None:
        """A cell with lines of the suggested step that failed on a name the step defines.

        A 1.5B root copied the last two lines of the labelling step (the counting) without
        the two that make ``items`` and ``labels``, got a NameError, and then guessed.
        """
        missing = _NAME_ERROR.match(error or "")
        if missing is None:
            return None
        step = self.next_step()[1]
        copied = {line.strip() for line in code.splitlines() if line.strip()}
        if not copied & {line.strip() for line in step.splitlines()}:
            return None
        if missing.group(1) not in assigned_names(step):
            return None
        return Nudge(
            "partial_copy",
            f"`{missing.group(1)}` is not defined because that cell is only part of the "
            "suggested code: the lines that define it were left out. Send the whole cell, "
            f"from its first line:\n```repl\n{step}\n```",
        )

    def _error_advice(self, error: str) -> str:
        how, example = self.next_step()
        return (
            f"This cell failed the same way as the one before ({error[:120]}). Changing a "
            f"number or a detail of it will not help. Take a different approach: {how}:"
            f"\n```repl\n{example}\n```"
        )

    def _cut_advice(self, dropped: str) -> str:
        # print(context) on a long text: the middle of the output is dropped, and weak models
        # then answer from the part they saw (issue 14).
        how, example = self.next_step()
        count = int(dropped.replace(",", ""))
        return (
            f"That output was cut: {count:,} characters in its middle were dropped, so the "
            f"answer may be in the part you did not see. Do NOT answer from it; instead, {how}:"
            f"\n```repl\n{example}\n```"
        )

    def _search_advice(self, error: str | None) -> str:
        what = f"failed ({error})" if error else "found nothing"
        labelling = self.labelling_code()
        if labelling is not None and self.labelled:
            # Not the labelling again: it ran, and its labels are in the kernel (seen on
            # OOLONG-Pairs after a NameError in the root's own code).
            how, example = self._labelled_step()
            return f"That cell {what}. Instead, {how}:\n```repl\n{example}\n```"
        if labelling is not None:
            return (
                f"That search {what}. The labels the question names are not words written in "
                f"the records, so no search finds them: {LABEL_STEP}:\n```repl\n{labelling}\n```"
            )
        terms = self.terms()
        lines = [f"print(search({t!r}))" for t in terms] or ["print(search('WORD'))"]
        return (
            f"That search {what}. Use the `search` helper: it ignores case, never raises, "
            "shows each match with the text around it, and when a phrase is not found word "
            "for word it finds the words close together. Search for one distinctive word or "
            f"name from the question at a time:\n```repl\n" + "\n".join(lines) + "\n```"
        )

    def _small_slice(self, code: str) -> Nudge | None:
        if self.kind not in {"text", "json", "jsonl"} or not self.length or self.whole_seen:
            return None
        if _SEARCH_CALL.search(code) or any(h in code for h in _CONTENT_HELPERS):
            return None
        spans = []
        for a, b in _SLICE.findall(code):
            bounds = slice(int(a) if a else None, int(b) if b else None).indices(self.length)
            spans.append(max(0, bounds[1] - bounds[0]))
        if not spans or sum(spans) >= self.length * 0.9:
            return None
        seen = sum(spans)
        unit = "characters" if self.kind == "text" else "items"
        how, example = self.next_step()
        return Nudge(
            "partial_view",
            f"That was only {seen:,} of the {self.length:,} {unit} of `context`, so the answer "
            f"is probably in the part you have not seen. Do NOT answer yet: instead, {how}:"
            f"\n```repl\n{example}\n```",
        )

    # --- the answer ----------------------------------------------------------------------------

    def next_step(self) -> tuple[str, str]:
        """The step every piece of advice suggests: what to do, in words, and its code.

        A search for the question's rarest word; but when the question names options and the
        context is a set of records, labelling every record (:meth:`labelling_code`): which
        record has which label is a judgement no word search makes.
        """
        labelling = self.labelling_code()
        if labelling is not None and self.labelled:
            return self._labelled_step()
        if labelling is not None:
            return LABEL_STEP, labelling
        files = self.file_searches()
        if files:
            return "search the files for the question's words used together", "\n".join(files)
        terms = self.terms()
        example = f"print(search({terms[0]!r}))" if terms else "print(search('WORD'))"
        return "search the whole context for a word from the question", example

    def _labelled_step(self) -> tuple[str, str]:
        """After the labelling: the records of the label the question asks about, read from
        ``labelled``, not the labelling again (it ran; its labels are in the kernel).

        Seen on OOLONG-Pairs: the advice after each repeat was the labelling the engine had
        already run, and the 1.5B root answered again from the records' own words.
        """
        label = asked_option(self.query)
        if label is None:
            return "print the labels' counts", "print(sorted(counts.items()))"
        field = self._paired_field()
        if field is not None:
            return self._pairs_step(field, label)
        ending = LABEL_SUFFIX + label
        rows = (
            f"rows = [line for line in labelled.split('\\n') if line.endswith({ending!r})]\n"
            f"print(len(rows), {'records labelled ' + repr(label)!r})\n"
            "print('\\n'.join(rows[:40]))"
        )
        return f"look at the records labelled {label!r} (in `labelled`, labels written in)", rows

    def _paired_field(self) -> str | None:
        """The records' field whose values the question pairs ("pairs of users" over
        ``User: <id>`` records), or None if it asks for no pairs of one."""
        field = grouping_field(self.query, self.preview) if self.kind == "text" else None
        if field is None or not _PAIRS.search(_QUOTED_SPAN.sub(" ", self.query)):
            return None
        return field

    def _pairs_step(self, field: str, label: str) -> tuple[str, str]:
        """After the labelling, for a question about pairs of a field's values: the values
        that pass the question's test on their label counts, and their pairs.

        Seen on OOLONG-Pairs with the 1.5B root: with the labels per user printed, it paired
        labels instead of users, or counted over `context`'s lines again; the one answer with
        a right pair counted the label per user from the labelled records, then paired them.
        """
        read = self._pair_test()
        if read is not None:
            return (
                f"list the pairs of {field} values that pass the question's test on `per_field` "
                f"(its labels' counts per {field}; the test below is the question as the engine "
                "read it: check it against the question)",
                self._pairs_code(field, read),
            )
        code = (
            f"keep = [v for v, row in sorted(per_field.items()) if row.get({label!r}, 0) >= 1]"
            "  # the question's test\n"
            f"print(len(keep), {field + ' values kept:'!r}, keep)\n"
            "found = pairs_of(keep)\n"
            "print(len(found), 'pairs:')\n"
            "print(found)"
        )
        return (
            f"pick the {field} values the question's condition keeps from `per_field` (its "
            f"labels' counts per {field}; the test below keeps those with a {label!r} record: "
            "change it to the question's) and list their pairs with `pairs_of`",
            code,
        )

    def _pair_test(self) -> PairTest | None:
        """The test the question's request for pairs puts on each value's label counts (see
        :mod:`engine.rlm.conditions`), or None when no sentence asking for pairs names a
        label."""
        options = named_options(self.query)
        for sentence in _SENTENCE_END.split(self.query.strip()):
            if _PAIRS.search(_QUOTED_SPAN.sub(" ", sentence)):
                read = pair_test(sentence, options)
                if read is not None:
                    return read
        return None

    @staticmethod
    def _pairs_code(field: str, read: PairTest) -> str:
        """Code that keeps the values passing ``read`` and prints their pairs (``found``)."""
        rows = "for v, row in sorted(per_field.items())"
        if read.other is None:
            kept = (
                f"keep = [v {rows} if {read.first.code()}]  # the question's test, as read\n"
                f"print(len(keep), {field + ' values pass it (keep):'!r}, keep[:60])\n"
                "found = pairs_of(keep)\n"
            )
        else:
            kept = (
                f"some = [v {rows} if {read.first.code()}]  # the question's tests, as read\n"
                f"others = [v {rows} if {read.other.code()}]\n"
                f"print(len(some), {field + ' values pass the first (some):'!r}, some[:60])\n"
                f"print(len(others), {field + ' values pass the other (others):'!r}, "
                "others[:60])\n"
                "found = pairs_of(some, others)\n"
            )
        return (
            f"{kept}print(len(found), \"pairs (found); answer['content'] = str(found) answers "
            'with all of them:")\nprint(found)'
        )

    def file_searches(self) -> list[str]:
        """For a dict of files: searches that find the file a question is about; else [].

        One rare word leads to any file that happens to use it (a 1.5B root answered the
        first file a search for "finds" listed); the question's words searched together
        find where they are used together, and :func:`search` ranks the tightest first.
        A question about where something is defined searches for ``def`` (or ``class``) next
        to those words first (a definition's line and docstring hold them all), and shows the
        plain search only when that finds nothing: the uses of a function hold its words as
        well, and a weak model picks any file it is shown.
        """
        terms = self.terms()
        if self.kind != "directory" or not terms:
            return []
        opts = f", max_hits={FILE_SEARCH_HITS}, window={FILE_SEARCH_WINDOW}"
        words = f"search({' '.join(terms)!r}{opts})"
        if not _ASKS_DEFINITION.search(self.query):
            return [f"print({words})"]
        keyword = "class" if re.search(r"\bclass", self.query, re.IGNORECASE) else "def"
        return [
            f"found = search({' '.join([keyword, *terms])!r}{opts})",
            f"print(found if found else {words})",
        ]

    def labelling_code(self) -> str | None:
        """Code that labels every record with the options the question names and counts the
        labels; None unless the question names options and the context is a set of records."""
        records = self._records_code()
        options = named_options(self.query)
        if records is None or not options:
            return None
        return (
            f"{records}{self._date_range_code()}\nlabels = llm_map(items, "
            f"{labelling_instruction(self.query)!r}, choices={options!r})\n"
            f"{self._label_counts_code(options)}"
        )

    def _date_range_code(self) -> str:
        """Lines that keep only the records in the question's date range ("after Jun 26,
        2023"), before they are labelled, or "" when it names none or the records carry no
        dates.

        Seen on OOLONG-Pairs with the 1.5B root: the per-user table counted every record, and
        the root's own date code tested ``'Aug 13, 2021' in line`` (no line kept) or raised.
        Kept first, the records out of range are neither labelled (fewer sub-calls) nor
        counted, so every count and table after it answers the question's range.
        """
        dates = date_range(self.query)
        if dates is None or not records_dated(complete_lines(self.preview)):
            return ""
        note = f"records {dates.describe()}, the question's range: only these are labelled"
        return (
            f"\nin_range = {dates.code()}\n"
            f"print(len(in_range), 'of', len(items), {note!r})\nitems = in_range"
        )

    def labels_shown_code(self) -> str | None:
        """Code that prints the labelling step's counts again from the kernel's ``items`` and
        ``labels``, without labelling anything; None where there is no labelling step.

        A model stuck after the labelling is shown these again (see :meth:`auto_step`): the
        conversation restarts from an auto step's output, and a word search there (the next
        step before this) cannot tell labels apart and hid the labels' counts from the root.
        """
        options = named_options(self.query)
        if self.labelling_code() is None:
            return None
        counts = self._label_counts_code(options).replace("\n", "\n    ")
        return (
            "if isinstance(globals().get('labels'), list) and isinstance(globals().get('items'), "
            "list) and len(labels) == len(items):\n"
            f"    {counts}\nelse:\n"
            "    print('labels and items no longer match; run the labelling again')"
        )

    def _label_counts_code(self, options: list[str]) -> str:
        # Every option's count, zeros too: an option no record got is missing from
        # Counter.most_common(), and "the least common label" is then misread. The extremes
        # are named too (ties all listed): seen on OOLONG, the 1.5B root read the first row
        # of the sorted counts as the answer to "least common" twice.
        return (
            "print(len(items), 'items')\n"
            f"counts = {{c: labels.count(c) for c in {options!r}}}\n"
            "print(sorted(((n, c) for c, n in counts.items()), reverse=True))\n"
            "high, low = max(counts.values()), min(counts.values())\n"
            "for word, n in (('most', high), ('least', low)):\n"
            "    print(word, 'common:', ', '.join(c for c in counts if counts[c] == n), f'({n})')"
            f"{self._per_field_code()}{self._labelled_code()}{self._pairs_note()}"
        )

    def _labelled_code(self) -> str:
        """Lines that bind ``labelled`` (a text) and ``labelled_items``: the records with their
        labels written in, or "" over a context that is not lines of text.

        A weak root looks for a label's words in the records whatever it is told (seen on
        OOLONG-Pairs in every item with the 1.5B root); over ``labelled`` that same code
        works, so its own strategy can be run there (see :meth:`_absent_message`).
        """
        if self.kind != "text":
            return ""
        return (
            f"\nlabelled_items = [f'{{item}}{LABEL_SUFFIX}{{label}}' "
            "for item, label in zip(items, labels)]\n"
            "labelled = '\\n'.join(labelled_items)\n"
            f"print({LABELLED_NOTE!r})"
        )

    def _per_field_code(self) -> str:
        """Lines that count the labels per value of the records' field the question names
        ("pairs of users" over "User: 44161 || ..." lines), or "" when it names none.

        Questions about records often ask about a field's values by label (which user has
        the most of a label, pairs of users who both have one); the counts per value make
        that a reading of a table, or a few lines of code over ``per_field``. ``with_label``
        lists, for each label, the values holding it: a question about values that have a
        label (pairs of such users) starts from that list, not from the records' words.
        """
        field = grouping_field(self.query, self.preview) if self.kind == "text" else None
        if field is None:
            return ""
        pattern = _field_value_pattern(field)
        return (
            f"\nper_field = {{}}  # {field} -> {{label: count}}\n"
            "for item, label in zip(items, labels):\n"
            f"    found = __import__('re').search({pattern!r}, item)\n"
            "    if found:\n"
            "        row = per_field.setdefault(found.group(1).strip(), {})\n"
            "        row[label] = row.get(label, 0) + 1\n"
            f"print(len(per_field), {field + ' values; labels per ' + field + ' (per_field):'!r})\n"
            "for value, row in sorted(per_field.items())[:60]:\n"
            "    print(value, row)\n"
            f"with_label = {{}}  # label -> the {field} values with at least one record of it\n"
            "for value, row in sorted(per_field.items()):\n"
            "    for label in row:\n"
            "        with_label.setdefault(label, []).append(value)\n"
            f"print({field + ' values with each label (with_label[label]):'!r})\n"
            "for label, values in sorted(with_label.items()):\n"
            "    print(repr(label), len(values), values[:60])"
        )

    def _pairs_note(self) -> str:
        """For a question that asks for pairs of the field's values: the code that lists the
        pairs passing the question's test as read (printed last, after the tables it reads),
        or a line saying how to list them when no test could be read; "" otherwise."""
        field = self._paired_field()
        if field is None:
            return ""
        read = self._pair_test()
        if read is not None:
            return "\n" + self._pairs_code(field, read)
        label = asked_option(self.query) or "<label>"
        note = (
            f"pairs_of(values) lists every pair of {field} values once, e.g. "
            f"pairs_of(with_label[{label!r}]); pairs_of(some, others) pairs each of some "
            "with each of others"
        )
        return f"\nprint({note!r})"

    def _records_code(self) -> str | None:
        """A line of code binding ``items`` to the context's records, or None if it has none.

        A list context (jsonl) is its own records; a text is when its preview shows one short
        record per line. A dict of files or a prose text is not a set of records.
        """
        if self.kind == "jsonl":
            return "items = list(context)"
        if self.kind != "text":
            return None
        if self.lines is not None:
            records = (
                self.lines >= RECORD_MIN_LINES and self.length / self.lines <= RECORD_MAX_CHARS
            )
        else:
            records = record_lines(self.preview)
        if not records:
            return None
        return 'items = [line for line in context.split("\\n") if line.strip()]'

    def shown(self, value: str) -> bool:
        """Whether an output seen so far shows ``value``, not counting outputs of code that
        wrote it, as a constant (``print("1833793")`` shows a guess, not the content) or as a
        name (a cell ``none`` printed "NameError: name 'none' is not defined")."""
        return any(
            _shows(value, output) and value not in typed_values(code) | _code_names(code)
            for code, output in self.seen_output
        )

    def resent_answer_shown(self, code: str) -> bool:
        """A cell resending a typed final answer that content read since shows: run it again.

        Resent cells and replies are otherwise not run (they would repeat their output), so a
        model whose answer was doubted, then confirmed by a search (its own or the engine's),
        could never set it: seen on S-NIAH, where the 1.5B root copied the needle from the
        preview, was asked to check it, and resent it after the engine's search showed it.
        A resent guess no output shows stays refused.
        """
        value = answer_literal(code)
        if value is None:
            return False
        # A resent answer that now goes back as holding no pair, after a cell printed the
        # question's pairs, runs too (seen on OOLONG-Pairs: the 1.5B root resent 'none' below
        # the printed pairs until the turn limit).
        return (self.read_content and self.shown(value)) or self._unpaired(value) is not None

    def _unpaired(self, value: str) -> PartialListing | None:
        """The cell that printed pairs, for a pairs question whose answer ``value`` holds none
        and was not sent back for it yet; None otherwise."""
        if self.pairs_challenged or not asks_for_pairs(self.query):
            return None
        return unpaired_answer(value, self.seen_output)

    def _judged_unread(self, code: str) -> bool:
        """Whether an answer about options the records do not carry comes before any sub-model
        judged a record (in an earlier cell or in ``code``).

        Such labels are judged, not read, so no output of code without a sub-model supports
        an answer about them, whether the answer is typed or computed. Seen on OOLONG with the
        1.5B root: a user id from a 300-character slice answered "which user has the most
        'entity' questions", and a count of all lines answered a count of one label.
        """
        if self.sub_calls or _calls_sub_model(code):
            return False
        options = named_options(self.query)
        cells = [code, *(seen for seen, _ in self.seen_output)]
        looked_for = [o for o in options if any(o.lower() in c.lower() for c in cells)]
        if any(self.option_hits.get(o) != 0 for o in looked_for):
            # The code looked for an option's words itself (``context.count('ERROR')`` over
            # log lines that carry a level): it may well be right, and is judged as before.
            # Not when the context holds none of the options it looked for (the probe found
            # each 0 times): a count of them is 0 whatever the records are. Seen on OOLONG,
            # where the 1.5B root counted lines holding 'description and abstract concept'.
            return False
        return not options_written(self.preview, options)

    def _absent_option_looked_for(self, code: str) -> str | None:
        """An option that ``code`` looks for in the records, which do not carry it (the probe
        counted it in fewer than half of them: nowhere, or a few by chance), by code that uses
        no sub-model's labels; None if there is none.

        Seen on OOLONG-Pairs with the 1.5B root: after the labelling step had printed the
        labels per user, the root tested each line for ``'description and abstract
        concept' in item``, found none and answered 'none'; and looked for ``abbreviation``,
        which a few questions hold ("What is the abbreviation of ..."), so counting only
        options held nowhere let that answer stand.
        """
        if _calls_sub_model(code) or _reads_labels(code):
            return None
        options = named_options(self.query)
        if options_written(self.preview, options):
            return None
        sought = [text.lower() for text in _sought_strings(code)]
        return next(
            (o for o in options if self._held_by_chance(o) and any(o.lower() in t for t in sought)),
            None,
        )

    def _held_by_chance(self, option: str) -> bool:
        """Whether the probe counted ``option`` in fewer than half of the records (0 when the
        number of records is not known): a word some records hold, not their label."""
        hits = self.option_hits.get(option)
        if hits is None:
            return False
        records = self.lines if self.kind == "text" else self.length if self.kind == "jsonl" else 0
        return hits == 0 or bool(records and 2 * hits < records)

    def _held_words(self, option: str) -> str:
        hits = self.option_hits.get(option, 0)
        if not hits:
            return "no record holds those words"
        return f"those words occur only {hits} times in the records, by chance"

    def _absent_message(self, value: str, option: str) -> str:
        field = grouping_field(self.query, self.preview) if self.kind == "text" else None
        table = (
            f"`per_field` (for each {field}, its labels' counts), `with_label[label]` (the "
            f"{field} values with at least one record of that label), "
            if field is not None
            else ""
        )
        rewritten = self.rewrite
        if rewritten is not None:
            return (
                f"You set the answer {value[:80]!r} from code that looks for {option!r} in the "
                f"records, but {self._held_words(option)}: the labels are not written in them. "
                "`labelled` holds the same records with each one's label written in (the "
                "labelling step above made it), so your code works there; run it over "
                f"`labelled`:\n```repl\n{rewritten}\n```\nor use {table}or `labels[i]`, the "
                "label of `items[i]`. Then set the answer again (answer['ready'] = True)."
            )
        return (
            f"You set the answer {value[:80]!r} from code that looks for {option!r} in the "
            f"records, but {self._held_words(option)}: the labels are not written in them. "
            f"Use the labels the sub-model gave instead: {table}or `labels[i]`, the label of "
            "`items[i]` (the labelling step above made both). Then set the answer again "
            "(answer['ready'] = True)."
        )

    def _counts_all(self, value: str) -> bool:
        """Whether ``value`` is a count of every record of the context (a text's lines, with
        or without a last empty one, or a list's items), the labels aside.

        Seen on OOLONG with the 1.5B root: after the labelling step had counted 23 records
        of the label asked about, it answered 287, the count of every line.
        """
        numbers = re.findall(r"\d+", value.replace(",", ""))
        if len(numbers) != 1 or len(value) > 80:
            return False
        total = self.lines if self.kind == "text" else self.length if self.kind == "jsonl" else 0
        return bool(total and total >= RECORD_MIN_LINES and int(numbers[0]) in (total - 1, total))

    def _counted_all_message(self, value: str, labelling: str) -> str:
        asked = [o for o in named_options(self.query) if _asks_about(self.query, o)]
        label = asked[0] if len(asked) == 1 else "<label>"
        have = (
            f"count only the records labelled {label!r}, e.g. `labels.count({label!r})` with "
            "the labels you have, or run the labelling step"
            if self.sub_calls
            else LABEL_STEP
        )
        return (
            f"You set the answer {value[:80]!r}, which is the number of all the records of "
            "`context`, whatever their labels; the question asks about the records of one "
            f"label, which only the labels tell apart. Instead, {have}:\n```repl\n{labelling}"
            "\n```\nthen set the answer again (answer['ready'] = True) from what it prints."
        )

    @staticmethod
    def _listing_parts(listing: PartialListing, what: str) -> tuple[str, str]:
        """The cell that printed ``listing``, cut to :data:`LISTING_CODE_CHARS`, and how to
        store all of ``what`` it printed (the variable it printed whole, if known)."""
        code = listing.code
        if len(code) > LISTING_CODE_CHARS:
            code = code[:LISTING_CODE_CHARS].rsplit("\n", 1)[0] + "\n..."
        store = (
            f"\n```repl\nanswer['content'] = str({listing.name})\nanswer['ready'] = True\n```"
            if listing.name is not None
            else f" set answer['content'] to {what} that cell printed, as a text, and "
            "answer['ready'] = True."
        )
        return code, store

    def _listing_message(self, value: str, listing: PartialListing) -> str:
        code, store = self._listing_parts(listing, "the whole list")
        part = "one" if listing.given == 1 else f"{listing.given}"
        return (
            f"You set the answer {value[:80]!r}, which is {part} of the {listing.total} lines "
            f"of that kind this earlier cell printed:\n```repl\n{code}\n```\nThe question "
            "asks for all the items that qualify, not one of them. If those lines are the "
            f"items it asks for, store all of them:{store}\nIf only the lines you set are "
            "right, set the same answer again."
        )

    def _unpaired_message(self, value: str, listing: PartialListing) -> str:
        code, store = self._listing_parts(listing, "the pairs")
        return (
            f"You set the answer {value[:80]!r}, which lists no pair, but the question asks for "
            f"pairs, and this earlier cell printed {listing.total} of them, one per line:\n"
            f"```repl\n{code}\n```\nIf its test is the question's, store those pairs:{store}\n"
            # A reply sent again unchanged is a repeat and is not run (see repeated_reply), so
            # the way to insist is a cell that shows why, not the same reply.
            "If no pair qualifies after all, print what shows that, then set the answer again "
            "(a reply sent again unchanged is not run)."
        )

    def unsupported_answer(self, answer: str, code: str) -> Nudge | None:
        """An answer typed into the code before any content that supports it was read: check it.

        The failures this catches type the value themselves (a guessed number, a file name
        from a listing). An answer computed by code, one shown in an output after the code
        read content, or one built from sub-call answers is left alone; so is any answer
        when the preview showed the whole context. One exception: over records whose labels
        the question names but the records do not carry, any answer before a sub-model judged
        a record is checked (:meth:`_judged_unread`). Asked at most once per run; besides,
        a count of every record over such records goes back once too (:meth:`_counts_all`).
        """
        value = answer.strip()
        if value and not self.listing_challenged and asks_for_many(self.query):
            listing = partial_listing(value, self.seen_output)
            if listing is not None:
                self.listing_challenged = True
                return Nudge("partial_listing", self._listing_message(value, listing))
        unpaired = self._unpaired(value)
        if unpaired is not None:
            self.pairs_challenged = True
            return Nudge("unpaired_answer", self._unpaired_message(value, unpaired))
        if self.kind == "none" or self.whole_seen or not value:
            return None
        labelling = self.labelling_code()
        if labelling is not None and not self.total_challenged and self._counts_all(value):
            self.total_challenged = True
            return Nudge("unsupported_answer", self._counted_all_message(value, labelling))
        if labelling is not None and not self.absent_challenged and self.sub_calls:
            absent = self._absent_option_looked_for(code)
            if absent is not None:
                self.absent_challenged = True
                self.rewrite = over_labelled(code) if self.labelled else None
                return Nudge("unsupported_answer", self._absent_message(value, absent))
        if self.challenged:
            return None
        if labelling is not None and self._judged_unread(code):
            self.challenged = True
            return Nudge(
                "unsupported_answer",
                f"You set the answer {value[:80]!r}, but the labels the question names are not "
                "written in the records: which record has which label has to be judged by a "
                "sub-model, and no code so far asked one (counting lines or reading a slice "
                f"does not tell labels apart). Instead, {LABEL_STEP}:\n```repl\n{labelling}"
                "\n```\nthen set the answer again (answer['ready'] = True) from what it prints.",
            )
        if value not in typed_values(code):
            return None
        if (self.read_content or reads_content(code, self.kind)) and (
            self.shown(value) or self.sub_calls
        ):
            return None
        self.challenged = True
        # A file name is checked by reading files; a distinctive value by finding it in the
        # text. A short value (a count, a yes/no) is found everywhere or nowhere, so it is
        # checked by computing it from what the question names. When the question names
        # options (labels, categories) and the context is a set of records, no search can
        # tell which record has which option: each one is labelled by a sub-model and counted.
        short = len(value) < 4
        terms = self.terms()
        if labelling is not None:
            how = f"{LABEL_STEP}:\n```repl\n{labelling}\n```"
        elif short and terms:
            how = (
                f"compute it from the content, e.g.\n```repl\nhits = search({terms[0]!r}, "
                "max_hits=100_000)\nprint(len(hits), 'matches')\nprint(hits[:3])\n```"
            )
        else:
            # Look for the value itself (unless it is a file name: files are read, not
            # searched) and for the question's rarest word, which leads to the passage the
            # question is about whether or not the guess was right.
            # A file name is checked by reading the files the question's words lead to.
            checks = self.file_searches() or [
                f"print(search({c!r}))"
                for c in [value[:60], *(t for t in terms[:1] if t.lower() != value.lower())]
            ]
            how = "check it in the context first, e.g.\n```repl\n" + "\n".join(checks) + "\n```"
        return Nudge(
            "unsupported_answer",
            f"You set the answer {value[:80]!r}, but no output so far shows it in the content "
            f"of `context` (file names or the preview are not the content). Instead, {how}\n"
            "then set the answer again (answer['ready'] = True) if it is right.",
        )


def _asks_about(query: str, option: str) -> bool:
    """Whether a question sentence of ``query`` (one ending with "?") names ``option``,
    also in the plural ("How many bugs?")."""
    pattern = _named(option)
    return any(
        sentence.rstrip().endswith("?") and pattern.search(sentence)
        for sentence in _SENTENCE_END.split(query.strip())
    )


def _named(word: str) -> re.Pattern[str]:
    """``word`` as a whole word or phrase, any case, also in the plural ("bugs", "users")."""
    return re.compile(rf"(?<!\w){re.escape(word)}(?:e?s)?(?!\w)", re.I)


def _reads_labels(code: str) -> bool:
    """Whether ``code`` reads the labelling step's names without binding them anew (the 1.5B
    root once wrote ``labels = defaultdict(list)`` and filled it from the records' words)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return any(re.search(rf"\b{name}\b", code) for name in _LABEL_NAMES)
    names = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id in _LABEL_NAMES]
    bound = {n.id for n in names if isinstance(n.ctx, ast.Store)}
    return any(isinstance(n.ctx, ast.Load) and n.id not in bound for n in names)


def _sought_strings(code: str) -> list[str]:
    """String constants ``code`` looks for: operands of a comparison (``'x' in line``,
    ``kind == 'x'``) or arguments of a call (``line.count('x')``, ``re.search('x', ...)``),
    not a typed answer (``answer['content'] = 'x'``) or a printed text."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return []
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.Call) and not (
            isinstance(node.func, ast.Name) and node.func.id == "print"
        ):
            operands = [*node.args, *(k.value for k in node.keywords)]
        else:
            continue
        found += [
            o.value for o in operands if isinstance(o, ast.Constant) and isinstance(o.value, str)
        ]
    return found


def _calls_sub_model(code: str) -> bool:
    return any(h in code for h in _SUB_MODEL_HELPERS)


def grouping_field(query: str, preview: str) -> str | None:
    """The field of the records that ``query`` names (also in the plural: "users" for
    ``User``) and that groups them: a ``Name: value`` part of at least half of the preview's
    complete lines, with short values (ids, names, not the text being labelled); of several,
    the one with the fewest distinct values. None if the query names none."""
    lines = complete_lines(preview)
    if len(lines) < 2:
        return None
    values: dict[str, list[str]] = {}
    for line in lines:
        for name in set(_FIELD_NAME.findall(line)):
            found = re.search(_field_value_pattern(name), line)
            if found:
                values.setdefault(name, []).append(found.group(1).strip())
    named = [
        name
        for name, seen in values.items()
        if 2 * len(seen) >= len(lines)
        and sorted(map(len, seen))[len(seen) // 2] <= FIELD_VALUE_MAX_CHARS
        and _named(name).search(query)
    ]
    # A query that quotes the records' form ("in the form 'Date: <date> || User: <id>'")
    # names every field; the one its own words name ("pairs of users") is the one asked
    # about. Seen on OOLONG-Pairs: a preview of five lines with four distinct dates and
    # five users grouped the labels by date.
    unquoted = _QUOTED_SPAN.sub(" ", query)
    # "pairs of users" names the field outright; other words of the query may name another
    # field too ("Each instance is ..." over records with an ``Instance:`` part), and a short
    # preview may show as many distinct values of it.
    for paired in _PAIRS_OF.finditer(unquoted):
        for name in named:
            if _named(name).fullmatch(paired.group(1)):
                return name
    asked = [name for name in named if _named(name).search(unquoted)]
    return min(asked or named, key=lambda name: len(set(values[name])), default=None)


def _field_value_pattern(name: str) -> str:
    return rf"(?<!\w){re.escape(name)}\s*[:=]\s*([^|,;\t]+)"


def options_written(preview: str, options: list[str]) -> bool:
    """Whether records beginning with ``preview`` carry the options as words (a label column):
    one of them in at least half of the preview's complete lines, or anywhere in a preview of
    fewer than two lines. A word of an option found by chance in a few records is not."""
    patterns = [re.compile(rf"(?<!\w){re.escape(o)}(?!\w)", re.I) for o in options]
    lines = complete_lines(preview)
    if len(lines) < 2:
        return any(p.search(preview) for p in patterns)
    return 2 * sum(any(p.search(line) for p in patterns) for line in lines) >= len(lines)


def answer_literal(code: str) -> str | None:
    """The value a cell types as the final answer (``answer["content"] = "..."`` next to
    ``answer["ready"] = True``), stripped; None when it sets no typed final answer."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    content: str | None = None
    ready = False
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Constant):
            continue
        for target in node.targets:
            if not (
                isinstance(target, ast.Subscript)
                and isinstance(target.value, ast.Name)
                and target.value.id == "answer"
                and isinstance(target.slice, ast.Constant)
            ):
                continue
            key, value = target.slice.value, node.value.value
            if key == "content" and isinstance(value, str | int | float):
                content = str(value).strip()
            elif key == "ready" and value is True:
                ready = True
    return content if ready and content else None


def _nodes(code: str) -> list[ast.AST]:
    """Every node of ``code``'s syntax tree; [] when it does not parse."""
    try:
        return list(ast.walk(ast.parse(code)))
    except (SyntaxError, ValueError):
        return []


# The names of the context's records and what :func:`over_labelled` reads instead.
_LABELLED_NAMES = {"context": "labelled", "items": "labelled_items"}


def over_labelled(code: str) -> str | None:
    """``code`` reading ``labelled`` where it read ``context`` (and ``labelled_items`` where it
    read ``items``): the same records with their labels written in; None if it reads neither
    or does not tokenize. Only names change, not strings, attributes or keywords
    (``search('x', context=...)``)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError):
        return None
    lines = code.splitlines(keepends=True)
    found = [
        t
        for i, t in enumerate(tokens)
        if t.type == tokenize.NAME
        and t.string in _LABELLED_NAMES
        and not (i and tokens[i - 1].string == ".")
        and not (i + 1 < len(tokens) and tokens[i + 1].string == "=")
    ]
    if not found:
        return None
    for token in reversed(found):  # from the end, so earlier positions stay right
        row, col = token.start
        line = lines[row - 1]
        lines[row - 1] = (
            line[:col] + _LABELLED_NAMES[token.string] + line[col + len(token.string) :]
        )
    return "".join(lines).strip()


def _code_names(code: str) -> set[str]:
    """The names ``code`` writes (variables, attributes), which its errors may echo."""
    return {
        node.id if isinstance(node, ast.Name) else node.attr
        for node in _nodes(code)
        if isinstance(node, ast.Name | ast.Attribute)
    }


def assigned_names(code: str) -> set[str]:
    """The variable names ``code`` assigns (``x = ...``, ``for x in``, ``a, b = ...``)."""
    return {
        node.id
        for node in _nodes(code)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)
    }


def typed_values(code: str) -> set[str]:
    """The string and number constants written in ``code``, stripped."""
    return {
        str(node.value).strip()
        for node in _nodes(code)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str | int | float)
        and not isinstance(node.value, bool)
    }
