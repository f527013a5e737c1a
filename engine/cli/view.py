"""``rlm view TRAJECTORY.jsonl``: open a trajectory in the viewer as a local web page.

The page is self-contained (the viewer's CSS and JS and the events are inlined), so it works
from ``file://`` without the service and can be mailed or archived.
"""

from __future__ import annotations

import argparse
import json
import sys
import webbrowser
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.user_files import read_jsonl


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``view`` sub-command."""
    parser = subparsers.add_parser(
        "view",
        help="open a trajectory (JSONL) in the trajectory viewer",
        description="Render a trajectory file as a self-contained HTML page and open it.",
    )
    parser.add_argument("trajectory", type=Path, metavar="TRAJECTORY.jsonl")
    parser.add_argument(
        "--out", type=Path, default=None, help="HTML file to write (default: next to the file)"
    )
    parser.add_argument(
        "--no-open", dest="open", action="store_false", help="write the page, do not open it"
    )
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Write the page, print its path, open it in a browser."""
    events = read_events(args.trajectory)
    out = args.out or args.trajectory.with_suffix(".html")
    try:
        out.write_text(render_page(events), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror}; choose another --out") from exc
    print(out.resolve())
    if args.open and not webbrowser.open(out.resolve().as_uri()):
        print("rlm: no browser found; open the file above yourself", file=sys.stderr)
    return 0


def read_events(path: Path) -> list[dict[str, Any]]:
    """Read a trajectory file; clear errors for a missing file or a bad line (the file may
    have been handed to the user: read bounded, see engine/user_files.py)."""
    events: list[dict[str, Any]] = []
    for number, event in read_jsonl(path, "trajectory"):
        if not isinstance(event, dict) or "type" not in event or "id" not in event:
            raise ConfigError(f"{path}:{number} is not a trajectory event (no id/type)")
        events.append(event)
    if not events:
        raise ConfigError(f"{path} holds no events")
    return events


def render_page(events: list[dict[str, Any]]) -> str:
    """The viewer's index.html with its CSS, JS and the events inlined."""
    from engine.service.app import viewer_dir

    folder = viewer_dir()
    page = (folder / "index.html").read_text(encoding="utf-8")
    css = (folder / "viewer.css").read_text(encoding="utf-8")
    js = (folder / "viewer.js").read_text(encoding="utf-8")
    # No "<" in the script element at all: "</script>" would end it early, and "<!--<script>"
    # (text a model or a cell can print) keeps it open past its end tag, swallowing the
    # viewer's code. JSON has "<" only inside strings, where \u003c means the same.
    data = json.dumps(events, ensure_ascii=False).replace("<", "\\u003c")
    page = page.replace('<link rel="stylesheet" href="viewer.css">', f"<style>\n{css}</style>")
    page = page.replace(
        "<!--RLM-DATA-->", f'<script id="rlm-data" type="application/json">{data}</script>'
    )
    return page.replace('<script src="viewer.js"></script>', f"<script>\n{js}</script>")
