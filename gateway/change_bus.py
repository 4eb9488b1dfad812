"""The service's two buses: who hears of alarm changes, and of an edited site.

The change bus (:class:`ChangeBus`):

:class:`gateway.alarms.AlarmBook`, the case forwarder, the case callback and the status poller
publish the alarms they changed (``list[Change]``); the service subscribes, in this order:
the rule engine's follow-up of acknowledgements, resolutions and case statuses, the live
stream, the case forwarder's wake-up, the optional uplinks' wakers (upstream MQTT,
notifications). Subscribers are called in the order they subscribed, on the publisher's
thread, one after the other; an exception propagates to the publisher (as it did when this
was one function).

The site bus (:class:`SiteBus`): the installer pages and the device-mode keeper publish an
edited site; the service subscribes the alarm book, the rule engine (a new one, its state
carried over), the MQTT intake, the field buses, device health, decode faults, the API
context, the gateway's own ``site``, the live stream (board counts and tags) and a heap
settle, in this order. The site is checked first (``check``: topics, profiles and field
buses, the same rule as ``gateway config validate``, and the rule engine it makes), so a
site that does not fit changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from typing import TYPE_CHECKING, Any

from gateway.alarms import Change

if TYPE_CHECKING:
    from edge_config.loader import SiteConfig

__all__ = ["ChangeBus", "SiteBus", "Subscriber"]

Subscriber = Callable[[list[Change]], None]


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


class SiteBus:
    """The current site, and who applies an edited one, in subscription order."""

    def __init__(self, site: SiteConfig,
                 check: Callable[[SiteConfig], Any] | None = None) -> None:
        self.current = site
        self._check = check
        self._subscribers: list[Callable[[SiteConfig], None]] = []

    def subscribe(self, subscriber: Callable[[SiteConfig], None]) -> None:
        self._subscribers.append(subscriber)

    def publish(self, site: SiteConfig) -> None:
        """Check ``site`` (an error changes nothing), then hand it to every subscriber."""
        if self._check is not None:
            self._check(site)
        self.current = site
        for subscriber in self._subscribers:
            subscriber(site)
