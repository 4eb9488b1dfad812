"""Compiled rules of the event-driven kinds: match, threshold, count, held, compound.

Contract of an evaluator (also followed by supervision and inactivity):
- ``kinds``: the reading kinds it listens to (None: every kind of the devices it accepts);
- ``accepts(device)``: whether a device passes the rule's filters (all given filters must
  hold; within one filter any listed id will do; an empty filter accepts everything);
- ``on_reading(stream, reading, prev, t)``: a new, in-order reading (``prev`` is the previous
  value of that device and kind, ``t`` the engine time of the reading); actions go through
  the engine's alarm/fault books;
- ``on_timer(key, due, t)``: a timer it scheduled is due; ``state()``/``load()``: JSON state
  for snapshots (``load`` re-arms pending timers);
- ``devices_changed(old, changed, removed, perm)``: the engine took a site with devices
  added, removed or changed (``Engine.update_devices``; ``engine.site`` is the new one,
  ``old`` the previous, ``perm[i]`` the old dense index of the new site's device ``i`` or
  -1): state kept per site device follows by id, as a restore from a snapshot would have it;
- ``quiet_band()``: None, or ``(lo, hi)``: values for which ``on_reading`` does nothing when
  the device holds no state in this rule, and which leave it holding none (the engine then
  skips the call once a previous value in the band has been given to it).
- ``repeat_idle(kind, value)``: whether a reading of ``kind`` with ``value``, the same value
  as its stream's last one (already given to this rule), changes nothing this rule holds or
  records beyond what that first one did (False, the default, when unsure): the pipeline
  then need not make a repeated restore durable (``Engine.repeats_nothing``).
- ``holds(device_id)``: whether this rule holds state for the device that a reading it is
  idle on a repeat of could still end (an active alarm, a held state, an open fault; True,
  the default, when unsure): a reading its rules were not given yet (a new stream, one
  restored after a restart) changes nothing when each is idle on it and holds nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from gateway.kernel.model import Kind, Reading, Value
from rules.alarms import Subject
from rules.durations import bilingual_duration
from rules.site import DeviceInfo, SiteIndex
from rules.spec import CompoundRule, Condition, CountRule, HeldRule, MatchRule, ThresholdRule

if TYPE_CHECKING:
    from rules.engine import Engine, Stream

__all__ = ["CompoundEval", "CountEval", "Evaluator", "HeldEval", "MatchEval", "ThresholdEval",
           "matches"]


_NO_IDS: frozenset[str] = frozenset()
_KIND_SETS: dict[frozenset[Kind], frozenset[Kind]] = {}


def _ids(ids: Iterable[str]) -> frozenset[str]:
    """A filter's ids; an empty filter is one shared object (thousands of rules, few objects
    for the garbage collector to scan)."""
    return frozenset(ids) if ids else _NO_IDS


def kind_set(kinds: Iterable[Kind]) -> frozenset[Kind]:
    """The frozenset of ``kinds``, shared by every rule listening to the same kinds."""
    fs = frozenset(kinds)
    return _KIND_SETS.setdefault(fs, fs)


def matches(cond: Condition, kind: Kind, value: Value) -> bool:
    """Whether a reading of ``kind`` with ``value`` satisfies ``cond``."""
    return cond.kind is kind and (cond.value is None or cond.value == value)


class Evaluator:
    """Base of compiled rules (see module contract)."""

    # slots: a rule's fields sit in one object (thousands of rules, each touched rarely:
    # fewer cache misses per call); subclasses elsewhere may still use a __dict__
    __slots__ = ("rule", "order", "engine", "book", "_devices", "_types", "_households",
                 "_cells", "_due", "call")

    kinds: frozenset[Kind] | None = frozenset()
    wants_bad = False   # also called for BAD-quality readings (value None)
    #: reads other rules' per-device state: told of changed devices after them
    reads_rules = False

    def __init__(self, rule: Any, engine: Engine, order: int) -> None:
        self.rule = rule
        self.order = order
        self.engine = engine
        self.book = engine.book
        self._devices = _ids(rule.devices)
        self._types = _ids(rule.device_types)
        self._households = _ids(rule.households)
        self._cells = _ids(rule.grid_cells)
        self._due: dict[str, float] = {}
        #: ``on_reading`` bound once: the engine's routes share it (one object per rule)
        self.call = self.on_reading

    def accepts(self, d: DeviceInfo) -> bool:
        return ((not self._devices or d.device_id in self._devices)
                and (not self._types or d.device_type in self._types)
                and (not self._households or d.household_id in self._households)
                and (not self._cells or d.grid_cell in self._cells))

    def accepts_every_device(self) -> bool:
        """True when :meth:`accepts` is this class's, without a filter: it accepts every
        device (the rule index then does not ask it device by device)."""
        return (type(self).accepts is Evaluator.accepts
                and not (self._devices or self._types or self._households or self._cells))

    def index_keys(self) -> tuple[str, Iterable[str]]:
        """The most selective filter, for the rule index: (field, ids) or ("any", ())."""
        for field, ids in (("device", self._devices), ("household", self._households),
                           ("cell", self._cells), ("type", self._types)):
            if ids:
                return field, ids
        return "any", ()

    def on_reading(self, st: Stream, r: Reading, prev: Value, t: float) -> None:
        raise NotImplementedError

    def on_timer(self, key: str, due: float, t: float) -> None:
        pass

    def quiet_band(self) -> tuple[float, float] | None:
        return None

    def repeat_idle(self, kind: Kind, value: Value) -> bool:
        return False

    def holds(self, device_id: str) -> bool:
        return True

    def state(self) -> dict[str, Any]:
        return {}

    def load(self, d: dict[str, Any]) -> None:
        pass

    def devices_changed(self, old: SiteIndex, changed: list[str], removed: list[str],
                        perm: npt.NDArray[np.int64]) -> None:
        """See module contract (nothing to do for rules that keep state by device id)."""

    def reconcile(self, active: set[str], ended: set[str], t: float) -> None:
        """After a restore, the store's word on this rule's alarms (Engine.adopt_store):
        ``active`` are open with their condition present, so hold them (the condition
        ending clears them); ``ended`` are not, so forget holding them (the condition met
        again raises one)."""

    def fired_keys(self) -> set[str]:
        """Keys of the alarms this rule holds as fired (after a restore: the only keys
        :meth:`reconcile`'s ``ended`` can change anything for)."""
        return set()

    def _devices_of(self, keys: set[str]) -> set[str]:
        prefix = self.rule.id + ":"
        n = len(prefix)
        return {k[n:] for k in keys if k.startswith(prefix)}

    # helpers
    def _arm(self, key: str, due: float) -> None:
        self._due[key] = due
        self.engine.timers.schedule(self, key, due)

    def _fields(self, st: Stream, value: Value, **extra: Any) -> dict[str, Any]:
        return {"value": value, "unit": st.unit, **extra}


class _PendingEval(Evaluator):
    """Per-device state lists in ``_pending`` (first item: engine time the condition began),
    where the device is, and the timers armed for them."""

    __slots__ = ("_pending", "_where")

    def __init__(self, rule: Any, engine: Engine, order: int) -> None:
        super().__init__(rule, engine, order)
        self._pending: dict[str, list[Any]] = {}
        self._where: dict[str, Subject] = {}

    def state(self) -> dict[str, Any]:
        return {"pending": self._pending, "due": self._due,
                "where": {d: [w.device_id, w.household_id, w.grid_cell]
                          for d, w in self._where.items() if d in self._pending}}

    def load(self, d: dict[str, Any]) -> None:
        self._pending = {k: list(v) for k, v in d["pending"].items()}
        self._where = {k: Subject(*w) for k, w in d["where"].items()}
        for k, due in d["due"].items():
            self._arm(k, float(due))


class MatchEval(Evaluator):
    __slots__ = ("kinds",)
    rule: MatchRule

    def __init__(self, rule: MatchRule, engine: Engine, order: int) -> None:
        super().__init__(rule, engine, order)
        ks = {rule.when.kind}
        if rule.clear_when is not None:
            ks.add(rule.clear_when.kind)
        self.kinds = kind_set(ks)

    def on_reading(self, st: Stream, r: Reading, prev: Value, t: float) -> None:
        rule = self.rule
        key = f"{rule.id}:{st.device_id}"
        if matches(rule.when, r.kind, r.value):
            self.book.trigger(rule, key, st.where, t, self._fields(st, r.value), r.value, r.ts)
        elif rule.clear_when is not None and matches(rule.clear_when, r.kind, r.value):
            self.book.clear(rule, key, t, f"{r.kind.value}={r.value}", rule.auto_resolve_on_clear)

    def repeat_idle(self, kind: Kind, value: Value) -> bool:
        """Not a trigger; a clear of its own alarm (clearing a cleared alarm does nothing,
        and only a trigger, which this stream has not had since, makes it active again)."""
        rule = self.rule
        clear = rule.clear_when
        return not matches(rule.when, kind, value) and (
            clear is None or not matches(clear, kind, value) or clear.kind is rule.when.kind)

    def holds(self, device_id: str) -> bool:
        o = self.book.open.get(f"{self.rule.id}:{device_id}")
        return o is not None and o.active


class ThresholdEval(_PendingEval):
    """States per device: absent = normal, ``[since, value]`` = over the limit (pending until
    ``for`` has passed), ``[since, value, 1]`` = alarm active."""

    __slots__ = ("kinds", "_up", "_limit", "_clear_at")
    rule: ThresholdRule

    def __init__(self, rule: ThresholdRule, engine: Engine, order: int) -> None:
        super().__init__(rule, engine, order)
        self.kinds = kind_set((rule.metric,))
        self._up = rule.above is not None
        self._limit = rule.above if self._up else rule.below
        self._clear_at = (rule.above - rule.hysteresis if self._up       # type: ignore
                          else rule.below + rule.hysteresis)            # type: ignore

    def on_reading(self, st: Stream, r: Reading, prev: Value, t: float) -> None:
        v = r.value
        over = v > self._limit if self._up else v < self._limit  # type: ignore[operator]
        pending = self._pending
        if not over and not pending:
            return           # quiet side and no device pending or active (the common case)
        dev = st.device_id
        s = pending.get(dev)
        if s is None:        # normal: only a value over the limit matters (the common case)
            if over:
                rule = self.rule
                self._where[dev] = st.where
                self._pending[dev] = [t, v]
                if rule.for_ <= 0:
                    self._fire(dev, t)
                else:
                    self._arm(dev, t + rule.for_)
            return
        s[1] = v
        if len(s) == 3:      # active: only the clear level ends it (hysteresis)
            if v <= self._clear_at if self._up else v >= self._clear_at:  # type: ignore
                rule = self.rule
                del self._pending[dev]
                self.book.clear(rule, f"{rule.id}:{dev}", t, f"{r.kind.value}={v}",
                                rule.auto_resolve_on_clear)
        elif not over:       # pending: must stay over the limit for the whole duration
            del self._pending[dev]
            self._due.pop(dev, None)

    def quiet_band(self) -> tuple[float, float]:
        """At or past the clear level: not over the limit, and it clears an active alarm
        and cancels a pending one."""
        inf = float("inf")
        return (-inf, self._clear_at) if self._up else (self._clear_at, inf)

    def on_timer(self, key: str, due: float, t: float) -> None:
        if self._due.get(key) == due:
            del self._due[key]
            self._fire(key, due)

    def fired_keys(self) -> set[str]:
        return {f"{self.rule.id}:{dev}" for dev, s in self._pending.items() if len(s) == 3}

    def reconcile(self, active: set[str], ended: set[str], t: float) -> None:
        for dev in self._devices_of(ended):
            s = self._pending.get(dev)
            if s is not None and len(s) == 3:
                del self._pending[dev]
        for dev in self._devices_of(active):
            s = self._pending.get(dev)
            if s is None:
                self._pending[dev] = [t, float("nan"), 1]
                self._where[dev] = self.engine.where_of(dev)
            elif len(s) == 2:       # it fired after the snapshot
                s.append(1)
                self._due.pop(dev, None)

    def _fire(self, dev: str, t: float) -> None:
        s = self._pending[dev]
        s.append(1)
        where = self._where[dev]
        fields = {"value": s[1], "unit": self.engine.unit_of(dev, self.rule.metric),
                  "duration": bilingual_duration(t - s[0])}
        self.book.trigger(self.rule, f"{self.rule.id}:{dev}", where, t, fields, s[1])



class CountEval(Evaluator):
    __slots__ = ("kinds", "_kind", "_want", "_per_household", "_times")
    rule: CountRule

    def __init__(self, rule: CountRule, engine: Engine, order: int) -> None:
        super().__init__(rule, engine, order)
        self.kinds = kind_set((rule.when.kind,))
        self._kind, self._want = rule.when.kind, rule.when.value
        self._per_household = rule.per == "household"
        #: engine times of the matching readings in the window, per group (in place)
        self._times: dict[str, list[float]] = {}

    def on_reading(self, st: Stream, r: Reading, prev: Value, t: float) -> None:
        want = self._want
        if r.kind is not self._kind or (want is not None and r.value != want):
            return
        rule = self.rule
        engine = self.engine
        if engine._modes and engine.mode_of(st.device_id) != "normal":
            # a press under test is recorded, and never counts toward an alarm
            self.book.trigger(rule, f"{rule.id}:{st.device_id}", st.where, t, {}, r.value)
            return
        if self._per_household:
            group = st.where.household_id
            if group is None:
                return
        else:
            group = st.device_id
        times = self._times.get(group)
        if times is None:
            times = self._times[group] = [t]
        else:
            lo = t - rule.window
            if min(times) <= lo:     # prune only when something fell out of the window
                times[:] = [x for x in times if x > lo]
            times.append(t)
        if len(times) >= rule.count:
            del self._times[group]
            where = (Subject(None, group, st.where.grid_cell) if self._per_household
                     else st.where)
            fields = self._fields(st, r.value, count=len(times),
                                  duration=bilingual_duration(rule.window))
            self.book.trigger(rule, f"{rule.id}:{group}", where, t, fields, r.value, r.ts)

    def repeat_idle(self, kind: Kind, value: Value) -> bool:
        """Only readings it counts do something."""
        return kind is not self._kind or (self._want is not None and value != self._want)

    def holds(self, device_id: str) -> bool:
        return False        # the readings it is idle on are not counted

    def state(self) -> dict[str, Any]:
        return {"times": {k: list(v) for k, v in self._times.items()}}

    def load(self, d: dict[str, Any]) -> None:
        self._times = {k: list(v) for k, v in d["times"].items()}


class HeldEval(Evaluator):
    """Per device, while the state holds: ``[since, due, where]`` (pending until ``due``),
    then ``[since, due, where, 1]`` once alarmed. One dict, and the rule's settings in slots:
    a scoped rule is touched rarely, so each call costs the memory it reads (snapshot
    format as for thresholds: ``pending``, ``due``, ``where``)."""

    __slots__ = ("kinds", "_increasing", "_want", "_for", "_hours", "_held")
    rule: HeldRule

    def __init__(self, rule: HeldRule, engine: Engine, order: int) -> None:
        super().__init__(rule, engine, order)
        self.kinds = kind_set((rule.when.kind,))
        self._increasing, self._want = rule.increasing, rule.when.value
        self._for, self._hours = rule.for_, rule.hours
        self._held: dict[str, list[Any]] = {}

    def on_reading(self, st: Stream, r: Reading, prev: Value, t: float) -> None:
        v = r.value
        if self._increasing:
            on = prev is not None and v > prev  # type: ignore[operator]
        else:
            on = v == self._want
        held = self._held
        if on and self._hours is not None:
            on = self._hours.contains(self.engine.local_minute(r.ts))
        if on:
            dev = st.device_id
            if dev not in held:
                due = t + self._for
                held[dev] = [t, due, st.where]
                self.engine.timers.schedule(self, dev, due)
            return
        if held:
            s = held.pop(st.device_id, None)     # the state ended: cancel (lazily) or clear
            if s is not None and len(s) == 4:
                rule = self.rule
                self.book.clear(rule, f"{rule.id}:{st.device_id}", t, f"{r.kind.value}={v}",
                                rule.auto_resolve_on_clear)

    def repeat_idle(self, kind: Kind, value: Value) -> bool:
        """The state is off: nothing is held for the device since the first such reading
        (an increasing state goes off at an unchanged value: a change)."""
        return not self._increasing and value != self._want

    def holds(self, device_id: str) -> bool:
        return device_id in self._held

    def on_timer(self, key: str, due: float, t: float) -> None:
        s = self._held.get(key)
        if s is None or s[1] != due or len(s) == 4:
            return   # cancelled, re-armed, or already alarmed
        s.append(1)
        fields = {"duration": bilingual_duration(due - s[0]),
                  "unit": self.engine.unit_of(key, self.rule.when.kind)}
        self.book.trigger(self.rule, f"{self.rule.id}:{key}", s[2], due, fields)

    def fired_keys(self) -> set[str]:
        return {f"{self.rule.id}:{dev}" for dev, s in self._held.items() if len(s) == 4}

    def reconcile(self, active: set[str], ended: set[str], t: float) -> None:
        for dev in self._devices_of(ended):
            s = self._held.get(dev)
            if s is not None and len(s) == 4:
                del self._held[dev]
        for dev in self._devices_of(active):
            s = self._held.get(dev)
            if s is None or len(s) == 3:
                self._held[dev] = [s[0] if s else t, None, self.engine.where_of(dev), 1]

    def state(self) -> dict[str, Any]:
        held = self._held
        return {"pending": {d: [s[0], 1] if len(s) == 4 else [s[0]] for d, s in held.items()},
                "due": {d: s[1] for d, s in held.items() if len(s) == 3},
                "where": {d: [s[2].device_id, s[2].household_id, s[2].grid_cell]
                          for d, s in held.items()}}

    def load(self, d: dict[str, Any]) -> None:
        self._held = {}
        for dev, p in d["pending"].items():
            where = Subject(*d["where"][dev])
            due = d["due"].get(dev)
            if len(p) == 1 and due is not None:
                self._held[dev] = [float(p[0]), float(due), where]
                self.engine.timers.schedule(self, dev, float(due))
            elif len(p) == 2:
                self._held[dev] = [float(p[0]), None, where, 1]


class CompoundEval(Evaluator):
    """Per group (household / grid cell / device): engine time each term was last seen."""

    __slots__ = ("kinds", "_terms", "_seen", "_need_all")
    rule: CompoundRule

    def __init__(self, rule: CompoundRule, engine: Engine, order: int) -> None:
        super().__init__(rule, engine, order)
        self._terms = [term.when for term in rule.terms]
        self.kinds = kind_set(c.kind for c in self._terms)
        self._seen: dict[str, list[float | None]] = {}
        self._need_all = rule.all is not None

    def on_reading(self, st: Stream, r: Reading, prev: Value, t: float) -> None:
        rule = self.rule
        hit = [i for i, c in enumerate(self._terms) if matches(c, r.kind, r.value)]
        if not hit or self.engine.mode_of(st.device_id) != "normal":
            if hit:   # a device under test contributes a test record, never a fire alarm
                self.book.trigger(rule, f"{rule.id}:{st.device_id}", st.where, t, {}, r.value)
            return
        w = st.where
        if rule.per == "household":
            group, where = w.household_id, Subject(None, w.household_id, w.grid_cell)
        elif rule.per == "grid_cell":
            group, where = w.grid_cell, Subject(None, None, w.grid_cell)
        else:
            group, where = st.device_id, w
        if group is None:
            return
        seen = self._seen.setdefault(group, [None] * len(self._terms))
        for i in hit:
            seen[i] = t
        lo = t - rule.window
        if self._need_all and not all(s is not None and s >= lo for s in seen):
            return
        del self._seen[group]
        fields = self._fields(st, r.value, duration=bilingual_duration(rule.window))
        self.book.trigger(rule, f"{rule.id}:{group}", where, t, fields, r.value, r.ts)

    def repeat_idle(self, kind: Kind, value: Value) -> bool:
        """Only readings matching a term do something."""
        return not any(matches(c, kind, value) for c in self._terms)

    def holds(self, device_id: str) -> bool:
        return False        # the readings it is idle on match no term

    def state(self) -> dict[str, Any]:
        return {"seen": self._seen}

    def load(self, d: dict[str, Any]) -> None:
        self._seen = {k: list(v) for k, v in d["seen"].items()}
