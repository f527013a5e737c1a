"""Contexts through the service: PDF/DOCX/HTML uploads become text, archives become folders,
several files one dict; unreadable uploads are refused naming the file."""

from __future__ import annotations

import io
import json
import stat
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.models import Cassette, ReplayServer
from tests.contexts_support import write_docx, write_html, write_pdf
from tests.service_support import Service, code, root, wait_final

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

DUMP = code(
    "import json\n"
    "value = context if isinstance(context, dict) else {'(text)': context}\n"
    "answer['content'] = json.dumps(value)\nanswer['ready'] = True"
)


@pytest.fixture(scope="module")
async def service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    async with ReplayServer(Cassette([root("DUMP", DUMP)])) as replay:
        data = tmp_path_factory.mktemp("service") / "data"
        svc = Service(data, replay.base_url, "--max-upload", "1m")
        await anyio.to_thread.run_sync(svc.start)
        try:
            yield svc
        finally:
            await anyio.to_thread.run_sync(svc.stop)


async def upload(client: Any, name: str, data: bytes) -> dict[str, Any]:
    response = await client.post("/v1/files", params={"filename": name}, content=data)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def run_job(client: Any, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/jobs", json={"query": "DUMP the context", **body})
    assert response.status_code == 201, response.text
    done = await wait_final(client, response.json()["id"])
    assert done["status"] == "succeeded", done
    return dict(json.loads(done["answer"]))


async def test_pdf_upload_is_text_in_the_sandbox(service: Service, tmp_path: Path) -> None:
    pdf = write_pdf(tmp_path / "paper.pdf", ["Abstract", "Result: 93 percent"]).read_bytes()
    async with service.client() as client:
        meta = await upload(client, "paper.pdf", pdf)
        assert (meta["filename"], meta["context_format"], meta["bytes"]) == (
            "paper.pdf",
            "pdf",
            len(pdf),
        )
        seen = await run_job(client, file_id=meta["id"])
    text = seen["(text)"]
    assert text.startswith("[page 1]\nAbstract") and "[page 2]\nResult: 93 percent" in text
    stored = list((service.data_dir / "files" / meta["id"]).iterdir())
    assert [p.name for p in stored] == ["paper.pdf.txt"]  # the PDF's bytes are not kept
    assert stat.S_IMODE(stored[0].stat().st_mode) == 0o600


async def test_several_uploads_and_an_archive_make_one_dict(
    service: Service, tmp_path: Path
) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("repo/.gitignore", "*.tmp\n")
        handle.writestr("repo/main.py", "print('main')\n")
        handle.writestr("repo/scratch.tmp", "ignored\n")
        handle.writestr("repo/logo.png", b"\x89PNG\0\0\0")
        link = zipfile.ZipInfo("repo/passwd")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        handle.writestr(link, "/etc/passwd")
    async with service.client() as client:
        docx_meta = await upload(
            client, "report.docx", write_docx(tmp_path / "r.docx").read_bytes()
        )
        html_meta = await upload(client, "guide.html", write_html(tmp_path / "g.html").read_bytes())
        zip_meta = await upload(client, "code.zip", archive.getvalue())
        assert zip_meta["context_format"] == "archive"
        ids = [docx_meta["id"], html_meta["id"], zip_meta["id"]]
        seen = await run_job(client, file_ids=ids)
    assert sorted(seen) == [
        "code/repo/.gitignore",
        "code/repo/main.py",
        "guide.html",
        "report.docx",
    ]
    assert seen["report.docx"].startswith("# Quarterly report\n")
    assert seen["guide.html"].startswith("[title] Field guide\n\n# Birds\n")
    assert seen["code/repo/main.py"] == "print('main')\n"


async def test_unreadable_or_binary_uploads_are_refused_naming_the_file(
    service: Service,
) -> None:
    files_dir = service.data_dir / "files"
    before = set(files_dir.iterdir()) if files_dir.exists() else set()
    async with service.client() as client:
        for name, data, expected in (
            ("scan.pdf", b"%PDF-1.4 not really", "cannot read scan.pdf as PDF"),
            ("memo.docx", b"PK\x03\x04broken", "cannot read memo.docx as DOCX"),
            ("photo.jpg", b"\xff\xd8\xff\xe0\0\x10JFIF\0", "photo.jpg is a binary file"),
            ("bomb.zip", _zip_of_zeros(2 << 20), "bomb.zip unpacks to more than 1,048,576"),
        ):
            response = await client.post("/v1/files", params={"filename": name}, content=data)
            assert response.status_code == 422, (name, response.text)
            error = response.json()["error"]
            assert error["type"] == "unreadable_context" and expected in error["message"]
    after = set(files_dir.iterdir()) if files_dir.exists() else set()
    assert after == before  # nothing is left of a refused upload


def _zip_of_zeros(size: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as handle:
        handle.writestr("zeros.txt", b"0" * size)
    return out.getvalue()
