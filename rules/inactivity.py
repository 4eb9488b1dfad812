"""Inactivity of residents (by default: households with ``lives_alone``).

Contract:
- Activity: a ``sources`` reading from a device of the household: a bool kind reading True
  (motion, door open, SOS), any access/button event, or a cumulative meter (water, energy)
  increasing. Only devices whose type can produce a source kind count (unknown types do).
- Fixed threshold: alarm when ``threshold`` of time *outside* ``quiet_hours`` (local, may span
  midnight) has passed since the last activity. So no inactivity alarm is raised during quiet
  hours; a gap that began in the evening continues after them.
- Baseline (optional; once a household has ``min_weeks`` of history, the fixed threshold
  until then): the deadline is the time by which the household is usually active again
  after an hour like the one of its last activity (:mod:`rules.baseline`, learned from
  ended gaps only) plus ``grace``, clamped to ``[floor, ceiling]`` after the last activity,
  and outside quiet hours if any are given. *Out*: when the last activity was the door
  opening while the resident was at home and nothing inside followed, the resident is taken
  to be out: the limit is ``away_limit`` instead, and the gap is not learned. The next
  door opening (coming home) or any activity inside ends it; so a resident who falls right
  after coming home is judged as at home, from the door. A meter increase within
  ``METER_LAG`` of the door does not: meters report what was used since their last reading
  (water drawn just before leaving shows up after the door); nor does one later while a
  motion sensor of the home reports and sees nobody (a washing machine filling).
- Partly watched: when the learned deadline comes while some (not all) of the household's
  source devices are silent (beyond their allowance, below) after reporting within the
  last four weeks the rhythm remembers, the rhythm learned with them does not hold: the
  fixed ``threshold`` (with the quiet hours) is the deadline instead, and the alarm names
  the silent devices. The supervision rule's fault tells staff to repair them.
- ``repeat_after``: while the gap goes on, an alarm is raised again that long after the last
  one (a new alarm if staff resolved it, an update if still open).
- Liveness: any good reading from a source device (heartbeat, battery...; ``Engine.seen``)
  shows it is alive. A source device is *silent* once it has sent nothing for its
  allowance: the shortest silence of the supervision rules watching it
  (:attr:`rules.supervision.SupervisionEval.limit`), at most ``sources_offline_after``.
  When every source of a household is silent, its resident cannot be watched: a 无法监护
  alarm (``cannot_watch``: its own category, key ``"{rule_id}:{household}:cannot_watch"``,
  the rule's severity and escalation) is raised instead of an inactivity alarm
  (``cannot_watch: null``: a ``RaiseFault(fault="sources_offline")`` as before); when a
  source reports again it clears (at the next scan; ``ClearAlarm``, left open for staff by
  default) and the gap is measured from their return (and not learned).
- Held deadline: an inactivity deadline that passes while even the freshest report of the
  household's sources is older than the shortest allowance among them (the sensors may be
  dead, not the resident still) raises nothing yet: the household is checked again every
  minute, and the alarm comes as soon as a source reports (the resident still inactive)
  or 无法监护 once every source is silent. :func:`watch_warnings` names the households where
  the earliest deadline comes before that allowance (there dead sensors can still read as
  a still resident).
- Care states (:func:`set_care`; the gateway's store holds them and gives them to every new
  engine): 外出 ``away`` and 住院 ``hospital`` — no inactivity alarm (nor 无法监护) from their
  start; if they have an expected end and it passes by ``overdue_after`` with no sign of
  return, an "overdue return" alarm (the inactivity alarm's key, category and message; its
  explanation says so). Activity at home after the home was quiet for ``away_settle`` since
  the start (the resident had left) ends them early: ``CareEnded(reason="returned")``, and
  the gap starts there. 有人陪护 ``carer``: no inactivity alarm until its expected end
  (``CareEnded(reason="expected_end")``), the gap counted from then; activity does not end
  it (it may be the carer's). Gaps during a care state are not learned. Ended by staff
  (``state=None``): watched again from then.
- New activity ends the alarm: ``ClearAlarm`` (``auto_resolve`` per rule, default False).
- Watching starts at the first ``tick``: a household without any reading counts from there.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from gateway.kernel.model import Kind, Reading, Value
from rules.actions import CareEnded
from rules.alarms import Subject
from rules.arrays import pack, unpack
from rules.baseline import WINDOW, GapBaseline
from rules.durations import (
    Bilingual, bilingual_duration, format_duration, format_time_of_day,
)
from rules.engine import register_kind
from rules.evaluators import Evaluator
from rules.localtime import active_deadline, local, window_end_after
from rules.site import DeviceInfo, SiteIndex
from rules.spec import CUMULATIVE_KINDS, InactivityRule, value_type
from rules.supervision import SupervisionEval

if TYPE_CHECKING:
    from rules.engine import Engine, Stream

__all__ = ["CARE_STATES", "InactivityEval", "METER_LAG", "SOURCE_DEVICE_TYPES", "care_states",
           "set_care", "watch_warnings"]

#: Which device types can report each activity kind.
SOURCE_DEVICE_TYPES: dict[Kind, frozenset[str]] = {
    Kind.MOTION: frozenset({"motion_sensor"}), Kind.DOOR_OPEN: frozenset({"door_contact"}),
    Kind.WATER_VOLUME: frozenset({"water_meter"}), Kind.GAS_VOLUME: frozenset({"gas_meter"}),
    Kind.ENERGY: frozenset({"electricity_meter"}),
    Kind.SOS: frozenset({"emergency_caller"}), Kind.BUTTON: frozenset({"emergency_caller"}),
    Kind.ACCESS: frozenset({"door_access"}),
}
_SCAN_EVERY = 5.0
#: a held deadline (module contract) is looked at again this often
_HOLD_EVERY = 60.0
#: a cumulative meter's increase this soon after the door (out) was used before leaving
METER_LAG = 20 * 60.0
NORMAL, ALARMED, SOURCES_OFFLINE = 0, 1, 2
_DAYS_EN = ("Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays",
            "Sundays")
_DAYS_ZH = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")
_AWAY = "away"
_PARTIAL = "partial"
#: how far back the learned rhythm remembers: a source silent longer was not in it
REMEMBERED = 2 * WINDOW
#: household care states (:func:`set_care`) and their codes in the per-household array
CARE_STATES = {"away": 1, "hospital": 2, "carer": 3}
_CARE_NAME = {code: name for name, code in CARE_STATES.items()}
_CARER = CARE_STATES["carer"]
_CARE_WORDS = {1: ("外出", "away"), 2: ("住院", "in hospital")}


#: what an inactivity deadline came from: the usual time (wall) by which the household is
#: active again, :data:`_AWAY`, (:data:`_PARTIAL`, silent source names), or None (fixed)
Usual = float | str | tuple[str, list[str]] | None


class InactivityEval(Evaluator):
    rule: InactivityRule
    reads_rules = True      # the supervision rules' silence allowances (limits)

    def __init__(self, rule: InactivityRule, engine: Engine, order: int) -> None:
        super().__init__(rule, engine, order)
        site = engine.site
        self._zone = site.zone
        self._sources = frozenset(rule.sources)
        self.kinds = self._sources
        self._src_types: frozenset[str] = frozenset[str]().union(
            *(SOURCE_DEVICE_TYPES.get(k, frozenset()) for k in rule.sources))
        self._hidx = site.household_index
        n = len(site.households)
        # per-household state for every household of the site; uncovered ones never fire
        self._covered = np.zeros(n, dtype=bool)
        for h in site.households:
            self._covered[self._hidx[h]] = self._covers(h)
        # array.array for fast scalar access per reading; numpy views for the scans.
        # -inf: nothing seen yet (watching starts at the first tick)
        self._last = array("d", [-np.inf]) * n     # engine time of the last activity
        self._next_check = array("d", [np.inf]) * n  # next check (lower bound of deadline)
        self._state = bytearray(n)
        self._out = bytearray(n)                   # 1: the resident went out (door, then nothing)
        self._alarmed = array("d", [-np.inf]) * n  # engine time of the last alarm of the gap
        self._np: dict[str, npt.NDArray[Any]] = {
            name: np.frombuffer(a, dtype=np.float64 if isinstance(a, array) else np.uint8)
            for name, a in (("last", self._last), ("due", self._next_check),
                            ("state", self._state), ("out", self._out),
                            ("alarmed", self._alarmed))}
        # source devices of each household (CSR: devices of i are _src[_ptr[i]:_ptr[i+1]]);
        # their liveness is read from engine.seen when a household is checked
        counts = np.zeros(n + 1, dtype=np.int64)
        src: list[int] = []
        for h, i in self._hidx.items():
            ds = self._sources_of(h)
            src.extend(ds)
            counts[i + 1] = len(ds)
        self._ptr = np.cumsum(counts).astype(np.int32)
        self._src = np.asarray(src, dtype=np.int32)
        self._start = -np.inf
        b = rule.baseline
        self.baseline = GapBaseline(n, self._zone) if b is not None else None
        # local hours start at epoch + k*3600 - _hour_phase (the zone's offset within an hour)
        off = local(0.0, self._zone).utcoffset()
        self._hour_phase = (off.total_seconds() if off else 0.0) % 3600.0
        # earliest possible deadline after a reading: the next check is never later than it
        self._lower = self._lower_rule = min(
            rule.threshold, b.floor if b is not None else rule.threshold,
            rule.sources_offline_after)
        self._next_scan = -np.inf
        self._started = False
        cw = rule.cannot_watch
        #: what the 无法监护 alarm is raised as (the rule with its category and message)
        self._cw_rule = (None if cw is None else
                         rule.model_copy(update={"category": cw.category, "message": cw.message}))
        self._lim_cache: tuple[tuple[int, ...], npt.NDArray[np.float64]] | None = None
        self._motion = np.zeros(0, dtype=bool)      # site devices that are motion sensors
        # care states (module contract): code, engine times of start and expected end
        self._care = bytearray(n)
        self._care_start = array("d", [-np.inf]) * n
        self._care_end = array("d", [np.inf]) * n
        self._np.update(care=np.frombuffer(self._care, dtype=np.uint8),
                        care_start=np.frombuffer(self._care_start, dtype=np.float64),
                        care_end=np.frombuffer(self._care_end, dtype=np.float64))

    @property
    def nbytes(self) -> int:
        """Bytes of per-household state (numpy arrays)."""
        own = (self._covered.nbytes + self._ptr.nbytes + self._src.nbytes
               + sum(a.nbytes for a in self._np.values()))
        return own + (self.baseline.nbytes if self.baseline is not None else 0)

    def _covers(self, h: str) -> bool:
        """Whether this rule watches household ``h`` (of the engine's site)."""
        site, rule = self.engine.site, self.rule
        info = site.households[h]
        return ((not rule.lives_alone_only or info.lives_alone)
                and (not self._households or h in self._households)
                and (not self._cells or info.grid_cell in self._cells)
                and any(self._source_device(site.devices[d])
                        for d in site.devices_of_household[h]))

    def _sources_of(self, h: str) -> list[int]:
        """Dense indexes of the source devices of household ``h`` (none if not covered)."""
        site = self.engine.site
        if not self._covered[self._hidx[h]]:
            return []
        return [site.device_index[d] for d in site.devices_of_household[h]
                if self._source_device(site.devices[d])]

    def devices_changed(self, old: SiteIndex, changed: list[str], removed: list[str],
                        perm: npt.NDArray[np.int64]) -> None:
        """The households of the changed and removed devices (where they were and where
        they are) are covered again or not, their source devices found again; the other
        households' source devices keep their place, at their new dense indexes. As a
        restore does, a household no longer covered has no next check."""
        site = self.engine.site
        homes = {old.devices[d].household_id for d in (*changed, *removed) if d in old.devices}
        homes |= {site.devices[d].household_id for d in changed}
        homes.discard(None)
        n = len(self._covered)
        inv = np.full(len(old.devices), -1, dtype=np.int64)     # old index -> new index
        kept = np.flatnonzero(perm >= 0)
        inv[perm[kept]] = kept
        owner = np.repeat(np.arange(n, dtype=np.int64), np.diff(self._ptr))
        affected = [self._hidx[h] for h in homes if h is not None]
        stay = ~np.isin(owner, affected)
        srcs, owners = [inv[self._src[stay]]], [owner[stay]]
        for h in homes:
            assert h is not None
            i = self._hidx[h]
            self._covered[i] = self._covers(h)
            ds = self._sources_of(h)
            srcs.append(np.asarray(ds, dtype=np.int64))
            owners.append(np.full(len(ds), i, dtype=np.int64))
        src, owner = np.concatenate(srcs), np.concatenate(owners)
        order = np.argsort(owner, kind="stable")
        self._src = src[order].astype(np.int32)
        counts = np.zeros(n + 1, dtype=np.int64)
        counts[1:] = np.bincount(owner, minlength=n)
        self._ptr = np.cumsum(counts).astype(np.int32)
        self._np["due"][~self._covered] = np.inf
        self._lim_cache = None
        if self._started:
            self.limits()       # (the supervision rules took the change first)

    def _source_device(self, d: DeviceInfo) -> bool:
        return (d.household_id is not None and Evaluator.accepts(self, d)
                and (not d.device_type or d.device_type in self._src_types))

    def accepts(self, d: DeviceInfo) -> bool:
        i = self._hidx.get(d.household_id) if d.household_id is not None else None
        return i is not None and bool(self._covered[i]) and self._source_device(d)

    def index_keys(self) -> tuple[str, Iterable[str]]:
        return ("household", self._households) if self._households else ("type",
                                                                         self._src_types)

    def repeat_idle(self, kind: Kind, value: Value) -> bool:
        """A boolean that is not true is no activity."""
        return value is False and kind not in CUMULATIVE_KINDS

    def holds(self, device_id: str) -> bool:
        return False        # the readings it is idle on touch nothing it holds

    def on_reading(self, st: Stream, r: Reading, prev: Value, t: float) -> None:
        i = st.household_index
        kind, v = r.kind, r.value
        if kind in CUMULATIVE_KINDS:
            if prev is None or v <= prev:  # type: ignore[operator]
                return
            if self._out[i] and (t - self._last[i] < METER_LAG or self._sees_motion(i, t)):
                return      # drawn before the door, or by an appliance: still out
        elif v is not True and value_type(kind) is not str:
            return
        if self._care[i] and self._care[i] != _CARER and t >= self._care_start[i]:
            if t - max(self._last[i], self._care_start[i]) >= self.rule.away_settle:
                self._end_care(i, t, "returned")    # back home: the gap starts here
                self._last[i] = t
        last = self._last[i]
        state = self._state[i]
        if last < t:
            self._last[i] = t
            if self.baseline is not None:
                self._went(i, kind is Kind.DOOR_OPEN, last, t, state)
        if t + self._lower < self._next_check[i]:
            self._next_check[i] = t + self._lower
        if state == ALARMED:
            self.book.clear(self.rule, self._key(i), t, "activity resumed",
                            self.rule.auto_resolve_on_clear)
        elif state == SOURCES_OFFLINE:
            self._watchable(i, t)
        else:
            return
        self._state[i] = NORMAL

    def _watchable(self, i: int, t: float) -> None:
        """The household's sources report again: 无法监护 (or the fault) ends."""
        cw = self.rule.cannot_watch
        if cw is None or self._cw_rule is None:
            self.engine.faults.clear_fault(self._key(i) + ":sources_offline", t)
        else:
            self.book.clear(self._cw_rule, self._key(i) + ":cannot_watch", t,
                            "activity sensors report again", cw.auto_resolve_on_clear)

    def _went(self, i: int, door: bool, last: float, t: float, state: int) -> None:
        """Out/home state after an activity at ``t``; learn the gap that it ended."""
        out = self._out[i]
        self._out[i] = 0 if out or not door else 1
        if (out or state == SOURCES_OFFLINE or last == self._start or last == -np.inf
                or self._care[i] or last < self._care_start[i]):
            return
        phase = self.engine.clock.to_wall(0.0) + self._hour_phase
        if (last + phase) // 3600.0 != (t + phase) // 3600.0:    # the gap left its hour
            offset = self.engine.clock.to_wall(0.0)
            self.baseline.learn(i, last + offset, t + offset)  # type: ignore[union-attr]

    def _alive(self, i: int) -> float:
        """Engine time a source device of household ``i`` last reported (or watch start)."""
        seen = self.engine.seen_np[self._src[self._ptr[i]:self._ptr[i + 1]]]
        return max(float(seen.max()), self._start) if seen.size else self._start

    def _sees_motion(self, i: int, t: float) -> bool:
        """Whether a motion sensor of household ``i`` reports (is not silent) at ``t``."""
        src = self._src[self._ptr[i]:self._ptr[i + 1]]
        lim = self.limits()
        src = src[self._motion[src]]
        return bool(src.size) and bool(
            ((np.maximum(self.engine.seen_np[src], self._start) + lim[src]) > t).any())

    def limits(self) -> npt.NDArray[np.float64]:
        """Silence allowance of every site device (by the site's dense index): the shortest
        of the supervision rules watching it, at most ``sources_offline_after``."""
        sups = [ev.limit for ev in self.engine.evaluators if isinstance(ev, SupervisionEval)]
        key = tuple(id(a) for a in sups)
        n = len(self.engine.seen_np)
        c = self._lim_cache
        if c is None or c[0] != key or len(c[1]) != n:
            lim = np.full(n, self.rule.sources_offline_after)
            for a in sups:
                m = min(n, len(a))
                lim[:m] = np.minimum(lim[:m], a[:m])
            c = self._lim_cache = (key, lim)
            site = self.engine.site
            self._motion = np.zeros(n, dtype=bool)
            for d, k in site.device_index.items():
                if k < n and site.devices[d].device_type == "motion_sensor":
                    self._motion[k] = True
            # a source may be found silent sooner than any deadline: check no later
            # (of the current sources and allowances: an engine restored or told of
            # changed devices finds the same as one that ran through)
            src = self._src[self._src < n]
            self._lower = (min(self._lower_rule, float(lim[src].min())) if src.size
                           else self._lower_rule)
        return c[1]

    def _watch(self, i: int, t: float) -> tuple[float, bool, float]:
        """When every source of household ``i`` is (or will be) silent, whether even the
        freshest report is older than the shortest allowance (a held deadline), and the
        engine time of that freshest report."""
        src = self._src[self._ptr[i]:self._ptr[i + 1]]
        if not src.size:
            return self._start + self.rule.sources_offline_after, False, self._start
        seen = np.maximum(self.engine.seen_np[src], self._start)
        lim = self.limits()[src]
        fresh = float(seen.max())
        return float((seen + lim).max()), fresh < t - float(lim.min()), fresh

    def _silent(self, i: int, t: float) -> list[str]:
        """Names of the source devices of household ``i`` silent at ``t`` (module contract:
        partly watched)."""
        src = self._src[self._ptr[i]:self._ptr[i + 1]]
        raw = self.engine.seen_np[src]
        seen = np.maximum(raw, self._start)
        quiet = src[((seen + self.limits()[src]) <= t) & (raw > t - REMEMBERED)]
        if not quiet.size:
            return []
        site = self.engine.site
        ids = self._device_ids()
        return [site.devices[ids[k]].name or ids[k] for k in quiet.tolist()]

    def _device_ids(self) -> list[str]:
        site = self.engine.site
        got = getattr(self, "_dev_ids", None)
        if got is None or got[0] is not site:
            got = self._dev_ids = (site, list(site.device_index))
        return got[1]

    def tick(self, t: float) -> None:
        if t < self._next_scan:
            return
        self._next_scan = t + _SCAN_EVERY
        if self.baseline is not None:
            self.baseline.roll(self.engine.clock.to_wall(t), self._covered)
        arrays = self._np
        if not self._started:
            self.limits()       # (the earliest check after a reading may be sooner)
            self._started = True
            self._start = t
            last = arrays["last"]
            last[last == -np.inf] = t
            idle = self._covered & (arrays["state"] == NORMAL)
            arrays["due"][idle] = np.minimum(arrays["due"][idle], t + self._lower)
        for i in np.flatnonzero(arrays["due"] <= t).tolist():
            self._check(i, t)
        off = np.flatnonzero(arrays["state"] == SOURCES_OFFLINE).tolist()
        for i in off:   # sources back? the gap is unknown while they were silent: restart it
            offline_at, _, alive = self._watch(i, t)
            if offline_at > t:
                self._state[i] = NORMAL
                self._last[i] = max(self._last[i], alive)
                self._out[i] = 0
                self._next_check[i] = t
                self._watchable(i, t)

    def _check(self, i: int, t: float) -> None:
        rule = self.rule
        if self._care[i] and t >= self._care_start[i] and self._care_check(i, t):
            return
        last = float(self._last[i])
        offline_at, held, alive = self._watch(i, t)
        if offline_at <= t:
            self._state[i], self._next_check[i] = SOURCES_OFFLINE, np.inf
            silent = bilingual_duration(t - alive)
            src = self._src[self._ptr[i]:self._ptr[i + 1]]
            ever = bool(src.size) and bool((self.engine.seen_np[src] > -np.inf).any())
            when = (Bilingual(f"最近一次上报在 {silent.zh} 前", f"the last report {silent.en} ago")
                    if ever else
                    Bilingual(f"开始监护 {silent.zh} 以来从未上报",
                              f"none has reported in the {silent.en} since watching began"))
            if self._cw_rule is not None:
                expl = Bilingual(
                    f"所有活动传感器均已无数据（{when.zh}），无法判断住户是否"
                    "有活动，请派人查看住户并检修设备",
                    f"every activity sensor is silent ({when.en}): "
                    "whether the resident is active cannot be known; check on the resident "
                    "and have the sensors repaired")
                self.book.trigger(self._cw_rule, self._key(i) + ":cannot_watch",
                                  self._where(i), t, {"explanation": expl, "duration": silent})
                return
            expl = Bilingual(f"活动传感器已 {silent.zh} 无数据，无法判断是否有活动",
                             f"activity sensors silent for {silent.en}; inactivity cannot "
                             "be judged")
            self.engine.faults.raise_fault(rule, self._key(i) + ":sources_offline",
                                           "sources_offline", self._where(i), t,
                                           {"explanation": expl, "duration": silent})
            return
        state = self._state[i]
        if state == ALARMED:     # the gap goes on: raise it again after repeat_after
            again = (self._alarmed[i] + rule.repeat_after if rule.repeat_after is not None
                     else np.inf)
            if again > t:
                self._next_check[i] = min(again, offline_at)
                return
            usual = self._deadline(i, last)[1]
        else:
            deadline, usual = self._deadline(i, last)
            if deadline <= t and usual is not None:
                mute = self._silent(i, t)
                if mute:    # partly watched: the learned rhythm does not hold (contract)
                    offset = self.engine.clock.to_wall(0.0)
                    deadline, usual = self._fixed(last + offset) - offset, (_PARTIAL, mute)
            if deadline > t:
                self._next_check[i] = min(deadline, offline_at)
                return
        if held:    # dead sensors or a still resident? wait for a report or 无法监护
            self._next_check[i] = min(t + _HOLD_EVERY, offline_at)
            return
        self._state[i] = ALARMED
        self._alarmed[i] = t
        self._next_check[i] = min(t + (rule.repeat_after or np.inf), offline_at)
        gap = t - last
        fields = {"duration": bilingual_duration(gap),
                  "explanation": self._explain(last, gap, usual)}
        self.book.trigger(rule, self._key(i), self._where(i), t, fields, round(gap))

    # -- care states (module contract) --------------------------------------------------
    def care(self, household_id: str, code: int, start: float, end: float, t: float) -> None:
        """Household ``household_id`` is in care state ``code`` (0: none) from engine time
        ``start`` to ``end`` (inf: no expected end); ``t`` now."""
        i = self._hidx.get(household_id)
        if i is None or not self._covered[i]:
            return
        if code == 0:
            if self._care[i]:
                self._care[i], self._care_start[i], self._care_end[i] = 0, -np.inf, np.inf
                self._last[i] = max(self._last[i], t)     # watched again from now
                self._out[i] = 0
        else:
            self._care[i], self._care_start[i], self._care_end[i] = code, start, end
        self._next_check[i] = min(self._next_check[i], t)

    def cared(self) -> dict[str, str]:
        """Households in a care state (by id: the state's name)."""
        ids = self._ids()
        return {ids[i]: _CARE_NAME[self._care[i]]
                for i in np.flatnonzero(self._np["care"]).tolist()}

    def _end_care(self, i: int, t: float, reason: str) -> None:
        code = self._care[i]
        self._care[i], self._care_start[i], self._care_end[i] = 0, -np.inf, np.inf
        self._out[i] = 0
        self.engine._emit(CareEnded(self._ids()[i], _CARE_NAME[code], reason,
                                    self.engine.clock.wall_dt(t), self.rule.id))

    def _care_check(self, i: int, t: float) -> bool:
        """A due check of a household in a care state; True: the state decided it."""
        rule, code, end = self.rule, self._care[i], float(self._care_end[i])
        if code == _CARER:
            if t < end:
                self._next_check[i] = end
                return True
            self._end_care(i, t, "expected_end")    # the carer left: watched from then
            self._last[i] = max(self._last[i], end)
            return False
        due = end + rule.overdue_after
        if t < due:
            self._next_check[i] = due
            return True
        if self._state[i] == ALARMED:
            again = (self._alarmed[i] + rule.repeat_after if rule.repeat_after is not None
                     else np.inf)
            if again > t:
                self._next_check[i] = again
                return True
        self._state[i] = ALARMED
        self._alarmed[i] = t
        self._next_check[i] = t + (rule.repeat_after or np.inf)
        to_wall = self.engine.clock.to_wall
        since = local(to_wall(float(self._care_start[i])), self._zone)
        by = local(to_wall(end), self._zone)
        over = bilingual_duration(t - end)
        zh, en = _CARE_WORDS[code]
        expl = Bilingual(
            f"{zh}（{since:%m-%d %H:%M} 起，预计 {by:%m-%d %H:%M} 返回）已超时 {over.zh}，"
            "家中仍无活动，未见返回",
            f"{en} since {since:%m-%d %H:%M}, expected back by {by:%m-%d %H:%M}: "
            f"{over.en} overdue, no sign of return at home")
        self.book.trigger(rule, self._key(i), self._where(i), t,
                          {"duration": over, "explanation": expl}, round(t - end))
        return True

    def _deadline(self, i: int, last: float) -> tuple[float, Usual]:
        """Engine time of the alarm deadline, and what it came from: the usual time (wall)
        by which the household is active again, :data:`_AWAY`, or None (fixed threshold)."""
        rule, clock, zone = self.rule, self.engine.clock, self._zone
        offset = clock.to_wall(0.0)     # wall = engine time + offset
        lw = last + offset
        b, spec = self.baseline, rule.baseline
        if b is not None and spec is not None and b.learned(i, spec.min_weeks):
            usual: Usual
            if self._out[i]:
                d, usual = lw + spec.away_limit, _AWAY
            else:
                got = b.usual_by(i, lw, spec.min_samples)
                if got is None:
                    return self._fixed(lw) - offset, None
                usual = got[0]
                d = min(max(usual + spec.grace, lw + spec.floor), lw + spec.ceiling)
            if rule.quiet_hours is not None:
                d = window_end_after(d, rule.quiet_hours, zone)
            return d - offset, usual
        return self._fixed(lw) - offset, None

    def _fixed(self, lw: float) -> float:
        rule = self.rule
        return active_deadline(lw, rule.threshold, rule.quiet_hours, self._zone)

    def _explain(self, last: float, gap: float, usual: Usual) -> Bilingual:
        since = local(self.engine.clock.to_wall(last), self._zone)
        day = since.weekday()
        hm = since.strftime("%H:%M")
        g = bilingual_duration(gap)
        if usual == _AWAY:
            lim = bilingual_duration(self.rule.baseline.away_limit)  # type: ignore[union-attr]
            return Bilingual(
                f"开门外出后已 {g.zh} 家中无活动（自{_DAYS_ZH[day]} {hm} 起）；外出超过 {lim.zh}",
                f"no activity at home for {g.en} since the door opened "
                f"({_DAYS_EN[day][:3]} {hm}); out longer than {lim.en}")
        zh = f"已 {g.zh} 无活动（自{_DAYS_ZH[day]} {hm} 起）"
        en = f"no activity for {g.en} (since {_DAYS_EN[day][:3]} {hm})"
        if isinstance(usual, tuple):
            names = "、".join(usual[1])
            lim = bilingual_duration(self.rule.threshold)
            zh += f"；{names} 已无数据，作息规律无法判断，按固定时限 {lim.zh}"
            en += (f"; {', '.join(usual[1])} silent: the usual rhythm cannot be judged, "
                   f"fixed limit {lim.en}")
        elif isinstance(usual, float):
            by = local(usual, self._zone)
            weekend = by.weekday() >= 5
            zh += f"；平时{'周末' if weekend else '工作日'} {by:%H:%M} 前会有活动"
            en += f"; usually active by {by:%H:%M} {'at weekends' if weekend else 'on weekdays'}"
        else:
            q = self.rule.quiet_hours
            lim = bilingual_duration(self.rule.threshold)
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

    def state(self) -> dict[str, Any]:
        arrays = dict(self._np)
        if self.baseline is not None:
            arrays.update(self.baseline.arrays())
        d = pack(self._ids(), arrays)
        d["started"] = self._started
        d["start"] = None if self._start == -np.inf else self._start
        d["next_scan"] = None if self._next_scan == -np.inf else self._next_scan
        if self.baseline is not None:
            d["hour"] = self.baseline.cur_start
            d["window"] = self.baseline.window
        return d

    def load(self, d: dict[str, Any]) -> None:
        arrays = dict(self._np)
        if self.baseline is not None:
            arrays.update(self.baseline.arrays())
            if isinstance(d.get("hour"), float):
                self.baseline.cur_start = d["hour"]
            self.baseline.window = int(d.get("window", -1))
        unpack(d, self._ids(), arrays)
        self._np["due"][~self._covered] = np.inf
        self._started = bool(d.get("started", False))
        self._start = -np.inf if d.get("start") is None else float(d["start"])
        self._next_scan = -np.inf if d.get("next_scan") is None else float(d["next_scan"])
        if self._started:
            self.limits()       # as the first tick did


def set_care(engine: Engine, household_id: str, state: str | None, now: datetime,
             start: datetime | None = None, expected_end: datetime | None = None,
             rules: Iterable[str] | None = None) -> None:
    """Household ``household_id`` is ``away``, in ``hospital`` or has a ``carer`` from
    ``start`` (default ``now``) until ``expected_end`` (None: none given); ``state`` None:
    no care state any more (module contract). For every inactivity rule watching it (or
    those of ``rules``, by id: the detection benchmark's comparison)."""
    only = None if rules is None else frozenset(rules)
    if state is not None and state not in CARE_STATES:
        raise ValueError(f"unknown care state {state!r}; use one of {sorted(CARE_STATES)}")
    t = engine.clock.advance(now.timestamp())
    wall = now.timestamp()
    begin = t if start is None else t + (start.timestamp() - wall)
    end = np.inf if expected_end is None else t + (expected_end.timestamp() - wall)
    if only is None:
        if state is None:
            engine.care.pop(household_id, None)
        else:
            engine.care[household_id] = state
    for ev in engine.evaluators:
        if isinstance(ev, InactivityEval) and (only is None or ev.rule.id in only):
            ev.care(household_id, 0 if state is None else CARE_STATES[state], begin, end, t)


def care_states(engine: Engine) -> dict[str, str]:
    """Households in a care state in ``engine`` (id: state name): as the inactivity rules
    watching them follow it (an away state ended by the return is gone), and as set for
    the households no inactivity rule watches."""
    out = dict(engine.care)
    for ev in engine.evaluators:
        if isinstance(ev, InactivityEval):
            cared = ev.cared()
            for h, i in ev._hidx.items():
                if ev._covered[i] and h not in cared:
                    out.pop(h, None)
            out.update(cared)
    return out


def watch_warnings(engine: Engine) -> list[str]:
    """Inactivity rules whose earliest deadline (``threshold``, or the baseline's ``floor``)
    comes before the shortest silence allowance of some household's source devices: there a
    household whose sensors all die may get an inactivity alarm before they are found
    silent (module contract). One line per rule, naming how many households and one."""
    out = []
    for ev in engine.evaluators:
        if not isinstance(ev, InactivityEval):
            continue
        rule = ev.rule
        earliest = min(rule.threshold, rule.baseline.floor if rule.baseline else np.inf)
        lim = ev.limits()
        late: list[tuple[str, float]] = []
        for h, i in ev._hidx.items():
            src = ev._src[ev._ptr[i]:ev._ptr[i + 1]]
            if src.size and float(lim[src].min()) > earliest:
                late.append((h, float(lim[src].min())))
        if late:
            h, worst = max(late, key=lambda x: x[1])
            out.append(
                f"rule {rule.id!r}: in {len(late)} household(s) (e.g. {h}) the inactivity "
                f"deadline can come {format_duration(earliest, 'en')} after the last activity, "
                f"before their activity sensors can be found silent (the shortest silence "
                f"allowance there: {format_duration(worst, 'en')}); dead sensors may then "
                f"read as an inactive resident instead of cannot_watch (无法监护). Give a "
                f"source device a shorter supervision 'silence', or a longer 'threshold'"
                f"{' / baseline floor' if rule.baseline else ''}")
    return out


register_kind("inactivity", InactivityEval)
