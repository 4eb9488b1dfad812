"""A simulated residential community: households with residents, devices, faults, incidents.

Contract:
- ``Community(households=200, seed=0)`` lays out buildings (24 homes each), grid cells (four
  buildings each), households of three kinds — ``elderly_alone`` (35 %), ``couple`` (two
  elderly residents, 30 %), ``family`` (two workers and a child, 35 %) — and their devices:
  a Zigbee motion sensor, door contact and smoke detector, a water and an electricity meter
  (JSON), and an emergency caller in elderly homes; per building an access controller at the
  entrance, per grid cell a smoke detector in its micro fire station. Ids and Zigbee names
  are stable for a seed; every name and phone number is made up.
- ``plant(start, end, share)`` plants incidents: in ``share`` of the households living alone
  the resident stops all activity at a random time at home within ``[start, end)``. Each
  :class:`Incident` records when, and when the resident would usually have been active next
  (the first activity of their counterfactual routine after that time; their wake-up time
  if the incident happened in their sleep). ``write_truth(path)`` writes incidents, trips,
  device faults, emergency presses and smoke as JSON lines. ``plant_dead(start, end, share)``
  plants dead-sensor incidents: in ``share`` of the other households living alone every
  device of the home stops reporting (no heartbeats, no meter readings: a power cut, a dead
  hub) at a random time not on a trip, for good; the resident goes on as usual.
- ``reports(start, end, households=None, shared=True)`` yields :class:`Report` lists, one
  per ``step`` of simulated time, each sorted by time and all in ``[start, end)``: a
  virtual clock — nothing waits, the caller decides how fast time runs.
- Deterministic for ``seed`` (and the same ``start``): the same reports, byte for byte.
- ``extras=Extras(speed=...)`` (``gateway demo`` only; simulators/community_extras.py) adds
  help keys, the daily check-in, visits of special-difficulty households and kitchens with a
  gas valve, laid out in ``community.extras``; without it (the benchmarks) the community,
  its devices and its reports are exactly as above.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from gateway.model import Kind
from simulators.household_sim import DeviceFaults, HouseholdSim, Report
from simulators.personas import Persona, draw_persona, plan_day, wake_time
from simulators.personas import poisson_times as _poisson_times

if TYPE_CHECKING:
    from simulators.community_extras import ExtraLife, Extras

__all__ = ["Community", "DeadSensors", "DeviceSpec", "HouseholdSpec", "Incident", "Report",
           "KINDS"]

KINDS = {"elderly_alone": 0.35, "couple": 0.30, "family": 0.35}
HOMES_PER_BUILDING = 24
BUILDINGS_PER_CELL = 4
DAY = 86400.0
#: default origin of the simulated time: Monday 2024-03-04 00:00 in Shanghai
ORIGIN = datetime(2024, 3, 4, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A device of the community: ``shape`` is how it publishes (``z2m`` or ``json``)."""

    id: str
    type: str
    shape: str
    household: str | None
    grid_cell: str
    name: str
    zigbee: str | None = None      # Zigbee2MQTT friendly name (shape z2m)

    @property
    def topic(self) -> str:
        return f"zigbee2mqtt/{self.zigbee}" if self.zigbee else f"devices/{self.id}"


@dataclass(frozen=True, slots=True)
class HouseholdSpec:
    id: str
    kind: str
    building: int
    room: str
    grid_cell: str
    residents: tuple[tuple[str, Persona], ...]

    @property
    def lives_alone(self) -> bool:
        return len(self.residents) == 1


@dataclass(frozen=True, slots=True)
class Incident:
    """The resident of ``household`` stops all activity at ``at`` (epoch seconds)."""

    household: str
    at: float
    usual_activity_at: float
    asleep: bool


@dataclass(frozen=True, slots=True)
class DeadSensors:
    """Every device of ``household`` stops reporting at ``at`` (epoch seconds), for good."""

    household: str
    at: float


_ROLES = {"elderly_alone": ("elderly",), "couple": ("elderly", "elderly"),
          "family": ("worker", "worker", "child")}
_HOME_DEVICES = (("motion", "motion_sensor", "z2m", "客厅人体感应"),
                 ("door", "door_contact", "z2m", "入户门磁"),
                 ("smoke", "smoke_detector", "z2m", "厨房烟感"),
                 ("water", "water_meter", "json", "水表"),
                 ("power", "electricity_meter", "json", "电表"))


def cell_code(k: int) -> str:
    return f"310104-012-{k + 1:02d}"


class Community:
    """See module contract."""

    def __init__(self, households: int = 200, seed: int = 0, tz: str = "Asia/Shanghai",
                 origin: float | None = None, name: str = "模拟社区",
                 extras: Extras | None = None) -> None:
        if households < 1:
            raise ValueError("a community needs at least one household")
        self.seed, self.zone, self.tz, self.name = seed, ZoneInfo(tz), tz, name
        #: trips and device faults are planned for a year from ``origin`` (epoch seconds)
        self.origin = ORIGIN if origin is None else origin
        self.horizon = self.origin + 366 * DAY
        self._trip_cache: dict[str, tuple] = {}
        rng = random.Random(f"{seed}:layout")
        kinds = list(KINDS)
        self.households: list[HouseholdSpec] = []
        self.devices: list[DeviceSpec] = []
        for i in range(households):
            b, k = divmod(i, HOMES_PER_BUILDING)
            room = f"{k // 4 + 1}{k % 4 + 1:02d}"
            hid = f"h-{b + 1:02d}-{room}"
            kind = rng.choices(kinds, weights=[KINDS[x] for x in kinds])[0]
            residents = tuple((f"{hid}/{j}", draw_persona(role, rng))
                              for j, role in enumerate(_ROLES[kind]))
            cell = cell_code(b // BUILDINGS_PER_CELL)
            self.households.append(HouseholdSpec(hid, kind, b + 1, room, cell, residents))
            tag = f"{b + 1:02d}-{room}"
            for role, dtype, shape, label in _HOME_DEVICES:
                self.devices.append(DeviceSpec(f"{role}-{tag}", dtype, shape, hid, cell, label,
                                               f"b{tag}-{role}" if shape == "z2m" else None))
            if kind != "family":
                z2m = rng.random() < 0.5
                self.devices.append(DeviceSpec(f"caller-{tag}", "emergency_caller",
                                               "z2m" if z2m else "json", hid, cell,
                                               "一键呼叫器", f"b{tag}-caller" if z2m else None))
        self.buildings = households // HOMES_PER_BUILDING + (households % HOMES_PER_BUILDING > 0)
        self.grid_cells = [cell_code(k) for k in
                           range((self.buildings - 1) // BUILDINGS_PER_CELL + 1)]
        for b in range(1, self.buildings + 1):
            self.devices.append(DeviceSpec(f"access-b{b:02d}", "door_access", "json", None,
                                           cell_code((b - 1) // BUILDINGS_PER_CELL),
                                           f"{b}号楼单元门禁"))
        for k, cell in enumerate(self.grid_cells):
            self.devices.append(DeviceSpec(f"station-smoke-{k + 1:02d}", "smoke_detector",
                                           "json", None, cell, f"第{k + 1}网格微型消防站烟感"))
        self.by_id = {h.id: h for h in self.households}
        #: the demo's help keys, check-ins, visits and gas valves (simulators.community_extras)
        self.extras: ExtraLife | None = None
        if extras is not None:
            from simulators.community_extras import ExtraLife

            self.extras = ExtraLife.lay_out(self, extras)
        self.incidents: dict[str, Incident] = {}
        self.dead: dict[str, DeadSensors] = {}
        self._truth: list[dict] = []

    # -- incidents -----------------------------------------------------------------------
    def plant(self, start: float, end: float, share: float = 0.5) -> list[Incident]:
        """Plant incidents (see module contract); returns them, also kept in ``incidents``."""
        rng = random.Random(f"{self.seed}:incidents:{start}:{end}")
        alone = [h for h in self.households if h.lives_alone]
        for h in rng.sample(alone, round(share * len(alone))):
            key, persona = h.residents[0]
            for _ in range(100):
                at = rng.uniform(start, end)
                plan = self._plan_at(key, persona, at)
                if plan.at_home(at) and not self._on_trip(h.id, at):
                    break
            else:
                continue
            if plan.asleep(at):
                usual, asleep = plan.next_wake, True
            else:
                later = [a.ts for a in plan.acts if a.ts > at]
                usual, asleep = (later[0] if later else plan.next_wake), False
            self.incidents[h.id] = Incident(h.id, at, usual, asleep)
        return sorted(self.incidents.values(), key=lambda x: x.at)

    def plant_dead(self, start: float, end: float, share: float = 0.3) -> list[DeadSensors]:
        """Plant dead-sensor incidents (see module contract) in households living alone
        without an incident; returns them, also kept in ``dead``."""
        rng = random.Random(f"{self.seed}:dead:{start}:{end}")
        alone = [h for h in self.households if h.lives_alone and h.id not in self.incidents]
        for h in rng.sample(alone, round(share * len(alone))):
            for _ in range(100):
                at = rng.uniform(start, end)
                if not self._on_trip(h.id, at):
                    self.dead[h.id] = DeadSensors(h.id, at)
                    break
        return sorted(self.dead.values(), key=lambda x: x.at)

    def _plan_at(self, key: str, persona: Persona, ts: float):
        day = datetime.fromtimestamp(ts, self.zone).date()
        if ts < wake_time(persona, self.seed, key, day, self.zone):
            day = date.fromordinal(day.toordinal() - 1)
        return plan_day(persona, self.seed, key, day, self.zone)

    # -- the rest of life: trips, faults, presses ------------------------------------------
    def _trips(self, h: HouseholdSpec, start: float, end: float) -> tuple:
        """Stays away overnight (visiting children, hospital): about three a year, planned
        to leave at 09-11. A trip starts from home: a resident whose routine has them out at
        that time comes home first (the outing's own return) and leaves 15-45 min later; a
        trip that would end while the routine has them out ends when that outing does."""
        rng = random.Random(f"{self.seed}:{h.id}:trips")
        key, persona = h.residents[0]
        out: list[tuple[float, float]] = []
        t = start + rng.expovariate(3 / 365 / DAY)
        while t < end and len(out) < 50:
            planned = self._at_local(t, rng.uniform(9, 11))
            back = planned + rng.randint(1, 4) * DAY + rng.uniform(-3, 6) * 3600
            settle = random.Random(f"{self.seed}:{h.id}:trip:{planned}").uniform(15, 45) * 60
            leave = self._home_at(key, persona, planned, settle)
            back = self._home_at(key, persona, max(back, leave + DAY / 2), 0.0)
            out.append((leave, back))
            t = back + rng.expovariate(3 / 365 / DAY)
        return tuple(out)

    def _home_at(self, key: str, persona: Persona, ts: float, settle: float) -> float:
        """``ts``, or if the routine has the resident out then, ``settle`` after they are
        back from that outing (bounded: a day has at most a few outings)."""
        for _ in range(10):
            plan = self._plan_at(key, persona, ts)
            span = next(((a, b) for a, b in plan.away if a <= ts < b), None)
            if span is None:
                return ts
            ts = span[1] + settle
        raise RuntimeError(f"{key}: no time at home near {ts}")

    def trips(self, h: HouseholdSpec) -> tuple:
        if not h.lives_alone:
            return ()
        if h.id not in self._trip_cache:
            self._trip_cache[h.id] = self._trips(h, self.origin, self.horizon)
        return self._trip_cache[h.id]

    def _on_trip(self, hid: str, ts: float) -> bool:
        return any(a <= ts < b for a, b in self.trips(self.by_id[hid]))

    def _at_local(self, ts: float, hour: float) -> float:
        d = datetime.fromtimestamp(ts, self.zone).replace(hour=0, minute=0, second=0,
                                                          microsecond=0)
        return d.timestamp() + hour * 3600

    def _faults(self, d: DeviceSpec, start: float, end: float) -> DeviceFaults:
        """Offline spans (about one a year per device, 2-30 h), a flapping door contact
        now and then, batteries draining (some start nearly flat)."""
        rng = random.Random(f"{self.seed}:{d.id}:faults")
        offline: list[tuple[float, float]] = []
        t = start + rng.expovariate(1 / 365 / DAY)
        while t < end and len(offline) < 20:
            offline.append((t, t + rng.uniform(2, 30) * 3600))
            t = offline[-1][1] + rng.expovariate(1 / 365 / DAY)
        flapping = []
        if d.type == "door_contact" and rng.random() < 0.05:
            flapping.append(rng.uniform(start, end))
        battery = rng.uniform(21, 30) if rng.random() < 0.03 else rng.uniform(45, 100)
        return DeviceFaults(tuple(offline), tuple(flapping), battery, rng.uniform(0.02, 0.2))

    def household_sim(self, h: HouseholdSpec, start: float, end: float) -> HouseholdSim:
        """The devices of ``h`` from ``start``; presses and smoke planned until ``end``."""
        if start < self.origin:
            raise ValueError("reports cannot start before the community's origin")
        rng = random.Random(f"{self.seed}:{h.id}:events:{start}")
        devices = {d.id.split("-", 1)[0]: d.id for d in self.devices if d.household == h.id}
        faults = {d: self._faults(self._dev[d], self.origin, self.horizon)
                  for d in devices.values()}
        trips = self.trips(h)
        sos = []   # real emergencies are rare; accidental presses are cancelled at once
        if "caller" in devices:
            key, persona = h.residents[0]
            for ts in _poisson_times(rng, start, end, 120 * DAY):
                cancelled = rng.random() < 0.6
                # the caller is on the wall at home: nobody presses it while out
                if self._plan_at(key, persona, ts).at_home(ts) and not self._on_trip(h.id, ts):
                    sos.append((ts, cancelled))
        smoke = _poisson_times(rng, start, end, 180 * DAY)
        inc = self.incidents.get(h.id)
        return HouseholdSim(h.id, h.residents, devices, self.seed, self.zone, start, faults,
                            inc.at if inc else float("inf"), trips, tuple(sos), tuple(smoke),
                            rng.uniform(0.04, 0.12))

    # -- the stream ----------------------------------------------------------------------
    def reports(self, start: float, end: float, households: Iterable[str] | None = None,
                shared: bool = True, step: float = 6 * 3600.0) -> Iterator[list[Report]]:
        """Reports in ``[start, end)`` in time order, one list per ``step`` (virtual clock)."""
        wanted = set(households) if households is not None else None
        self._dev = {d.id: d for d in self.devices}
        sims = [self.household_sim(h, start, end) for h in self.households
                if wanted is None or h.id in wanted]
        self._record(sims, start, end)
        entrances = _Entrances(self, start) if shared else None
        extra = self.extras.stream(self, sims, start, end) if self.extras else None
        carry: list[Report] = []
        t = start
        while t < end:
            until = min(t + step, end)
            batch = carry
            for s in sims:
                batch += s.advance(until)
            if entrances is not None:
                batch += entrances.advance(t, until, sims)
            if extra is not None:
                batch += extra.advance(until)
            batch.sort(key=lambda r: r.ts)
            cut = _bisect_ts(batch, until)
            carry = batch[cut:]
            if self.dead:       # dead sensors: nothing of their home reports any more
                yield [r for r in batch[:cut] if not self._dead(r)]
            else:
                yield batch[:cut]
            t = until

    def _dead(self, r: Report) -> bool:
        d = self._dev.get(r.device_id)
        dead = self.dead.get(d.household) if d is not None and d.household else None
        return dead is not None and r.ts >= dead.at

    def _record(self, sims: list[HouseholdSim], start: float, end: float) -> None:
        truth = []
        for inc in self.incidents.values():
            truth.append({"kind": "incident", "household": inc.household, "at": _iso(inc.at),
                          "usual_activity_at": _iso(inc.usual_activity_at),
                          "asleep": inc.asleep})
        for s in sims:
            for a, b in s.trips:
                truth.append({"kind": "away", "household": s.household_id, "at": _iso(a),
                              "until": _iso(b)})
            for ts, cancelled in s.sos_at:
                truth.append({"kind": "sos", "household": s.household_id, "at": _iso(ts),
                              "cancelled": cancelled})
            for ts in s.smoke_at:
                truth.append({"kind": "smoke", "household": s.household_id, "at": _iso(ts)})
            for dev, f in s.faults.items():
                for a, b in f.offline:
                    if a < end:
                        truth.append({"kind": "device_offline", "device": dev, "at": _iso(a),
                                      "until": _iso(b)})
                for a in f.flapping:
                    truth.append({"kind": "flapping", "device": dev, "at": _iso(a)})
                if f.battery - f.drain_per_day * (end - start) / DAY < 20:
                    truth.append({"kind": "battery_low", "device": dev,
                                  "battery_at_start": round(f.battery, 1)})
        self._truth = sorted(truth, key=lambda x: x.get("at", ""))

    def write_truth(self, path: str | Path) -> int:
        """Write the ground truth (after ``reports`` has started) as JSON lines."""
        with open(path, "w", encoding="utf-8") as fh:
            for row in self._truth:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        return len(self._truth)


class _Entrances:
    """Access control at building entrances: residents coming home with their cards, and
    visitors and couriers let in (a few denied)."""

    def __init__(self, c: Community, start: float) -> None:
        self.c = c
        self.rng = random.Random(f"{c.seed}:entrances:{start}")

    def advance(self, t: float, until: float, sims: list[HouseholdSim]) -> list[Report]:
        out: list[Report] = []
        c, rng = self.c, self.rng
        for s in sims:
            building = c.by_id[s.household_id].building
            for ts in s.take_returns(until):
                out.append(Report(max(t, ts - rng.uniform(40, 150)), f"access-b{building:02d}",
                                  ((Kind.ACCESS, "granted"),)))
        for b in range(1, c.buildings + 1):
            for ts in _poisson_times(rng, t, until, DAY / 12):
                out.append(Report(ts, f"access-b{b:02d}", (
                    (Kind.ACCESS, "denied" if rng.random() < 0.05 else "granted"),)))
        for k in range(len(c.grid_cells)):
            for ts in _poisson_times(rng, t, until, 7 * DAY):   # weekly test at the station
                out.append(Report(ts, f"station-smoke-{k + 1:02d}", ((Kind.TEST, True),)))
        return out


def _bisect_ts(batch: list[Report], until: float) -> int:
    lo, hi = 0, len(batch)
    while lo < hi:
        mid = (lo + hi) // 2
        if batch[mid].ts < until:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()
