"""The two export formats, one JSON object per line.

**SFT** (``to_sft``): OpenAI chat fine-tuning format, one line per root run::

    {"messages": [{"role": "system", ...}, {"role": "user", ...}, {"role": "assistant", ...}, ...],
     "metadata": {"task_id", "depth", "stop_reason", "ready", "score", "source"}}

With ``sub_calls``, each ``llm_query`` of the run is also a line of its own
(``[{"role": "user", prompt}, {"role": "assistant", response}]``, metadata ``kind``).

**Rollout** (``to_rollout``): one line per run, in the column layout of verifiers-style RL
trainers (prime-rl reads ``prompt``/``completion``/``reward``)::

    {"prompt": [system, user],            # what the run started from
     "completion": [assistant, user, ...], # the rest of the conversation, ending on the last reply
     "answer": str, "reward": float,       # the run's final reward
     "turn_rewards": [float, ...],         # one per assistant turn; sum == reward
     "turns": [{"iteration", "errors", "timeouts", "nudges", "answer_ready"}, ...],
     "info": {"task_id", "depth", "stop_reason", "ready", "score", "source", "usage"}}

Rewards: the run's reward is its score when one is known (an eval's scorer), else 1.0 for a
ready answer and 0.0 otherwise. Per-turn rewards put the whole reward on the last turn (the RLM
gets its outcome only at the end); trainers that want shaping can derive it from ``turns``.
"""

from __future__ import annotations

from typing import Any

from engine.export.runs import RootRun


def _metadata(run: RootRun, score: float | None, source: str) -> dict[str, Any]:
    return {
        "task_id": run.task_id,
        "depth": run.depth,
        "stop_reason": run.stop_reason,
        "ready": run.ready,
        "score": score,
        "source": source,
    }


def run_reward(run: RootRun, score: float | None) -> float:
    """The run's reward: its score if known, else 1.0 for a ready answer, 0.0 otherwise."""
    if score is not None:
        return float(score)
    return 1.0 if run.ready else 0.0


def to_sft(
    run: RootRun, *, score: float | None, source: str, sub_calls: bool = False
) -> list[dict[str, Any]]:
    """The SFT lines of one run (the root conversation, then its sub-calls if asked)."""
    lines: list[dict[str, Any]] = []
    if run.turns:
        lines.append({"messages": run.conversation(), "metadata": _metadata(run, score, source)})
    if sub_calls:
        for call in run.sub_calls:
            if call.status not in (None, "ok") or not call.response:
                continue
            lines.append(
                {
                    "messages": [
                        {"role": "user", "content": call.prompt},
                        {"role": "assistant", "content": call.response},
                    ],
                    "metadata": {**_metadata(run, score, source), "kind": call.kind},
                }
            )
    return lines


def to_rollout(run: RootRun, *, score: float | None, source: str) -> dict[str, Any] | None:
    """The rollout line of one run, or ``None`` for a run with no turn."""
    if not run.turns:
        return None
    chat = run.conversation()
    first = run.turns[0].messages
    reward = run_reward(run, score)
    turn_rewards = [0.0] * len(run.turns)
    turn_rewards[-1] = reward
    return {
        "prompt": first,
        "completion": chat[len(first) :],
        "answer": run.answer,
        "reward": reward,
        "turn_rewards": turn_rewards,
        "turns": [
            {
                "iteration": t.iteration,
                "errors": t.errors,
                "timeouts": t.timeouts,
                "nudges": t.nudges,
                "answer_ready": t.answer_ready,
            }
            for t in run.turns
        ],
        "info": {**_metadata(run, score, source), "usage": run.usage},
    }
