"""Progress of an evaluation: items done, running accuracy, cost so far, ETA.

:class:`ProgressTracker` does the counting; :class:`EvalProgress` shows it, as a rich progress
bar on a terminal and as one plain line per finished item otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from engine.display import live, print_line, stderr_console


def format_duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``4000`` -> ``1h06m``."""
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


@dataclass
class ProgressTracker:
    """Counts finished results and renders a one-line progress bar.

    ``skipped`` results (already in results.jsonl) count as done but not in the ETA rate.
    """

    total: int
    skipped: int = 0
    done: int = 0
    score_sum: float = 0.0
    cost_usd: float = 0.0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)

    def update(self, record: dict[str, Any]) -> None:
        """Account for one freshly finished result line."""
        self.done += 1
        self.score_sum += float(record.get("score") or 0.0)
        self.cost_usd += float(record.get("cost_usd") or 0.0)
        if record.get("error"):
            self.errors += 1

    @property
    def accuracy(self) -> float | None:
        """Mean score of the results finished in this session."""
        return self.score_sum / self.done if self.done else None

    def eta_s(self) -> float | None:
        """Seconds left at the observed rate, None before the first result."""
        if not self.done:
            return None
        rate = (time.monotonic() - self.started) / self.done
        return rate * (self.total - self.skipped - self.done)

    def render(self, width: int = 24) -> str:
        """E.g. ``[#########---------] 12/40 acc 58.3% $0.0123 ETA 3m12s``."""
        finished = self.skipped + self.done
        filled = int(width * finished / self.total) if self.total else width
        bar = "#" * filled + "-" * (width - filled)
        acc = f"{100 * self.accuracy:.1f}%" if self.accuracy is not None else "--"
        eta = self.eta_s()
        parts = [
            f"[{bar}] {finished}/{self.total}",
            f"acc {acc}",
            f"${self.cost_usd:.4f}",
            f"ETA {format_duration(eta) if eta is not None else '--'}",
        ]
        if self.errors:
            parts.append(f"errors {self.errors}")
        return " ".join(parts)


class EvalProgress:
    """Shows an evaluation's progress on ``console`` (default: stderr).

    On a terminal: a rich bar redrawn in place with items done, running accuracy, cost, errors
    and ETA. Otherwise: one plain line per finished item (``ProgressTracker.render``). Use as
    the ``on_start``/``on_result`` callbacks of :func:`engine.eval.runner.run_eval`, then call
    :meth:`close`.
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or stderr_console()
        self.tracker: ProgressTracker | None = None
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def start(self, total: int, skipped: int) -> None:
        """Begin showing progress over ``total`` items, ``skipped`` of them already done."""
        self.tracker = ProgressTracker(total=total, skipped=skipped)
        if skipped:
            print_line(self.console, f"rlm eval: resuming, {skipped}/{total} already done")
        if not live(self.console):
            print_line(self.console, self.tracker.render())
            return
        self._bar = Progress(
            TextColumn("rlm eval"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("acc {task.fields[acc]}", markup=False),
            TextColumn("${task.fields[cost]}", markup=False),
            TextColumn("{task.fields[errors]}", markup=False),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}", markup=False),
            console=self.console,
            redirect_stdout=False,
        )
        self._task = self._bar.add_task("eval", total=total, completed=skipped, **self._fields())
        self._bar.start()

    def result(self, record: dict[str, Any]) -> None:
        """Account for one finished item and show it."""
        if self.tracker is None:
            raise RuntimeError("EvalProgress.result() before start()")
        self.tracker.update(record)
        if self._bar is None or self._task is None:
            print_line(self.console, self.tracker.render())
            return
        finished = self.tracker.skipped + self.tracker.done
        self._bar.update(self._task, completed=finished, **self._fields())

    def close(self) -> None:
        """Stop redrawing; the last state stays on screen."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _fields(self) -> dict[str, Any]:
        # Any: rich's update()/add_task() take these as **fields next to typed parameters.
        tracker = self.tracker
        assert tracker is not None
        accuracy = tracker.accuracy
        eta = tracker.eta_s()
        return {
            "acc": f"{100 * accuracy:.1f}%" if accuracy is not None else "--",
            "cost": f"{tracker.cost_usd:.4f}",
            "errors": f"errors {tracker.errors}" if tracker.errors else "",
            "eta": format_duration(eta) if eta is not None else "--",
        }
