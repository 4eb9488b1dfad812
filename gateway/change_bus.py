"""The change bus: who hears of alarm changes.

:class:`gateway.alarms.AlarmBook`, the case forwarder, the case callback and the status poller
publish the alarms they changed (``list[Change]``); the service subscribes, in this order:
the rule engine's follow-up of acknowledgements, resolutions and case statuses, the live
stream, the case forwarder's wake-up, the optional uplinks' wakers (upstream MQTT,
notifications). Subscribers are called in the order they subscribed, on the publisher's
thread, one after the other; an exception propagates to the publisher (as it did when this
was one function).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gateway.alarms import Change

__all__ = ["ChangeBus", "Subscriber"]

Subscriber = Callable[[Sequence[Change]], None]


class ChangeBus:
    """Publish alarm changes to the subscribers, in subscription order."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Subscriber:
        self._subscribers.append(subscriber)
        return subscriber

    def publish(self, changes: list[Change]) -> None:
        for subscriber in self._subscribers:
            subscriber(changes)
