"""Data lifecycle through real HTTP: DELETE for jobs and files, retention, the storage quota
(uploads, inline contexts of jobs and of sessions)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from engine.models import Cassette, ReplayServer
from tests.service_support import OTHER_KEY, Service, code, root, wait_final

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

ANSWER = code("answer['content'] = str(len(context))\nanswer['ready'] = True")
CASSETTE = [
    root("LENGTH", ANSWER),
    root("SLOW-JOB", code("answer['content'] = 'slow'\nanswer['ready'] = True"), delay_s=300),
]
QUOTA = 200_000


@pytest.fixture(scope="module")
async def service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    async with ReplayServer(Cassette(CASSETTE)) as replay:
        data = tmp_path_factory.mktemp("lifecycle") / "data"
        svc = Service(data, replay.base_url, "--max-storage-per-key", str(QUOTA))
        await anyio.to_thread.run_sync(svc.start)
        try:
            yield svc
        finally:
            await anyio.to_thread.run_sync(svc.stop)


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


async def test_delete_a_job_removes_it_its_events_and_its_files(service: Service) -> None:
    async with service.client() as client, service.client(OTHER_KEY) as other:
        job = (await client.post("/v1/jobs", json={"query": "LENGTH", "context": "abc"})).json()
        assert (await wait_final(client, job["id"]))["answer"] == "3"
        job_dir = service.data_dir / "jobs" / job["id"]
        assert _files(job_dir)
        # Another key cannot see it, so cannot delete it either.
        assert (await other.delete(f"/v1/jobs/{job['id']}")).status_code == 404
        deleted = await client.delete(f"/v1/jobs/{job['id']}")
        assert deleted.status_code == 200 and deleted.json()["deleted"] is True
        assert (await client.get(f"/v1/jobs/{job['id']}")).status_code == 404
        assert (await client.get(f"/v1/jobs/{job['id']}/trajectory")).status_code == 404
        assert not job_dir.exists()


async def test_delete_a_running_job_cancels_it_first(service: Service) -> None:
    async with service.client() as client:
        job = (await client.post("/v1/jobs", json={"query": "SLOW-JOB"})).json()
        with anyio.fail_after(120):
            while (await client.get(f"/v1/jobs/{job['id']}")).json()["status"] != "running":
                await anyio.sleep(0.1)
        assert (await client.delete(f"/v1/jobs/{job['id']}")).status_code == 200
        assert (await client.get(f"/v1/jobs/{job['id']}")).status_code == 404


async def test_delete_a_file_and_refuse_while_a_job_reads_it(service: Service) -> None:
    async with service.client() as client:
        upload = await client.post("/v1/files?filename=a.txt", content=b"hello")
        file_id = upload.json()["id"]
        folder = next((service.data_dir / "files").glob(file_id))
        job = (await client.post("/v1/jobs", json={"query": "SLOW-JOB", "file_id": file_id})).json()
        busy = await client.delete(f"/v1/files/{file_id}")
        assert busy.status_code == 409 and "queued or running job" in busy.text
        await client.post(f"/v1/jobs/{job['id']}/cancel")
        assert (await wait_final(client, job["id"]))["status"] == "cancelled"
        assert (await client.delete(f"/v1/files/{file_id}")).status_code == 200
        assert (await client.get(f"/v1/files/{file_id}")).status_code == 404
        assert not folder.exists()


async def test_storage_quota_counts_uploads_and_inline_contexts(service: Service) -> None:
    async with service.client(OTHER_KEY) as client:
        first = await client.post("/v1/files?filename=a.txt", content=b"x" * (QUOTA // 2))
        assert first.status_code == 201

        # Past the quota: refused while streaming (no Content-Length to check first).
        async def body() -> AsyncIterator[bytes]:
            for _ in range(QUOTA // 10_000):
                yield b"y" * 10_000

        refused = await client.post("/v1/files?filename=b.txt", content=body())
        assert refused.status_code == 413
        assert refused.json()["error"]["type"] == "storage_quota_exceeded"
        inline = await client.post("/v1/jobs", json={"query": "LENGTH", "context": "z" * QUOTA})
        assert inline.status_code == 413 and "DELETE /v1/files" in inline.text
        # Deleting frees the quota again.
        await client.delete(f"/v1/files/{first.json()['id']}")
        again = await client.post("/v1/files?filename=c.txt", content=b"x" * (QUOTA // 2))
        assert again.status_code == 201
        await client.delete(f"/v1/files/{again.json()['id']}")


async def test_storage_quota_counts_session_contexts_until_the_session_ends(
    service: Service,
) -> None:
    async with service.client(OTHER_KEY) as client:
        kept = await client.post("/v1/sessions", json={"context": "s" * (QUOTA // 2)})
        assert kept.status_code == 201, kept.text
        # The open session's context counts: neither a second one nor an upload fits now.
        second = await client.post("/v1/sessions", json={"context": "t" * (QUOTA // 2)})
        assert second.status_code == 413
        assert second.json()["error"]["type"] == "storage_quota_exceeded"
        assert "DELETE /v1/sessions" in second.json()["error"]["message"]
        upload = await client.post("/v1/files?filename=a.txt", content=b"x" * (QUOTA // 2))
        assert upload.status_code == 413
        # Ending the session removes its context and frees its bytes; its history stays.
        ended = await client.delete(f"/v1/sessions/{kept.json()['id']}")
        assert ended.status_code == 200 and ended.json()["status"] == "closed"
        second = await client.post("/v1/sessions", json={"context": "t" * (QUOTA // 2)})
        assert second.status_code == 201, second.text
        assert (await client.delete(f"/v1/sessions/{second.json()['id']}")).status_code == 200


async def test_retention_deletes_ended_jobs_and_old_files(tmp_path: Path) -> None:
    async with ReplayServer(Cassette(CASSETTE)) as replay:
        # 0.00003 days is about 2.6 s: the sweeper runs every second.
        svc = Service(tmp_path / "data", replay.base_url, "--retention-days", "0.00003")
        await anyio.to_thread.run_sync(svc.start)
        try:
            async with svc.client() as client:
                upload = await client.post("/v1/files?filename=a.txt", content=b"abcd")
                session = (await client.post("/v1/sessions", json={"context": "s"})).json()
                await client.delete(f"/v1/sessions/{session['id']}")  # closed: history kept
                job = await client.post("/v1/jobs", json={"query": "LENGTH", "context": "ab"})
                job_id = job.json()["id"]
                assert (await wait_final(client, job_id))["status"] == "succeeded"
                with anyio.fail_after(60):
                    while (await client.get(f"/v1/jobs/{job_id}")).status_code != 404:
                        await anyio.sleep(0.5)
                    file_id = upload.json()["id"]
                    while (await client.get(f"/v1/files/{file_id}")).status_code != 404:
                        await anyio.sleep(0.5)
                    # ... until the retention period ends.
                    while (await client.get(f"/v1/sessions/{session['id']}")).status_code != 404:
                        await anyio.sleep(0.5)
            assert not _files(svc.data_dir / "jobs") and not _files(svc.data_dir / "files")
        finally:
            await anyio.to_thread.run_sync(svc.stop)


async def test_storage_quota_counts_every_file_and_folder_an_archive_makes(
    service: Service,
) -> None:
    # 60 empty files hold no bytes but take 60 inodes: each entry counts 4 KiB (here 245 KB
    # against a quota of 200 KB), so uploads of such archives cannot exhaust the host's inodes.
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as handle:
        for index in range(60):
            handle.addfile(tarfile.TarInfo(f"empty/{index}.txt"), io.BytesIO(b""))
    async with service.client(OTHER_KEY) as client:
        refused = await client.post("/v1/files?filename=empty.tar.gz", content=archive.getvalue())
        assert refused.status_code == 413, refused.text
        assert refused.json()["error"]["type"] == "storage_quota_exceeded"
        small = await client.post("/v1/files?filename=small.txt", content=b"x" * 100)
        assert small.status_code == 201  # the refused archive left nothing counted
        await client.delete(f"/v1/files/{small.json()['id']}")
