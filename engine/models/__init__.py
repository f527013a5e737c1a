"""Model access: litellm client, call scheduler, usage ledger, record/replay.

The replay server is the project's one test double: an OpenAI-compatible HTTP server that
answers from a JSONL cassette (scripted by hand or recorded from a real run).
"""

from __future__ import annotations

from engine.models._litellm import load_litellm
from engine.models.cassette import Cassette, CassetteEntry, CassetteRecorder, request_hash
from engine.models.client import Completion, ModelClient
from engine.models.messages import normalize_messages
from engine.models.replay import ReplayServer
from engine.models.scheduler import CallScheduler, RetriesExhaustedError
from engine.models.spec import ModelSpec, replay_spec, wire_model
from engine.models.usage import Usage, UsageLedger

__all__ = [
    "CallScheduler",
    "Cassette",
    "CassetteEntry",
    "CassetteRecorder",
    "Completion",
    "ModelClient",
    "ModelSpec",
    "ReplayServer",
    "RetriesExhaustedError",
    "Usage",
    "UsageLedger",
    "load_litellm",
    "normalize_messages",
    "replay_spec",
    "request_hash",
    "wire_model",
]
