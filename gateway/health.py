"""Per-device health, the installer's inbox of unknown devices, and decode faults.

Health is state: a device is ``online`` while it reports within its reporting interval,
``offline`` after that, ``degraded`` when it reports but something is wrong (low battery, a
run of decode errors, bad-quality values, a fault of its own). Transitions are logged once,
not every reading. Kept in memory (rebuilt from traffic after a restart); the rule engine's
supervision rules raise the faults that staff must act on.

:class:`DecodeFaults` is the gateway's side of ``drivers.DecodeWatch``: a device whose input
our decoding raises an exception on is put in fault ``decode_error`` (device health and the
faults list ``device_faults``), counted and logged once per device and cause.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import traceback
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from drivers import DECODE_ERROR, FIELD_ERROR_PREFIX, DecodeWatch
from drivers import zigbee2mqtt as z2m
from gateway.kernel.clock import utc_iso
from gateway.model import Kind, Quality, Reading, Severity, Value
from gateway.store import devices as device_rows

__all__ = ["DecodeFaults", "DeviceHealth", "HealthBook", "RECENT_READINGS", "REPORTING_INTERVAL_S",
           "RecentReadings"]

log = logging.getLogger(__name__)

#: How long a device type may stay silent before it counts as offline (seconds).
REPORTING_INTERVAL_S: dict[str, float] = {
    "emergency_caller": 26 * 3600, "smoke_detector": 26 * 3600, "heat_detector": 26 * 3600,
    "gas_detector": 26 * 3600, "water_leak_detector": 26 * 3600, "door_contact": 26 * 3600,
    "motion_sensor": 26 * 3600, "door_access": 3600, "electricity_meter": 900,
    "water_meter": 3600, "gas_meter": 3600, "temperature_sensor": 3600, "alarm_panel": 3600,
}
LOW_BATTERY_PCT = 20.0
#: how many of a device's last readings ``GET /api/devices/{id}/readings`` shows
RECENT_READINGS = 20
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


class RecentReadings:
    """A device's last ``size`` readings (a ring), in ~700 bytes a device: the time as
    integer microseconds in an array, what the reading is (kind, unit, quality, metric) as
    a code into one table shared by all devices, the value itself (booleans and small
    numbers are shared objects). 20 ``Reading`` objects in a deque took ~4.6 KB a device,
    23 MB of a 5,000-device site's memory (docs/benchmarks.md, "day"). The readings are made
    again, in UTC, only when asked for (:meth:`readings`)."""

    __slots__ = ("_us", "_codes", "_values", "_next", "_count")
    _shapes: list[tuple[Kind, str, Quality, str]] = []
    _code_of: dict[tuple[Kind, str, Quality, str], int] = {}

    def __init__(self, size: int = RECENT_READINGS) -> None:
        self._us = array("q", bytes(8 * size))
        self._codes = array("I", bytes(4 * size))
        self._values: list[Value] = [None] * size
        self._next = 0
        self._count = 0

    def append(self, r: Reading) -> None:
        shape = (r.kind, r.unit, r.quality, r.metric)
        code = self._code_of.get(shape)
        if code is None:   # a few dozen in a site: kinds x units x metrics of its profiles
            code = self._code_of[shape] = len(self._shapes)
            self._shapes.append(shape)
        i = self._next
        self._us[i] = (r.ts - _EPOCH) // _MICROSECOND
        self._codes[i] = code
        self._values[i] = r.value
        self._next = (i + 1) % len(self._values)
        self._count = min(self._count + 1, len(self._values))

    def __len__(self) -> int:
        return self._count

    def readings(self, h: DeviceHealth) -> list[Reading]:
        """The readings, oldest first, as ``Reading``s of the device ``h``."""
        size = len(self._values)
        out = []
        for k in range(size - self._count, size):
            i = (self._next + k) % size
            kind, unit, quality, metric = self._shapes[self._codes[i]]
            out.append(Reading(h.device_id, kind, self._values[i],
                               _EPOCH + self._us[i] * _MICROSECOND, unit, quality,
                               h.device_type, h.household_id, h.grid_cell, metric))
        return out


@dataclass(slots=True)
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
    #: the last readings, compact (made JSON only when asked: a dict per reading was ~80 MB
    #: of a 5,000-device site's memory and a share of every reading's CPU); None until the
    #: device's first reading
    recent: RecentReadings | None = None
    fault: str | None = None              # "decode_error" (DecodeFaults) or None

    def readings(self) -> list[Reading]:
        """The device's last readings (at most ``RECENT_READINGS``), oldest first."""
        return self.recent.readings(self) if self.recent is not None else []

    def to_json(self) -> dict:
        return {"device_id": self.device_id, "device_type": self.device_type,
                "household_id": self.household_id, "grid_cell": self.grid_cell,
                "state": self.state, "fault": self.fault, "last_seen": self.last_seen,
                "battery": self.battery, "battery_low": self.battery_low,
                "errors": dict(self.errors)}


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

    def update(self, devices: list[tuple[str, str, str | None, str | None]],
               removed: tuple[str, ...] | list[str] = ()) -> None:
        """A few devices changed (an installer's edit): their rows, as :meth:`rebind` would
        make them (new ones last, as in the site), the removed ones gone."""
        new = dict(self.devices)    # swapped whole: threads may be iterating the old one
        for dev_id in removed:
            new.pop(dev_id, None)
        for dev_id, dtype, household, cell in devices:
            h = new.get(dev_id)
            if h is None:
                h = new[dev_id] = DeviceHealth(dev_id, dtype, household, cell)
            h.device_type, h.household_id, h.grid_cell = dtype, household, cell
            self.unknown.pop(dev_id, None)
        self.devices = new

    def seen(self, reading: Reading) -> None:
        h = self.devices.get(reading.device_id)
        if h is None:
            return
        h.last_seen = reading.ts.timestamp()
        h.last_seen_mono = time.monotonic()
        h.recent_errors = 0
        if h.recent is None:
            h.recent = RecentReadings()
        h.recent.append(reading)
        if reading.kind is Kind.BATTERY and reading.quality is Quality.GOOD:
            h.battery = float(reading.value)  # type: ignore[arg-type]
            h.battery_low = h.battery < LOW_BATTERY_PCT
        elif reading.kind is Kind.BATTERY_LOW and reading.quality is Quality.GOOD:
            h.battery_low = bool(reading.value)
        if reading.kind is Kind.AVAILABILITY and reading.value is False:
            self._set(h, "offline", "device reports unavailable")
            return
        degraded = h.battery_low or h.fault is not None or reading.quality is not Quality.GOOD
        self._set(h, "degraded" if degraded else "online",
                  "low battery" if h.battery_low else f"fault {h.fault}" if h.fault else "")

    def set_fault(self, device_id: str, fault: str | None) -> None:
        """A fault of the device's own (``decode_error``): shown in ``fault`` and the device
        is ``degraded`` while it lasts; None ends it (its next reading sets the state)."""
        h = self.devices.get(device_id)
        if h is None:
            return
        h.fault = fault
        if fault is not None:
            self._set(h, "degraded", f"fault {fault}")

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
        """A message (or a Zigbee coordinator's device list entry) from ``key`` (a topic, a
        receiver account) that no configured device binds: into the inbox. An entry of
        Zigbee2MQTT's ``bridge/devices`` keeps the device's definition as ``zigbee``
        (model, vendor, description, exposes: what zero-config proposes from) until the
        device is bound; its own messages only update ``sample``."""
        entry = self.unknown.setdefault(key, {"id": key, "transport": transport, "count": 0,
                                              "first_seen": time.time()})
        entry["count"] += 1
        entry["last_seen"] = time.time()
        zigbee = z2m.inbox_entry(sample) if transport == "zigbee2mqtt" else None
        if zigbee is not None:
            entry["zigbee"] = zigbee
            sample = json.dumps({k: zigbee.get(k) for k in ("ieee_address", "model", "vendor",
                                                             "description", "network_role")},
                                ensure_ascii=False)
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
        for h in list(self.devices.values()):    # /metrics reads it on a worker thread
            out[h.state] = out.get(h.state, 0) + 1
        return out


#: A device's decode fault clears at its first message that decodes without an exception
#: once none has failed for this long (so that input that fails only sometimes, e.g. only
#: its alarm messages, keeps the fault visible); after a start or a site edit, at once.
DECODE_FAULT_HOLD_S = 600.0
_LOGGED_MAX = 10_000


def _cause(exc: BaseException) -> str:
    """What makes two decode failures "the same cause": the exception type and the line of
    our code that raised it (not its message, which often carries the input)."""
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    if frames:
        last = frames[-1]
        return f"{type(exc).__name__} at {Path(last.filename).name}:{last.lineno}"
    return type(exc).__name__


class DecodeFaults(DecodeWatch):
    """Devices whose input our own decoding fails on (an exception that is not a
    ``DecodeError``: a bug, or a profile that does not fit the device).

    - ``failed``: counted in ``gateway_decode_errors_total{transport, cause}`` (cause: the
      exception type), logged as an error once per device and cause (type and raising line)
      for as long as the gateway runs, and the device is put in fault ``decode_error``: in
      its health (``GET /api/devices``: ``fault``, state ``degraded``) and, once, as a row of
      ``device_faults`` (``GET /api/faults``, key ``driver:<device>:decode_error``, severity
      major).
    - ``ok``: a message of the device decoded without an exception. The fault clears if none
      failed in the last ``hold_s`` (logged, ``cleared_at`` set in ``device_faults``).
    - ``load`` (at start) takes open decode faults from the store; ``rebind`` (site edited)
      ends those of removed devices. After either, the device's next clean message clears.
    """

    def __init__(self, health: HealthBook, metrics, store=None, *,
                 hold_s: float = DECODE_FAULT_HOLD_S,
                 clock: Callable[[], float] = time.monotonic):
        self.health = health
        self.metrics = metrics
        self.store = store
        self.hold_s = hold_s
        self.clock = clock
        self.open: dict[str, float] = {}      # device id -> clock of its last failure
        self._logged: set[tuple[str, str]] = set()
        self._writes: set[asyncio.Task] = set()

    @staticmethod
    def key(device_id: str) -> str:
        return f"driver:{device_id}:{DECODE_ERROR}"

    def load(self) -> None:
        """Open decode faults from the store (a restart keeps them shown)."""
        if self.store is None:
            return
        for device_id in device_rows.open_fault_devices(self.store, DECODE_ERROR):
            self.open[device_id] = -math.inf
            self.health.set_fault(device_id, DECODE_ERROR)
        self.rebind()

    def rebind(self, devices: set[str] | None = None) -> None:
        """The site changed: faults of removed devices end; the others clear at the device's
        next clean message (its profile may have been changed). ``devices``: only these
        changed (an installer's edit of a few), the others' faults stay as they are."""
        for device_id in list(self.open):
            if devices is not None and device_id not in devices:
                continue
            if device_id in self.health.devices:
                self.open[device_id] = -math.inf
            else:
                del self.open[device_id]
                self._persist_clear(device_id)
                log.info("device %s removed: its decode fault ended", device_id)

    def failed(self, device_id: str, transport: str, exc: BaseException, where: str) -> None:
        cause = _cause(exc)
        self.metrics.inc("gateway_decode_errors_total", transport=transport,
                         cause=type(exc).__name__)
        if (device_id, cause) not in self._logged:
            if len(self._logged) >= _LOGGED_MAX:
                self._logged.clear()
            self._logged.add((device_id, cause))
            log.error("decode error: device %s (%s) %s: %s: %s [%s]; the device is in fault "
                      "decode_error; further failures of this cause are only counted "
                      "(gateway_decode_errors_total)", device_id, transport, where,
                      type(exc).__name__, str(exc)[:300], cause)
        first = device_id not in self.open
        self.open[device_id] = self.clock()
        if first:
            self.health.set_fault(device_id, DECODE_ERROR)
            self._persist_raise(device_id, transport)

    def ok(self, device_id: str) -> None:
        last = self.open.get(device_id)
        if last is None or self.clock() - last < self.hold_s:
            return
        del self.open[device_id]
        self.health.set_fault(device_id, None)
        self._persist_clear(device_id)
        log.info("device %s: its messages decode again; fault decode_error cleared", device_id)

    # -- the faults list ------------------------------------------------------------------
    def _persist_raise(self, device_id: str, transport: str) -> None:
        h = self.health.devices.get(device_id)
        if h is None:
            return
        key, household, cell, ts = self.key(device_id), h.household_id, h.grid_cell, utc_iso()
        zh = (f"设备 {device_id} 上报的数据无法解码，其报警可能无法送达；请检查设备配置文件并查看"
              f"网关日志")
        en = (f"Messages of device {device_id} cannot be decoded ({transport}): its alarms may "
              f"not arrive; check its profile and the gateway log")
        self._write(lambda conn: device_rows.raise_fault(
            conn, key=key, fault=DECODE_ERROR, device_id=device_id, household_id=household,
            grid_cell=cell, severity=str(Severity.MAJOR), message_zh=zh, message_en=en,
            raised_at=ts))

    def _persist_clear(self, device_id: str) -> None:
        key, ts = self.key(device_id), utc_iso()
        self._write(lambda conn: device_rows.clear_fault(conn, key, ts))

    def _write(self, fn) -> None:
        store = self.store
        if store is None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:            # no event loop (a tool, a test): write and wait
            store.write_sync(fn)
            return

        async def write() -> None:
            try:
                await store.write(fn)
            except Exception as exc:  # noqa: BLE001 - the health state stands; say why not stored
                log.warning("decode fault not recorded in the store: %s", exc)

        task = asyncio.get_running_loop().create_task(write(), name="decode-fault")
        self._writes.add(task)          # writes start in call order: a raise before its clear
        task.add_done_callback(self._writes.discard)
