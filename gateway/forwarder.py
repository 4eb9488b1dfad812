"""Store-and-forward of outbox rows to the grid case system: the cases of alarms and the
service cases of help requests (``outbox.kind`` ``alarm`` / ``service``, contract 1.3), one
queue, one client, one circuit breaker.

Order. Rows are dispatched in outbox order (``seq``): the cases of queued alarms go out
before those of newer alarms, and the rows of ONE alarm go strictly one after the other (an
update is sent only once the row before it was delivered or refused), so an update never
overtakes its create (the same for the rows of one help request). To drain a backlog
quickly, up to ``window`` rows of *different* alarms or requests are in flight at once (HTTP keep-alive, one connection each); among those, the case
system may see them complete in any order — the dispatch order is ``seq`` order.

Failures. A retryable failure (case system or 4G link down, 5xx, timeout, garbled reply)
holds the rows back, feeds the circuit breaker and backs off (capped exponential with full
jitter). While the breaker is open, ONE row (the oldest) is sent as the trial; when it
succeeds the full window resumes. The backoff cap and breaker reset (2 s each by default)
bound how long after the case system comes back the queued cases start flowing. The
idempotency key makes every resend safe (a crash after sending and before recording the
answer resends; the case system answers with the existing case). A permanent failure (the
case system refused the request: 4xx) marks the row ``failed``, records a short code on the
alarm (or the help request) for staff to see (``case_error`` = ``<error>[:<field>]``; the card words it through
:mod:`gateway.case_refusals`, the full reply stays on the outbox row), counts it in
``gateway_case_refusals_total{topic,reason}`` and lets the queue move on. ``gateway outbox
--retry-failed`` (another process) queues failed rows again; the idle forwarder looks for
queued rows every :data:`IDLE_POLL_S` seconds, so they go out within seconds.

Outcomes of one round are recorded in ONE store transaction (group commit). A store that
cannot commit (disk full) is retried; rows whose outcome was not recorded are simply resent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from gateway import StoreError
from gateway.alarms import Change
from gateway.case_refusals import refusal_code
from gateway.kernel.component import StateTracker
from gateway.metrics import Metrics
from gateway.model import utc
from gateway.kernel.resilience import Backoff, BreakerState, CircuitBreaker
from gateway.store import COMMIT_RETRY, Store, Tx, append_event, cases, outbox
from gateway.store import alarms as alarm_rows
from gateway.store import help as help_rows
from gateway.uplink import PermanentUplinkError, RetryableUplinkError
from gateway.uplink.case_system import CaseCategory, CaseCreate, CaseSystemClient, CaseUpdate

__all__ = ["IDLE_POLL_S", "CaseForwarder", "Outcome", "to_case_create", "to_case_update"]

log = logging.getLogger(__name__)

_REASONS = {"handled": "handled", "false_alarm": "false_alarm", "test": "test"}
_CATEGORIES = frozenset(c.value for c in CaseCategory)
#: gateway categories the contract has no word for, sent as the nearest one: 无法监护 (every
#: activity sensor of a household silent; docs/rules.md) is a device fault to the city
_CASE_CATEGORY = {"cannot_watch": CaseCategory.DEVICE_FAULT.value}
#: seconds between looks at the outbox while nothing is queued (rows queued again by
#: ``gateway outbox --retry-failed`` in another process are seen within this)
IDLE_POLL_S = 2.0
#: seconds from the start of a round during which newly queued cases join it
JOIN_S = 1.0
#: a queued case's request is urgent (``CaseForwarder.urgent``) this long at most
URGENT_S = 0.1


def to_case_create(payload: dict) -> CaseCreate:
    """The contract's create from an outbox payload (``AlarmBook._case_payload``). Rows of
    earlier releases are mended here, so ``gateway outbox --retry-failed`` sends them once
    the gateway is upgraded: ``device: {id: null, ...}`` (a household-level alarm) is left
    out, a category the contract does not know is sent as ``other``."""
    fields = {k: v for k, v in payload.items() if k not in ("sequence", "gateway_alarm_id")}
    device = fields.get("device")
    if isinstance(device, dict) and device.get("id") is None:
        fields.pop("device")
    elif isinstance(device, dict) and device.get("type") is None:
        fields["device"] = dict(device, type="unknown")
    category = fields.get("category")
    category = _CASE_CATEGORY.get(category, category) if isinstance(category, str) else None
    fields["category"] = category if category in _CATEGORIES else CaseCategory.OTHER.value
    return CaseCreate.model_validate(fields)


def to_case_update(payload: dict) -> CaseUpdate:
    reason = payload.get("reason")
    note = payload.get("note") or ""
    if reason is not None and reason not in _REASONS:
        note = f"[{reason}] {note}".strip()
    return CaseUpdate.model_validate({
        "idempotency_key": payload["idempotency_key"],
        "sequence": payload["sequence"],
        "kind": payload["event"],
        "occurred_at": payload["at"],
        "reason": _REASONS.get(reason, "other") if reason is not None else None,
        "note": note[:1000],
        "actor": payload.get("by"),
        **({"call": payload["call"]} if payload.get("call") else {}),
    })


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one outbox row in one attempt. An alarm's row has ``alarm_id``, a
    help request's (a service case) ``help_id`` and ``alarm_id`` None."""

    seq: int
    alarm_id: int | None
    topic: str
    kind: str                 # delivered | retry | failed
    case_id: str | None = None
    status: str | None = None
    error: str = ""
    code: str = ""            # failed: the short code recorded on the alarm (case_error)
    help_id: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("delivered", "retry", "failed"):
            raise ValueError(f"unknown outcome {self.kind!r}")


class CaseForwarder:
    """Drains the outbox to the case system. ``run()`` until cancelled.

    ``window``: rows (of different alarms) in flight at once; 1 = strictly one at a time.
    """

    def __init__(self, store: Store, client: CaseSystemClient, metrics: Metrics, *,
                 on_change: Callable[[list[Change]], None] | None = None,
                 backoff: Backoff | None = None, breaker: CircuitBreaker | None = None,
                 window: int = 32):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.store = store
        self.client = client
        self.metrics = metrics
        self.on_change = on_change or (lambda c: None)
        self.backoff = backoff or Backoff(base_s=0.1, cap_s=2.0)
        self.breaker = breaker or CircuitBreaker(failure_threshold=3, reset_timeout_s=2.0,
                                                 name="case-system")
        self.window = window
        self._wake = asyncio.Event()
        self._failures = 0
        #: when the first row queued since the last answered send woke this (``urgent``)
        self._urgent_since: float | None = None
        self._sending = 0
        #: rows sent while the last round's outcomes were being recorded: the next round
        #: starts with them in flight
        self._carry: dict[asyncio.Future[Outcome], dict] = {}
        self.status = StateTracker("case forwarder:", "idle", good=("idle", "ok"), logger=log)
        self.delivered = 0
        metrics.gauge("gateway_outbox_pending", self.pending_count,
                      "outbox rows not yet delivered to the case system")
        metrics.gauge("gateway_outbox_failed", self.failed_count,
                      "outbox rows the case system refused (surfaced on the alarm)")

    def wake(self, urgent: bool = False) -> None:
        """Rows may be due. ``urgent``: a new alarm's case among them (see :meth:`urgent`)."""
        if urgent:
            now = time.monotonic()
            if self._urgent_since is None or now - self._urgent_since >= URGENT_S:
                self._urgent_since = now
        self._wake.set()

    def urgent(self) -> bool:
        """A new alarm's case was queued and no send has been answered since, for
        :data:`URGENT_S` at most, while the case system answers: the MQTT intake's main
        session holds back its telemetry meanwhile, as it does while the alarm is committed
        (the case request is the rest of the alarm's way; drivers/mqtt.py ``alarm_first``)."""
        since = self._urgent_since
        return (since is not None and time.monotonic() - since < URGENT_S
                and not self._failures and self.breaker.state is BreakerState.CLOSED)

    def pending_count(self) -> int:
        return outbox.pending_count(self.store)

    def failed_count(self) -> int:
        return outbox.failed_count(self.store)

    def oldest_pending_age_s(self) -> float:
        """Seconds since the oldest undelivered row was queued (0 when none)."""
        created_at = outbox.oldest_pending_created_at(self.store)
        if created_at is None:
            return 0.0
        from datetime import datetime

        return max(0.0, (utc() - datetime.fromisoformat(created_at)).total_seconds())

    @property
    def state(self) -> str:
        """``idle``, ``ok`` or ``retrying: <reason>`` (the health endpoint shows it)."""
        return self.status.value

    async def run(self) -> None:
        async with self.client:
            while True:
                await self.step()

    async def step(self) -> int:
        """One round: send what is due, record the outcomes, wait as needed. Rows sent."""
        # rows sent during the last record: owned here from now on (their outcomes are
        # recorded by this round whatever the breaker says; cancelled on any error)
        carried, self._carry = self._carry, {}
        try:
            delay = self.breaker.retry_in()
            if delay > 0 and not carried:
                await self._wait(delay)
                return 0
            # at most ``window`` in flight, carried ones included; one (the trial) while
            # failing or half-open; none more while the breaker is open
            limit = (0 if delay > 0 else
                     1 if self._failures or self.breaker.state is not BreakerState.CLOSED
                     else self.window)
            rows = self._due(max(0, limit - len(carried)), list(carried.values()))
        except BaseException:
            for task in carried:
                task.cancel()
            await asyncio.gather(*carried, return_exceptions=True)
            raise
        if not rows and not carried:
            self._urgent_since = None       # nothing to send (a test alarm raised no case)
            self.status.set("idle")
            self._wake.clear()
            await self._wait(IDLE_POLL_S)
            return 0
        rows, outcomes = await self._round(rows, carried)
        await self._record_meanwhile(rows, outcomes)
        if any(o.kind == "retry" for o in outcomes):
            await self._wait(self.backoff.delay(min(self._failures - 1, 30)))
        return len(rows)

    async def _record_meanwhile(self, rows: list[dict], outcomes: list[Outcome]) -> None:
        """Record the round's outcomes; while that commit runs (5-30 ms under the intake's
        load), a case queued meanwhile is sent at once (the next round starts with it in
        flight) instead of waiting for the commit: while all goes well, rows of other
        alarms and requests only (a row of this round's is still pending in the store
        until the commit), up to ``window``."""
        recording = asyncio.ensure_future(self._record(rows, outcomes))
        if (self._failures or any(o.kind != "delivered" for o in outcomes)
                or self.breaker.state is not BreakerState.CLOSED):
            await recording
            return
        waking: asyncio.Future[Any] | None = None
        try:
            while not recording.done():
                waking = asyncio.ensure_future(self._wake.wait())
                watched: list[asyncio.Future[Any]] = [recording, waking]
                done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                if waking not in done:
                    continue
                waking = None
                self._wake.clear()
                room = self.window - len(self._carry)
                for r in self._due(room, [*rows, *self._carry.values()]) if room > 0 else []:
                    self._carry[asyncio.ensure_future(self._send(r))] = r
            await recording
        except BaseException:
            recording.cancel()
            for task in self._carry:
                task.cancel()
            await asyncio.gather(recording, *self._carry, return_exceptions=True)
            self._carry = {}
            raise
        finally:
            if waking is not None:
                waking.cancel()

    async def _round(self, rows: list[dict], carried: dict[asyncio.Future[Outcome], dict]
                     | None = None) -> tuple[list[dict], list[Outcome]]:
        """Send ``rows`` at once. A case queued while they are in flight (``wake``) joins the
        round at once instead of waiting for the slowest of them and the record (a burst of
        alarms: hundreds of ms each), while all goes well, up to ``window`` in flight and
        for :data:`JOIN_S`. A row sent but not yet recorded is still pending in the store:
        no row of its alarm or request joins (not it again, not the next one before it is
        recorded, not a refused older one queued again meanwhile)."""
        started = time.monotonic()
        flying: dict[asyncio.Future[Outcome], dict] = {
            asyncio.ensure_future(self._send(r)): r for r in rows}
        flying.update(carried or {})
        sent: list[dict] = []
        outcomes: list[Outcome] = []
        waking: asyncio.Task[bool] | None = None
        try:
            while flying:
                if waking is None:
                    waking = asyncio.ensure_future(self._wake.wait())
                watched: list[asyncio.Future[Any]] = [*flying, waking]
                done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                for task in [t for t in flying if t in done]:
                    sent.append(flying.pop(task))
                    outcomes.append(task.result())
                if waking not in done:
                    continue
                waking = None
                self._wake.clear()
                if (self._failures or any(o.kind != "delivered" for o in outcomes)
                        or time.monotonic() - started > JOIN_S or len(flying) >= self.window):
                    continue
                for r in self._due(self.window - len(flying), [*sent, *flying.values()]):
                    flying[asyncio.ensure_future(self._send(r))] = r
        finally:
            for task in flying:
                task.cancel()
            if waking is not None:
                waking.cancel()
            if flying:      # (shutdown) their cancellation done before the client closes
                await asyncio.gather(*flying, return_exceptions=True)
        return sent, outcomes

    def _due(self, limit: int, busy: Sequence[dict] = ()) -> list[dict]:
        """The oldest pending row of each of the first ``limit`` alarms and help requests, in
        seq order; none of an alarm or request with a row in ``busy`` (sent, not yet
        recorded: still pending in the store; and a refused row queued again by `gateway
        outbox --retry-failed` would be due beside it)."""
        if limit <= 0:
            return []
        if not busy:
            return outbox.due(self.store, limit)
        alarms = {r["alarm_id"] for r in busy if r["alarm_id"] is not None}
        helps = {r["help_id"] for r in busy if r.get("help_id") is not None}
        return [r for r in outbox.due(self.store, limit + len(busy))
                if r["alarm_id"] not in alarms and r.get("help_id") not in helps][:limit]

    async def _wait(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass
        self._wake.clear()

    async def _send(self, row: dict) -> Outcome:
        seq, alarm_id, topic = row["seq"], row["alarm_id"], row["topic"]
        help_id = row["help_id"] if row.get("kind") == outbox.SERVICE else None
        payload = json.loads(row["payload"])
        started = time.monotonic()
        if not self.breaker.allow():
            return Outcome(seq, alarm_id, topic, "retry", error="circuit_open",
                           help_id=help_id)
        self._sending += 1
        try:
            return await self._request(seq, alarm_id, topic, help_id, payload, started)
        finally:
            self._sending -= 1
            if not self._sending and not self._wake.is_set():
                self._urgent_since = None       # answered, nothing queued since

    async def _request(self, seq: int, alarm_id: int | None, topic: str, help_id: int | None,
                       payload: dict, started: float) -> Outcome:
        case_id: str | None
        try:
            if topic == "case.create":
                ref = await self.client.create_case(to_case_create(payload))
                case_id, status = ref.case_id, ref.status.value
            else:
                case_id = self._case_id(alarm_id, help_id)
                if case_id is None:   # its create failed permanently: nothing to update
                    raise PermanentUplinkError("no_case", detail="the alarm has no case"
                                               if help_id is None else "the request has no case")
                if help_id is not None and payload.get("event") == "resolved":
                    payload.setdefault("reason", "handled")    # a request done: handled
                uref = await self.client.update_case(case_id, to_case_update(payload))
                status = uref.status.value
        except RetryableUplinkError as exc:
            self.breaker.record_failure()
            self.metrics.inc("gateway_uplink_errors_total", uplink="case_system",
                             reason=exc.reason)
            return Outcome(seq, alarm_id, topic, "retry", error=str(exc)[:500], help_id=help_id)
        except (PermanentUplinkError, ValidationError) as exc:
            if isinstance(exc, PermanentUplinkError):
                if exc.status is not None:
                    self.breaker.record_success()   # the server is up; it refused this one
                reason, field = exc.reason, exc.field
            else:   # our own models refused it before sending: name the first field
                reason = "invalid_payload"
                loc = exc.errors()[0]["loc"] if exc.error_count() else ()
                field = ".".join(str(p) for p in loc) or None
            self.metrics.inc("gateway_uplink_errors_total", uplink="case_system", reason=reason)
            self.metrics.inc("gateway_case_refusals_total", topic=topic, reason=reason)
            log.error("case system refused outbox seq %d (%s): %s", seq,
                      f"alarm {alarm_id}" if help_id is None else f"help request {help_id}", exc)
            return Outcome(seq, alarm_id, topic, "failed", error=f"{reason}: {exc}"[:500],
                           code=refusal_code(reason, field if help_id is None else None),
                           help_id=help_id)
        self.breaker.record_success()
        self.metrics.inc("gateway_uplink_delivered_total", uplink="case_system")
        self.metrics.observe("gateway_uplink_latency_seconds", time.monotonic() - started)
        return Outcome(seq, alarm_id, topic, "delivered", case_id=case_id, status=status,
                       help_id=help_id)

    async def _record(self, rows: list[dict], outcomes: list[Outcome]) -> None:
        retries = [o for o in outcomes if o.kind == "retry"]
        if retries:
            self._failures += 1
            self.status.set(f"retrying: {retries[0].error.split(' ', 1)[0]}")
            if self._failures in (1, 10, 100) or self._failures % 1000 == 0:
                log.warning("case system: %s (attempt %d, outbox seq %d)", retries[0].error,
                            self._failures, retries[0].seq)
        elif self._failures:
            log.info("case system reachable again after %d failed attempts", self._failures)
            self._failures = 0
        if not retries:
            self.status.set("ok")
        failures = 0
        while True:
            try:
                await self.store.write(lambda c: _apply(c, outcomes))
                break
            except StoreError as exc:
                # Not recorded: those rows stay pending and are resent (same idempotency key).
                self.metrics.inc("gateway_store_errors_total", stage="outbox")
                log.error("cannot record case system outcomes: %s (retrying)", exc)
                await asyncio.sleep(COMMIT_RETRY.delay(failures))
                failures += 1
        self.delivered += sum(o.kind == "delivered" for o in outcomes)
        changes = [Change(o.alarm_id, "case" if o.kind == "delivered" else "case_error")
                   for o in outcomes if o.kind != "retry" and o.alarm_id is not None]
        if changes:
            self.on_change(changes)

    def _case_id(self, alarm_id: int | None, help_id: int | None) -> str | None:
        if help_id is not None:
            request = help_rows.get(self.store, help_id)
            return request["case_id"] if request else None
        assert alarm_id is not None
        return alarm_rows.case_id_of(self.store, alarm_id)


def _apply(conn: Tx, outcomes: list[Outcome]) -> None:
    now = utc().isoformat()
    for o in outcomes:
        if o.kind == "retry":
            outbox.record_retry(conn, o.seq, o.error)
        elif o.help_id is not None:
            _apply_service(conn, o, now)
        elif o.alarm_id is None:    # (the table's CHECK: every row is one or the other)
            continue
        elif o.kind == "failed":
            outbox.record_failed(conn, o.seq, o.error)
            alarm_rows.set_case_error(conn, o.alarm_id, o.code or o.error)
            if o.topic == "case.create":    # no case of ours: not one claimed for its key
                cases.unclaim(conn, "alarms", o.alarm_id)
        else:
            outbox.record_delivered(conn, o.seq, now)
            if o.topic == "case.create":
                cases.opened(conn, "alarms", o.alarm_id, o.case_id or "", o.status)
                append_event(conn, o.alarm_id, "case_created", "case_system", now,
                             case_id=o.case_id, status=o.status)
            elif o.status:    # never back: a callback may have moved it on meanwhile
                cases.advance(conn, "alarms", o.alarm_id, o.status)


def _apply_service(conn: Tx, o: Outcome, now: str) -> None:
    """A help request's service case delivered or refused: on the request and its history."""
    assert o.help_id is not None
    if o.kind == "failed":
        outbox.record_failed(conn, o.seq, o.error)
        help_rows.set_case_error(conn, o.help_id, o.code or o.error)
        if o.topic == "case.create":
            cases.unclaim(conn, "help_requests", o.help_id)
        return
    outbox.record_delivered(conn, o.seq, now)
    if o.topic == "case.create":
        cases.opened(conn, "help_requests", o.help_id, o.case_id or "", o.status)
        help_rows.add_event(conn, o.help_id, "case_created", "case_system", now,
                            case_id=o.case_id, status=o.status)
    elif o.status:
        cases.advance(conn, "help_requests", o.help_id, o.status)
