"""Help requests (求助 / 生活服务): raised by a caller's help key or entered by staff for a
phone call; their own lifecycle (received -> assigned -> done -> closed with the resident's
feedback), no siren, no escalation; forwarded to the grid case system as service cases
(contract 1.3, docs/case-system.md 4.5) through the case outbox (kind ``service``, beside
the alarms' cases), delivered by ``gateway.forwarder.CaseForwarder``.

- :class:`HelpDesk` — every change of a request: the request, its history, the audit record
  and the outbox row commit in ONE transaction (so a request is never without its case
  message). A key press (a ``button`` reading of metric ``help_key``: the device's
  ``help_actions`` in devices.yaml) is a :class:`gateway.pipeline.DurableWriter`'s reading:
  the pipeline writes its request in the same transaction as its inbox row and only then
  acknowledges the message (PUBACK), like an alarm — an acknowledged press is a request,
  through any crash. The same key of the same device within :data:`REPEAT_S` seconds (a
  second press, a message the broker delivers again) is the same request.
- :func:`apply_case_status` — a status of a service case (callback or poll) moves its
  request: ``dispatched`` assigns it (to the handler), ``closed`` makes it done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from gateway import GatewayError
from gateway.metrics import Metrics
from gateway.model import Kind, Reading, utc
from gateway.store import Store, Tx, cases, outbox, record_audit
from gateway.store import help as rows

__all__ = ["CHANNELS", "FEEDBACK", "HelpDesk", "HelpError", "apply_case_status",
           "HELP_METRIC", "REPEAT_S"]

log = logging.getLogger(__name__)

#: the metric of a help key's ``button`` reading (drivers.profiles.with_help_actions)
HELP_METRIC = "help_key"
#: the same key of the same device within this many seconds: the same request
REPEAT_S = 60.0
CHANNELS = ("caller_key", "phone", "console")
#: the resident's feedback on a done request
FEEDBACK = ("satisfied", "neutral", "unsatisfied")


class HelpError(GatewayError):
    """A request that does not exist (``code`` ``help_not_found``), a move its state does
    not allow (``wrong_state``) or an unknown category or household."""

    def __init__(self, message: str, code: str, status: int = 409):
        self.code, self.status = code, status
        super().__init__(message)


def _iso(dt: datetime) -> str:
    return dt.astimezone(utc().tzinfo).isoformat(timespec="seconds")


class HelpDesk:
    """Every change of a help request. ``site_of()`` is the current site (edits apply at
    once); ``wake`` tells the forwarder that a row was queued; ``callback_url`` is the
    gateway's status callback for the case system."""

    def __init__(self, store: Store, site_of: Callable[[], Any], *,
                 wake: Callable[[], None] = lambda: None, callback_url: str | None = None,
                 metrics: Metrics | None = None):
        self.store = store
        self.site_of = site_of
        self.wake = wake
        self.callback_url = callback_url
        self.metrics = metrics

    @property
    def key_prefix(self) -> str:
        return f"{self.site_of().site.site.id}-{self.store.instance_id}"

    # -- caller keys: the pipeline's durable writer (gateway.pipeline.DurableWriter) ------
    def takes(self, reading: Reading) -> bool:
        """A help key press (acknowledged only once its request is saved)."""
        return reading.kind is Kind.BUTTON and reading.metric == HELP_METRIC

    def write(self, conn: Tx, readings: list[Reading]) -> list[tuple[int, str, str]]:
        """In the pipeline's inbox transaction: each press's request (new, or the same one
        again); the new ones as (id, device, category). A press that is no help key of the
        current site is logged and skipped (its message is still acknowledged)."""
        if not readings:
            return []
        site = self.site_of()
        new = []
        for reading in readings:
            try:
                help_id, created, category = self._press(conn, site, reading)
            except HelpError as exc:
                log.warning("help key press not recorded: %s", exc)
                continue
            if created:
                new.append((help_id, reading.device_id, category))
        return new

    def committed(self, new: list[tuple[int, str, str]]) -> None:
        for help_id, device_id, category in new:
            log.info("help request %d raised by %s (%s)", help_id, device_id, category)
            if self.metrics is not None:
                self.metrics.inc("gateway_help_requests_total", channel="caller_key")
        if new:
            self.wake()

    async def key_pressed(self, reading: Reading) -> int:
        """The request of a help key press (a repeat within :data:`REPEAT_S`: the same),
        written on its own (the service's presses come through :meth:`write`)."""
        site = self.site_of()
        help_id, created, category = await self.store.write(
            lambda conn: self._press(conn, site, reading))
        self.committed([(help_id, reading.device_id, category)] if created else [])
        return help_id

    def _press(self, conn: Tx, site: Any, reading: Reading) -> tuple[int, bool, str]:
        device = next((d for d in site.devices.devices if d.id == reading.device_id), None)
        actions = (device.help_actions or {}) if device is not None else {}
        category = actions.get(str(reading.value).lower())
        if device is None or category is None or not device.household:
            raise HelpError(f"{reading.device_id}: {reading.value!r} is no help key",
                            "help_category_unknown", 422)
        now = utc()
        known = rows.recent_by_device(conn, device.id, category,
                                      _iso(now - timedelta(seconds=REPEAT_S)))
        if known is not None:
            rows.add_event(conn, known, "pressed_again", "device", _iso(now))
            return known, False, category
        return self._create(conn, site, category, device.household, device.id, "caller_key",
                            "", "device", None), True, category

    # -- staff ----------------------------------------------------------------------------
    async def create(self, *, category: str, household_id: str, note: str, actor: str,
                     channel: str = "phone", request_id: str | None = None) -> int:
        """A request entered by staff (a phone call); ``request_id`` makes a retry the same."""
        site = self.site_of()
        if category not in site.site.help_categories:
            raise HelpError(f"unknown help category {category!r}", "help_category_unknown",
                            422)
        if site.household(household_id) is None:
            raise HelpError(f"unknown household {household_id!r}", "household_not_found", 404)
        key = f"staff:{request_id}" if request_id else None

        def tx(conn: Tx) -> int:
            if key is not None:
                known = rows.by_request_key(conn, key)
                if known is not None:
                    return known
            return self._create(conn, site, category, household_id, None, channel, note,
                                actor, key)

        help_id = await self.store.write(tx)
        self.wake()
        return help_id

    async def assign(self, help_id: int, to: str, actor: str) -> None:
        await self._move(help_id, ("received", "assigned"), "assigned", actor,
                         {"assigned_to": to}, note=f"已分派给 {to}", event_detail={"to": to})

    async def done(self, help_id: int, actor: str, note: str = "") -> None:
        await self._move(help_id, ("received", "assigned"), "done", actor, {},
                         note=note, resolved=True, event_detail={"note": note})

    async def feedback(self, help_id: int, rating: str, actor: str, note: str = "") -> None:
        if rating not in FEEDBACK:
            raise HelpError(f"unknown feedback {rating!r}", "invalid", 422)
        words = {"satisfied": "满意", "neutral": "一般", "unsatisfied": "不满意"}[rating]
        await self._move(help_id, ("done",), "closed", actor,
                         {"feedback": rating, "feedback_note": note},
                         note=f"居民反馈：{words}{'，' + note if note else ''}",
                         event_detail={"feedback": rating, "note": note})

    # -- reading --------------------------------------------------------------------------
    def view(self, row: dict, *, personal: bool) -> dict:
        """A request as the API shows it; ``personal`` False: the address masked."""
        site = self.site_of()
        cat = site.site.help_categories.get(row["category"])
        hh = site.household(row["household_id"])
        cell = site.grid_cell(row["grid_cell"])
        address = hh.address if hh is not None else row["household_id"]
        return {
            **{k: row[k] for k in ("id", "category", "household_id", "grid_cell", "device_id",
                                   "channel", "state", "created_by", "created_at",
                                   "assigned_to", "assigned_at", "done_by", "done_at",
                                   "feedback", "feedback_at", "case_id", "case_status",
                                   "case_error")},
            "note": row["note"] if personal else ("***" if row["note"] else ""),
            "feedback_note": row["feedback_note"] if personal else "",
            "category_name": {"zh": cat.zh, "en": cat.en} if cat else None,
            "address": address if personal else _mask(address),
            "grid_cell_name": cell.name if cell else row["grid_cell"],
            "grid_member": cell.grid_member if cell else None,
        }

    # -- inside -----------------------------------------------------------------------------
    def _create(self, conn: Tx, site: Any, category: str, household_id: str,
                device_id: str | None, channel: str, note: str, actor: str,
                key: str | None) -> int:
        hh = site.household(household_id)
        now_dt = utc()
        now = _iso(now_dt)
        help_id = rows.insert(conn, category=category, household_id=household_id,
                              grid_cell=hh.grid_cell, device_id=device_id, channel=channel,
                              note=note, actor=actor, now=now, request_key=key)
        rows.add_event(conn, help_id, "received", actor, now, channel=channel)
        record_audit(conn, actor, "help.create", str(help_id), category=category,
                     channel=channel)
        cat = site.site.help_categories[category]
        device = next((d for d in site.devices.devices if d.id == device_id), None) \
            if device_id else None
        tz = site.site.site.timezone
        from zoneinfo import ZoneInfo

        payload: dict[str, Any] = {
            "site_id": site.site.site.id, "grid_cell_code": hh.grid_cell,
            "household": {"id": hh.id, "address": hh.address},
            "category": "service", "severity": "info",
            "title": f"求助：{cat.zh}"[:120],
            "description": (f"Help request: {cat.en}" + (f" - {note}" if note else ""))[:2000],
            "occurred_at": now_dt.astimezone(ZoneInfo(tz)).isoformat(timespec="seconds"),
            "service": {"category": category, "name": cat.zh, "channel": channel},
            "callback_url": self.callback_url,
        }
        if device is not None:
            payload["device"] = {"id": device.id, "type": device.type}
            payload["devices"] = [payload["device"]]
        outbox.enqueue(conn, help_id, "case.create", payload, now, self.key_prefix,
                       outbox.SERVICE)
        return help_id

    async def _move(self, help_id: int, allowed: tuple[str, ...], state: str, actor: str,
                    fields: dict, *, note: str, resolved: bool = False,
                    event_detail: dict) -> None:
        def tx(conn: Tx) -> None:
            row = rows.get(conn, help_id)
            if row is None:
                raise HelpError(f"no help request {help_id}", "help_not_found", 404)
            if row["state"] not in allowed:
                raise HelpError(f"help request {help_id} is {row['state']}", "help_wrong_state")
            now = _iso(utc())
            rows.set_state(conn, help_id, state, now, actor, **fields)
            rows.add_event(conn, help_id, state, actor, now, **event_detail)
            record_audit(conn, actor, f"help.{state}", str(help_id), **event_detail)
            update: dict[str, Any] = {"event": "resolved" if resolved else "note",
                                      "at": now, "note": note[:1000], "by": actor[:64]}
            if resolved:
                update["reason"] = "handled"
            outbox.enqueue(conn, help_id, "case.update", update, now, self.key_prefix,
                           outbox.SERVICE)

        await self.store.write(tx)
        self.wake()


def _mask(address: str) -> str:
    return address[:4] + "***" if len(address) > 4 else "***"


def apply_case_status(conn: Tx, *, case_id: str, status: str, handler: str | None,
                      note: str) -> int | None:
    """A status change of a service case (the case feedback's dedup already passed): moved
    on its help request; the request's id, or None when the case is no service case here."""
    row = rows.by_case_id(conn, case_id)
    if row is None:
        return None
    now = _iso(utc())
    actor = f"case_system:{handler or ''}"
    cases.advance(conn, "help_requests", row["id"], status)
    rows.add_event(conn, row["id"], "case_status", actor, now, status=status, note=note)
    if status in ("dispatched", "on_site") and row["state"] == "received":
        rows.set_state(conn, row["id"], "assigned", now, actor, assigned_to=handler or "")
    elif status == "closed" and row["state"] in ("received", "assigned"):
        rows.set_state(conn, row["id"], "done", now, actor)
    return int(row["id"])
