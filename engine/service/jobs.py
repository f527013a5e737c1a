"""The job runner: admission control, one Engine run per job, events into the store.

:class:`JobService` owns, for the service's lifetime, the shared model endpoint (the replay
server or the embedded local model, via one base :class:`~engine.rlm.Engine`), a task group
with one task per submitted job, the sandbox slots and the retention sweeper. At most
``max_sandboxes`` sandboxes run at once, children of ``rlm_query`` included; waiting jobs take
turns between API keys (queued jobs survive a restart because the store holds them).
Per-key limits cap how many queued+running jobs and how many stored bytes one key may have.

Any error inside a job, the store's included, fails that job with a reason; nothing a job
does escapes into the shared task group.

On a shared (PostgreSQL) store the service is one replica of many: a
:class:`~engine.service.replicas.Replica` claims queued jobs from the shared queue instead of
this process scheduling the jobs it accepted (see ``replicas``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from engine.config import EngineConfig, Limits
from engine.errors import RLMError
from engine.lifecycle import AsyncResource
from engine.log import get_logger
from engine.models import ModelSpec
from engine.models.pricing import price_of, unpriced_message
from engine.rlm.slots import SandboxSlots
from engine.sandbox.pool import DEFAULT_SERVICE_POOL, WarmPool
from engine.service import local_data
from engine.service.allowlist import ModelAllowList
from engine.service.files import context_spec, local_record
from engine.service.metrics import Metrics
from engine.service.replicas import Replica, local_file, share_file
from engine.service.requests import (
    MAX_FILE_IDS,
    ApiError,
    JobRequest,
    capped_limits,
    check_ceilings,
    limits_with,
)
from engine.service.store import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SESSION_CLOSED,
    SUCCEEDED,
    ClaimLost,
    JobRecord,
    JobStore,
    KeyLimitReached,
    KeyLimits,
    QuotaExceeded,
    SessionRecord,
    StoreError,
    json_bytes,
)
from engine.service.store_pg import PgJobStore
from engine.settings import service_ceilings, setting
from engine.tools import ToolRegistry, ToolsConfig

if TYPE_CHECKING:
    from engine.rlm import Engine

log = get_logger(__name__)


@dataclass(frozen=True)
class ServiceSettings:
    """Knobs of ``rlm serve`` (defaults: the declarations of :mod:`engine.settings`)."""

    data_dir: Path
    max_sandboxes: int = setting("max_sandboxes").default
    max_jobs_per_key: int = setting("max_jobs_per_key").default
    max_upload_bytes: int = setting("max_upload").default
    max_inline_context_bytes: int = 64 << 20
    max_storage_per_key: int | None = setting("max_storage_per_key").default
    retention_days: float | None = None
    #: seconds a session may sit idle before its kernel is closed; open sessions per key
    session_idle_s: float = setting("session_idle").default
    max_sessions_per_key: int = setting("max_sessions_per_key").default
    #: live session kernels in this process, over all keys
    max_session_kernels: int = setting("max_session_kernels").default
    #: requests one key may hold open at once (event streams, waits, uploads)
    max_streams_per_key: int = setting("max_streams_per_key").default
    # The models jobs may name (besides the service's own root and sub model).
    models: ModelAllowList = field(default_factory=lambda: ModelAllowList({}))
    # A postgresql:// URL: the jobs live there, shared with other replicas (else SQLite).
    database_url: str | None = None
    lease_s: float = setting("lease_seconds").default
    #: the most a job may ask for, by budget (API name); the operator's limits, else the safe
    #: ceilings of engine.settings. A job that sets no budget gets the ceiling (or less).
    ceilings: Mapping[str, float] = field(default_factory=lambda: service_ceilings({}))

    @property
    def db_path(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    @property
    def store_target(self) -> str | Path:
        """What :func:`~engine.service.store.open_store` opens."""
        return self.database_url or self.db_path

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"


def new_job_id() -> str:
    """A job id; it is also the task id of the job's top-level sandbox (first attempt)."""
    return secrets.token_hex(8)


def attempt_task_id(job: JobRecord) -> str:
    """The task id (sandbox container and run dir name) of this attempt of ``job``: the job
    id, with the attempt number from the second attempt on. A re-run may start while the
    previous attempt's sandbox still exists on the same Docker host (a replica paused past
    its lease, or killed and not yet reaped), and two sandboxes cannot share a name."""
    return job.id if job.attempts <= 1 else f"{job.id}-{job.attempts}"


class JobService(AsyncResource):
    """Runs jobs from the store; use as an async context manager around the HTTP server."""

    def __init__(
        self,
        store: JobStore,
        base_config: EngineConfig,
        settings: ServiceSettings,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        limits = capped_limits(base_config.limits, settings.ceilings)
        self.base_config = dataclasses.replace(base_config, limits=limits)
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.slots = SandboxSlots(settings.max_sandboxes)
        self.ready = False
        self._root: ModelSpec | None = None
        #: the operator's host tools (from the config only), lent to every job.
        self.tools = ToolRegistry(ToolsConfig())
        self._sub: ModelSpec | None = None
        self.models = settings.models
        self._profile = base_config.prompt_profile
        self._tg: TaskGroup | None = None
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._user_cancelled: set[str] = set()
        self._store_failed: dict[str, str] = {}
        self._claim_lost: set[str] = set()
        self._changed: dict[str, anyio.Event] = {}
        self._uploading: dict[str, int] = {}
        self.replica: Replica | None = None
        self.pool: WarmPool | None = None
        from engine.service.sessions import SessionManager

        self.sessions = SessionManager(
            self,
            settings.session_idle_s,
            settings.max_sessions_per_key,
            max_kernels=settings.max_session_kernels,
        )

    # --- lifecycle ---------------------------------------------------------------------------

    def _allow_models(self, engine: Engine) -> None:
        """The models jobs may name: the operator's file plus the service's own two."""
        base = self.base_config
        root = base.model or engine.root_spec
        sub = base.sub_model or root
        allowed = self.settings.models.with_defaults(root, sub)
        self.models = ModelAllowList(
            {name: engine.as_called(spec) for name, spec in allowed.specs.items()}
        )
        self._root, self._sub = self.models.specs[root.model], self.models.specs[sub.model]

    def check_models(
        self, model: str | None, sub_model: str | None, limits: Limits
    ) -> tuple[ModelSpec, ModelSpec]:
        """A job's root and sub model from the allow-list (422 for any other name), and a
        422 when a cost cap applies to a model without a price."""
        assert self._root is not None and self._sub is not None
        root, sub = self._root, self._sub
        if model:
            root = sub = self.models.resolve(model, "model")
        if sub_model:
            sub = self.models.resolve(sub_model, "sub_model")
        if limits.max_cost_usd is not None:
            for spec, param in ((root, "model"), (sub, "sub_model")):
                if price_of(spec) is None:
                    message = unpriced_message(spec.model, service=True)
                    raise ApiError(422, "model_not_priced", message, param)
        return root, sub

    async def _open(self, stack: AsyncExitStack) -> None:
        from engine.rlm import Engine

        if isinstance(self.store, PgJobStore):
            from engine.service.replicas import Replica

            self.replica = Replica(self, self.store, self.settings.lease_s)
            # Never recover() here: the running jobs may belong to live replicas.
            recovery = self.replica.recover()
        else:
            recovery = self.store.recover()
        if recovery.failed or recovery.requeued:
            log.warning(
                "service.recovered",
                failed=recovery.failed,
                requeued=recovery.requeued,
            )
        await reap_leftovers()
        # Import litellm now (seconds) so that the first job does not pay for it.
        from engine.models import load_litellm

        await anyio.to_thread.run_sync(load_litellm)
        # Every job's sandboxes (children too) claim from one warm pool, within the slots.
        self.pool = await stack.enter_async_context(self._new_pool())
        # The base engine owns what every job shares: the replay server or local model.
        engine = await stack.enter_async_context(Engine(self.base_config, pool=self.pool))
        self._profile = engine.profile.name
        self._allow_models(engine)
        if self.replica is not None:
            # Runs after the task group ended: the jobs it cancelled go to others now.
            stack.callback(self.replica.release)
        # Its tools (MCP servers included) are opened once and lent to every job.
        self.tools = engine.tools
        self._tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(self._tg.cancel_scope.cancel)
        if self.replica is not None:
            self._tg.start_soon(self.replica.run)
        else:
            for job in self.store.jobs(status=QUEUED):
                self._tg.start_soon(self._run_job, job.id)
        if self.settings.retention_days is not None:
            self._tg.start_soon(self._sweep_forever, self.settings.retention_days)
        self._tg.start_soon(self._remove_orphans_forever)
        self._tg.start_soon(self.sessions.close_idle_forever)
        # Runs first on exit. Running jobs are cancelled but keep status "running": the next
        # start marks them failed ("service restarted") or runs them again, as after a crash.
        stack.callback(setattr, self, "ready", False)
        self.ready = True

    @property
    def root_model_name(self) -> str:
        """The root model's name as configured (shown by ``GET /v1/models``)."""
        if self.base_config.model is not None:
            return self.base_config.model.model
        return self._root.model if self._root is not None else "local"

    # --- submitting and cancelling -----------------------------------------------------------

    def submit(self, owner: str, request: JobRequest, *, kind: str = "job") -> JobRecord:
        """Store a job and schedule it; raises ApiError (429, 404, 413) when refused."""
        if self._tg is None:
            raise ApiError(503, "service_unavailable", "the service is starting or stopping")
        # Early refusals, before any work; the store checks again as it writes (atomically).
        active = self.store.count_active(owner)
        if active >= self.settings.max_jobs_per_key:
            raise too_many(KeyLimitReached("jobs", active, self.settings.max_jobs_per_key))
        limits = limits_with(self.base_config.limits, request.limits)
        self.check_models(request.model, request.sub_model, limits)
        self.check_files(owner, request.file_ids)
        job_id = new_job_id()
        stored = request.to_dict()
        stored_bytes = self.keep_request(owner, job_id, stored, request.context)
        if request.session_id is not None and self.replica is not None:
            return self._add_held(job_id, owner, kind, stored)
        with self.storing(job_id):
            job = self.store.add_job(
                job_id,
                owner=owner,
                kind=kind,
                request=stored,
                max_retries=request.max_retries,
                stored_bytes=stored_bytes,
                limits=self.job_limits,
            )
        if self.replica is not None:
            self.replica.poke()  # the first replica with a free slot claims it
        else:
            self._tg.start_soon(self._run_job, job_id)
        return job

    def check_files(self, owner: str, file_ids: tuple[str, ...]) -> None:
        """404 for a file id that does not exist or is another key's; 422 past
        :data:`~engine.service.requests.MAX_FILE_IDS` (checked before any lookup)."""
        if len(file_ids) > MAX_FILE_IDS:
            raise ApiError(
                422,
                "invalid_request_error",
                f"a job may name at most {MAX_FILE_IDS:,} files (got {len(file_ids):,}); "
                "upload many files as one archive (.zip, .tar.gz): it becomes a folder context",
                "file_ids",
            )
        for file_id in file_ids:
            record = self.store.get_file(file_id)
            if record is None or record.owner != owner:
                raise ApiError(
                    404,
                    "not_found",
                    f"no file {file_id!r}; upload it with POST /v1/files",
                    "file_id",
                )

    def _add_held(self, job_id: str, owner: str, kind: str, stored: dict[str, Any]) -> JobRecord:
        """A session message on a shared store: stored running under this replica's lease
        (never in the queue, so no other replica claims it) and started here."""
        assert self.replica is not None and self._tg is not None
        assert isinstance(self.store, PgJobStore)
        with self.storing(job_id):
            job = self.store.add_held(
                job_id,
                owner=owner,
                kind=kind,
                request=stored,
                replica=self.replica.id,
                lease_s=self.settings.lease_s,
                limits=self.job_limits,
            )
        self._tg.start_soon(self._run_held, job)
        return job

    async def _run_held(self, job: JobRecord) -> None:
        async with self.slots.job(job.owner):
            await self.run_started(job)

    def start_task(self, func: Any, *args: Any) -> None:
        """Run ``func(*args)`` in the service's task group (e.g. a session's actor)."""
        if self._tg is None:
            raise ApiError(503, "service_unavailable", "the service is starting or stopping")
        self._tg.start_soon(func, *args)

    def keep_request(self, owner: str, key: str, stored: dict[str, Any], context: Any) -> int:
        """Check that ``owner`` may keep the row ``stored`` (a job's or session's request, as
        JSON) and its inline ``context`` (None: none) within the storage quota, then write the
        context to ``<jobs dir>/<key>/`` (shared with the replicas) and name it in ``stored``.
        Returns the context's bytes (the store counts the row's JSON itself)."""
        if context is None:
            self.check_storage(owner, json_bytes(stored))
            return 0
        if isinstance(context, str):
            name, data = "context.txt", context.encode("utf-8")
        else:
            name, data = "context.json", json.dumps(context, ensure_ascii=False).encode("utf-8")
        if len(data) > self.settings.max_inline_context_bytes:
            raise ApiError(
                413,
                "context_too_large",
                f"the inline context is {len(data):,} bytes (limit "
                f"{self.settings.max_inline_context_bytes:,}); upload it with POST /v1/files",
                "context",
            )
        folder = self.settings.jobs_dir / key
        path = folder / name
        stored["context_path"] = str(path)
        self.check_storage(owner, len(data) + json_bytes(stored))
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Private (0600): the sandbox copies it into the run dir instead of bind-mounting.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        share_file(self.store, context_key(key), path)
        return len(data)

    @property
    def job_limits(self) -> KeyLimits:
        """What a key may hold when it adds a job: its storage quota and active jobs."""
        return KeyLimits(
            storage_bytes=self.settings.max_storage_per_key,
            active_jobs=self.settings.max_jobs_per_key,
        )

    @contextlib.contextmanager
    def storing(self, key: str) -> Iterator[None]:
        """Around the write of a job's or session's row (``key``, its id): when the store
        refuses it (past the quota: 413; past the key's jobs or sessions: 429; the database
        failed: 503), remove the inline context :meth:`keep_request` kept for it, so nothing
        is left that no row counts."""
        try:
            yield
        except (QuotaExceeded, KeyLimitReached, StoreError) as exc:
            shutil.rmtree(self.settings.jobs_dir / key, ignore_errors=True)
            if self.store.shared:
                with contextlib.suppress(StoreError):
                    self.store.delete_blob(context_key(key))
            if isinstance(exc, QuotaExceeded):
                raise quota_exceeded(exc.quota, exc.left) from exc
            if isinstance(exc, KeyLimitReached):
                raise too_many(exc) from exc
            raise ApiError(503, "service_unavailable", f"{exc}; retry later") from exc

    # --- storage: quota, deletion, retention -------------------------------------------------

    def storage_left(self, owner: str) -> int | None:
        """Bytes ``owner`` may still store (None: no quota), uploads in progress counted."""
        quota = self.settings.max_storage_per_key
        if quota is None:
            return None
        used = self.store.storage_used(owner) + self._uploading.get(owner, 0)
        return max(quota - used, 0)

    def check_storage(self, owner: str, more: int) -> None:
        """Raise 413 when storing ``more`` bytes would take ``owner`` past its quota (an early
        refusal before the work of a write; the store checks again, atomically, as it writes)."""
        left = self.storage_left(owner)
        if left is not None and more > left:
            raise quota_exceeded(self.settings.max_storage_per_key or 0, left)

    def uploading(self, owner: str, delta: int) -> None:
        """Count bytes of an upload in progress (negative when it ends) against the quota."""
        total = self._uploading.get(owner, 0) + delta
        if total > 0:
            self._uploading[owner] = total
        else:
            self._uploading.pop(owner, None)

    async def delete(self, job_id: str, wait_s: float = 30.0) -> None:
        """Cancel the job if it has not ended, then delete it, its events and its files
        (409 when it has not stopped within ``wait_s`` seconds)."""
        job = self.store.get_job(job_id)
        if job is not None and not job.final:
            self.cancel(job_id)
            with anyio.move_on_after(wait_s):
                job = await self.wait(job_id, poll_s=0.5)
            if not job.final:
                raise ApiError(
                    409, "conflict", f"job {job_id} is still stopping; retry the DELETE shortly"
                )
        # Files first, the record last: once the job answers 404 nothing of it is left on
        # disk (the other order let a client see 404 while its trajectory was still there).
        await anyio.to_thread.run_sync(
            lambda: shutil.rmtree(self.settings.jobs_dir / job_id, ignore_errors=True)
        )
        if job is not None and job.request.get("session_id"):
            # A session message's trajectory file is in its session's folder.
            folder = self.settings.jobs_dir / str(job.request["session_id"])
            (folder / f"{job_id}.jsonl").unlink(missing_ok=True)
        if self.store.shared:
            self.store.delete_blob(context_key(job_id))
        self.store.delete_job(job_id)
        self.forget(job_id)

    async def delete_file(self, file_id: str) -> None:
        """Delete an upload; 409 while a queued or running job reads it."""
        if file_id in self.store.files_in_use():
            raise ApiError(
                409,
                "conflict",
                f"file {file_id} is the context of a queued or running job; cancel or delete "
                "that job first",
            )
        record = self.store.get_file(file_id)
        # The bytes first, the record last (as for jobs): a 404 means nothing is left.
        if record is not None:
            await anyio.to_thread.run_sync(
                lambda: shutil.rmtree(record.path.parent, ignore_errors=True)
            )
        if self.store.shared:
            self.store.delete_blob(file_id)
        self.store.delete_file(file_id)

    async def sweep(self, retention_days: float) -> int:
        """Delete ended jobs, unused uploads and closed sessions older than
        ``retention_days``; returns how many."""
        cutoff = time.time() - retention_days * 86_400
        removed = 0
        for job_id in self.store.ended_before(cutoff):
            await self.delete(job_id)
            removed += 1
        for session in self.store.sessions(status=SESSION_CLOSED):
            if session.closed_at is not None and session.closed_at < cutoff:
                folder = self.settings.jobs_dir / session.id
                await anyio.to_thread.run_sync(shutil.rmtree, folder, True)
                self.store.delete_session(session.id)
                removed += 1
        in_use = self.store.files_in_use()
        for record in self.store.files_created_before(cutoff):
            if record.id not in in_use:
                await self.delete_file(record.id)
                removed += 1
        return removed

    async def _sweep_forever(self, retention_days: float) -> None:
        # Hourly, or faster for short retention, so nothing outlives it by much.
        period = min(3600.0, max(retention_days * 86_400 / 10, 1.0))
        while True:
            try:
                removed = await self.sweep(retention_days)
                if removed:
                    log.info("service.retention", removed=removed, days=retention_days)
            except (RLMError, OSError) as exc:
                log.warning("service.retention_failed", error=str(exc))
            await anyio.sleep(period)

    async def drop_local(self, payload: str) -> None:
        """Remove this process's copies of a job, session or upload another replica deleted
        (``payload``, as PostgreSQL notifies it: the id, then a session message's session)."""
        key, _, session_id = payload.partition(" ")
        settings = self.settings
        try:
            await anyio.to_thread.run_sync(
                local_data.drop, settings.jobs_dir, settings.files_dir, key, session_id or None
            )
        except OSError as exc:  # the periodic comparison with the store tries again
            log.warning("service.drop_local_failed", key=key, error=str(exc))

    async def remove_orphans(self) -> int:
        """Remove the folders of jobs, sessions and uploads the store no longer has (deleted
        through another replica while this one missed it, or left by a crash); returns how
        many."""
        settings = self.settings
        found = local_data.orphans(settings.jobs_dir, settings.files_dir, self.store.known_ids)
        return await anyio.to_thread.run_sync(local_data.remove, found)

    async def _remove_orphans_forever(self) -> None:
        while True:
            try:
                removed = await self.remove_orphans()
                if removed:
                    log.info("service.orphans_removed", removed=removed)
            except (RLMError, OSError) as exc:
                log.warning("service.orphans_failed", error=str(exc))
            await anyio.sleep(local_data.GRACE_S)

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; False if it already ended."""
        scope = self._scopes.get(job_id)
        if scope is not None:
            self._user_cancelled.add(job_id)
            scope.cancel()
            return True
        if isinstance(self.store, PgJobStore):
            # Only a queued job ends here: a running one is another replica's to stop.
            ended = self.store.cancel_queued(job_id)
        else:
            ended = self.store.finish(job_id, CANCELLED, error="cancelled by the user")
        if ended:
            self.metrics.inc("jobs_total", status=CANCELLED)
            self._notify(job_id)
            return True
        job = self.store.get_job(job_id)
        if job is not None and job.status == RUNNING:
            if isinstance(self.store, PgJobStore):
                # Running on some replica (maybe this one, about to start it): the one
                # holding its lease cancels it when notified or at its next lease renewal.
                self.store.request_cancel(job_id)
            # Between mark_running and the scope being registered: cancel as it starts.
            self._user_cancelled.add(job_id)
            return True
        return False

    def running_ids(self) -> list[str]:
        """The jobs this process is running now."""
        return list(self._scopes)

    def abandon(self, job_id: str) -> None:
        """Stop running ``job_id`` here without recording an outcome (its lease was lost)."""
        scope = self._scopes.get(job_id)
        if scope is not None:
            scope.cancel()

    # --- waiting for changes -----------------------------------------------------------------

    def changed(self, job_id: str) -> anyio.Event:
        """An event set at the job's next change (new trajectory event or status change)."""
        event = self._changed.get(job_id)
        if event is None:
            event = self._changed[job_id] = anyio.Event()
        return event

    def forget(self, job_id: str) -> None:
        """Drop the change event of a job that ended (its waiters all return)."""
        self._changed.pop(job_id, None)

    def notify(self, job_id: str) -> None:
        """Wake whoever waits for a change of ``job_id`` (also for changes on other replicas)."""
        self._notify(job_id)

    def _notify(self, job_id: str) -> None:
        event = self._changed.pop(job_id, None)
        if event is not None:
            event.set()

    async def wait(self, job_id: str, poll_s: float = 5.0) -> JobRecord:
        """Wait until the job reaches a final state and return it."""
        while True:
            changed = self.changed(job_id)
            job = self.store.get_job(job_id)
            if job is None or job.final:
                assert job is not None, f"job {job_id} vanished"
                self.forget(job_id)
                return job
            with anyio.move_on_after(poll_s):
                await changed.wait()

    # --- running -----------------------------------------------------------------------------

    async def _run_job(self, job_id: str) -> None:
        """Wait for a slot, run one attempt, store the outcome; never raises but cancellation."""
        try:
            job = self.store.get_job(job_id)
            if job is None or job.status != QUEUED:
                return
            async with self.slots.job(job.owner):
                # mark_running counts the attempt in the database before anything runs, so a
                # job that takes the whole service down is not re-run more than its retries
                # allow.
                job = self.store.get_job(job_id)
                if job is None or job.status != QUEUED:
                    return
                job = self.store.mark_running(job_id)
                if job is None:
                    return
                await self.run_started(job)
        except Exception as exc:  # the store (or a bug): fail this job, keep the service
            log.exception("job.crashed", job_id=job_id)
            await self._finish(job_id, FAILED, None, f"internal error: {exc}", None)

    async def run_started(self, job: JobRecord) -> None:
        """Run a job this process has just moved to "running" (``job.claim_token`` is this
        attempt's) and record its outcome (the caller holds a sandbox slot). Raises nothing
        but cancellation."""
        try:
            await self._attempt(job)
        except Exception as exc:  # the store (or a bug): fail this job, keep the service
            log.exception("job.crashed", job_id=job.id)
            await self._finish(job.id, FAILED, None, f"internal error: {exc}", job.claim_token)

    async def _attempt(self, job: JobRecord) -> None:
        job_id = job.id
        self._notify(job_id)
        started = time.time()
        self._slot_gauge()
        status, result, error = FAILED, None, None
        with anyio.CancelScope() as scope:
            self._scopes[job_id] = scope
            if job_id in self._user_cancelled:
                scope.cancel()
            try:
                status, result, error = await self._execute(job)
            except RLMError as exc:
                status, error = FAILED, str(exc)
            except Exception as exc:  # a bug must fail the job, not the service
                log.exception("job.crashed", job_id=job_id)
                status, error = FAILED, f"internal error: {exc!r}"
        self._scopes.pop(job_id, None)
        store_error = self._store_failed.pop(job_id, None)
        if job_id in self._claim_lost:
            # Another attempt owns the job now: record nothing (the store would refuse it).
            self._claim_lost.discard(job_id)
            self._user_cancelled.discard(job_id)
            log.warning("job.claim_lost", job_id=job_id, attempt=job.attempts)
            self._slot_gauge()
            return
        if store_error is not None:
            status, result, error = FAILED, None, store_error
        elif scope.cancelled_caught or scope.cancel_called:
            if job_id not in self._user_cancelled:
                return  # shutdown: leave it "running" for the restart logic
            status, error = CANCELLED, "cancelled by the user"
        self._user_cancelled.discard(job_id)
        await self._finish(job_id, status, result, error, job.claim_token)
        self.metrics.observe_job(time.time() - started, started - job.created_at, status)

    async def _finish(
        self,
        job_id: str,
        status: str,
        result: dict[str, Any] | None,
        error: str | None,
        token: str | None,
    ) -> None:
        """Store a job's final state, retrying while the store refuses (e.g. locked); only
        while the job still carries the attempt's claim ``token``.

        After the retries the job stays "running" in the store; the next start fails or
        re-queues it by its retries, as after a crash.
        """
        for delay in (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0):
            await anyio.sleep(delay)
            try:
                if self.store.finish(job_id, status, result=result, error=error, token=token):
                    self.metrics.inc("jobs_total", status=status)
                else:
                    log.warning("job.outcome_refused", job_id=job_id, status=status)
                break
            except StoreError as exc:
                log.warning("job.finish_failed", job_id=job_id, error=str(exc))
        else:
            log.error("job.finish_abandoned", job_id=job_id, status=status)
        self._slot_gauge()
        self._notify(job_id)

    def _new_pool(self) -> WarmPool:
        """The service's warm pool: ``warm_pool`` sandboxes (default 2) within the slots."""
        from engine.sandbox import SandboxConfig

        cfg = self.base_config
        size = DEFAULT_SERVICE_POOL if cfg.warm_pool is None else cfg.warm_pool
        return WarmPool(
            cfg.sandbox or SandboxConfig.from_env(),
            min(size, self.settings.max_sandboxes),
            idle_s=cfg.warm_pool_idle_s,
            max_sandboxes=self.settings.max_sandboxes,
        )

    def pool_gauges(self) -> dict[str, float]:
        """The warm pool's state for ``/metrics`` (empty before the service opened it)."""
        pool = self.pool
        if pool is None:
            return {}
        return {
            "sandbox_pool_ready": pool.ready,
            "sandbox_pool_hits": pool.hits,
            "sandbox_pool_misses": pool.misses,
            "sandbox_pool_discarded": pool.discarded,
        }

    def _slot_gauge(self) -> None:
        self.metrics.set_gauge("sandbox_slots_in_use", self.slots.in_use)

    async def _execute(self, job: JobRecord) -> tuple[str, dict[str, Any] | None, str | None]:
        from engine.rlm import Engine

        request = job.request
        if request.get("session_id"):
            return await self._execute_message(job)
        config = self._job_config(job)
        context = self.context_for(job.id, request)

        on_event = self._recorder(job)
        async with Engine(config, tools=self.tools, slots=self.slots, pool=self.pool) as engine:
            result = await engine.run(
                request["query"],
                context,
                on_event=on_event,
                task_id=attempt_task_id(job),
                tools=request.get("tools"),
                output_schema=request.get("output_schema"),
            )
        data = result.to_dict()
        if result.stop_reason == "error":
            return FAILED, data, result.error or "the run failed"
        if result.stop_reason == "cancelled":
            return CANCELLED, data, "cancelled"
        return SUCCEEDED, data, None

    def _recorder(self, job: JobRecord) -> Callable[[dict[str, Any]], None]:
        """The ``on_event`` of a job: each trajectory event into the store, waiters woken."""

        def on_event(event: dict[str, Any]) -> None:
            try:
                self.store.add_event(job.id, event, token=job.claim_token)
            except ClaimLost:
                # The job was queued again (this replica lost its lease) or ended: stop
                # this attempt without writing anything more for it.
                self._claim_lost.add(job.id)
                scope = self._scopes.get(job.id)
                if scope is not None:
                    scope.cancel()
                return
            except StoreError as exc:
                # The trajectory cannot be kept: stop the job rather than run it blind.
                if job.id not in self._store_failed:
                    self._store_failed[job.id] = (
                        f"the job store failed while recording the trajectory ({exc}); the "
                        "job was stopped, submit it again"
                    )
                    scope = self._scopes.get(job.id)
                    if scope is not None:
                        scope.cancel()
                return
            self.metrics.on_event(event)
            self._notify(job.id)

        return on_event

    async def _execute_message(
        self, job: JobRecord
    ) -> tuple[str, dict[str, Any] | None, str | None]:
        """A session message: run on the session's live kernel (see ``sessions``)."""
        result, kernel_note = await self.sessions.run_message(job, self._recorder(job))
        data = {**result.to_dict(), "session_id": job.request["session_id"]}
        data["kernel_note"] = kernel_note
        if result.stop_reason == "error":
            return FAILED, data, result.error or "the query failed"
        return SUCCEEDED, data, None

    def session_config(self, record: SessionRecord) -> EngineConfig:
        """The engine configuration of a session (its models and budgets)."""
        return self._config_for(record.request, self.settings.jobs_dir / record.id, record.owner)

    def _job_config(self, job: JobRecord) -> EngineConfig:
        return self._config_for(job.request, self.settings.jobs_dir / job.id, job.owner)

    def _config_for(
        self, request: dict[str, Any], trajectory_dir: Path, owner: str
    ) -> EngineConfig:
        limits = limits_with(self.base_config.limits, request.get("limits") or {})
        root, sub = self.check_models(request.get("model"), request.get("sub_model"), limits)
        base = self.base_config
        return EngineConfig(
            model=root,
            sub_model=sub,
            limits=limits,
            sandbox=base.sandbox,
            prompt_profile=self._profile,
            trajectory_dir=trajectory_dir,
            max_in_flight=base.max_in_flight,
            cache=base.cache,
            cache_dir=base.cache_dir,
            cache_size=base.cache_size,
            # Cache entries kept apart per key: a shared entry showed one key (in its result's
            # cache hits, its trajectory, the call's time) that another had sent exactly that
            # prompt. Python tool threads shared per key: one key's hung calls refused every
            # other key's.
            tenant=owner,
        )

    def context_for(self, job_id: str, request: dict[str, Any]) -> Any:
        if request.get("context_path"):
            # Submitted to this replica, or copied from the shared store to our data dir.
            path = Path(request["context_path"])
            if not path.exists():
                path = self.settings.jobs_dir / job_id / path.name
            return local_file(self.store, context_key(job_id), path)
        file_ids = request.get("file_ids") or []
        records = []
        for file_id in file_ids:
            record = self.store.get_file(file_id)
            if record is None:
                raise RLMError(f"the uploaded file {file_id} is gone; upload it again")
            records.append(
                local_record(
                    self.store, record, self.settings.files_dir, self.settings.max_upload_bytes
                )
            )
        if not records:
            return None
        return context_spec(records)


def context_key(job_id: str) -> str:
    """The shared-store key of a job's inline context."""
    return f"context/{job_id}"


def validate_tools(names: tuple[str, ...] | None, available: tuple[str, ...]) -> None:
    """Raise ApiError 422 when a job names a tool the service does not offer."""
    unknown = [n for n in names or () if n not in available]
    if unknown:
        offered = ", ".join(available) or "none"
        raise ApiError(
            422,
            "invalid_request_error",
            f"unknown tool {unknown[0]!r}; a job can only restrict the service's tools ({offered})",
            "tools",
        )


def quota_exceeded(quota: int, left: int) -> ApiError:
    """The 413 for a write past a key's storage quota."""
    return ApiError(
        413,
        "storage_quota_exceeded",
        f"this API key's storage quota of {quota:,} bytes would be exceeded ({left:,} bytes "
        "left); delete jobs (DELETE /v1/jobs/ID) or files (DELETE /v1/files/ID), or end "
        "sessions (DELETE /v1/sessions/ID) first",
    )


def too_many(reached: KeyLimitReached) -> ApiError:
    """The 429 for a key that holds as many jobs or open sessions as it may."""
    if reached.what == "sessions":
        return ApiError(
            429,
            "rate_limit_exceeded",
            f"this API key already has {reached.count} open sessions (limit {reached.limit}); "
            "end one with DELETE /v1/sessions/ID",
        )
    return ApiError(
        429,
        "rate_limit_exceeded",
        f"this API key already has {reached.count} queued or running jobs (limit "
        f"{reached.limit}); wait for some to finish or cancel them",
    )


def validate_limits(
    limits: dict[str, Any], base: Limits, ceilings: Mapping[str, float] | None = None
) -> None:
    """Raise ApiError 422 when budgets are above the service's ceilings or invalid together
    with the service defaults."""
    check_ceilings(limits, ceilings or {})
    try:
        limits_with(base, limits)
    except RLMError as exc:
        raise ApiError(422, "invalid_request_error", str(exc), "limits") from exc


async def reap_leftovers() -> None:
    """Remove sandbox containers a previous service process left behind (also after kill -9),
    including those of an earlier process that had this pid (see ``reap_orphans``)."""
    import docker.errors

    from engine.sandbox import docker_api, reap_orphans

    try:
        removed = await docker_api.call(reap_orphans, restarted=True)
    except (RLMError, docker.errors.DockerException) as exc:
        log.warning("service.reap_failed", error=str(exc))
        return
    if removed:
        log.warning("service.reaped", containers=removed)
