"""The ``rules:`` and ``escalation:`` sections of a site's YAML, as pydantic v2 models.

Contract: :class:`RulesConfig` validates a plain mapping (as loaded from YAML). Every problem is
a normal :class:`pydantic.ValidationError` whose ``loc`` points at the offending key, e.g.
``("rules", 3, "threshold", "above")`` — the third path element is the rule's ``kind`` tag, as
pydantic reports discriminated unions. Unknown keys are errors (``extra="forbid"``). Durations
are strings such as ``"90s"``, ``"5m"``, ``"2h"`` and become seconds (float).

References to devices, households and grid cells are checked separately, against the site, by
:func:`check_references` (the rule file alone cannot know them).
"""

from __future__ import annotations

import contextvars
import string
from collections.abc import Collection, Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel, BeforeValidator, ConfigDict, Field, ModelWrapValidatorHandler, field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from gateway.kernel.model import ACTIVITY_KINDS, DEVICE_TYPES, UNITS, Kind, Severity
from rules.commands import SAME, CommandSpec
from rules.durations import parse_duration, parse_time_of_day

__all__ = [
    "BaselineSpec", "CannotWatchSpec", "CheckinRule", "CompoundRule", "CompoundTerm", "Condition", "CountRule",
    "Duration",
    "EscalationSpec", "EscalationTier", "FlappingSpec", "HeldRule", "InactivityRule",
    "MatchRule", "Message", "PolicySpec", "Rule", "RulesConfig", "SupervisionRule",
    "ThresholdRule", "TimeWindow", "TEMPLATE_FIELDS", "check_references", "value_type",
]

#: Placeholders a message template may use.
TEMPLATE_FIELDS = frozenset({
    "device_id", "household_id", "grid_cell", "value", "unit", "count", "duration",
    "rule_id", "fault", "explanation",
    # the names staff read (rules.site.SiteIndex.names; the id when the site names nothing)
    "device_name", "household_address", "grid_cell_name",
})

#: Physically possible ranges of numeric kinds (thresholds outside are impossible).
_RANGES: dict[Kind, tuple[float, float]] = {
    Kind.BATTERY: (0.0, 100.0), Kind.HUMIDITY: (0.0, 100.0),
    Kind.GAS_CONCENTRATION: (0.0, 100.0), Kind.SIGNAL: (0.0, 255.0),
    Kind.TEMPERATURE: (-60.0, 1200.0), Kind.POWER: (0.0, 1e7), Kind.VOLTAGE: (0.0, 1e6),
    Kind.CURRENT: (0.0, 1e5), Kind.FREQUENCY: (0.0, 1000.0),
}
_STR_KINDS = frozenset({Kind.ACCESS, Kind.BUTTON})
CUMULATIVE_KINDS = frozenset({Kind.ENERGY, Kind.ENERGY_EXPORT, Kind.WATER_VOLUME,
                              Kind.GAS_VOLUME})


def value_type(kind: Kind) -> type:
    """The Python type of a reading's value for ``kind``: ``float``, ``bool`` or ``str``."""
    if kind in UNITS:
        return float
    return str if kind in _STR_KINDS else bool


def _duration(v: Any) -> float:
    try:
        return parse_duration(v)
    except ValueError as exc:
        raise PydanticCustomError("duration", "{msg}", {"msg": str(exc)}) from None


#: A duration field: ``"90s"``, ``"5m"``, ``"2h"`` or seconds; validated to float seconds.
Duration = Annotated[float, BeforeValidator(_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Message(_Model):
    """Alarm text templates in both languages, ``str.format`` style with TEMPLATE_FIELDS."""

    zh: str = Field(min_length=1)
    en: str = Field(min_length=1)

    @field_validator("zh", "en")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        try:
            names = [f for _, f, _, _ in string.Formatter().parse(v) if f is not None]
        except ValueError as exc:
            raise PydanticCustomError("template", "bad template: {e}", {"e": str(exc)}) from None
        unknown = sorted({n for n in names if n.split(".")[0].split("[")[0] not in TEMPLATE_FIELDS})
        if unknown:
            raise PydanticCustomError(
                "template", "unknown placeholder(s) {u}; allowed: {a}",
                {"u": ", ".join(unknown), "a": ", ".join(sorted(TEMPLATE_FIELDS))})
        return v


class Condition(_Model):
    """A reading of ``kind`` whose value equals ``value`` (``value`` omitted: any value)."""

    kind: Kind
    value: bool | float | str | None = None

    @model_validator(mode="after")
    def _value_matches_kind(self) -> Condition:
        if self.value is None:
            return self
        want = value_type(self.kind)
        got = type(self.value)
        if want is float and got is int:
            return self
        if got is not want:
            raise PydanticCustomError(
                "condition_value", "{kind} readings carry a {want} value, not {v}",
                {"kind": self.kind.value, "want": want.__name__, "v": repr(self.value)})
        return self


class TimeWindow(_Model):
    """Local time-of-day window ``start``–``end`` (``"HH:MM"``); may span midnight."""

    start: Annotated[int, BeforeValidator(parse_time_of_day)]
    end: Annotated[int, BeforeValidator(parse_time_of_day)]

    @model_validator(mode="after")
    def _not_empty(self) -> TimeWindow:
        if self.start == self.end:
            raise PydanticCustomError("time_window", "start and end are equal: empty window", {})
        return self

    def contains(self, minute_of_day: int) -> bool:
        """True when local ``minute_of_day`` is inside ``[start, end)``."""
        if self.start < self.end:
            return self.start <= minute_of_day < self.end
        return minute_of_day >= self.start or minute_of_day < self.end


class FlappingSpec(_Model):
    """More than ``changes`` raise/clear transitions within ``window`` = flapping."""

    changes: int = Field(default=4, ge=2)
    window: Duration = 600.0


class _RuleBase(_Model):
    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$", max_length=80)
    devices: list[str] = []
    device_types: list[str] = []
    households: list[str] = []
    grid_cells: list[str] = []
    severity: Severity = Severity.MAJOR
    category: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    message: Message
    enabled: bool = True
    escalate: bool = True
    flapping: FlappingSpec | None = FlappingSpec()
    #: commands the alarm sends (联动, rules.commands): safe actions only
    then: list[CommandSpec] = []

    @field_validator("id")
    @classmethod
    def _unique(cls, v: str) -> str:
        seen = _SEEN_IDS.get()
        if seen is not None:
            if v in seen:
                raise PydanticCustomError("duplicate_id", "duplicate rule id {id}", {"id": repr(v)})
            seen.add(v)
        return v

    @field_validator("device_types")
    @classmethod
    def _known_types(cls, v: list[str]) -> list[str]:
        for t in v:
            if t not in DEVICE_TYPES:
                raise PydanticCustomError("device_type", "unknown device type {t}; known: {k}",
                                          {"t": repr(t), "k": ", ".join(DEVICE_TYPES)})
        return v


_SEEN_IDS: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar("_SEEN_IDS",
                                                                            default=None)


class MatchRule(_RuleBase):
    """An event (``when``) raises an alarm; ``clear_when`` clears it."""

    kind: Literal["match"]
    when: Condition
    clear_when: Condition | None = None
    auto_resolve_on_clear: bool = False


class ThresholdRule(_RuleBase):
    """A numeric ``metric`` above/below a limit for ``for`` seconds; clears past hysteresis."""

    kind: Literal["threshold"]
    metric: Kind
    above: float | None = None
    below: float | None = None
    hysteresis: float = Field(default=0.0, ge=0.0)
    for_: Duration = Field(default=0.0, alias="for")
    auto_resolve_on_clear: bool = True

    @model_validator(mode="after")
    def _limits(self) -> ThresholdRule:
        if value_type(self.metric) is not float:
            raise PydanticCustomError("metric", "{m} is not a numeric kind",
                                      {"m": self.metric.value})
        if (self.above is None) == (self.below is None):
            raise PydanticCustomError("threshold", "give exactly one of 'above' or 'below'", {})
        # narrowed on the value itself, not on the other field: exactly one is set (above)
        if self.above is not None:
            limit, clear = self.above, self.above - self.hysteresis
        elif self.below is not None:
            limit, clear = self.below, self.below + self.hysteresis
        else:  # pragma: no cover - excluded by the check above
            raise PydanticCustomError("threshold", "give exactly one of 'above' or 'below'", {})
        lo, hi = _RANGES.get(self.metric, (float("-inf"), float("inf")))
        for name, v in (("limit", limit), ("clear level (limit -/+ hysteresis)", clear)):
            if not lo <= v <= hi:
                raise PydanticCustomError(
                    "impossible_threshold", "{name} {v} is outside the possible range "
                    "{lo}..{hi} of {m}", {"name": name, "v": v, "lo": lo, "hi": hi,
                                          "m": self.metric.value})
        return self


class CountRule(_RuleBase):
    """``count`` events matching ``when`` within ``window``, per device or per household."""

    kind: Literal["count"]
    when: Condition
    count: int = Field(ge=2)
    window: Duration
    per: Literal["device", "household"] = "device"

    @field_validator("window")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise PydanticCustomError("duration", "window must be longer than 0s", {})
        return v


class HeldRule(_RuleBase):
    """A state held for ``for``: ``when`` true (door open), or a cumulative meter increasing
    on every reading (``increasing: true``: water flowing without pause); optionally only
    during local ``hours``."""

    kind: Literal["held"]
    when: Condition
    increasing: bool = False
    for_: Duration = Field(alias="for")
    hours: TimeWindow | None = None
    auto_resolve_on_clear: bool = True

    @model_validator(mode="after")
    def _state(self) -> HeldRule:
        k = self.when.kind
        if self.increasing:
            if k not in CUMULATIVE_KINDS:
                raise PydanticCustomError("held", "'increasing' needs a cumulative kind ({c})",
                                          {"c": ", ".join(sorted(CUMULATIVE_KINDS))})
        elif self.when.value is None:
            raise PydanticCustomError("held", "give the held value (e.g. value: true) or "
                                      "increasing: true", {})
        if self.for_ <= 0:
            raise PydanticCustomError("duration", "'for' must be longer than 0s", {})
        return self


class SupervisionRule(_RuleBase):
    """Device health faults (kept apart from alarms): silence, low battery, tamper, fault,
    offline. ``silence`` omitted: the device type's reporting interval allowance."""

    kind: Literal["supervision"]
    category: str = Field(default="device_fault", pattern=r"^[a-z][a-z0-9_]*$")
    severity: Severity = Severity.MINOR
    silence: Duration | None = None
    battery_below: float | None = Field(default=20.0, ge=0.0, le=100.0)
    tamper: bool = True
    fault: bool = True
    offline: bool = True

    @field_validator("then")
    @classmethod
    def _no_commands(cls, v: list[CommandSpec]) -> list[CommandSpec]:
        if v:
            raise PydanticCustomError("then", "supervision rules raise device faults, not "
                                      "alarms: they send no commands", {})
        return v


class BaselineSpec(_Model):
    """Learned rhythm (:mod:`rules.baseline`): alarm when the gap passes the time by which the
    household is usually active again after an hour like the one of its last activity
    (+ ``grace``), never sooner than ``floor`` nor later than ``ceiling`` after it. While the
    resident is out (the last activity was the front door opening, nothing moved inside
    since) the limit is ``away_limit`` instead."""

    floor: Duration = 3600.0
    ceiling: Duration = 24 * 3600.0
    grace: Duration = 1800.0
    away_limit: Duration = 24 * 3600.0
    min_weeks: int = Field(default=2, ge=1, le=52)
    min_samples: int = Field(default=3, ge=1, le=50)

    @model_validator(mode="after")
    def _order(self) -> BaselineSpec:
        if not 0 < self.floor < self.ceiling:
            raise PydanticCustomError("baseline", "need 0 < floor < ceiling", {})
        if self.away_limit <= 0:
            raise PydanticCustomError("baseline", "away_limit must be longer than 0s", {})
        return self


class CannotWatchSpec(_Model):
    """无法监护: every activity source of a household is silent by its supervision, so its
    resident cannot be watched. An alarm of its own ``category`` (the inactivity rule's
    severity and escalation), never an inactivity alarm."""

    category: str = Field(default="cannot_watch", pattern=r"^[a-z][a-z0-9_]*$")
    message: Message = Message(
        zh="无法监护：{household_address}，{explanation}",
        en="Cannot watch the resident of {household_address}: {explanation}")
    #: the sensors reporting again leaves the alarm open for staff (who may have been sent)
    auto_resolve_on_clear: bool = False


class InactivityRule(_RuleBase):
    """No activity in a household for ``threshold`` (quiet hours not counted), or for longer
    than its learned ``baseline`` allows."""

    kind: Literal["inactivity"]
    category: str = Field(default="inactivity", pattern=r"^[a-z][a-z0-9_]*$")
    lives_alone_only: bool = True
    sources: list[Kind] = Field(default_factory=lambda: sorted(ACTIVITY_KINDS), min_length=1)
    threshold: Duration = 12 * 3600.0
    quiet_hours: TimeWindow | None = None
    baseline: BaselineSpec | None = None
    #: the longest a source device may be silent before it counts as silent (a device's
    #: supervision silence allowance, if shorter, applies)
    sources_offline_after: Duration = 6 * 3600.0
    #: every source silent: a 无法监护 alarm (None: a minor ``sources_offline`` fault)
    cannot_watch: CannotWatchSpec | None = CannotWatchSpec()
    #: an away or hospital stay with an expected end: the "overdue return" alarm comes this
    #: long after it with no sign of return
    overdue_after: Duration = 2 * 3600.0
    #: activity at home ends an away or hospital stay only after the home was quiet this
    #: long since its start (the resident had left; packing before leaving does not)
    away_settle: Duration = 1800.0
    #: an alarm resolved by staff while the gap goes on is raised again after this long
    #: (an open one is updated); None: once per gap
    repeat_after: Duration | None = 12 * 3600.0
    auto_resolve_on_clear: bool = False

    @field_validator("threshold", "sources_offline_after", "repeat_after", "overdue_after",
                     "away_settle")
    @classmethod
    def _positive(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise PydanticCustomError("duration", "must be longer than 0s", {})
        return v


class CheckinRule(_RuleBase):
    """报平安: the households that opted in (``households``, at least one) press any key of
    their emergency caller once a day between ``opens`` and ``by`` (local); a day without
    raises a follow-up of its own category (rules.checkin)."""

    kind: Literal["checkin"]
    category: str = Field(default="checkin_missed", pattern=r"^[a-z][a-z0-9_]*$")
    households: list[str] = Field(min_length=1)
    opens: Annotated[int, BeforeValidator(parse_time_of_day)] = 4 * 60
    by: Annotated[int, BeforeValidator(parse_time_of_day)]
    message: Message = Message(zh="未报平安：{household_address}，{explanation}",
                               en="No check-in from {household_address}: {explanation}")
    auto_resolve_on_clear: bool = False

    @model_validator(mode="after")
    def _order(self) -> CheckinRule:
        if not self.opens < self.by:
            raise PydanticCustomError("checkin", "'opens' must come before 'by' in the day", {})
        return self


class CompoundTerm(_Model):
    """One condition of a compound rule."""

    when: Condition


class CompoundRule(_RuleBase):
    """``all`` (or ``any``) of the terms seen within ``window`` in one household/cell/device."""

    kind: Literal["compound"]
    all: list[CompoundTerm] | None = None
    any: list[CompoundTerm] | None = None
    window: Duration
    per: Literal["household", "grid_cell", "device"] = "household"

    @model_validator(mode="after")
    def _terms(self) -> CompoundRule:
        if (self.all is None) == (self.any is None):
            raise PydanticCustomError("compound", "give exactly one of 'all' or 'any'", {})
        if self.all is not None and len(self.all) < 2:
            raise PydanticCustomError("compound", "'all' needs at least two terms", {})
        if self.any is not None and len(self.any) < 1:
            raise PydanticCustomError("compound", "'any' needs at least one term", {})
        return self

    @property
    def terms(self) -> list[CompoundTerm]:
        return self.all if self.all is not None else self.any  # type: ignore[return-value]


Rule = Annotated[
    Union[MatchRule, ThresholdRule, CountRule, HeldRule, SupervisionRule, InactivityRule,
          CompoundRule, CheckinRule],
    Field(discriminator="kind"),
]


class EscalationTier(_Model):
    name: str = Field(min_length=1)
    after: Duration
    notify: list[str] = Field(min_length=1)


class EscalationSpec(_Model):
    """Tiers notified ``after`` the alarm was raised, until someone acknowledges it."""

    tiers: list[EscalationTier] = Field(min_length=1)
    min_severity: Severity = Severity.MINOR

    @field_validator("tiers")
    @classmethod
    def _increasing(cls, v: list[EscalationTier]) -> list[EscalationTier]:
        for a, b in zip(v, v[1:]):
            if b.after <= a.after:
                raise PydanticCustomError(
                    "escalation_order", "tier {b} must come after tier {a} "
                    "(its 'after' must be longer)", {"a": repr(a.name), "b": repr(b.name)})
        return v


class PolicySpec(_Model):
    """Time and ordering policy (see docs/rules.md, "Time and ordering")."""

    max_clock_step: Duration = 300.0
    max_future: Duration = 300.0


class RulesConfig(_Model):
    rules: list[Rule] = []
    escalation: EscalationSpec | None = None
    policy: PolicySpec = PolicySpec()

    @model_validator(mode="wrap")
    @classmethod
    def _track_ids(cls, data: Any,
                   handler: ModelWrapValidatorHandler[RulesConfig]) -> RulesConfig:
        token = _SEEN_IDS.set(set())
        try:
            return handler(data)
        finally:
            _SEEN_IDS.reset(token)


def check_references(config: RulesConfig, device_ids: Collection[str],
                     household_ids: Collection[str], grid_cells: Collection[str],
                     ) -> list[tuple[tuple[str | int, ...], str]]:
    """Rules that name devices, households or grid cells the site does not have.

    Returns ``(loc, message)`` pairs; ``loc`` is ``("rules", i, "devices", j)`` style (no kind
    tag), directly the YAML path. Empty list: every reference resolves.
    """
    problems: list[tuple[tuple[str | int, ...], str]] = []
    known: Mapping[str, tuple[Collection[str], str]] = {
        "devices": (device_ids, "device"), "households": (household_ids, "household"),
        "grid_cells": (grid_cells, "grid cell")}
    for i, rule in enumerate(config.rules):
        for field, (ids, noun) in known.items():
            for j, ref in enumerate(getattr(rule, field)):
                if ref not in ids:
                    problems.append((("rules", i, field, j),
                                     f"rule {rule.id!r}: unknown {noun} {ref!r}"))
        for j, command in enumerate(rule.then):
            for field, ids, noun in (("device", device_ids, "device"),
                                     ("household", household_ids, "household"),
                                     ("grid", grid_cells, "grid cell")):
                ref = getattr(command.target, field)
                if ref is not None and ref != SAME and ref not in ids:
                    problems.append((("rules", i, "then", j, "target", field),
                                     f"rule {rule.id!r}: command to unknown {noun} {ref!r}"))
    return problems
