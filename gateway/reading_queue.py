"""Readings of one metric handed from the pipeline's reading hook to a writer task: a help
key press (``gateway.help_requests``), a visit card read at a door (``gateway.visits``).

:meth:`ReadingQueue.offer` runs on the loop inside the pipeline's feed and only queues;
:meth:`ReadingQueue.run` awaits ``handle(reading)`` for each one in order, retrying a store
that cannot commit (``COMMIT_RETRY``) and logging a reading the handler refuses (a
``GatewayError``) once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from gateway import GatewayError, StoreError
from gateway.model import Kind, Reading
from gateway.store import COMMIT_RETRY

__all__ = ["ReadingQueue"]

log = logging.getLogger(__name__)


class ReadingQueue:
    """``button`` readings of ``metric`` for ``handle``; ``what`` names them in the log."""

    def __init__(self, metric: str, handle: Callable[[Reading], Awaitable[Any]], what: str,
                 maxsize: int = 10_000):
        self.metric = metric
        self.handle = handle
        self.what = what
        self._queue: asyncio.Queue[Reading] = asyncio.Queue(maxsize)

    def qsize(self) -> int:
        return self._queue.qsize()

    def offer(self, reading: Reading) -> None:
        """The pipeline's reading hook: queue a reading of the metric (any other: nothing)."""
        if reading.kind is not Kind.BUTTON or reading.metric != self.metric:
            return
        try:
            self._queue.put_nowait(reading)
        except asyncio.QueueFull:
            log.error("%s of %s dropped: queue full", self.what, reading.device_id)

    async def run(self) -> None:
        """Hand queued readings to ``handle``, one after the other, until cancelled."""
        while True:
            reading = await self._queue.get()
            failures = 0
            while True:
                try:
                    await self.handle(reading)
                    break
                except StoreError as exc:
                    log.error("cannot record a %s: %s (retrying)", self.what, exc)
                    await asyncio.sleep(COMMIT_RETRY.delay(failures))
                    failures += 1
                except GatewayError as exc:
                    log.warning("%s of %s not recorded: %s", self.what, reading.device_id, exc)
                    break
