"""Contract models of the city's grid case system (网格化管理平台): the wire format.

The contract is docs/case-system.md (docs/case-system.openapi.yaml). The models are the wire
format: unknown fields in a reply are ignored, so the case system may add fields without
breaking a deployed gateway. Their ``repr`` can hold resident data (the household address):
log ids, never models. :func:`decode_callback` verifies and parses one status callback;
:class:`CaseRef` and :class:`UpdateRef` are what the client
(:mod:`gateway.uplink.case_client`) returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import AnyHttpUrl, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from gateway.model import Kind, Severity
from gateway.uplink.signing import Verifier

__all__ = [
    "CATEGORY_BY_KIND",
    "CallOutcome",
    "CaseCall",
    "CareReport",
    "CareState",
    "CONTRACT_VERSION",
    "MAX_DEVICES",
    "CaseCallback",
    "CaseCategory",
    "CaseCreate",
    "CaseCreated",
    "CaseEvent",
    "CasePage",
    "CaseRef",
    "CaseStatus",
    "CaseUpdate",
    "CaseView",
    "Device",
    "ErrorBody",
    "Household",
    "ResolutionReason",
    "ServiceRequest",
    "UpdateAccepted",
    "UpdateKind",
    "UpdateRef",
    "decode_callback",
]

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
    #: a help or everyday-service request (求助 / 生活服务), not an emergency; the case
    #: carries ``service`` (since 1.3)
    SERVICE = "service"


#: The case category for an alarm-class reading kind (inactivity comes from a rule, not a kind).
CATEGORY_BY_KIND: dict[Kind, CaseCategory] = {
    Kind.SOS: CaseCategory.EMERGENCY_CALL,
    Kind.SMOKE: CaseCategory.FIRE,
    Kind.HEAT: CaseCategory.FIRE,
    Kind.FIRE: CaseCategory.FIRE,
    Kind.GAS: CaseCategory.GAS,
    Kind.CARBON_MONOXIDE: CaseCategory.GAS,   # the contract's category for harmful gas
    Kind.WATER_LEAK: CaseCategory.WATER_LEAK,
    Kind.PANIC: CaseCategory.PANIC,
    Kind.INTRUSION: CaseCategory.INTRUSION,
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


class CallOutcome(StrEnum):
    """What came of one call of the gateway's call plan (since 1.2)."""

    CONNECTED = "connected"         # 接通: the person answered
    NO_ANSWER = "no_answer"         # 无人接听
    ON_SITE = "on_site"             # 已到场: the person called is there
    NOTIFIED = "notified"           # 已通知: told (a message left, an office informed)


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


class ServiceRequest(_Wire):
    """What a service case (category ``service``, since 1.3) is about: the site's help
    category (its id and its Chinese name) and how it was raised."""

    category: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    name: str = Field(min_length=1, max_length=20)
    channel: Literal["caller_key", "phone", "console"]


#: Contract version: docs/case-system.openapi.yaml ``info.version`` (docs/case-system.md 8).
CONTRACT_VERSION = "1.4.0"
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
    #: a service case's request (category ``service``; since 1.3)
    service: ServiceRequest | None = None

    @model_validator(mode="after")
    def _service_iff_service_category(self) -> Self:
        if (self.category is CaseCategory.SERVICE) != (self.service is not None):
            raise ValueError("service is required with category 'service' and only then")
        return self


class CaseCall(_Wire):
    """One call staff made from the alarm's call plan and its outcome (a ``note`` update's
    ``call``, since 1.2). No phone number: the case system has its own directory."""

    contact: str = Field(min_length=1, max_length=64, pattern=r"^\S+$",
                         description="the call's key in the plan: resident:0, contact:1, "
                                     "grid_member, on_call:<id>")
    kind: Literal["resident", "contact", "grid_member", "on_call"]
    name: str = Field(min_length=1, max_length=50)
    relation: str = Field(default="", max_length=20)
    outcome: CallOutcome


class CaseUpdate(_Wire):
    """Body of ``POST /api/v1/cases/{case_id}/updates``; ``sequence`` increases per case."""

    idempotency_key: IdempotencyKey
    sequence: int = Field(ge=1, le=2**31 - 1)
    kind: UpdateKind
    occurred_at: AwareDatetime
    reason: ResolutionReason | None = None
    note: str = Field(default="", max_length=1000)
    actor: str | None = Field(default=None, max_length=64)
    #: a call of the call plan and its outcome (kind ``note``; since 1.2)
    call: CaseCall | None = None

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


class CareState(StrEnum):
    """A household's care state as the grid reports it (since 1.4.0); ``ended``: none."""

    AWAY = "away"
    HOSPITAL = "hospital"
    CARER = "carer"
    ENDED = "ended"


class CareReport(_Wire):
    """Since 1.4.0, on a case event: the handler reports a care state of the case's
    household (the resident is in hospital until a date, away, a carer is with them, or
    back home: ``ended``); ``until``: the expected end, if known."""

    state: CareState
    until: AwareDatetime | None = None
    note: str = Field(default="", max_length=200)


class CaseEvent(_Wire):
    """One status change in a case's history; ``event_id`` is unique per change. ``care``
    (since 1.4.0): a care state of the case's household reported with it."""

    event_id: str = Field(min_length=1)
    status: CaseStatus
    handler: str | None = None
    note: str = ""
    changed_at: AwareDatetime
    care: CareReport | None = None


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
    care: CareReport | None = None


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
