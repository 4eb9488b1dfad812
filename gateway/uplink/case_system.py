"""Client of the city's grid case system (网格化管理平台): contract models and HTTP client.

The contract is docs/case-system.md. In short: ``POST /api/v1/cases`` opens a case (201) or
returns the case already opened under the same idempotency key (200); ``POST
/api/v1/cases/{case_id}/updates`` adds a sequenced, idempotent update; ``GET`` reads one case
or pages through cases changed since a time. Every request is signed
(:mod:`gateway.uplink.signing`).

:class:`CaseSystemClient` maps every failure to :class:`RetryableUplinkError` or
:class:`PermanentUplinkError` (see :mod:`gateway.uplink` for which is which and why).
:class:`Backoff` and :class:`CircuitBreaker` are the pure pieces the outbox schedules with;
they are the kernel's (:mod:`gateway.kernel.resilience`), re-exported here.

The models are the wire format: unknown fields in a reply are ignored, so the case system
may add fields without breaking a deployed gateway. Their ``repr`` can hold resident data
(the household address): log ids, never models.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import TracebackType
from typing import Annotated, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import (AnyHttpUrl, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError,
                      model_validator)

from gateway.kernel.resilience import Backoff, BreakerState, CircuitBreaker
from gateway.model import Kind, Severity
from gateway.uplink import PermanentUplinkError, RetryableUplinkError
from gateway.uplink.signing import Secret, Verifier, signed_headers

__all__ = [
    "CATEGORY_BY_KIND",
    "CONTRACT_VERSION",
    "Backoff",
    "BreakerState",
    "CaseCallback",
    "CaseCategory",
    "CaseCreate",
    "CaseCreated",
    "CaseEvent",
    "CasePage",
    "CaseRef",
    "CaseStatus",
    "CaseSystemClient",
    "CaseUpdate",
    "CaseView",
    "CircuitBreaker",
    "Device",
    "ErrorBody",
    "HmacAuth",
    "Household",
    "ResolutionReason",
    "UpdateAccepted",
    "UpdateKind",
    "UpdateRef",
    "decode_callback",
]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------- models

IdempotencyKey = Annotated[str, Field(min_length=8, max_length=128,
                                      pattern=r"^[A-Za-z0-9._:-]+$")]
Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^\S+$")]
#: 6-digit administrative division code, then 1-4 dash-separated segments: "310104-012-03".
GridCellCode = Annotated[str, Field(pattern=r"^[0-9]{6}(-[0-9A-Za-z]{1,6}){1,4}$")]


class CaseCategory(StrEnum):
    EMERGENCY_CALL = "emergency_call"
    FIRE = "fire"
    GAS = "gas"
    WATER_LEAK = "water_leak"
    INACTIVITY = "inactivity"
    INTRUSION = "intrusion"
    PANIC = "panic"
    TAMPER = "tamper"
    DEVICE_FAULT = "device_fault"
    OTHER = "other"


#: The case category for an alarm-class reading kind (inactivity comes from a rule, not a kind).
CATEGORY_BY_KIND: dict[Kind, CaseCategory] = {
    Kind.SOS: CaseCategory.EMERGENCY_CALL,
    Kind.SMOKE: CaseCategory.FIRE,
    Kind.HEAT: CaseCategory.FIRE,
    Kind.FIRE: CaseCategory.FIRE,
    Kind.GAS: CaseCategory.GAS,
    Kind.WATER_LEAK: CaseCategory.WATER_LEAK,
    Kind.PANIC: CaseCategory.PANIC,
    Kind.TAMPER: CaseCategory.TAMPER,
    Kind.FAULT: CaseCategory.DEVICE_FAULT,
}


class CaseStatus(StrEnum):
    """The case system's own lifecycle: accepted -> dispatched -> on_site -> closed, or rejected."""

    ACCEPTED = "accepted"
    DISPATCHED = "dispatched"
    ON_SITE = "on_site"
    CLOSED = "closed"
    REJECTED = "rejected"

    @property
    def is_final(self) -> bool:
        return self in (CaseStatus.CLOSED, CaseStatus.REJECTED)


class UpdateKind(StrEnum):
    ACKNOWLEDGED = "acknowledged"   # a duty officer acknowledged the alarm at the gateway
    NOTE = "note"                   # a note added by staff
    RESOLVED = "resolved"           # staff resolved the alarm (reason required)
    CLEARED = "cleared"             # the device itself reported the condition gone


class ResolutionReason(StrEnum):
    HANDLED = "handled"
    FALSE_ALARM = "false_alarm"
    TEST = "test"
    DUPLICATE = "duplicate"
    OTHER = "other"


class _Wire(BaseModel):
    # extra="ignore": a newer peer may add fields; that must never turn into a 4xx or a
    # "bad reply" that blocks alarms.
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)


class Household(_Wire):
    id: Identifier
    address: str = Field(min_length=1, max_length=200)


class Device(_Wire):
    id: Identifier
    type: Identifier


#: Contract version: docs/case-system.openapi.yaml ``info.version`` (docs/case-system.md 8).
CONTRACT_VERSION = "1.1.0"
#: Most source devices one case lists.
MAX_DEVICES = 50


class CaseCreate(_Wire):
    """Body of ``POST /api/v1/cases``."""

    idempotency_key: IdempotencyKey
    site_id: Identifier
    grid_cell_code: GridCellCode
    household: Household
    category: CaseCategory
    severity: Severity
    title: str = Field(min_length=1, max_length=120)
    description: str = Field(default="", max_length=2000)
    occurred_at: AwareDatetime
    #: the device whose report raised the alarm; None for an alarm of the household (or grid
    #: cell) as a whole: inactivity, a count or compound rule per household (since 1.1)
    device: Device | None = None
    #: the devices the alarm is based on, where the gateway knows them (since 1.1)
    devices: list[Device] = Field(default_factory=list, max_length=MAX_DEVICES)
    callback_url: AnyHttpUrl | None = None


class CaseUpdate(_Wire):
    """Body of ``POST /api/v1/cases/{case_id}/updates``; ``sequence`` increases per case."""

    idempotency_key: IdempotencyKey
    sequence: int = Field(ge=1, le=2**31 - 1)
    kind: UpdateKind
    occurred_at: AwareDatetime
    reason: ResolutionReason | None = None
    note: str = Field(default="", max_length=1000)
    actor: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _reason_iff_resolved(self) -> Self:
        if self.kind is UpdateKind.RESOLVED and self.reason is None:
            raise ValueError("reason is required when kind is 'resolved'")
        return self


class CaseCreated(_Wire):
    """Reply to a create: 201 (new case) or 200 (seen idempotency key, same case)."""

    case_id: str = Field(min_length=1)
    status: CaseStatus


class UpdateAccepted(_Wire):
    """Reply to an update: 201 new, 200 replay of a seen key; ``applied`` False = stale."""

    case_id: str = Field(min_length=1)
    update_id: str = Field(min_length=1)
    sequence: int
    applied: bool
    status: CaseStatus


class CaseEvent(_Wire):
    """One status change in a case's history; ``event_id`` is unique per change."""

    event_id: str = Field(min_length=1)
    status: CaseStatus
    handler: str | None = None
    note: str = ""
    changed_at: AwareDatetime


class CaseView(_Wire):
    """Reply to ``GET /api/v1/cases/{case_id}``."""

    case_id: str = Field(min_length=1)
    idempotency_key: str
    status: CaseStatus
    grid_cell_code: str
    handler: str | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    last_sequence: int = 0
    events: list[CaseEvent] = []


class CasePage(_Wire):
    """Reply to ``GET /api/v1/cases?updated_since=...``; follow ``next_cursor`` until null."""

    cases: list[CaseView]
    next_cursor: str | None = None


class CaseCallback(_Wire):
    """Body the case system POSTs to the gateway's ``callback_url`` on every status change.

    Delivered at least once: deduplicate on ``event_id``.
    """

    event_id: str = Field(min_length=1)
    case_id: str = Field(min_length=1)
    idempotency_key: str
    status: CaseStatus
    handler: str | None = None
    note: str = ""
    changed_at: AwareDatetime


class ErrorBody(_Wire):
    """Every 4xx/5xx body: ``error`` is a machine code, ``field`` a dotted path if any."""

    error: str
    field: str | None = None
    detail: str = ""


def decode_callback(verifier: Verifier, *, method: str, target: str,
                    headers: Mapping[str, str], body: bytes) -> CaseCallback:
    """Verify and parse one callback request (for the gateway's callback endpoint).

    Raises :class:`SignatureError` (answer 401) or ``pydantic.ValidationError`` (answer 422).
    """
    verifier.verify(method, target, body, headers)
    return CaseCallback.model_validate_json(body)


# ---------------------------------------------------------------------------- values

@dataclass(frozen=True, slots=True)
class CaseRef:
    """Result of :meth:`CaseSystemClient.create_case`; ``created`` False = idempotent replay."""

    case_id: str
    status: CaseStatus
    created: bool

    def __post_init__(self) -> None:
        if not self.case_id:
            raise ValueError("case_id is empty")


@dataclass(frozen=True, slots=True)
class UpdateRef:
    """Result of :meth:`CaseSystemClient.update_case`.

    ``applied`` False: the server ignored the update because a higher sequence was
    already applied (nothing to retry). ``created`` False: idempotent replay.
    """

    case_id: str
    update_id: str
    sequence: int
    applied: bool
    status: CaseStatus
    created: bool


# ---------------------------------------------------------------------------- client

class HmacAuth(httpx.Auth):
    """httpx auth flow that signs each request (see :mod:`gateway.uplink.signing`)."""

    requires_request_body = True

    def __init__(self, key_id: str, secret: Secret,
                 clock: Callable[[], float] = time.time) -> None:
        self._key_id = key_id
        self._secret = secret
        self._clock = clock

    def __repr__(self) -> str:
        return f"HmacAuth(key_id={self._key_id!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        target = request.url.raw_path.decode("ascii")
        request.headers.update(signed_headers(self._key_id, self._secret, request.method,
                                              target, request.content, now=self._clock()))
        yield request


_M = TypeVar("_M", bound=BaseModel)
#: 401 is the receiver refusing our signature: a clock not yet synchronised (a Pi has no
#: real-time clock) or a key being rotated. Both are fixed outside the request, so the request
#: is kept and retried (the breaker slows the retries) instead of the alarm's case given up.
_RETRYABLE_4XX = frozenset({401, 408, 429})
_DETAIL_MAX = 300


class CaseSystemClient:
    """Async client of the grid case system; use as ``async with CaseSystemClient(...) as c``.

    ``timeout`` (seconds) bounds each phase of a request (connect, write, read, pool).
    TLS: ``ca_bundle`` is a PEM file of CAs to trust instead of the system store (the city's
    private CA); ``verify_tls=False`` is for loopback tests only. ``breaker``, when given,
    short-circuits calls with ``RetryableUplinkError("circuit_open")`` while open.
    ``clock`` (unix seconds) stamps signatures. ``transport`` is for tests.

    Every method raises only :class:`RetryableUplinkError` or :class:`PermanentUplinkError`
    (plus ``RuntimeError`` when used outside ``async with``); cancellation propagates.
    """

    def __init__(self, base_url: str, key_id: str, secret: Secret | str | bytes, *,
                 timeout: float = 10.0, ca_bundle: str | None = None, verify_tls: bool = True,
                 breaker: CircuitBreaker | None = None,
                 clock: Callable[[], float] = time.time,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self.base_url = str(httpx.URL(base_url)).rstrip("/")
        self.key_id = key_id
        self._auth = HmacAuth(key_id, secret if isinstance(secret, Secret) else Secret(secret),
                              clock)
        self._timeout = httpx.Timeout(timeout)
        self._verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=ca_bundle) if ca_bundle else verify_tls)
        self._breaker = breaker
        self._transport = transport
        self._http: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"CaseSystemClient({self.base_url!r}, key_id={self.key_id!r})"

    async def __aenter__(self) -> Self:
        self._http = httpx.AsyncClient(
            base_url=self.base_url, auth=self._auth, timeout=self._timeout, verify=self._verify,
            transport=self._transport, follow_redirects=False,
            headers={"User-Agent": "community-edge-gateway", "Accept": "application/json"})
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    # ------------------------------------------------------------------ operations

    async def create_case(self, payload: CaseCreate) -> CaseRef:
        """Open a case, or get the one already opened under ``payload.idempotency_key``."""
        # no single device (a household-level alarm): the field is left out, not sent as null
        body = payload.model_dump_json(exclude={"device"} if payload.device is None else None)
        resp = await self._call("POST", "/api/v1/cases", {200, 201}, body=body.encode())
        reply = self._parse(resp, CaseCreated)
        log.info("case %s for %s (%s)", reply.case_id, payload.idempotency_key,
                 "created" if resp.status_code == 201 else "already existed")
        return CaseRef(reply.case_id, reply.status, created=resp.status_code == 201)

    async def update_case(self, case_id: str, update: CaseUpdate) -> UpdateRef:
        """Add an update to a case. A stale sequence comes back with ``applied=False``."""
        resp = await self._call("POST", f"/api/v1/cases/{quote(case_id, safe='')}/updates",
                                {200, 201}, body=update.model_dump_json().encode())
        r = self._parse(resp, UpdateAccepted)
        return UpdateRef(r.case_id, r.update_id, r.sequence, r.applied, r.status,
                         created=resp.status_code == 201)

    async def get_case(self, case_id: str) -> CaseView:
        """The case's current status and history."""
        resp = await self._call("GET", f"/api/v1/cases/{quote(case_id, safe='')}", {200})
        return self._parse(resp, CaseView)

    async def cases_updated_since(self, since: datetime, *, limit: int = 100,
                                  max_pages: int = 20) -> list[CaseView]:
        """Cases whose ``updated_at`` >= ``since`` (aware datetime), oldest change first.

        Follows ``next_cursor`` for at most ``max_pages`` pages; the caller keeps the
        largest ``updated_at`` it saw as the next ``since`` (a case may come twice: apply
        status changes idempotently).
        """
        if since.tzinfo is None:
            raise ValueError("since must be timezone-aware")
        params: dict[str, str | int] = {"updated_since": since.isoformat(), "limit": limit}
        cases: list[CaseView] = []
        for _ in range(max_pages):
            page = self._parse(await self._call("GET", "/api/v1/cases", {200}, params=params),
                               CasePage)
            cases.extend(page.cases)
            if page.next_cursor is None:
                break
            params = {"cursor": page.next_cursor, "limit": limit}
        return cases

    # ------------------------------------------------------------------ plumbing

    async def _call(self, method: str, path: str, ok: set[int], *, body: bytes | None = None,
                    params: dict[str, str | int] | None = None) -> httpx.Response:
        """Send one request and return a response whose status is in ``ok``."""
        if self._http is None:
            raise RuntimeError("CaseSystemClient used outside 'async with'")
        if self._breaker is not None and not self._breaker.allow():
            raise RetryableUplinkError(
                "circuit_open", detail=f"retry in {self._breaker.retry_in():.1f} s")
        headers = {"Content-Type": "application/json"} if body is not None else None
        try:
            resp = await self._http.request(method, path, content=body, params=params,
                                            headers=headers)
        except httpx.TransportError as e:
            self._failed()
            raise RetryableUplinkError(_transport_reason(e), detail=type(e).__name__) from e
        if resp.status_code in ok:
            return resp
        err = _error_body(resp)
        if resp.status_code >= 500 or resp.status_code in _RETRYABLE_4XX:
            self._failed()
            raise RetryableUplinkError(err.error, status=resp.status_code, detail=err.detail,
                                       retry_after=_retry_after(resp))
        self._succeeded()  # the server is healthy; it refused this request
        raise PermanentUplinkError(err.error, status=resp.status_code, detail=err.detail,
                                   field=err.field)

    def _parse(self, resp: httpx.Response, model: type[_M]) -> _M:
        try:
            parsed = model.model_validate_json(resp.content)
        except ValidationError as e:
            # The server may have applied the request and then garbled the reply. Retrying
            # is safe (idempotency key) and is the only way to learn the case id.
            self._failed()
            raise RetryableUplinkError(
                "bad_reply", status=resp.status_code,
                detail=f"{model.__name__}: {e.error_count()} problem(s)") from e
        self._succeeded()
        return parsed

    def _failed(self) -> None:
        if self._breaker is not None:
            self._breaker.record_failure()

    def _succeeded(self) -> None:
        if self._breaker is not None:
            self._breaker.record_success()


def _transport_reason(e: httpx.TransportError) -> str:
    if isinstance(e, httpx.TimeoutException):
        return "timeout"
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return "tls_error"
        cause = cause.__cause__ or cause.__context__
    if isinstance(e, httpx.ConnectError):
        return "connect_error"
    if isinstance(e, httpx.ProtocolError):
        return "protocol_error"
    return "network_error"


def _error_body(resp: httpx.Response) -> ErrorBody:
    """The server's ``{error, field, detail}``, or a stand-in when the body is not one."""
    try:
        body = ErrorBody.model_validate_json(resp.content)
    except ValidationError:
        return ErrorBody(error=f"http_{resp.status_code}",
                         detail=resp.reason_phrase[:_DETAIL_MAX])
    return body.model_copy(update={"detail": body.detail[:_DETAIL_MAX]})


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(min(int(value), 3600))
    return None  # an HTTP-date Retry-After is rare on APIs; the backoff applies instead
