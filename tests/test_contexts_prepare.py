"""Host-side context preparation on real files: .gitignore, binary, symlinks, globs, documents."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from engine.contexts import ContextSpec, PreparedContext, Source, prepare_context, read_stdin
from engine.contexts.extract import document_kind, extract_text, sniff_kind
from engine.errors import ContextError
from tests.contexts_support import write_docx, write_html, write_pdf


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    return tmp_path / "scratch"


def files_of(prepared: PreparedContext) -> dict[str, str]:
    """What the sandbox's loader would see: every file under the prepared path, by key."""
    root = prepared.path
    out = {}
    for folder, _dirs, names in os.walk(root):
        for name in names:
            full = Path(folder, name)
            assert not full.is_symlink()
            out[str(full.relative_to(root))] = full.read_text(encoding="utf-8")
    return out


def prepare(scratch: Path, *paths: Path, **options: object) -> PreparedContext:
    return prepare_context(ContextSpec.from_paths(list(paths), **options), scratch)  # type: ignore[arg-type]


def make_repo(root: Path) -> Path:
    (root / "src" / "deep").mkdir(parents=True)
    (root / "build").mkdir()
    (root / ".git" / "info").mkdir(parents=True)
    (root / ".gitignore").write_text("build/\n*.log\n# comment\n")
    (root / ".git" / "info" / "exclude").write_text("local.txt\n")
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "src" / ".gitignore").write_text("!keep.log\ngenerated.py\n")
    (root / "README.md").write_text("# Project\n")
    (root / "local.txt").write_text("only here\n")
    (root / "app.log").write_text("noise\n")
    (root / "build" / "out.c").write_text("int x;\n")
    (root / "src" / "main.py").write_text("print('hi')\n")
    (root / "src" / "generated.py").write_text("x = 1\n")
    (root / "src" / "keep.log").write_text("kept\n")
    (root / "src" / "deep" / "util.py").write_text("def f(): pass\n")
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    return root


def test_folder_honours_nested_gitignore_and_skips_binary(tmp_path: Path, scratch: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    prepared = prepare(scratch, repo)
    try:
        assert files_of(prepared) == {
            ".gitignore": "build/\n*.log\n# comment\n",
            "README.md": "# Project\n",
            "src/.gitignore": "!keep.log\ngenerated.py\n",
            "src/main.py": "print('hi')\n",
            "src/keep.log": "kept\n",  # re-included by the deeper .gitignore
            "src/deep/util.py": "def f(): pass\n",
        }
        m = prepared.manifest
        # app.log, local.txt (.git/info/exclude), src/generated.py; build/ and .git/ not entered
        assert (m.files, m.ignored_files, m.ignored_dirs, m.binary) == (6, 3, 2, 1)
        text = prepared.describe() or ""
        assert "6 files included" in text and "3 file(s) ignored by .gitignore" in text
        assert "1 binary file(s)" in text
    finally:
        prepared.cleanup()
    assert not scratch.exists() or not any(scratch.iterdir())


def test_no_gitignore_keeps_ignored_files_but_never_dot_git(tmp_path: Path, scratch: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    prepared = prepare(scratch, repo, gitignore=False)
    keys = set(files_of(prepared))
    prepared.cleanup()
    assert {"app.log", "build/out.c", "src/generated.py", "local.txt"} <= keys
    assert not any(k.startswith(".git/") for k in keys)


def test_include_and_exclude_globs(tmp_path: Path, scratch: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    prepared = prepare(scratch, repo, include=["*.py"], exclude=["deep/"])
    try:
        assert set(files_of(prepared)) == {"src/main.py"}
        # README.md, logo.png, 2 .gitignore, keep.log miss --include; deep/ is excluded
        assert prepared.manifest.excluded == 6
        assert "excluded by --include/--exclude" in (prepared.describe() or "")
    finally:
        prepared.cleanup()


def test_symlinks_outside_are_skipped_and_counted_never_followed(
    tmp_path: Path, scratch: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("HOST-SECRET-7731\n")
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha\n")
    (folder / "abs-link.txt").symlink_to(secret)  # absolute
    (folder / "sub" / "rel-link.txt").symlink_to(Path("..", "..", "secret.txt"))  # relative
    (folder / "etc").symlink_to("/etc")  # a folder outside
    (folder / "inside.txt").symlink_to("a.txt")  # a file inside: its text, under its own name
    (folder / "loop").symlink_to(".")  # a folder inside: skipped (no loops)
    (folder / "dangling.txt").symlink_to("nowhere.txt")
    os.mkfifo(folder / "pipe")  # reading it would block forever
    prepared = prepare(scratch, folder)
    try:
        files = files_of(prepared)
        assert files == {"a.txt": "alpha\n", "inside.txt": "alpha\n"}
        assert "HOST-SECRET" not in "".join(files.values())
        m = prepared.manifest
        assert (m.symlinks_outside, m.symlinks_skipped, m.special) == (3, 2, 1)
        assert "3 symlink(s) pointing outside the folder (not followed)" in (
            prepared.describe() or ""
        )
    finally:
        prepared.cleanup()


def test_the_named_folder_may_itself_be_a_symlink(tmp_path: Path, scratch: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "x.txt").write_text("x\n")
    (tmp_path / "alias").symlink_to(real)
    prepared = prepare(scratch, tmp_path / "alias")
    assert files_of(prepared) == {"x.txt": "x\n"}
    prepared.cleanup()


def test_single_text_file_passes_through_untouched(tmp_path: Path, scratch: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("plain\n")
    prepared = prepare(scratch, path)
    assert prepared.path == path and prepared.scratch is None
    assert prepared.describe() is None  # nothing converted or left out: nothing to tell
    assert (prepared.manifest.files, prepared.manifest.bytes) == (1, 6)


def test_single_binary_file_is_a_clear_error(tmp_path: Path, scratch: Path) -> None:
    path = tmp_path / "image.bin"
    path.write_bytes(b"GIF89a\0\0\0")
    with pytest.raises(ContextError, match=r"image\.bin is binary"):
        prepare(scratch, path)


def test_missing_path_is_a_clear_error(tmp_path: Path, scratch: Path) -> None:
    with pytest.raises(ContextError, match=r"nope\.txt does not exist"):
        prepare(scratch, tmp_path / "nope.txt")


def test_several_sources_become_one_dict_by_path(tmp_path: Path, scratch: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("A\n")
    repo = make_repo(tmp_path / "repo")
    write_pdf(tmp_path / "paper.pdf", ["Abstract here"])
    prepared = prepare(scratch, tmp_path / "notes" / "a.txt", repo, tmp_path / "paper.pdf")
    try:
        files = files_of(prepared)
        assert files["notes/a.txt"] == "A\n"
        assert files["repo/src/main.py"] == "print('hi')\n"
        assert "repo/build/out.c" not in files  # each folder keeps its .gitignore
        assert files["paper.pdf"].startswith("[page 1]\nAbstract here")
        assert prepared.manifest.sources == 3 and prepared.manifest.extracted == 1
    finally:
        prepared.cleanup()


def test_exclude_matches_the_dict_key_across_sources(tmp_path: Path, scratch: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        folder.mkdir()
        (folder / "x.txt").write_text(folder.name)
    prepared = prepare(scratch, one, two, exclude=["two/"])
    assert files_of(prepared) == {"one/x.txt": "one"}
    prepared.cleanup()


def test_private_files_are_copied_not_linked_and_keep_their_mode(
    tmp_path: Path, scratch: Path
) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    shared, private = folder / "shared.txt", folder / "private.txt"
    shared.write_text("s\n")
    private.write_text("p\n")
    shared.chmod(0o644)
    private.chmod(0o600)
    prepared = prepare(scratch, folder)
    try:
        staged_shared = prepared.path / "shared.txt"
        staged_private = prepared.path / "private.txt"
        assert staged_shared.stat().st_ino == shared.stat().st_ino  # a hard link: no copy
        assert staged_private.stat().st_ino != private.stat().st_ino
        assert stat.S_IMODE(staged_private.stat().st_mode) == 0o644  # the sandbox can read it
        assert stat.S_IMODE(private.stat().st_mode) == 0o600  # the original is untouched
    finally:
        prepared.cleanup()
    assert shared.read_text() == "s\n" and private.read_text() == "p\n"


def test_nothing_left_is_an_error_with_the_counts(tmp_path: Path, scratch: Path) -> None:
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "a.o").write_bytes(b"\0\1\2")
    with pytest.raises(ContextError, match=r"no text file is left.*1 binary file"):
        prepare(scratch, folder)
    assert not any(scratch.iterdir())  # the scratch folder is removed on errors


def test_pdf_pages_are_marked(tmp_path: Path, scratch: Path) -> None:
    path = write_pdf(tmp_path / "report.pdf", ["Intro text", "Budget is 42 units", "The end"])
    prepared = prepare(scratch, path)
    try:
        text = prepared.path.read_text()
        assert prepared.path.name == "report.pdf" and prepared.scratch is not None
        assert text.index("[page 1]") < text.index("Intro text") < text.index("[page 2]")
        assert "[page 2]\nBudget is 42 units" in text and "[page 3]\nThe end" in text
        assert "converted to text" in (prepared.describe() or "")
    finally:
        prepared.cleanup()


def test_docx_headings_lists_and_tables(tmp_path: Path) -> None:
    text = extract_text(write_docx(tmp_path / "r.docx"), "docx", "r.docx").text
    assert text == (
        "# Quarterly report\n\n# Revenue\n\nRevenue grew by 12 percent in the quarter.\n"
        "- Widgets sold well\n\n## Regions\n\nRegion | Sales\nNorth | 4200\n"
    )


def test_html_keeps_headings_drops_scripts(tmp_path: Path) -> None:
    text = extract_text(write_html(tmp_path / "g.html"), "html", "g.html").text
    assert text.startswith("[title] Field guide\n\n# Birds\n\nThe heron waits.\n")
    assert "## Habitat\n\n- rivers\n- lakes\n" in text
    assert "Bird | Length\nHeron | 95 cm" in text
    assert "SCRIPT-TEXT" not in text and "color" not in text


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("broken.pdf", b"%PDF-1.4\nthis is not a pdf at all", "PDF"),
        ("broken.docx", b"PK\x03\x04 truncated zip", "DOCX"),
        ("empty.pdf", b"", "PDF"),
    ],
)
def test_unreadable_document_names_the_file(
    tmp_path: Path, scratch: Path, name: str, data: bytes, kind: str
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "fine.txt").write_text("fine\n")
    (folder / name).write_bytes(data)
    with pytest.raises(ContextError, match=rf"cannot read {name} as {kind}"):
        prepare(scratch, folder)
    with pytest.raises(ContextError, match=rf"cannot read {name} as {kind}"):
        prepare(scratch, folder / name)


def test_document_kinds_by_name_and_by_content() -> None:
    assert [document_kind(n) for n in ("a.PDF", "b.docx", "c.htm", "d.txt")] == [
        "pdf",
        "docx",
        "html",
        None,
    ]
    assert sniff_kind(b"%PDF-1.7\n") == "pdf"
    assert sniff_kind(b"  <!DOCTYPE html><html>") == "html"
    assert sniff_kind(b"hello") is None


class _Pipe(io.BytesIO):
    def isatty(self) -> bool:
        return False


def test_stdin_is_copied_and_sniffed(tmp_path: Path, scratch: Path) -> None:
    pdf = write_pdf(tmp_path / "in.pdf", ["from a pipe"]).read_bytes()
    stdin = read_stdin(_Pipe(pdf), tmp_path)
    prepared = prepare_context(ContextSpec.from_paths([], stdin=stdin), scratch)
    try:
        assert prepared.path.read_text().startswith("[page 1]\nfrom a pipe")
    finally:
        prepared.cleanup()
    other = tmp_path / "other.txt"
    other.write_text("o")
    spec = ContextSpec.from_paths([other], stdin=stdin)
    assert [(s.key, s.sniff) for s in spec.sources] == [("other.txt", False), ("stdin", True)]


def test_stdin_empty_or_terminal_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="standard input was empty"):
        read_stdin(_Pipe(b""), tmp_path)

    class Tty(_Pipe):
        def isatty(self) -> bool:
            return True

    with pytest.raises(ContextError, match="it is a terminal"):
        read_stdin(Tty(b"x"), tmp_path / "x")


def test_keys_cannot_escape_the_scratch_folder(tmp_path: Path, scratch: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("a")
    spec = ContextSpec((Source(path, "../escape.txt"), Source(path, "b.txt")))
    with pytest.raises(ContextError, match="invalid context key"):
        prepare_context(spec, scratch)


def test_the_root_prompt_states_the_counts(tmp_path: Path, scratch: Path) -> None:
    from engine.rlm.prompts import describe_context
    from engine.sandbox import ContextInfo

    prepared = prepare(scratch, make_repo(tmp_path / "repo"))
    prepared.cleanup()
    notes = prepared.describe() or ""
    info = ContextInfo("directory", "dict", 100, 6, "files: README.md", 0.01, notes=notes)
    text = describe_context(info)
    assert notes and notes in text
    assert text.index("6 items") < text.index("6 files included") < text.index("Preview")


def test_scratch_left_by_a_dead_process_is_swept(tmp_path: Path, scratch: Path) -> None:
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    dead = scratch / f"ctx-aaa-p{int(gone.stdout)}-x1"
    mine = scratch / f"ctx-bbb-p{os.getpid()}-x2"
    run_dir = scratch / "0123456789ab"  # a run directory: never touched
    for folder in (dead, mine, run_dir):
        (folder / "sub").mkdir(parents=True)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_text("x")
    prepared = prepare(scratch, tmp_path / "d")
    try:
        assert not dead.exists() and mine.exists() and run_dir.exists()
        assert prepared.scratch is not None
        assert prepared.scratch.name.startswith(f"ctx-p{os.getpid()}-")
    finally:
        prepared.cleanup()
