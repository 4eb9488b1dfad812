"""Daily check-in (报平安) of residents who opted in.

Contract:
- A ``checkin`` rule lists the households that opted in (``households``). A check-in is a
  ``button`` reading (any key) or an SOS press (True) from an emergency caller of the
  household (a device of unknown type counts too).
- Each day at local ``by``, a household without a check-in since that day's local ``opens``
  gets an alarm (``book.trigger``: the rule's category, ``checkin_missed`` by default, its
  severity and escalation; key ``"{rule_id}:{household_id}"``), unless it is away or in
  hospital (a care state, :func:`rules.inactivity.care_states`). A check-in after it clears
  it (``ClearAlarm``, left open for staff unless ``auto_resolve_on_clear``); an alarm still
  open the next day is updated.
- Time comes in as arguments only: the day's deadlines are found in engine time from the
  clock's wall offset; watching starts at the first ``tick`` (a deadline passed before it is
  not judged). State (last check-in per household, next deadline) is in the snapshot.
- :func:`checkins_today` is the day so far, for the console (报平安 page): per opted-in
  household its window, last check-in and whether it checked in today.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import TYPE_CHECKING, Any

from gateway.kernel.model import Kind, Reading, Value
from rules.alarms import Subject
from rules.durations import Bilingual, format_time_of_day
from rules.engine import register_kind
from rules.evaluators import Evaluator
from rules.localtime import local, next_local_time
from rules.site import DeviceInfo
from rules.spec import CheckinRule

if TYPE_CHECKING:
    from rules.engine import Engine, Stream

__all__ = ["CheckinEval", "checkins_today"]

_SCAN_EVERY = 5.0
_AWAY = frozenset({"away", "hospital"})


class CheckinEval(Evaluator):
    rule: CheckinRule

    def __init__(self, rule: CheckinRule, engine: Engine, order: int) -> None:
        super().__init__(rule, engine, order)
        self.kinds = frozenset({Kind.BUTTON, Kind.SOS})
        self._zone = engine.site.zone
        self._homes = [h for h in rule.households if h in engine.site.households]
        self._last: dict[str, float] = {}       # engine time of the last check-in
        self._deadline_t = float("inf")                 # engine time of the next deadline
        self._next_scan = float("-inf")

    def accepts(self, d: DeviceInfo) -> bool:
        return d.device_type in ("emergency_caller", "") and Evaluator.accepts(self, d)

    def repeat_idle(self, kind: Kind, value: Value) -> bool:
        """Only a press checks in."""
        return kind is Kind.SOS and value is not True

    def holds(self, device_id: str) -> bool:
        return False        # the readings it is idle on touch nothing it holds

    def on_reading(self, st: Stream, r: Reading, prev: Value, t: float) -> None:
        if r.kind is Kind.SOS and r.value is not True:
            return
        h = st.where.household_id
        if h is None:
            return
        self._last[h] = max(self._last.get(h, t), t)
        self.book.clear(self.rule, self._key(h), t, "checked in",
                        self.rule.auto_resolve_on_clear)

    def tick(self, t: float) -> None:
        if t < self._next_scan:
            return
        self._next_scan = t + _SCAN_EVERY
        if self._deadline_t == float("inf"):
            self._deadline_t = self._next_deadline(t)
        while self._deadline_t <= t:
            self._judge(self._deadline_t, t)
            self._deadline_t = self._next_deadline(self._deadline_t)

    def _next_deadline(self, t: float) -> float:
        offset = self.engine.clock.to_wall(0.0)
        return next_local_time(t + offset, self.rule.by, self._zone) - offset

    def _judge(self, due: float, t: float) -> None:
        from rules.inactivity import care_states

        opened = due - (self.rule.by - self.rule.opens) * 60.0
        care = care_states(self.engine)
        for h in self._homes:
            if self._last.get(h, float("-inf")) >= opened or care.get(h) in _AWAY:
                continue
            last = self._last.get(h)
            by = format_time_of_day(self.rule.by)
            if last is None:
                zh, en = "（尚无记录）", " (none recorded yet)"
            else:
                when = local(self.engine.clock.to_wall(last), self._zone)
                zh, en = f"（上次：{when:%m-%d %H:%M}）", f" (last: {when:%m-%d %H:%M})"
            expl = Bilingual(f"今天 {by} 前没有报平安{zh}，请电话联系住户",
                             f"no check-in before {by} today{en}; call the resident")
            info = self.engine.site.households[h]
            self.book.trigger(self.rule, self._key(h), Subject(None, h, info.grid_cell), t,
                              {"explanation": expl})

    def _key(self, h: str) -> str:
        return f"{self.rule.id}:{h}"

    def state(self) -> dict[str, Any]:
        return {"last": dict(self._last),
                "due": None if self._deadline_t == float("inf") else self._deadline_t,
                "next_scan": None if self._next_scan == float("-inf") else self._next_scan}

    def load(self, d: dict[str, Any]) -> None:
        self._last = {h: float(v) for h, v in d.get("last", {}).items()}
        self._deadline_t = float("inf") if d.get("due") is None else float(d["due"])
        self._next_scan = (float("-inf") if d.get("next_scan") is None
                           else float(d["next_scan"]))

    def today(self, now: float) -> list[dict[str, Any]]:
        """The local day of wall time ``now`` (epoch s) for each household of the rule."""
        zone = self._zone
        day = local(now, zone).date()
        offset = self.engine.clock.to_wall(0.0)

        def at(minute: int) -> float:
            return datetime.combine(day, time(minute // 60, minute % 60), zone).timestamp()

        opens, by = at(self.rule.opens), at(self.rule.by)
        out = []
        for h in self._homes:
            last = self._last.get(h)
            last_wall = None if last is None else last + offset
            out.append({"household_id": h, "rule_id": self.rule.id,
                        "alarm_key": self._key(h), "opens": opens, "by": by,
                        "last": last_wall,
                        "checked_in": last_wall is not None and last_wall >= opens})
        return out


def checkins_today(engine: Engine, now: float) -> list[dict[str, Any]]:
    """Every opted-in household's check-in on the local day of wall time ``now`` (epoch s),
    in rule and then rule-file order: ``household_id``, ``rule_id``, ``alarm_key`` (the key
    of its missed-check-in alarm), ``opens`` and ``by`` (today's window, epoch s), ``last``
    (the last check-in, epoch s, or None) and ``checked_in`` (since today's ``opens``)."""
    return [row for ev in engine.evaluators if isinstance(ev, CheckinEval)
            for row in ev.today(now)]


register_kind("checkin", CheckinEval)
