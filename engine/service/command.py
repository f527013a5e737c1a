"""``rlm serve`` (also ``python -m engine.service``): the HTTP service (jobs API,
OpenAI-compatible chat, trajectory viewer).

Model and budget flags are those of ``rlm run``. The budgets the operator sets (flags,
environment, config file) are a job's defaults and ceilings: a job may lower them, never raise
them (422 naming the ceiling); budgets left unset get the safe ceilings of
:mod:`engine.settings`. API keys come from ``$RLM_API_KEYS`` (comma-separated).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.config import build_config, load_values
from engine.errors import ConfigError
from engine.settings import add_arguments, flag_values, parse_size, service_ceilings, setting

DEFAULT_PORT = 8080


def default_data_dir() -> Path:
    """``$RLM_SERVICE_DATA_DIR`` or ``~/.local/share/rlm/service``."""
    configured = os.environ.get("RLM_SERVICE_DATA_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".local" / "share" / "rlm" / "service"


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """The model, budget, tool and replay flags (see :mod:`engine.settings`)."""
    add_arguments(parser, "serve")
    parser.add_argument("--config", type=Path, help="TOML config file")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``serve`` sub-command."""
    parser = subparsers.add_parser(
        "serve",
        help="serve the HTTP API (jobs, OpenAI-compatible chat, trajectory viewer)",
        description=(
            "Serve RLM jobs over HTTP. Clients authenticate with 'Authorization: Bearer <key>' "
            "using a key from $RLM_API_KEYS (comma-separated); GET /metrics needs a key from "
            "$RLM_METRICS_KEYS (the operator's). Jobs are stored in SQLite under "
            "--data-dir, or in PostgreSQL with --database-url (then any number of replicas "
            "share the queue), and survive restarts. OpenAPI document: GET /openapi.json."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="jobs database and uploads (default $RLM_SERVICE_DATA_DIR or "
        "~/.local/share/rlm/service)",
    )
    parser.add_argument(
        "--max-sandboxes", type=int, default=4, help="jobs running at once (default 4)"
    )
    parser.add_argument(
        "--max-jobs-per-key",
        type=int,
        default=16,
        help="queued + running jobs one API key may have (default 16)",
    )
    parser.add_argument("--max-upload", default="1g", help="largest upload (default 1g)")
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        help="TOML file of the models jobs may name ([models.NAME] with model, api_base, "
        "api_key_env, prices; default $RLM_SERVICE_MODELS); the service's own --model and "
        "--sub-model are always allowed",
    )
    parser.add_argument(
        "--max-storage-per-key",
        default="10g",
        help="bytes one API key may keep (uploads, inline contexts, trajectories; default 10g; "
        "0 = no quota)",
    )
    parser.add_argument(
        "--retention-days",
        type=float,
        default=None,
        help="delete ended jobs, closed sessions and unused uploads older than this many days "
        "(default: keep)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("RLM_DATABASE_URL") or None,
        help="keep jobs in PostgreSQL (postgresql://user:password@host:port/db, default "
        "$RLM_DATABASE_URL) so several replicas share them; default: SQLite in --data-dir",
    )
    parser.add_argument(
        "--lease-seconds",
        dest="lease_s",
        type=float,
        default=30.0,
        help="with --database-url: a replica that stops renewing its job leases for this long "
        "is presumed dead and its jobs run elsewhere (default 30)",
    )
    parser.add_argument(
        "--no-auth",
        action="store_true",
        help="accept requests without an API key (trusted networks only)",
    )
    add_model_flags(parser)
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Run the service until SIGINT/SIGTERM."""
    import uvicorn

    from engine.service import ApiKeys, JobService, ServiceSettings, create_app, open_store
    from engine.service.allowlist import load_allow_list
    from engine.service.http_protocol import HeadDeadlineProtocol

    # What the operator set (flags, environment, file) is also the most a job may ask for.
    values = load_values(flag_values(args), config_file=args.config)
    config = build_config(values)
    if config.replay is not None and not config.replay.is_file():
        raise ConfigError(f"replay cassette {config.replay} does not exist; check --replay")
    for name in ("max_sandboxes", "max_jobs_per_key"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    url = args.database_url
    if url is not None and not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"--database-url must be a postgresql:// URL, not {url.split('://')[0]!r}; leave "
            "it out to use SQLite in --data-dir"
        )
    if args.lease_s < 3:
        raise ConfigError("--lease-seconds must be at least 3")
    try:
        max_upload = parse_size(args.max_upload)
        max_storage = parse_size(args.max_storage_per_key)
    except ValueError as exc:
        raise ConfigError(f"--max-upload / --max-storage-per-key: {exc}") from exc
    if args.retention_days is not None and args.retention_days <= 0:
        raise ConfigError("--retention-days must be greater than 0")
    settings = ServiceSettings(
        data_dir=(args.data_dir or default_data_dir()).expanduser().resolve(),
        max_sandboxes=args.max_sandboxes,
        max_jobs_per_key=args.max_jobs_per_key,
        max_upload_bytes=max_upload,
        max_storage_per_key=max_storage or None,
        retention_days=args.retention_days,
        database_url=url,
        lease_s=args.lease_s,
        ceilings=service_ceilings(values),
        session_idle_s=values.get("session_idle", setting("session_idle").default),
        max_sessions_per_key=values.get(
            "max_sessions_per_key", setting("max_sessions_per_key").default
        ),
        max_streams_per_key=values.get(
            "max_streams_per_key", setting("max_streams_per_key").default
        ),
        max_session_kernels=values.get(
            "max_session_kernels", setting("max_session_kernels").default
        ),
        models=load_allow_list(args.models),
    )
    keys = ApiKeys.from_env(enabled=not args.no_auth)
    metrics_keys = ApiKeys.metrics_from_env(enabled=not args.no_auth)
    with open_store(settings.store_target) as store:
        service = JobService(store, config, settings)
        app = create_app(service, keys, metrics_keys)
        print(
            f"rlm: serving on http://{args.host}:{args.port} (data dir {settings.data_dir}"
            + (", jobs in PostgreSQL, shared with other replicas)" if url else ")"),
            file=sys.stderr,
            flush=True,
        )
        server = _server_class()(
            uvicorn.Config(
                app,
                host=args.host,
                port=args.port,
                lifespan="on",
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=10,
                # h11 with a deadline for request heads (stock uvicorn has none).
                http=HeadDeadlineProtocol,
            )
        )
        server.run()
        if not server.started:
            return 1
    return 0


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn that stops gracefully on SIGINT/SIGTERM and then exits with status 0
        (stock uvicorn re-raises the signal after shutting down)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            previous = {
                sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
            }
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server
