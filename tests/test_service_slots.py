"""The global sandbox limit's order of turns (pure logic on anyio, no Docker)."""

from __future__ import annotations

import anyio
import pytest

from engine.errors import ChildRunError
from engine.rlm.slots import SandboxSlots

pytestmark = pytest.mark.anyio


async def _run_jobs(slots: SandboxSlots, submissions: list[str]) -> list[str]:
    """Start jobs in submission order while one slot is held; return the order they ran."""
    order: list[str] = []
    release = anyio.Event()

    async def job(label: str) -> None:
        async with slots.job(label.split("-")[0]):
            order.append(label)
            await anyio.sleep(0)

    async with anyio.create_task_group() as group:

        async def blocker() -> None:
            async with slots.job("blocker"):
                await release.wait()

        group.start_soon(blocker)
        await anyio.wait_all_tasks_blocked()
        for label in submissions:
            group.start_soon(job, label)
            await anyio.wait_all_tasks_blocked()
        assert slots.waiting == len(submissions)
        release.set()
    return order


async def test_waiting_jobs_take_turns_between_keys() -> None:
    # Key a queued five jobs before key b and c queued theirs: b and c do not wait behind
    # all of a's, each key gets one turn per round.
    order = await _run_jobs(
        SandboxSlots(1), ["a-1", "a-2", "a-3", "a-4", "a-5", "b-1", "b-2", "c-1"]
    )
    assert order == ["a-1", "b-1", "c-1", "a-2", "b-2", "a-3", "a-4", "a-5"]


async def test_a_free_slot_goes_to_the_key_holding_fewest() -> None:
    # Key a already runs a job and queued another before key b queued its first: b goes first.
    slots = SandboxSlots(2)
    order: list[str] = []
    release_x, release_a = anyio.Event(), anyio.Event()

    async def hold(owner: str, until: anyio.Event) -> None:
        async with slots.job(owner):
            await until.wait()

    async def job(owner: str) -> None:
        async with slots.job(owner):
            order.append(owner)

    async with anyio.create_task_group() as group:
        group.start_soon(hold, "x", release_x)
        group.start_soon(hold, "a", release_a)
        await anyio.wait_all_tasks_blocked()
        group.start_soon(job, "a")
        await anyio.wait_all_tasks_blocked()
        group.start_soon(job, "b")
        await anyio.wait_all_tasks_blocked()
        release_x.set()
        await anyio.wait_all_tasks_blocked()
        release_a.set()
    assert order == ["b", "a"]


async def test_one_key_alone_runs_in_submission_order() -> None:
    assert await _run_jobs(SandboxSlots(1), ["a-1", "a-2", "a-3"]) == ["a-1", "a-2", "a-3"]


async def test_never_more_than_total_and_parents_on_every_slot_do_not_deadlock() -> None:
    # Each job starts a child while holding its own slot: with every slot held by a parent
    # waiting for a child, the newest child is refused at once (no wait bound needed).
    slots = SandboxSlots(3, child_wait_s=3600)
    peak, children, refused = 0, 0, 0

    async def job(owner: str) -> None:
        nonlocal peak, children, refused
        async with slots.job(owner):
            try:
                async with slots.child():
                    peak = max(peak, slots.in_use)
                    children += 1
                    await anyio.sleep(0.01)
            except ChildRunError as exc:
                assert "held by runs waiting for children" in str(exc)
                refused += 1

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            for index in range(8):
                group.start_soon(job, f"k{index % 3}")
    assert peak <= 3 and slots.in_use == 0 and slots.waiting == 0
    assert children + refused == 8 and children >= 4


async def test_children_go_before_waiting_jobs() -> None:
    slots = SandboxSlots(2)
    order: list[str] = []
    child_may_start = anyio.Event()

    async def parent() -> None:
        async with slots.job("a"):
            await child_may_start.wait()
            async with slots.child():
                order.append("child")

    async def other_job() -> None:
        async with slots.job("b"):
            order.append("job b")

    release = anyio.Event()

    async def holder() -> None:
        async with slots.job("c"):
            await release.wait()

    async with anyio.create_task_group() as group:
        group.start_soon(parent)
        group.start_soon(holder)
        await anyio.wait_all_tasks_blocked()
        group.start_soon(other_job)  # waits: both slots are held
        await anyio.wait_all_tasks_blocked()
        child_may_start.set()  # the child waits too, behind job b in time
        await anyio.wait_all_tasks_blocked()
        release.set()  # one slot frees: the child gets it first
    assert order == ["child", "job b"]


async def test_a_child_of_the_only_slot_is_refused_at_once() -> None:
    slots = SandboxSlots(1, child_wait_s=3600)
    async with slots.job("a"):
        with anyio.fail_after(10), pytest.raises(ChildRunError, match="all 1 sandboxes"):
            async with slots.child():
                pass
        assert slots.waiting == 0
    assert slots.in_use == 0


async def test_a_child_waits_at_most_its_bound() -> None:
    slots = SandboxSlots(2, child_wait_s=0.05)
    async with slots.job("a"), slots.job("b"):  # b's slot is not freed while a's child waits
        with pytest.raises(ChildRunError, match=r"none freed up within 0\.05 s"):
            async with slots.child():
                pass
        assert slots.waiting == 0
    assert slots.in_use == 0


async def test_cancelled_waiters_leave_no_trace() -> None:
    slots = SandboxSlots(1)
    async with slots.job("a"):
        with anyio.move_on_after(0.01):
            async with slots.job("b"):
                pass
        assert slots.waiting == 0
    assert slots.in_use == 0
    async with slots.job("b"):
        assert slots.in_use == 1
