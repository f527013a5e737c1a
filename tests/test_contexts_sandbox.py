"""End to end with a real sandbox: what the kernel sees of a prepared context, and what never
reaches it (an outside symlink's target, ignored and binary files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.sandbox import Sandbox, SandboxConfig
from tests.contexts_support import write_docx, write_pdf
from tests.test_rlm_cli import _ENTRY, assert_cleaned_up

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

SECRET = "HOST-SECRET-5521"

# Sandbox code: report the context's keys and texts, and every file under /rlm (the mount
# and the run dir) that holds the secret.
REPORT = """```repl
import json, os
found = []
for folder, _dirs, names in os.walk('/rlm'):
    for name in names:
        path = os.path.join(folder, name)
        try:
            with open(path, 'rb') as handle:
                if b'HOST-SECRET' in handle.read():
                    found.append(path)
        except OSError:
            pass
value = context if isinstance(context, dict) else {'(text)': context}
answer['content'] = json.dumps({'context': value, 'found': found})
answer['ready'] = True
```"""


def rlm_run(cwd: Path, *args: str | Path, stdin: bytes | None = None) -> dict[str, Any]:
    cassette = cwd / "c.jsonl"
    entry = {"match": {"model": "root"}, "response": {"content": REPORT}, "repeat": True}
    cassette.write_text(json.dumps(entry) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLM_")}
    if os.environ.get("RLM_SANDBOX_IMAGE"):
        env["RLM_SANDBOX_IMAGE"] = os.environ["RLM_SANDBOX_IMAGE"]
    done = subprocess.run(
        [sys.executable, "-c", _ENTRY, "run", "-q", "what is there?", "--model", "openai/root",
         "--replay", str(cassette), "--trajectory", str(cwd / "t.jsonl"), "--json",
         *map(str, args)],
        cwd=cwd, env=env, input=stdin, capture_output=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert_cleaned_up(cwd / "t.jsonl")
    result = json.loads(done.stdout)
    events = [json.loads(line) for line in (cwd / "t.jsonl").read_text().splitlines()]
    return {"answer": json.loads(result["answer"]), "events": events}


def test_folder_context_reaches_the_kernel_as_text_without_outside_files(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text(f"{SECRET}\n")
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    (repo / ".gitignore").write_text("ignored.txt\n")
    (repo / "ignored.txt").write_text("IGNORED\n")
    (repo / "notes.md").write_text("# Notes\n")
    (repo / "blob.bin").write_bytes(b"\0\1\2" * 10)
    write_pdf(repo / "paper.pdf", ["Introduction", "The launch code is 4417"])
    write_docx(repo / "sub" / "report.docx")
    (repo / "leak.txt").symlink_to(tmp_path / "secret.txt")
    (repo / "sub" / "leak2.txt").symlink_to(Path("..", "..", "secret.txt"))

    run = rlm_run(tmp_path, "--context", repo)
    seen = run["answer"]
    assert sorted(seen["context"]) == [".gitignore", "notes.md", "paper.pdf", "sub/report.docx"]
    assert "[page 2]\nThe launch code is 4417" in seen["context"]["paper.pdf"]
    assert "## Regions\n\nRegion | Sales\nNorth | 4200" in seen["context"]["sub/report.docx"]
    assert seen["found"] == []  # the secret is nowhere the sandbox can read
    events = run["events"]
    manifest = events[0]["context_arg"]["manifest"]
    assert (manifest["files"], manifest["extracted"]) == (4, 2)
    assert (manifest["symlinks_outside"], manifest["ignored_files"], manifest["binary"]) == (
        2,
        1,
        1,
    )
    ready = next(e for e in events if e["type"] == "sandbox_ready")
    notes = ready["context"]["notes"]  # what the root prompt's context description says
    assert "4 files included (2 converted to text" in notes
    assert "2 symlink(s) pointing outside the folder (not followed)" in notes


def test_stdin_and_several_files_become_one_dict(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("alpha\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.html").write_text("<html><body><h1>Bee</h1><p>buzz</p></body></html>")
    run = rlm_run(tmp_path, "-c", "a.txt", "-c", "-", "-c", "docs", stdin=b"from the pipe\n")
    assert run["answer"]["context"] == {
        "a.txt": "alpha\n",
        "docs/b.html": "# Bee\n\nbuzz\n",
        "stdin": "from the pipe\n",
    }


@pytest.mark.anyio
async def test_private_folder_copy_never_follows_symlinks(tmp_path: Path) -> None:
    """A folder the sandbox user cannot read is copied into the run dir; links are dropped."""
    (tmp_path / "secret.txt").write_text(f"{SECRET}\n")
    folder = tmp_path / "private"
    folder.mkdir()
    (folder / "ok.txt").write_text("ok\n")
    (folder / "leak.txt").symlink_to(tmp_path / "secret.txt")
    folder.chmod(0o700)
    config = SandboxConfig.from_env()
    async with Sandbox(config, context=folder) as sandbox:
        result = await sandbox.execute(REPORT.split("\n", 1)[1].rsplit("```", 1)[0])
        assert result.error is None, result.output_text()
        state = json.loads(result.state.answer_content)
    assert state == {"context": {"ok.txt": "ok\n"}, "found": []}
