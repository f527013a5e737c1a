"""``python -m engine.service [serve flags]``: the same as ``rlm serve`` (used by the image)."""

import argparse
import sys

from engine.errors import RLMError
from engine.log import configure_logging
from engine.service.command import register


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.service")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", *sys.argv[1:]])
    configure_logging()
    try:
        return int(args.func(args) or 0)
    except RLMError as exc:
        print(f"rlm serve: error: {exc}", file=sys.stderr)
        return 1


sys.exit(main())
