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
edited site; the service subscribes the alarm book, the rule engine (the running one takes
a change of devices; a site taken whole gets a new one, its state carried over), the MQTT
intake, the field buses, device health, decode faults, the API context, the gateway's own
``site``, the live stream (board counts and tags) and a heap settle, in this order. The
site is checked first (``check``: topics, profiles and field buses, the same rule as
``gateway config validate``, and the rule engine it makes), so a site that does not fit
changes nothing.

An edit of a few devices is published with what it changed (:class:`SiteChange`, made by
the installer's editor): the check and the subscribers then do only that part (one device's
profile lookup, one binding, one health row, the engine's modes or devices) instead of the
whole site; a change whose ``base`` is not the bus's current site, or none, is applied
whole. Subscribers take ``(site, change)`` (``subscribe(..., change=True)``) or the site
alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.alarms import Change

if TYPE_CHECKING:
    from edge_config.loader import SiteConfig

__all__ = ["ChangeBus", "SiteBus", "SiteChange", "Subscriber"]

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


@dataclass(frozen=True)
class SiteChange:
    """What an edit of devices.yaml changed, relative to ``base`` (the site it was made
    on): device ids added, edited (any field, the mode included) and removed."""

    base: SiteConfig = field(repr=False, compare=False)
    added: tuple[str, ...] = ()
    edited: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    @property
    def touched(self) -> set[str]:
        """The devices of the new site that are new or changed."""
        return set(self.added) | set(self.edited)


class SiteBus:
    """The current site, and who applies an edited one, in subscription order."""

    def __init__(self, site: SiteConfig,
                 check: Callable[..., Any] | None = None) -> None:
        self.current = site
        self._check = check
        self._subscribers: list[tuple[Callable[..., None], bool]] = []

    def subscribe(self, subscriber: Callable[..., None], *, change: bool = False) -> None:
        """``subscriber(site)``, or ``subscriber(site, change)`` with ``change=True``
        (``change``: a :class:`SiteChange`, or None for a site taken whole)."""
        self._subscribers.append((subscriber, change))

    def publish(self, site: SiteConfig, change: SiteChange | None = None) -> None:
        """Check ``site`` (an error changes nothing), then hand it to every subscriber.
        ``change`` is used only if made on the current site."""
        if change is not None and change.base is not self.current:
            change = None
        if self._check is not None:
            if change is None:
                self._check(site)
            else:
                self._check(site, change)
        self.current = site
        for subscriber, with_change in self._subscribers:
            if with_change:
                subscriber(site, change)
            else:
                subscriber(site)
