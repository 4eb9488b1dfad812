"""What the demo community adds to everyday life: help keys, the daily check-in, visits of
special-difficulty households and kitchens with a gas valve (``gateway demo`` only).

Contract:
- :class:`Extras` is the option a :class:`~simulators.community.Community` takes
  (``extras=Extras(speed=...)``; without it nothing here exists, so the benchmarks' communities
  are unchanged). The community lays it out as :class:`ExtraLife` (``community.extras``),
  deterministically for its seed, with its own random streams:
  - **help keys** (求助): in about one elderly household in eight whose caller is a Zigbee2MQTT
    remote, keys 2 to 6 are help keys (:data:`HELP_KEYS`: 助餐, 家政, 维修, 就医陪护, 代购, 咨询);
    a resident awake at home presses one about every ``help_every_days`` simulated days
    (a few requests a simulated day in 200 households);
  - **daily check-in** (报平安): about three in ten residents living alone with a JSON caller
    opted in; their caller has a 报平安 key (``{"key": "ok"}``). The rule's window is a time of
    day on the gateway's clock, which the simulation does not accelerate: it opens at the
    minute the community starts (``origin``) and closes ``checkin_minutes`` later, every
    real day. Each resident presses the key once in it, early, at a simulated time when up
    and at home (at home, if never up in it);
    on the first day one of them forgets (of three or more; one in twelve otherwise and on
    later days), and most who forgot press it a few real minutes after the deadline;
  - **visits** (探访): about one elderly household in ten is special-difficulty
    (特殊困难老年人); each has a smart door lock whose reader knows its grid cell's grid
    member's card and a volunteer's (:func:`grid_member_card`, :func:`volunteer_card`). Two
    thirds of them are visited within the first simulated week and then about every
    simulated month (the card swiped at the lock, by day, the resident at home); the
    others are not visited (due this month);
  - **gas valves** (联动): about one kitchen in twenty has a Zigbee2MQTT gas detector and gas
    valve. A leak (about one every 90 simulated days per kitchen, and one planted
    ``leak_after_s`` real seconds after the start) is the detector's ``gas: true`` for
    10–40 simulated minutes; the resident reopens the closed valve by hand 1–3 simulated
    hours after it ends (a ``valve_open`` report of the valve: the valve itself is simulated
    by :mod:`simulators.z2m_actuators`, which obeys ``/set``).
- :meth:`ExtraLife.stream` gives what these devices report in simulated time
  (:class:`_ExtraStream`, advanced by :meth:`Community.reports`), with the new devices'
  heartbeats; a resident stops pressing at an incident, nothing is pressed away on a trip,
  and the devices' planned offline spans silence them as any other device.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from gateway.model import Kind
from simulators.community import DAY, DeviceSpec, HouseholdSpec
from simulators.household_sim import HEARTBEAT, DeviceFaults, HouseholdSim, Report
from simulators.personas import poisson_times

if TYPE_CHECKING:
    from simulators.community import Community

__all__ = ["CHECKIN_KEY", "HELP_CATEGORIES", "HELP_KEYS", "ExtraLife", "Extras",
           "grid_member_card", "volunteer_card"]

#: the help categories of the demo site: id -> (zh, en)
HELP_CATEGORIES = {"meal": ("助餐", "Meals"), "housekeeping": ("家政", "Housekeeping"),
                   "repair": ("维修", "Repairs"), "escort": ("就医陪护", "Escort to hospital"),
                   "shopping": ("代购", "Shopping"), "consult": ("咨询", "Enquiry")}
#: the keys of a help caller (a six-key Zigbee2MQTT remote; key 1 stays the SOS key)
HELP_KEYS = {"2_single": "meal", "3_single": "housekeeping", "4_single": "repair",
             "5_single": "escort", "6_single": "shopping", "2_double": "consult"}
#: how often each category is asked for, relatively
_HELP_WEIGHTS = {"meal": 5, "housekeeping": 2, "repair": 3, "escort": 1, "shopping": 2,
                 "consult": 2}
#: mean simulated days between two help presses of one household (awake at home)
HELP_EVERY_DAYS = 3.0
#: the value of the 报平安 key of a JSON caller (``{"key": "ok"}``)
CHECKIN_KEY = "ok"
#: the planted gas leak: this many real seconds after the community starts
PLANTED_LEAK_S = 120.0
_LEAK_EVERY_DAYS = 90.0
_HELP_SHARE, _CHECKIN_SHARE, _SPECIAL_SHARE, _GAS_SHARE = 0.12, 0.3, 0.1, 0.05
_VISITED_SHARE = 2 / 3
_FORGET = 1 / 12
_LATE_PRESS = 0.7
_BEAT_OFFSET = {"gas": 211.0, "valve": 263.0, "lock": 307.0}


def grid_member_card(cell_index: int) -> str:
    """The card id of the grid member of the ``cell_index``-th grid cell (0 first)."""
    return f"GM-{cell_index + 1:02d}"


def volunteer_card(cell_index: int) -> str:
    """The card id of the volunteer of the ``cell_index``-th grid cell (0 first)."""
    return f"VOL-{cell_index + 1:02d}"


@dataclass(frozen=True, slots=True)
class Extras:
    """The demo's extras: ``speed`` simulated seconds per real second (to place the daily
    check-in, whose window is real time, and the planted leak), ``checkin_minutes`` the
    window's length, ``help_every_days`` the mean simulated days between two help presses
    of a household, ``leak_after_s`` when the planted gas leak comes (real seconds after the
    start). Tests shorten them."""

    speed: float = 1.0
    checkin_minutes: int = 6
    help_every_days: float = HELP_EVERY_DAYS
    leak_after_s: float = PLANTED_LEAK_S


@dataclass
class ExtraLife:
    """The extras as laid out in one community (see module contract)."""

    options: Extras
    help_keys: dict[str, dict[str, str]] = field(default_factory=dict)  # caller -> keys
    checkin: dict[str, str] = field(default_factory=dict)        # household -> its caller
    #: the check-in window: minutes of the local day (real clock)
    checkin_opens: int = 0
    checkin_by: int = 0
    special: dict[str, str] = field(default_factory=dict)        # household -> its lock
    visited: frozenset[str] = frozenset()
    gas: dict[str, tuple[str, str]] = field(default_factory=dict)  # household -> detector, valve
    #: (household, simulated time) of the planted leak, if any kitchen has a valve
    planted_leak: tuple[str, float] | None = None
    forgets_first_day: str | None = None

    @classmethod
    def lay_out(cls, c: Community, options: Extras) -> ExtraLife:
        """Choose the households and add their devices to ``c.devices``."""
        rng = random.Random(f"{c.seed}:extras")
        life = cls(options)
        kind_of = {d.id: d.shape for d in c.devices if d.type == "emergency_caller"}
        elderly = [h for h in c.households if h.kind != "family"]

        def caller(h: HouseholdSpec) -> str:
            return f"caller-{_tag(h)}"

        z2m = [h for h in elderly if kind_of.get(caller(h)) == "z2m"]
        for h in _some(rng, z2m, _HELP_SHARE):
            life.help_keys[caller(h)] = dict(HELP_KEYS)
            _rename(c, caller(h), "多键呼叫器（含求助键）")
        json_alone = [h for h in elderly if h.lives_alone and kind_of.get(caller(h)) == "json"]
        for h in sorted(_some(rng, json_alone, _CHECKIN_SHARE), key=lambda x: x.id):
            life.checkin[h.id] = caller(h)
            _rename(c, caller(h), "一键呼叫器（含报平安键）")
        if len(life.checkin) >= 3:      # the first day's forgetful one (未报平安)
            life.forgets_first_day = rng.choice(sorted(life.checkin))
        local = datetime.fromtimestamp(c.origin, c.zone)
        opens = local.hour * 60 + local.minute
        if opens + options.checkin_minutes >= 24 * 60:     # would cross midnight
            opens = 0
        life.checkin_opens, life.checkin_by = opens, opens + options.checkin_minutes
        special = sorted(_some(rng, elderly, _SPECIAL_SHARE), key=lambda x: x.id)
        for h in special:
            life.special[h.id] = f"lock-{_tag(h)}"
            c.devices.append(DeviceSpec(life.special[h.id], "door_access", "json", h.id,
                                        h.grid_cell, "入户智能门锁"))
        life.visited = frozenset(x.id for x in
                                 rng.sample(special, round(_VISITED_SHARE * len(special))))
        for h in sorted(_some(rng, c.households, _GAS_SHARE), key=lambda x: x.id):
            tag = _tag(h)
            life.gas[h.id] = (f"gas-{tag}", f"valve-{tag}")
            c.devices.append(DeviceSpec(f"gas-{tag}", "gas_detector", "z2m", h.id, h.grid_cell,
                                        "厨房燃气探测器", f"b{tag}-gas"))
            c.devices.append(DeviceSpec(f"valve-{tag}", "gas_valve", "z2m", h.id, h.grid_cell,
                                        "厨房燃气阀", f"b{tag}-gas-valve"))
        if life.gas:
            life.planted_leak = (rng.choice(sorted(life.gas)),
                                 c.origin + options.leak_after_s * options.speed)
        return life

    def stream(self, c: Community, sims: list[HouseholdSim], start: float,
               end: float) -> _ExtraStream:
        return _ExtraStream(c, self, [s for s in sims if self._has(s.household_id)], start, end)

    def _has(self, hid: str) -> bool:
        return (hid in self.checkin or hid in self.special or hid in self.gas
                or f"caller-{hid.removeprefix('h-')}" in self.help_keys)


def _rename(c: Community, device_id: str, name: str) -> None:
    k = next(i for i, d in enumerate(c.devices) if d.id == device_id)
    c.devices[k] = replace(c.devices[k], name=name)


def _tag(h: HouseholdSpec) -> str:
    return f"{h.building:02d}-{h.room}"


def _some(rng: random.Random, items: list[HouseholdSpec], share: float) -> list[HouseholdSpec]:
    """``share`` of ``items`` (at least one when there are any)."""
    if not items:
        return []
    return rng.sample(items, max(1, round(share * len(items))))


class _ExtraStream:
    """The extras' reports in simulated time for some households (see module contract)."""

    def __init__(self, c: Community, life: ExtraLife, sims: list[HouseholdSim],
                 start: float, end: float) -> None:
        self.c, self.life, self.sims = c, life, sims
        self.start, self.end = start, end
        self._todo: list[Report] = []
        self._planned_until = start
        self._rng = {s.household_id: random.Random(f"{c.seed}:extras:{s.household_id}:{start}")
                     for s in sims}
        self._beats = {d: self._rng[s.household_id].uniform(0, HEARTBEAT)
                       for s in sims for d in self._devices(s.household_id)}
        self._visit_days = {s.household_id: self._visit_plan(s.household_id)
                            for s in sims if s.household_id in life.visited}
        self._done = start

    def _visit_plan(self, hid: str) -> list[float]:
        """The days (simulated times) the household is to be visited: one in the first
        simulated week, then about every month."""
        rng = random.Random(f"{self.c.seed}:extras:{hid}:visits")
        days, day = [], self.c.origin + rng.uniform(0, 6) * DAY
        while day < self.end:
            days.append(day)
            day += rng.uniform(26, 34) * DAY
        return days

    def _devices(self, hid: str) -> list[str]:
        out = list(self.life.gas.get(hid, ()))
        if hid in self.life.special:
            out.append(self.life.special[hid])
        return out

    # -- planning ----------------------------------------------------------------------
    def _plan(self, until: float) -> None:
        """Plan every event before ``until`` (a simulated day at a time)."""
        while self._planned_until < min(until, self.end):
            a = self._planned_until
            b = min(a + DAY, self.end)
            for s in self.sims:
                self._todo += self._help(s, a, b) + self._leaks(s, a, b) + self._visits(s, a, b)
            self._todo += self._checkins(a, b)
            self._planned_until = b

    def _help(self, s: HouseholdSim, a: float, b: float) -> list[Report]:
        callers = [d for d in s.devices.values() if d in self.life.help_keys]
        if not callers:
            return []
        rng = self._rng[s.household_id]
        out = []
        for ts in poisson_times(rng, a, b, self.life.options.help_every_days * DAY / 2):
            key, persona = s.residents[rng.randrange(len(s.residents))]
            category = rng.choices(list(_HELP_WEIGHTS), weights=list(_HELP_WEIGHTS.values()))[0]
            if not self._awake_at_home(s, key, persona, ts):
                continue     # about half the candidate times: asleep or out
            keys = self.life.help_keys[callers[0]]
            action = next(k for k, cat in keys.items() if cat == category)
            out.append(Report(ts, callers[0], ((Kind.BUTTON, action),)))
        return out

    def _leaks(self, s: HouseholdSim, a: float, b: float) -> list[Report]:
        hid = s.household_id
        if hid not in self.life.gas:
            return []
        rng = self._rng[hid]
        starts = poisson_times(rng, a, b, _LEAK_EVERY_DAYS * DAY)
        planted = self.life.planted_leak
        if planted is not None and planted[0] == hid and a <= planted[1] < b:
            starts.append(planted[1])
        detector, valve = self.life.gas[hid]
        out = []
        for ts in sorted(starts):
            ends = ts + rng.uniform(10, 40) * 60
            out += [Report(ts, detector, ((Kind.GAS, True),)),
                    Report(ends, detector, ((Kind.GAS, False),)),
                    Report(ends + rng.uniform(1, 3) * 3600, valve, ((Kind.VALVE_OPEN, True),))]
        return out

    def _visits(self, s: HouseholdSim, a: float, b: float) -> list[Report]:
        """The visits planned on days in ``[a, b)``: by day, the resident at home (out: the
        visitor comes back the next day, up to twice)."""
        hid = s.household_id
        out = []
        cell = self.c.grid_cells.index(self.c.by_id[hid].grid_cell)
        key, persona = s.residents[0]
        for day in self._visit_days.get(hid, ()):
            if not a <= day < b:
                continue
            rng = random.Random(f"{self.c.seed}:extras:{hid}:visit:{day}")
            for k in range(3):
                ts = self.c._at_local(day + k * DAY, rng.uniform(9, 17))
                if ts >= self.start and self._awake_at_home(s, key, persona, ts):
                    card = (grid_member_card(cell) if rng.random() < 0.8
                            else volunteer_card(cell))
                    out.append(Report(ts, self.life.special[hid],
                                      ((Kind.ACCESS, "granted"), (Kind.BUTTON, card))))
                    break
        return out

    def _checkins(self, a: float, b: float) -> list[Report]:
        """The presses of the real days whose window starts in simulated ``[a, b)``."""
        life, c = self.life, self.c
        if not life.checkin:
            return []
        speed = life.options.speed
        out = []
        wanted = {s.household_id: s for s in self.sims}
        day = datetime.fromtimestamp(c.origin, c.zone).date()
        for k in range(400):
            midnight = datetime.combine(day + timedelta(days=k), datetime.min.time(), c.zone)
            opens = midnight.timestamp() + life.checkin_opens * 60
            by = midnight.timestamp() + life.checkin_by * 60
            if by <= c.origin:
                continue
            sim_opens = c.origin + (max(opens, c.origin) - c.origin) * speed
            if sim_opens >= b:
                break
            if sim_opens < a:
                continue
            for hid in sorted(life.checkin):
                s = wanted.get(hid)
                if s is not None:
                    margin = min(90.0, 15.0 * life.options.checkin_minutes)
                    out += self._checkin(s, k, max(opens, c.origin + 5), by - margin, by)
        return out

    def _checkin(self, s: HouseholdSim, k: int, lo: float, hi: float,
                 by: float) -> list[Report]:
        """One resident's press in the real window ``[lo, hi]`` of day ``k`` (or a late
        one a few minutes after ``by``, or none)."""
        life, c = self.life, self.c
        rng = random.Random(f"{c.seed}:extras:{s.household_id}:checkin:{k}")
        speed, caller = life.options.speed, life.checkin[s.household_id]
        key, persona = s.residents[0]

        def sim(real: float) -> float:
            return c.origin + (real - c.origin) * speed

        forgot = (s.household_id == life.forgets_first_day) if k == 0 else rng.random() < _FORGET
        if forgot:
            if rng.random() < _LATE_PRESS:
                ts = sim(by + rng.uniform(60, 240))
                if self._home(s, key, persona, ts):
                    return [Report(ts, caller, ((Kind.BUTTON, CHECKIN_KEY),))]
            return []
        # as soon as they are up and at home in the window (of 30 moments drawn, the
        # earliest); never up at home in it: the earliest moment at home. A window the
        # community started late in: what is left of it up to ``by`` (else all 30 moments
        # were one, and one moment away from home was no check-in that day)
        if hi <= lo:
            hi = by - 1.0
        tries = sorted(sim(rng.uniform(lo, max(lo, hi))) for _ in range(30))
        first = (next((ts for ts in tries if self._awake_at_home(s, key, persona, ts)), None)
                 or next((ts for ts in tries if self._home(s, key, persona, ts)), None))
        return [] if first is None else [Report(first, caller, ((Kind.BUTTON, CHECKIN_KEY),))]

    def _home(self, s: HouseholdSim, key: str, persona, ts: float) -> bool:
        return (ts < s.stop_at and not self.c._on_trip(s.household_id, ts)
                and self.c._plan_at(key, persona, ts).at_home(ts))

    def _awake_at_home(self, s: HouseholdSim, key: str, persona, ts: float) -> bool:
        if not self._home(s, key, persona, ts):
            return False
        plan = self.c._plan_at(key, persona, ts)
        return plan.wake <= ts < plan.bed

    # -- the stream --------------------------------------------------------------------
    def advance(self, until: float) -> list[Report]:
        """Every report in ``[done, until)`` (unsorted), once."""
        if until <= self._done:
            return []
        self._plan(until)
        out = [r for r in self._todo if r.ts < until]
        self._todo = [r for r in self._todo if r.ts >= until]
        for s in self.sims:
            for d in self._devices(s.household_id):
                out += self._heartbeats(s, d, until)
        self._done = until
        faults = {d: f for s in self.sims for d, f in s.faults.items()}
        return [r for r in out if self._inside(r)
                and not faults.get(r.device_id, DeviceFaults()).is_offline(r.ts)]

    def _inside(self, r: Report) -> bool:
        return self.start <= r.ts < self.end

    def _heartbeats(self, s: HouseholdSim, d: str, until: float) -> list[Report]:
        role = d.split("-", 1)[0]
        phase = self._beats[d] + _BEAT_OFFSET[role]
        k = -(-(self._done - phase) // HEARTBEAT)
        out, ts = [], phase + k * HEARTBEAT
        while ts < until:
            value = (Kind.SIGNAL, 90 + (int(ts) // 7) % 60) if role == "gas" else \
                (Kind.BATTERY, s.battery(d, ts))
            out.append(Report(ts, d, (value,)))
            ts += HEARTBEAT
        return out
