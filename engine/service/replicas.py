"""Several ``rlm serve`` processes (replicas) on one PostgreSQL job store.

A :class:`Replica` runs inside a :class:`~engine.service.jobs.JobService` whose store is
shared. Instead of scheduling the jobs it accepted itself, it runs ``max_sandboxes`` workers
that each take a free sandbox slot, then claim the oldest queued job of *any* replica (``FOR
UPDATE SKIP LOCKED``), so a job runs on whichever replica has a free slot first and never on
two, and no replica holds a job it cannot start yet. A claim also carries a claim token that
fences the attempt's writes: a replica that lost a job's lease (paused past it) cannot record
events or an outcome over the attempt that replaced it. Each claim is a lease,
renewed every third of its length while the job runs; when a replica dies, its leases expire
and every replica's lease loop re-queues those jobs (retries left) or fails them
"replica lost". PostgreSQL LISTEN/NOTIFY carries the rest between replicas: new queued jobs
wake idle workers, new events and status changes wake the event streams a client follows on
any replica, a cancel sent to one replica reaches the one running the job (with the lease
loop as a polling fallback when a notification is missed), and a deleted job, session or
upload is removed from every replica's disk (see ``local_data``).

Uploads and inline contexts are written to the database too (``blobs``), and a replica
copies them to its own data dir before it runs a job that was submitted elsewhere.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from engine.log import get_logger
from engine.service.store import JobStore, Recovery
from engine.service.store_pg import PgJobStore

if TYPE_CHECKING:
    from engine.service.jobs import JobService

log = get_logger(__name__)

CHANNELS = ("rlm_job", "rlm_queue", "rlm_cancel", "rlm_deleted")
IDLE_POLL_S = 5.0  # idle workers look for jobs this often even without a notification
# The slot owner of every claim: the shared queue already orders jobs (oldest first), so the
# per-key turns of the slots play no part here; children still come before any claim.
QUEUE_OWNER = "shared-queue"


def replica_id() -> str:
    """This process's replica id: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Replica:
    """This service process as one replica of many; :meth:`run` until cancelled."""

    def __init__(self, service: JobService, store: PgJobStore, lease_s: float) -> None:
        self.service = service
        self.store = store
        self.lease_s = lease_s
        self.id = replica_id()
        self._wake = anyio.Event()

    def recover(self) -> Recovery:
        """Re-queue or fail the jobs of replicas that died (also run on every lease tick)."""
        return self.store.reclaim()

    def poke(self) -> None:
        """Wake the idle workers: a job may be waiting."""
        self._wake.set()
        self._wake = anyio.Event()

    def release(self) -> None:
        """Give up this replica's leases at shutdown so others take its jobs over at once."""
        try:
            self.store.release(self.id)
        except Exception as exc:  # the database may be gone too; the leases then expire
            log.warning("replica.release_failed", error=str(exc))

    async def run(self) -> None:
        log.info("replica.started", replica=self.id, lease_s=self.lease_s)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._listen)
            tg.start_soon(self._keep_leases)
            for _ in range(self.service.settings.max_sandboxes):
                tg.start_soon(self._worker)

    async def _worker(self) -> None:
        while True:
            wake = self._wake
            # A slot first, then a claim: a replica whose sandboxes are all busy (its jobs'
            # children included) leaves queued jobs to the replicas that can start them now.
            async with self.service.slots.job(QUEUE_OWNER):
                job = self.store.claim(self.id, self.lease_s)
                if job is not None:
                    log.info(
                        "replica.claimed", replica=self.id, job_id=job.id, attempt=job.attempts
                    )
                    await self.service.run_started(job)
                    continue
            with anyio.move_on_after(IDLE_POLL_S):
                await wake.wait()

    async def _keep_leases(self) -> None:
        while True:
            renewal = self.store.renew(self.id, self.lease_s)
            for job_id in self.service.running_ids():
                if job_id not in renewal.held:
                    # Another replica took the job over (we were too slow to renew): stop
                    # without recording an outcome; the job is theirs now.
                    log.warning("replica.lease_lost", replica=self.id, job_id=job_id)
                    self.service.abandon(job_id)
            for job_id in renewal.cancel:
                self.service.cancel(job_id)
            recovery = self.store.reclaim()
            if recovery.failed or recovery.requeued:
                log.warning(
                    "replica.reclaimed",
                    replica=self.id,
                    failed=recovery.failed,
                    requeued=recovery.requeued,
                )
            await anyio.sleep(self.lease_s / 3)

    async def _listen(self) -> None:
        import psycopg

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.store.url, autocommit=True
                ) as conn:
                    for channel in CHANNELS:
                        await conn.execute(f"LISTEN {channel}")
                    self.poke()  # catch up with what happened while not listening
                    async for note in conn.notifies():
                        if note.channel == "rlm_deleted":
                            await self.service.drop_local(note.payload)
                        else:
                            self._on_notify(note.channel, note.payload)
            except psycopg.Error as exc:
                log.warning("replica.listen_failed", replica=self.id, error=str(exc))
                await anyio.sleep(1.0)

    def _on_notify(self, channel: str, job_id: str) -> None:
        if channel == "rlm_queue":
            self.poke()
        elif channel == "rlm_cancel":
            if job_id in self.service.running_ids():
                self.service.cancel(job_id)
        else:
            self.service.notify(job_id)


def share_file(store: JobStore, key: str, path: Path) -> None:
    """Make the local file ``path`` readable by every replica (no-op for a private store)."""
    if store.shared:
        store.put_blob(key, path)


def local_file(store: JobStore, key: str, path: Path) -> Path:
    """``path`` if it exists here, else the shared copy of ``key`` written to it."""
    if not path.exists() and store.shared:
        store.get_blob(key, path)
    return path
