"""The grid case-system uplink: client, backoff, breaker, and the simulator over real HTTP.

Integration tests run the simulator (and a tiny callback receiver) with uvicorn on free
loopback ports in background threads; nothing is mocked at the transport there. Waits are on
conditions with deadlines, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import select
import shutil
import ssl
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from pydantic import ValidationError

from gateway import UplinkError
from gateway.uplink import PermanentUplinkError, RetryableUplinkError
from gateway.uplink.case_system import (Backoff, BreakerState, CaseCategory, CaseCreate,
                                        CaseStatus, CaseSystemClient, CaseUpdate,
                                        CircuitBreaker, HmacAuth, ResolutionReason,
                                        UpdateKind, decode_callback)
from gateway.uplink.signing import Secret, SignatureError, Verifier, asgi_target
from simulators.case_system import LifecycleDelays, create_app
from tests.support import wait_for

ROOT = Path(__file__).resolve().parents[1]
KEY_ID = "test-gateway"
SECRET = Secret("test-secret-0123456789abcdef")
GRID_CELL = "310104-012-03"
FAST = LifecycleDelays(dispatch_s=0.05, on_site_s=0.05, close_s=0.05)
SLOW = LifecycleDelays(dispatch_s=3600, on_site_s=3600, close_s=3600)


# ------------------------------------------------------------------------- helpers

class ServerThread:
    """An ASGI app served by uvicorn on a free 127.0.0.1 port in a daemon thread."""

    def __init__(self, app: Any, name: str, **tls: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                                    timeout_graceful_shutdown=2, **tls))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name=name, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), 10,
                 interval=0.005, what="server start")
        assert self.server.started, "server thread died during start-up"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()
        assert not self.thread.is_alive(), "server thread did not stop"


async def eventually(cond: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


class Receiver:
    """The gateway's side of callbacks, reduced to: verify, parse, record."""

    def __init__(self, secret: Secret = SECRET) -> None:
        self.verifier = Verifier({KEY_ID: secret})
        self.received: list[Any] = []
        self.refused: list[str] = []
        self.app = FastAPI()

        @self.app.post("/case-callbacks")
        async def callback(request: Request) -> Response:
            body = await request.body()
            try:
                cb = decode_callback(self.verifier, method=request.method,
                                     target=asgi_target(request.scope),
                                     headers=request.headers, body=body)
            except SignatureError as e:
                self.refused.append(e.reason)
                return Response(status_code=401)
            self.received.append(cb)
            return Response(status_code=204)


class Sim:
    """A running simulator: its URL, its app, and the unsigned admin API."""

    def __init__(self, url: str, app: FastAPI) -> None:
        self.url, self.app = url, app

    async def admin(self, method: str, path: str, json: Any = None) -> Any:
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as http:
            resp = await http.request(method, path, json=json)
            resp.raise_for_status()
            return resp.json()

    async def faults(self, **faults: Any) -> None:
        await self.admin("POST", "/_sim/faults", faults)

    def client(self, **kw: Any) -> CaseSystemClient:
        kw.setdefault("timeout", 5.0)
        return CaseSystemClient(self.url, kw.pop("key_id", KEY_ID), kw.pop("secret", SECRET),
                                **kw)


@pytest.fixture
def start_sim() -> Iterator[Callable[..., Sim]]:
    with contextlib.ExitStack() as stack:
        def start(**kw: Any) -> Sim:
            kw.setdefault("delays", SLOW)
            app = create_app(SECRET, KEY_ID, **kw)
            server = stack.enter_context(ServerThread(app, "case-sim"))
            # runs before the server stops: releases requests parked in a HANG fault
            stack.callback(lambda: httpx.post(f"{server.url}/_sim/reset", timeout=5))
            return Sim(server.url, app)
        yield start


@pytest.fixture
def sim(start_sim: Callable[..., Sim]) -> Sim:
    return start_sim()


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    r = Receiver()
    with ServerThread(r.app, "callback-receiver") as server:
        yield r, f"{server.url}/case-callbacks"


_keys = iter(range(1, 10**9))


def case_payload(key: str | None = None, **over: Any) -> CaseCreate:
    data: dict[str, Any] = {
        "idempotency_key": key or f"alarm-{os.getpid()}-{next(_keys):06d}",
        "site_id": "site-fenglin", "grid_cell_code": GRID_CELL,
        "household": {"id": "B3-1202", "address": "枫林路 12 弄 3 号 1202 室"},
        "category": "emergency_call", "severity": "critical",
        "title": "紧急呼叫 / Emergency call", "description": "SOS button pressed",
        "occurred_at": datetime(2024, 5, 1, 8, 30, tzinfo=timezone(timedelta(hours=8))),
        "device": {"id": "sos-0042", "type": "emergency_caller"},
    }
    data.update(over)
    return CaseCreate.model_validate(data)


def update(seq: int, kind: UpdateKind = UpdateKind.ACKNOWLEDGED, key: str | None = None,
           **over: Any) -> CaseUpdate:
    return CaseUpdate(idempotency_key=key or f"upd-{next(_keys):06d}-{seq}", sequence=seq,
                      kind=kind, occurred_at=datetime.now(timezone.utc), **over)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, s: float) -> None:
        self.now += s


# ------------------------------------------------------------------------- unit: values

def test_backoff_is_capped_full_jitter_and_repeatable() -> None:
    b = Backoff(base_s=1.0, cap_s=30.0, rng=random.Random(7))
    again = Backoff(base_s=1.0, cap_s=30.0, rng=random.Random(7))
    for attempt in range(200):
        d = b.delay(attempt)
        assert 0.0 <= d <= min(30.0, 2.0 ** attempt)
        assert d == again.delay(attempt)
    assert Backoff(rng=random.Random(1)).delay(0, at_least=12.0) == 12.0
    assert Backoff(cap_s=5.0).delay(3, at_least=60.0) == 5.0   # Retry-After never beats cap
    with pytest.raises(ValueError):
        Backoff(base_s=10, cap_s=1)


def test_breaker_opens_after_threshold_and_half_opens_after_reset() -> None:
    clock = FakeClock()
    br = CircuitBreaker(failure_threshold=3, reset_timeout_s=10, clock=clock)
    for _ in range(2):
        assert br.allow()
        br.record_failure()
    assert br.state is BreakerState.CLOSED
    br.record_failure()
    assert br.state is BreakerState.OPEN and not br.allow()
    clock.advance(9.9)
    assert not br.allow() and br.retry_in() == pytest.approx(0.1)
    clock.advance(0.1)
    assert br.state is BreakerState.HALF_OPEN
    assert br.allow() and not br.allow()          # one trial at a time
    br.record_failure()                             # trial failed: open again, full timeout
    assert br.state is BreakerState.OPEN
    clock.advance(10)
    assert br.allow()
    br.record_success()
    assert br.state is BreakerState.CLOSED and br.allow() and br.allow()


def test_breaker_trial_slot_frees_when_trial_never_reports() -> None:
    clock = FakeClock()
    br = CircuitBreaker(failure_threshold=1, reset_timeout_s=5, clock=clock)
    br.record_failure()
    clock.advance(5)
    assert br.allow() and not br.allow()   # the trial's task is cancelled and never reports
    clock.advance(5)
    assert br.allow()


def test_success_resets_the_failure_count() -> None:
    br = CircuitBreaker(failure_threshold=2, reset_timeout_s=5, clock=FakeClock())
    br.record_failure()
    br.record_success()
    br.record_failure()
    assert br.state is BreakerState.CLOSED


def test_models_check_what_crosses_the_boundary() -> None:
    with pytest.raises(ValidationError, match="reason is required"):
        update(1, UpdateKind.RESOLVED)
    assert update(1, UpdateKind.RESOLVED, reason=ResolutionReason.FALSE_ALARM).reason == "false_alarm"
    with pytest.raises(ValidationError, match="timezone"):
        case_payload(occurred_at=datetime(2024, 5, 1, 8, 30))
    with pytest.raises(ValidationError, match="grid_cell_code"):
        case_payload(grid_cell_code="grid 3")
    # unknown fields from a newer peer are ignored, not fatal
    assert case_payload(shiny_new_field=1).category is CaseCategory.EMERGENCY_CALL


def test_exceptions_are_uplink_errors_with_status_and_reason() -> None:
    r = RetryableUplinkError("timeout")
    p = PermanentUplinkError("validation_error", status=422, field="title", detail="too long")
    assert isinstance(r, UplinkError) and isinstance(p, UplinkError)
    assert not isinstance(r, PermanentUplinkError) and not isinstance(p, RetryableUplinkError)
    assert (r.status, r.reason, r.retry_after) == (None, "timeout", None)
    assert (p.status, p.reason, p.field) == (422, "validation_error", "title")
    assert "HTTP 422" in str(p)


def test_client_repr_hides_the_secret() -> None:
    c = CaseSystemClient("https://cases.example.invalid", KEY_ID, "very-secret-value-123456")
    assert "very-secret" not in repr(c) and "very-secret" not in repr(c._auth)


async def test_client_maps_odd_replies_without_a_server() -> None:
    """Replies the simulator does not produce: a redirect, a non-JSON 503, a 408."""
    replies = iter([httpx.Response(302, headers={"Location": "/elsewhere"}),
                    httpx.Response(503, text="<html>bad gateway</html>",
                                   headers={"Retry-After": "7"}),
                    httpx.Response(408)])
    transport = httpx.MockTransport(lambda request: next(replies))
    async with CaseSystemClient("http://cases.test", KEY_ID, SECRET,
                                transport=transport) as c:
        with pytest.raises(PermanentUplinkError) as p:
            await c.get_case("C1")
        assert (p.value.status, p.value.reason) == (302, "http_302")
        with pytest.raises(RetryableUplinkError) as r:
            await c.get_case("C1")
        assert (r.value.status, r.value.reason, r.value.retry_after) == (503, "http_503", 7.0)
        with pytest.raises(RetryableUplinkError) as r:
            await c.get_case("C1")
        assert r.value.status == 408


async def test_client_outside_context_manager_is_a_programming_error() -> None:
    with pytest.raises(RuntimeError, match="async with"):
        await CaseSystemClient("http://cases.test", KEY_ID, SECRET).get_case("C1")


# ------------------------------------------------------------------------- integration

async def test_create_then_retry_returns_same_case_and_one_case(sim: Sim) -> None:
    payload = case_payload()
    async with sim.client() as c:
        first = await c.create_case(payload)
        again = await c.create_case(payload)
    assert first.created and first.status is CaseStatus.ACCEPTED
    assert (again.case_id, again.created) == (first.case_id, False)
    report = await sim.admin("GET", "/_sim/cases")
    assert report["count"] == 1
    assert report["cases"][0]["create_requests"] == 2
    assert report["cases"][0]["idempotency_key"] == payload.idempotency_key


async def test_concurrent_retries_open_exactly_one_case(sim: Sim) -> None:
    payload = case_payload()
    async with sim.client() as c:
        refs = await asyncio.gather(*(c.create_case(payload) for _ in range(8)))
    assert len({r.case_id for r in refs}) == 1
    assert sum(r.created for r in refs) == 1
    report = await sim.admin("GET", "/_sim/cases")
    assert (report["count"], report["create_requests_total"]) == (1, 8)


async def test_reply_lost_after_apply_then_retry_gets_the_same_case(sim: Sim) -> None:
    payload = case_payload()
    await sim.faults(mode="garbage", after_apply=True, count=1)
    async with sim.client() as c:
        with pytest.raises(RetryableUplinkError) as e:
            await c.create_case(payload)
        assert (e.value.reason, e.value.status) == ("bad_reply", 200)
        ref = await c.create_case(payload)
    assert not ref.created
    report = await sim.admin("GET", "/_sim/cases")
    assert report["count"] == 1 and report["cases"][0]["case_id"] == ref.case_id


async def test_same_key_for_a_different_alarm_is_a_permanent_conflict(sim: Sim) -> None:
    async with sim.client() as c:
        await c.create_case(case_payload("alarm-conflict-1"))
        # a re-rendered title is still the same alarm
        same = await c.create_case(case_payload("alarm-conflict-1", title="new wording"))
        assert not same.created
        with pytest.raises(PermanentUplinkError) as e:
            await c.create_case(case_payload("alarm-conflict-1", device={"id": "sos-9",
                                                                          "type": "x"}))
    assert (e.value.status, e.value.reason, e.value.field) == (
        409, "idempotency_conflict", "idempotency_key")


async def test_wrong_secret_and_skewed_clock_are_retryable_401s(sim: Sim) -> None:
    # A Pi has no real-time clock: until NTP syncs, every request is stale. That is fixed by
    # fixing the clock or the key, not by giving the alarm up, so 401 is retried (slowly).
    async with sim.client(secret="not-the-shared-secret-at-all") as c:
        with pytest.raises(RetryableUplinkError) as e:
            await c.create_case(case_payload())
    assert (e.value.status, e.value.reason) == (401, "bad_signature")
    async with sim.client(clock=lambda: time.time() - 1000) as c:
        with pytest.raises(RetryableUplinkError) as e:
            await c.get_case("GC-anything")
    assert (e.value.status, e.value.reason) == (401, "stale_timestamp")
    assert "window 300 s" in e.value.detail
    assert (await sim.admin("GET", "/_sim/cases"))["count"] == 0


async def test_unsigned_request_gets_a_json_401_naming_the_reason(sim: Sim) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as http:
        resp = await http.post("/api/v1/cases", content=case_payload().model_dump_json())
    assert resp.status_code == 401
    assert resp.json() == {"error": "missing_header", "detail": "X-Key-Id header is required"}


@pytest.mark.parametrize(("mutate", "status", "error", "field"), [
    (lambda d: d["household"].pop("address"), 422, "validation_error", "household.address"),
    (lambda d: d.update(grid_cell_code="nowhere"), 422, "validation_error", "grid_cell_code"),
    (lambda d: d.update(severity="apocalyptic"), 422, "validation_error", "severity"),
    (lambda d: d.update(occurred_at="2024-05-01T08:30:00"), 422, "validation_error",
     "occurred_at"),
])
async def test_validation_errors_name_the_field(sim: Sim, mutate: Callable[[dict], Any],
                                                status: int, error: str, field: str) -> None:
    data = case_payload().model_dump(mode="json")
    mutate(data)
    async with httpx.AsyncClient(base_url=sim.url, auth=HmacAuth(KEY_ID, SECRET)) as http:
        resp = await http.post("/api/v1/cases", json=data)
    assert resp.status_code == status
    body = resp.json()
    assert (body["error"], body["field"]) == (error, field)
    assert field in body["detail"]


async def test_body_that_is_not_json_is_a_400(sim: Sim) -> None:
    async with httpx.AsyncClient(base_url=sim.url, auth=HmacAuth(KEY_ID, SECRET)) as http:
        resp = await http.post("/api/v1/cases", content=b"{not json")
    assert (resp.status_code, resp.json()["error"]) == (400, "invalid_json")


async def test_invalid_payload_through_the_client_is_permanent_with_field(sim: Sim) -> None:
    bad = case_payload().model_copy(update={"grid_cell_code": "nowhere"})  # skips validation
    async with sim.client() as c:
        with pytest.raises(PermanentUplinkError) as e:
            await c.create_case(bad)
    assert (e.value.status, e.value.reason, e.value.field) == (
        422, "validation_error", "grid_cell_code")


@pytest.mark.parametrize(("faults", "status", "reason"), [
    ({"mode": "down"}, 503, "unavailable"),
    ({"mode": "error"}, 500, "internal_error"),
    ({"mode": "error", "status": 502}, 502, "internal_error"),
    ({"mode": "reject", "status": 429}, 429, "rejected"),
    ({"mode": "reject", "status": 408}, 408, "rejected"),
    ({"mode": "garbage"}, 200, "bad_reply"),
    ({"mode": "hang", "delay_s": 10}, None, "timeout"),
])
async def test_client_maps_server_trouble_to_retryable(sim: Sim, faults: dict, status: int | None,
                                                       reason: str) -> None:
    await sim.faults(**faults)
    async with sim.client(timeout=0.3) as c:
        with pytest.raises(RetryableUplinkError) as e:
            await c.create_case(case_payload())
    assert (e.value.status, e.value.reason) == (status, reason)
    if faults["mode"] == "down":
        assert e.value.retry_after == 1.0


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_client_maps_refusals_to_permanent(sim: Sim, status: int) -> None:
    await sim.faults(mode="reject", status=status)
    async with sim.client() as c:
        with pytest.raises(PermanentUplinkError) as e:
            await c.create_case(case_payload())
    assert (e.value.status, e.value.reason) == (status, "rejected")


async def test_connection_refused_is_retryable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # nobody listens there now
    async with CaseSystemClient(f"http://127.0.0.1:{port}", KEY_ID, SECRET, timeout=2) as c:
        with pytest.raises(RetryableUplinkError) as e:
            await c.get_case("C1")
    assert (e.value.status, e.value.reason) == (None, "connect_error")


async def test_slow_server_within_timeout_is_fine(sim: Sim) -> None:
    await sim.faults(mode="slow", delay_s=0.2, count=1)
    async with sim.client(timeout=5) as c:
        assert (await c.create_case(case_payload())).created


async def test_cancellation_propagates_and_frees_the_breaker_trial(sim: Sim) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=5, clock=clock)
    breaker.record_failure()
    clock.advance(5)                                   # half-open: the next call is the trial
    await sim.faults(mode="hang", delay_s=30)
    async with sim.client(breaker=breaker) as c:
        task = asyncio.create_task(c.create_case(case_payload()), name="trial-create")

        async def arrived() -> bool:
            return (await sim.admin("GET", "/_sim/cases"))["api_requests"] == 1
        await eventually(arrived, 10, "the trial request at the simulator")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(RetryableUplinkError, match="circuit_open"):
            await c.get_case("C1")                     # the trial slot is still taken
        clock.advance(5)
        await sim.admin("DELETE", "/_sim/faults")
        with pytest.raises(PermanentUplinkError):      # slot freed: a call goes out
            await c.get_case("C1")
    assert breaker.state is BreakerState.CLOSED


async def test_breaker_stops_calls_then_half_opens_after_reset(sim: Sim) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout_s=30, clock=clock)
    await sim.faults(mode="down")
    async with sim.client(breaker=breaker) as c:
        for _ in range(2):
            with pytest.raises(RetryableUplinkError, match="unavailable"):
                await c.create_case(case_payload())
        assert breaker.state is BreakerState.OPEN
        with pytest.raises(RetryableUplinkError) as e:
            await c.create_case(case_payload())
        assert e.value.reason == "circuit_open"
        assert (await sim.admin("GET", "/_sim/cases"))["api_requests"] == 2  # not sent
        await sim.admin("DELETE", "/_sim/faults")
        clock.advance(30)
        assert breaker.state is BreakerState.HALF_OPEN
        assert (await c.create_case(case_payload())).created
        assert breaker.state is BreakerState.CLOSED


async def test_updates_are_idempotent_and_stale_sequences_ignored(sim: Sim) -> None:
    async with sim.client() as c:
        case = await c.create_case(case_payload())
        ack = update(1, key="upd-ack-000001")
        first = await c.update_case(case.case_id, ack)
        replay = await c.update_case(case.case_id, ack)
        assert first.applied and first.created
        assert (replay.update_id, replay.created, replay.applied) == (first.update_id, False, True)
        note = await c.update_case(case.case_id, update(3, UpdateKind.NOTE, note="called family"))
        stale = await c.update_case(case.case_id, update(2, UpdateKind.NOTE))
        assert note.applied and not stale.applied
        assert (await c.get_case(case.case_id)).last_sequence == 3
        done = await c.update_case(case.case_id, update(
            4, UpdateKind.RESOLVED, reason=ResolutionReason.FALSE_ALARM, note="pressed by child"))
        assert done.status is CaseStatus.CLOSED
        view = await c.get_case(case.case_id)
        assert view.status is CaseStatus.CLOSED and "false_alarm" in view.events[-1].note
        with pytest.raises(PermanentUplinkError) as e:
            await c.update_case("GC-missing", update(1))
    assert (e.value.status, e.value.reason) == (404, "not_found")
    log = (await sim.admin("GET", "/_sim/cases"))["cases"][0]["updates"]
    assert [(u["sequence"], u["applied"]) for u in log] == [(1, True), (3, True), (2, False),
                                                             (4, True)]


async def test_lifecycle_reaches_closed_with_signed_callbacks(
        start_sim: Callable[..., Sim], receiver: tuple[Receiver, str]) -> None:
    rcv, url = receiver
    sim = start_sim(delays=FAST, grid_members={GRID_CELL: "王芳"})
    async with sim.client() as c:
        ref = await c.create_case(case_payload(callback_url=url))

        async def closed() -> bool:
            return any(cb.status is CaseStatus.CLOSED for cb in rcv.received)
        await eventually(closed, 10, "the closed callback")
        view = await c.get_case(ref.case_id)
        changed = await c.cases_updated_since(view.created_at - timedelta(seconds=1))
    assert [cb.status for cb in rcv.received] == [CaseStatus.DISPATCHED, CaseStatus.ON_SITE,
                                                  CaseStatus.CLOSED]
    assert {cb.handler for cb in rcv.received} == {"王芳"}
    assert {cb.case_id for cb in rcv.received} == {ref.case_id}
    assert len({cb.event_id for cb in rcv.received}) == 3 and rcv.refused == []
    assert view.status is CaseStatus.CLOSED and view.handler == "王芳"
    assert [e.status for e in view.events] == ["accepted", "dispatched", "on_site", "closed"]
    assert [v.case_id for v in changed] == [ref.case_id]


async def test_duplicate_callbacks_are_detectable_by_event_id(
        start_sim: Callable[..., Sim], receiver: tuple[Receiver, str]) -> None:
    rcv, url = receiver
    sim = start_sim(delays=FAST)
    await sim.faults(duplicate_callbacks=True)
    async with sim.client() as c:
        await c.create_case(case_payload(callback_url=url))

    async def all_in() -> bool:
        return len(rcv.received) == 6
    await eventually(all_in, 10, "six callback deliveries")
    unique = {cb.event_id: cb for cb in rcv.received}
    assert [cb.status for cb in unique.values()] == ["dispatched", "on_site", "closed"]
    log = (await sim.admin("GET", "/_sim/callbacks"))["deliveries"]
    assert sum(d["duplicate"] for d in log) == 3 and all(d["delivered"] for d in log)


async def test_callbacks_with_a_foreign_secret_are_refused_by_the_receiver(
        start_sim: Callable[..., Sim]) -> None:
    rcv = Receiver(secret=Secret("the-gateway-expects-another-one"))
    with ServerThread(rcv.app, "callback-receiver") as server:
        sim = start_sim(delays=FAST, callback_attempts=2)
        async with sim.client() as c:
            await c.create_case(case_payload(callback_url=f"{server.url}/case-callbacks"))

        async def given_up() -> bool:
            log = (await sim.admin("GET", "/_sim/callbacks"))["deliveries"]
            return len(log) == 3 and all(d["attempts"] == 2 for d in log)
        await eventually(given_up, 10, "three undelivered callbacks")
    assert rcv.received == [] and set(rcv.refused) == {"bad_signature"}


async def test_forced_rejection_is_reported_and_final(
        start_sim: Callable[..., Sim], receiver: tuple[Receiver, str]) -> None:
    rcv, url = receiver
    sim = start_sim()
    async with sim.client() as c:
        ref = await c.create_case(case_payload(callback_url=url))
        await sim.admin("POST", f"/_sim/cases/{ref.case_id}/status",
                        {"status": "rejected", "note": "not in our grid"})

        async def got() -> bool:
            return len(rcv.received) == 1
        await eventually(got, 10, "the rejected callback")
        assert (await c.get_case(ref.case_id)).status is CaseStatus.REJECTED
    assert rcv.received[0].note == "not in our grid"


async def test_batch_polling_follows_cursors(sim: Sim) -> None:
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    async with sim.client() as c:
        ids = [(await c.create_case(case_payload())).case_id for _ in range(5)]
        changed = await c.cases_updated_since(since, limit=2)
        assert [v.case_id for v in changed] == ids
        assert await c.cases_updated_since(datetime.now(timezone.utc) + timedelta(hours=1)) == []
        with pytest.raises(PermanentUplinkError) as e:
            await c.cases_updated_since(since, limit=0)
    assert e.value.field == "limit"


async def test_journal_keeps_cases_across_restarts(start_sim: Callable[..., Sim],
                                                   tmp_path: Path) -> None:
    journal = tmp_path / "cases.jsonl"
    payload = case_payload()
    first = start_sim(journal=journal)
    async with first.client() as c:
        ref = await c.create_case(payload)
    second = start_sim(journal=journal)
    async with second.client() as c:
        again = await c.create_case(payload)
        fresh = await c.create_case(case_payload())
    assert (again.case_id, again.created) == (ref.case_id, False)
    assert fresh.case_id != ref.case_id


def _private_ca(tmp: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (tmp / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for cmd in (["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
                 "-subj", "/CN=test city CA"],
                ["req", *ec, "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1"],
                ["x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "san.ext"]):
        subprocess.run(["openssl", *cmd], cwd=tmp, check=True, capture_output=True, timeout=30)
    return tmp / "ca.pem", tmp / "srv.pem", tmp / "srv.key"


async def test_tls_with_a_private_ca_bundle(tmp_path: Path) -> None:
    ca, cert, key = _private_ca(tmp_path)
    app = create_app(SECRET, KEY_ID, delays=SLOW)
    with ServerThread(app, "case-sim-tls", ssl_certfile=str(cert), ssl_keyfile=str(key)) as srv:
        async with CaseSystemClient(srv.url, KEY_ID, SECRET, ca_bundle=str(ca)) as c:
            assert (await c.create_case(case_payload())).created
        async with CaseSystemClient(srv.url, KEY_ID, SECRET, timeout=5) as c:  # system CAs
            with pytest.raises(RetryableUplinkError) as e:
                await c.get_case("C1")
    assert e.value.reason == "tls_error"


async def test_tls_trusts_the_ca_named_by_ssl_cert_file(tmp_path: Path, monkeypatch) -> None:
    """A site whose private CA is named the OpenSSL way (``SSL_CERT_FILE``), not by the
    uplink's ``ca_file``, is trusted as httpx's own default trusts it."""
    from gateway.uplink.case_client import _tls_context

    ca, cert, key = _private_ca(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    _tls_context.cache_clear()
    try:
        app = create_app(SECRET, KEY_ID, delays=SLOW)
        with ServerThread(app, "case-sim-tls-env", ssl_certfile=str(cert),
                          ssl_keyfile=str(key)) as srv:
            async with CaseSystemClient(srv.url, KEY_ID, SECRET) as c:
                assert (await c.create_case(case_payload())).created
    finally:
        _tls_context.cache_clear()


async def test_a_client_enters_without_loading_a_trust_store_on_the_loop() -> None:
    """httpx's default TLS set-up loads the certifi bundle when a client is made: ~60 ms of
    the event loop, twice at every start (the forwarder's client and the poller's), while
    the first alarms come in (issue 18, eleventh round). The settings are made when the
    client is built; a plain http:// client trusts no CA at all (it never makes a TLS
    connection: redirects are not followed) and https keeps verifying (test above)."""
    c = CaseSystemClient("http://127.0.0.1:9", KEY_ID, SECRET)
    t = time.process_time()
    async with c:
        entered = time.process_time() - t
    assert entered < 0.02, f"entering took {entered * 1000:.0f} ms of CPU"
    ctx = c._verify
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode is ssl.CERT_REQUIRED
    assert ctx.check_hostname and ctx.cert_store_stats()["x509_ca"] == 0
    tls = CaseSystemClient("https://cases.example.gov.cn", KEY_ID, SECRET)._verify
    assert isinstance(tls, ssl.SSLContext) and tls.cert_store_stats()["x509_ca"] > 50
    assert CaseSystemClient("https://x", KEY_ID, SECRET, verify_tls=False)._verify is False


# ------------------------------------------------------------------------- runner

def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            return proc.stdout.readline().strip()
    raise AssertionError(f"no ready line within {timeout} s (exit code {proc.poll()})")


async def test_runner_serves_with_a_secret_file_and_stops_on_sigterm(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET.reveal().decode() + "\n")
    env = {k: v for k, v in os.environ.items() if k != "CASE_SYSTEM_SECRET"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators.case_system", "--host", "127.0.0.1", "--port", "0",
         "--secret-file", str(secret_file), "--key-id", KEY_ID],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = _read_line(proc, 20)
        assert line.startswith("case-system simulator listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        async with CaseSystemClient(url, KEY_ID, SECRET) as c:
            assert (await c.create_case(case_payload())).created
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so a supervisor sees why it ended
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert "Traceback" not in err
    assert SECRET.reveal().decode() not in err


def test_runner_refuses_to_start_without_a_secret() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CASE_SYSTEM_SECRET"}
    proc = subprocess.run([sys.executable, "-m", "simulators.case_system", "--port", "0"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "CASE_SYSTEM_SECRET" in proc.stderr


# ------------------------------------------------------------------------- contract file

def test_openapi_file_matches_the_models() -> None:
    """docs/case-system.openapi.yaml and the pydantic models must not drift apart."""
    import yaml

    from gateway.model import Severity
    from gateway.uplink import case_system as cs

    spec = yaml.safe_load((ROOT / "docs" / "case-system.openapi.yaml").read_text("utf-8"))
    assert spec["openapi"].startswith("3.1")
    schemas = spec["components"]["schemas"]
    enums = {"CaseCategory": cs.CaseCategory, "CaseStatus": cs.CaseStatus, "Severity": Severity}
    for name, enum in enums.items():
        assert schemas[name]["enum"] == [m.value for m in enum], name
    assert schemas["CaseUpdate"]["properties"]["kind"]["enum"] == [m.value for m in UpdateKind]
    assert [r for r in schemas["CaseUpdate"]["properties"]["reason"]["enum"] if r] == [
        m.value for m in ResolutionReason]
    for name in ("CaseCreate", "CaseUpdate", "CaseCreated", "UpdateAccepted", "CaseEvent",
                 "CaseView", "CasePage", "CaseCallback", "Household", "Device"):
        model = getattr(cs, name)
        doc = schemas[name]
        assert set(doc["properties"]) == set(model.model_fields), name
        assert set(doc["required"]) == set(model.model_json_schema().get("required", [])), name
