"""``rlm image``, ``rlm sandbox`` and ``rlm doctor``."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import anyio

from engine.cli.run import add_context_arguments, context_from_args
from engine.errors import ConfigError
from engine.settings import DEFAULT_CELL_TIMEOUT_S


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    image = sub.add_parser("image", help="build the sandbox image")
    image_sub = image.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    build = image_sub.add_parser("build", help="build (or reuse) the sandbox image, offline")
    build.add_argument("--tag", default=None, help="image tag (default rlm-sandbox:latest)")
    build.add_argument("--base", default=None, help="base image with python3 (default: bootstrap)")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.set_defaults(func=_image_build)

    sandbox = sub.add_parser("sandbox", help="run code in a fresh sandbox, reap leftovers")
    sandbox_sub = sandbox.add_subparsers(dest="sandbox_command", metavar="ACTION", required=True)
    run = sandbox_sub.add_parser("exec", help="run code in a fresh sandbox and print its output")
    run.add_argument("--code", required=True, help="Python code to run ('-' reads stdin)")
    # The same context flags as `rlm run`, prepared the same way (.gitignore, binary skip,
    # PDF/DOCX/HTML to text), so what a cell sees here is what a run's root would see.
    add_context_arguments(
        run, "context file or folder, '-' for standard input (repeatable, as for rlm run)"
    )
    run.add_argument(
        "--cell-timeout",
        "--timeout",  # the flag's earlier name, still accepted
        dest="cell_timeout",
        type=float,
        default=DEFAULT_CELL_TIMEOUT_S,
        help="seconds the cell may run (default %(default)g; RLM_CELL_TIMEOUT is for rlm run)",
    )
    run.add_argument("--memory", default=None, help="memory limit, e.g. 1g")
    run.add_argument("--runtime", default=None, help="Docker runtime, e.g. runsc (gVisor)")
    run.add_argument("--json", action="store_true", help="print the full result as JSON")
    run.set_defaults(func=_sandbox_exec)
    reap = sandbox_sub.add_parser("reap", help="remove sandboxes left by dead orchestrators")
    reap.add_argument("--all", action="store_true", help="remove every engine sandbox")
    reap.set_defaults(func=_sandbox_reap)

    doctor = sub.add_parser("doctor", help="check Docker, the image and the sandbox limits")
    doctor.add_argument("--runtime", default=None, help="also check this Docker runtime")
    doctor.set_defaults(func=_doctor)


def _image_build(args: argparse.Namespace) -> int:
    from engine.sandbox.config import DEFAULT_IMAGE
    from engine.sandbox.image import build_image

    def say(message: str) -> None:
        print(message, file=sys.stderr)

    result = build_image(args.tag or DEFAULT_IMAGE, base=args.base, force=args.force, progress=say)
    state = "up to date" if result.cached else "built"
    print(f"{result.tag} {state} in {result.seconds:.1f} s")
    return 0


def _sandbox_exec(args: argparse.Namespace) -> int:
    from engine.sandbox import Sandbox, SandboxConfig, parse_size

    if args.code == "-" and "-" in (args.context or []):
        raise ConfigError("--code - and --context - both read standard input; give one a file")
    code = sys.stdin.read() if args.code == "-" else args.code
    overrides: dict[str, object] = {}
    if args.memory:
        overrides["memory_bytes"] = parse_size(args.memory)
    if args.runtime:
        overrides["runtime"] = args.runtime
    config = SandboxConfig.from_env(**overrides)

    async def main() -> int:
        from engine.contexts import PreparedContext, prepare_context

        prepared: PreparedContext | None = None
        with tempfile.TemporaryDirectory(prefix="rlm-exec-") as scratch:
            spec = context_from_args(args, Path(scratch))
            try:
                if spec is not None:
                    prepared = await anyio.to_thread.run_sync(
                        prepare_context, spec, config.run_root, "ctx-exec", config.max_context_bytes
                    )
                context = None if prepared is None else prepared.path
                async with Sandbox(config, context=context) as sandbox:
                    result = await sandbox.execute(code, cell_timeout_s=args.cell_timeout)
            finally:
                if prepared is not None:
                    prepared.cleanup()
        if args.json:
            payload = {
                "stdout": result.stdout,
                "stderr": result.stderr,
                "result": result.result,
                "error": None if result.error is None else vars(result.error),
                "duration_s": round(result.duration_s, 4),
                "truncated": result.truncated,
                "timed_out": result.timed_out,
                "context": None if sandbox.context_info is None else vars(sandbox.context_info),
            }
            print(json.dumps(payload, indent=2))
        else:
            if result.stdout:
                sys.stdout.write(result.stdout)
            if result.stderr:
                sys.stderr.write(result.stderr)
            if result.result is not None:
                print(result.result)
            if result.error is not None:
                print(result.error.traceback or result.error.evalue, file=sys.stderr)
        return 0 if result.ok else 1

    return anyio.run(main)


def _sandbox_reap(args: argparse.Namespace) -> int:
    from engine.sandbox import reap_orphans

    count = reap_orphans(all_owners=args.all)
    print(f"removed {count} sandbox container(s)")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from engine.cli.doctor import all_checks

    ok = True
    for check in all_checks(runtime=args.runtime):
        mark = "ok  " if check.ok else "warn" if check.optional else "FAIL"
        print(f"[{mark}] {check.name}: {check.detail}")
        if not check.ok and check.fix:
            print(f"       fix: {check.fix}")
        ok = ok and (check.ok or check.optional)
    return 0 if ok else 1
