"""Attacks through a session's kernel, which lives on between questions without a slot."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import docker
import pytest

from engine import Engine
from engine.models import Cassette, ReplayServer
from tests.attacks.conftest import AttackReport, RssMeter
from tests.loop_support import Run, code, root

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

#: A thread and a process that spin for ever, started by the first question's cell.
BURN = code(
    "import subprocess, sys, threading\n"
    "def spin():\n    while True: pass\n"
    "threading.Thread(target=spin, daemon=True).start()\n"
    "subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n"
    "answer['content'] = 'spinning'\nanswer['ready'] = True"
)
SECOND = code("answer['content'] = str(len(context))\nanswer['ready'] = True")


def _cpu_seconds(container: docker.models.containers.Container) -> float:
    stats = container.stats(stream=False)
    return float(stats["cpu_stats"]["cpu_usage"]["total_usage"]) / 1e9


async def test_attack_session_spins_between_questions(
    tmp_path: Path, attack_report: AttackReport
) -> None:
    run = Run(tmp_path)
    server = ReplayServer(Cassette([root(BURN), root(SECOND)]))
    async with server, Engine(run.config(server)) as engine, engine.session("12345") as session:
        assert (await session.ask("Start.")).answer == "spinning"
        meter = RssMeter(os.getpid()).start()  # after the first question's imports
        (container,) = await anyio.to_thread.run_sync(
            lambda: docker.from_env().containers.list(filters={"name": session.id})
        )
        paused = container.attrs["State"]["Paused"]
        before = await anyio.to_thread.run_sync(_cpu_seconds, container)
        await anyio.sleep(2)
        used = await anyio.to_thread.run_sync(_cpu_seconds, container) - before
        second = await session.ask("How long is the context?")
        growth = meter.growth()
    assert paused and used < 0.1, (paused, used)
    assert (second.answer, second.ready) == ("5", True)  # thawed by the next question
    attack_report(
        "a session's first question leaves a thread and a process spinning, then the session "
        "idles (it holds a container but no sandbox slot)",
        "a session's kernel is frozen between questions (Docker pause: the cgroup freezer) "
        "and thawed by the next question's first cell",
        f"{used:.2f} CPU-seconds used over 2 s of idling (before: a full core for as long as the "
        "session stayed open, up to 16 such kernels past the 4 slots); the next question "
        "answered",
        rss_growth=growth,
    )
