"""proxy/tasks.py: background tasks stay referenced, named, awaitable and cancellable as a group."""

from __future__ import annotations

import asyncio
import gc

from shadowtap.tasks import TaskSet


async def test_spawned_tasks_are_named_and_kept_until_done() -> None:
    tasks = TaskSet()
    release = asyncio.Event()

    async def work() -> str:
        await release.wait()
        return "done"

    task = tasks.spawn(work(), name="shadow:c:1")
    del task
    gc.collect()  # asyncio itself keeps only a weak reference
    assert len(tasks) == 1
    (kept,) = asyncio.all_tasks() - {asyncio.current_task()}
    assert kept.get_name() == "shadow:c:1"
    release.set()
    assert await tasks.wait(1.0)
    assert len(tasks) == 0 and kept.result() == "done"


async def test_wait_includes_tasks_spawned_meanwhile_and_reports_a_timeout() -> None:
    tasks = TaskSet()
    order: list[str] = []

    async def second() -> None:
        order.append("second")

    async def first() -> None:
        await asyncio.sleep(0)
        tasks.spawn(second(), name="second")
        order.append("first")

    tasks.spawn(first(), name="first")
    assert await tasks.wait(1.0)
    assert order == ["first", "second"]
    tasks.spawn(asyncio.sleep(3600), name="stuck")
    assert not await tasks.wait(0.01)
    await tasks.cancel_all()
    assert len(tasks) == 0


async def test_cancel_all_cancels_and_collects_every_task() -> None:
    tasks = TaskSet()
    spawned = [tasks.spawn(asyncio.sleep(3600), name=f"t{i}") for i in range(3)]
    await tasks.cancel_all()
    assert all(task.cancelled() for task in spawned)
    await tasks.cancel_all()  # nothing left: a no-op
