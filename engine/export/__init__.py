"""Training data from trajectories: SFT chat JSONL and a rollout format with per-turn rewards.

``rlm export`` (``engine.cli.export``) reads trajectory files, an eval's ``results.jsonl`` (which
adds each item's score) or a service's jobs, and writes one of two formats; see
:mod:`engine.export.formats` for both, documented in ``docs/export.md``.
"""

from engine.export.formats import to_rollout, to_sft
from engine.export.runs import RootRun, runs_from_events
from engine.export.sources import Source, eval_sources, service_sources, trajectory_sources

__all__ = [
    "RootRun",
    "Source",
    "eval_sources",
    "runs_from_events",
    "service_sources",
    "to_rollout",
    "to_sft",
    "trajectory_sources",
]
