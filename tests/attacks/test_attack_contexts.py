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
import resource
import signal
import struct
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine.contexts import ContextSpec, prepare_context
from engine.contexts.isolate import Extractor
from engine.contexts.prepare import MAX_DEPTH
from engine.errors import ContextError
from engine.sandbox import SandboxConfig, rundir
from engine.sandbox.sandbox import Sandbox
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


def hostile_folder(root: Path) -> Path:
    """A folder with everything a context walk can trip on, and one innocent file."""
    folder = root / "hostile"
    folder.mkdir()
    (folder / "notes.txt").write_text("the innocent text\n")
    os.mkfifo(folder / "pipe")  # opening it for reading would block for ever
    os.symlink("/dev/zero", folder / "zeros")  # endless
    os.symlink("/proc/self/environ", folder / "environ")  # the orchestrator's secrets
    os.symlink("/etc/passwd", folder / "passwd")
    os.symlink("loop2", folder / "loop1")
    os.symlink("loop1", folder / "loop2")
    os.symlink(".", folder / "itself")
    (folder / "line\nbreak.txt").write_text("a\n")
    (folder / "escape\x1b[31m\x07.txt").write_text("b\n")
    with open(os.fsencode(folder) + b"/not-utf8-\xff\xfe.txt", "wb") as handle:
        handle.write(b"c\n")
    deep = os.open(folder, os.O_RDONLY)
    try:  # 1,500 folders down (relative steps: the path is longer than PATH_MAX allows)
        for _ in range(1500):
            os.mkdir("d", dir_fd=deep)
            inner = os.open("d", os.O_RDONLY, dir_fd=deep)
            os.close(deep)
            deep = inner
        fd = os.open("deep.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=deep)
        os.write(fd, b"deep\n")
        os.close(fd)
    finally:
        os.close(deep)
    return folder


def test_attack_hostile_context_folder(tmp_path: Path, attack_report: AttackReport) -> None:
    folder = hostile_folder(tmp_path)
    meter = RssMeter(os.getpid()).start()
    try:
        prepared = prepare_context(
            ContextSpec.from_paths([folder]),
            tmp_path / "run",
            max_bytes=SandboxConfig().max_context_bytes,
        )
        m = prepared.manifest
        keys = sorted(
            str(p.relative_to(prepared.path)) for p in prepared.path.rglob("*") if p.is_file()
        )
        prepared.cleanup()
    finally:
        # shutil.rmtree recurses once per level too: pytest's clean-up of old temporary
        # folders would raise RecursionError on this one. rm walks it without recursing.
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    assert keys == sorted(
        ["notes.txt", "line\nbreak.txt", "escape\x1b[31m\x07.txt", "not-utf8-\udcff\udcfe.txt"]
    )
    assert (m.special, m.symlinks_outside, m.symlinks_skipped, m.too_deep) == (1, 3, 3, 1)
    attack_report(
        "a context folder with a FIFO, symlinks to /dev/zero, /proc/self/environ and outside, "
        "symlink loops, names with newlines, escapes and invalid UTF-8, folders 1,500 deep",
        f"regular files only, opened O_NOFOLLOW and O_NONBLOCK; symlinks resolved inside the "
        f"folder only; at most {MAX_DEPTH} folders deep",
        "4 files included; skipped 1 pipe, 3 links outside, 3 loops, 1 folder too deep "
        "(before: the deep folder ended the run with a RecursionError traceback)",
        rss_growth=meter.growth(),
    )


@contextmanager
def file_size_limit(max_bytes: int) -> Iterator[None]:
    """RLIMIT_FSIZE for this process: a write past it fails with EFBIG (SIGXFSZ ignored)."""
    previous = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, previous[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous)
        signal.signal(signal.SIGXFSZ, handler)


def test_attack_sparse_context_files(tmp_path: Path, attack_report: AttackReport) -> None:
    # A few bytes on disk, 1 TiB to anyone who reads or copies them. A file the sandbox user
    # cannot read is copied (sendfile: every byte), one it can asked for 2.5 TiB of memory.
    # The folder and the public file go through the context preparation, the private file
    # through the sandbox's own staging (a path handed to Sandbox directly).
    folder = tmp_path / "sparse"
    folder.mkdir()
    for name, mode in (("private.txt", 0o600), ("public.txt", 0o644)):
        with open(folder / name, "wb") as handle:
            handle.write(b"a line of text\n" * 1000)
            handle.truncate(1 << 40)
        os.chmod(folder / name, mode)
    run = tmp_path / "run"
    limit = SandboxConfig().max_context_bytes
    meter = RssMeter(os.getpid()).start()
    refused = []
    with file_size_limit(64 << 20):  # should the cap regress, the copy stops at 64 MiB
        for source in ([folder], [folder / "public.txt"]):
            with pytest.raises(ContextError) as error:
                prepare_context(ContextSpec.from_paths(source), run, max_bytes=limit)
            refused.append(str(error.value))
        # The sandbox's own staging (a path handed to Sandbox directly, not prepared).
        with pytest.raises(ContextError) as error:
            rundir.stage_context(folder / "private.txt", run, max_bytes=limit)
        refused.append(str(error.value))
    config = SandboxConfig()
    with pytest.raises(ContextError) as memory:
        Sandbox(config)._memory_for(1 << 40)
    growth = meter.growth()
    written = sum(p.stat().st_blocks * 512 for p in run.rglob("*")) if run.exists() else 0
    assert all("larger than" in r or "more than a sandbox" in r for r in refused)
    assert len(refused) == 3 and "memory" in str(memory.value)
    attack_report(
        "a context of sparse 1 TiB text files (a few KiB on disk), one not world-readable",
        "a context's apparent size is capped by the sandbox memory ceiling (the host's memory, "
        "RLM_SANDBOX_MAX_MEMORY), checked before any byte is linked, copied or loaded",
        f"all three refused before any byte was copied ('the context is larger than {limit:,} "
        "bytes'), and so was the memory raise (before: the private file was copied in full, "
        "2.1 GiB written for a 2 GiB one; the public one raised the memory limit to 2.5 TiB)",
        rss_growth=growth,
        host_bytes=written,
        host_cap=0,
    )
