"""Uploaded contexts on a shared PostgreSQL store: another replica gets the converted text of
a document and unpacks an archive itself."""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from engine.contexts import prepare_context
from engine.service.files import context_spec, local_record, save_upload
from engine.service.store_pg import PgJobStore
from tests.contexts_support import write_pdf

pytestmark = pytest.mark.anyio


@pytest.fixture
def store(pg_url: str) -> Iterator[PgJobStore]:
    with PgJobStore(pg_url) as opened:
        yield opened


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


def tree(root: Path) -> dict[str, str]:
    return {
        str(Path(folder, name).relative_to(root)): Path(folder, name).read_text()
        for folder, _dirs, names in os.walk(root)
        for name in names
    }


async def test_another_replica_gets_text_and_unpacks_archives(
    store: PgJobStore, tmp_path: Path
) -> None:
    here, there = tmp_path / "replica-a" / "files", tmp_path / "replica-b" / "files"
    pdf = write_pdf(tmp_path / "p.pdf", ["Shared across replicas"]).read_bytes()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("src/a.py", "A = 1\n")
        handle.writestr("notes.txt", "n\n")
    records = [
        await save_upload(
            store, here, owner="k", filename=name, chunks=_body(data), max_bytes=1 << 20
        )
        for name, data in (("paper.pdf", pdf), ("code.zip", archive.getvalue()))
    ]
    # The uploading replica keeps the text and the unpacked folder, not the originals.
    assert sorted(p.name for p in (here / records[0].id).iterdir()) == ["paper.pdf.txt"]
    assert sorted(p.name for p in (here / records[1].id).iterdir()) == ["code"]

    shutil.rmtree(here)  # replica B runs on another machine: A's data dir is not there
    stored = [store.get_file(r.id) for r in records]
    remote = [local_record(store, r, there, 1 << 20) for r in stored if r is not None]
    assert [r.path.parent.parent for r in remote] == [there, there]
    assert remote[0].path.read_text().startswith("[page 1]\nShared across replicas")
    assert tree(remote[1].path) == {"src/a.py": "A = 1\n", "notes.txt": "n\n"}
    assert sorted(p.name for p in (there / records[1].id).iterdir()) == ["code"]

    prepared = prepare_context(context_spec(remote), tmp_path / "scratch")
    try:
        assert sorted(tree(prepared.path)) == ["code/notes.txt", "code/src/a.py", "paper.pdf"]
    finally:
        prepared.cleanup()
