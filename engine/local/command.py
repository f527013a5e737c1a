"""The command line of the local model server: ``python -m engine.local`` and its flags.

``rlm model serve`` shares the flags (:func:`add_serve_arguments`, :func:`options_from_args`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.errors import LocalModelError
from engine.local.leases import ServerLeases
from engine.local.serve import (
    DEFAULT_CTX_SIZE,
    DEFAULT_PORT,
    ServeOptions,
    default_port,
    serve_forever,
)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The serve flags shared by ``rlm model serve`` and ``python -m engine.local``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"default $RLM_LOCAL_MODEL_PORT or {DEFAULT_PORT}",
    )
    parser.add_argument(
        "--ctx-size",
        type=int,
        default=DEFAULT_CTX_SIZE,
        help=f"context size in tokens, shared by the slots (default {DEFAULT_CTX_SIZE})",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: all cores)"
    )


def options_from_args(
    args: argparse.Namespace, model_path: Path, alias: str | None = None
) -> ServeOptions:
    """Build :class:`ServeOptions` from parsed serve flags."""
    if args.ctx_size < 512:
        raise LocalModelError("--ctx-size must be at least 512 tokens")
    return dataclasses.replace(
        ServeOptions(model_path=model_path),
        host=args.host,
        port=args.port if args.port is not None else default_port(),
        ctx_size=args.ctx_size,
        threads=args.threads,
        alias=alias or ServeOptions.alias,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m engine.local``: serve one model file until stopped."""
    parser = argparse.ArgumentParser(prog="python -m engine.local")
    parser.add_argument("--model", type=Path, required=True, help="path of the GGUF file")
    parser.add_argument(
        "--lease-dir",
        type=Path,
        default=None,
        help="stop once no process holds a lease in this directory (set by the engine)",
    )
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    try:
        serve_forever(
            options_from_args(args, args.model),
            on_ready=lambda url: print(f"ready {url}", flush=True),
            leases=ServerLeases(args.lease_dir) if args.lease_dir else None,
        )
    except LocalModelError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
