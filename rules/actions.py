"""What the engine asks the gateway to do: raise/update/clear alarms, escalate, device faults.

Contract: every action is a frozen value with a ``to_json()`` dict whose ``"action"`` names its
type and whose timestamps are ISO 8601 UTC strings. ``key`` is the stable dedup key of the
alarm or fault (``"{rule_id}:{device_id}"``, ``"{rule_id}:{household_id}"``, ...): while an
alarm with a key is open, the engine never raises a second one with the same key.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gateway.kernel.model import Severity, Value
from rules.commands import CommandIntent

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["Action", "CareEnded", "ClearAlarm", "ClearFault", "Escalate", "RaiseAlarm",
           "RaiseFault", "TestRecord", "UpdateAlarm"]


def _json(obj: DataclassInstance, name: str) -> dict[str, Any]:
    out: dict[str, Any] = {"action": name}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, datetime):
            v = v.isoformat()
        elif isinstance(v, Severity):
            v = v.value
        elif isinstance(v, tuple):
            v = [x.to_json() if hasattr(x, "to_json") else x for x in v]
        elif hasattr(v, "to_json"):
            v = v.to_json()
        out[f.name] = v
    return out


@dataclass(frozen=True, slots=True)
class RaiseAlarm:
    """A new alarm. ``event_ts`` is the triggering reading's own time (None for timers).
    ``then``: the commands the rule sends with it (rules.commands; the gateway's linkage
    resolves and sends them)."""

    key: str
    rule_id: str
    category: str
    severity: Severity
    device_id: str | None
    household_id: str | None
    grid_cell: str | None
    message_zh: str
    message_en: str
    ts: datetime
    value: Value = None
    test: bool = False
    event_ts: datetime | None = None
    then: tuple[CommandIntent, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return _json(self, "raise_alarm")


@dataclass(frozen=True, slots=True)
class UpdateAlarm:
    """The open alarm ``key`` triggered again; ``count`` triggers so far (2 = second).
    ``again``: for a trigger, the alarm to raise if the gateway finds none open with this
    key (resolved meanwhile); None for the flapping notes, which are not triggers."""

    key: str
    ts: datetime
    count: int
    message_zh: str
    message_en: str
    flapping: bool = False
    again: RaiseAlarm | None = None

    def to_json(self) -> dict[str, Any]:
        return _json(self, "update_alarm")


@dataclass(frozen=True, slots=True)
class ClearAlarm:
    """The condition of alarm ``key`` ended. ``auto_resolve``: the alarm is closed too
    (otherwise it stays open for staff to resolve)."""

    key: str
    ts: datetime
    reason: str
    auto_resolve: bool

    def to_json(self) -> dict[str, Any]:
        return _json(self, "clear_alarm")


@dataclass(frozen=True, slots=True)
class Escalate:
    """Alarm ``key`` is unacknowledged past tier ``tier`` (1-based): notify ``targets``."""

    key: str
    tier: int
    tier_name: str
    targets: tuple[str, ...]
    ts: datetime

    def to_json(self) -> dict[str, Any]:
        return _json(self, "escalate")


@dataclass(frozen=True, slots=True)
class RaiseFault:
    """A device-health fault (not an alarm): ``fault`` is silent, battery_low, tamper, fault,
    offline or sources_offline (an inactivity rule's sources are all silent)."""

    key: str
    fault: str
    device_id: str | None
    household_id: str | None
    grid_cell: str | None
    message_zh: str
    message_en: str
    ts: datetime
    rule_id: str = ""
    severity: Severity = Severity.MINOR

    def to_json(self) -> dict[str, Any]:
        return _json(self, "raise_fault")


@dataclass(frozen=True, slots=True)
class ClearFault:
    key: str
    ts: datetime

    def to_json(self) -> dict[str, Any]:
        return _json(self, "clear_fault")


@dataclass(frozen=True, slots=True)
class TestRecord:
    """A rule triggered by a device in test or maintenance mode: recorded, never alarmed."""

    __test__ = False  # not a pytest test class

    device_id: str
    rule_id: str
    ts: datetime
    value: Value = None

    def to_json(self) -> dict[str, Any]:
        return _json(self, "test_record")


@dataclass(frozen=True, slots=True)
class CareEnded:
    """A household's care state (away, hospital, carer: ``rules.inactivity.set_care``) ended
    by itself: ``returned`` (activity at home ended an away or hospital stay early) or
    ``expected_end`` (a carer's stay reached its end). The gateway's store, which holds care
    states, ends it too."""

    household_id: str
    state: str
    reason: str
    ts: datetime
    rule_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return _json(self, "care_ended")


Action = (RaiseAlarm | UpdateAlarm | ClearAlarm | Escalate | RaiseFault | ClearFault | TestRecord
          | CareEnded)
