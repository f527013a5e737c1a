"""Structured answers: a JSON Schema the final answer must match, checked with ``jsonschema``.

The root is told the schema in its first message. When it declares an answer final, the answer
is parsed (JSON, or a Python literal such as ``str(dict)`` gives) and validated; on failure the
validation errors go back to the root as that cell's output and the run goes on. A valid answer
becomes the run's answer as canonical JSON text.
"""

from __future__ import annotations

import ast
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import jsonschema.exceptions
import referencing
import referencing.exceptions
import referencing.jsonschema

from engine.errors import ConfigError

_MAX_ERRORS = 5
#: Levels of nesting an accepted answer may have: the orchestrator decodes the canonical JSON
#: again (the run's ``answer_json``), deeper in its stack than the checker, so a value near
#: the interpreter's recursion limit would fail there.
MAX_ANSWER_DEPTH = 100
#: Wall time and memory for checking one answer (:meth:`AnswerSchema.check_isolated`). The
#: schema may be a tenant's: a ``pattern`` such as ``^(a+)+$`` backtracks for hours on a
#: 40-character string, and Python's regex engine cannot be interrupted inside a process.
CHECK_TIMEOUT_S = 10.0
CHECK_MEMORY_BYTES = 512 << 20


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one answer: the canonical JSON text, or what is wrong."""

    answer: str | None
    value: Any = None
    problem: str | None = None


class AnswerSchema:
    """A JSON Schema for final answers (checked as a schema when constructed)."""

    def __init__(self, schema: Any, *, source: str = "the output schema") -> None:
        if not isinstance(schema, dict):
            raise ConfigError(f"{source} must be a JSON object (a JSON Schema), not {schema!r:.80}")
        validator_class = jsonschema.validators.validator_for(schema)
        try:
            validator_class.check_schema(schema)
        except RecursionError:
            raise ConfigError(f"{source} is nested too deeply to check") from None
        except jsonschema.exceptions.SchemaError as exc:
            where = "/".join(str(p) for p in exc.path) or "the top level"
            raise ConfigError(
                f"{source} is not a valid JSON Schema at {where}: {exc.message}"
            ) from exc
        # An empty registry: refs resolve inside the schema and to the bundled meta-schemas
        # only. jsonschema's default one fetches any other URI with urlopen, so a tenant's
        # {"$ref": "http://169.254.169.254/..."} or "file:///..." reached the network or a
        # file on the host while the answer was checked.
        self._validator = validator_class(schema, registry=referencing.Registry())
        ref = _unresolvable_ref(self._validator, schema)
        if ref is not None:
            raise ConfigError(
                f"{source} refers to {ref!r}, which is not inside it: a $ref may point only "
                "into the schema itself (#/$defs/...) or to a JSON Schema meta-schema; the "
                "engine never fetches schemas from the network or reads them from files"
            )
        self.schema: dict[str, Any] = schema

    @classmethod
    def from_file(cls, path: Path) -> AnswerSchema:
        """Read a schema file; errors name the file and say what to fix."""
        try:
            text = path.expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot read the output schema {path}: {exc.strerror or exc}"
            ) from exc
        try:
            schema = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"the output schema {path} is not JSON: {exc}") from exc
        return cls(schema, source=f"the output schema {path}")

    def instructions(self) -> str:
        """What the root is told in its first message."""
        shown = json.dumps(self.schema, indent=1, ensure_ascii=False)
        compact = json.dumps(self.schema, ensure_ascii=False)
        if len(shown) > 2 * len(compact) + 4096:
            # Indentation grows with depth: a 64 KiB schema of leaves 850 levels deep was
            # 5.9 MB indented, in the root's first message (and every later request).
            shown = compact
        return (
            "The final answer must be JSON that matches this JSON Schema:\n"
            + shown
            + '\nimport json, then set answer["content"] = json.dumps(value) (JSON text, not a '
            'repr) before answer["ready"] = True; an answer that does not match is sent back with '
            "the validation errors."
        )

    async def check_isolated(self, answer: str, timeout_s: float = CHECK_TIMEOUT_S) -> Verdict:
        """:meth:`check` in a separate process, killed after ``timeout_s``.

        What the orchestrator runs: the schema and the answer are both untrusted, and a
        check that backtracks, recurses or allocates without end must not stall the event
        loop (every other run of the service) or crash the run.
        """
        # Here, not at the top: the checking process imports this module and needs no more.
        from engine.contexts.isolate import worker_env

        job = json.dumps({"schema": self.schema, "answer": answer}).encode()
        command = [sys.executable, "-m", "engine.rlm.answer_check", str(CHECK_MEMORY_BYTES)]
        with anyio.move_on_after(timeout_s):  # cancelling run_process kills it
            done = await anyio.run_process(command, input=job, check=False, env=worker_env())
            try:
                reply = json.loads(done.stdout)
                return Verdict(reply["answer"], reply["value"], reply["problem"])
            except (ValueError, KeyError, TypeError):
                return Verdict(
                    None,
                    problem="[answer not accepted: checking it against the output schema "
                    f"failed (exit status {done.returncode})]",
                )
        return Verdict(
            None,
            problem=f"[answer not accepted: checking it against the output schema took longer "
            f"than {timeout_s:g} s (a pattern that backtracks on this value?); give "
            "a simpler value]",
        )

    def check(self, answer: str) -> Verdict:
        """Parse and validate ``answer`` in this process (trusted schemas and tests; the
        run loop uses :meth:`check_isolated`)."""
        value, parse_problem = _parse(answer)
        if parse_problem is not None:
            return Verdict(None, problem=parse_problem)
        errors = sorted(self._validator.iter_errors(value), key=lambda e: list(e.path))
        if errors:
            lines = [
                f"- at {'/'.join(str(p) for p in e.path) or '(top level)'}: {e.message}"
                for e in errors[:_MAX_ERRORS]
            ]
            more = len(errors) - _MAX_ERRORS
            if more > 0:
                lines.append(f"- ... and {more} more")
            return Verdict(
                None,
                problem="[answer not accepted: it does not match the output schema]\n"
                + "\n".join(lines)
                + '\nFix the value and set answer["content"] and answer["ready"] again.',
            )
        return Verdict(json.dumps(value, ensure_ascii=False), value)


def _unresolvable_ref(validator: Any, schema: dict[str, Any]) -> str | None:
    """The first ``$ref`` or ``$dynamicRef`` of ``schema`` the validator cannot resolve.

    Each is looked up from the (sub)schema holding it, as validation would (a nested ``$id``
    changes the base), so a schema that would fail on every answer is refused up front.
    """
    dialect = validator.ID_OF(validator.META_SCHEMA) or "urn:unknown-dialect"
    specification = referencing.jsonschema.specification_with(
        dialect, default=referencing.Specification.OPAQUE
    )
    # jsonschema's own resolver, rooted at this schema (it has no public accessor).
    stack = [(validator._resolver, specification.create_resource(schema))]
    while stack:
        resolver, resource = stack.pop()
        contents = resource.contents
        if isinstance(contents, dict):
            for key in ("$ref", "$dynamicRef"):
                ref = contents.get(key)
                if isinstance(ref, str):
                    try:
                        resolver.lookup(ref)
                    except referencing.exceptions.Unresolvable:
                        return ref
        for sub in resource.subresources():
            stack.append((resolver.in_subresource(sub), sub))
    return None


def _depth(value: Any) -> int:
    """How deeply lists and dicts nest in ``value`` (without recursing)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, list | tuple | dict):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in _children(item))
    return deepest


def _children(item: list[Any] | tuple[Any, ...] | dict[Any, Any]) -> list[Any]:
    return list(item.values()) if isinstance(item, dict) else list(item)


def _parse(answer: str) -> tuple[Any, str | None]:
    value, problem = _decode(answer)
    if problem is None and _depth(value) > MAX_ANSWER_DEPTH:
        return None, (
            f"[answer not accepted: it nests more than {MAX_ANSWER_DEPTH} levels of lists and "
            "objects]\nGive a flatter value."
        )
    return value, problem


def _decode(answer: str) -> tuple[Any, str | None]:
    text = answer.strip()
    if text.startswith("```"):
        # A fenced answer: the JSON inside the fence.
        text = text.strip("`")
        text = text.split("\n", 1)[1] if "\n" in text else text
    try:
        return json.loads(text), None
    except json.JSONDecodeError as json_error:
        try:
            # str() of a dict or list in the kernel gives a Python literal, not JSON.
            return ast.literal_eval(text), None
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None, (
                f"[answer not accepted: it is not JSON ({json_error.msg} at position "
                f'{json_error.pos})]\nSet answer["content"] = json.dumps(value) and '
                'answer["ready"] = True again.'
            )
