"""Long-lived components and their state: one protocol, one tracker.

Every long-lived part of the service (the MQTT intake, a Modbus bus, a serial line, the case
forwarder, the case status poller, the upstream MQTT publisher, notifications, telemetry) is
a :class:`Component`: it has a ``state`` word that the health endpoint shows, and an async
``run()`` that the service starts as one named task. Its state is kept by a
:class:`StateTracker`, which logs each transition once: INFO when the new state is a good
one (DEBUG between two good ones), WARNING otherwise, with the reason when there is one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

__all__ = ["Component", "StateTracker"]


@runtime_checkable
class Component(Protocol):
    """A long-lived part of the service, started by the service as one task."""

    @property
    def state(self) -> str: ...

    async def run(self) -> None: ...


class StateTracker:
    """A component's state word, logged once per transition.

    ``label`` names the component in the log line (``"mqtt intake 127.0.0.1:1883"``);
    a move into a state in ``good`` is logged at INFO (at DEBUG when it comes from another
    good state, such as a forwarder's ``idle`` and ``ok``), into any other at WARNING. ``max_len`` cuts a long
    state (an exception text) in the log line, not in :attr:`value`.
    """

    def __init__(self, label: str, initial: str, *, good: Iterable[str] = ("online", "ok"),
                 logger: logging.Logger | None = None, max_len: int = 200) -> None:
        self.label = label
        self.value = initial
        self.since = time.monotonic()
        self.good = frozenset(good)
        self.transitions = 0
        self._log = logger or logging.getLogger(__name__)
        self._max_len = max_len

    def set(self, state: str, why: str = "") -> bool:
        """Move to ``state``; log and return True when it is a change."""
        if state == self.value:
            return False
        if state not in self.good:
            level = logging.WARNING
        elif self.value in self.good:     # between two good states (idle <-> ok): quiet
            level = logging.DEBUG
        else:
            level = logging.INFO
        self._log.log(level, "%s %s -> %s%s", self.label, self.value, state[:self._max_len],
                      f" ({why[:self._max_len]})" if why else "")
        self.value = state
        self.since = time.monotonic()
        self.transitions += 1
        return True

    def __str__(self) -> str:
        return self.value
