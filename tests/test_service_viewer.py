"""The trajectory viewer in headless Chromium: a real 30-turn run, rendered and screenshotted.

Needs Debian's ``chromium`` package (``apt-get install -y chromium``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import numpy as np
import pytest
from matplotlib import image as mpimg

from engine.models import Cassette, ReplayServer
from tests.service_support import API_KEY, Service, code, rlm_command, sub, wait_final

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

TURNS = 30
# Every turn runs one cell; every tenth makes a sub-call; the thirtieth answers. Each cell
# differs (its first line), since the loop does not re-run a cell identical to an earlier one.
STEP = (
    "i = globals().get('i', 0) + 1\n"
    "print('step', i)\n"
    "if i % 10 == 0:\n"
    "    print(llm_query(f'SUBQ checkpoint {i}'))\n"
    "if i == 30:\n"
    "    answer['content'] = 'thirty'\n"
    "    answer['ready'] = True"
)
CASSETTE = [
    *(
        {"match": {"model": "root"}, "response": {"content": code(f"# turn {n}\n{STEP}")}}
        for n in range(1, TURNS + 1)
    ),
    sub("SUBQ", "checkpoint ok"),
]
TURN_BLUE = np.array([0x1A, 0x73, 0xE8]) / 255.0  # .badge-turn in viewer.css


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("the viewer tests need Chromium: apt-get install -y chromium")
    return path


def run_chromium(tmp_path: Path, url: str, *flags: str) -> str:
    profile = tmp_path / "chromium-profile"
    completed = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--window-size=1280,1000",
            "--virtual-time-budget=5000",
            *flags,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


@pytest.fixture(scope="module")
async def finished_job(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple]:
    """A real 30-turn run through the service; yields (service, job id, trajectory file)."""
    async with ReplayServer(Cassette(CASSETTE)) as replay:
        service = Service(tmp_path_factory.mktemp("viewer") / "data", replay.base_url)
        await anyio.to_thread.run_sync(service.start)
        try:
            async with service.client() as client:
                response = await client.post(
                    "/v1/jobs",
                    json={"query": "Count to thirty.", "limits": {"max_iterations": TURNS}},
                )
                job = await wait_final(client, response.json()["id"], timeout=300)
                assert job["status"] == "succeeded" and job["result"]["iterations"] == TURNS
                text = (await client.get(f"/v1/jobs/{job['id']}/trajectory")).text
            trajectory = service.data_dir.parent / "trajectory.jsonl"
            trajectory.write_text(text)
            yield service, job["id"], trajectory
        finally:
            await anyio.to_thread.run_sync(service.stop)


def bands(mask: np.ndarray) -> list[tuple[int, int]]:
    """Runs of consecutive True rows: (first, last)."""
    rows = np.flatnonzero(mask)
    out: list[tuple[int, int]] = []
    for row in rows:
        if out and row == out[-1][1] + 1:
            out[-1] = (out[-1][0], row)
        else:
            out.append((row, row))
    return out


async def test_rlm_view_renders_all_turns_on_one_screen(
    finished_job: tuple, tmp_path: Path
) -> None:
    _service, _job_id, trajectory = finished_job
    page = tmp_path / "view.html"
    made = subprocess.run(
        rlm_command("view", trajectory, "--out", page, "--no-open"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == str(page.resolve())
    html = page.read_text()
    assert "viewer.js" not in html and "<style>" in html  # self-contained

    dom = run_chromium(tmp_path, page.as_uri(), "--dump-dom")
    assert re.search(r'data-rendered="(\d+)"', dom), "the viewer script did not run"
    assert dom.count('class="node node-turn"') == TURNS
    assert dom.count('class="node node-cell"') == TURNS
    assert dom.count('class="node node-sub"') == 3
    assert "thirty" in dom and "stop <b>answer</b>" in dom

    shot = tmp_path / "view.png"
    run_chromium(tmp_path, page.as_uri(), f"--screenshot={shot}")
    pixels = mpimg.imread(shot)[:, :, :3]
    assert pixels.shape[:2] == (1000, 1280)
    blue = np.all(np.abs(pixels - TURN_BLUE) < 0.04, axis=2)
    # One band of turn-badge blue per turn row, all inside the 1000-pixel-high window.
    turn_rows = bands(blue[:, :300].any(axis=1))
    assert len(turn_rows) == TURNS, turn_rows
    heights = {last - first + 1 for first, last in turn_rows}
    assert max(heights) - min(heights) <= 1 and min(heights) >= 10  # legible, regular rows
    assert turn_rows[-1][1] < 1000


async def test_served_viewer_loads_a_job_with_the_api_key(
    finished_job: tuple, tmp_path: Path
) -> None:
    service, job_id, _trajectory = finished_job
    url = f"{service.url}/viewer/index.html#job={job_id}&key={API_KEY}"
    # The page runs under a policy that allows only its own script and this service.
    page = httpx.get(f"{service.url}/viewer/index.html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    dom = run_chromium(tmp_path, url, "--dump-dom")
    assert f'data-rendered="{len(_trajectory.read_text().splitlines())}"' in dom
    assert dom.count('class="node node-turn"') == TURNS
    wrong = f"{service.url}/viewer/index.html#job={job_id}&key=not-the-key"
    refused = run_chromium(tmp_path, wrong, "--dump-dom")
    assert "missing or invalid API key" in refused and "node-turn" not in refused


async def test_printed_markup_stays_text_in_the_exported_page(
    finished_job: tuple, tmp_path: Path
) -> None:
    # A cell or a model can print anything; in the page's inlined JSON "<!--<script>" kept
    # the data element open past its end tag, and the viewer's code never ran.
    _service, _job_id, trajectory = finished_job
    hostile = "</script><b>x</b> <!--<script> (no end)"
    lines = trajectory.read_text().splitlines()
    marked = [line.replace("step 1", f"step 1 {hostile}", 1) for line in lines]
    assert marked != lines
    source = tmp_path / "hostile.jsonl"
    source.write_text("\n".join(marked) + "\n")
    page = tmp_path / "hostile.html"
    made = subprocess.run(
        rlm_command("view", source, "--out", page, "--no-open"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    dom = run_chromium(tmp_path, page.as_uri(), "--dump-dom")
    assert re.search(r'data-rendered="(\d+)"', dom), "the viewer script did not run"
    assert dom.count('class="node node-turn"') == TURNS
    assert "&lt;b&gt;x&lt;/b&gt;" in dom and "<b>x</b>" not in dom  # shown, not parsed
