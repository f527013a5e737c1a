"""Check one answer against an output schema in this process, under a memory cap.

``python -m engine.rlm.answer_check MEMORY_BYTES`` reads ``{"schema": ..., "answer": ...}``
on stdin and writes the verdict (``answer``, ``value``, ``problem``) as one JSON line (see
:meth:`engine.rlm.answer_schema.AnswerSchema.check_isolated`, which gives it a deadline).
"""

from __future__ import annotations

import json
import resource
import sys

from engine.rlm.answer_schema import AnswerSchema, Verdict


def main(argv: list[str]) -> int:
    memory = int(argv[0])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    job = json.loads(sys.stdin.read())
    try:
        verdict = AnswerSchema(job["schema"]).check(str(job["answer"]))
    except RecursionError:
        verdict = Verdict(
            None,
            problem="[answer not accepted: checking it against the output schema recursed too "
            "deep (a value nested too deeply, or a schema that refers to itself without end)]",
        )
    except MemoryError:
        verdict = Verdict(
            None, problem="[answer not accepted: checking it needs more memory than allowed]"
        )
    out = {"answer": verdict.answer, "value": verdict.value, "problem": verdict.problem}
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
