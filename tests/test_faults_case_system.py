"""Faults of the grid case system: outage with a backlog, garbage, 4xx, 5xx, timeouts, and
status feedback by polling when callbacks do not arrive.

The real alarm book, store and forwarder run in the test's event loop; the simulated case
system is its own process over loopback HTTP. Each test prints its counts and asserts zero
accepted alarms lost and zero duplicate cases (cases per idempotency key, from the
simulator's own records at GET /_sim/cases).

Scaling of "down for an hour at 500 events/s" (1.8M events): 1,000 alarms plus 100 staff
acknowledgements are queued while the simulator answers 503 to everything (the forwarder
sees the outage the whole time: breaker open, trial requests), then it comes back. The
full-size drain rate is measured by ``python -m simulators.bench drain``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import pytest

from gateway.alarms import AlarmBook
from gateway.case_feedback import CaseFeedback, CaseStatusPoller
from gateway.forwarder import CaseForwarder
from gateway.metrics import Metrics
from gateway.site import load_site
from gateway.store import Store
from gateway.uplink.case_system import CaseSystemClient
from gateway.uplink.signing import Secret, signed_headers
from simulators.bench._backlog import fill_backlog
from tests.support import EXAMPLE, until

pytestmark = pytest.mark.integration




class Rig:
    def __init__(self, tmp_path, case_system, case_secret, *, window: int = 32,
                 timeout: float = 2.0):
        self.sim = case_system
        self.store = Store(tmp_path / "gateway.db")
        self.store.open()
        self.site = load_site(EXAMPLE)
        self.metrics = Metrics()
        self.book = AlarmBook(self.store, self.site, on_change=lambda ch: self.fwd.wake())
        self.client = CaseSystemClient(case_system.url, "tianlin-07", case_secret,
                                       timeout=timeout)
        self.fwd = CaseForwarder(self.store, self.client, self.metrics, window=window)
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> Rig:
        self.task = asyncio.create_task(self.fwd.run(), name="case-forwarder")
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task
        self.store.close()

    def faults(self, **body) -> None:
        r = httpx.post(f"{self.sim.url}/_sim/faults", json=body, timeout=5)
        assert r.status_code == 200, r.text

    def clear(self) -> None:
        httpx.delete(f"{self.sim.url}/_sim/faults", timeout=5).raise_for_status()

    def count(self, where: str) -> int:
        return self.store.query_one(f"SELECT count(*) AS n FROM outbox WHERE {where}")["n"]

    async def drained(self, timeout: float) -> None:
        await until(lambda: self.count("state='pending'") == 0, timeout, "outbox drained")

    def check_no_loss_no_duplicates(self, expected_alarms: int) -> dict:
        cases = self.sim.cases()
        keys = [c["idempotency_key"] for c in cases["cases"]]
        alarms = self.store.query("SELECT id, case_id, case_error FROM alarms")
        creates = {r["idempotency_key"]: r for r in self.store.query(
            "SELECT idempotency_key, alarm_id, state FROM outbox WHERE topic='case.create'")}
        lost = [a["id"] for a in alarms if a["case_id"] is None and a["case_error"] is None]
        dup = len(keys) - len(set(keys))
        counts = {"alarms": len(alarms), "cases": len(keys),
                  "create_requests": cases["create_requests_total"], "lost": len(lost),
                  "duplicate_cases": dup,
                  "cases_for_unknown_keys": len(set(keys) - set(creates))}
        print("counts:", json.dumps(counts))
        assert len(alarms) == expected_alarms
        assert lost == [] and dup == 0 and counts["cases_for_unknown_keys"] == 0
        return counts


def _counter(case_id: str) -> int:
    return int(re.fullmatch(r"GC\d{8}-(\d+)", case_id).group(1))


async def test_outage_backlog_is_delivered_first_in_order_soon_after_reconnection(
        tmp_path, case_system, case_secret):
    n, acks, later = 1000, 100, 20
    async with Rig(tmp_path, case_system, case_secret, window=32) as rig:
        rig.faults(mode="down")
        await fill_backlog(rig.book, n, per_tx=100, tag="outage")
        ids = [r["id"] for r in rig.store.query("SELECT id FROM alarms ORDER BY id")]
        for alarm_id in ids[::n // acks]:
            await rig.book.acknowledge(alarm_id, "duty-1", "called the resident")
        # the forwarder lives through the outage: breaker opens, trials keep failing
        await until(lambda: rig.fwd.breaker.state.value != "closed", 10, "breaker open")
        await until(lambda: rig.metrics.total("gateway_uplink_errors_total") >= 3, 10,
                    "repeated failed attempts")
        assert rig.count("state='pending'") == n + acks
        assert rig.sim.cases()["count"] == 0

        rig.clear()
        back = time.monotonic()
        await fill_backlog(rig.book, later, start=n, tag="outage-later")
        await until(lambda: rig.count("state='delivered'") > 0, 5.0,
                    "first queued case within 5 s of reconnection")
        first = time.monotonic() - back
        await rig.drained(90)
        drain = time.monotonic() - back

        counts = rig.check_no_loss_no_duplicates(n + later)
        rows = rig.store.query("SELECT a.id, a.key, a.case_id FROM alarms a ORDER BY a.id")
        by_case = sorted(rows, key=lambda r: _counter(r["case_id"]))
        order = [r["id"] for r in by_case]
        # dispatch is in outbox order; with 32 in flight, completion may reorder neighbours
        ranks = {a: k for k, a in enumerate(sorted(order))}
        displacement = max(abs(i - ranks[a]) for i, a in enumerate(order))
        queued_last = max(_counter(r["case_id"]) for r in rows if r["key"].startswith("outage:"))
        later_first = min(_counter(r["case_id"]) for r in rows
                          if r["key"].startswith("outage-later:"))
        updates = [u for c in rig.sim.cases()["cases"] for u in c["updates"]]
        print(f"outage: {n} alarms + {acks} acks queued; first case {first:.2f} s after "
              f"reconnection; backlog drained in {drain:.1f} s "
              f"({(n + acks + later) / drain:.0f} rows/s); max order displacement "
              f"{displacement}; create requests {counts['create_requests']}")
        assert first <= 5.0
        assert displacement <= 32
        assert queued_last < later_first, "queued alarms must reach the case system first"
        assert len(updates) == acks and all(u["applied"] and u["kind"] == "acknowledged"
                                            for u in updates)


async def test_garbage_5xx_timeouts_are_retried_4xx_is_surfaced_not_retried(
        tmp_path, case_system, case_secret):
    async with Rig(tmp_path, case_system, case_secret, window=8, timeout=1.0) as rig:
        phases = [
            ("garbage after apply", dict(mode="garbage", after_apply=True, count=5)),
            ("5xx half the time", dict(mode="error", status=500, rate=0.5, seed=7, count=15)),
            ("502 before apply", dict(mode="error", status=502, count=4)),
            ("timeout after apply", dict(mode="hang", delay_s=3, after_apply=True, count=2)),
        ]
        total = 0
        for i, (name, fault) in enumerate(phases):
            rig.faults(**fault)
            await fill_backlog(rig.book, 10, start=total, tag=f"retry{i}")
            total += 10
            await rig.drained(30)
            assert rig.count("state='failed'") == 0, name
        counts = rig.check_no_loss_no_duplicates(total)
        assert counts["create_requests"] > total  # retries really happened ...
        assert counts["cases"] == total           # ... and opened no second case

        # 4xx: refused once, surfaced on the alarm, not retried; the queue moves on
        rig.faults(mode="reject", status=422, count=1)
        await fill_backlog(rig.book, 5, start=total, tag="reject")
        await rig.drained(30)
        failed = rig.store.query("SELECT * FROM outbox WHERE state='failed'")
        assert len(failed) == 1 and failed[0]["attempts"] == 1
        alarm = rig.book.get(failed[0]["alarm_id"])
        assert alarm["case_id"] is None and alarm["case_error"].startswith("rejected")
        # its later update cannot go anywhere: surfaced too, not retried forever
        await rig.book.acknowledge(alarm["id"], "duty-1")
        await rig.drained(10)
        upd = rig.store.query_one("SELECT * FROM outbox WHERE alarm_id=? AND topic="
                                  "'case.update'", (alarm["id"],))
        assert upd["state"] == "failed" and upd["last_error"].startswith("no_case")
        assert rig.metrics.get("gateway_uplink_errors_total", uplink="case_system",
                               reason="rejected") == 1
        others = rig.store.query("SELECT case_id FROM alarms WHERE key LIKE 'reject:%' "
                                 "AND id != ?", (alarm["id"],))
        assert all(r["case_id"] for r in others) and len(others) == 4
        print("counts:", json.dumps({"refused_4xx": 1, "retried_then_delivered": total,
                                     "create_requests": rig.sim.cases()[
                                         "create_requests_total"]}))


async def test_case_status_comes_back_by_polling_and_callbacks_without_doubles(
        tmp_path, case_system, case_secret):
    async with Rig(tmp_path, case_system, case_secret) as rig:
        await fill_backlog(rig.book, 3, tag="poll")
        await rig.drained(10)
        alarm = rig.store.query_one("SELECT * FROM alarms ORDER BY id LIMIT 1")
        feedback = CaseFeedback(rig.store, "tianlin-07", case_secret, lambda ch: None)
        # one status arrives as a callback first (the simulator's own event id) ...
        body = json.dumps({"event_id": f"{alarm['case_id']}-e1", "case_id": alarm["case_id"],
                           "idempotency_key": "x" * 8, "status": "accepted",
                           "changed_at": "2024-05-01T08:00:00+08:00"}).encode()
        headers = signed_headers("tianlin-07", Secret(case_secret), "POST",
                                 "/api/case-callback", body)
        assert (await feedback.handle("POST", "/api/case-callback", headers, body)) == {
            "ok": True, "duplicate": False}
        # ... the rest only by polling (lifecycle: dispatched 0.5 s, on site 1 s, closed 1.5 s)
        poller = CaseStatusPoller(rig.store, CaseSystemClient(case_system.url, "tianlin-07",
                                                              case_secret),
                                  rig.metrics, lambda ch: None, interval_s=0.2)
        task = asyncio.create_task(poller.run(), name="case-status-poll")
        try:
            await until(lambda: all(a["case_status"] == "closed" for a in rig.store.query(
                "SELECT case_status FROM alarms")), 15, "every case closed, seen by polling")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        events = rig.store.query("SELECT detail FROM alarm_events WHERE action='case_status' "
                                 "AND alarm_id=?", (alarm["id"],))
        seen = [json.loads(e["detail"]) for e in events]
        print("status events:", [(s["status"], s["via"]) for s in seen])
        ids = [s["event_id"] for s in seen]
        assert len(ids) == len(set(ids)), "an event recorded twice"
        assert [s["status"] for s in seen] == ["accepted", "dispatched", "on_site", "closed"]
        assert seen[0]["via"] == "callback" and {s["via"] for s in seen[1:]} == {"poll"}
        handler = rig.book.get(alarm["id"], with_events=True)
        assert handler["case_status"] == "closed"


async def test_a_case_queued_while_a_slow_one_is_in_flight_goes_out_at_once(
        tmp_path, case_system, case_secret):
    """The case system takes 2 s over one request. An alarm raised meanwhile does not wait
    for it (a burst of alarms used to wait for the slowest request of each round): its case
    is created within 1.5 s (0.08 s here when quiet), the slow one's after it, each once."""
    async with Rig(tmp_path, case_system, case_secret) as rig:
        rig.faults(mode="slow", delay_s=2.0, count=1)
        await fill_backlog(rig.book, 1, tag="slow")
        # its request is in flight: received (counted before the slow fault's wait), no case
        await until(lambda: rig.sim.cases()["api_requests"] >= 1, 5, "the first request in")
        assert rig.sim.cases()["count"] == 0
        t0 = time.monotonic()
        await fill_backlog(rig.book, 1, start=1, tag="joins")
        await until(lambda: rig.sim.cases()["count"] >= 1, 1.5, "the second alarm's case")
        joined = time.monotonic() - t0
        first = [c["idempotency_key"] for c in rig.sim.cases()["cases"]]
        await rig.drained(10)
        counts = rig.check_no_loss_no_duplicates(2)
        print(f"second case {joined:.2f} s after its alarm, while the first waited 2 s")
        second_alarm = rig.store.query_one("SELECT id FROM alarms ORDER BY id DESC LIMIT 1")
        key = rig.store.query_one("SELECT idempotency_key FROM outbox WHERE alarm_id=? AND "
                                  "topic='case.create'", (second_alarm["id"],))
        assert first == [key["idempotency_key"]]            # the slow one came second
        assert counts["cases"] == 2


async def test_a_status_that_overtakes_the_reply_opening_its_case_is_kept(
        tmp_path, case_system, case_secret):
    """The case system opens a case and dispatches it (0.5 s) while the gateway is still busy
    recording the reply (here: held 1.5 s). Its status callback names a case id the gateway
    has not stored yet: the case's key finds the alarm, the card shows "dispatched" and the
    reply, recorded afterwards, neither moves it back nor opens a second case."""
    async with Rig(tmp_path, case_system, case_secret) as rig:
        release = asyncio.Event()
        record = rig.fwd._record

        async def slow_record(rows, outcomes):
            await release.wait()
            await record(rows, outcomes)

        rig.fwd._record = slow_record
        await fill_backlog(rig.book, 1, tag="overtake")
        await until(lambda: [c for c in rig.sim.cases()["cases"]
                             if c["status"] == "dispatched"], 10, "case dispatched")
        case = rig.sim.cases()["cases"][0]
        alarm = rig.store.query_one("SELECT * FROM alarms")
        assert alarm["case_id"] is None          # the reply is not recorded yet
        feedback = CaseFeedback(rig.store, "tianlin-07", case_secret, lambda ch: None)
        body = json.dumps({"event_id": f"{case['case_id']}-e2", "case_id": case["case_id"],
                           "idempotency_key": case["idempotency_key"],
                           "status": "dispatched", "handler": case["handler"],
                           "changed_at": "2024-05-01T08:00:00+08:00"}).encode()
        headers = signed_headers("tianlin-07", Secret(case_secret), "POST",
                                 "/api/case-callback", body)
        assert (await feedback.handle("POST", "/api/case-callback", headers, body)) == {
            "ok": True, "duplicate": False}
        card = rig.book.get(alarm["id"], with_events=True)
        assert (card["case_id"], card["case_status"]) == (case["case_id"], "dispatched")
        release.set()
        await rig.drained(10)
        card = rig.book.get(alarm["id"], with_events=True)
        assert (card["case_id"], card["case_status"]) == (case["case_id"], "dispatched")
        actions = [e["action"] for e in card["events"]]
        assert actions.count("case_created") == 1 and actions.count("case_status") == 1
        assert rig.sim.cases()["create_requests_total"] == 1
        # the same event again (the case system's retry) is a duplicate, as before
        assert (await feedback.handle("POST", "/api/case-callback", headers, body))[
            "duplicate"] is True
