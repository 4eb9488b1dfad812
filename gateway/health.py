"""Per-device health and the installer's inbox of unknown devices.

Health is state: a device is ``online`` while it reports within its reporting interval,
``offline`` after that, ``degraded`` when it reports but something is wrong (low battery, a
run of decode errors, bad-quality values). Transitions are logged once, not every reading.
Kept in memory (rebuilt from traffic after a restart); the rule engine's supervision rules
raise the faults that staff must act on.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

from drivers import FIELD_ERROR_PREFIX
from gateway.model import Kind, Quality, Reading

__all__ = ["DeviceHealth", "HealthBook", "REPORTING_INTERVAL_S"]

log = logging.getLogger(__name__)

#: How long a device type may stay silent before it counts as offline (seconds).
REPORTING_INTERVAL_S: dict[str, float] = {
    "emergency_caller": 26 * 3600, "smoke_detector": 26 * 3600, "heat_detector": 26 * 3600,
    "gas_detector": 26 * 3600, "water_leak_detector": 26 * 3600, "door_contact": 26 * 3600,
    "motion_sensor": 26 * 3600, "door_access": 3600, "electricity_meter": 900,
    "water_meter": 3600, "gas_meter": 3600, "temperature_sensor": 3600, "alarm_panel": 3600,
}
LOW_BATTERY_PCT = 20.0


@dataclass
class DeviceHealth:
    device_id: str
    device_type: str
    household_id: str | None
    grid_cell: str | None
    state: str = "unknown"                # unknown | online | offline | degraded
    last_seen: float | None = None        # wall clock, epoch seconds
    last_seen_mono: float | None = None
    battery: float | None = None
    battery_low: bool = False
    errors: dict[str, int] = field(default_factory=dict)
    recent_errors: int = 0                # decode errors since the last good message
    last_readings: deque = field(default_factory=lambda: deque(maxlen=20))

    def to_json(self) -> dict:
        return {"device_id": self.device_id, "device_type": self.device_type,
                "household_id": self.household_id, "grid_cell": self.grid_cell,
                "state": self.state, "last_seen": self.last_seen, "battery": self.battery,
                "battery_low": self.battery_low, "errors": dict(self.errors)}


class HealthBook:
    """Health of every configured device, plus unknown devices seen on the bus."""

    def __init__(self, devices: list[tuple[str, str, str | None, str | None]],
                 intervals: dict[str, float] | None = None):
        self.intervals = intervals or REPORTING_INTERVAL_S
        self.devices: dict[str, DeviceHealth] = {}
        self.unknown: dict[str, dict] = {}
        self.rebind(devices)

    def rebind(self, devices: list[tuple[str, str, str | None, str | None]]) -> None:
        """Devices changed (installer edit): keep history of those that stay."""
        new: dict[str, DeviceHealth] = {}
        for dev_id, dtype, household, cell in devices:
            old = self.devices.get(dev_id)
            h = old if old is not None else DeviceHealth(dev_id, dtype, household, cell)
            h.device_type, h.household_id, h.grid_cell = dtype, household, cell
            new[dev_id] = h
            self.unknown.pop(dev_id, None)
        self.devices = new

    def seen(self, reading: Reading) -> None:
        h = self.devices.get(reading.device_id)
        if h is None:
            return
        h.last_seen = reading.ts.timestamp()
        h.last_seen_mono = time.monotonic()
        h.recent_errors = 0
        h.last_readings.append(reading.to_json())
        if reading.kind is Kind.BATTERY and reading.quality is Quality.GOOD:
            h.battery = float(reading.value)  # type: ignore[arg-type]
            h.battery_low = h.battery < LOW_BATTERY_PCT
        elif reading.kind is Kind.BATTERY_LOW and reading.quality is Quality.GOOD:
            h.battery_low = bool(reading.value)
        if reading.kind is Kind.AVAILABILITY and reading.value is False:
            self._set(h, "offline", "device reports unavailable")
            return
        degraded = h.battery_low or reading.quality is not Quality.GOOD
        self._set(h, "degraded" if degraded else "online",
                  "low battery" if h.battery_low else "")

    def error(self, device_id: str, reason: str) -> None:
        """A driver could not use input from the device: counted in ``errors[reason]``.
        Three lost messages in a row (decode errors, timeouts) make the device degraded. A
        ``field:<reason>`` (one bad field of a message whose other readings were delivered,
        drivers.FIELD_ERROR_PREFIX) is counted but is not a lost message: it neither adds
        to that run nor changes the state."""
        h = self.devices.get(device_id)
        if h is None:
            return
        h.errors[reason] = h.errors.get(reason, 0) + 1
        if reason.startswith(FIELD_ERROR_PREFIX):
            return
        h.recent_errors += 1
        if h.recent_errors >= 3:
            self._set(h, "degraded", f"{h.recent_errors} bad messages in a row ({reason})")

    def saw_unknown(self, key: str, transport: str, sample: str) -> None:
        entry = self.unknown.setdefault(key, {"id": key, "transport": transport, "count": 0,
                                              "first_seen": time.time()})
        entry["count"] += 1
        entry["last_seen"] = time.time()
        entry["sample"] = sample[:300]
        if len(self.unknown) > 1000:       # bounded: forget the oldest
            oldest = min(self.unknown.values(), key=lambda e: e["last_seen"])
            self.unknown.pop(oldest["id"], None)

    def tick(self) -> None:
        now = time.monotonic()
        for h in self.devices.values():
            limit = self.intervals.get(h.device_type, 3600.0)
            if h.last_seen_mono is not None and now - h.last_seen_mono > limit:
                self._set(h, "offline", f"silent for more than {limit:.0f} s")

    def _set(self, h: DeviceHealth, state: str, why: str) -> None:
        if h.state != state:
            # a device's first report is routine (1,000 of them after a start); changes
            # after that are what an operator wants in the log
            level = logging.DEBUG if h.state == "unknown" and state == "online" else logging.INFO
            log.log(level, "device %s: %s -> %s%s", h.device_id, h.state, state,
                    f" ({why})" if why else "")
            h.state = state

    def summary(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for h in self.devices.values():
            out[h.state] = out.get(h.state, 0) + 1
        return out
