"""What the API needs from the running gateway (:class:`ApiContext`), and the live stream's
fan-out (:class:`Broadcaster`, fed by :func:`change_events`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.alarms import AlarmBook, AlarmNotFound, Change
from gateway.auth import Auth
from gateway.metrics import Metrics

__all__ = ["ApiContext", "Broadcaster", "change_events"]


class Broadcaster:
    """Fan-out of alarm changes to live subscribers; a slow subscriber is dropped, not waited on.

    Event loop only (its queues are asyncio queues): the service publishes from the loop,
    the live stream subscribes from its (async) handler."""

    def __init__(self, max_queue: int = 1000):
        self.max_queue = max_queue
        self._subs: set[asyncio.Queue] = set()

    def publish(self, event: dict) -> None:
        for q in list(self._subs):
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:
                self._subs.discard(q)
                _close(q)  # the client reconnects and refetches the board

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(self.max_queue + 1)
        self._subs.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self._subs.discard(q)

    def __len__(self) -> int:
        return len(self._subs)


def _close(q: asyncio.Queue) -> None:
    while not q.empty():
        q.get_nowait()
    q.put_nowait(None)


@dataclass
class ApiContext:
    """What the API needs from the running gateway.

    The routers take it from ``request.app.state.ctx`` (``gateway.api.deps.get_ctx``) at
    each request, so an attribute replaced at run time (the site after a reload, ``auth`` in
    tests) is seen by the next request."""

    book: AlarmBook
    auth: Auth
    metrics: Metrics
    broadcaster: Broadcaster
    health: Any                      # callable -> dict of component states
    site: Any                        # edge_config.loader.SiteConfig
    case_callback: Any = None        # async callable(method, target, headers, body) -> dict
    devices: Any = None              # gateway.health.HealthBook
    reload: Any = None               # callable(SiteConfig): apply an edited site, no restart
    editor: Any = None               # gateway.installer.SiteEditor
    secure_cookies: bool = False
    extra: dict = field(default_factory=dict)


def change_events(book: AlarmBook, broadcaster: Broadcaster, changes: Sequence[Change]) -> None:
    """Publish alarm changes to live subscribers (called by the alarm book, on the loop).

    Reads each changed alarm by its primary key on the loop itself, only while a board is
    connected: the events must leave in the order of the changes, and one such read costs
    tens of microseconds (the one place the API reads the store without
    ``gateway.blocking``)."""
    if not len(broadcaster):
        return
    for ch in changes:
        try:
            alarm = book.get(ch.alarm_id)
        except AlarmNotFound:
            continue
        broadcaster.publish({"type": "alarm", "action": ch.action, "alarm": alarm})
