"""Turn what the user gave (files, folders, standard input) into what the sandbox receives.

The sandbox always gets plain text: a text file passes through untouched (bind-mounted
read-only, never copied); anything else becomes a scratch folder of text files built on the
host, one per dict key:

- a folder honours ``.gitignore`` (nested ones too), ``--include``/``--exclude``, skips binary
  files, pipes and devices, and never follows a symlink that points outside it (a symlink to
  a file inside it is included with the target's text under the link's own path; symlinks to
  folders are skipped, which also rules out loops);
- PDF, DOCX and HTML files are converted to text here, before anything enters the sandbox;
- several sources become one folder keyed by path (``context`` is then a dict, like a
  folder's).

Files are hard-linked into the scratch folder when the sandbox user could read them anyway,
else copied, so preparing a large repository costs no copy of its bytes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.contexts.archive import MAX_PATH_PARTS
from engine.contexts.binary import SNIFF_BYTES, looks_binary
from engine.contexts.extract import document_kind
from engine.contexts.ignore import Globs, IgnoreRules
from engine.contexts.isolate import Extractor
from engine.contexts.manifest import Manifest
from engine.errors import ContextError
from engine.log import get_logger

log = get_logger(__name__)

STDIN_KEY = "stdin"
#: Folders a context's paths may nest below the folder given (deeper ones are skipped and
#: counted, as an uploaded archive's are): the walk recursed once per level, and a folder
#: 1,500 levels deep (3,000 characters of path) ended the run with a RecursionError.
MAX_DEPTH = MAX_PATH_PARTS


@dataclass(frozen=True)
class Source:
    """One file or folder of a context; ``key`` is its path in the dict (several sources)."""

    path: Path
    key: str = ""
    # Standard input has no name to tell its format by: look at its first bytes instead.
    sniff: bool = False


@dataclass(frozen=True)
class ContextSpec:
    """A context made of files and folders on the host, and how to filter folders."""

    sources: tuple[Source, ...]
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    gitignore: bool = True

    @classmethod
    def from_paths(
        cls,
        paths: Sequence[Path],
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        gitignore: bool = True,
        stdin: Path | None = None,
    ) -> ContextSpec:
        """Sources keyed by their path relative to the paths' common parent folder.

        One folder alone gives keys relative to itself; ``a/x.txt`` and ``src/`` give
        ``a/x.txt`` and ``src/...``. ``stdin`` (a file holding what was read from standard
        input) is keyed ``stdin`` when there are other sources.
        """
        if not paths and stdin is None:
            raise ContextError("no context given")
        absolute = [Path(os.path.abspath(p.expanduser())) for p in paths]
        sources: list[Source] = []
        if len(absolute) == 1 and stdin is None:
            sources.append(Source(absolute[0]))
        elif absolute:
            common = os.path.commonpath(
                [p.parent for p in absolute] if len(absolute) == 1 else absolute
            )
            for path in absolute:
                key = os.path.relpath(path, common)
                sources.append(Source(path, "" if key == "." else key))
        if stdin is not None:
            sources.append(Source(stdin, STDIN_KEY, sniff=True))
        return cls(tuple(sources), tuple(include), tuple(exclude), gitignore)


@dataclass
class PreparedContext:
    """What the sandbox receives: a text file or a folder of text files, and its manifest.

    ``scratch`` (when set) is a folder this preparation created; :meth:`cleanup` deletes it.
    """

    path: Path
    manifest: Manifest
    scratch: Path | None = None
    passthrough: bool = False  # a lone text file given to the sandbox as it is

    def cleanup(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def describe(self) -> str | None:
        """The manifest's sentence for the root prompt; None for a text file passed as is
        (nothing was converted or left out, so there is nothing to tell)."""
        return None if self.passthrough else self.manifest.describe()


def prepare_context(
    spec: ContextSpec, scratch_parent: Path, name: str = "ctx", max_bytes: int | None = None
) -> PreparedContext:
    """Build what the sandbox receives for ``spec`` (blocking; run it in a thread).

    ``scratch_parent`` must be a folder the Docker daemon can bind-mount from (the run root).
    ``max_bytes`` (the sandbox's :attr:`~engine.sandbox.SandboxConfig.max_context_bytes`)
    caps the text it holds, counted by apparent size before any byte is linked or copied.
    Raises :class:`ContextError` naming the file or folder that cannot be used.
    """
    if not spec.sources:
        raise ContextError("no context given")
    manifest = Manifest(sources=len(spec.sources))
    for source in spec.sources:
        _check_exists(source.path)
    if len(spec.sources) == 1 and spec.sources[0].path.is_file():
        single = _single_file(spec.sources[0], manifest, scratch_parent, name)
        if single is not None:
            _check_size(manifest.bytes, max_bytes, single.path.name)
            return single
    scratch = _new_scratch(scratch_parent, name)
    try:
        scratch.chmod(0o755)
        first = spec.sources[0]
        folder_name = first.path.name if len(spec.sources) == 1 else "context"
        out = scratch / (_safe_name(folder_name) or "context")
        out.mkdir(mode=0o755)
        out.chmod(0o755)
        globs = Globs(spec.include, spec.exclude)
        with _TreeBuilder(out, manifest, globs, spec.gitignore, max_bytes) as builder:
            _add_sources(builder, spec)
        if manifest.files == 0:
            raise ContextError(
                f"no text file is left in the context ({manifest.describe()}); check the "
                "paths, --include/--exclude and .gitignore"
            )
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    log.info("context.prepared", **{k: v for k, v in manifest.to_dict().items() if v})
    return PreparedContext(out, manifest, scratch)


def _add_sources(builder: _TreeBuilder, spec: ContextSpec) -> None:
    for source in spec.sources:
        if source.path.is_dir():
            # A lone folder's keys are relative to it, whatever its own key.
            builder.add_dir(source.path, source.key if len(spec.sources) > 1 else "")
        else:
            builder.add_file(source.path, source.key or source.path.name, source.sniff)


def _new_scratch(parent: Path, name: str) -> Path:
    """A new scratch folder ``<name>-p<pid>-*`` in ``parent``, after removing the ones left by
    processes that died before cleaning up (killed, or the machine stopped)."""
    parent.mkdir(parents=True, exist_ok=True)
    sweep_scratch(parent)
    return Path(tempfile.mkdtemp(prefix=f"{name}-p{os.getpid()}-", dir=parent))


_SCRATCH_NAME = re.compile(r"-p(\d+)-[^/]+$")


def sweep_scratch(parent: Path) -> int:
    """Delete the scratch folders in ``parent`` whose process is gone; return how many."""
    removed = 0
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return 0
    for entry in entries:
        match = _SCRATCH_NAME.search(entry.name)
        if match is None or not entry.name.startswith("ctx-"):
            continue
        if not entry.is_dir(follow_symlinks=False) or _alive(int(match.group(1))):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += 1
    if removed:
        log.info("context.scratch_swept", folders=removed)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _check_exists(path: Path) -> None:
    try:
        mode = path.stat().st_mode  # the path the user named may itself be a symlink
    except FileNotFoundError:
        raise ContextError(f"context {path} does not exist; check the path") from None
    except OSError as exc:
        raise ContextError(f"cannot use the context {path}: {exc.strerror}") from exc
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ContextError(f"context {path} is neither a regular file nor a folder")


def _check_size(total: int, max_bytes: int | None, display: str) -> None:
    # Apparent sizes: a sparse file costs nothing on disk, but all of it when copied or read.
    if max_bytes is not None and total > max_bytes:
        raise ContextError(
            f"the context is larger than {max_bytes:,} bytes at {display} (the most a sandbox "
            "on this host can load; RLM_SANDBOX_MAX_MEMORY sets it); give a smaller context, "
            "or leave files out with --include/--exclude"
        )


def _single_file(
    source: Source, manifest: Manifest, scratch_parent: Path, name: str
) -> PreparedContext | None:
    """A lone text file passes through; a document becomes a text file. None: use a folder."""
    path = source.path
    display = source.key or path.name
    head = _read_head(path, display)
    kind = document_kind(path.name)
    if kind is None and source.sniff:
        from engine.contexts.extract import sniff_kind

        kind = sniff_kind(head)
    if kind is None:
        if looks_binary(head):
            raise ContextError(
                f"the context file {display} is binary (not text, PDF, DOCX or HTML); "
                "convert it to text first"
            )
        manifest.files = 1
        manifest.bytes = path.stat().st_size
        return PreparedContext(path, manifest, passthrough=True)
    scratch = _new_scratch(scratch_parent, name)
    try:
        scratch.chmod(0o755)
        out = scratch / (_safe_name(Path(display).name) or "context")
        out = out.with_name(out.name + ".txt") if out.suffix in (".json", ".jsonl") else out
        with Extractor() as extractor:
            warnings = extractor.extract(path, kind, display, out, 0o644)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    manifest.files = manifest.extracted = 1
    manifest.bytes = out.stat().st_size
    for warning in warnings:
        manifest.warn(f"{display}: {warning}")
    return PreparedContext(out, manifest, scratch)


class _TreeBuilder:
    """Fills the scratch folder with one text file per included source file."""

    def __init__(
        self,
        out: Path,
        manifest: Manifest,
        globs: Globs,
        gitignore: bool,
        max_bytes: int | None = None,
    ) -> None:
        self._out = out
        self._manifest = manifest
        self._globs = globs
        self._gitignore = gitignore
        self._max_bytes = max_bytes
        self._extractor: Extractor | None = None  # started at the first document

    def __enter__(self) -> _TreeBuilder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._extractor is not None:
            self._extractor.close()

    def add_dir(self, folder: Path, prefix: str) -> None:
        root = folder.resolve()
        rules = IgnoreRules.for_root(root) if self._gitignore else None
        self._walk(root, root, "", prefix, rules)

    def _walk(
        self, root: Path, folder: Path, rel_dir: str, prefix: str, rules: IgnoreRules | None
    ) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise ContextError(
                f"cannot read the folder {folder}: {exc.strerror}; fix its permissions or "
                "leave it out with --exclude"
            ) from exc
        m = self._manifest
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            key = f"{prefix}/{rel}" if prefix else rel
            link_target: Path | None = None
            if entry.is_symlink():
                link_target = Path(os.path.realpath(entry.path))
                if not _inside(link_target, root):
                    m.symlinks_outside += 1  # never followed: it could be any host file
                    continue
            is_dir = link_target is None and entry.is_dir(follow_symlinks=False)
            if is_dir and entry.name == ".git":
                m.ignored_dirs += 1
                continue
            if rules is not None and rules.ignored(rel, is_dir):
                if is_dir:
                    m.ignored_dirs += 1
                else:
                    m.ignored_files += 1
                continue
            if self._globs.excluded(key, is_dir):
                m.excluded += 1
                continue
            if is_dir:
                if rel.count("/") + 1 >= MAX_DEPTH:
                    m.too_deep += 1  # its files would sit more than MAX_DEPTH folders down
                    continue
                path = Path(entry.path)
                inner = rules.descend(rel, path) if rules is not None else None
                self._walk(root, path, rel, prefix, inner)
            elif link_target is not None:
                if link_target.is_file():
                    self.add_file(link_target, key)
                else:
                    m.symlinks_skipped += 1
            elif entry.is_file(follow_symlinks=False):
                self.add_file(Path(entry.path), key)
            else:
                m.special += 1

    def add_file(self, path: Path, key: str, sniff: bool = False) -> None:
        """Add the file at ``path`` as ``key``: extracted, linked, copied or skipped."""
        if key.startswith("/") or ".." in key.split("/"):
            raise ContextError(f"invalid context key {key!r}: use a relative path")
        dest = self._out / key
        if dest.exists():
            return  # the same file reached twice (overlapping sources)
        m = self._manifest
        kind = document_kind(path.name)  # the key may name a text file converted earlier
        fd = _open_plain(path, key)
        try:
            info = os.fstat(fd)
            head = os.pread(fd, SNIFF_BYTES, 0)
            if kind is None and sniff:
                from engine.contexts.extract import sniff_kind

                kind = sniff_kind(head)
            if kind is None and looks_binary(head):
                m.binary += 1
                return
            _make_parents(self._out, dest)
            if kind is not None:
                self._extractor = self._extractor or Extractor()
                for warning in self._extractor.extract(path, kind, key, dest, 0o644):
                    m.warn(f"{key}: {warning}")
                m.extracted += 1
                m.bytes += dest.stat().st_size
            else:
                _check_size(m.bytes + info.st_size, self._max_bytes, key)
                _link_or_copy(fd, info, path, dest)
                m.bytes += info.st_size
            m.files += 1
        finally:
            os.close(fd)


def _open_plain(path: Path, display: str) -> int:
    """Open a regular file without following a symlink (and without blocking on a pipe)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ContextError(
            f"cannot read the context file {display}: {exc.strerror}; fix its permissions or "
            "leave it out with --exclude"
        ) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ContextError(f"the context file {display} is not a regular file")
    return fd


def _read_head(path: Path, display: str) -> bytes:
    fd = _open_plain(path, display)
    try:
        return os.pread(fd, SNIFF_BYTES, 0)
    finally:
        os.close(fd)


def _link_or_copy(fd: int, info: os.stat_result, path: Path, dest: Path) -> None:
    # A hard link costs no bytes; only for a file the sandbox user may read anyway (its
    # mode is shared with the original, which must not change).
    if info.st_mode & stat.S_IROTH:
        with contextlib.suppress(OSError):  # another file system, or protected_hardlinks
            os.link(path, dest, follow_symlinks=False)
            if os.stat(dest, follow_symlinks=False).st_ino == info.st_ino:
                return
            dest.unlink()  # replaced between open and link: copy what was opened instead
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        offset = 0
        while offset < info.st_size:
            sent = os.sendfile(out, fd, offset, info.st_size - offset)
            if sent == 0:
                break  # the file shrank while copying
            offset += sent
    finally:
        os.close(out)


def _make_parents(root: Path, dest: Path) -> None:
    parent = dest.parent
    if parent == root or parent.is_dir():
        return
    parent.mkdir(parents=True, mode=0o755)
    # mkdir's mode is cut by the umask; the sandbox user must be able to list every folder.
    while parent != root:
        parent.chmod(0o755)
        parent = parent.parent


def _inside(target: Path, root: Path) -> bool:
    return target == root or root in target.parents


def _safe_name(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)
    return cleaned.lstrip(".")
