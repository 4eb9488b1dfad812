"""The queue between a command's sender and a bus's or line's own task
(drivers/command_queue.py): settled by the task, skipped once the sender gave up, failed all
at once when the bus goes away, early polls after a write."""

from __future__ import annotations

import asyncio
import time

import pytest

from drivers.command_queue import CommandQueue
from gateway.kernel.commands import Action, Command, CommandError
from gateway.metrics import Metrics


def cmd(n: int) -> Command:
    return Command(f"c{n}", f"dev-{n}", Action.CLOSE_VALVE)


async def test_the_task_settles_what_the_sender_waits_for_and_polls_early_after_it():
    q: CommandQueue[str] = CommandQueue("modbus", Metrics(), confirm_polls_s=(0.0, 0.05))
    sender = asyncio.create_task(q.submit("dev-1", cmd(1), "target-1", limit_s=2, who="bus b1"))
    await asyncio.sleep(0)
    pending = q.next()
    assert pending is not None and pending.target == "target-1" and q.next() is None
    q.settle(pending, None)
    await sender                                   # returned: written
    assert q.due_poll() == "dev-1" and q.due_poll() is None
    t0 = time.monotonic()
    await q.wait(time.monotonic() + 2)             # wakes for the second early poll
    assert time.monotonic() - t0 < 1 and q.due_poll() == "dev-1"
    failing = asyncio.create_task(q.submit("dev-2", cmd(2), "t", limit_s=2, who="bus b1"))
    await asyncio.sleep(0)
    pending = q.next()
    assert pending is not None
    q.settle(pending, CommandError("device dev-2: no answer"))
    with pytest.raises(CommandError, match="dev-2: no answer"):
        await failing
    assert (q.written, q.failed) == (1, 1) and q.due_poll() is None    # no poll after a failure


async def test_a_command_the_task_did_not_get_to_is_never_written_later():
    metrics = Metrics()
    q: CommandQueue[str] = CommandQueue("serial", metrics)
    with pytest.raises(CommandError, match=r"dev-1: serial line l1 did not get to the command"):
        await q.submit("dev-1", cmd(1), "t", limit_s=0.05, who="serial line l1")
    cancelled = asyncio.create_task(q.submit("dev-2", cmd(2), "t", limit_s=5, who="l1"))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert q.next() is None and not q.waiting          # neither is written now
    assert metrics.get("gateway_commands_failed_total", transport="serial") == 1


async def test_every_queued_command_fails_when_the_bus_goes_away():
    q: CommandQueue[str] = CommandQueue("modbus", Metrics())
    senders = [asyncio.create_task(q.submit(f"dev-{n}", cmd(n), "t", limit_s=5,
                                            who="Modbus bus b1")) for n in (1, 2)]
    await asyncio.sleep(0)
    q.fail_all("connection lost: reset", "Modbus bus b1")
    for n, s in zip((1, 2), senders):
        with pytest.raises(CommandError, match=f"dev-{n}: Modbus bus b1 connection lost"):
            await s
    assert q.failed == 2 and q.next() is None
