"""Live status of ``rlm run``: turns, the current action, sub-calls, tokens and cost.

:class:`RunState` folds the run's trajectory events into counters (pure logic);
:class:`RunStatus` shows them on a console: a rich live line with a spinner, a bar of turns
and the elapsed time on a terminal, else one plain line per finished cell, nudge and the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from engine.display import live, print_line


@dataclass
class RunState:
    """Counters of one run tree, updated from its events (any depth)."""

    turn: int = 0
    max_turns: int | None = None
    action: str = "starting sandbox"
    sub_calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0

    def apply(self, event: dict[str, Any]) -> bool:
        """Account for ``event``; True when it is a step worth a line of its own."""
        kind = event.get("type")
        top = event.get("depth", 1) == 1
        usage = event.get("usage")
        if kind in ("turn", "sub_call") and isinstance(usage, dict):
            # Children's turns carry their own usage; an rlm_query sub_call carries none.
            self.tokens += int(usage.get("total_tokens") or 0)
            self.cost_usd += float(usage.get("cost_usd") or 0.0)
        if kind == "sub_call":
            self.sub_calls += 1
            return False
        if kind == "tool_call":
            self.action = f"tool {event.get('name')} {event.get('status')}"
            return False
        if not top:
            if kind == "run_start":
                self.action = "child RLM running"
            return False
        if kind == "run_start":
            self.max_turns = (event.get("limits") or {}).get("max_iterations")
        elif kind == "sandbox_ready":
            self.action = f"sandbox ready in {float(event.get('startup_s') or 0):.1f}s, thinking"
            return True
        elif kind == "turn":
            self.turn = int(event.get("iteration") or self.turn)
            self.action = "running code"
        elif kind == "cell":
            state = "ok"
            if event.get("timed_out"):
                state = "timed out"
            elif event.get("error"):
                state = "error"
            self.action = f"cell {state} ({float(event.get('duration_s') or 0):.1f}s)"
            return True
        elif kind == "nudge":
            self.action = f"nudged ({event.get('reason')})"
            return True
        elif kind == "run_end":
            self.action = f"done ({event.get('stop_reason')})"
            return True
        return False

    @property
    def turns(self) -> str:
        """``3/20``, or ``3`` when the limit is unknown."""
        return f"{self.turn}/{self.max_turns}" if self.max_turns else str(self.turn)

    def line(self) -> str:
        """E.g. ``turn 3/20 | cell ok (0.4s) | sub-calls 5 | tokens 12,345 | $0.0123``."""
        return (
            f"turn {self.turns} | {self.action} | sub-calls {self.sub_calls} | "
            f"tokens {self.tokens:,} | ${self.cost_usd:.4f}"
        )


class RunStatus:
    """The ``on_event`` callback of a run that shows its :class:`RunState` on ``console``.

    Call :meth:`close` when the run is over (also after an error): it stops the live display,
    leaving its last state on screen.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.state = RunState()
        self._live: Progress | None = None
        self._task: TaskID | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        step = self.state.apply(event)
        if not live(self.console):
            if step:
                print_line(self.console, "rlm: " + self.state.line())
            return
        if self._live is None:
            self._start()
        assert self._live is not None and self._task is not None
        state = self.state
        self._live.update(self._task, completed=state.turn, total=state.max_turns, **self._fields())

    def _start(self) -> None:
        self._live = Progress(
            SpinnerColumn(),
            TextColumn("turn {task.fields[turns]}"),
            BarColumn(bar_width=16),
            TextColumn("{task.fields[action]}"),
            TextColumn("sub-calls {task.fields[sub_calls]}"),
            TextColumn("tokens {task.fields[tokens]}"),
            TextColumn("{task.fields[cost]}"),
            TimeElapsedColumn(),
            console=self.console,
            redirect_stdout=False,
        )
        self._task = self._live.add_task(
            "run", total=self.state.max_turns, completed=self.state.turn, **self._fields()
        )
        self._live.start()

    def _fields(self) -> dict[str, Any]:
        # Any: rich's update()/add_task() take these as **fields next to typed parameters.
        state = self.state
        return {
            "turns": state.turns,
            "action": escape(state.action),
            "sub_calls": str(state.sub_calls),
            "tokens": f"{state.tokens:,}",
            "cost": escape(f"${state.cost_usd:.4f}"),
        }

    def close(self) -> None:
        """Stop the live display (a no-op in plain mode or before the first event)."""
        if self._live is not None:
            self._live.stop()
            self._live = None
