"""Uplinks: how alarms leave the gateway (today: the city's grid case system, 网格化管理平台).

The contract with the case system is docs/case-system.md (OpenAPI: docs/case-system.openapi.yaml).

Every failure of an uplink call is one of exactly two exceptions, both derived from
:class:`gateway.UplinkError`, so a caller (the durable outbox) needs one decision only:

- :class:`RetryableUplinkError` — try again later with the SAME idempotency key: the
  connection failed or timed out, the server answered 5xx, 401 (our clock or key: fixed
  outside the request), 408 or 429, the circuit breaker
  is open, or the reply could not be understood. A garbled reply to a POST may come from a
  server that already applied the request; retrying is safe precisely because every create
  and update carries an idempotency key the server deduplicates on.
- :class:`PermanentUplinkError` — the server understood and refused (4xx other than 401/408/429:
  validation, unknown case, idempotency-key conflict). Retrying the same request
  will not help; the outbox surfaces it to staff instead of retrying forever.

Both carry ``status`` (the HTTP status, or ``None`` when there was no reply), ``reason``
(a short machine code such as ``"timeout"`` or ``"validation_error"``) and ``detail``
(human text, never secrets or resident data).

Signature errors of *incoming* requests (the case system calling back) are
:class:`gateway.uplink.signing.SignatureError`.
"""

from __future__ import annotations

from gateway import UplinkError

__all__ = [
    "PermanentUplinkError",
    "RetryableUplinkError",
]


class _UplinkFailure(UplinkError):
    """Shared shape of the two public uplink errors (not raised itself)."""

    def __init__(self, reason: str, *, status: int | None = None, detail: str = "") -> None:
        self.reason = reason
        self.status = status
        self.detail = detail
        where = f"HTTP {status}" if status is not None else "no reply"
        super().__init__(f"{reason} ({where})" + (f": {detail}" if detail else ""))


class RetryableUplinkError(_UplinkFailure):
    """Try again later with the same idempotency key.

    ``retry_after`` is the server's ``Retry-After`` in seconds when it sent one (429/503),
    a lower bound for the next attempt's delay.
    """

    def __init__(self, reason: str, *, status: int | None = None, detail: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(reason, status=status, detail=detail)
        self.retry_after = retry_after


class PermanentUplinkError(_UplinkFailure):
    """The server refused the request; retrying it unchanged will not help.

    ``field`` names the offending field (dotted path, e.g. ``"household.address"``) when
    the server reported one.
    """

    def __init__(self, reason: str, *, status: int | None = None, detail: str = "",
                 field: str | None = None) -> None:
        super().__init__(reason, status=status, detail=detail)
        self.field = field
