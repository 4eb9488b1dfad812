"""``then:`` of a rule: the commands (联动) its alarm sends, as rules.yaml writes them.

A rule's ``then`` is a list of commands; each names an ``action`` and a ``target``::

    then:
      - action: close_valve
        target: {household: same, type: gas_valve}    # the alarm's household's gas valves
      - action: siren_on
        target: {grid: same, type: siren}              # every siren of the alarm's grid cell
        duration: 3m                                    # siren only (default 3m)
      - action: switch_off
        target: {device: plug-h101-kitchen}             # one device by id

A target is one device (``device``), or the devices of a household (``household``) or grid
cell (``grid``), optionally of one device ``type``; ``same`` means the alarm's own household
or grid cell. A rule may only make things safe (:data:`gateway.kernel.commands.SAFE_ACTIONS`):
an ``open_valve``, ``siren_off`` or ``switch_on`` in ``then`` is a validation error — their
inverse is staff's, with a permission and a confirmation.

The rule engine stays pure: it copies a raising rule's commands onto its ``RaiseAlarm``
(:class:`CommandIntent`) and the gateway's linkage (gateway/linkage.py) resolves the targets
to devices, checks modes and rate limits, sends and waits for the device to confirm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from gateway.kernel.commands import SAFE_ACTIONS, Action
from gateway.kernel.model import DEVICE_TYPES
from rules.durations import parse_duration

__all__ = ["CommandIntent", "CommandSpec", "SAME", "SIREN_LEVELS", "SIREN_MODES", "Target",
           "intents"]

#: ``household: same`` / ``grid: same``: the alarm's own household or grid cell
SAME = "same"
#: the Zigbee IAS warning modes and levels a siren command may ask for (Zigbee2MQTT's words)
SIREN_MODES = ("emergency", "fire", "burglar", "police_panic", "fire_panic", "emergency_panic")
SIREN_LEVELS = ("low", "medium", "high", "very_high")
_ID = r"^[A-Za-z0-9_.:\-]{1,80}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(_Model):
    """Which devices a command goes to: one ``device``; or the devices of a ``household`` or
    ``grid`` cell (``same``: the alarm's), optionally only those of ``type``."""

    device: str | None = Field(default=None, pattern=_ID)
    household: str | None = Field(default=None, pattern=_ID)
    grid: str | None = Field(default=None, pattern=_ID)
    type: str | None = None

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str | None) -> str | None:
        if v is not None and v not in DEVICE_TYPES:
            raise PydanticCustomError("device_type", "unknown device type {t}; known: {k}",
                                      {"t": repr(v), "k": ", ".join(DEVICE_TYPES)})
        return v

    @model_validator(mode="after")
    def _one_scope(self) -> Target:
        scopes = [n for n in ("device", "household", "grid") if getattr(self, n) is not None]
        if len(scopes) != 1:
            raise PydanticCustomError(
                "target", "a target names exactly one of device, household or grid (got "
                "{g}), e.g. household: same, type: gas_valve",
                {"g": ", ".join(scopes) or "none"})
        if self.device is not None and self.type is not None:
            raise PydanticCustomError("target", "a device target takes no type (the device "
                                      "has one)", {})
        if self.device == SAME:
            raise PydanticCustomError("target", "'same' is for household or grid, not "
                                      "device", {})
        return self

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in (("device", self.device), ("household", self.household),
                                  ("grid", self.grid), ("type", self.type)) if v is not None}


class CommandSpec(_Model):
    """One command of a rule's ``then``: ``action`` to ``target`` (see module docstring)."""

    action: Action
    target: Target
    #: sirens: how long to sound (default 3 minutes), the warning mode and loudness
    duration: float | None = None
    mode: Literal["emergency", "fire", "burglar", "police_panic", "fire_panic",
                  "emergency_panic"] | None = None
    level: Literal["low", "medium", "high", "very_high"] | None = None

    @field_validator("action", mode="before")
    @classmethod
    def _safe_only(cls, v: Any) -> Any:
        try:
            action = Action(v)
        except ValueError:
            return v            # pydantic's own message lists the actions
        if action not in SAFE_ACTIONS:
            raise PydanticCustomError(
                "unsafe_action", "a rule may only make things safe ({safe}); {a} is for "
                "staff, from the alarm card, with the permission and a confirmation",
                {"safe": ", ".join(sorted(a.value for a in SAFE_ACTIONS)), "a": action.value})
        return action

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        if v is None:
            return v
        try:
            seconds = parse_duration(v)
        except ValueError as exc:
            raise PydanticCustomError("duration", "{msg}", {"msg": str(exc)}) from None
        if not 0 < seconds <= 3600:
            raise PydanticCustomError("duration", "a siren sounds for 1s to 1h, not {v}",
                                      {"v": repr(v)})
        return seconds

    @model_validator(mode="after")
    def _siren_fields(self) -> CommandSpec:
        given = [n for n in ("duration", "mode", "level") if getattr(self, n) is not None]
        if given and self.action is not Action.SIREN_ON:
            raise PydanticCustomError("command", "{f} only for siren_on",
                                      {"f": ", ".join(given)})
        return self

    def params(self) -> dict[str, Any]:
        """The action's details for the transport (sirens: mode, level, duration in s)."""
        if self.action is not Action.SIREN_ON:
            return {}
        return {"mode": self.mode or "emergency", "level": self.level or "high",
                "duration": int(self.duration or 180)}


@dataclass(frozen=True, slots=True)
class CommandIntent:
    """A command a raised alarm asks for, as the rule wrote it (``target`` keeps ``same``:
    the gateway reads it against the alarm's household and grid cell)."""

    action: str
    target: dict[str, str]
    params: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "target": dict(self.target), "params": dict(self.params)}


def intents(then: list[CommandSpec]) -> tuple[CommandIntent, ...]:
    """A rule's ``then`` as the intents its ``RaiseAlarm`` carries."""
    return tuple(CommandIntent(c.action.value, c.target.to_json(), c.params()) for c in then)
