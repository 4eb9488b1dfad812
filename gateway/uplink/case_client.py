"""HTTP client of the city's grid case system (contract: docs/case-system.md).

``POST /api/v1/cases`` opens a case (201) or returns the case already opened under the same
idempotency key (200); ``POST /api/v1/cases/{case_id}/updates`` adds a sequenced, idempotent
update; ``GET`` reads one case or pages through cases changed since a time. Every request is
signed (:mod:`gateway.uplink.signing`). The wire models are :mod:`gateway.uplink.case_models`;
the breaker is the kernel's (:mod:`gateway.kernel.resilience`).

:class:`CaseSystemClient` maps every failure to :class:`RetryableUplinkError` or
:class:`PermanentUplinkError` (see :mod:`gateway.uplink` for which is which and why).
"""

from __future__ import annotations

import functools
import logging
import ssl
import time
from collections.abc import Callable, Generator
from datetime import datetime
from types import TracebackType
from typing import Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from gateway.kernel.resilience import CircuitBreaker
from gateway.uplink import PermanentUplinkError, RetryableUplinkError
from gateway.uplink.case_models import (CaseCreate, CaseCreated, CasePage, CaseRef, CaseUpdate,
                                        CaseView, ErrorBody, UpdateAccepted, UpdateRef)
from gateway.uplink.signing import Secret, signed_headers

__all__ = ["CaseSystemClient", "HmacAuth"]

# the logger keeps the name it had before the split (log filters and operators' habits)
log = logging.getLogger("gateway.uplink.case_system")

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


@functools.lru_cache(maxsize=8)
def _tls_context(scheme: str, ca_bundle: str | None, verify: bool) -> ssl.SSLContext | bool:
    """The TLS settings, made when the client is built (and shared by the clients of one
    case system: the forwarder's, the status poller's), not by httpx in ``__aenter__``: its
    default loads the CA bundle, ~60 ms of the event loop per client, while the first alarms
    come in. ``ca_bundle`` wins over ``verify`` (as before); https otherwise trusts what
    httpx would (certifi, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``). A plain ``http://`` case
    system (a test rig, a private network) gets a context that trusts no CA: redirects are
    not followed, so no TLS connection is ever made, and one would fail closed."""
    if ca_bundle:
        return ssl.create_default_context(cafile=ca_bundle)
    if not verify:
        return False
    if scheme == "http":
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)   # verifies (hostname, chain): no CAs
    return httpx.create_ssl_context()


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
        self._verify = _tls_context(httpx.URL(self.base_url).scheme, ca_bundle, verify_tls)
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
                                {200, 201}, body=update.model_dump_json(
                                    # no call (1.1 updates): left out, not sent as null
                                    exclude={"call"} if update.call is None else None).encode())
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
