"""Alarm and fault bookkeeping shared by all rule kinds: dedup, flapping, escalation.

Contract:
- :meth:`AlarmBook.trigger` opens an alarm (``RaiseAlarm``) or, while one with the same key is
  open, updates it (``UpdateAlarm``, count + 1). A device in test/maintenance mode yields a
  ``TestRecord`` instead and leaves no state.
- :meth:`AlarmBook.clear` reports that the condition ended (``ClearAlarm``); with
  ``auto_resolve`` the alarm is closed (escalation stops, the next trigger opens a new alarm),
  otherwise it stays open for staff. When a key changes state more than ``flapping.changes``
  times within ``flapping.window``, it is *flapping*: the alarm is held open (one
  ``UpdateAlarm(flapping=True)``), further raise/clear churn is silent, and a single
  ``ClearAlarm`` follows once the condition has stayed clear for a whole window.
- Escalation: tiers fire (``Escalate``) at raise time + ``after`` until acknowledged/resolved.
- :class:`FaultBook` does the same dedup for device faults (no escalation, no flapping).
- Journal (one source of truth with the gateway's store): every change of a key's state
  (open, count, acknowledged, active, tier, flapping, due timers, recent changes) marks the
  key dirty; :meth:`AlarmBook.journal` hands out each dirty key's whole entry (``None``
  state: closed) with a version that only grows, and the gateway writes them in the same
  transaction as the actions they came with. :meth:`AlarmBook.rebuild` makes the book again
  from those entries reconciled with the store's open alarms (:class:`StoredAlarm`), which
  win for what staff changed: an alarm resolved there is closed here, an acknowledged one
  stops escalating, and an open one without a matching entry is made from its row.
- :meth:`AlarmBook.reopen`: the store opened a new alarm for a trigger the book took for an
  update of an open one (the alarm was resolved in the store meanwhile): the entry starts
  afresh (count 1, not acknowledged, escalation from now).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.kernel.model import Severity, Value
from rules.actions import (
    ClearAlarm, ClearFault, Escalate, RaiseAlarm, RaiseFault, TestRecord, UpdateAlarm,
)
from rules.clock import EngineClock, TimerQueue
from rules.commands import CommandIntent, intents
from rules.durations import Bilingual
from rules.spec import EscalationSpec, FlappingSpec, Message

__all__ = ["AlarmBook", "FaultBook", "StoredAlarm", "Subject", "render"]


_FLAP_ZH = "（频繁变化，已抑制）"
_FLAP_EN = " (flapping, suppressed)"


#: the name placeholders of a place (device, household, grid cell ids ->
#: ``{"device_name", "household_address", "grid_cell_name"}``: rules.site.SiteIndex.names)
Names = Callable[[str | None, str | None, str | None], dict[str, str]]


def _then(rule: Any) -> tuple[CommandIntent, ...]:
    """The commands a rule's alarm sends (``then``; none for rules without)."""
    then = getattr(rule, "then", None)
    return intents(then) if then else ()


def _no_names(device_id: str | None, household_id: str | None,
              grid_cell: str | None) -> dict[str, str]:
    return {"device_name": device_id or "", "household_address": household_id or "",
            "grid_cell_name": grid_cell or ""}


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""


def render(message: Message, fields: dict[str, Any]) -> tuple[str, str]:
    """``(zh, en)`` texts of ``message`` with ``fields`` filled in (missing ones blank;
    :class:`Bilingual` values give each language its own text)."""
    zh, en = _Blank(fields), _Blank(fields)
    for k, v in fields.items():
        if isinstance(v, Bilingual):
            zh[k], en[k] = v.zh, v.en
    return message.zh.format_map(zh), message.en.format_map(en)


@dataclass(frozen=True, slots=True)
class Subject:
    """Where an alarm is: its device (None for household-level rules), household, cell."""

    device_id: str | None
    household_id: str | None
    grid_cell: str | None


@dataclass(frozen=True, slots=True)
class StoredAlarm:
    """What the store says of one open alarm (for :meth:`AlarmBook.rebuild`).
    ``raised`` is engine time; ``journal_matches``: the journal entry of its key was
    written while this very alarm was the open one."""

    key: str
    rule_id: str
    severity: Severity
    acked: bool
    count: int
    tier: int
    raised: float
    cleared: bool
    text: tuple[str, str]
    journal_matches: bool


class _Open:
    __slots__ = ("rule_id", "count", "acked", "active", "tier", "flapping", "raised",
                 "auto_resolve", "severity", "escalate", "text")

    def __init__(self, rule_id: str, t: float, severity: Severity, escalate: bool) -> None:
        self.rule_id = rule_id
        self.count = 1
        self.acked = False
        self.active = True
        self.tier = 0            # tiers already notified
        self.flapping = False
        self.raised = t
        self.auto_resolve = False
        self.severity = severity
        self.escalate = escalate
        self.text = ("", "")


class AlarmBook:
    """Open alarms by key. Actions go to ``emit``; wall timestamps come from ``clock``."""

    #: timer rank (rules.clock.TimerQueue): escalation and quiet-period timers run before
    #: rules' timers due at the same instant
    order = -1

    def __init__(self, escalation: EscalationSpec | None, timers: TimerQueue,
                 clock: EngineClock, emit: Callable[[object], None],
                 mode_of: Callable[[str], str], names: Names | None = None) -> None:
        self._names = names or _no_names
        self._esc = escalation
        self._timers = timers
        self._clock = clock
        self._emit = emit
        self._mode_of = mode_of
        self.open: dict[str, _Open] = {}
        self._due: dict[str, float] = {}        # escalation / flapping-quiet timers by key
        self._changes: dict[str, list[float]] = {}   # recent raise/clear times, kept past close
        self._dirty: set[str] = set()           # keys changed since the last journal()
        self.version = 0                         # of the last journal entry handed out

    # -- triggers from rules ------------------------------------------------------------
    def trigger(self, rule: Any, key: str, where: Subject, t: float, fields: dict[str, Any],
                value: Value = None, event_ts: datetime | None = None) -> None:
        """The condition of ``rule`` is present for ``key`` (see module contract)."""
        now = self._clock.wall_dt(t)
        if where.device_id is not None and self._mode_of(where.device_id) != "normal":
            self._emit(TestRecord(where.device_id, rule.id, now, value))
            return
        o = self.open.get(key)
        self._dirty.add(key)
        fields.update(rule_id=rule.id, device_id=where.device_id or "",
                      household_id=where.household_id or "", grid_cell=where.grid_cell or "",
                      **self._names(where.device_id, where.household_id, where.grid_cell))
        if o is None:
            o = self.open[key] = _Open(rule.id, t, rule.severity, self._escalates(rule))
            started = self._note_change(key, o, rule.flapping, t)
            fields.setdefault("count", 1)
            zh, en = o.text = render(rule.message, fields)
            self._emit(RaiseAlarm(key, rule.id, rule.category, rule.severity, where.device_id,
                                  where.household_id, where.grid_cell, zh, en, now, value,
                                  False, event_ts, _then(rule)))
            if started:
                self._emit(UpdateAlarm(key, now, 1, zh + _FLAP_ZH, en + _FLAP_EN, True))
            if o.escalate:
                self._schedule_tier(key, o)
            return
        o.count += 1
        fields["count"] = o.count
        started = False
        if not o.active:
            o.active = True
            started = self._note_change(key, o, rule.flapping, t)
            if o.flapping and not started:
                return   # churn while flapping is silent
        zh, en = o.text = render(rule.message, fields)
        again = RaiseAlarm(key, rule.id, rule.category, rule.severity, where.device_id,
                           where.household_id, where.grid_cell, zh, en, now, value, False,
                           event_ts, _then(rule))
        if started:
            zh, en = zh + _FLAP_ZH, en + _FLAP_EN
        self._emit(UpdateAlarm(key, now, o.count, zh, en, o.flapping, again))

    def clear(self, rule: Any, key: str, t: float, reason: str, auto_resolve: bool) -> None:
        """The condition of ``rule`` ended for ``key``."""
        o = self.open.get(key)
        if o is None or not o.active:
            return
        self._dirty.add(key)
        o.active = False
        o.auto_resolve = auto_resolve
        if self._note_change(key, o, rule.flapping, t):
            zh, en = o.text
            self._emit(UpdateAlarm(key, self._clock.wall_dt(t), o.count,
                                   zh + _FLAP_ZH, en + _FLAP_EN, True))
        if o.flapping:
            self._set_timer("q|" + key, t + rule.flapping.window)
            return
        self._emit(ClearAlarm(key, self._clock.wall_dt(t), reason, auto_resolve))
        if auto_resolve:
            self._close(key)

    # -- from staff ---------------------------------------------------------------------
    def acknowledged(self, key: str) -> bool:
        o = self.open.get(key)
        if o is None:
            return False
        o.acked = True
        self._due.pop("e|" + key, None)
        self._dirty.add(key)
        return True

    def resolved(self, key: str) -> bool:
        return self._close(key)

    # -- timers -------------------------------------------------------------------------
    def on_timer(self, key: str, due: float, t: float) -> None:
        if self._due.get(key) != due:
            return   # cancelled or re-armed
        del self._due[key]
        what, key = key[0], key[2:]
        o = self.open.get(key)
        if o is None:
            return
        self._dirty.add(key)
        if what == "q":   # flapping: has the condition stayed clear for a whole window?
            if o.flapping and not o.active:
                o.flapping = False
                self._emit(ClearAlarm(key, self._clock.wall_dt(t),
                                      "flapping stopped; condition clear", o.auto_resolve))
                if o.auto_resolve:
                    self._close(key)
            return
        if o.acked or self._esc is None or o.tier >= len(self._esc.tiers):
            return
        tier = self._esc.tiers[o.tier]
        o.tier += 1
        self._emit(Escalate(key, o.tier, tier.name, tuple(tier.notify), self._clock.wall_dt(t)))
        self._schedule_tier(key, o)

    # -- internals ----------------------------------------------------------------------
    def _escalates(self, rule: Any) -> bool:
        return (self._esc is not None and rule.escalate
                and rule.severity.rank <= self._esc.min_severity.rank)

    def _schedule_tier(self, key: str, o: _Open) -> None:
        assert self._esc is not None
        if o.tier < len(self._esc.tiers):
            due = o.raised + self._esc.tiers[o.tier].after
            if due <= self._clock.t:
                # due already (a tier with after: 0s): notify with the raise itself
                self._due["e|" + key] = due
                self.on_timer("e|" + key, due, self._clock.t)
            else:
                self._set_timer("e|" + key, due)

    def _set_timer(self, key: str, due: float) -> None:
        self._due[key] = due
        self._timers.schedule(self, key, due)

    def _note_change(self, key: str, o: _Open, spec: FlappingSpec | None, t: float) -> bool:
        """Record a raise/clear of ``key``; True when this change starts flapping."""
        if spec is None:
            return False
        lo = t - spec.window
        changes = [c for c in self._changes.get(key, ()) if c > lo]
        changes.append(t)
        self._changes[key] = changes
        if len(changes) > spec.changes and not o.flapping:
            o.flapping = True
            return True
        return False

    def _close(self, key: str) -> bool:
        self._dirty.add(key)
        self._due.pop("e|" + key, None)
        self._due.pop("q|" + key, None)
        return self.open.pop(key, None) is not None

    # -- journal (see module contract) ---------------------------------------------------
    def entry(self, key: str) -> dict[str, Any]:
        """The whole bookkeeping of ``key``: ``open`` (None: no alarm open), its due timers
        and its recent raise/clear times."""
        o = self.open.get(key)
        due = {w: self._due[f"{w}|{key}"] for w in "eq" if f"{w}|{key}" in self._due}
        return {"open": None if o is None else self._row(o), "due": due,
                "changes": self._changes.get(key, [])}

    @property
    def dirty(self) -> bool:
        """Some key changed since the last :meth:`journal`."""
        return bool(self._dirty)

    def journal(self) -> list[tuple[str, dict[str, Any], int]]:
        """``(key, entry, version)`` of every key changed since the last call."""
        if not self._dirty:
            return []
        out = []
        for key in sorted(self._dirty):
            self.version += 1
            out.append((key, self.entry(key), self.version))
        self._dirty.clear()
        return out

    def rebuild(self, entries: dict[str, dict[str, Any]], stored: list[StoredAlarm],
                rules: dict[str, Any], version: int = 0) -> None:
        """Make the book from the store: ``entries`` (journal by key), ``stored`` (the open
        alarms), ``rules`` (by id, for escalation). See module contract."""
        self.open.clear()
        self._due.clear()
        self._dirty.clear()
        self.version = max(self.version, version)
        self._changes = {k: list(e.get("changes") or []) for k, e in entries.items()
                         if e.get("changes")}
        for a in stored:
            e = entries.get(a.key) if a.journal_matches else None
            row = e.get("open") if e else None
            if row is not None:
                o = self._from_row(row)
                o.count = max(o.count, a.count)
                due = dict(e["due"])   # type: ignore[index]
            else:
                rule = rules.get(a.rule_id)
                o = _Open(a.rule_id, a.raised, a.severity,
                          rule is not None and self._escalates(rule))
                o.count, o.active, o.text = a.count, not a.cleared, a.text
                due = {}
                if o.escalate and self._esc is not None and a.tier < len(self._esc.tiers):
                    due["e"] = a.raised + self._esc.tiers[a.tier].after
            o.acked = a.acked
            o.tier = max(a.tier, o.tier)
            if o.acked:
                due.pop("e", None)
            self.open[a.key] = o
            for w, t in due.items():
                self._set_timer(f"{w}|{a.key}", float(t))

    def reopen(self, key: str, t: float, rule: Any) -> None:
        """The store opened a new alarm for ``key`` of ``rule`` (see module contract)."""
        o = self.open.get(key)
        if o is None:   # staff's resolve reached the book first
            o = self.open[key] = _Open(rule.id, t, rule.severity, self._escalates(rule))
        self._dirty.add(key)
        self._due.pop("e|" + key, None)
        self._due.pop("q|" + key, None)
        o.count, o.acked, o.active, o.tier, o.flapping, o.raised = 1, False, True, 0, False, t
        if o.escalate:
            self._schedule_tier(key, o)

    @staticmethod
    def _row(o: _Open) -> list[Any]:
        return [o.rule_id, o.count, o.acked, o.active, o.tier, o.flapping, o.raised,
                o.auto_resolve, o.severity.value, o.escalate, list(o.text)]

    @staticmethod
    def _from_row(row: list[Any]) -> _Open:
        rid, count, acked, active, tier, flapping, raised, auto, sev, esc, text = row
        o = _Open(rid, raised, Severity(sev), esc)
        o.count, o.acked, o.active, o.tier, o.flapping = count, acked, active, tier, flapping
        o.auto_resolve, o.text = auto, tuple(text)
        return o

    # -- snapshot -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"open": {k: self._row(o) for k, o in self.open.items()},
                "due": dict(self._due), "changes": dict(self._changes),
                "version": self.version}

    def load(self, d: dict[str, Any]) -> None:
        self.open.clear()
        self._dirty.clear()
        for k, row in d["open"].items():
            self.open[k] = self._from_row(row)
        self._dirty = set(self.open)   # (a reloaded site's engine: journaled again)
        self._changes = {k: list(v) for k, v in d.get("changes", {}).items()}
        self.version = max(self.version, int(d.get("version", 0)))
        for k, due in d["due"].items():
            if k[2:] in self.open:
                self._set_timer(k, float(due))


#: device faults in words, for messages (``{fault}``): the console never shows the code
FAULT_NAMES: dict[str, tuple[str, str]] = {
    "silent": ("长时间未上报", "no report for too long"), "battery_low": ("电量低", "low battery"),
    "tamper": ("防拆触发", "tamper"), "fault": ("设备自报故障", "device reports a fault"),
    "offline": ("离线", "offline"), "decode_error": ("解码失败", "decode error"),
    "sources_offline": ("活动传感器均无上报，无法监护", "every activity sensor is silent"),
    # raised by the gateway's linkage, not a rule: a command the device never confirmed
    "command_not_confirmed": ("联动指令未确认", "command not confirmed"),
}


def fault_name(fault: str) -> Bilingual:
    zh, en = FAULT_NAMES.get(fault, (fault, fault))
    return Bilingual(zh, en)


class FaultBook:
    """Open device faults by key (dedup only)."""

    def __init__(self, clock: EngineClock, emit: Callable[[object], None],
                 mode_of: Callable[[str], str], names: Names | None = None) -> None:
        self._names = names or _no_names
        self._clock = clock
        self._emit = emit
        self._mode_of = mode_of
        self.open: set[str] = set()

    def raise_fault(self, rule: Any, key: str, fault: str, where: Subject, t: float,
                    fields: dict[str, Any]) -> None:
        if key in self.open:
            return
        now = self._clock.wall_dt(t)
        if where.device_id is not None and self._mode_of(where.device_id) != "normal":
            self._emit(TestRecord(where.device_id, rule.id, now, fault))
            return
        self.open.add(key)
        fields.update(rule_id=rule.id, fault=fault_name(fault), device_id=where.device_id or "",
                      household_id=where.household_id or "", grid_cell=where.grid_cell or "",
                      **self._names(where.device_id, where.household_id, where.grid_cell))
        zh, en = render(rule.message, fields)
        self._emit(RaiseFault(key, fault, where.device_id, where.household_id, where.grid_cell,
                              zh, en, now, rule.id, rule.severity))

    def clear_fault(self, key: str, t: float) -> None:
        if key in self.open:
            self.open.discard(key)
            self._emit(ClearFault(key, self._clock.wall_dt(t)))

    def state(self) -> list[str]:
        return sorted(self.open)

    def load(self, keys: list[str]) -> None:
        self.open = set(keys)
