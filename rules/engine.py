"""The rule engine: readings and time in, actions out. No I/O, no clock of its own.

Contract:
- ``feed(reading, now)`` evaluates one reading and returns the actions it causes;
  ``tick(now)`` runs timers (``for`` durations, held states, escalation, flapping quiet
  periods, inactivity, supervision silence) and returns their actions. ``now`` is an aware
  datetime (the caller's wall clock, UTC); ``reading.ts`` is the event time.
- Reading policy: a reading stamped more than ``policy.max_future`` after ``now`` is rejected
  (``stats["future"]``); a reading older than the last accepted one of the same device and
  kind is stale and ignored (``stats["stale"]``); one with the same time and value is a
  duplicate and ignored (``stats["duplicate"]``). None of them changes any state.
  A reading that changed nothing when offered (``repeats_nothing``: every rule idle on it,
  holding nothing it could end) may be fed with ``feed_repeat`` behind readings of its
  device offered after it; one of them stamped the same time with another value makes it
  stale.
- Timers run on engine time (see :mod:`rules.clock`): clock steps do not fire them.
- Quiet band: evaluators that define ``quiet_band()`` (thresholds) are not called for a
  reading whose value lies in the band where each of them is neither over its limit nor
  holding state, provided the stream's previous value did too (then that reading was given
  to them, and it cleared whatever they held for this device). Equivalent to calling them:
  they would do nothing (tests/test_rules_quiet_band.py compares both). A stream made by a
  restore starts outside the band, so its first reading reaches every rule.
- Device modes: a device in ``test`` or ``maintenance`` mode never raises an alarm; its
  triggers become ``TestRecord``s, and so does any good reading from it that no rule took
  (``rule_id`` ``reading:<kind>``), so that every device type can be tested, not only the
  ones a rule listens to: a boolean reading when true (motion, door open, ...), any other
  value (a meter reading, a temperature) at most once per ``TEST_READING_EVERY_S`` per kind.
  Supervision readings (battery, availability, signal) are not tests.
- ``snapshot()`` is JSON-serializable; ``Engine.restore(config, site, snap)`` continues every
  timer, open alarm, escalation clock and inactivity gap. State of rules that are no longer
  in the config (or changed kind) is dropped.
- Devices added, removed or changed (place, type, name) with the rules unchanged:
  ``update_devices(site)`` (or ``add_device``/``remove_device``/``update_device``) takes the
  new site in the running engine; from then on it does with readings and time what an
  engine built for the new site and loaded with this one's snapshot does (the households,
  grid cells and timezone must be the same; tests/test_installer_scale.py compares both).
  It also keeps what a snapshot does not carry (the once-a-minute test record of a
  measurement, the quiet band of unchanged devices).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

import numpy as np

from gateway.kernel.model import UNITS, Kind, Reading, Value
from rules.actions import Action, TestRecord
from rules.alarms import AlarmBook, FaultBook, StoredAlarm, Subject
from rules.arrays import pack, unpack
from rules.clock import EngineClock, TimerOwner, TimerQueue
from rules.evaluators import (
    CompoundEval, CountEval, Evaluator, HeldEval, MatchEval, ThresholdEval,
)
from rules.index import RuleIndex
from rules.site import DeviceInfo, SiteIndex
from rules.spec import RulesConfig

__all__ = ["DeviceRoute", "Engine", "MODES", "Stream"]

MODES = frozenset({"normal", "test", "maintenance"})
SNAPSHOT_VERSION = 1
#: a reading of one of these kinds does not show that a device in test mode works
NOT_A_TEST: frozenset[Kind] = frozenset(
    {Kind.BATTERY, Kind.BATTERY_LOW, Kind.AVAILABILITY, Kind.SIGNAL})
#: a measurement (non-boolean) reading is recorded as a test at most this often per kind
TEST_READING_EVERY_S = 60.0

_COMPILERS: dict[str, Callable[..., Evaluator]] = {
    "match": MatchEval, "threshold": ThresholdEval, "count": CountEval, "held": HeldEval,
    "compound": CompoundEval,
}


def register_kind(kind: str, compiler: Callable[..., Evaluator]) -> None:
    """Used by the modules of the timer-driven kinds (supervision, inactivity)."""
    _COMPILERS[kind] = compiler


class DeviceRoute:
    """What the engine knows of one device, computed once: where it is, its dense indexes,
    and for each kind of its readings the rules that listen (``by_kind``) with their bound
    ``on_reading`` methods (``calls``; ``bad_calls``: those that also want BAD readings)."""

    __slots__ = ("info", "where", "device_index", "household_index", "by_kind", "calls")

    def __init__(self, info: DeviceInfo, index: RuleIndex, site: SiteIndex,
                 bound: dict[object, Any]) -> None:
        self.info = info
        self.where = Subject(info.device_id, info.household_id, info.grid_cell)
        #: dense indexes of the site (-1: not a site device / no household)
        self.device_index = site.device_index.get(info.device_id, -1)
        self.household_index = (site.household_index.get(info.household_id, -1)
                                if info.household_id is not None else -1)
        self.by_kind = by_kind = index.routes_for(info)     # interned: shared by devices
        calls = bound.get(id(by_kind))
        if calls is None:
            calls = bound[id(by_kind)] = {k: _calls_of(handlers, bound)
                                          for k, handlers in by_kind.items()}
        self.calls = calls


#: an evaluator's bound ``on_reading``
_Call = Callable[["Stream", Reading, Value, float], None]
#: ``(calls, bad_calls, quiet_calls, quiet_lo, quiet_hi)``, see :func:`_calls_of`
_Calls = tuple[tuple[_Call, ...], tuple[_Call, ...], tuple[_Call, ...], float | None,
               float | None]


def _calls_of(handlers: tuple[Evaluator, ...], bound: dict[object, Any]) -> _Calls:
    """``(calls, bad_calls, quiet_calls, quiet_lo, quiet_hi)`` of an interned handler tuple,
    shared by every route that has it (few objects for the garbage collector to scan, however
    many distinct routes there are); each evaluator's bound ``on_reading`` is made once
    (``Evaluator.call``). ``quiet_calls`` leaves out the evaluators with a quiet band;
    ``quiet_lo..quiet_hi`` is the intersection of their bands (None: none has one)."""
    made = bound.get(id(handlers))
    if made is None:
        calls = tuple(h.call for h in handlers)
        bad = tuple(h.call for h in handlers if h.wants_bad)
        bands = {h: h.quiet_band() for h in handlers}
        banded = [b for b in bands.values() if b is not None]
        if not banded:
            made = (calls, bad, calls, None, None)
        else:
            quiet = tuple(h.call for h, b in bands.items() if b is None)
            quiet = bound.setdefault(quiet, quiet)     # shared by every route that has it
            made = (calls, bad, quiet, max(b[0] for b in banded), min(b[1] for b in banded))
        bound[id(handlers)] = made
    return made


class Stream:
    """Readings of one kind from one device: ordering state and the rules that listen.
    ``quiet``: the last value lay in the quiet band (see module contract)."""

    __slots__ = ("device_id", "kind", "last_ts", "last_value", "handlers", "calls",
                 "bad_calls", "quiet_calls", "quiet_lo", "quiet_hi", "quiet", "where", "unit",
                 "device_type", "device_index", "household_index", "fed")

    def __init__(self, route: DeviceRoute, kind: Kind) -> None:
        info = route.info
        self.device_id = info.device_id
        self.device_type = info.device_type
        self.kind = kind
        self.last_ts = float("-inf")
        self.last_value: Value = None
        key = kind if kind in route.by_kind else None
        self.handlers = route.by_kind[key]
        (self.calls, self.bad_calls, self.quiet_calls, self.quiet_lo,
         self.quiet_hi) = route.calls[key]
        self.quiet = False
        #: a good value was given to the rules in this engine (not only restored)
        self.fed = False
        self.where = route.where
        self.unit = UNITS.get(kind, "")
        self.device_index = route.device_index
        self.household_index = route.household_index


class Engine:
    """See module contract."""

    def __init__(self, config: RulesConfig, site: SiteIndex) -> None:
        import rules.checkin  # noqa: F401
        import rules.inactivity  # noqa: F401  (register the timer-driven kinds)
        import rules.supervision  # noqa: F401

        self.config = config
        self.site = site
        self.clock = EngineClock(config.policy.max_clock_step)
        self.timers = TimerQueue()
        self._out: list[Action] = []
        self._modes: dict[str, str] = {}
        #: household care states as set (rules.inactivity.set_care): id -> state name; the
        #: inactivity rules follow them, and other rules (check-in) read them here too
        self.care: dict[str, str] = {}
        #: (device, kind) -> engine time a measurement was last recorded as a test
        self._tested: dict[tuple[str, Kind], float] = {}
        self.book = AlarmBook(config.escalation, self.timers, self.clock, self._emit,
                              self.mode_of, self._names)
        self.faults = FaultBook(self.clock, self._emit, self.mode_of, self._names)
        self.evaluators: list[Evaluator] = [
            _COMPILERS[r.kind](r, self, i) for i, r in enumerate(config.rules) if r.enabled]
        self._tickers = [ev for ev in self.evaluators if hasattr(ev, "tick")]
        owners: list[TimerOwner] = [self.book, *self.evaluators]
        for owner in owners:    # ranks must be unique (rules.clock)
            self.timers.register(owner)
        self._index = RuleIndex(self.evaluators)
        #: streams by device and kind; every site device's (empty) dict is made here, so
        #: that first readings allocate only the stream itself
        self._streams: dict[str, dict[Kind, Stream]] = {d: {} for d in site.devices}
        #: bound on_reading methods per interned route and per interned handler tuple (by
        #: id: the index keeps both alive); the quiet-band call tuples, interned by value
        self._bound: dict[Any, Any] = {}
        #: (id of an interned handler tuple, kind, value) -> every handler idle on a repeat
        self._idle: dict[tuple[int, Kind, Value], bool] = {}
        #: every site device's route, built here so that no reading pays for it
        self._routes: dict[str, DeviceRoute] = {
            d: DeviceRoute(info, self._index, site, self._bound)
            for d, info in site.devices.items()}
        #: engine time each site device last sent a good reading (-inf: never); supervision
        #: and inactivity read it in their scans instead of handling every reading
        self.seen = array("d", [float("-inf")]) * len(site.devices)
        self.seen_np = np.frombuffer(self.seen, dtype=np.float64)
        self._max_future = config.policy.max_future
        self.stats = {"future": 0, "stale": 0, "duplicate": 0, "unknown_device": 0}

    # -- input --------------------------------------------------------------------------
    def feed(self, reading: Reading, now: datetime) -> list[Action]:
        """Evaluate ``reading`` at wall time ``now``; return the actions it causes."""
        wall = now.timestamp()
        ts = wall if reading.ts is now else reading.ts.timestamp()
        clock = self.clock
        d = wall - clock.wall
        if 0.0 <= d <= clock.max_step:    # the common case of EngineClock.advance, inlined
            t = clock.t = clock.t + d
            clock.wall = wall
            clock.resumed = False
        else:
            t = clock.advance(wall)
        if ts > wall + self._max_future:
            self.stats["future"] += 1
            return []
        kinds = self._streams.get(reading.device_id)
        if kinds is None:
            kinds = self._streams[reading.device_id] = {}
        st = kinds.get(reading.kind)
        if st is None:
            st = kinds[reading.kind] = self._new_stream(reading)
        value = reading.value
        if ts <= st.last_ts:
            if ts < st.last_ts:
                self.stats["stale"] += 1
                return []
            if value == st.last_value:
                self.stats["duplicate"] += 1
                return []
        prev = st.last_value
        st.last_ts = ts
        if value is None:
            calls = st.bad_calls
        else:
            st.last_value = value
            st.fed = True
            calls = st.calls
            hi = st.quiet_hi
            if hi is not None:
                if st.quiet_lo <= value <= hi:
                    if st.quiet:
                        calls = st.quiet_calls
                    else:
                        st.quiet = True         # this reading clears what they held
                else:
                    st.quiet = False
            i = st.device_index
            if i >= 0 and self.seen[i] < t:
                self.seen[i] = t
        if not calls:
            if self._modes and value is not None and reading.device_id in self._modes:
                self._out = []
                self._test_reading(reading, t)
                return self._out
            return []
        out = self._out = []
        t_ev = t - (wall - ts) if ts < wall else t
        for call in calls:
            call(st, reading, prev, t_ev)
        if self._modes and value is not None and reading.device_id in self._modes:
            self._test_reading(reading, t)
        return out

    def repeats_nothing(self, reading: Reading) -> bool:
        """Whether feeding ``reading`` now would change nothing: the device in no test or
        maintenance mode, every rule listening idle on it. For a repeat of its stream's last
        value, given to the rules in this engine, their word alone says so
        (``Evaluator.repeat_idle``, cached); for any other value, or a stream they were not
        given a value of yet (a new one, one restored after a restart), they must also hold
        nothing for the device that it could end (``Evaluator.holds``: an active alarm, a
        held state, an open fault). The pipeline asks before it makes a restore durable
        (gateway/pipeline.py)."""
        device, kind, value = reading.device_id, reading.kind, reading.value
        if value is None or (self._modes and device in self._modes):
            return False
        kinds = self._streams.get(device)
        st = kinds.get(kind) if kinds is not None else None
        if st is not None:
            handlers = st.handlers
        else:
            route = self._routes.get(device)
            if route is None:
                return False
            by_kind = route.by_kind
            handlers = by_kind[kind if kind in by_kind else None]
        key = (id(handlers), kind, value)     # interned: the rule index keeps them
        idle = self._idle.get(key)
        if idle is None:
            idle = self._idle[key] = all(h.repeat_idle(kind, value) for h in handlers)
        if not idle or (st is not None and st.fed and st.last_value == value):
            return idle
        return not any(h.holds(device) for h in handlers)

    def feed_repeat(self, reading: Reading, now: datetime) -> list[Action]:
        """:meth:`feed` for a reading that changed nothing (:meth:`repeats_nothing`) when it
        was offered and went the telemetry's way, so that readings of its device offered
        after it may have been fed first: one of them stamped the same time with another
        value makes it stale (``stats["stale"]``; a device stamping whole seconds), as an
        older one does in :meth:`feed`."""
        kinds = self._streams.get(reading.device_id)
        st = kinds.get(reading.kind) if kinds is not None else None
        if (st is not None and reading.ts.timestamp() == st.last_ts
                and reading.value != st.last_value):
            self.stats["stale"] += 1
            return []
        return self.feed(reading, now)

    def tick(self, now: datetime) -> list[Action]:
        """Run every timer due at ``now``; return the actions."""
        t = self.clock.advance(now.timestamp())
        out = self._out = []
        self.timers.run_due(t)
        for ev in self._tickers:
            ev.tick(t)
        return out

    # -- from staff and installers ------------------------------------------------------
    def acknowledged(self, key: str, now: datetime) -> bool:
        """Staff acknowledged alarm ``key``: escalation stops. False if no such open alarm."""
        self.clock.advance(now.timestamp())
        return self.book.acknowledged(key)

    def resolved(self, key: str, now: datetime) -> bool:
        """Staff closed alarm ``key``: its next trigger opens a new alarm."""
        self.clock.advance(now.timestamp())
        return self.book.resolved(key)

    def reopened(self, key: str, rule_id: str, now: datetime) -> list[Action]:
        """The store opened a new alarm for a trigger of ``key`` that this engine took for an
        update (the alarm had been resolved there): its bookkeeping starts afresh. Returns
        the actions that causes (an escalation tier due at once)."""
        t = self.clock.advance(now.timestamp())
        out = self._out = []
        rule = next((r for r in self.config.rules if r.id == rule_id), None)
        if rule is not None:
            self.book.reopen(key, t, rule)
        return out

    def fired_keys(self) -> set[str]:
        """Keys of the alarms the rules hold as fired (restored from a snapshot): of the
        store's ended keys, :meth:`adopt_store` needs these only."""
        out: set[str] = set()
        for ev in self.evaluators:
            out |= ev.fired_keys()
        return out

    def adopt_store(self, journal: dict[str, dict[str, Any]], stored: list[StoredAlarm],
                    version: int, open_faults: list[str], ended: set[str]) -> None:
        """Make alarm and fault bookkeeping the store's, after :meth:`load_snapshot`: the
        store is the one source of truth for them (docs/architecture.md, "Guarantees").
        ``stored`` have ``raised`` in wall epoch seconds; ``ended``: keys whose last alarm
        was cleared by its condition and is closed (all of them, or those of
        :meth:`fired_keys`: no rule holds any other). Rules still holding an alarm active for
        a key that has none open and active forget it, so the next time their condition
        is met it raises an alarm, as it would have without the restart; rules not holding
        one that is open and active hold it, so their condition ending clears it."""
        wall, t = self.clock.wall, self.clock.t
        offset = 0.0 if wall == float("-inf") else t - wall
        stored = [replace(a, raised=a.raised + offset) for a in stored]
        self.book.rebuild(journal, stored, {r.id: r for r in self.config.rules}, version)
        self.faults.load(open_faults)
        active = {k for k, o in self.book.open.items() if o.active}
        ended = (set(ended) | {k for k, o in self.book.open.items() if not o.active}) - active
        for ev in self.evaluators:
            ev.reconcile(active, ended, self.clock.t)

    def where_of(self, device_id: str) -> Subject:
        """Where a device is (a site device's place; else only its id)."""
        route = self._routes.get(device_id)
        return route.where if route is not None else Subject(device_id, None, None)

    def rewind(self, device_id: str, kind: Kind, ts: datetime) -> None:
        """Forget the order state of ``device_id``'s ``kind`` stream at and after ``ts``, so
        that a reading stamped ``ts`` fed again (accepted, not yet processed when the
        gateway stopped) is evaluated instead of being taken for a duplicate or stale."""
        st = self._streams.get(device_id, {}).get(kind)
        if st is not None and st.last_ts >= ts.timestamp():
            st.last_ts = float("-inf")
            st.last_value = None
            st.quiet = False

    def set_device_mode(self, device_id: str, mode: str) -> None:
        """``"test"``/``"maintenance"``: the device's triggers become TestRecords."""
        if mode not in MODES:
            raise ValueError(f"unknown device mode {mode!r}; use one of {sorted(MODES)}")
        if mode == "normal":
            self._modes.pop(device_id, None)
        else:
            self._modes[device_id] = mode

    def mode_of(self, device_id: str) -> str:
        return self._modes.get(device_id, "normal")

    def _test_reading(self, reading: Reading, t: float) -> None:
        """A good reading from a device in test/maintenance mode that no rule recorded is
        its test (module contract)."""
        kind, value, device = reading.kind, reading.value, reading.device_id
        if kind in NOT_A_TEST or value is False:
            return
        for a in self._out:
            if type(a) is TestRecord and a.device_id == device:
                return                  # a rule recorded it already
        if not isinstance(value, bool):
            last = self._tested.get((device, kind))
            if last is not None and t - last < TEST_READING_EVERY_S:
                return
            self._tested[(device, kind)] = t
        self._emit(TestRecord(device, f"reading:{kind.value}", reading.ts, value))

    # -- devices added, removed or changed (module contract) -----------------------------
    def update_devices(self, site: SiteIndex, changed: Iterable[str] | None = None) -> None:
        """Take ``site``: the engine's site with devices added, removed or changed (place,
        type or name), the same households, grid cells and timezone (else ``ValueError``).
        ``changed``: the devices of ``site`` that are new or whose ``DeviceInfo`` differs
        (None: found by comparing every device). Devices not in ``site`` are removed. The
        per-device state of the engine and its rules follows by device id; see the module
        contract for what this equals."""
        old = self.site
        if (site.households is not old.households and site.households != old.households
                or site.tz != old.tz or site.grid_cell_names != old.grid_cell_names):
            raise ValueError("update_devices: the households, grid cells or timezone "
                             "changed; build a new engine")
        if changed is None:
            changed = [d for d, info in site.devices.items() if old.devices.get(d) != info]
        changed = [d for d in dict.fromkeys(changed) if d in site.devices]
        removed = [d for d in old.devices if d not in site.devices]
        old_index = old.device_index
        # perm[new index] = old index (-1: a new device)
        perm = np.fromiter((old_index.get(d, -1) for d in site.devices), dtype=np.int64,
                           count=len(site.devices))
        self.site = site
        seen = array("d", [float("-inf")]) * len(site.devices)
        seen_np = np.frombuffer(seen, dtype=np.float64)
        kept = perm >= 0
        seen_np[kept] = self.seen_np[perm[kept]]
        self.seen, self.seen_np = seen, seen_np
        ids = list(site.devices)
        for i in np.flatnonzero(kept & (perm != np.arange(len(perm)))).tolist():
            route = self._routes.get(ids[i])   # an unchanged device at a new index
            if route is not None:
                route.device_index = i
                for st in self._streams.get(ids[i], {}).values():
                    st.device_index = i
        for d in changed:
            self._reroute(d, site.devices[d])
        for d in removed:
            first = next((s for s in self._streams.get(d, {}).values()
                          if s.last_ts != float("-inf")), None)
            if first is None:     # nothing to carry: it is unknown, as to a new engine
                self._routes.pop(d, None)
                self._streams.pop(d, None)
            else:                 # as a restore makes it from its streams
                self._reroute(d, DeviceInfo(d, first.device_type, first.where.household_id,
                                            first.where.grid_cell))
        # site devices first, in the site's order, then the others: as a restore orders them
        streams = self._streams
        self._streams = {d: streams.pop(d, {}) for d in site.devices}
        self._streams.update(streams)
        for ev in sorted(self.evaluators, key=lambda ev: ev.reads_rules):
            ev.devices_changed(old, changed, removed, perm)

    def add_device(self, info: DeviceInfo) -> None:
        """A new device (see :meth:`update_devices`), after the site's others."""
        if info.device_id in self.site.devices:
            raise ValueError(f"device {info.device_id!r} exists")
        self.update_devices(replace(self.site, devices={**self.site.devices,
                                                        info.device_id: info}),
                            [info.device_id])

    def update_device(self, info: DeviceInfo) -> None:
        """A device's new place, type or name (see :meth:`update_devices`)."""
        if info.device_id not in self.site.devices:
            raise ValueError(f"no device {info.device_id!r}")
        self.update_devices(replace(self.site, devices={**self.site.devices,
                                                        info.device_id: info}),
                            [info.device_id])

    def remove_device(self, device_id: str) -> None:
        """A device is gone from the site (see :meth:`update_devices`)."""
        if device_id not in self.site.devices:
            raise ValueError(f"no device {device_id!r}")
        self.update_devices(replace(self.site, devices={
            d: info for d, info in self.site.devices.items() if d != device_id}), [])

    def _reroute(self, device_id: str, info: DeviceInfo) -> None:
        """A device's route and streams made again for ``info``, as a restore makes them
        (streams that have accepted no reading are dropped, the quiet band starts over)."""
        route = self._routes[device_id] = DeviceRoute(info, self._index, self.site,
                                                      self._bound)
        streams: dict[Kind, Stream] = {}
        for kind, old in self._streams.get(device_id, {}).items():
            if old.last_ts != float("-inf"):
                st = streams[kind] = Stream(route, kind)
                st.last_ts, st.last_value = old.last_ts, old.last_value
        self._streams[device_id] = streams

    def _names(self, device_id: str | None, household_id: str | None,
               grid_cell: str | None) -> dict[str, str]:
        return self.site.names(device_id, household_id, grid_cell)

    # -- helpers for evaluators ---------------------------------------------------------
    def _emit(self, action: Any) -> None:
        self._out.append(action)

    def _new_stream(self, r: Reading) -> Stream:
        route = self._routes.get(r.device_id)
        if route is None:
            info = self.site.devices.get(r.device_id)
            if info is None:
                self.stats["unknown_device"] += 1
                info = DeviceInfo(r.device_id, r.device_type, r.household_id, r.grid_cell)
            route = self._routes[r.device_id] = DeviceRoute(info, self._index, self.site,
                                                              self._bound)
        return Stream(route, r.kind)

    def unit_of(self, device_id: str, kind: Kind) -> str:
        st = self._streams.get(device_id, {}).get(kind)
        return st.unit if st is not None else UNITS.get(kind, "")

    def local_minute(self, ts: datetime) -> int:
        """Minute of the local day at the site for ``ts``."""
        loc = ts.astimezone(self.site.zone)
        return loc.hour * 60 + loc.minute

    # -- snapshot -----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """JSON-serializable state (see module contract)."""
        return {
            "version": SNAPSHOT_VERSION,
            "clock": self.clock.state(),
            "modes": dict(self._modes),
            "streams": [[d, k.value, st.last_ts, st.last_value, st.device_type,
                         st.where.household_id, st.where.grid_cell]
                        for d, ks in self._streams.items() for k, st in ks.items()
                        if st.last_ts != float("-inf")],
            "seen": pack(list(self.site.devices), {"seen": self.seen_np}),
            "alarms": self.book.state(),
            "faults": self.faults.state(),
            "rules": {ev.rule.id: {"kind": ev.rule.kind, "state": ev.state()}
                      for ev in self.evaluators},
            "stats": dict(self.stats),
        }

    def load_snapshot(self, snap: dict[str, Any]) -> None:
        """Replace this engine's state by ``snap`` (from :meth:`snapshot`)."""
        if snap.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported rules snapshot version {snap.get('version')!r}")
        self.clock.load(snap["clock"])
        self._modes = dict(snap["modes"])
        self._streams = {d: {} for d in self.site.devices}
        for d, k, last_ts, last_value, dtype, household, cell in snap["streams"]:
            kind = Kind(k)
            route = self._routes.get(d)
            if route is None:
                info = self.site.devices.get(d) or DeviceInfo(d, dtype, household, cell)
                route = self._routes[d] = DeviceRoute(info, self._index, self.site, self._bound)
            st = Stream(route, kind)
            st.last_ts, st.last_value = last_ts, last_value
            self._streams.setdefault(d, {})[kind] = st
        unpack(snap["seen"], list(self.site.devices), {"seen": self.seen_np})
        self.book.load(snap["alarms"])
        self.faults.load(snap["faults"])
        for ev in self.evaluators:
            saved = snap["rules"].get(ev.rule.id)
            if saved is not None and saved["kind"] == ev.rule.kind:
                ev.load(saved["state"])
        self.stats.update(snap.get("stats", {}))

    @classmethod
    def restore(cls, config: RulesConfig, site: SiteIndex, snap: dict[str, Any]) -> Engine:
        engine = cls(config, site)
        engine.load_snapshot(snap)
        return engine
