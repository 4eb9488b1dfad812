"""Household care states: 外出 away, 住院 in hospital, 有人陪护 carer present (issue 15.1).

Contract:
- The store (``household_care``, one row per household while a state is in force) is the
  one source of truth; the rule engine's inactivity rules follow it
  (:func:`rules.inactivity.set_care`: no inactivity alarm while away or in hospital, an
  overdue-return alarm once the expected end has passed by the rule's ``overdue_after``).
- :class:`CareDesk` sets and ends states (from the console, a caller key configured for it,
  the case system: ``via``): the row and its audit entry (``care.set`` / ``care.end``,
  target the household) in one transaction (:func:`set_in`, :func:`end_in`), then the
  engine is told (:meth:`CareDesk.told`). The case system's reports (contract 1.4,
  ``gateway.case_feedback``) are written in the transaction of their case event.
- A caller key configured for it (devices.yaml ``care_actions``: action -> ``away``,
  ``hospital``, ``carer`` or ``home``, which ends the state) gives a ``button`` reading of
  metric ``care_key`` (``drivers.profiles.with_care_actions``). :class:`CareDesk` is a
  :class:`gateway.pipeline.DurableWriter`: the press sets the household's state (``via``
  ``caller``, actor ``device``; no expected end) in the transaction of its inbox row, and
  the press is acknowledged (PUBACK) only after that commit; a press of the state already
  in force (a redelivery) changes nothing.
- :func:`apply_care` gives a new engine (start, restart, a reloaded site) the store's states
  and ends the ones it had that the store has not.
- The engine ends states itself (activity at home after an away or hospital stay; a carer's
  expected end): its ``CareEnded`` actions are applied by the alarm book in the transaction
  of the other actions (:func:`ended_by_rule`: row deleted, audited as ``rule:<id>``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from gateway.kernel.clock import utc_iso
from gateway.kernel.errors import GatewayError
from gateway.model import Kind, Reading, utc
from gateway.store import Tx
from gateway.store.audit import record_audit
from gateway.store.household_care import all_care, delete_care, get_care, put_care
from rules.inactivity import care_states, set_care

__all__ = ["CARE_STATES", "VIAS", "CareDesk", "CareError", "apply_care", "care_row",
           "end_in", "ended_by_rule", "set_in"]

log = logging.getLogger(__name__)

CARE_STATES = ("away", "hospital", "carer")
VIAS = ("console", "caller", "case_system")
#: the metric of a care key's ``button`` reading (drivers.profiles.with_care_actions)
CARE_METRIC = "care_key"


class CareError(GatewayError):
    """A care state that cannot be set: ``code`` (an API error code) and ``status``."""

    def __init__(self, status: int, code: str, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code = status, code


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat()


def care_row(household_id: str, state: str, *, actor: str, via: str, start: datetime,
             expected_end: datetime | None = None, note: str = "") -> dict[str, Any]:
    """The ``household_care`` row of a state set now (checked by the caller)."""
    return {"household_id": household_id, "state": state, "started_at": _iso(start),
            "expected_end": _iso(expected_end) if expected_end else None, "note": note,
            "via": via, "set_by": actor, "set_at": utc_iso()}


def set_in(conn: Tx, row: dict[str, Any]) -> None:
    """Set a state (:func:`care_row`) and audit it (``care.set``) in the caller's
    transaction."""
    put_care(conn, **row)
    record_audit(conn, row["set_by"], "care.set", row["household_id"], state=row["state"],
                 start=row["started_at"], expected_end=row["expected_end"], via=row["via"],
                 note=row["note"])


def end_in(conn: Tx, household_id: str, *, actor: str, via: str) -> bool:
    """End the household's state, audited (``care.end``), in the caller's transaction;
    False: it had none."""
    row = get_care(conn, household_id)
    if row is None:
        return False
    delete_care(conn, household_id)
    record_audit(conn, actor, "care.end", household_id, state=row["state"], reason="ended",
                 via=via)
    return True


class CareDesk:
    """Sets and ends care states (see module contract). ``site()``: the current site;
    ``engine()``: the running rule engine (None: none to tell, e.g. tools and tests)."""

    def __init__(self, store: Any, site: Callable[[], Any],
                 engine: Callable[[], Any] | None = None) -> None:
        self.store, self.site, self.engine = store, site, engine or (lambda: None)

    # -- caller keys: the pipeline's durable writer (gateway.pipeline.DurableWriter) ------
    def takes(self, reading: Reading) -> bool:
        """A care key press (acknowledged only once its state is saved)."""
        return reading.kind is Kind.BUTTON and reading.metric == CARE_METRIC

    def write(self, conn: Tx, readings: list[Reading]
              ) -> list[tuple[str, dict[str, Any] | None]]:
        """In the pipeline's inbox transaction: each press's state set or ended; what
        changed as (household, row or None: ended). A press that is no care key of the
        current site is logged and skipped (its message is still acknowledged)."""
        out: list[tuple[str, dict[str, Any] | None]] = []
        for reading in readings:
            got = self._key(reading)
            if got is None:
                continue
            device_id, household, state = got
            now_row = get_care(conn, household)
            if state == "home":
                if end_in(conn, household, actor="device", via="caller"):
                    out.append((household, None))
            elif now_row is None or now_row["state"] != state:
                row = care_row(household, state, actor="device", via="caller", start=utc(),
                               note=device_id)
                set_in(conn, row)
                out.append((household, row))
        return out

    def committed(self, written: list[tuple[str, dict[str, Any] | None]]) -> None:
        for household, row in written:
            self.told(household, row)
            log.info("care state of %s: %s (caller key)", household,
                     row["state"] if row is not None else "ended")

    def _key(self, reading: Reading) -> tuple[str, str, str] | None:
        """(device, household, state or ``home``) of a care key press; None (logged) if
        it is none of the current site."""
        device = next((d for d in self.site().devices.devices if d.id == reading.device_id),
                      None)
        state = ((device.care_actions or {}).get(str(reading.value).lower())
                 if device is not None else None)
        if device is None or state is None or not device.household:
            log.warning("%s: %r is no care key", reading.device_id, reading.value)
            return None
        return device.id, device.household, state

    async def key_pressed(self, reading: Reading) -> str | None:
        """The state a care key press set (``home``: ended), None if it is no care key;
        written on its own (the service's presses come through :meth:`write`)."""
        got = self._key(reading)
        if got is None:
            return None
        written = await self.store.write(lambda conn: self.write(conn, [reading]))
        self.committed(written)
        return got[2]

    def states(self) -> list[dict[str, Any]]:
        """The states in force, with the household's address and grid cell."""
        site = self.site()
        out = []
        for row in all_care(self.store):
            h = next((x for x in site.site.households if x.id == row["household_id"]), None)
            out.append({**row, "address": h.address if h is not None else "",
                        "grid_cell": h.grid_cell if h is not None else None})
        return out

    async def set(self, household_id: str, state: str, *, actor: str, via: str = "console",
                  start: datetime | None = None, expected_end: datetime | None = None,
                  note: str = "", now: datetime | None = None) -> dict[str, Any]:
        now = now or utc()
        if state not in CARE_STATES:
            raise CareError(422, "invalid", f"unknown care state {state!r}")
        if via not in VIAS:
            raise CareError(422, "invalid", f"unknown channel {via!r}")
        if not any(h.id == household_id for h in self.site().site.households):
            raise CareError(404, "not_found", f"no household {household_id!r}")
        start = start or now
        if expected_end is not None and expected_end <= start:
            raise CareError(422, "invalid", "the expected end must come after the start")
        row = care_row(household_id, state, actor=actor, via=via, start=start,
                       expected_end=expected_end, note=note)
        await self.store.write(lambda conn: set_in(conn, row))
        self.told(household_id, row, now)
        return row

    async def end(self, household_id: str, *, actor: str, via: str = "console",
                  now: datetime | None = None) -> bool:
        """End the household's care state (False: it had none)."""
        ended = bool(await self.store.write(
            lambda conn: end_in(conn, household_id, actor=actor, via=via)))
        if ended:
            self.told(household_id, None, now)
        return ended

    def told(self, household_id: str, row: dict[str, Any] | None,
             now: datetime | None = None) -> None:
        """The rule engine follows a state written to the store: ``row`` (a
        ``household_care`` row) set, or None: ended."""
        engine = self.engine()
        if engine is not None:
            _follow(engine, household_id, row, now or utc())


def apply_care(engine: Any, store: Any, now: datetime | None = None) -> int:
    """Give ``engine`` the store's care states (see module contract); how many."""
    now = now or utc()
    rows = all_care(store)
    kept = {r["household_id"] for r in rows}
    for h in set(care_states(engine)) - kept:
        set_care(engine, h, None, now)
    for r in rows:
        _follow(engine, r["household_id"], r, now)
    return len(rows)


def _follow(engine: Any, household_id: str, row: dict[str, Any] | None,
            now: datetime) -> None:
    """``engine`` takes the household's ``household_care`` row (None: no state)."""
    if row is None:
        set_care(engine, household_id, None, now)
        return
    end = row["expected_end"]
    set_care(engine, household_id, row["state"], now,
             datetime.fromisoformat(row["started_at"]),
             datetime.fromisoformat(end) if end else None)


def ended_by_rule(conn: Tx, a: Any) -> None:
    """A ``CareEnded`` action of the engine: the store's row goes too, audited."""
    row = get_care(conn, a.household_id)
    if row is not None and row["state"] == a.state:
        delete_care(conn, a.household_id)
        record_audit(conn, f"rule:{a.rule_id}" if a.rule_id else "rule", "care.end",
                     a.household_id, state=a.state, reason=a.reason, at=_iso(a.ts))
