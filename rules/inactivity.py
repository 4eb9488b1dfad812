"""Inactivity of residents (by default: households with ``lives_alone``).

Contract:
- Activity: a ``sources`` reading from a device of the household: a bool kind reading True
  (motion, door open, SOS), any access/button event, or a cumulative meter (water, energy)
  increasing. Only devices whose type can produce a source kind count (unknown types do).
- Fixed threshold: alarm when ``threshold`` of time *outside* ``quiet_hours`` (local, may span
  midnight) has passed since the last activity. So no inactivity alarm is raised during quiet
  hours; a gap that began in the evening continues after them.
- Baseline (optional, once a household has ``min_weeks`` of history): the deadline is the
  end of the household's usual next active hour (:mod:`rules.baseline`) plus ``grace``,
  clamped to ``[floor, ceiling]`` after the last activity, and moved out of quiet hours.
- Liveness: any good reading from a source device (heartbeat, battery...) shows the sources
  are alive. If none arrived for ``sources_offline_after`` the household gets a
  ``RaiseFault(fault="sources_offline")`` instead of an inactivity alarm; when the sources
  come back the fault clears and the gap is measured from their return.
- New activity ends the alarm: ``ClearAlarm`` (``auto_resolve`` per rule, default False).
- Watching starts at the first ``tick``: a household without any reading counts from there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from gateway.model import Kind, Reading, Value
from rules.alarms import Subject
from rules.arrays import pack, unpack
from rules.baseline import HourOfWeekBaseline
from rules.durations import Bilingual, bilingual_duration, format_duration, format_time_of_day
from rules.engine import register_kind
from rules.evaluators import Evaluator
from rules.localtime import active_deadline, local, window_end_after
from rules.site import DeviceInfo
from rules.spec import CUMULATIVE_KINDS, InactivityRule, value_type

if TYPE_CHECKING:
    from rules.engine import Engine, Stream

__all__ = ["InactivityEval", "SOURCE_DEVICE_TYPES"]

#: Which device types can report each activity kind.
SOURCE_DEVICE_TYPES: dict[Kind, frozenset[str]] = {
    Kind.MOTION: frozenset({"motion_sensor"}), Kind.DOOR_OPEN: frozenset({"door_contact"}),
    Kind.WATER_VOLUME: frozenset({"water_meter"}), Kind.GAS_VOLUME: frozenset({"gas_meter"}),
    Kind.ENERGY: frozenset({"electricity_meter"}),
    Kind.SOS: frozenset({"emergency_caller"}), Kind.BUTTON: frozenset({"emergency_caller"}),
    Kind.ACCESS: frozenset({"door_access"}),
}
_SCAN_EVERY = 5.0
NORMAL, ALARMED, SOURCES_OFFLINE = 0, 1, 2
_DAYS_EN = ("Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays",
            "Sundays")
_DAYS_ZH = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")


class InactivityEval(Evaluator):
    kinds = None
    rule: InactivityRule

    def __init__(self, rule: InactivityRule, engine: Engine, order: int) -> None:
        super().__init__(rule, engine, order)
        site = engine.site
        self._zone = site.zone
        self._sources = frozenset(rule.sources)
        self._src_types = frozenset().union(*(SOURCE_DEVICE_TYPES.get(k, frozenset())
                                              for k in rule.sources))
        self._hidx = site.household_index
        n = len(site.households)
        # per-household state for every household of the site; uncovered ones never fire
        self._covered = np.zeros(n, dtype=bool)
        for h, info in site.households.items():
            if ((not rule.lives_alone_only or info.lives_alone)
                    and (not self._households or h in self._households)
                    and (not self._cells or info.grid_cell in self._cells)
                    and any(self.accepts(site.devices[d])
                            for d in site.devices_of_household[h])):
                self._covered[self._hidx[h]] = True
        self._last = np.full(n, np.nan)        # engine time of the last activity
        self._alive = np.full(n, np.nan)       # engine time of the last source reading
        self._due = np.full(n, np.inf)         # next check (a lower bound of the deadline)
        self._state = np.zeros(n, dtype=np.uint8)
        self.baseline = HourOfWeekBaseline(n) if rule.baseline is not None else None
        b = rule.baseline
        self._lower = min(rule.threshold, b.floor) if b is not None else rule.threshold
        self._next_scan = -np.inf
        self._started = False

    @property
    def nbytes(self) -> int:
        """Bytes of per-household state (numpy arrays)."""
        own = sum(a.nbytes for a in (self._covered, self._last, self._alive, self._due,
                                     self._state))
        return own + (self.baseline.nbytes if self.baseline is not None else 0)

    def accepts(self, d: DeviceInfo) -> bool:
        return (d.household_id is not None and Evaluator.accepts(self, d)
                and (not d.device_type or d.device_type in self._src_types))

    def index_keys(self):  # type: ignore[override]
        return ("household", self._households) if self._households else ("type",
                                                                         self._src_types)

    def on_reading(self, st: Stream, r: Reading, prev: Value, t: float) -> None:
        i = self._hidx.get(st.where.household_id)  # type: ignore[arg-type]
        if i is None or not self._covered[i]:
            return
        if not self._alive[i] >= t:
            self._alive[i] = t
        kind, v = r.kind, r.value
        act = False
        if kind in self._sources:
            if kind in CUMULATIVE_KINDS:
                act = prev is not None and v > prev  # type: ignore[operator]
            else:
                act = v is True or value_type(kind) is str
        if act:
            if not self._last[i] >= t:
                self._last[i] = t
            if self.baseline is not None:
                self.baseline.active[i] = 1
        state = self._state[i]
        if state == ALARMED and act:
            self._state[i] = NORMAL
            self.book.clear(self.rule, self._key(i), t, "activity resumed",
                            self.rule.auto_resolve_on_clear)
        elif state == SOURCES_OFFLINE:
            self._state[i] = NORMAL
            if not self._last[i] >= t:
                self._last[i] = t     # the gap is unknown while the sources were silent
            self.engine.faults.clear_fault(self._key(i) + ":sources_offline", t)
        else:
            return
        self._due[i] = min(self._due[i], t + self._lower)

    def tick(self, t: float) -> None:
        if t < self._next_scan:
            return
        self._next_scan = t + _SCAN_EVERY
        if self.baseline is not None:
            self.baseline.roll(self.engine.clock.to_wall(t), self._zone)
        if not self._started:
            self._started = True
            for a in (self._last, self._alive):
                a[np.isnan(a)] = t
            idle = self._covered & (self._state == NORMAL)
            self._due[idle] = np.minimum(self._due[idle], t + self._lower)
        for i in np.flatnonzero(self._due <= t).tolist():
            self._check(i, t)

    def _check(self, i: int, t: float) -> None:
        rule = self.rule
        last, alive = float(self._last[i]), float(self._alive[i])
        offline_at = alive + rule.sources_offline_after
        deadline, usual = self._deadline(i, last)
        if offline_at <= t:
            self._state[i], self._due[i] = SOURCES_OFFLINE, np.inf
            silent = bilingual_duration(t - alive)
            expl = Bilingual(f"活动传感器已 {silent.zh} 无数据，无法判断是否有活动",
                             f"activity sensors silent for {silent.en}; inactivity cannot "
                             "be judged")
            self.engine.faults.raise_fault(rule, self._key(i) + ":sources_offline",
                                           "sources_offline", self._where(i), t,
                                           {"explanation": expl, "duration": silent})
        elif deadline <= t:
            self._state[i], self._due[i] = ALARMED, np.inf
            gap = t - last
            fields = {"duration": bilingual_duration(gap),
                      "explanation": self._explain(last, gap, usual)}
            self.book.trigger(rule, self._key(i), self._where(i), t, fields, round(gap))
        else:
            self._due[i] = min(deadline, offline_at)

    def _deadline(self, i: int, last: float) -> tuple[float, tuple[float, int] | None]:
        """Engine time of the alarm deadline, and the usual-activity answer used (if any)."""
        rule, clock, zone = self.rule, self.engine.clock, self._zone
        offset = clock.to_wall(0.0)     # wall = engine time + offset
        lw = last + offset
        b, spec = self.baseline, rule.baseline
        if b is not None and spec is not None and b.learned(i, spec.min_weeks):
            usual = b.usual_by(i, lw, zone)
            d = lw + spec.ceiling if usual is None else usual[0] + spec.grace
            d = min(max(d, lw + spec.floor), lw + spec.ceiling)
            if rule.quiet_hours is not None:
                d = window_end_after(d, rule.quiet_hours, zone)
            return d - offset, usual
        return active_deadline(lw, rule.threshold, rule.quiet_hours, zone) - offset, None

    def _explain(self, last: float, gap: float, usual: tuple[float, int] | None) -> Bilingual:
        since = local(self.engine.clock.to_wall(last), self._zone)
        day = since.weekday()
        hm = since.strftime("%H:%M")
        g = bilingual_duration(gap)
        zh = f"已 {g.zh} 无活动（自{_DAYS_ZH[day]} {hm} 起）"
        en = f"no activity for {g.en} (since {_DAYS_EN[day][:3]} {hm})"
        if usual is not None:
            by = local(usual[0], self._zone)
            zh += f"；平时{_DAYS_ZH[by.weekday()]} {by:%H:%M} 前会有活动"
            en += f"; usually active by {by:%H:%M} on {_DAYS_EN[by.weekday()]}"
        else:
            q = self.rule.quiet_hours
            lim = Bilingual(format_duration(self.rule.threshold, "zh"),
                            format_duration(self.rule.threshold, "en"))
            if q is not None:
                span = f"{format_time_of_day(q.start)}–{format_time_of_day(q.end)}"
                zh += f"；超过 {lim.zh}（不计 {span} 安静时段）"
                en += f"; limit {lim.en} not counting quiet hours {span}"
            else:
                zh += f"；超过 {lim.zh}"
                en += f"; limit {lim.en}"
        return Bilingual(zh, en)

    def _key(self, i: int) -> str:
        return f"{self.rule.id}:{self._ids()[i]}"

    def _ids(self) -> list[str]:
        ids = getattr(self, "_id_list", None)
        if ids is None:
            ids = self._id_list = list(self.engine.site.households)
        return ids

    def _where(self, i: int) -> Subject:
        h = self._ids()[i]
        return Subject(None, h, self.engine.site.households[h].grid_cell)

    def state(self) -> dict:
        arrays = {"last": self._last, "alive": self._alive, "due": self._due,
                  "state": self._state}
        if self.baseline is not None:
            arrays.update(self.baseline.arrays())
        d = pack(self._ids(), arrays)
        d["started"] = self._started
        if self.baseline is not None:
            d["hour"] = [self.baseline.cur_how, self.baseline.cur_start]
        return d

    def load(self, d: dict) -> None:
        arrays = {"last": self._last, "alive": self._alive, "due": self._due,
                  "state": self._state}
        if self.baseline is not None:
            arrays.update(self.baseline.arrays())
            if "hour" in d:
                self.baseline.cur_how, self.baseline.cur_start = d["hour"]
        unpack(d, self._ids(), arrays)
        self._due[~self._covered] = np.inf
        self._started = bool(d.get("started", False))


register_kind("inactivity", InactivityEval)
