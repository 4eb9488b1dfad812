"""Test and maintenance modes end on their own.

A device an installer puts in ``test`` or ``maintenance`` mode has its triggers recorded as
tests, never alarms (``rules.engine.Engine.set_device_mode``). Left so, a real emergency on it
would be lost: so every such mode has an end, chosen when it is set (default 2 h, at most
24 h), kept in ``devices.yaml`` next to the mode as ``mode_until`` (ISO 8601 with the site's
offset)::

    - id: caller-7-101
      mode: test
      mode_until: '2026-03-01T16:30:00+08:00'

Why the file and not the store: the mode itself lives in ``devices.yaml`` (it survives a
restart, a backup restores it, ``gateway config validate`` sees it), so its end is kept in the
same entry, written in the same atomic edit: the two can never disagree.

Contract:
- :func:`effective_mode` is the mode a device is in *now*: its configured mode until
  ``mode_until`` has passed, ``normal`` from then on, whatever the file still says. The
  service gives the rule engine effective modes (``gateway.service.apply_modes``), so a
  device whose end passed while the gateway was stopped is normal from the start.
- :class:`ModeKeeper` (a task of the service) returns each device to normal at its end: the
  rule engine at once, then ``devices.yaml`` (through :meth:`SiteEditor.settle_modes`, under the
  editor's lock, so an installer extending the mode meanwhile wins), the site reloaded, and an
  audit entry ``device.mode_expired`` with actor ``system``. A test/maintenance mode without
  an end (a hand-edited file, a file of the previous release) gets the default from now, one
  more than 24 h ahead is cut to 24 h; both audited as ``device.mode_until`` by ``system``.
- :func:`modes_json` is what the duty board shows: the devices in test or maintenance mode.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from gateway.model import utc
from rules.durations import parse_duration

__all__ = ["DEFAULT_CHOICE", "DEFAULT_S", "MAX_S", "CHOICES", "ModeKeeper", "effective_mode", "mode_until",
           "modes_json", "parse_mode_duration"]

log = logging.getLogger(__name__)

DEFAULT_S = 2 * 3600.0       #: a test or maintenance mode lasts 2 h unless chosen otherwise
MAX_S = 24 * 3600.0          #: and never more than 24 h
MIN_S = 1.0                  #: the API takes seconds (tests); the console offers CHOICES
CHOICES = ("30m", "1h", "2h", "4h", "8h", "12h", "24h")
DEFAULT_CHOICE = "2h"


def parse_mode_duration(value: Any) -> float:
    """Seconds of a mode duration (``"2h"``, ``"30m"``, ``"90s"``, or seconds as a number):
    1 s to 24 h. ``ValueError`` naming the accepted forms otherwise."""
    seconds = parse_duration(value)
    if not MIN_S <= seconds <= MAX_S:
        raise ValueError(f"a test or maintenance mode lasts from 1 s to 24 h, got {value!r}")
    return seconds


def mode_until(site, seconds: float | None, now: datetime | None = None) -> datetime:
    """The end of a mode set now for ``seconds`` (default 2 h), in the site's local time."""
    now = now or utc()
    end = now + timedelta(seconds=DEFAULT_S if seconds is None else seconds)
    return end.astimezone(_zone(site)).replace(microsecond=0)


def effective_mode(device, now: datetime | None = None) -> str:
    """The mode ``device`` (an ``edge_config.schema.Device``) is in at ``now``."""
    if device.mode == "normal":
        return "normal"
    until = device.mode_until
    if until is not None and until <= (now or utc()):
        return "normal"
    return device.mode


def modes_json(site, now: datetime | None = None) -> dict:
    """Devices in test or maintenance mode now, soonest end first (the board's count, the
    tags on device rows and household cards)."""
    now = now or utc()
    out = []
    for d in site.devices.devices:
        mode = effective_mode(d, now)
        if mode == "normal":
            continue
        out.append({"device_id": d.id, "name": d.name, "type": d.type, "mode": mode,
                    "until": d.mode_until.isoformat() if d.mode_until else None,
                    "household_id": d.household,
                    "grid_cell": d.grid_cell or (site.household(d.household).grid_cell
                                                 if d.household else None)})
    out.sort(key=lambda x: (x["until"] is None, x["until"] or "", x["device_id"]))
    return {"devices": out, "count": len(out)}


def _zone(site) -> ZoneInfo:
    try:
        return ZoneInfo(site.site.site.timezone)
    except Exception:       # noqa: BLE001 - validated by the loader; UTC rather than fail here
        return ZoneInfo("UTC")


def _needs_work(devices: list, now: datetime) -> bool:
    """A mode (of ``devices``, those not normal in the file) has ended, has no end, or ends
    more than 24 h ahead."""
    latest = now + timedelta(seconds=MAX_S + 60)
    return any(d.mode_until is None or d.mode_until <= now or d.mode_until > latest
               for d in devices)


class ModeKeeper:
    """Ends test and maintenance modes on time (see module contract).

    ``site()`` gives the current site; ``engine_mode(device_id, mode)`` sets a mode in the
    running rule engine; ``reload(site)`` applies an edited site; ``audit(actor, action,
    target, **detail)`` records. ``interval_s``: how often it looks (the end is kept to
    within it)."""

    def __init__(self, editor, site: Callable[[], Any],
                 engine_mode: Callable[[str, str], None], reload: Callable[..., None],
                 audit: Callable[..., Awaitable[None]], *, interval_s: float = 0.5,
                 retry_s: float = 30.0) -> None:
        self.editor = editor
        self.site = site
        self.engine_mode = engine_mode
        self.reload = reload
        self.audit = audit
        self.interval_s = interval_s
        self.retry_s = retry_s
        self.started = utc()
        self._retry_at: datetime | None = None
        self._moded: tuple[Any, list] = (None, [])

    def _not_normal(self, site) -> list:
        """The site's devices whose file mode is not normal (computed once per site)."""
        if self._moded[0] is not site:
            self._moded = (site, [d for d in site.devices.devices if d.mode != "normal"])
        return self._moded[1]

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:       # noqa: BLE001 - never stop the service for this; retry
                log.exception("test/maintenance mode keeper failed; retrying in %.0f s",
                              self.retry_s)
                self._retry_at = utc() + timedelta(seconds=self.retry_s)
            await asyncio.sleep(self.interval_s)

    async def step(self, now: datetime | None = None) -> list[dict]:
        """End what is due and bound what has no end; return what changed."""
        now = now or utc()
        site = self.site()
        moded = self._not_normal(site)
        if not _needs_work(moded, now):
            return []
        # the rule engine first: a real press from now on is an alarm, file or no file
        for d in moded:
            self.engine_mode(d.id, effective_mode(d, now))
        if self._retry_at is not None and now < self._retry_at:
            return []
        from gateway.installer import InstallerError

        try:
            new, changes = await self.editor.settle_modes(
                now, default_s=DEFAULT_S, max_s=MAX_S, zone=_zone(site))
        except (InstallerError, OSError) as exc:
            self._retry_at = now + timedelta(seconds=self.retry_s)
            log.error("test/maintenance modes ended in the rule engine but devices.yaml could "
                      "not be updated (%s); retrying in %.0f s", exc, self.retry_s)
            return []
        self._retry_at = None
        if new is not None:
            change = self.editor.change_of(new) if hasattr(self.editor, "change_of") else None
            if change is not None:
                self.reload(new, change)     # the ended modes' devices only
            else:
                self.reload(new)
        else:          # nothing left to do in the file (an installer changed it meanwhile)
            for d in self._not_normal(self.site()):
                self.engine_mode(d.id, effective_mode(d, now))
        for ch in changes:
            until = ch["until"].isoformat() if ch["until"] else None
            if ch["action"] == "expired":
                log.info("device %s: %s mode ended at %s, back to normal", ch["device_id"],
                         ch["mode"], until)
                await self.audit("system", "device.mode_expired", ch["device_id"],
                                 mode=ch["mode"], until=until,
                                 while_stopped=bool(ch["until"] and ch["until"] < self.started))
            else:
                log.warning("device %s: %s mode %s; it now ends at %s", ch["device_id"],
                            ch["mode"], ch["why"], until)
                await self.audit("system", "device.mode_until", ch["device_id"],
                                 mode=ch["mode"], until=until, why=ch["why"])
        return changes

