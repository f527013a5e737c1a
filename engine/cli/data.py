"""``rlm data``: fetch, import and list the source data the benchmarks are generated from."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.data.registry import REGISTRY, Registry


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``rlm data pull|list``."""
    parser = subparsers.add_parser(
        "data",
        help="fetch and list benchmark source data",
        description=(
            "Benchmark source data (RULER's Paul Graham essays, the TREC questions) lives in "
            "$RLM_DATA_DIR, else ~/.cache/rlm/data. Every file is checked by size and sha256."
        ),
    )
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    def dir_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            help="data directory (default $RLM_DATA_DIR or ~/.cache/rlm/data)",
        )

    pull = sub.add_parser(
        "pull",
        help="download (or import with --from) and verify benchmark data; no-op when present",
        description=(
            "Download each benchmark's source files from their official places (no-op for "
            "files already present and verified). With --from DIR, copy them from a local "
            "mirror instead, verifying each; nothing is downloaded."
        ),
    )
    pull.add_argument(
        "benches",
        nargs="*",
        metavar="BENCH",
        help=f"benchmarks whose data to get (default: all of {', '.join(REGISTRY.benches)})",
    )
    pull.add_argument(
        "--from",
        dest="mirror",
        type=Path,
        default=None,
        metavar="DIR",
        help="import from a local directory holding the files (same names) instead",
    )
    dir_flag(pull)
    pull.add_argument("--quiet", action="store_true", help="print nothing but errors")
    pull.set_defaults(func=_pull)

    listing = sub.add_parser("list", help="show which benchmark data is present and verified")
    dir_flag(listing)
    listing.set_defaults(func=_list)


def pull_command(args: argparse.Namespace, registry: Registry = REGISTRY) -> int:
    """``rlm data pull`` against ``registry`` (the built-in one unless a caller passes another)."""
    from engine.data.fetch import import_mirror, pull
    from engine.data.paths import default_data_dir

    files = registry.files(args.benches)
    root = (args.data_dir or default_data_dir()).expanduser()
    report = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    if not files:
        if not args.quiet:
            print(f"{', '.join(args.benches)}: generated, no data to fetch")
        return 0
    if args.mirror is not None:
        placed = import_mirror(files, args.mirror, root, report=report)
    else:
        placed = pull(files, root, report=report)
    if not args.quiet:
        for p in placed:
            print(f"{p.path}  ok ({p.form.label}; {p.origin})")
    return 0


def _pull(args: argparse.Namespace) -> int:
    return pull_command(args)


def list_command(args: argparse.Namespace, registry: Registry = REGISTRY) -> int:
    """``rlm data list``: each benchmark's files and whether a verified copy is present."""
    from engine.data.fetch import check
    from engine.data.paths import default_data_dir

    root = (args.data_dir or default_data_dir()).expanduser()
    print(f"data directory: {root}")
    rows: list[tuple[str, str, str]] = []
    for file in registry.files():
        state = check(file, root)
        if state.form is not None:
            text = f"ok ({state.form.label})"
        elif state.exists:
            text = "NOT a known copy (rlm data pull replaces it)"
        else:
            text = "missing (rlm data pull)"
        rows.append((", ".join(registry.benches_of(file)), file.path, text))
    for name, files in registry.benches.items():
        if not files:
            rows.append((name, "-", "generated, needs no data"))
    for name, where in registry.manual.items():
        folder = where.rsplit("<data dir>/", 1)[-1].rstrip("/")
        present = (root / folder).is_dir() and any((root / folder).iterdir())
        rows.append((name, folder + "/", "present" if present else f"absent ({where})"))
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    print(f"{'BENCHMARKS':<{width[0]}}  {'FILE':<{width[1]}}  STATE")
    for bench, path, text in rows:
        print(f"{bench:<{width[0]}}  {path:<{width[1]}}  {text}")
    return 0


def _list(args: argparse.Namespace) -> int:
    return list_command(args)
