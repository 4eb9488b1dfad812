"""Residents of the simulated community: personas and the daily routines they live.

Contract:
- A :class:`Persona` is one resident's habits (wake and bed times, routine outings, naps,
  toilet and meal rhythm, how much they move around). :func:`draw_persona` draws one for a
  role (``"elderly"``, ``"worker"``, ``"child"``) with per-resident variation.
- :func:`plan_day` lives one resident's day: from their wake-up on local date ``day`` to
  their wake-up the next day. It returns a :class:`DayPlan`: when they are out, asleep,
  napping, and the :class:`Act` events their routine causes at home (motion detections,
  water drawn, electricity used, the front door). Times are POSIX epoch seconds.
- Everything is deterministic for ``(seed, resident key, day)``: each day has its own random
  stream, so any day (and the day an incident would have continued) can be replayed alone.
  Day-to-day noise comes from that stream; weekends shift wake and bed times.

The numbers are plausible habits of urban residents (elderly living alone wake about
05:30–07:30, go to the market or park most mornings, nap after lunch, use the toilet every
2–3 hours); they are not fitted to a data set. docs/benchmarks.md lists what the detection
benchmark assumes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = ["Act", "DayPlan", "Outing", "Persona", "ROLES", "draw_persona", "plan_day", "poisson_times",
           "wake_time"]

ROLES = ("elderly", "worker", "child")
MIN = 60.0
WEEKDAYS = frozenset(range(5))
EVERY_DAY = frozenset(range(7))

# what an Act is
MOTION, WATER, ENERGY, DOOR = "motion", "water", "energy", "door"


@dataclass(frozen=True, slots=True)
class Outing:
    """A routine outing: on ``days`` (0 = Monday) with probability ``prob``, leaving around
    ``start`` (minute of day, sd ``start_sd``) for about ``length`` minutes."""

    days: frozenset[int]
    start: float
    start_sd: float
    length: float
    length_sd: float
    prob: float


@dataclass(frozen=True, slots=True)
class Persona:
    """One resident's habits. Minutes of the local day unless said otherwise."""

    role: str
    wake: float
    wake_sd: float
    bed: float
    bed_sd: float
    weekend_shift: float
    nap_prob: float
    nap_start: float
    nap_length: float
    outings: tuple[Outing, ...]
    errand_rate: float        # unplanned outings per day
    errand_length: float      # their median length
    night_toilet: float       # mean toilet visits per night
    toilet_every: float       # mean minutes between toilet visits when awake at home
    moving_share: float       # share of waking time at home spent moving about
    cooks: bool

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; one of {ROLES}")
        if not 0 < self.wake < self.bed < 24 * 60:
            raise ValueError(f"persona: need 0 < wake < bed < 24h, got {self.wake}, {self.bed}")


@dataclass(frozen=True, slots=True)
class Act:
    """Something a resident does that a device can see: ``what`` is motion (a detection),
    water (``amount`` litres), energy (``amount`` kWh) or door (opened and closed)."""

    ts: float
    what: str
    amount: float = 0.0


@dataclass(frozen=True, slots=True)
class DayPlan:
    """One resident's day, from ``wake`` to ``next_wake`` (epoch seconds)."""

    wake: float
    bed: float
    next_wake: float
    away: tuple[tuple[float, float], ...]
    naps: tuple[tuple[float, float], ...]
    acts: tuple[Act, ...]

    def asleep(self, ts: float) -> bool:
        return self.bed <= ts < self.next_wake

    def at_home(self, ts: float) -> bool:
        return not any(a <= ts < b for a, b in self.away)


def _clip(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


def draw_persona(role: str, rng: random.Random) -> Persona:
    """A resident of ``role`` with habits varying from one resident to the next."""
    u = rng.uniform
    if role == "elderly":
        outings = [Outing(EVERY_DAY, u(390, 510), u(15, 35), u(60, 110), 20, u(0.55, 0.9))]
        if rng.random() < 0.6:   # afternoon: mahjong, park, community centre
            days = frozenset(rng.sample(range(7), rng.randint(2, 5)))
            outings.append(Outing(days, u(840, 900), 20, u(90, 150), 25, u(0.6, 0.9)))
        if rng.random() < 0.5:   # a weekly visit to the children or a clinic
            outings.append(Outing(frozenset({rng.randrange(7)}), u(540, 600), 25,
                                  u(240, 420), 45, u(0.7, 0.95)))
        return Persona("elderly", wake=u(330, 450), wake_sd=u(12, 30), bed=u(1230, 1350),
                       bed_sd=u(15, 35), weekend_shift=u(0, 20), nap_prob=u(0.3, 0.85),
                       nap_start=u(750, 800), nap_length=u(40, 90), outings=tuple(outings),
                       errand_rate=u(0.1, 0.35), errand_length=u(40, 80),
                       night_toilet=u(0.5, 2.0), toilet_every=u(120, 170),
                       moving_share=u(0.35, 0.6), cooks=rng.random() < 0.85)
    if role == "worker":
        work = Outing(WEEKDAYS, u(440, 500), 15, u(560, 660), 40, 0.95)
        weekend = Outing(frozenset({5, 6}), u(570, 660), 45, u(150, 300), 60, 0.6)
        return Persona("worker", wake=u(370, 430), wake_sd=u(10, 20), bed=u(1350, 1420),
                       bed_sd=u(15, 30), weekend_shift=u(45, 90), nap_prob=0.05,
                       nap_start=800, nap_length=60, outings=(work, weekend),
                       errand_rate=u(0.1, 0.4), errand_length=60, night_toilet=u(0.1, 0.5),
                       toilet_every=u(150, 210), moving_share=u(0.45, 0.7), cooks=True)
    if role == "child":
        school = Outing(WEEKDAYS, u(430, 460), 8, u(520, 570), 25, 0.97)
        weekend = Outing(frozenset({5, 6}), u(540, 600), 40, u(120, 240), 40, 0.7)
        return Persona("child", wake=u(380, 410), wake_sd=10, bed=u(1230, 1290), bed_sd=15,
                       weekend_shift=u(60, 120), nap_prob=0.05, nap_start=800,
                       nap_length=60, outings=(school, weekend), errand_rate=0.1,
                       errand_length=60, night_toilet=0.1, toilet_every=180,
                       moving_share=0.7, cooks=False)
    raise ValueError(f"unknown role {role!r}; one of {ROLES}")


def _local_midnight(day: date, zone: ZoneInfo) -> float:
    return datetime.combine(day, time(0), zone).timestamp()


def _day_rng(seed: int, key: str, day: date, what: str) -> random.Random:
    return random.Random(f"{seed}:{key}:{day.isoformat()}:{what}")


def wake_time(p: Persona, seed: int, key: str, day: date, zone: ZoneInfo) -> float:
    """Epoch seconds at which the resident ``key`` wakes up on local ``day``."""
    rng = _day_rng(seed, key, day, "wake")
    shift = p.weekend_shift if day.weekday() >= 5 else 0.0
    m = _clip(rng.gauss(p.wake + shift, p.wake_sd), p.wake - 90, p.wake + shift + 120)
    return _local_midnight(day, zone) + m * MIN


def _merge(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1] + 10 * MIN:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _home_spans(a: float, b: float, cut: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """[a, b) minus the ``cut`` spans (sorted, disjoint)."""
    out, x = [], a
    for c, d in cut:
        if d <= x or c >= b:
            continue
        if c > x:
            out.append((x, c))
        x = max(x, d)
    if x < b:
        out.append((x, b))
    return out


def poisson_times(rng: random.Random, a: float, b: float, mean_gap: float) -> list[float]:
    """Times of a Poisson process with mean gap ``mean_gap`` in ``(a, b)`` (bounded)."""
    out: list[float] = []
    t = a + rng.expovariate(1.0 / mean_gap)
    while t < b and len(out) < 10_000:
        out.append(t)
        t += rng.expovariate(1.0 / mean_gap)
    return out


def _motion(rng: random.Random, a: float, b: float, p: Persona) -> list[Act]:
    """Detections while at home and awake: stretches of moving about (a detection every
    couple of minutes) alternate with sitting still (one every half hour or so)."""
    acts, t = [], a
    moving = rng.random() < p.moving_share
    for _ in range(10_000):
        if t >= b:
            break
        mean = 20 * MIN if moving else 20 * MIN * (1 - p.moving_share) / p.moving_share
        end = min(b, t + rng.expovariate(1.0 / mean))
        gap = 2 * MIN if moving else 30 * MIN
        acts += [Act(x, MOTION) for x in poisson_times(rng, t, end, gap)]
        t, moving = end, not moving
    return acts


def plan_day(p: Persona, seed: int, key: str, day: date, zone: ZoneInfo) -> DayPlan:
    """The day of resident ``key`` (see module contract)."""
    rng = _day_rng(seed, key, day, "day")
    midnight = _local_midnight(day, zone)
    wake = wake_time(p, seed, key, day, zone)
    next_wake = wake_time(p, seed, key, day + timedelta(days=1), zone)
    weekend = day.weekday() >= 5
    bed_m = rng.gauss(p.bed + (p.weekend_shift if weekend else 0.0), p.bed_sd)
    bed = _clip(midnight + bed_m * MIN, wake + 10 * 3600, next_wake - 5 * 3600)
    first, last = wake + 20 * MIN, bed - 30 * MIN
    away: list[tuple[float, float]] = []
    for o in p.outings:
        if day.weekday() in o.days and rng.random() < o.prob:
            s = midnight + rng.gauss(o.start, o.start_sd) * MIN
            s = _clip(s, first, last)
            length = max(15.0, rng.gauss(o.length, o.length_sd)) * MIN
            away.append((s, min(s + length, last)))
    for _ in range(min(5, _poisson(rng, p.errand_rate))):
        s = rng.uniform(first, last)
        length = math.exp(rng.gauss(math.log(p.errand_length), 0.5)) * MIN
        away.append((s, min(s + length, last)))
    away = [(a, b) for a, b in _merge(away) if b - a >= 5 * MIN]
    naps: list[tuple[float, float]] = []
    if rng.random() < p.nap_prob:
        s = midnight + rng.gauss(p.nap_start, 15) * MIN
        e = s + max(20.0, rng.gauss(p.nap_length, 15)) * MIN
        if _home_spans(s, e, away) == [(s, e)] and first < s < e < last:
            naps.append((s, e))
    acts: list[Act] = []
    for a, b in away:
        acts += [Act(a, DOOR), Act(b, DOOR)]
    home = _home_spans(wake, bed, _merge(away + naps))
    for a, b in home:
        acts += _motion(rng, a, b, p)
        for x in poisson_times(rng, a, b, p.toilet_every * MIN):
            acts += [Act(x, MOTION), Act(x + 90, WATER, rng.uniform(4.5, 7.0)),
                     Act(x + 120, WATER, rng.uniform(0.5, 1.5))]
    acts += _meals(rng, p, midnight, wake, bed, home)
    for x in poisson_times(rng, bed, next_wake, (next_wake - bed) / max(p.night_toilet, 0.01)):
        if x < next_wake - 5 * MIN:
            acts += [Act(x, MOTION), Act(x + 60, WATER, rng.uniform(4.5, 7.0))]
    acts.append(Act(wake, MOTION))
    acts.sort(key=lambda act: act.ts)
    return DayPlan(wake, bed, next_wake, tuple(away), tuple(naps), tuple(acts))


def _poisson(rng: random.Random, mean: float) -> int:
    n, t = 0, rng.expovariate(1.0)
    while t < mean and n < 100:
        n += 1
        t += rng.expovariate(1.0)
    return n


def _meals(rng: random.Random, p: Persona, midnight: float, wake: float, bed: float,
           home: list[tuple[float, float]]) -> list[Act]:
    """Cooking, washing up, the evening wash and television: water and electricity."""

    def inside(ts: float) -> bool:
        return any(a <= ts < b for a, b in home)

    acts: list[Act] = []
    meals = [wake + rng.uniform(15, 45) * MIN, midnight + rng.gauss(690, 20) * MIN,
             midnight + rng.gauss(1050, 30) * MIN]
    for m in meals:
        if not inside(m):
            continue
        acts.append(Act(m, MOTION))
        if p.cooks:
            acts += [Act(m, WATER, rng.uniform(2, 6)), Act(m + 5 * MIN, ENERGY,
                                                            rng.uniform(0.2, 0.6)),
                     Act(m + 35 * MIN, WATER, rng.uniform(6, 15))]
    wash = bed - rng.uniform(30, 90) * MIN
    if inside(wash) and rng.random() < 0.6:
        acts += [Act(wash, WATER, rng.uniform(25, 60)), Act(wash, ENERGY, rng.uniform(0.8, 2.0))]
    for a, b in home:     # lights and television in the evening
        s, e = max(a, midnight + 18 * 3600), min(b, bed)
        if e > s:
            acts.append(Act(e, ENERGY, 0.15 * (e - s) / 3600))
    return acts
