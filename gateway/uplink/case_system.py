"""The city's grid case system (网格化管理平台): one import for its contract and client.

The contract is docs/case-system.md. In short: ``POST /api/v1/cases`` opens a case (201) or
returns the case already opened under the same idempotency key (200); ``POST
/api/v1/cases/{case_id}/updates`` adds a sequenced, idempotent update; ``GET`` reads one case
or pages through cases changed since a time. Every request is signed
(:mod:`gateway.uplink.signing`).

:class:`CaseSystemClient` maps every failure to :class:`RetryableUplinkError` or
:class:`PermanentUplinkError` (see :mod:`gateway.uplink` for which is which and why).
:class:`Backoff` and :class:`CircuitBreaker` are the pure pieces the outbox schedules with;
they are the kernel's (:mod:`gateway.kernel.resilience`), re-exported here.

This module re-exports three seams: the contract models (:mod:`gateway.uplink.case_models`:
wire models, enums, ``CONTRACT_VERSION``, :func:`decode_callback`), the client
(:mod:`gateway.uplink.case_client`: :class:`CaseSystemClient`, :class:`HmacAuth`) and the
resilience pieces.

The models are the wire format: unknown fields in a reply are ignored, so the case system
may add fields without breaking a deployed gateway. Their ``repr`` can hold resident data
(the household address): log ids, never models.
"""

from __future__ import annotations

from gateway.kernel.resilience import Backoff, BreakerState, CircuitBreaker
from gateway.uplink.case_client import CaseSystemClient, HmacAuth
from gateway.uplink.case_models import (CATEGORY_BY_KIND, CONTRACT_VERSION, MAX_DEVICES,
                                        CareReport, CareState, CaseCallback, CaseCategory,
                                        CaseCreate, CaseCreated,
                                        CaseEvent, CasePage, CaseRef, CaseStatus, CaseUpdate,
                                        CaseView, Device, ErrorBody, Household, ResolutionReason,
                                        UpdateAccepted, UpdateKind, UpdateRef, decode_callback)

__all__ = [
    "CATEGORY_BY_KIND",
    "CONTRACT_VERSION",
    "MAX_DEVICES",
    "Backoff",
    "BreakerState",
    "CareReport",
    "CareState",
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
