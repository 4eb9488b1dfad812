"""Case status coming back from the grid case system: signed callbacks, and polling.

Callbacks are delivered at least once; ``event_id`` deduplicates them. Each accepted status
change is stored on the alarm (``case_status``) and in its history, and pushed to the console.

Callbacks can be lost (the gateway was restarting, the 4G link was down while the case
system gave up retrying, or the city's network does not allow calls into the community at
all). :class:`CaseStatusPoller` is the fallback: every ``interval_s`` it pages through the
cases changed since its cursor (``GET /api/v1/cases?updated_since=``, kept in ``meta``) and
applies every event it has not seen, through the same ``event_id`` dedup — so a change that
arrives both ways is recorded once.

A care state the handler reports with an event (``care``, contract 1.4: the resident is in
hospital until a date, away, a carer present, or back home) is written in the event's
transaction on the household of the case's alarm or help request (``care.set`` /
``care.end`` audited by ``case_system:<handler>``, via ``case_system``); the rule engine
follows once it is committed (``on_care``, the service's ``CareDesk.told``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from fastapi import HTTPException
from pydantic import ValidationError

from gateway import StoreError
from gateway.alarms import Change
from gateway.help_requests import apply_case_status
from gateway.household_care import care_row, end_in, set_in
from gateway.kernel.resilience import Backoff
from gateway.kernel.component import StateTracker
from gateway.metrics import Metrics
from gateway.model import utc
from gateway.store import Store, Tx, append_event, cases, cursors, outbox
from gateway.store import alarms as alarm_rows
from gateway.store import help as help_rows
from gateway.uplink import PermanentUplinkError, RetryableUplinkError
from gateway.uplink.case_system import (CareReport, CareState, CaseSystemClient, CaseView,
                                        decode_callback)
from gateway.uplink.signing import Secret, SignatureError, Verifier

__all__ = ["CareReported", "CaseFeedback", "CaseStatusPoller", "apply_case_event"]

log = logging.getLogger(__name__)
#: care states written with case events: (household, its ``household_care`` row or None:
#: ended), for the rule engine once committed
CareReported = list[tuple[str, dict[str, Any] | None]]


def apply_case_event(conn: Tx, *, event_id: str, case_id: str, status: str,
                     handler: str | None, note: str, via: str,
                     on_closed: str = "resolve", care: CareReport | None = None,
                     changed_at: datetime | None = None,
                     cared: CareReported | None = None,
                     idempotency_key: str | None = None) -> Change | None:
    """Record one case status change once (by ``event_id``): the alarm's change, or None
    when it was seen before or belongs to no alarm here. A case closed resolves its open
    alarm (``on_closed="resolve"``: reason ``case_closed``, the handler's result as the note,
    ``case_system:<handler>`` as actor) or leaves it for staff to confirm (``"confirm"``).
    ``care`` (reported with the event at ``changed_at``): the household of the case's alarm
    or help request takes it, appended to ``cared``. ``idempotency_key``: the key the case
    was opened with; a case not yet known by its id (its status overtook the reply that
    opened it) is found by it."""
    if not cases.first_seen(conn, event_id, utc().isoformat()):
        return None     # duplicate delivery
    row = alarm_rows.by_case_id(conn, case_id)
    claimed = False
    if row is None and idempotency_key:
        claimed = _claim(conn, case_id, idempotency_key)
        row = alarm_rows.by_case_id(conn, case_id)
    if care is not None:
        request = help_rows.by_case_id(conn, case_id) if row is None else None
        household = row[2] if row is not None else request and request["household_id"]
        if household:
            _care_reported(conn, household, care, handler, changed_at or utc(),
                           cared if cared is not None else [])
        else:
            log.warning("case %s: care state %s reported for no household here", case_id,
                        care.state.value)
    if row is None:   # a service case: its help request moves (gateway.help_requests)
        apply_case_status(conn, case_id=case_id, status=status, handler=handler, note=note)
        return None
    now = utc().isoformat()
    actor = f"case_system:{handler or ''}"
    # events may arrive out of order (retries, polling after callbacks): never backwards
    cases.advance(conn, "alarms", row[0], status)
    append_event(conn, row[0], "case_status", actor, now, status=status, note=note,
                 event_id=event_id, via=via)
    # a case taken by its key, its reply not yet recorded, resolves nothing: should the reply
    # be a refusal (the key's case was another alarm's), staff still have the alarm open
    if status == "closed" and on_closed == "resolve" and row[1] != "resolved" and not claimed:
        alarm_rows.resolve(conn, row[0], actor, "case_closed", note, now)
        append_event(conn, row[0], "resolved", actor, now, reason="case_closed", note=note)
        return Change(row[0], "resolved")
    return Change(row[0], "case_status")


def _claim(conn: Tx, case_id: str, key: str) -> bool:
    """A case system may dispatch (and report) before the gateway has recorded its reply to
    the create request: the key names our alarm or help request, which takes the case id
    now (the reply, recorded later, moves no status back: ``cases.opened``)."""
    owner = outbox.owner_of_key(conn, key)
    if owner is None:
        return False
    alarm_id, help_id = owner
    if alarm_id is not None:
        taken = cases.claim(conn, "alarms", alarm_id, case_id)
    else:
        taken = help_id is not None and cases.claim(conn, "help_requests", help_id, case_id)
    if taken:
        log.info("case %s reported before the reply that opened it was recorded: taken by "
                 "key %s", case_id, key)
    else:
        log.warning("case %s reported with key %s, whose owner has another case: ignored",
                    case_id, key)
    return taken


def _care_reported(conn: Tx, household_id: str, care: CareReport, handler: str | None,
                   at: datetime, cared: CareReported) -> None:
    actor = f"case_system:{handler or ''}"
    if care.state is CareState.ENDED:
        if end_in(conn, household_id, actor=actor, via="case_system"):
            cared.append((household_id, None))
        return
    until = care.until if care.until is not None and care.until > at else None
    row = care_row(household_id, care.state.value, actor=actor, via="case_system", start=at,
                   expected_end=until, note=care.note)
    set_in(conn, row)
    cared.append((household_id, row))


class CaseFeedback:
    """Signed callbacks of the case system; ``on_care(household, row or None)``: a care
    state reported with an event, committed (the rule engine follows)."""

    def __init__(self, store: Store, key_id: str, secret: str,
                 on_change: Callable[[list[Change]], None], on_closed: str = "resolve",
                 on_care: Callable[[str, dict[str, Any] | None], None] = lambda h, r: None):
        self.store = store
        self.verifier = Verifier({key_id: Secret(secret)})
        self.on_change = on_change
        self.on_closed = on_closed
        self.on_care = on_care

    async def handle(self, method: str, target: str, headers: Mapping[str, str],
                     body: bytes) -> dict:
        try:
            cb = decode_callback(self.verifier, method=method, target=target,
                                 headers=headers, body=body)
        except SignatureError as exc:
            raise HTTPException(401, f"signature: {exc}") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise HTTPException(422, f"{field}: {first['msg']}") from None

        cared: CareReported = []

        def tx(c: Tx) -> Change | None:
            cared.clear()
            return apply_case_event(
                c, event_id=cb.event_id, case_id=cb.case_id, status=cb.status.value,
                handler=cb.handler, note=cb.note, via="callback", on_closed=self.on_closed,
                care=cb.care, changed_at=cb.changed_at, cared=cared,
                idempotency_key=cb.idempotency_key)

        try:
            change = await self.store.write(tx)
        except StoreError as exc:
            # 503: the case system retries the callback (and the poller catches up).
            raise HTTPException(503, f"store: {exc}") from None
        for household, row in cared:
            self.on_care(household, row)
        if change is not None:
            self.on_change([change])
            return {"ok": True, "duplicate": False}
        return {"ok": True, "duplicate": True}


class CaseStatusPoller:
    """Polls the case system for status changes (fallback to callbacks). ``run()`` forever."""

    def __init__(self, store: Store, client: CaseSystemClient, metrics: Metrics,
                 on_change: Callable[[list[Change]], None], *, interval_s: float = 60.0,
                 lookback: timedelta = timedelta(hours=1), on_closed: str = "resolve",
                 on_care: Callable[[str, dict[str, Any] | None], None] = lambda h, r: None):
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.store = store
        self.client = client
        self.metrics = metrics
        self.on_change = on_change
        self.interval_s = interval_s
        self.lookback = lookback
        self.on_closed = on_closed
        self.on_care = on_care
        self.status = StateTracker("case status polling:", "starting", logger=log)
        self._backoff = Backoff(base_s=min(1.0, interval_s), cap_s=max(interval_s, 5.0))

    def cursor(self) -> datetime:
        saved = cursors.read_cursor(self.store, cursors.CASE_POLL)
        return datetime.fromisoformat(saved) if saved else utc() - self.lookback

    async def run(self) -> None:
        failures = 0
        async with self.client:
            # Callbacks are the fast path; polling is the fallback. The first poll waits one
            # interval, so a case system that starts with the gateway is not reported down.
            await asyncio.sleep(min(self.interval_s, 30.0))
            while True:
                try:
                    await self.poll_once()
                    failures = 0
                    await asyncio.sleep(self.interval_s)
                except (RetryableUplinkError, PermanentUplinkError, StoreError) as exc:
                    failures += 1
                    self.status.set(f"error: {getattr(exc, 'reason', 'store')}")
                    self.metrics.inc("gateway_case_poll_errors_total",
                                     reason=getattr(exc, "reason", "store"))
                    await asyncio.sleep(self._backoff.delay(min(failures - 1, 30)))

    async def poll_once(self) -> int:
        """Apply every unseen event of cases changed since the cursor; events applied."""
        since = self.cursor()
        views = await self.client.cases_updated_since(since, limit=200, max_pages=50)
        newest = max((c.updated_at for c in views), default=since)

        cared: CareReported = []

        def tx(conn: Tx) -> list[Change]:
            changed: list[Change] = []
            cared.clear()
            for case in views:
                changed += _apply_case(conn, case, self.on_closed, cared)
            cursors.write_cursor(conn, cursors.CASE_POLL, newest.isoformat())
            return changed

        changed = await self.store.write(tx)
        for household, row in cared:
            self.on_care(household, row)
        self.status.set("ok")
        self.metrics.inc("gateway_case_polls_total")
        if changed:
            self.metrics.inc("gateway_case_status_polled_total", len(changed))
            resolved = {c.alarm_id for c in changed if c.action == "resolved"}
            self.on_change([Change(a, "resolved" if a in resolved else "case_status")
                            for a in sorted({c.alarm_id for c in changed})])
        return len(changed)

    @property
    def state(self) -> str:
        """``starting``, ``ok`` or ``error: <reason>`` (the health endpoint shows it)."""
        return self.status.value


def _apply_case(conn: Tx, case: CaseView, on_closed: str, cared: CareReported) -> list[Change]:
    out = []
    for ev in sorted(case.events, key=lambda e: e.changed_at):
        change = apply_case_event(conn, event_id=ev.event_id, case_id=case.case_id,
                                  status=ev.status.value, handler=ev.handler, note=ev.note,
                                  via="poll", on_closed=on_closed, care=ev.care,
                                  changed_at=ev.changed_at, cared=cared,
                                  idempotency_key=case.idempotency_key)
        if change is not None:
            out.append(change)
    if out:   # events may have been missed in any order: the case's own status is current
        alarm_rows.advance_status_of_case(conn, case.case_id, case.status.value)
    return out
