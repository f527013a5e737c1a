"""``rlm serve`` (also ``python -m engine.service``): the HTTP service (jobs API,
OpenAI-compatible chat, trajectory viewer).

Every flag but ``--no-auth`` is a setting of :mod:`engine.settings` (the service's own, such
as ``--port`` or ``--data-dir``, too), so each also has an ``RLM_*`` variable and a key in
the config file. Model and budget flags are those of ``rlm run``. The budgets the operator
sets (flags, environment, config file) are a job's defaults and ceilings: a job may lower
them, never raise them (422 naming the ceiling); budgets left unset get the safe ceilings of
:mod:`engine.settings`. API keys come from ``$RLM_API_KEYS`` (comma-separated).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.config import build_config, load_values
from engine.errors import ConfigError
from engine.settings import add_arguments, flag_values, service_ceilings, value_of

if TYPE_CHECKING:
    from engine.service.jobs import ServiceSettings


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """Every flag of ``rlm serve`` but ``--no-auth``: the service's own (host, port, data
    dir, ...), model, budget, session, tool and replay flags (see :mod:`engine.settings`)."""
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
    # A plain flag, not a setting: turning authentication off must be a visible choice on the
    # command line, never a variable left in an environment or a line in a config file.
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

    from engine.service import ApiKeys, JobService, create_app, open_store
    from engine.service.http_protocol import HeadDeadlineProtocol

    # What the operator set (flags, environment, file) is also the most a job may ask for.
    # Every value is parsed and checked against its declared minimum as it is read.
    values = load_values(flag_values(args, "serve"), config_file=args.config)
    config = build_config(values)
    if config.replay is not None and not config.replay.is_file():
        raise ConfigError(f"replay cassette {config.replay} does not exist; check --replay")
    settings = service_settings(values)
    url = settings.database_url
    host, port = value_of(values, "host"), value_of(values, "port")
    keys = ApiKeys.from_env(enabled=not args.no_auth)
    metrics_keys = ApiKeys.metrics_from_env(enabled=not args.no_auth)
    with open_store(settings.store_target) as store:
        service = JobService(store, config, settings)
        app = create_app(service, keys, metrics_keys)
        print(
            f"rlm: serving on http://{host}:{port} (data dir {settings.data_dir}"
            + (", jobs in PostgreSQL, shared with other replicas)" if url else ")"),
            file=sys.stderr,
            flush=True,
        )
        server = _server_class()(
            uvicorn.Config(
                app,
                host=host,
                port=port,
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


def service_settings(values: Mapping[str, Any]) -> ServiceSettings:
    """The service's knobs from layered settings (:func:`engine.config.load_values`: flags >
    environment > config file), each missing one at its declared default."""
    from engine.service import ServiceSettings
    from engine.service.allowlist import load_allow_list

    return ServiceSettings(
        data_dir=value_of(values, "data_dir").expanduser().resolve(),
        max_sandboxes=value_of(values, "max_sandboxes"),
        max_jobs_per_key=value_of(values, "max_jobs_per_key"),
        max_upload_bytes=value_of(values, "max_upload"),
        max_storage_per_key=value_of(values, "max_storage_per_key") or None,
        retention_days=value_of(values, "retention_days"),
        database_url=value_of(values, "database_url"),
        lease_s=value_of(values, "lease_seconds"),
        ceilings=service_ceilings(values),
        session_idle_s=value_of(values, "session_idle"),
        max_sessions_per_key=value_of(values, "max_sessions_per_key"),
        max_streams_per_key=value_of(values, "max_streams_per_key"),
        max_session_kernels=value_of(values, "max_session_kernels"),
        models=load_allow_list(value_of(values, "models")),
    )


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
