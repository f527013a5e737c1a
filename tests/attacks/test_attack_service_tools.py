"""Attacks through the operator's host tools in a real `rlm serve`: one key's sandbox code
uses up what every key's tool calls share.

The service's tools are lent to every job of every key. A plain Python tool runs in a worker
thread of the service, and a thread cannot be stopped: a call past its deadline keeps its
thread until the function returns, and the process refuses Python tool calls while
``MAX_RUNNING_CALLS`` of them run. The attacker's code calls a tool on an input it hangs on,
from 16 threads, until refused; then the victim's job calls the same tool on a good input.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import anyio
import pytest

from engine.models import Cassette, ReplayServer
from engine.tools import python_tools
from tests.attacks.conftest import AttackReport, RssMeter
from tests.service_support import API_KEY, OTHER_KEY, Service, code, root, wait_final

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

#: How long the tool hangs on its bad input (past the test; the service exits without it).
HANG_S = 300.0


def fetch(url: str) -> str:
    """Fetch a page (this one hangs on a tarpit, as a real fetch without a timeout would)."""
    if url == "tarpit":
        time.sleep(HANG_S)
    return f"page of {url}"


HOG = code(
    "import json\n"
    "from collections import Counter\n"
    "from concurrent.futures import ThreadPoolExecutor\n"
    "def hit(i):\n"
    "    try:\n"
    "        fetch('tarpit')\n"
    "        return 'answered'\n"
    "    except Exception as exc:\n"
    "        return 'refused' if 'still running' in str(exc) else type(exc).__name__\n"
    f"with ThreadPoolExecutor(16) as pool:\n"
    f"    outs = list(pool.map(hit, range({python_tools.MAX_RUNNING_CALLS + 16})))\n"
    "answer['content'] = json.dumps(Counter(outs))\nanswer['ready'] = True"
)
USE = code(
    "try:\n"
    "    got = fetch('home')\n"
    "except Exception as exc:\n"
    "    got = f'{type(exc).__name__}: {exc}'\n"
    "answer['content'] = got\nanswer['ready'] = True"
)
CASSETTE = [root("HOG", HOG), root("USE", USE)]


@pytest.fixture
async def service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    async with ReplayServer(Cassette(CASSETTE)) as replay:
        data = tmp_path_factory.mktemp("tools") / "data"
        tool = "tests.attacks.test_attack_service_tools:fetch"
        svc = Service(data, replay.base_url, "--tool", tool, "--tool-timeout", "1")
        await anyio.to_thread.run_sync(svc.start)
        try:
            yield svc
        finally:
            await anyio.to_thread.run_sync(svc.stop)


async def _answer(service: Service, key: str, query: str) -> str:
    async with service.client(key) as client:
        job = (await client.post("/v1/jobs", json={"query": query})).json()
        done = await wait_final(client, job["id"], timeout=180)
    assert done["status"] == "succeeded", done
    return str(done["answer"])


async def test_attack_one_key_hangs_the_python_tools_of_every_key(
    service: Service, attack_report: AttackReport
) -> None:
    assert service.proc is not None
    meter = RssMeter(service.proc.pid).start()
    hog = json.loads(await _answer(service, OTHER_KEY, "HOG"))
    # The attacker's own calls stop at its share, its stuck threads still running.
    assert hog.get("refused", 0) > 0 and set(hog) <= {"TimeoutError", "refused"}, hog
    victim = await _answer(service, API_KEY, "USE")
    assert victim == "page of home", victim
    attack_report(
        "one key's sandbox code calls a host tool that hangs on its input, from 16 threads, "
        "until refused (the threads outlive the calls); then another key calls the tool",
        f"Python tool calls running in the service: at most {python_tools.MAX_RUNNING_CALLS}, "
        f"of which one key holds at most {python_tools.MAX_RUNNING_PER_TENANT}",
        f"the attacker: {hog}; the other key's call answered (before: the attacker's 32 hung "
        "threads refused the other key's call for as long as the tool hung)",
        rss_growth=meter.growth(),
    )
