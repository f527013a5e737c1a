"""Loaders for official benchmark releases, read from the data directory in published formats.

The data directory is ``$RLM_DATA_DIR``, else ``~/.cache/rlm/data`` (:func:`data_dir`).

- ``oolong-synth``: ``oolong-synth/*.jsonl`` (or ``.json``) rows of the HuggingFace dataset
  ``oolongbench/oolong-synth`` (``context_window_text``, ``question``, ``answer``,
  ``answer_type``, ``context_len``, ``dataset``); the trec_coarse split by default.
- ``longbench-codeqa``: ``longbench-v2/data.json`` from LongBench-v2 (``question``,
  ``choice_A``..``choice_D``, ``answer``, ``context``, ``domain``, ``length``), domain
  "Code Repository Understanding".
- ``browsecomp-plus``: ``browsecomp-plus/browsecomp_plus_decrypted.jsonl`` written by the
  project's ``decrypt_dataset.py`` (``query_id``, ``query``, ``answer``, ``evidence_docs``,
  ``gold_docs``, ``negative_docs``) plus, optionally, ``browsecomp-plus/corpus.jsonl``
  (``docid``, ``text``) to fill contexts with more documents.

Nothing is downloaded; absent files raise :class:`DataMissingError` naming them.
"""

from __future__ import annotations

import ast
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.errors import DataMissingError
from engine.eval.base import EvalItem, Unit, data_dir, measure_fn
from engine.eval.oolong import score_answer
from engine.eval.scoring import choice_score, contains_fraction, normalize_answer


def _read_rows(path: Path) -> Iterator[dict[str, Any]]:
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)
    elif path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        yield from data if isinstance(data, list) else data.get("data", [])
    elif path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise DataMissingError(
                f"{path} is Parquet; install pyarrow or convert it to JSONL"
            ) from exc
        yield from pq.read_table(path).to_pylist()


def _files(folder: str, patterns: tuple[str, ...], what: str) -> list[Path]:
    root = data_dir() / folder
    found = sorted(p for pat in patterns for p in root.glob(pat)) if root.is_dir() else []
    if not found:
        raise DataMissingError(
            f"{what} is not on disk: expected {' or '.join(str(root / p) for p in patterns)} "
            f"(data directory {data_dir()}: $RLM_DATA_DIR, else ~/.cache/rlm/data). Download the "
            "official release and place it there."
        )
    return found


def _sample(rows: list[dict[str, Any]], n: int, seed: int, name: str) -> list[dict[str, Any]]:
    rng = random.Random(f"{name}|{seed}")
    return rng.sample(rows, min(n, len(rows)))


def parse_oolong_answer(answer: Any) -> Any:
    """OOLONG-synth stores answers as a list's repr (``"['location']"``, ``"[12]"``)."""
    value = answer
    if isinstance(answer, str):
        try:
            value = ast.literal_eval(answer)
        except (ValueError, SyntaxError):
            value = answer
    if isinstance(value, list | tuple) and len(value) == 1:
        value = value[0]
    return value


class OolongSynth:
    """The official OOLONG-synth release (trec_coarse by default), OOLONG scoring."""

    name = "oolong-synth"
    description = "official OOLONG-synth release from <data dir>/oolong-synth"

    def __init__(self, dataset: str = "trec_coarse") -> None:
        self.dataset = dataset

    def items(self, length: int, n: int, seed: int, unit: Unit = "tokens") -> list[EvalItem]:
        """Rows with ``context_len == length`` (the nearest published length if none match)."""
        files = _files(
            "oolong-synth", ("*.jsonl", "*.json", "*.parquet"), "the OOLONG-synth release"
        )
        rows = [
            r
            for f in files
            for r in _read_rows(f)
            if not self.dataset or r.get("dataset", self.dataset) == self.dataset
        ]
        if not rows:
            raise DataMissingError(f"no {self.dataset} rows in {', '.join(map(str, files))}")
        sizes = sorted({int(r.get("context_len", 0)) for r in rows})
        nearest = min(sizes, key=lambda s: abs(s - length))
        chosen = _sample(
            [r for r in rows if int(r.get("context_len", 0)) == nearest], n, seed, self.name
        )
        out = []
        for i, r in enumerate(chosen):
            gold = parse_oolong_answer(r["answer"])
            kind = str(r.get("answer_type", ""))
            answer_type = "number" if "NUMERIC" in kind.upper() else "exact"
            if answer_type == "number" and not isinstance(gold, int):
                answer_type = "exact"
            meta = {
                "id": r.get("id"),
                "answer_type": answer_type,
                "published_length": nearest,
                "task": r.get("task"),
                "task_group": r.get("task_group"),
            }
            out.append(
                EvalItem(
                    self.name,
                    length,
                    unit,
                    seed,
                    i,
                    str(r["question"]),
                    str(r["context_window_text"]),
                    gold,
                    meta,
                )
            )
        return out

    def score(self, item: EvalItem, prediction: str) -> float:
        return score_answer(item.meta["answer_type"], item.gold, prediction)


def longbench_bucket(length_tokens: int) -> str:
    """LongBench-v2 length bucket (short < 32k words, medium < 128k, long) for a token count."""
    words = length_tokens / 1.3
    return "short" if words <= 32_000 else "medium" if words <= 128_000 else "long"


class LongBenchCodeQA:
    """LongBench-v2 "Code Repository Understanding" multiple choice, scored by accuracy."""

    name = "longbench-codeqa"
    description = "official LongBench-v2 CodeQA from <data dir>/longbench-v2/data.json"

    def items(self, length: int, n: int, seed: int, unit: Unit = "tokens") -> list[EvalItem]:
        """Rows of the LongBench-v2 length bucket that ``length`` (tokens) falls into."""
        files = _files("longbench-v2", ("data.json", "data.jsonl"), "the LongBench-v2 release")
        rows = [
            r
            for f in files
            for r in _read_rows(f)
            if r.get("domain") == "Code Repository Understanding"
        ]
        bucket = longbench_bucket(length if unit == "tokens" else length // 4)
        chosen = _sample([r for r in rows if r.get("length") == bucket] or rows, n, seed, self.name)
        out = []
        for i, r in enumerate(chosen):
            listed = "\n".join(f"({c}) {r[f'choice_{c}']}" for c in "ABCD")
            query = (
                f"{r['question']}\n{listed}\n\nGive your final answer in the form "
                "'Answer: <letter>'."
            )
            meta = {
                "id": r.get("_id"),
                "bucket": r.get("length"),
                "difficulty": r.get("difficulty"),
                "options": [str(r[f"choice_{c}"]) for c in "ABCD"],
            }
            out.append(
                EvalItem(
                    self.name,
                    length,
                    unit,
                    seed,
                    i,
                    query,
                    str(r["context"]),
                    str(r["answer"]).strip().upper(),
                    meta,
                )
            )
        return out

    def score(self, item: EvalItem, prediction: str) -> float:
        return choice_score(prediction, item.gold, item.meta.get("options", ()))


def _doc_text(doc: dict[str, Any]) -> str:
    return f"[docid {doc.get('docid')}] {doc.get('url', '')}\n{doc.get('text', '')}"


class BrowseCompPlus:
    """BrowseComp-Plus queries over a document list (gold and evidence docs always included).

    The official grader is an LLM judge; here the answer counts when the gold string appears
    in the prediction (normalized), which under-counts paraphrased answers.
    """

    name = "browsecomp-plus"
    description = "official BrowseComp-Plus (decrypted) from <data dir>/browsecomp-plus"

    def items(self, length: int, n: int, seed: int, unit: Unit = "tokens") -> list[EvalItem]:
        """Documents (evidence, gold, negatives, then corpus) until ``length`` is reached."""
        files = _files(
            "browsecomp-plus",
            ("browsecomp_plus_decrypted.jsonl",),
            "the decrypted BrowseComp-Plus queries",
        )
        rows = list(_read_rows(files[0]))
        corpus_path = data_dir() / "browsecomp-plus" / "corpus.jsonl"
        corpus = list(_read_rows(corpus_path)) if corpus_path.is_file() else []
        measure = measure_fn(unit)
        out = []
        for i, r in enumerate(_sample(rows, n, seed, self.name)):
            rng = random.Random(f"{self.name}|{seed}|{r.get('query_id')}")
            must = [*r.get("evidence_docs", []), *r.get("gold_docs", [])]
            seen: set[Any] = set()
            docs: list[str] = []
            size = 0
            fillers = list(r.get("negative_docs", [])) + rng.sample(corpus, min(len(corpus), 2000))
            for j, doc in enumerate([*must, *fillers]):
                if doc.get("docid") in seen:
                    continue
                text = _doc_text(doc)
                cost = measure(text)
                if j >= len(must) and size + cost > length:
                    continue
                seen.add(doc.get("docid"))
                docs.append(text)
                size += cost
            rng.shuffle(docs)
            query = f"{r['query']}\n\nGive your final answer in the form 'Answer: <answer>'."
            meta = {"query_id": r.get("query_id"), "documents": len(docs), "context_size": size}
            out.append(
                EvalItem(self.name, length, unit, seed, i, query, docs, [str(r["answer"])], meta)
            )
        return out

    def score(self, item: EvalItem, prediction: str) -> float:
        gold = [normalize_answer(g) for g in item.gold]
        return contains_fraction(normalize_answer(prediction), gold)
