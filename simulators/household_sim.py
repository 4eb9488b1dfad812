"""What one household's devices report, minute by minute, as its residents live their days.

Contract: :class:`HouseholdSim` turns the residents' :class:`~simulators.personas.DayPlan`
acts into device :class:`Report` objects: the motion sensor's occupancy (on at a detection,
off 90 s after the last one, as Zigbee motion sensors do), the front door contact, cumulative
water (litres -> m3) and electricity (base load + appliances, kWh) read every
``METER_PERIOD``, battery heartbeats, emergency-caller presses and kitchen smoke. Device
faults planned by the community (offline spans, a flapping door contact, draining batteries)
and the household's own masks (an incident: from ``stop_at`` on, nobody acts; trips away)
are applied here. A trip ``(leave, back)`` (planned by the community to start from home) is
the resident moving about and drawing water in the quarter hour before ``leave`` (packing),
the door at ``leave``, nothing of the routine until ``back`` inclusive (a trip may end when
a routine outing would have), the door and an entrance card swipe at ``back``. ``advance(until)`` returns every report with ``ts < until`` not yet
returned (unsorted); call it with increasing ``until``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from gateway.model import Kind, Value
from simulators.personas import DOOR, ENERGY, MOTION, WATER, Act, DayPlan, Persona, plan_day

__all__ = ["DeviceFaults", "HouseholdSim", "METER_PERIOD", "HEARTBEAT", "Report"]

METER_PERIOD = 15 * 60.0     # meters are read every 15 minutes
HEARTBEAT = 2 * 3600.0       # battery devices report their battery every 2 hours
OCCUPANCY_TIMEOUT = 90.0
_BEAT_OFFSET = {"motion": 0.0, "door": 41.0, "smoke": 97.0, "caller": 173.0}


@dataclass(frozen=True, slots=True)
class Report:
    """One message of a device: ``values`` as (kind, value) pairs, at epoch ``ts``."""

    ts: float
    device_id: str
    values: tuple[tuple[Kind, Value], ...]


@dataclass(frozen=True, slots=True)
class DeviceFaults:
    """Planned faults of one device: silent ``offline`` spans, ``flapping`` episode starts
    (door contacts), ``battery`` percent at the start and drain per day."""

    offline: tuple[tuple[float, float], ...] = ()
    flapping: tuple[float, ...] = ()
    battery: float = 100.0
    drain_per_day: float = 0.05

    def is_offline(self, ts: float) -> bool:
        return any(a <= ts < b for a, b in self.offline)


@dataclass
class HouseholdSim:
    """One household's devices over time (see module contract)."""

    household_id: str
    residents: tuple[tuple[str, Persona], ...]      # (resident key, persona)
    devices: dict[str, str]                          # role -> device id
    seed: int
    zone: ZoneInfo
    start: float
    faults: dict[str, DeviceFaults] = field(default_factory=dict)
    stop_at: float = float("inf")                    # incident: nobody acts from here on
    trips: tuple[tuple[float, float], ...] = ()      # everybody away (overnight stays)
    sos_at: tuple[tuple[float, bool], ...] = ()      # presses: (time, cancelled soon after)
    smoke_at: tuple[float, ...] = ()
    base_load_kw: float = 0.06

    def __post_init__(self) -> None:
        rng = random.Random(f"{self.seed}:{self.household_id}:meters")
        self._water = rng.uniform(20, 400) * 1000.0     # litres on the meter
        self._energy = rng.uniform(500, 9000)           # kWh on the meter
        self._pending_energy = 0.0
        self._done = self.start                          # reports before this are out
        self._day: dict[str, date] = {}                  # resident -> next date to plan
        self._acts: list[Act] = []
        self._returns: list[float] = []                  # residents coming home (entrances)
        self._horizon = self.start                       # acts known up to here
        first = datetime.fromtimestamp(self.start, self.zone).date() - timedelta(days=1)
        for key, _ in self.residents:
            self._day[key] = first
        self._occupied_until = -1.0
        self._off_pending = False
        self._carry_water = self._carry_energy = 0.0     # used after the last reading
        for s, e in self.trips:    # packing, leaving for and coming back from a stay away
            trip = self._packing(s) + [Act(s, DOOR), Act(e, DOOR)]
            self._acts += [a for a in trip if self.start <= a.ts < self.stop_at]
            self._returns += [e] if self.start <= e < self.stop_at else []
        self._phase = rng.uniform(0, METER_PERIOD)
        self._beat = rng.uniform(0, HEARTBEAT)

    # -- plans -------------------------------------------------------------------------
    def plans(self, key: str, persona: Persona, day: date) -> DayPlan:
        return plan_day(persona, self.seed, key, day, self.zone)

    def _plan_until(self, until: float) -> None:
        """Plan every resident's days until all acts before ``until`` are known."""
        for _ in range(400):
            if self._horizon >= until:
                return
            horizon = float("inf")
            for key, persona in self.residents:
                plan = self.plans(key, persona, self._day[key])
                self._day[key] += timedelta(days=1)
                self._acts += self._masked(plan.acts)
                self._returns += [b for _, b in plan.away
                                  if self._done <= b < self.stop_at
                                  and not self._on_trip(b)]
                horizon = min(horizon, plan.next_wake)
            self._horizon = max(self._horizon, horizon)
        raise RuntimeError(f"{self.household_id}: planning did not reach {until}")

    def _masked(self, acts: tuple[Act, ...]) -> list[Act]:
        return [a for a in acts
                if self._done <= a.ts < self.stop_at and not self._on_trip(a.ts)]

    def _on_trip(self, ts: float) -> bool:
        """Away on a trip at ``ts``; the return itself is the trip's (see module contract)."""
        return any(s <= ts <= e for s, e in self.trips)

    def _packing(self, leave: float) -> list[Act]:
        """Moving about and a toilet visit in the quarter hour before leaving for a trip."""
        rng = random.Random(f"{self.seed}:{self.household_id}:packing:{leave}")
        acts = [Act(leave - rng.uniform(1, 15) * 60, MOTION) for _ in range(rng.randint(3, 6))]
        flush = leave - rng.uniform(5, 15) * 60
        acts += [Act(flush, MOTION), Act(flush + 90, WATER, rng.uniform(4.5, 7.0))]
        return [a for a in acts if not any(s <= a.ts <= e for s, e in self.trips
                                           if e < leave)]

    # -- reports -----------------------------------------------------------------------
    def advance(self, until: float) -> list[Report]:
        """Reports with ``self._done <= ts < until`` (see module contract)."""
        if until <= self._done:
            return []
        self._plan_until(until + 3600)
        now_acts = [a for a in self._acts if a.ts < until]
        self._acts = [a for a in self._acts if a.ts >= until]
        now_acts.sort(key=lambda a: a.ts)
        out: list[Report] = []
        dev = self.devices
        meter_times = self._grid(self._phase, METER_PERIOD, until)
        water_used = [0.0] * (len(meter_times) + 1)     # last: after the last reading
        energy_used = [0.0] * (len(meter_times) + 1)
        water_used[0], energy_used[0] = self._carry_water, self._carry_energy
        rng = random.Random(f"{self.seed}:{self.household_id}:{self._done}")
        for a in now_acts:
            if a.what == MOTION and "motion" in dev:
                if a.ts > self._occupied_until:     # a new detection after the timeout
                    self._flush_off(out, a.ts)
                    out.append(Report(a.ts, dev["motion"], ((Kind.MOTION, True),)))
                    self._off_pending = True
                self._occupied_until = a.ts + OCCUPANCY_TIMEOUT
            elif a.what == DOOR and "door" in dev:
                out.append(Report(a.ts, dev["door"], ((Kind.DOOR_OPEN, True),)))
                out.append(Report(a.ts + rng.uniform(8, 40), dev["door"],
                                  ((Kind.DOOR_OPEN, False),)))
            elif a.what in (WATER, ENERGY):
                i = self._slot(meter_times, a.ts)
                (water_used if a.what == WATER else energy_used)[i] += a.amount
        self._flush_off(out, until)
        self._carry_water, self._carry_energy = water_used[-1], energy_used[-1]
        for i, ts in enumerate(meter_times):
            self._water += water_used[i]
            self._energy += energy_used[i] + self.base_load_kw * METER_PERIOD / 3600
            if "water" in dev:
                out.append(Report(ts, dev["water"], (
                    (Kind.WATER_VOLUME, round(self._water / 1000.0, 3)),)))
            if "power" in dev:
                watts = (energy_used[i] * 3600 / METER_PERIOD + self.base_load_kw) * 1000
                out.append(Report(ts, dev["power"], (
                    (Kind.ENERGY, round(self._energy, 2)),
                    (Kind.POWER, round(watts * rng.uniform(0.95, 1.05), 1)))))
        out += self._events(until, rng)
        out = [r for r in out if not self._silenced(r)]
        self._done = until
        return out

    def _events(self, until: float, rng: random.Random) -> list[Report]:
        """Heartbeats, presses, smoke and flapping that fall in [done, until)."""
        out: list[Report] = []
        dev = self.devices
        for ts in self._grid(self._beat, HEARTBEAT, until):
            for role in ("motion", "door", "smoke", "caller"):
                d = dev.get(role)
                if d is not None:
                    out.append(Report(ts + _BEAT_OFFSET[role], d,
                                      ((Kind.BATTERY, self.battery(d, ts)),)))
        caller = dev.get("caller")
        for ts, cancelled in self.sos_at:
            if caller and self._done <= ts < until and ts < self.stop_at:
                out.append(Report(ts, caller, ((Kind.SOS, True),)))
                if cancelled:
                    out.append(Report(ts + rng.uniform(3, 20), caller, ((Kind.SOS, False),)))
        smoke = dev.get("smoke")
        for ts in self.smoke_at:
            if smoke and self._done <= ts < until:
                out.append(Report(ts, smoke, ((Kind.SMOKE, True),)))
                out.append(Report(ts + rng.uniform(60, 300), smoke, ((Kind.SMOKE, False),)))
        door = dev.get("door")
        if door:
            for start in self.faults.get(door, DeviceFaults()).flapping:
                if self._done <= start < until:
                    ts = start
                    for k in range(rng.randint(10, 30)):
                        out.append(Report(ts, door, ((Kind.DOOR_OPEN, k % 2 == 0),)))
                        ts += rng.uniform(5, 40)
        return out

    def take_returns(self, until: float) -> list[float]:
        """Times residents came home before ``until`` (each returned once)."""
        self._returns.sort()
        k = 0
        while k < len(self._returns) and self._returns[k] < until:
            k += 1
        out, self._returns = self._returns[:k], self._returns[k:]
        return out

    def battery(self, device_id: str, ts: float) -> float:
        f = self.faults.get(device_id, DeviceFaults())
        return float(max(1, round(f.battery - f.drain_per_day * (ts - self.start) / 86400)))

    def _silenced(self, r: Report) -> bool:
        f = self.faults.get(r.device_id)
        return f is not None and f.is_offline(r.ts)

    def _grid(self, phase: float, period: float, until: float) -> list[float]:
        k = -(-(self._done - phase) // period)     # first grid point >= done
        out, ts = [], phase + k * period
        while ts < until:
            out.append(ts)
            ts += period
        return out

    def _flush_off(self, out: list[Report], before: float) -> None:
        """The sensor's "no more motion" report, once its timeout ended before ``before``."""
        if self._off_pending and self._occupied_until < before:
            out.append(Report(self._occupied_until, self.devices["motion"],
                              ((Kind.MOTION, False),)))
            self._off_pending = False

    @staticmethod
    def _slot(times: list[float], ts: float) -> int:
        """Index of the first meter reading at or after ``ts`` (len(times) if none)."""
        for i, t in enumerate(times):
            if t >= ts:
                return i
        return len(times)
