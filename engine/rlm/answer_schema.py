"""Structured answers: a JSON Schema the final answer must match, checked with ``jsonschema``.

The root is told the schema in its first message. When it declares an answer final, the answer
is parsed (JSON, or a Python literal such as ``str(dict)`` gives) and validated; on failure the
validation errors go back to the root as that cell's output and the run goes on. A valid answer
becomes the run's answer as canonical JSON text.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema.exceptions

from engine.errors import ConfigError

_MAX_ERRORS = 5


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
        except jsonschema.exceptions.SchemaError as exc:
            where = "/".join(str(p) for p in exc.path) or "the top level"
            raise ConfigError(
                f"{source} is not a valid JSON Schema at {where}: {exc.message}"
            ) from exc
        self.schema: dict[str, Any] = schema
        self._validator = validator_class(schema)

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
        return (
            "The final answer must be JSON that matches this JSON Schema:\n"
            + json.dumps(self.schema, indent=1, ensure_ascii=False)
            + '\nimport json, then set answer["content"] = json.dumps(value) (JSON text, not a '
            'repr) before answer["ready"] = True; an answer that does not match is sent back with '
            "the validation errors."
        )

    def check(self, answer: str) -> Verdict:
        """Parse and validate ``answer``."""
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


def _parse(answer: str) -> tuple[Any, str | None]:
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
