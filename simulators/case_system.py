"""A simulated grid case system (网格化管理平台) for tests, the demo and benchmarks.

It implements docs/case-system.md with an in-memory store (optionally journalled to a JSON
Lines file), its own case lifecycle (accepted -> dispatched -> on_site -> closed after
configurable delays, a grid member assigned per grid cell code), signed callbacks to each
case's ``callback_url`` and fault injection. Every request body is checked against
docs/case-system.openapi.yaml (:mod:`simulators.contract`) before the models read it, so a
gateway that drifts from the contract file is refused (422 ``validation_error`` naming the
field), not quietly accepted; ``GET /_sim/contract`` tells whether the check is on.

Run it::

    CASE_SYSTEM_SECRET=... python -m simulators.case_system --port 8600
    python -m simulators.case_system --host 127.0.0.1 --port 0 --secret-file secret.txt

It prints ``case-system simulator listening on http://HOST:PORT`` once it accepts
connections. There is no default secret.

Test-only admin API (unsigned; bind to loopback):

- ``POST /_sim/faults`` with a :class:`Faults` body, ``GET /_sim/faults``,
  ``DELETE /_sim/faults`` (clear).
- ``GET /_sim/cases``: every case with ``create_requests`` (create requests seen for its
  idempotency key), its ``device`` and ``created_at`` (when its first create request was
  handled: the latency benchmark's end point), plus ``count`` and ``create_requests_total``.
- ``GET /_sim/callbacks``: the callback delivery log.
- ``GET /_sim/contract``: ``{version, validating, refused}`` (requests refused by the file).
- ``POST /_sim/cases/{case_id}/status`` ``{"status": "rejected", "note": "..."}``: force a status
  (with ``"care": {"state": "hospital", "until": ..., "note": ...}``: the handler reports a
  care state of the case's household with it, contract 1.4).
- ``POST /_sim/reset``: forget all cases, callbacks and faults.

The same operations are methods of :class:`CaseSystemSim` (``app.state.sim``) for code on
the simulator's event loop.

Fault "down": an in-process server cannot refuse connections, so ``mode="down"`` answers
503 with ``Retry-After: 1`` to every ``/api/`` request before authentication. A real
connection refusal is tested by pointing the client at a port nobody listens on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import socket
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.uplink.case_system import (Backoff, CareReport, CaseCallback, CaseCategory,
                                        CaseCreate, CaseCreated,
                                        CaseEvent, CasePage, CaseStatus, CaseUpdate, CaseView,
                                        HmacAuth, UpdateAccepted, UpdateKind)
from gateway.uplink.signing import (DEFAULT_WINDOW_S, Secret, SignatureError, Verifier,
                                    asgi_target)
from simulators.contract import Contract, ContractUnavailable, ContractViolation

__all__ = ["CaseSystemSim", "FaultMode", "Faults", "LifecycleDelays", "create_app", "main"]

log = logging.getLogger(__name__)

_NEXT_STATUS = {CaseStatus.ACCEPTED: CaseStatus.DISPATCHED,
                CaseStatus.DISPATCHED: CaseStatus.ON_SITE,
                CaseStatus.ON_SITE: CaseStatus.CLOSED}
_GRID_MEMBERS = ("王芳", "李强", "张敏", "刘洋", "陈静", "杨磊", "赵丽", "黄伟")
_CALLBACK_QUEUE_MAX = 1000
_PAGE_MAX = 500


#: what the simulated grid member writes at each step (a Chinese city system's notes)
_NOTES = {CaseStatus.ACCEPTED: "已受理", CaseStatus.DISPATCHED: "已派单给网格员",
          CaseStatus.ON_SITE: "网格员已到场", CaseStatus.CLOSED: "已上门处置，住户平安",
          CaseStatus.REJECTED: "不属于本网格，已退回"}
#: the same for a service case (category service, contract 1.3: a help request)
_SERVICE_NOTES = {CaseStatus.ACCEPTED: "服务请求已受理", CaseStatus.DISPATCHED: "已派单给服务人员",
                  CaseStatus.ON_SITE: "服务人员已上门", CaseStatus.CLOSED: "服务已完成",
                  CaseStatus.REJECTED: "不属于本网格服务范围，已退回"}


@dataclass(frozen=True, slots=True)
class LifecycleDelays:
    """Seconds a case spends in accepted, dispatched and on_site before moving on."""

    dispatch_s: float = 5.0
    on_site_s: float = 30.0
    close_s: float = 60.0

    def __post_init__(self) -> None:
        if min(self.dispatch_s, self.on_site_s, self.close_s) < 0:
            raise ValueError("lifecycle delays must be >= 0")

    def after(self, status: CaseStatus) -> float:
        return {CaseStatus.ACCEPTED: self.dispatch_s, CaseStatus.DISPATCHED: self.on_site_s,
                CaseStatus.ON_SITE: self.close_s}[status]

    @property
    def tick_s(self) -> float:
        """How often the lifecycle loop looks for due cases."""
        return min(1.0, max(0.01, min(self.dispatch_s, self.on_site_s, self.close_s) / 4))


class FaultMode(StrEnum):
    NONE = "none"
    DOWN = "down"        # 503 + Retry-After for every /api/ request, before auth
    ERROR = "error"      # answer ``status`` (default 500)
    SLOW = "slow"        # wait ``delay_s`` then answer normally
    HANG = "hang"        # wait ``delay_s`` (longer than the client's timeout) then answer
    GARBAGE = "garbage"  # answer 200 with a body that is not JSON
    REJECT = "reject"    # answer ``status`` (default 400) with a JSON error


class Faults(BaseModel):
    """What goes wrong, for the next ``count`` matching requests (``None``: until cleared).

    ``rate`` is the probability a request is hit (seeded by ``seed`` for repeatability).
    ``after_apply``: error/garbage/hang only after the request was applied to the store
    (the case exists; only the reply is lost), which is what idempotency keys are for.
    ``duplicate_callbacks``: every callback is delivered twice with the same event_id.
    """

    model_config = ConfigDict(extra="forbid")

    mode: FaultMode = FaultMode.NONE
    #: for ``reject``: the error code and field of the reply (default "rejected", none)
    error: str = Field(default="rejected", pattern=r"^[a-z][a-z0-9_]{0,39}$")
    field: str | None = Field(default=None, max_length=80)
    rate: float = Field(default=1.0, ge=0.0, le=1.0)
    count: int | None = Field(default=None, ge=1)
    status: int | None = Field(default=None, ge=400, le=599)
    delay_s: float = Field(default=5.0, ge=0.0, le=120.0)
    after_apply: bool = False
    duplicate_callbacks: bool = False
    seed: int = 0


class StatusForce(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: CaseStatus
    note: str = Field(default="", max_length=1000)
    care: CareReport | None = None


class _ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.field = status, error, detail, field
        self.by_contract = False      # refused by the contract file (not by the models)

    def response(self) -> JSONResponse:
        body = {"error": self.error, "detail": self.detail}
        if self.field is not None:
            body["field"] = self.field
        return JSONResponse(body, status_code=self.status)


@dataclass(slots=True)
class _Case:
    """One case and its bookkeeping (mutable: the simulator's store)."""

    case_id: str
    request: CaseCreate
    fingerprint: str
    status: CaseStatus
    handler: str | None
    created_at: datetime
    updated_at: datetime
    create_requests: int = 1
    last_sequence: int = 0
    events: list[CaseEvent] = field(default_factory=list)
    updates: dict[str, UpdateAccepted] = field(default_factory=dict)
    update_log: list[dict[str, Any]] = field(default_factory=list)
    due_at: float | None = None      # loop time of the next lifecycle step
    #: when its first create request arrived (before the signature and contract checks):
    #: the gateway's send plus loopback, for latency benchmarks (simulators/bench/path.py)
    received_at: datetime | None = None

    def view(self) -> CaseView:
        return CaseView(case_id=self.case_id, idempotency_key=self.request.idempotency_key,
                        status=self.status, grid_cell_code=self.request.grid_cell_code,
                        handler=self.handler, created_at=self.created_at,
                        updated_at=self.updated_at, last_sequence=self.last_sequence,
                        events=list(self.events))

    def to_json(self) -> dict[str, Any]:
        return {"case_id": self.case_id, "request": self.request.model_dump(mode="json"),
                "fingerprint": self.fingerprint, "status": self.status.value,
                "handler": self.handler, "created_at": self.created_at.isoformat(),
                "updated_at": self.updated_at.isoformat(),
                "create_requests": self.create_requests, "last_sequence": self.last_sequence,
                "events": [e.model_dump(mode="json") for e in self.events],
                "updates": {k: u.model_dump(mode="json") for k, u in self.updates.items()},
                "update_log": self.update_log,
                "received_at": None if self.received_at is None else self.received_at.isoformat()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> _Case:
        return cls(d["case_id"], CaseCreate.model_validate(d["request"]), d["fingerprint"],
                   CaseStatus(d["status"]), d["handler"],
                   datetime.fromisoformat(d["created_at"]),
                   datetime.fromisoformat(d["updated_at"]), d["create_requests"],
                   d["last_sequence"], [CaseEvent.model_validate(e) for e in d["events"]],
                   {k: UpdateAccepted.model_validate(u) for k, u in d["updates"].items()},
                   d["update_log"], None,
                   None if d.get("received_at") is None
                   else datetime.fromisoformat(d["received_at"]))


def _notes(req: CaseCreate) -> dict[CaseStatus, str]:
    return _SERVICE_NOTES if req.category is CaseCategory.SERVICE else _NOTES


def _fingerprint(req: CaseCreate) -> str:
    """What identifies the alarm behind a create. Title, description and severity may be
    re-rendered by a newer gateway on retry, so they do not count."""
    ident = [req.site_id, req.grid_cell_code, req.household.id, req.category.value,
             req.occurred_at.isoformat(), req.device.id if req.device else ""]
    return hashlib.sha256("\x1f".join(ident).encode()).hexdigest()


def _field_of(e: ValidationError) -> tuple[str | None, str]:
    first = e.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or None
    return loc, f"{loc or 'body'}: {first['msg']}"


def _now() -> datetime:
    return datetime.now(timezone.utc)


class CaseSystemSim:
    """The simulator's state and behaviour; :func:`create_app` wraps it in FastAPI.

    Methods are meant to be called on the simulator's event loop (the HTTP admin API is
    the way in from another thread).
    """

    def __init__(self, keys: Mapping[str, Secret], *, callback_key_id: str,
                 callback_secret: Secret, delays: LifecycleDelays = LifecycleDelays(),
                 grid_members: Mapping[str, str] | None = None, journal: Path | None = None,
                 window_s: float = DEFAULT_WINDOW_S, callback_attempts: int = 3,
                 callback_timeout_s: float = 2.0,
                 wall_clock: Callable[[], datetime] = _now,
                 contract: Contract | None | bool = True) -> None:
        self.verifier = Verifier(keys, window_s=window_s)
        if contract is True:
            try:
                contract = Contract.load()
            except ContractUnavailable as e:
                log.warning("case-system simulator: requests are NOT checked against the "
                            "contract file: %s", e)
                contract = None
        self.contract: Contract | None = contract or None
        self.contract_refused = 0
        self.delays = delays
        self._callback_auth = HmacAuth(callback_key_id, callback_secret)
        self._grid_members = dict(grid_members or {})
        self._journal = journal
        self._callback_attempts = max(1, callback_attempts)
        self._callback_timeout_s = callback_timeout_s
        self._wall = wall_clock
        self._arrived: datetime | None = None     # the request being served (serve)
        self._faults = Faults()
        self._fault_rng = random.Random(0)
        self._fault_left: int | None = None
        self._hang_release = asyncio.Event()
        self._cases: dict[str, _Case] = {}       # by case_id
        self._by_key: dict[str, str] = {}        # idempotency_key -> case_id
        self._counter = 0
        self._callbacks: asyncio.Queue[tuple[str, CaseCallback, bool]] = asyncio.Queue(
            _CALLBACK_QUEUE_MAX)
        self.deliveries: list[dict[str, Any]] = []
        self.callbacks_dropped = 0
        self.api_requests = 0
        self._resume_pending: list[_Case] = []
        self._load_journal()

    # ---------------------------------------------------------------- admin API

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, faults: Faults) -> None:
        self._faults = faults
        self._fault_rng = random.Random(faults.seed)
        self._fault_left = faults.count
        self._hang_release = asyncio.Event()

    def clear_faults(self) -> None:
        """Back to normal; requests hanging in a HANG fault are answered now."""
        self._hang_release.set()
        self.set_faults(Faults())

    def reset(self) -> None:
        self.clear_faults()
        self._cases.clear()
        self._by_key.clear()
        while not self._callbacks.empty():
            self._callbacks.get_nowait()
        self.deliveries.clear()
        self.callbacks_dropped = 0
        self.api_requests = 0

    def cases_report(self) -> dict[str, Any]:
        cases = [{"case_id": c.case_id, "idempotency_key": c.request.idempotency_key,
                  "category": c.request.category.value,
                  "service": None if c.request.service is None else
                  c.request.service.model_dump(mode="json"),
                  "create_requests": c.create_requests, "status": c.status.value,
                  "grid_cell_code": c.request.grid_cell_code, "handler": c.handler,
                  "callback_url": str(c.request.callback_url or "") or None,
                  "last_sequence": c.last_sequence, "updates": c.update_log,
                  "device": c.request.device.id if c.request.device else None,
                  "created_at": c.created_at.isoformat(),
                  "received_at": None if c.received_at is None else c.received_at.isoformat()}
                 for c in self._cases.values()]
        return {"count": len(cases), "cases": cases, "api_requests": self.api_requests,
                "create_requests_total": sum(c["create_requests"] for c in cases)}

    def callbacks_report(self) -> dict[str, Any]:
        return {"deliveries": list(self.deliveries), "queued": self._callbacks.qsize(),
                "dropped": self.callbacks_dropped}

    def force_status(self, case_id: str, status: CaseStatus, note: str = "",
                     care: CareReport | None = None) -> CaseView:
        case = self._get(case_id)
        self._change(case, status, note or f"forced to {status.value}", care=care)
        return case.view()

    # ---------------------------------------------------------------- contract

    def contract_report(self) -> dict[str, Any]:
        return {"version": self.contract.version if self.contract else None,
                "validating": self.contract is not None, "refused": self.contract_refused}

    def _checked(self, model: type[Any], schema: str, body: bytes) -> Any:
        try:
            return _validate(model, body, self.contract, schema)
        except _ApiError as e:
            if e.by_contract:
                self.contract_refused += 1
                log.warning("refused a %s that breaks the contract file: %s", schema, e.detail)
            raise

    def create_case(self, body: bytes) -> tuple[int, BaseModel]:
        req = self._checked(CaseCreate, "CaseCreate", body)
        known = self._by_key.get(req.idempotency_key)
        if known is not None:
            case = self._cases[known]
            case.create_requests += 1
            self._write(case)
            if case.fingerprint != _fingerprint(req):
                raise _ApiError(409, "idempotency_conflict",
                                f"idempotency_key was used for case {case.case_id} with a "
                                "different alarm (site, grid cell, household, category, "
                                "occurred_at or device differ)", "idempotency_key")
            return 200, CaseCreated(case_id=case.case_id, status=case.status)
        self._counter += 1
        now = self._wall()
        case = _Case(f"GC{now:%Y%m%d}-{self._counter:06d}", req, _fingerprint(req),
                     CaseStatus.ACCEPTED, None, now, now, received_at=self._arrived)
        case.events.append(CaseEvent(event_id=f"{case.case_id}-e1", status=case.status,
                                     note=_notes(req)[CaseStatus.ACCEPTED], changed_at=now))
        self._cases[case.case_id] = case
        self._by_key[req.idempotency_key] = case.case_id
        self._schedule(case)
        self._write(case)
        return 201, CaseCreated(case_id=case.case_id, status=case.status)

    def update_case(self, case_id: str, body: bytes) -> tuple[int, BaseModel]:
        case = self._get(case_id)
        upd = self._checked(CaseUpdate, "CaseUpdate", body)
        seen = case.updates.get(upd.idempotency_key)
        if seen is not None:
            for entry in case.update_log:     # a replay: counted, not recorded again
                if entry["idempotency_key"] == upd.idempotency_key:
                    entry["requests"] = entry.get("requests", 1) + 1
            return 200, seen
        applied = upd.sequence > case.last_sequence
        if applied:
            case.last_sequence = upd.sequence
            if upd.kind is UpdateKind.RESOLVED and not case.status.is_final:
                self._change(case, CaseStatus.CLOSED,
                             f"resolved at the gateway ({upd.reason}): {upd.note}".strip(": "),
                             handler=case.handler)
            else:
                case.updated_at = self._wall()
        reply = UpdateAccepted(case_id=case.case_id, sequence=upd.sequence, applied=applied,
                               update_id=f"{case.case_id}-u{len(case.updates) + 1}",
                               status=case.status)
        case.updates[upd.idempotency_key] = reply
        case.update_log.append({"idempotency_key": upd.idempotency_key, "kind": upd.kind.value,
                                "sequence": upd.sequence, "applied": applied, "requests": 1,
                                "note": upd.note, "call": None if upd.call is None else
                                upd.call.model_dump(mode="json")})
        self._write(case)
        return 201, reply

    def get_case(self, case_id: str) -> tuple[int, BaseModel]:
        return 200, self._get(case_id).view()

    def list_cases(self, query: Mapping[str, str]) -> tuple[int, BaseModel]:
        try:
            limit = int(query.get("limit", "100"))
        except ValueError:
            raise _ApiError(422, "validation_error", "limit: not an integer", "limit") from None
        if not 1 <= limit <= _PAGE_MAX:
            raise _ApiError(422, "validation_error", f"limit: 1..{_PAGE_MAX}", "limit")
        if "cursor" in query:
            since, _, after_id = query["cursor"].partition("|")
            name = "cursor"
        elif "updated_since" in query:
            since, after_id, name = query["updated_since"], "", "updated_since"
        else:
            raise _ApiError(422, "validation_error", "updated_since is required",
                            "updated_since")
        try:
            since_dt = datetime.fromisoformat(since)
        except ValueError:
            raise _ApiError(422, "validation_error", f"{name}: not an ISO 8601 time",
                            name) from None
        if since_dt.tzinfo is None:
            raise _ApiError(422, "validation_error", f"{name}: needs a UTC offset", name)
        # keyset pagination on (updated_at, case_id): no skips, no repeats within a walk
        if after_id:
            rows = [c for c in self._cases.values() if (c.updated_at, c.case_id) > (since_dt,
                                                                                    after_id)]
        else:
            rows = [c for c in self._cases.values() if c.updated_at >= since_dt]
        rows.sort(key=lambda c: (c.updated_at, c.case_id))
        page = rows[:limit]
        cursor = None
        if len(rows) > limit:
            last = page[-1]
            cursor = f"{last.updated_at.isoformat()}|{last.case_id}"
        return 200, CasePage(cases=[c.view() for c in page], next_cursor=cursor)

    # ---------------------------------------------------------------- lifecycle

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the lifecycle and callback loops; both are cancelled on exit."""
        async with httpx.AsyncClient(auth=self._callback_auth,
                                     timeout=self._callback_timeout_s) as http:
            tasks = [asyncio.create_task(self._lifecycle_loop(), name="case-sim-lifecycle"),
                     asyncio.create_task(self._callback_loop(http), name="case-sim-callbacks")]
            try:
                yield
            finally:
                self._hang_release.set()
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _lifecycle_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.delays.tick_s)
            now = loop.time()
            for case in list(self._cases.values()):
                if case.due_at is not None and case.due_at <= now:
                    self._change(case, _NEXT_STATUS[case.status])

    def _schedule(self, case: _Case) -> None:
        if case.status.is_final:
            case.due_at = None
        else:
            case.due_at = asyncio.get_running_loop().time() + self.delays.after(case.status)

    def _change(self, case: _Case, status: CaseStatus, note: str = "", *,
                handler: str | None = None, care: CareReport | None = None) -> None:
        now = self._wall()
        if status is CaseStatus.DISPATCHED:
            handler = self._grid_member(case.request.grid_cell_code)
        case.status, case.updated_at = status, now
        case.handler = handler if handler is not None else case.handler
        event = CaseEvent(event_id=f"{case.case_id}-e{len(case.events) + 1}", status=status,
                          handler=case.handler,
                          note=note or _notes(case.request).get(status, status.value),
                          changed_at=now, care=care)
        case.events.append(event)
        self._schedule(case)
        self._write(case)
        if case.request.callback_url is not None:
            cb = CaseCallback(event_id=event.event_id, case_id=case.case_id,
                              idempotency_key=case.request.idempotency_key, status=status,
                              handler=event.handler, note=event.note, changed_at=now,
                              care=care)
            for dup in range(2 if self._faults.duplicate_callbacks else 1):
                try:
                    self._callbacks.put_nowait((str(case.request.callback_url), cb, dup > 0))
                except asyncio.QueueFull:
                    self.callbacks_dropped += 1

    def _grid_member(self, code: str) -> str:
        if code in self._grid_members:
            return self._grid_members[code]
        n = int.from_bytes(hashlib.sha256(code.encode()).digest()[:4], "big")
        return _GRID_MEMBERS[n % len(_GRID_MEMBERS)]

    async def _callback_loop(self, http: httpx.AsyncClient) -> None:
        backoff = Backoff(base_s=0.05, cap_s=2.0, rng=random.Random(1))
        while True:
            url, cb, duplicate = await self._callbacks.get()
            record: dict[str, Any] = {"event_id": cb.event_id, "case_id": cb.case_id,
                                      "status": cb.status.value, "duplicate": duplicate,
                                      "attempts": 0, "delivered": False, "http_status": None}
            self.deliveries.append(record)
            body = cb.model_dump_json().encode()
            for attempt in range(self._callback_attempts):
                record["attempts"] = attempt + 1
                try:
                    resp = await http.post(url, content=body,
                                           headers={"Content-Type": "application/json"})
                except httpx.TransportError as e:
                    record["error"] = type(e).__name__
                else:
                    record["http_status"] = resp.status_code
                    if resp.is_success:
                        record["delivered"] = True
                        break
                if attempt + 1 < self._callback_attempts:
                    await asyncio.sleep(backoff.delay(attempt))
            if not record["delivered"]:
                log.warning("callback %s to case %s not delivered after %d attempts",
                            cb.event_id, cb.case_id, record["attempts"])

    # ---------------------------------------------------------------- faults + dispatch

    def _draw_fault(self) -> Faults | None:
        f = self._faults
        if f.mode is FaultMode.NONE or self._fault_rng.random() >= f.rate:
            return None
        if self._fault_left is not None:
            self._fault_left -= 1
            if self._fault_left <= 0:
                self.set_faults(Faults(duplicate_callbacks=f.duplicate_callbacks))
        return f

    async def _hang(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._hang_release.wait()

    async def serve(self, request: Request,
                    op: Callable[[bytes], tuple[int, BaseModel]]) -> Response:
        """Fault injection, signature check, then ``op(body)``; errors in the contract's shape."""
        arrived = self._wall()
        body = await request.body()  # before any hang: the client may be gone afterwards
        self.api_requests += 1
        fault = self._draw_fault()
        mode = fault.mode if fault else FaultMode.NONE
        if fault and mode is FaultMode.DOWN:
            return JSONResponse({"error": "unavailable", "detail": "simulated outage"},
                                status_code=503, headers={"Retry-After": "1"})
        if fault and mode is FaultMode.SLOW:
            await self._hang(fault.delay_s)
        if fault and not fault.after_apply:
            early = await self._fault_reply(fault)
            if early is not None:
                return early
        try:
            self.verifier.verify(request.method, asgi_target(request.scope), body,
                                 request.headers)
            self._arrived = arrived          # (op runs on the loop at once: no await)
            status, reply = op(body)
        except SignatureError as e:
            return _ApiError(401, e.reason, e.detail).response()
        except _ApiError as e:
            return e.response()
        if fault and fault.after_apply:
            late = await self._fault_reply(fault)
            if late is not None:
                return late
        return Response(reply.model_dump_json(), status_code=status,
                        media_type="application/json")

    async def _fault_reply(self, fault: Faults) -> Response | None:
        if fault.mode is FaultMode.HANG:
            await self._hang(fault.delay_s)
            return None
        if fault.mode is FaultMode.ERROR:
            return JSONResponse({"error": "internal_error", "detail": "simulated failure"},
                                status_code=fault.status or 500)
        if fault.mode is FaultMode.GARBAGE:
            return Response(b"<html>\x00 upstream \xff proxy garbage", status_code=200,
                            media_type="application/json")
        if fault.mode is FaultMode.REJECT:
            return _ApiError(fault.status or 400, fault.error, "simulated rejection",
                             fault.field).response()
        return None

    def _get(self, case_id: str) -> _Case:
        case = self._cases.get(case_id)
        if case is None:
            raise _ApiError(404, "not_found", "no such case", "case_id")
        return case

    # ---------------------------------------------------------------- journal

    def _write(self, case: _Case) -> None:
        if self._journal is not None:
            with self._journal.open("a", encoding="utf-8") as f:
                f.write(json.dumps(case.to_json(), ensure_ascii=False) + "\n")

    def _load_journal(self) -> None:
        if self._journal is None or not self._journal.exists():
            return
        with self._journal.open(encoding="utf-8") as f:
            for line in f:  # later lines are newer snapshots of the same case
                if line.strip():
                    case = _Case.from_json(json.loads(line))
                    self._cases[case.case_id] = case
                    self._by_key[case.request.idempotency_key] = case.case_id
        self._counter = len(self._cases)
        # there is no event loop yet to schedule on: resume() does it at start-up
        self._resume_pending = [c for c in self._cases.values() if not c.status.is_final]

    def resume(self) -> None:
        """Restart the lifecycle of journalled open cases (call on the running loop)."""
        for case in self._resume_pending:
            self._schedule(case)
        self._resume_pending = []


def _validate(model: type[Any], body: bytes, contract: Contract | None = None,
              schema: str = "") -> Any:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _ApiError(400, "invalid_json", f"body is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise _ApiError(400, "invalid_json", "body must be a JSON object")
    if contract is not None:
        try:
            contract.check(schema, data)
        except ContractViolation as e:
            err = _ApiError(422, "validation_error", e.detail, e.field or None)
            err.by_contract = True
            raise err from None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        field_name, detail = _field_of(e)
        raise _ApiError(422, "validation_error", detail, field_name) from None


def create_app(secret: Secret | str, key_id: str, *,
               delays: LifecycleDelays = LifecycleDelays(),
               grid_members: Mapping[str, str] | None = None,
               journal: str | os.PathLike[str] | None = None,
               window_s: float = DEFAULT_WINDOW_S, callback_attempts: int = 3,
               contract: Contract | None | bool = True) -> FastAPI:
    """The simulator as an ASGI app; ``app.state.sim`` is its :class:`CaseSystemSim`.

    Requests must be signed with ``key_id``/``secret``; callbacks are signed with the same.
    ``contract``: True checks request bodies against docs/case-system.openapi.yaml (a
    :class:`~simulators.contract.Contract` for another version of it, None: models only).
    """
    secret = secret if isinstance(secret, Secret) else Secret(secret)
    sim = CaseSystemSim({key_id: secret}, callback_key_id=key_id, callback_secret=secret,
                        delays=delays, grid_members=grid_members,
                        journal=Path(journal) if journal else None, window_s=window_s,
                        callback_attempts=callback_attempts, contract=contract)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sim.resume()
        async with sim.running():
            yield

    app = FastAPI(title="Simulated grid case system", lifespan=lifespan, openapi_url=None,
                  docs_url=None, redoc_url=None)
    app.state.sim = sim
    _routes(app, sim)
    return app


def _routes(app: FastAPI, sim: CaseSystemSim) -> None:
    @app.post("/api/v1/cases")
    async def create_case(request: Request) -> Response:
        return await sim.serve(request, sim.create_case)

    @app.get("/api/v1/cases")
    async def list_cases(request: Request) -> Response:
        return await sim.serve(request, lambda _b: sim.list_cases(request.query_params))

    @app.get("/api/v1/cases/{case_id}")
    async def get_case(request: Request, case_id: str) -> Response:
        return await sim.serve(request, lambda _b: sim.get_case(case_id))

    @app.post("/api/v1/cases/{case_id}/updates")
    async def update_case(request: Request, case_id: str) -> Response:
        return await sim.serve(request, lambda b: sim.update_case(case_id, b))

    @app.get("/_sim/faults")
    async def get_faults() -> Faults:
        return sim.faults

    @app.post("/_sim/faults")
    async def set_faults(faults: Faults) -> Faults:
        sim.set_faults(faults)
        return sim.faults

    @app.delete("/_sim/faults")
    async def clear_faults() -> Faults:
        sim.clear_faults()
        return sim.faults

    @app.get("/_sim/cases")
    async def sim_cases() -> dict[str, Any]:
        return sim.cases_report()

    @app.get("/_sim/callbacks")
    async def sim_callbacks() -> dict[str, Any]:
        return sim.callbacks_report()

    @app.get("/_sim/contract")
    async def sim_contract() -> dict[str, Any]:
        return sim.contract_report()

    @app.post("/_sim/cases/{case_id}/status")
    async def force_status(case_id: str, force: StatusForce) -> Response:
        try:
            view = sim.force_status(case_id, force.status, force.note, force.care)
        except _ApiError as e:
            return e.response()
        return Response(view.model_dump_json(), media_type="application/json")

    @app.post("/_sim/reset")
    async def reset() -> dict[str, str]:
        sim.reset()
        return {"status": "reset"}


# ------------------------------------------------------------------------- runner

def _read_secret(path: str | None) -> Secret:
    if path:
        return Secret.from_file(path)
    env = os.environ.get("CASE_SYSTEM_SECRET", "")
    if not env:
        raise ValueError("no secret: pass --secret-file or set CASE_SYSTEM_SECRET")
    return Secret(env)


def main(argv: list[str] | None = None) -> int:
    """``python -m simulators.case_system``: run the simulator until SIGINT/SIGTERM."""
    p = argparse.ArgumentParser(prog="python -m simulators.case_system",
                                description="Simulated grid case system (test/demo only).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8600, help="0 picks a free port")
    p.add_argument("--secret-file", help="file holding the shared secret "
                   "(else the CASE_SYSTEM_SECRET environment variable)")
    p.add_argument("--key-id", default="community-gateway")
    p.add_argument("--journal", help="JSON Lines file to keep cases across restarts")
    p.add_argument("--dispatch-after", type=float, default=5.0, metavar="S")
    p.add_argument("--on-site-after", type=float, default=30.0, metavar="S")
    p.add_argument("--close-after", type=float, default=60.0, metavar="S")
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)
    try:
        secret = _read_secret(args.secret_file)
        delays = LifecycleDelays(args.dispatch_after, args.on_site_after, args.close_after)
    except (OSError, ValueError) as e:
        print(f"case-system simulator: {e}", file=sys.stderr)
        return 2
    app = create_app(secret, args.key_id, delays=delays, journal=args.journal)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    # proto IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY on accepted connections only then;
    # without it Nagle + delayed ACK add ~40 ms to every keep-alive request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as e:
        print(f"case-system simulator: cannot bind {args.host}:{args.port}: {e}", file=sys.stderr)
        return 2
    host, port = sock.getsockname()[:2]
    server = _AnnouncingServer(uvicorn.Config(app, log_level=args.log_level,
                                              timeout_graceful_shutdown=3),
                               f"case-system simulator listening on http://{host}:{port}")
    server.run(sockets=[sock])
    return 0


class _AnnouncingServer(uvicorn.Server):
    """uvicorn's server (with its SIGINT/SIGTERM handling) that prints a line once it listens."""

    def __init__(self, config: uvicorn.Config, ready_line: str) -> None:
        super().__init__(config)
        self._ready_line = ready_line

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            print(self._ready_line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
