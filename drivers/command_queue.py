"""Commands waiting for a field bus's own task (a Modbus bus, a serial line), and the early
polls that follow them.

A bus or line carries one conversation at a time, and its task owns the port: a command
(:class:`gateway.kernel.commands.Command`) is therefore not written by the caller but queued
here by the transport's ``send()``, which then waits for it. The task takes each queued
command between two polls (:meth:`CommandQueue.next`), writes it, and settles it
(:meth:`CommandQueue.settle`): the caller's ``send()`` returns, or raises the
:class:`~gateway.kernel.commands.CommandError` the task gave. A command written is followed
by early polls of its device (``confirm_polls_s`` after the write), so that the reading that
confirms it does not wait for the bus period; :meth:`CommandQueue.due_poll` says which
device is due. Between cycles the task waits in :meth:`CommandQueue.wait`, which a new
command or a due early poll ends at once.

Shared by ``drivers.modbus`` and ``drivers.serial_line`` (the transports may not import each
other); it runs on the event loop and holds no port.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from gateway.kernel.commands import Command, CommandError
from gateway.kernel.metrics import MetricsSink

__all__ = ["CommandQueue", "PendingCommand"]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(slots=True)
class PendingCommand(Generic[T]):
    """One queued command: what the transport needs to write it (``target``), and the
    future its sender waits on."""

    device_id: str
    command: Command
    target: T
    done: asyncio.Future[None]


class CommandQueue(Generic[T]):
    """The commands of one bus or line (see the module docstring)."""

    def __init__(self, transport: str, metrics: MetricsSink,
                 confirm_polls_s: tuple[float, ...] = (0.0, 1.0, 3.0)):
        self.transport = transport
        self.metrics = metrics
        self.confirm_polls_s = confirm_polls_s
        self.written = 0
        self.failed = 0
        self._pending: deque[PendingCommand[T]] = deque()
        self._polls: list[tuple[float, int, str]] = []     # heap: (due, seq, device id)
        self._seq = 0
        self._wake = asyncio.Event()

    async def submit(self, device_id: str, command: Command, target: T, *,
                     limit_s: float, who: str, per_ahead_s: float = 0.0) -> None:
        """Queue ``command`` and wait until the task settled it; ``CommandError`` from the
        task, or naming ``who`` when the task did not get to it within ``limit_s`` plus
        ``per_ahead_s`` for each command queued before it (what one may cost the task)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending = PendingCommand(device_id, command, target, done)
        limit_s += per_ahead_s * len(self._pending)
        self._pending.append(pending)
        self._wake.set()
        try:
            async with asyncio.timeout(limit_s):
                await done
        except TimeoutError:
            # the timeout cancelled ``done``: the task skips the command if it is still queued
            if pending in self._pending:
                self._pending.remove(pending)
            error = CommandError(f"device {device_id}: {who} did not get to the command "
                                 f"within {limit_s:.3g} s")
            self._count(pending, error)
            raise error from None

    @property
    def waiting(self) -> bool:
        """Whether a command is queued (the task serves it before its next poll)."""
        return bool(self._pending)

    def next(self) -> PendingCommand[T] | None:
        """The next command to write (its sender still waiting), or None."""
        while self._pending:
            pending = self._pending.popleft()
            if not pending.done.done():
                return pending
        self._wake.clear()
        return None

    def settle(self, pending: PendingCommand[T], error: CommandError | None) -> None:
        """The task wrote ``pending`` (``error`` None) or could not; early polls follow a
        write."""
        self._settled(pending, error)
        if error is None:
            now = time.monotonic()
            for delay in self.confirm_polls_s:
                self._seq += 1
                heapq.heappush(self._polls, (now + delay, self._seq, pending.device_id))

    def _settled(self, pending: PendingCommand[T], error: CommandError | None) -> None:
        if pending.done.done():
            return            # settled already (the sender gave up)
        self._count(pending, error)
        if error is None:
            pending.done.set_result(None)
        else:
            pending.done.set_exception(error)

    def _count(self, pending: PendingCommand[T], error: CommandError | None) -> None:
        # the failures as the MQTT writer counts them (docs/api.md); the linkage times
        # every command sent (gateway_command_send_seconds)
        if error is not None:
            self.metrics.inc("gateway_commands_failed_total", transport=self.transport)
        if error is None:
            self.written += 1
            log.info("%s command %s (%s) written to device %s", self.transport,
                     pending.command.command_id, pending.command.action, pending.device_id)
        else:
            self.failed += 1
            log.warning("%s command %s (%s): %s", self.transport, pending.command.command_id,
                        pending.command.action, error)

    def due_poll(self) -> str | None:
        """The device of an early poll that is due now, or None."""
        if self._polls and self._polls[0][0] <= time.monotonic():
            return heapq.heappop(self._polls)[2]
        return None

    async def wait(self, until: float) -> None:
        """Sleep until ``until`` (monotonic), a queued command, or the next early poll."""
        wake_at = min(until, self._polls[0][0]) if self._polls else until
        delay = wake_at - time.monotonic()
        if delay <= 0 or self._wake.is_set():
            return
        try:
            async with asyncio.timeout(delay):
                await self._wake.wait()
        except TimeoutError:
            pass

    def fail_all(self, why: str, who: str) -> None:
        """Every queued command fails: ``device D: WHO WHY`` (the bus or line went away)."""
        while self._pending:
            pending = self._pending.popleft()
            self._settled(pending, CommandError(f"device {pending.device_id}: {who} {why}"))
