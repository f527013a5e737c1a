"""Attacks through the archives a service tenant uploads, on the host that unpacks them.

zipfile reads a zip's whole central directory, and tarfile a pax header whole, before any
cap of ours can count a member or a byte: a small upload can make them allocate gigabytes.
The service unpacks in the document worker (``Extractor.unpack``), a separate process under
an address-space rlimit, so the bomb fails there with an error naming the archive and the
orchestrator's memory stays flat. These run the worker with a 128 MiB cap (the service's is
1 GiB) so that small bombs reach it in seconds.
"""

from __future__ import annotations

import gzip
import os
import struct
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.contexts.isolate import Extractor
from engine.errors import ContextError
from tests.attacks.conftest import AttackReport, RssMeter

WORKER_MEMORY = 128 << 20


def zip_of_many_entries(path: Path, entries: int) -> Path:
    """A zip whose central directory lists ``entries`` names (54 bytes each on disk)."""
    name = b"%08x" % 0
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0) + name
    records = b"".join(
        struct.pack(
            "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0
        )
        + b"%08x" % i
        for i in range(entries)
    )
    count = min(entries, 0xFFFE)  # the 16-bit count; zipfile reads by directory size anyway
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(records), len(local), 0)
    path.write_bytes(local + records + end)
    return path


def tar_with_huge_pax_header(path: Path, header_bytes: int) -> Path:
    """A .tar.gz whose first member is a pax header of ``header_bytes`` zeros (compresses
    about 200:1)."""
    info = tarfile.TarInfo("pax")
    info.type = tarfile.XHDTYPE
    info.size = header_bytes
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(info.tobuf(tarfile.USTAR_FORMAT))
        block = bytes(1 << 20)
        for _ in range(header_bytes >> 20):
            out.write(block)
    return path


@pytest.mark.parametrize(
    ("kind", "build"),
    [
        ("zip listing 400,000 entries", lambda p: zip_of_many_entries(p / "many.zip", 400_000)),
        (
            "tar.gz with a 512 MiB pax header",
            lambda p: tar_with_huge_pax_header(p / "pax.tgz", 512 << 20),
        ),
    ],
    ids=["zip-directory", "tar-pax"],
)
def test_archive_metadata_bomb(
    kind: str, build: Callable[[Path], Path], tmp_path: Path, attack_report: AttackReport
) -> None:
    archive = build(tmp_path)
    dest = tmp_path / "out"
    meter = RssMeter(os.getpid()).start()  # after building the bomb in this process
    with Extractor(memory_bytes=WORKER_MEMORY) as extractor, pytest.raises(ContextError) as refused:
        extractor.unpack(archive, dest, 1 << 30)
    assert archive.name in str(refused.value) and "memory" in str(refused.value)
    assert not dest.exists()
    attack_report(
        f"upload a {archive.stat().st_size >> 20} MiB {kind}",
        f"archives unpacked in the document worker (address-space rlimit, here "
        f"{WORKER_MEMORY >> 20} MiB; 1 GiB in the service)",
        f"refused: {refused.value}",
        rss_growth=meter.growth(),
        host_bytes=0,
        host_cap=0,
    )
