"""A sandbox runs code, keeps state, loads every kind of context and cleans up."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import pytest

from engine.errors import ContextError, SandboxClosedError
from engine.sandbox import KernelState, Sandbox, SandboxConfig
from tests.conftest import engine_containers

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]


async def test_state_persists_across_cells_and_results_are_reported() -> None:
    async with Sandbox(SandboxConfig()) as sandbox:
        first = await sandbox.execute("x = 40\nprint('hello')")
        assert first.ok and first.stdout == "hello\n"
        second = await sandbox.execute("x + 2")
        assert second.result == "42"
        error = await sandbox.execute("1 / 0")
        assert error.error is not None and error.error.ename == "ZeroDivisionError"
        assert "ZeroDivisionError" in error.output_text()
        assert "\x1b[" not in error.error.traceback
        after = await sandbox.execute("print(x)")
        assert after.stdout == "40\n"
        name = f"rlm-{sandbox.task_id}"
        assert name in engine_containers()
        run_dir = sandbox.run_dir
    assert name not in engine_containers()
    assert not run_dir.exists()
    with pytest.raises(SandboxClosedError):
        await sandbox.execute("1")


async def test_text_context_is_mounted_read_only_and_described(tmp_path: Path) -> None:
    path = tmp_path / "haystack.txt"
    path.write_text("alpha\nneedle: 4242\nomega\n" * 100, encoding="utf-8")
    path.chmod(0o666)  # even a world-writable file cannot be changed through the mount
    async with Sandbox(SandboxConfig(), context=path) as sandbox:
        info = sandbox.context_info
        assert info is not None
        assert (info.kind, info.type_name) == ("text", "str")
        assert info.length_chars == len(path.read_text())
        assert info.preview.startswith("alpha")
        result = await sandbox.execute(
            "import re\nprint(type(context).__name__, len(re.findall(r'needle: (\\d+)', context)))"
        )
        assert result.stdout == "str 100\n"
        write = await sandbox.execute("open('/rlm/context/haystack.txt', 'a').write('x')")
        assert write.error is not None and write.error.ename == "OSError"
        assert "Read-only file system" in write.error.evalue
    assert path.read_text().count("needle") == 100


async def test_json_jsonl_directory_and_value_contexts(tmp_path: Path) -> None:
    (tmp_path / "doc.json").write_text(json.dumps({"a": [1, 2, 3], "b": "x"}))
    (tmp_path / "rows.jsonl").write_text('{"id": 1}\n\n{"id": 2}\n')
    folder = tmp_path / "repo"
    (folder / "pkg").mkdir(parents=True)
    (folder / "pkg" / "mod.py").write_text("def f():\n    return 1\n")
    (folder / "README").write_text("read me")
    cases = [
        (tmp_path / "doc.json", "json", "dict", "sorted(context) == ['a', 'b']"),
        (tmp_path / "rows.jsonl", "jsonl", "list", "[r['id'] for r in context] == [1, 2]"),
        (folder, "directory", "dict", "sorted(context) == ['README', 'pkg/mod.py']"),
        ("plain text value", "text", "str", "context == 'plain text value'"),
        ({"k": [1, "two"]}, "json", "dict", "context == {'k': [1, 'two']}"),
    ]

    async def loads(context: object, kind: str, type_name: str, check: str) -> None:
        async with Sandbox(SandboxConfig(), context=context) as sandbox:
            assert sandbox.context_info is not None
            assert (sandbox.context_info.kind, sandbox.context_info.type_name) == (kind, type_name)
            result = await sandbox.execute(check)
            assert result.result == "True", (context, result.output_text())

    # One sandbox per context, started side by side (the test waits for the slowest only).
    async with anyio.create_task_group() as group:
        for case in cases:
            group.start_soon(loads, *case)


async def test_no_context_and_bad_contexts(tmp_path: Path) -> None:
    async with Sandbox(SandboxConfig()) as sandbox:
        assert sandbox.context_info is not None and sandbox.context_info.kind == "none"
        assert (await sandbox.execute("context is None")).result == "True"
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    cases = [
        (tmp_path / "missing.txt", "does not exist"),
        (broken, "not valid JSON"),
        ({"x": object()}, "cannot be written as JSON"),
    ]
    for number, (context, message) in enumerate(cases):
        task_id = f"badctx{number}{os.getpid()}"
        with pytest.raises(ContextError, match=message):
            async with Sandbox(SandboxConfig(), context=context, task_id=task_id):
                pass
        assert f"rlm-{task_id}" not in engine_containers()
        assert not (SandboxConfig().run_root / task_id).exists()


async def test_unreadable_context_is_copied_not_exposed(tmp_path: Path) -> None:
    path = tmp_path / "secret-perms.txt"
    path.write_text("private data")
    path.chmod(0o600)
    async with Sandbox(SandboxConfig(), context=path) as sandbox:
        result = await sandbox.execute("context")
        assert result.result == "'private data'"
    assert path.stat().st_mode & 0o777 == 0o600


async def test_environment_is_an_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-host-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "host-secret")
    config = SandboxConfig(env={"RLM_DEPTH": "1"})
    async with Sandbox(config) as sandbox:
        result = await sandbox.execute(
            "import os, json\nprint(json.dumps(dict(os.environ)))\n"
            "print(os.path.exists('/var/run/docker.sock'))"
        )
    env_line, sock_line = result.stdout.strip().splitlines()
    env = json.loads(env_line)
    assert "host-secret" not in env_line and "sk-host" not in env_line
    assert env["RLM_DEPTH"] == "1"
    assert "OPENAI_API_KEY" not in env
    assert sock_line == "False"
    assert os.environ["OPENAI_API_KEY"] == "sk-host-secret"


async def test_context_reassignment_is_restored_and_answer_kept() -> None:
    async with Sandbox(SandboxConfig(), context="the original") as sandbox:
        result = await sandbox.execute("context = 'clobbered'")
        assert result.state.context_restored is True
        assert "restored" in result.stdout
        assert (await sandbox.execute("context")).result == "'the original'"
        deleted = await sandbox.execute("del context")
        assert deleted.state.context_restored is True
        assert (await sandbox.execute("context")).result == "'the original'"
        prose = await sandbox.execute("answer = 'forty-two'")
        assert prose.state.answer_content == "forty-two"
        assert prose.state.answer_ready is False
        done = await sandbox.execute("answer['ready'] = True")
        assert done.state == KernelState(answer_content="forty-two", answer_ready=True)
        final = await sandbox.execute("result = {'n': 7}\nFINAL_VAR('result')")
        assert final.state.answer_content == "{'n': 7}" and final.state.answer_ready
        # None is no answer, not the text "None" (the loop never takes an empty one as final).
        cleared = await sandbox.execute("answer['content'] = None")
        assert cleared.state.answer_content == ""
        show = await sandbox.execute("SHOW_VARS()")
        assert show.result is not None and "'result': 'dict'" in show.result
        assert "context" not in show.result


async def test_huge_results_errors_and_answers_arrive_clipped_not_lost() -> None:
    """Honest messages always fit the orchestrator's frame limit (8x the output cap)."""
    config = SandboxConfig(output_limit_chars=10_000)
    async with Sandbox(config) as sandbox:
        value = await sandbox.execute("'v' * 5_000_000")
        assert value.result is not None and value.result.startswith("'vvv")
        # Clipped in the kernel, then (to the exact cap) by the orchestrator: a marker says so.
        assert "[rlm: " in value.result and len(value.result) < 20_000
        failed = await sandbox.execute("raise ValueError('e' * 5_000_000)")
        assert failed.error is not None and failed.error.ename == "ValueError"
        assert "[rlm: " in failed.error.evalue and len(failed.error.evalue) < 20_000
        answered = await sandbox.execute(
            "answer['content'] = '\\x00\"' * 2_000_000\nanswer['ready'] = True"
        )
        content = answered.state.answer_content
        assert answered.state.answer_ready is True
        assert content.startswith('\x00"\x00"') and "characters cut here" in content
        shown = await sandbox.execute("from IPython.display import display\ndisplay('d' * 10**6)")
        assert "[rlm: " in shown.stdout and len(shown.stdout) < 40_000
        assert (await sandbox.execute("print('still here')")).stdout == "still here\n"


async def test_a_full_or_read_only_file_system_is_explained() -> None:
    async with Sandbox(SandboxConfig(tmp_bytes=1 << 20)) as sandbox:
        full = await sandbox.execute("open('/tmp/big', 'wb').write(b'x' * (2 << 20))")
        read_only = await sandbox.execute("open('/rlm/run/x', 'w')")
    assert full.error is not None and "No space left on device" in full.error.evalue
    assert "[rlm] the sandbox can write only to /tmp" in full.stdout
    assert read_only.error is not None  # EROFS (runc) or EACCES (gVisor checks access first)
    assert "[rlm] the sandbox can write only to /tmp" in read_only.stdout
