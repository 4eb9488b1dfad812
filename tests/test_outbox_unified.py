"""One case outbox (issue 15): the service cases of help requests share ``outbox`` with the
alarms' cases (``kind``), and one forwarder sends both.

A store of the previous version (schema 5: help requests had their own ``help_outbox``)
upgrades to one outbox with every row carried over: pending service cases are still sent
(exactly once, by their old idempotency keys), a delivered create's update goes to its
case, a refused one is listed and queued again by ``gateway outbox --retry-failed``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3

import httpx

from gateway import forwarder
from gateway.forwarder import CaseForwarder
from gateway.kernel.resilience import CircuitBreaker
from gateway.metrics import Metrics
from gateway.store import SCHEMA_VERSION, Store, outbox, schema
from gateway.store import help as help_rows
from gateway.uplink.case_system import CaseSystemClient
from simulators.contract import Contract
from tests.support import until

SECRET = "test-secret-0123456789abcdef"
T = "2026-12-06T09:00:00+00:00"
SERVICE_CREATE = {
    "site_id": "tianlin-07", "grid_cell_code": "310104-012-03",
    "household": {"id": "h-7-101", "address": "田林路200弄7号101室"},
    "category": "service", "severity": "info", "title": "求助：助餐",
    "description": "Help request: Meals", "occurred_at": "2026-12-06T17:00:00+08:00",
    "service": {"category": "meal", "name": "助餐", "channel": "caller_key"},
    "callback_url": None,
}


def _version5_store(path) -> None:
    """What the previous version left: three help requests with their help_outbox rows
    (request 1 pending create; request 2 delivered create + pending 'resolved' update as
    that version wrote it, without a reason; request 3 refused) and an alarm's row."""
    conn = sqlite3.connect(path, isolation_level=None)
    schema.migrate(conn, schema.MIGRATIONS[:5])
    for hid in (1, 2, 3):
        conn.execute("INSERT INTO help_requests (category, household_id, grid_cell, channel, "
                     "state, created_by, created_at, case_id, case_error) VALUES "
                     "('meal', 'h-7-101', '310104-012-03', 'caller_key', 'received', "
                     "'device', ?, ?, ?)", (T, "GC-OLD-2" if hid == 2 else None,
                                            "validation_error" if hid == 3 else None))

    def row(hid: int, n: int, topic: str, payload: dict, state: str = "pending",
            error: str | None = None) -> None:
        key = f"tianlin-07-i1-help-{hid}-{n}"
        conn.execute("INSERT INTO help_outbox (help_id, topic, idempotency_key, payload, "
                     "state, attempts, last_error, created_at) VALUES (?,?,?,?,?,?,?,?)",
                     (hid, topic, key, json.dumps(dict(payload, idempotency_key=key,
                                                       sequence=n), ensure_ascii=False),
                      state, 1 if state != "pending" else 0, error, T))

    row(1, 0, "case.create", SERVICE_CREATE)
    row(2, 0, "case.create", SERVICE_CREATE, "delivered")
    row(2, 1, "case.update", {"event": "resolved", "at": T, "note": "送餐到家", "by": "duty"})
    row(3, 0, "case.create", SERVICE_CREATE, "failed", "validation_error: category")
    conn.execute("INSERT INTO outbox (alarm_id, topic, idempotency_key, payload, created_at,"
                 " state) VALUES (7, 'case.create', 'tianlin-07-i1-7-0', '{}', ?, "
                 "'delivered')", (T,))
    conn.close()


class Wire:
    def __init__(self) -> None:
        self.contract = Contract.load()
        self.sent: list[tuple[str, dict]] = []
        self.problems: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        update = request.url.path.endswith("/updates")
        schema_name = "CaseUpdate" if update else "CaseCreate"
        self.problems += [p for _, p in self.contract.problems(schema_name, body)]
        self.sent.append((request.url.path, body))
        if update:
            return httpx.Response(201, json={"case_id": request.url.path.split("/")[4],
                                             "update_id": "u", "sequence": body["sequence"],
                                             "applied": True, "status": "closed"})
        return httpx.Response(201, json={"case_id": f"GC-{body['idempotency_key']}",
                                         "status": "accepted"})


async def test_a_version5_store_s_help_outbox_is_carried_into_the_one_outbox(tmp_path):
    db = tmp_path / "gateway.db"
    _version5_store(db)
    store = Store(db)
    store.open()
    try:
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        conn.close()
        assert "help_outbox" not in names
        rows = store.query("SELECT kind, alarm_id, help_id, topic, idempotency_key, state "
                           "FROM outbox ORDER BY seq")
        assert rows == [
            {"kind": "alarm", "alarm_id": 7, "help_id": None, "topic": "case.create",
             "idempotency_key": "tianlin-07-i1-7-0", "state": "delivered"},
            *({"kind": "service", "alarm_id": None, "help_id": h, "topic": t,
               "idempotency_key": f"tianlin-07-i1-help-{h}-{n}", "state": s}
              for h, n, t, s in ((1, 0, "case.create", "pending"),
                                 (2, 0, "case.create", "delivered"),
                                 (2, 1, "case.update", "pending"),
                                 (3, 0, "case.create", "failed")))]
        assert outbox.pending_count(store) == outbox.pending_count(store, outbox.SERVICE) == 2
        assert [(r["kind"], r["help_id"]) for r in outbox.failed(store)] == [("service", 3)]
        # a new request's rows number on after the carried ones
        await store.write(lambda c: outbox.enqueue(c, 2, "case.update", {
            "event": "note", "at": T, "note": "回访", "by": "duty"}, T, "tianlin-07-i1",
            outbox.SERVICE))
        assert store.query_one("SELECT idempotency_key FROM outbox ORDER BY seq DESC LIMIT 1"
                               )["idempotency_key"] == "tianlin-07-i1-help-2-2"

        wire = Wire()
        client = CaseSystemClient("http://cases.test", "tianlin-07", SECRET,
                                  transport=httpx.MockTransport(wire))
        fwd = CaseForwarder(store, client, Metrics())
        async with client:
            for _ in range(10):
                if outbox.pending_count(store) == 0:
                    break
                await fwd.step()
            assert outbox.pending_count(store) == 0
            assert wire.problems == []
            paths = [p for p, _ in wire.sent]
            assert paths.count("/api/v1/cases") == 1                 # request 1's case, once
            assert paths.count("/api/v1/cases/GC-OLD-2/updates") == 2
            resolved = next(b for p, b in wire.sent if b.get("kind") == "resolved")
            assert resolved["reason"] == "handled"     # mended: the old row had no reason
            assert help_rows.get(store, 1)["case_id"] == "GC-tianlin-07-i1-help-1-0"
            assert help_rows.get(store, 2)["case_status"] == "closed"
            # the refused one: queued again (gateway outbox --retry-failed), then sent
            assert await store.write(outbox.requeue_failed) == 1
            assert help_rows.get(store, 3)["case_error"] is None
            await fwd.step()
        assert help_rows.get(store, 3)["case_id"] == "GC-tianlin-07-i1-help-3-0"
        assert outbox.pending_count(store) == 0
    finally:
        store.close()


def _help_request(conn: sqlite3.Connection) -> None:
    help_id = help_rows.insert(conn, category="meal", household_id="h-7-101",
                               grid_cell="310104-012-03", device_id=None, channel="caller_key",
                               note="", actor="t", now=T, request_key=None)
    outbox.enqueue(conn, help_id, "case.create", SERVICE_CREATE, T, "tianlin-07-i1",
                   outbox.SERVICE)


def _slow_record(fwd: CaseForwarder) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold the forwarder's record of each round until ``release``: (recording, release)."""
    recording, release = asyncio.Event(), asyncio.Event()
    real_record = fwd._record

    async def slow_record(rows, outcomes) -> None:
        recording.set()
        await release.wait()
        await real_record(rows, outcomes)

    fwd._record = slow_record  # type: ignore[method-assign]
    return recording, release


async def _first_round_held(store: Store, fwd: CaseForwarder
                            ) -> tuple[asyncio.Task[int], asyncio.Event]:
    """One request's case sent, its record held: (the step, the release of its record)."""
    recording, release = _slow_record(fwd)
    await store.write(_help_request)
    step = asyncio.create_task(fwd.step())
    await asyncio.wait_for(recording.wait(), 5)
    return step, release


async def test_a_case_queued_while_the_last_round_is_recorded_goes_out_at_once(tmp_path):
    """The forwarder records a round's outcomes in a commit (5-30 ms under load); a case
    queued meanwhile is sent during that commit, not after it, and is sent once: the next
    round starts with it in flight and records it."""
    store = Store(tmp_path / "gateway.db")
    store.open()
    request = _help_request
    wire = Wire()
    client = CaseSystemClient("http://cases.test", "tianlin-07", SECRET,
                              transport=httpx.MockTransport(wire))
    fwd = CaseForwarder(store, client, Metrics())
    try:
        async with client:
            step, release = await _first_round_held(store, fwd)
            assert len(wire.sent) == 1
            await store.write(request)
            fwd.wake()
            await until(lambda: len(wire.sent) == 2, 5, "the second case, during the commit")
            release.set()
            assert await asyncio.wait_for(step, 5) == 1
            assert outbox.pending_count(store) == 1         # sent, its outcome not recorded
            assert await asyncio.wait_for(fwd.step(), 5) == 1
            assert outbox.pending_count(store) == 0
            assert [p for p, _ in wire.sent] == ["/api/v1/cases"] * 2    # each once
            assert help_rows.get(store, 2)["case_id"] == "GC-tianlin-07-i1-help-2-0"
    finally:
        store.close()


async def test_cases_sent_during_a_record_as_the_case_system_fails_are_kept_and_sent_again(
        tmp_path):
    """Two cases go out during the last round's record and the case system fails them (its
    breaker opens): the next step records their outcome at once (no case lost, no task left,
    the status says so), sends nothing more to the open breaker, and once the system is
    back each is created once."""
    store = Store(tmp_path / "gateway.db")
    store.open()
    wire = Wire()
    down = [False]

    def handler(request: httpx.Request) -> httpx.Response:
        if down[0]:
            wire.sent.append((request.url.path, json.loads(request.content)))
            return httpx.Response(503, json={"error": "maintenance"})
        return wire(request)

    client = CaseSystemClient("http://cases.test", "tianlin-07", SECRET,
                              transport=httpx.MockTransport(handler))
    fwd = CaseForwarder(store, client, Metrics(),
                        breaker=CircuitBreaker(failure_threshold=2, reset_timeout_s=0.5))
    try:
        async with client:
            step, release = await _first_round_held(store, fwd)
            down[0] = True
            await store.write(_help_request)
            await store.write(_help_request)
            fwd.wake()
            await until(lambda: len(wire.sent) == 3, 5, "two cases sent during the record")
            release.set()
            assert await asyncio.wait_for(step, 5) == 1
            assert await asyncio.wait_for(fwd.step(), 5) == 2       # their outcomes
            assert fwd._carry == {} and fwd.state.startswith("retrying")
            assert outbox.pending_count(store) == 2 and len(wire.sent) == 3
            down[0] = False
            for _ in range(20):
                if outbox.pending_count(store) == 0:
                    break
                await asyncio.wait_for(fwd.step(), 10)
            assert outbox.pending_count(store) == 0
            created = [b["idempotency_key"] for p, b in wire.sent[3:]]
            assert sorted(created) == ["tianlin-07-i1-help-2-0", "tianlin-07-i1-help-3-0"]
            assert fwd.state == "ok"
    finally:
        store.close()


async def test_a_new_alarm_s_case_is_urgent_until_its_request_is_answered(tmp_path,
                                                                         monkeypatch):
    """``urgent()`` holds the MQTT intake's main session back (drivers/mqtt.py alarm_first):
    from a new alarm's wake until a send is answered, 100 ms at most, and never for other
    wakes or while the case system fails."""
    store = Store(tmp_path / "gateway.db")
    store.open()
    answer = asyncio.Event()
    wire = Wire()

    async def held(request: httpx.Request) -> httpx.Response:
        await answer.wait()
        return wire(request)

    client = CaseSystemClient("http://cases.test", "tianlin-07", SECRET,
                              transport=httpx.MockTransport(held))
    fwd = CaseForwarder(store, client, Metrics())
    monkeypatch.setattr(forwarder, "URGENT_S", 5.0)     # (a loaded machine's slow step)
    try:
        async with client:
            fwd.wake()                        # an acknowledgement, an escalation: not urgent
            assert not fwd.urgent()
            await store.write(_help_request)
            fwd.wake(urgent=True)
            assert fwd.urgent()
            step = asyncio.create_task(fwd.step())
            await asyncio.sleep(0.05)
            assert fwd.urgent() and not wire.sent          # on its way, not answered
            answer.set()
            assert await asyncio.wait_for(step, 5) == 1
            assert not fwd.urgent() and len(wire.sent) == 1    # answered
            fwd.wake(urgent=True)             # a test alarm: raised, no case to send
            assert fwd.urgent()
            idle = asyncio.create_task(fwd.step())
            await until(lambda: not fwd.urgent(), 5, "nothing to send: not urgent")
            fwd.wake()
            assert await asyncio.wait_for(idle, 5) == 0
            monkeypatch.setattr(forwarder, "URGENT_S", 0.05)
            fwd.wake(urgent=True)
            await asyncio.sleep(0.1)
            assert not fwd.urgent()           # URGENT_S at most, answered or not
            fwd.wake(urgent=True)
            assert fwd.urgent()               # the next alarm's
            for _ in range(3):
                fwd.breaker.record_failure()
            assert not fwd.urgent()           # the case system failing: telemetry goes on
    finally:
        store.close()
