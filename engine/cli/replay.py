"""``rlm replay serve CASSETTE``: run the OpenAI-compatible replay server in the foreground."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

import anyio

from engine.models.replay import ReplayServer


def register(subparsers: Any) -> None:
    """Add the ``replay`` command and its ``serve`` sub-command."""
    parser = subparsers.add_parser(
        "replay",
        help="serve recorded or scripted model responses",
        description="Replay model responses from a JSONL cassette over an OpenAI-compatible API.",
    )
    actions = parser.add_subparsers(dest="replay_command", metavar="ACTION", required=True)
    serve = actions.add_parser(
        "serve",
        help="serve a cassette until Ctrl-C",
        description=(
            "Serve CASSETTE at http://HOST:PORT/v1 (POST /v1/chat/completions, GET /v1/models). "
            "The base URL is printed on stdout; point a model at it with "
            "model=openai/<name>, api_base=<url>."
        ),
    )
    serve.add_argument("cassette", type=Path, metavar="CASSETTE", help="JSONL cassette file")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="port (default 0: pick a free one)")
    serve.set_defaults(func=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    """Serve until interrupted; return 0 on Ctrl-C."""
    server = ReplayServer(args.cassette, host=args.host, port=args.port)

    async def main() -> None:
        async with server:
            # Listen for Ctrl-C (and SIGTERM) before the URL is printed: a client that got
            # the URL may signal at once. Stopping is then a normal return, not an interrupt
            # that lands wherever the event loop happens to be.
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                print(server.base_url, flush=True)
                print(
                    f"rlm: replaying {len(server.cassette)} entries from {args.cassette}; "
                    "Ctrl-C to stop",
                    file=sys.stderr,
                    flush=True,
                )
                async for _ in signals:
                    break

    anyio.run(main)
    print(f"rlm: replay server stopped after {len(server.requests)} requests", file=sys.stderr)
    return 0
