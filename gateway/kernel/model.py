"""The one normalized model of what devices report.

Every driver turns bytes/JSON into :class:`Reading` objects; the rule engine, the
telemetry sink, the store and the API all speak this vocabulary (see docs/architecture.md).
Part of the kernel (:mod:`gateway.kernel`): imports nothing else of the project.
``utc`` is :func:`gateway.kernel.clock.utc`, re-exported here for the model's users.

Timestamps are timezone-aware UTC ``datetime`` objects. Values are ``float`` for
measurements, ``bool`` for binary states (``True`` = the condition named by the kind is
present: smoke detected, door open, button pressed) and ``str`` for enumerations
(access result, button action).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from gateway.kernel.clock import utc

__all__ = [
    "ALARM_KINDS",
    "BOOL_KINDS",
    "STR_KINDS",
    "ACTIVITY_KINDS",
    "UNITS",
    "DEVICE_TYPES",
    "Kind",
    "Quality",
    "Reading",
    "Severity",
    "Value",
    "utc",
]

Value = float | bool | str | None


class Kind(StrEnum):
    """Fixed vocabulary of reading kinds. Units are fixed per kind (see ``UNITS``)."""

    # alarm-class events (durable path; never shed)
    SOS = "sos"                      # bool: emergency button pressed (True) / cancelled (False)
    SMOKE = "smoke"                  # bool: smoke detected
    HEAT = "heat"                    # bool: heat alarm
    FIRE = "fire"                    # bool: fire alarm from a panel
    GAS = "gas"                      # bool: combustible gas detected
    CARBON_MONOXIDE = "carbon_monoxide"  # bool: carbon monoxide detected (CO detector)
    WATER_LEAK = "water_leak"        # bool: leak detected
    PANIC = "panic"                  # bool: panic / duress
    INTRUSION = "intrusion"          # bool: burglary / intrusion (alarm panel zone)
    TAMPER = "tamper"                # bool: enclosure opened / removed
    FAULT = "fault"                  # bool: device reports an internal fault
    # activity and state
    MOTION = "motion"                # bool: motion detected
    DOOR_OPEN = "door_open"          # bool: door/contact open
    ACCESS = "access"                # str: "granted" | "denied"
    BUTTON = "button"                # str: action name ("single", "double", "hold", ...)
    TEST = "test"                    # bool: manual/periodic test signal
    # supervision
    BATTERY = "battery"              # float: percent
    BATTERY_LOW = "battery_low"      # bool
    AVAILABILITY = "availability"    # bool: device says it is online
    SIGNAL = "signal"                # float: link quality (0-255)
    # measurements
    TEMPERATURE = "temperature"      # float: degC
    HUMIDITY = "humidity"            # float: %RH
    GAS_CONCENTRATION = "gas_concentration"  # float: %LEL
    ENERGY = "energy"                # float: kWh, cumulative
    ENERGY_EXPORT = "energy_export"  # float: kWh, cumulative
    POWER = "power"                  # float: W
    VOLTAGE = "voltage"              # float: V
    CURRENT = "current"              # float: A
    FREQUENCY = "frequency"          # float: Hz
    WATER_VOLUME = "water_volume"    # float: m3, cumulative
    GAS_VOLUME = "gas_volume"        # float: m3, cumulative
    VALVE_OPEN = "valve_open"        # bool
    SIREN = "siren"                  # bool: siren sounding (True) / silent (False)
    SWITCH = "switch"                # bool: switched socket / relay on (True) / off (False)


UNITS: dict[Kind, str] = {
    Kind.BATTERY: "%",
    Kind.SIGNAL: "lqi",
    Kind.TEMPERATURE: "degC",
    Kind.HUMIDITY: "%RH",
    Kind.GAS_CONCENTRATION: "%LEL",
    Kind.ENERGY: "kWh",
    Kind.ENERGY_EXPORT: "kWh",
    Kind.POWER: "W",
    Kind.VOLTAGE: "V",
    Kind.CURRENT: "A",
    Kind.FREQUENCY: "Hz",
    Kind.WATER_VOLUME: "m3",
    Kind.GAS_VOLUME: "m3",
}

#: Kinds whose readings take the durable path: committed before the device is acknowledged.
ALARM_KINDS: frozenset[Kind] = frozenset(
    {Kind.SOS, Kind.SMOKE, Kind.HEAT, Kind.FIRE, Kind.GAS, Kind.CARBON_MONOXIDE,
     Kind.WATER_LEAK, Kind.PANIC, Kind.INTRUSION, Kind.TAMPER, Kind.FAULT}
)

#: Kinds that show a resident is active at home (inputs of the inactivity rule).
ACTIVITY_KINDS: frozenset[Kind] = frozenset(
    {Kind.MOTION, Kind.DOOR_OPEN, Kind.WATER_VOLUME, Kind.ENERGY, Kind.SOS, Kind.BUTTON,
     Kind.ACCESS}
)

#: Device types an installer can register. Profiles map each to its readings.
DEVICE_TYPES: tuple[str, ...] = (
    "emergency_caller",
    "smoke_detector",
    "heat_detector",
    "gas_detector",
    "water_leak_detector",
    "door_access",
    "door_contact",
    "motion_sensor",
    "electricity_meter",
    "water_meter",
    "gas_meter",
    "temperature_sensor",
    "alarm_panel",
    "gas_valve",
    "siren",
    "smart_plug",
)


class Quality(StrEnum):
    GOOD = "good"
    UNCERTAIN = "uncertain"   # decoded, but e.g. out of the device's range
    BAD = "bad"               # could not be read; value is None, never a made-up 0


class Severity(StrEnum):
    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    INFO = "info"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.CRITICAL: 0, Severity.MAJOR: 1, Severity.MINOR: 2, Severity.INFO: 3}


BOOL_KINDS = frozenset(
    {Kind.SOS, Kind.SMOKE, Kind.HEAT, Kind.FIRE, Kind.GAS, Kind.CARBON_MONOXIDE,
     Kind.WATER_LEAK, Kind.PANIC, Kind.INTRUSION, Kind.TAMPER, Kind.FAULT, Kind.MOTION, Kind.DOOR_OPEN, Kind.TEST, Kind.BATTERY_LOW,
     Kind.AVAILABILITY, Kind.VALVE_OPEN, Kind.SIREN, Kind.SWITCH}
)
STR_KINDS = frozenset({Kind.ACCESS, Kind.BUTTON})


@dataclass(frozen=True, slots=True)
class Reading:
    """One normalized observation from one device.

    ``household_id`` and ``grid_cell`` are filled from the site configuration by the
    pipeline (drivers know only the device). ``quality`` BAD means ``value`` is None.
    """

    device_id: str
    kind: Kind
    value: Value
    ts: datetime
    unit: str = ""
    quality: Quality = Quality.GOOD
    device_type: str = ""
    household_id: str | None = None
    grid_cell: str | None = None
    metric: str = ""          # the profile's own name for the field (e.g. "voltage_l1")

    def __post_init__(self) -> None:
        if not self.device_id:
            raise ValueError("reading without device_id")
        if not isinstance(self.kind, Kind):
            object.__setattr__(self, "kind", Kind(self.kind))
        if self.ts.tzinfo is None:
            raise ValueError(f"{self.device_id}: naive timestamp {self.ts!r}")
        if self.quality is Quality.BAD:
            if self.value is not None:
                raise ValueError(f"{self.device_id}: bad-quality reading must have value None")
            return
        v = self.value
        if self.kind in BOOL_KINDS:
            if not isinstance(v, bool):
                raise TypeError(f"{self.device_id}: {self.kind} expects a boolean, got {v!r}")
        elif self.kind in STR_KINDS:
            if not isinstance(v, str):
                raise TypeError(f"{self.device_id}: {self.kind} expects a string, got {v!r}")
        else:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"{self.device_id}: {self.kind} expects a number, got {v!r}")
            if not math.isfinite(v):
                raise ValueError(f"{self.device_id}: {self.kind} is not finite: {v!r}")
            if isinstance(v, int):
                object.__setattr__(self, "value", float(v))
        if not self.unit and self.kind in UNITS:
            object.__setattr__(self, "unit", UNITS[self.kind])
        if not self.metric:
            object.__setattr__(self, "metric", self.kind.value)

    @property
    def is_alarm_class(self) -> bool:
        return self.kind in ALARM_KINDS

    def with_site(self, *, household_id: str | None, grid_cell: str | None,
                  device_type: str) -> Reading:
        """A copy bound to its household and grid cell (done once, by the pipeline)."""
        return Reading(self.device_id, self.kind, self.value, self.ts, self.unit, self.quality,
                       device_type, household_id, grid_cell, self.metric)

    def to_json(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id, "kind": self.kind.value, "value": self.value,
            "ts": self.ts.isoformat(), "unit": self.unit, "quality": self.quality.value,
            "device_type": self.device_type, "household_id": self.household_id,
            "grid_cell": self.grid_cell, "metric": self.metric,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Reading:
        ts = datetime.fromisoformat(d["ts"])
        return cls(d["device_id"], Kind(d["kind"]), d.get("value"), utc(ts), d.get("unit", ""),
                   Quality(d.get("quality", "good")), d.get("device_type", ""),
                   d.get("household_id"), d.get("grid_cell"), d.get("metric", ""))
