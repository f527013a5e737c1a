"""`rlm eval --service`: items run as jobs of a real `rlm serve` (real sandboxes, replayed
model), with the same results file, resume, report and trajectories as a local run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from engine.eval.results import read_results
from engine.eval.sniah import SNIAH
from engine.export.sources import service_sources
from tests.service_support import API_KEY, Service, rlm_command

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

DATA = Path(__file__).resolve().parent / "fixtures" / "data"
FIND_NEEDLE = (
    "I will search the context.\n```repl\nimport re\n"
    "m = re.search(r'special magic numbers for [\\w-]+ is: (\\d{7})', context)\n"
    "answer['content'] = m.group(1)\nanswer['ready'] = True\n```\n"
)


@pytest.fixture(autouse=True)
def _data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLM_DATA_DIR", str(DATA))


def run_eval(out: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["eval", "sniah", "--lengths", "3000", "--unit", "chars", "--n", "3"]
    args += ["--concurrency", "2", "--out", str(out), "--service", url, *extra]
    env = {"RLM_DATA_DIR": str(DATA), "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PATH": "/usr/bin"}
    return subprocess.run(
        rlm_command(*args), capture_output=True, text=True, timeout=600, env=env, check=False
    )


def test_eval_through_a_service_resumes_and_reports(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"
    entry = {"match": {"model": "root"}, "response": {"content": FIND_NEEDLE}, "repeat": True}
    cassette.write_text(json.dumps(entry) + "\n")
    (tmp_path / "data").mkdir()
    service = Service(tmp_path / "data", None, "--model", "openai/root", "--replay", str(cassette))
    service.start()
    try:
        out = tmp_path / "out"
        refused = run_eval(out, service.url, "--api-key", "wrong-key")
        assert refused.returncode != 0 and "Traceback" not in refused.stderr
        assert "refused the API key" in refused.stderr
        done = run_eval(out, service.url, "--api-key", API_KEY, "--max-iterations", "3")
        assert done.returncode == 0, done.stderr
        records = read_results(out / "results.jsonl")
        items = SNIAH().items(3000, 3, seed=0, unit="chars")
        assert sorted((r["index"], r["method"], r["score"]) for r in records) == [
            (0, "rlm", 1.0),
            (1, "rlm", 1.0),
            (2, "rlm", 1.0),
        ]
        for record in records:
            assert record["prediction"] == items[record["index"]].gold[0]
            assert record["model"] == "openai/root" and record["iterations"] == 1
            trajectory = Path(record["trajectory_path"])
            assert trajectory.parent == out / "trajectories"
            events = [json.loads(line) for line in trajectory.read_text().splitlines()]
            assert events[0]["type"] == "run_start" and events[-1]["type"] == "run_end"
        headers = {"Authorization": f"Bearer {API_KEY}"}
        jobs = httpx.get(service.url + "/v1/jobs", headers=headers).json()["data"]
        assert len(jobs) == 3
        # rlm export --service reads every page of the listing (it read only the first).
        exported = list(service_sources(service.url, API_KEY, page_size=2))
        assert sorted(source.name for source in exported) == sorted(
            f"{service.url}/v1/jobs/{job['id']}" for job in jobs
        )
        assert {job["request"]["limits"]["max_iterations"] for job in jobs} == {3}
        assert "| 3000 chars | rlm | 3 | 100.0% |" in (out / "summary.md").read_text()
        # Run again: everything is in results.jsonl, so nothing is submitted.
        again = run_eval(out, service.url, "--api-key", API_KEY)
        assert again.returncode == 0, again.stderr
        assert "3/3 already done" in again.stderr
        assert len(httpx.get(service.url + "/v1/jobs", headers=headers).json()["data"]) == 3
    finally:
        service.stop()


def test_service_flag_refuses_model_flags_and_the_base_method(tmp_path: Path) -> None:
    model = run_eval(tmp_path / "a", "http://127.0.0.1:9", "--model", "openai/x")
    assert model.returncode != 0 and "cannot be used with --service" in model.stderr
    base = run_eval(tmp_path / "b", "http://127.0.0.1:9", "--method", "both")
    assert base.returncode != 0 and "use --method rlm" in base.stderr
    assert "Traceback" not in model.stderr + base.stderr
