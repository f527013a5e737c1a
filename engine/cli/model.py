"""``rlm model``: fetch, locate and serve the embedded local model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio

from engine.errors import LocalModelError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``rlm model pull|serve|path|list``."""
    parser = subparsers.add_parser(
        "model",
        help="download, locate and serve the embedded local model",
        description="The embedded local model (Qwen2.5-Coder-1.5B-Instruct, GGUF, Apache-2.0).",
    )
    sub = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)

    def cache_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--cache-dir",
            type=Path,
            default=None,
            help="model cache (default $RLM_MODEL_CACHE or ~/.cache/rlm/models)",
        )

    pull = sub.add_parser("pull", help="download and verify a model (no-op when present)")
    pull.add_argument("name", nargs="?", default=None, help="model name or alias (default: qwen)")
    cache_flag(pull)
    pull.add_argument("--quiet", action="store_true", help="no progress bar")
    pull.set_defaults(func=_pull)

    path = sub.add_parser("path", help="print the path of a pulled, verified model file")
    path.add_argument("name", nargs="?", default=None)
    cache_flag(path)
    path.set_defaults(func=_path)

    listing = sub.add_parser("list", help="list the models rlm knows")
    cache_flag(listing)
    listing.set_defaults(func=_list)

    from engine.local.command import add_serve_arguments

    serve = sub.add_parser("serve", help="serve the model OpenAI-compatibly until Ctrl-C")
    add_serve_arguments(serve)
    serve.add_argument("--model", dest="name", default=None, help="model name or alias")
    cache_flag(serve)
    serve.set_defaults(func=_serve)


def _pull(args: argparse.Namespace) -> int:
    from engine.local.pull import pull_model

    print(pull_model(args.name, args.cache_dir, progress=not args.quiet))
    return 0


def _path(args: argparse.Namespace) -> int:
    from engine.local.catalog import get_entry
    from engine.local.pull import find_model

    found = find_model(args.name, args.cache_dir)
    if found is None:
        entry = get_entry(args.name)
        raise LocalModelError(
            f"model {entry.name} is not pulled (or failed verification); run `rlm model pull`"
        )
    print(found)
    return 0


def _list(args: argparse.Namespace) -> int:
    from engine.local.catalog import CATALOG, DEFAULT_MODEL
    from engine.local.pull import find_model

    for entry in CATALOG.values():
        mark = "*" if entry.name == DEFAULT_MODEL else " "
        state = "pulled" if find_model(entry, args.cache_dir) else "not pulled"
        print(
            f"{mark} {entry.name}  alias={entry.alias}  {entry.size / 1e9:.2f} GB  "
            f"{entry.license}  {state}"
        )
    return 0


def _serve(args: argparse.Namespace) -> int:
    from engine.local.catalog import get_entry
    from engine.local.command import options_from_args
    from engine.local.pull import pull_model
    from engine.local.serve import default_port, serve_forever
    from engine.local.server import ServerInfo, probe

    if args.port is None:
        args.port = default_port()
    found = anyio.run(probe, args.host, args.port)
    if isinstance(found, ServerInfo):
        raise LocalModelError(
            f"a model server ({found.alias}) is already serving at {found.base_url}; "
            "use it, or stop it first, or pass another --port"
        )
    if found is not None:
        raise LocalModelError(f"port {args.port} is in use ({found}); pass another --port")
    entry = get_entry(args.name)
    model_path = pull_model(entry, args.cache_dir, progress=True)
    opts = options_from_args(args, model_path, alias=entry.alias)

    def ready(url: str) -> None:
        print(f"serving {entry.alias} at {url} (Ctrl-C to stop)", flush=True)

    serve_forever(opts, on_ready=ready)
    print("stopped", file=sys.stderr)
    return 0
