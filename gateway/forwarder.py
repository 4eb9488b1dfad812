"""Store-and-forward of outbox rows to the grid case system.

Rows are sent in outbox order (``seq``), one at a time, so the cases of queued alarms arrive
in the order the alarms were raised and the updates of one alarm never overtake its create.
A retryable failure holds the head of the queue and backs off (capped exponential with full
jitter, through a circuit breaker) — the typical cause, the case system or the 4G link being
down, affects every row alike, and the idempotency key makes the retry safe. A permanent
failure (the case system refused the request) marks the row ``failed``, records the reason
on the alarm for staff to see, and lets the queue move on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable

from pydantic import ValidationError

from gateway.alarms import Change
from gateway.metrics import Metrics
from gateway.model import utc
from gateway.store import Store
from gateway.uplink import PermanentUplinkError, RetryableUplinkError
from gateway.uplink.case_system import (Backoff, CaseCreate, CaseSystemClient, CaseUpdate,
                                        CircuitBreaker)

__all__ = ["CaseForwarder", "to_case_create", "to_case_update"]

log = logging.getLogger(__name__)

_REASONS = {"handled": "handled", "false_alarm": "false_alarm", "test": "test"}


def to_case_create(payload: dict) -> CaseCreate:
    fields = {k: v for k, v in payload.items() if k not in ("sequence", "gateway_alarm_id")}
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
    })


class CaseForwarder:
    """Drains the outbox to the case system. ``run()`` until cancelled."""

    def __init__(self, store: Store, client: CaseSystemClient, metrics: Metrics, *,
                 on_change: Callable[[list[Change]], None] | None = None,
                 backoff: Backoff | None = None, breaker: CircuitBreaker | None = None):
        self.store = store
        self.client = client
        self.metrics = metrics
        self.on_change = on_change or (lambda c: None)
        self.backoff = backoff or Backoff(base_s=0.2, cap_s=5.0)
        self.breaker = breaker or CircuitBreaker(failure_threshold=3, reset_timeout_s=2.0)
        self._wake = asyncio.Event()
        self._failures = 0
        self.state = "idle"
        metrics.gauge("gateway_outbox_pending", self.pending_count,
                      "outbox rows not yet delivered to the case system")

    def wake(self) -> None:
        self._wake.set()

    def pending_count(self) -> int:
        row = self.store.query_one("SELECT count(*) AS n FROM outbox WHERE state='pending'")
        return row["n"] if row else 0

    async def run(self) -> None:
        async with self.client:
            while True:
                row = self.store.query_one(
                    "SELECT * FROM outbox WHERE state='pending' ORDER BY seq LIMIT 1")
                if row is None:
                    self.state = "idle"
                    self._wake.clear()
                    await self._wait(60.0)
                    continue
                delay = self.breaker.retry_in()
                if delay > 0:
                    await self._wait(delay)
                    continue
                ok = await self._send(row)
                if not ok:
                    await self._wait(self.backoff.delay(self._failures - 1))

    async def _wait(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass
        self._wake.clear()

    async def _send(self, row: dict) -> bool:
        payload = json.loads(row["payload"])
        started = time.monotonic()
        try:
            if row["topic"] == "case.create":
                ref = await self.client.create_case(to_case_create(payload))
                result = {"case_id": ref.case_id, "status": ref.status.value}
            else:
                case_id = self._case_id(row["alarm_id"])
                if case_id is None:   # its create failed permanently: nothing to update
                    raise PermanentUplinkError("no_case", detail="the alarm has no case")
                ref = await self.client.update_case(case_id, to_case_update(payload))
                result = {"case_id": case_id, "status": ref.status.value}
        except RetryableUplinkError as exc:
            self._failures += 1
            self.state = f"retrying: {exc.reason}"
            self.metrics.inc("gateway_uplink_errors_total", uplink="case_system",
                             reason=exc.reason)
            if self._failures in (1, 10, 100) or self._failures % 1000 == 0:
                log.warning("case system: %s (attempt %d, outbox seq %d)", exc,
                            self._failures, row["seq"])
            await self.store.write(lambda c: _retry(c, row["seq"], str(exc)))
            return False
        except (PermanentUplinkError, ValidationError) as exc:
            reason = exc.reason if isinstance(exc, PermanentUplinkError) else "invalid_payload"
            self.metrics.inc("gateway_uplink_errors_total", uplink="case_system", reason=reason)
            log.error("case system refused outbox seq %d (alarm %d): %s", row["seq"],
                      row["alarm_id"], exc)
            await self.store.write(lambda c: _failed(c, row, f"{reason}: {exc}"[:500]))
            self.on_change([Change(row["alarm_id"], "case_error")])
            return True
        if self._failures:
            log.info("case system reachable again after %d failed attempts", self._failures)
        self._failures = 0
        self.state = "ok"
        self.metrics.inc("gateway_uplink_delivered_total", uplink="case_system")
        self.metrics.observe("gateway_uplink_latency_seconds", time.monotonic() - started)
        await self.store.write(lambda c: _delivered(c, row, result))
        self.on_change([Change(row["alarm_id"], "case")])
        return True

    def _case_id(self, alarm_id: int) -> str | None:
        row = self.store.query_one("SELECT case_id FROM alarms WHERE id=?", (alarm_id,))
        return row["case_id"] if row else None


def _retry(conn: sqlite3.Connection, seq: int, error: str) -> None:
    conn.execute("UPDATE outbox SET attempts=attempts+1, last_error=? WHERE seq=?",
                 (error[:500], seq))


def _failed(conn: sqlite3.Connection, row: dict, error: str) -> None:
    conn.execute("UPDATE outbox SET state='failed', attempts=attempts+1, last_error=? "
                 "WHERE seq=?", (error, row["seq"]))
    conn.execute("UPDATE alarms SET case_error=? WHERE id=?", (error, row["alarm_id"]))


def _delivered(conn: sqlite3.Connection, row: dict, result: dict) -> None:
    now = utc().isoformat()
    conn.execute("UPDATE outbox SET state='delivered', delivered_at=?, attempts=attempts+1, "
                 "last_error=NULL WHERE seq=?", (now, row["seq"]))
    if row["topic"] == "case.create":
        conn.execute("UPDATE alarms SET case_id=?, case_status=?, case_error=NULL WHERE id=?",
                     (result["case_id"], result["status"], row["alarm_id"]))
        conn.execute("INSERT INTO alarm_events (alarm_id, ts, action, actor, detail) "
                     "VALUES (?,?,?,?,?)", (row["alarm_id"], now, "case_created", "case_system",
                                            json.dumps(result)))
    else:
        conn.execute("UPDATE alarms SET case_status=? WHERE id=?",
                     (result["status"], row["alarm_id"]))
