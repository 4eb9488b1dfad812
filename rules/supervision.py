"""Device supervision: faults (not alarms) for silence, low battery, tamper, fault, offline.

Contract:
- Every covered device (site devices passing the rule's filters) is expected to report at
  least once per ``silence`` (default: :data:`DEFAULT_SILENCE` of its device type; types not
  listed are not watched for silence). Watching starts at the first ``tick``. A device silent
  longer than that gets ``RaiseFault(fault="silent")``; a later good reading clears it at the
  next scan (scans run in ``tick``, every few seconds of engine time).
- ``battery`` below ``battery_below`` (clears at ``battery_below + 5``), ``battery_low``,
  ``tamper``, ``fault`` (True raises, False clears) and ``availability`` False (``offline``)
  raise faults keyed ``"{rule_id}:{device_id}:{fault}"``.
- BAD-quality readings (value None) do not count as the device reporting. Readings of
  devices unknown to the site get battery/tamper/fault/offline faults but no silence watch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from gateway.kernel.model import Kind, Reading, Value
from rules.alarms import Subject
from rules.arrays import pack, unpack
from rules.durations import bilingual_duration
from rules.engine import register_kind
from rules.evaluators import Evaluator
from rules.site import DeviceInfo, SiteIndex
from rules.spec import SupervisionRule

if TYPE_CHECKING:
    from rules.engine import Engine, Stream

__all__ = ["DEFAULT_SILENCE", "SupervisionEval"]

_H = 3600.0
#: Longest silence each device type's reporting interval allows (2-3 missed heartbeats).
DEFAULT_SILENCE: dict[str, float] = {
    "emergency_caller": 3 * _H, "smoke_detector": 3 * _H, "heat_detector": 3 * _H,
    "gas_detector": 3 * _H, "water_leak_detector": 3 * _H, "door_contact": 3 * _H,
    "motion_sensor": 3 * _H, "door_access": 1 * _H, "electricity_meter": 1 * _H,
    "water_meter": 1 * _H, "gas_meter": 1 * _H, "temperature_sensor": 1 * _H,
    "alarm_panel": 600.0,
}
_SCAN_EVERY = 5.0   # engine seconds between silence scans
_BOOL_FAULTS = {Kind.BATTERY_LOW: ("battery_low", True), Kind.TAMPER: ("tamper", True),
                Kind.FAULT: ("fault", True), Kind.AVAILABILITY: ("offline", False)}


class SupervisionEval(Evaluator):
    rule: SupervisionRule

    def __init__(self, rule: SupervisionRule, engine: Engine, order: int) -> None:
        super().__init__(rule, engine, order)
        self._enabled = {"battery_low": rule.battery_below is not None, "tamper": rule.tamper,
                         "fault": rule.fault, "offline": rule.offline}
        self.kinds = frozenset({Kind.BATTERY, *_BOOL_FAULTS})
        site = engine.site
        # silence is watched for site devices (by the site's dense index) via engine.seen
        self._ids = list(site.devices)
        limit = np.full(len(self._ids), np.inf)
        for i, d in enumerate(site.devices.values()):
            limit[i] = self._silence_of(d)
        self._limit = limit
        self._silent = np.zeros(len(self._ids), dtype=bool)
        self._start = -np.inf       # engine time watching started (first tick)
        self._next_scan = -np.inf

    def _silence_of(self, d: DeviceInfo) -> float:
        """How long device ``d`` may be silent (inf: not watched)."""
        if not self.accepts(d):
            return float(np.inf)
        return (self.rule.silence if self.rule.silence is not None
                else DEFAULT_SILENCE.get(d.device_type, float(np.inf)))

    def devices_changed(self, old: SiteIndex, changed: list[str], removed: list[str],
                        perm: npt.NDArray[np.int64]) -> None:
        """Silence limits and flags follow the devices by id (Evaluator contract)."""
        site = self.engine.site
        self._ids = list(site.devices)
        kept = perm >= 0
        limit = np.full(len(self._ids), np.inf)
        limit[kept] = self._limit[perm[kept]]
        silent = np.zeros(len(self._ids), dtype=bool)
        silent[kept] = self._silent[perm[kept]]
        for d in changed:
            limit[site.device_index[d]] = self._silence_of(site.devices[d])
        self._limit, self._silent = limit, silent

    @property
    def limit(self) -> npt.NDArray[np.float64]:
        """Silence allowance of every site device (by the site's dense index; inf: not
        watched for silence by this rule)."""
        return self._limit

    def on_reading(self, st: Stream, r: Reading, prev: Value, t: float) -> None:
        kind, v = r.kind, r.value
        if kind is Kind.BATTERY:
            limit = self.rule.battery_below
            if limit is not None:
                if v < limit:  # type: ignore[operator]
                    self._raise(st.where, "battery_low", t, v, st.unit)
                elif v >= limit + 5.0:  # type: ignore[operator]
                    self._clear(st.device_id, "battery_low", t)
        else:
            fault, bad = _BOOL_FAULTS[kind]
            if self._enabled[fault]:
                if v is bad:
                    self._raise(st.where, fault, t, v, "")
                else:
                    self._clear(st.device_id, fault, t)

    def repeat_idle(self, kind: Kind, value: Value) -> bool:
        """A boolean fault's restore: a clear of what the first one cleared."""
        fault = _BOOL_FAULTS.get(kind)
        return fault is not None and value is not fault[1]

    def holds(self, device_id: str) -> bool:
        open_ = self.engine.faults.open
        prefix = f"{self.rule.id}:{device_id}:"
        return any(prefix + name in open_ for name, _bad in _BOOL_FAULTS.values())

    def tick(self, t: float) -> None:
        """Silence scan (every few seconds): raise for devices quiet past their limit,
        clear for silent ones that reported again."""
        if t < self._next_scan or not self._ids:
            return
        self._next_scan = t + _SCAN_EVERY
        if self._start == -np.inf:
            self._start = t
        quiet = t - np.maximum(self.engine.seen_np, self._start)
        over = quiet > self._limit
        for i in np.flatnonzero(self._silent & ~over).tolist():
            self._silent[i] = False
            self._clear(self._ids[i], "silent", t)
        for i in np.flatnonzero(over & ~self._silent).tolist():
            self._silent[i] = True
            d = self.engine.site.devices[self._ids[i]]
            where = Subject(d.device_id, d.household_id, d.grid_cell)
            self._raise(where, "silent", t, None, "", duration=bilingual_duration(quiet[i]))

    def _raise(self, where: Subject, fault: str, t: float, value: Value, unit: str,
               **extra: object) -> None:
        key = f"{self.rule.id}:{where.device_id}:{fault}"
        self.engine.faults.raise_fault(self.rule, key, fault, where, t,
                                       {"value": value, "unit": unit, **extra})

    def _clear(self, device_id: str, fault: str, t: float) -> None:
        self.engine.faults.clear_fault(f"{self.rule.id}:{device_id}:{fault}", t)

    def state(self) -> dict[str, Any]:
        d = pack(self._ids, {"silent": self._silent})
        d["start"] = None if self._start == -np.inf else self._start
        d["next_scan"] = None if self._next_scan == -np.inf else self._next_scan
        return d

    def load(self, d: dict[str, Any]) -> None:
        unpack(d, self._ids, {"silent": self._silent})
        self._start = -np.inf if d.get("start") is None else float(d["start"])
        self._next_scan = -np.inf if d.get("next_scan") is None else float(d["next_scan"])


register_kind("supervision", SupervisionEval)
