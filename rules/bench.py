"""Benchmark workload of the rule engine (``python -m simulators.bench rules`` calls this).

Contract: :func:`run_rules_bench` builds a synthetic site (``households`` households with a
caller, smoke detector, motion sensor, door contact and electricity meter each), a rule set of
``rules`` rules (ten site-wide rules of every kind plus rules scoped to households, devices
and grid cells), and ``readings`` readings of one simulated hour (meters, temperature,
motion, doors, heartbeats, a few alarms), all from ``seed``: by default synthetic signals
shaped like recorded ones (``"smooth"``: temperatures drift, doors close again), and as a
stress case drawn afresh at every reading (``"noise"``). It feeds them through
``Engine.feed`` (ticking once per simulated second, not timed; the heap settled as the
gateway settles it, see :mod:`gateway.kernel.heap`) and returns figures; nothing is printed. The
same runs with 10 and with 10,000 rules give ``ratio_many_rules``.
"""

from __future__ import annotations

import heapq
import math
import random
import resource
import statistics
import time
import tracemalloc
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from gateway.kernel.heap import settle
from gateway.kernel.model import Kind, Reading
from rules.engine import Engine
from rules.site import DeviceInfo, HouseholdInfo, SiteIndex
from rules.spec import RulesConfig

__all__ = ["bench_site", "bench_rules", "inactivity_memory", "run_rules_bench"]

_START = datetime(2024, 3, 4, tzinfo=timezone.utc)
_TYPES = {"caller": "emergency_caller", "smoke": "smoke_detector", "motion": "motion_sensor",
          "door": "door_contact", "meter": "electricity_meter"}
_MSG = {"zh": "{household_id} {device_id} {value}", "en": "{household_id} {device_id} {value}"}


def bench_site(households: int, cells: int = 50, devices: bool = True) -> SiteIndex:
    hs = [HouseholdInfo(f"h{i}", f"g{i % cells}", lives_alone=(i % 5 == 0))
          for i in range(households)]
    ds = [DeviceInfo(f"{p}-{i}", t, f"h{i}", f"g{i % cells}")
          for i in range(households) for p, t in _TYPES.items()] if devices else []
    return SiteIndex.build(ds, hs)


def _base_rules() -> list[dict[str, Any]]:
    m = {"message": _MSG}
    return [
        {"id": "sos", "kind": "match", "category": "emergency_call", "severity": "critical",
         "when": {"kind": "sos", "value": True}, "clear_when": {"kind": "sos", "value": False},
         **m},
        {"id": "smoke", "kind": "match", "category": "fire", "severity": "critical",
         "when": {"kind": "smoke", "value": True}, **m},
        {"id": "hot", "kind": "threshold", "category": "fire", "metric": "temperature",
         "above": 55, "hysteresis": 5, "for": "30s", **m},
        {"id": "fire", "kind": "compound", "category": "fire", "window": "2m",
         "all": [{"when": {"kind": "smoke", "value": True}},
                 {"when": {"kind": "heat", "value": True}}], **m},
        {"id": "door_held", "kind": "held", "category": "intrusion", "for": "5m",
         "when": {"kind": "door_open", "value": True}, **m},
        {"id": "sos3", "kind": "count", "category": "emergency_call", "count": 3,
         "window": "1m", "when": {"kind": "sos", "value": True}, **m},
        {"id": "health", "kind": "supervision", **m},
        {"id": "alone", "kind": "inactivity", "threshold": "12h",
         "quiet_hours": {"start": "22:00", "end": "07:00"}, **m},
        {"id": "power", "kind": "threshold", "category": "electrical", "metric": "power",
         "above": 7000, "for": "1m", **m},
        {"id": "tamper", "kind": "match", "category": "device_fault",
         "when": {"kind": "tamper", "value": True}, **m},
    ]


def bench_rules(n: int, households: int, seed: int, cells: int = 50,
                h_offset: int = 0) -> RulesConfig:
    """``n`` rules: the ten base rules, then scoped ones cycling over households/devices
    ``h_offset`` .. ``h_offset + households - 1``."""
    rng = random.Random(seed)
    rules = _base_rules()[:n]
    for j in range(len(rules), n):
        h = h_offset + rng.randrange(households)
        scope = j % 4
        if scope == 0:
            rules.append({"id": f"temp_h{j}", "kind": "threshold", "category": "comfort",
                          "metric": "temperature", "above": 30 + rng.random() * 10,
                          "hysteresis": 1, "households": [f"h{h}"], "message": _MSG})
        elif scope == 1:
            rules.append({"id": f"door_d{j}", "kind": "held", "category": "intrusion",
                          "when": {"kind": "door_open", "value": True}, "for": "10m",
                          "devices": [f"door-{h}"], "message": _MSG})
        elif scope == 2:
            rules.append({"id": f"motion_c{j}", "kind": "count", "category": "activity",
                          "when": {"kind": "motion", "value": True}, "count": 50,
                          "window": "10m", "grid_cells": [f"g{rng.randrange(cells)}"],
                          "devices": [f"motion-{h}"], "message": _MSG})
        else:
            rules.append({"id": f"pwr_h{j}", "kind": "threshold", "category": "electrical",
                          "metric": "power", "above": 3000 + rng.randrange(3000),
                          "for": "5m", "households": [f"h{h}"], "message": _MSG})
    return RulesConfig.model_validate({"rules": rules})


def _readings(site_households: int, n: int, seed: int,
              workload: str = "smooth") -> list[Reading]:
    """``n`` readings over one simulated hour. ``"smooth"``: synthetic signals shaped like a
    real site's (see :func:`_smooth`); ``"noise"``: every value drawn afresh (see
    :func:`_noise`), a stress case where thresholds and held states flip all the time."""
    if workload == "smooth":
        return _smooth(site_households, n, seed)
    if workload == "noise":
        return _noise(site_households, n, seed)
    raise ValueError(f"unknown workload {workload!r}; use 'smooth' or 'noise'")


def _smooth(site_households: int, n: int, seed: int) -> list[Reading]:
    """About the mix of :func:`_noise` (meters 48 %, temperature 14 %, motion 19 %, doors
    10 % as opens and their closes, battery 7 %, smoke 2.4 %, SOS 0.5 %; the closes take the
    place of other readings) with values shaped like recorded ones: a room's
    temperature drifts around its own level (a few warm flats cross 30 °C); power is a base
    load plus appliances that switch on for a few readings; a door is opened and closed
    again 5–90 s later, and one opening in 20 is left ajar for 3–15 minutes."""
    rng = random.Random(seed)
    energy = [0.0] * site_households
    level = [rng.uniform(28.0, 33.0) if rng.random() < 0.05 else rng.uniform(18.0, 27.0)
             for _ in range(site_households)]
    temp = list(level)
    base = [rng.uniform(40.0, 400.0) for _ in range(site_households)]
    appliances: list[list[float]] = [[] for _ in range(site_households)]
    is_open = [False] * site_households
    closing: list[tuple[datetime, int]] = []        # (when, household): doors to close
    out: list[Reading] = []
    for ts in _hour(n):
        if closing and closing[0][0] <= ts:
            _, h = heapq.heappop(closing)
            is_open[h] = False
            out.append(Reading(f"door-{h}", Kind.DOOR_OPEN, False, ts))
            continue
        h = rng.randrange(site_households)
        x = rng.random()
        if x < 0.35:
            r = _energy(rng, energy, h, ts)
        elif x < 0.50:
            on = appliances[h]
            if on and rng.random() < 0.3:
                on.pop(rng.randrange(len(on)))
            if rng.random() < 0.1:
                on.append(rng.uniform(300.0, 2500.0))
            r = Reading(f"meter-{h}", Kind.POWER,
                        base[h] + sum(on) + rng.gauss(0.0, 15.0), ts)
        elif x < 0.65:
            temp[h] += 0.1 * (level[h] - temp[h]) + rng.gauss(0.0, 0.3)
            r = Reading(f"smoke-{h}", Kind.TEMPERATURE, round(temp[h], 2), ts)
        elif x < 0.80:
            r = Reading(f"motion-{h}", Kind.MOTION, rng.random() < 0.5, ts)
        elif x < 0.85:            # half the door share opens; the closes come from `closing`
            if is_open[h]:        # someone walking through the open door
                r = Reading(f"motion-{h}", Kind.MOTION, True, ts)
            else:
                is_open[h] = True
                held = (rng.uniform(180.0, 900.0) if rng.random() < 0.05
                        else rng.uniform(5.0, 90.0))
                heapq.heappush(closing, (ts + timedelta(seconds=held), h))
                r = Reading(f"door-{h}", Kind.DOOR_OPEN, True, ts)
        elif x < 0.90:
            r = Reading(f"motion-{h}", Kind.MOTION, rng.random() < 0.5, ts)
        else:
            r = _heartbeat_or_alarm(rng, h, x, ts)
        out.append(r)
    return out


def _hour(n: int) -> Iterator[datetime]:
    """``n`` timestamps spread evenly over one simulated hour from ``_START``."""
    step = timedelta(seconds=3600.0 / max(n, 1))
    ts = _START
    for _ in range(n):
        ts += step
        yield ts


def _energy(rng: random.Random, energy: list[float], h: int, ts: datetime) -> Reading:
    """The first 35 % of both mixes: household ``h``'s meter total, a little higher."""
    energy[h] += rng.random() * 0.01
    return Reading(f"meter-{h}", Kind.ENERGY, energy[h], ts)


def _heartbeat_or_alarm(rng: random.Random, h: int, x: float, ts: datetime) -> Reading:
    """The last 10 % of both mixes (``x`` >= 0.90): battery 7 %, smoke 2.5 %, SOS 0.5 %."""
    if x < 0.97:
        dev = f"{rng.choice(list(_TYPES))}-{h}"
        return Reading(dev, Kind.BATTERY, 30.0 + rng.random() * 70.0, ts)
    if x < 0.995:
        return Reading(f"smoke-{h}", Kind.SMOKE, rng.random() < 0.01, ts)
    return Reading(f"caller-{h}", Kind.SOS, rng.random() < 0.5, ts)


def _noise(site_households: int, n: int, seed: int) -> list[Reading]:
    """Meters 50 %, temperature 15 %, motion 15 %, doors 10 %, battery 7 %, smoke 2.5 %,
    SOS 0.5 %, every value drawn afresh (power 0–4 kW, 18–33 °C, doors open or shut at
    random every few minutes): thresholds and held states change at almost every reading."""
    rng = random.Random(seed)
    energy = [0.0] * site_households
    out: list[Reading] = []
    for ts in _hour(n):
        h = rng.randrange(site_households)
        x = rng.random()
        if x < 0.35:
            r = _energy(rng, energy, h, ts)
        elif x < 0.50:
            r = Reading(f"meter-{h}", Kind.POWER, rng.random() * 4000.0, ts)
        elif x < 0.65:
            r = Reading(f"smoke-{h}", Kind.TEMPERATURE, 18.0 + rng.random() * 15.0, ts)
        elif x < 0.80:
            r = Reading(f"motion-{h}", Kind.MOTION, rng.random() < 0.5, ts)
        elif x < 0.90:
            r = Reading(f"door-{h}", Kind.DOOR_OPEN, rng.random() < 0.5, ts)
        else:
            r = _heartbeat_or_alarm(rng, h, x, ts)
        out.append(r)
    return out


def _run(cfg: RulesConfig, site: SiteIndex, chunks: list[list[Reading]]) -> dict[str, Any]:
    """Feed ``chunks`` (readings cut into simulated seconds, :func:`_chunks`), ticking before
    each chunk. Throughput is events per second of this process's CPU time in the loop
    without the ticks (a shared machine's other load does not count against it);
    ``events_per_s_wall`` is the same over wall time spent in ``feed``. Every 32nd chunk
    times each call (wall) for the latency percentiles."""
    eng = Engine(cfg, site)
    feed, tick = eng.feed, eng.tick
    clock = time.perf_counter_ns
    lat: list[int] = []
    actions = busy = 0
    cpu = time.process_time_ns
    settle()          # as the gateway does once its engine is built (gateway/heap.py)
    cpu0 = cpu()
    for c, chunk in enumerate(chunks):
        t_tick = cpu()
        actions += len(tick(chunk[0].ts))
        cpu0 += cpu() - t_tick
        if c % 32 == 0:
            for r in chunk:
                t0 = clock()
                out = feed(r, r.ts)
                t1 = clock()
                lat.append(t1 - t0)
                busy += t1 - t0
                actions += len(out)
        else:
            t0 = clock()
            for r in chunk:
                out = feed(r, r.ts)
                if out:
                    actions += len(out)
            busy += clock() - t0
    cpu_ns = cpu() - cpu0      # CPU time of this process in the loop, ticks excluded
    n = sum(len(chunk) for chunk in chunks)
    sample = np.asarray(lat, dtype=np.int64)
    return {"rules": len(cfg.rules), "events": n, "events_per_s": n / (cpu_ns / 1e9),
            "events_per_s_wall": n / (busy / 1e9),
            "us_p50": float(np.percentile(sample, 50)) / 1000,
            "us_p99": float(np.percentile(sample, 99)) / 1000, "actions": actions,
            "streams": sum(len(k) for k in eng._streams.values())}


def inactivity_memory(households: int = 250_000) -> dict[str, Any]:
    """Bytes of inactivity state for ``households`` households (baseline on), measured as the
    numpy arrays' sizes and as Python allocations while building the engine (site excluded)."""
    site = SiteIndex.build([DeviceInfo(f"m{i}", "motion_sensor", f"h{i}", "g0")
                            for i in range(households)],
                           [HouseholdInfo(f"h{i}", "g0", lives_alone=True)
                            for i in range(households)])
    cfg = RulesConfig.model_validate({"rules": [
        {"id": "alone", "kind": "inactivity", "message": _MSG,
         "baseline": {"floor": "4h", "ceiling": "24h"}}]})
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    eng = Engine(cfg, site)
    allocated = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    ev = eng.evaluators[0]
    return {"households": households, "state_bytes": ev.nbytes,  # type: ignore[attr-defined]
            "state_mb": ev.nbytes / 2**20, "engine_alloc_mb": allocated / 2**20}  # type: ignore


def run_rules_bench(households: int = 10_000, rules: int = 1_000, readings: int = 1_000_000,
                    seed: int = 0, compare: tuple[int, int] = (10, 10_000),
                    memory_households: int = 250_000, repeat: int = 1) -> dict[str, Any]:
    """Figures of the benchmark (see module contract).

    Keys: ``events_per_s``, ``us_p50``, ``us_p99``: ``rules`` rules, the best of ``repeat``
    runs (``runs``: the best run of each rule count, with every run's events/s; the counts
    run back to back in ``repeat`` rounds, alternating which goes first, each on a fresh
    engine with the heap settled as in the gateway). ``ratio_many_rules``: throughput with
    ``compare[1]`` rules ÷ with ``compare[0]``, measured side by side (:func:`_side_by_side`),
    the median of ``repeat`` measurements (``ratio_many_rules_rounds``);
    ``side_by_side_control``: the same measurement with ``compare[0]`` rules on both sides
    (1.0 when the method has no bias). ``ratio_many_rules_sequential``: the ratio from the
    back-to-back runs (median of the rounds; noisier: the machine's speed drifts between
    runs). ``ratio_many_rules_noise`` (side by side) and ``ratio_many_rules_noise_sequential``:
    the same on the ``"noise"`` workload, where the extra rules change state at almost every
    reading (``noise_actions_by_rules``); ``ratio_many_rules_not_firing``: the extra rules
    scoped to households the readings do not come from (the index alone). ``rss_mb`` (peak);
    ``inactivity``."""
    site = bench_site(households)
    counts = (rules, *compare)
    configs = {n: bench_rules(n, households, seed) for n in counts}
    few, many = compare
    pair = (configs[few], configs[many])
    data = _chunks(_readings(households, readings, seed, "smooth"))
    tries, sequential = _rounds(configs, site, data, counts, repeat, compare)
    runs = {}
    for n, rows in tries.items():
        best = dict(max(rows, key=lambda row: row["events_per_s"]))
        best["all_events_per_s"] = [round(row["events_per_s"]) for row in rows]
        runs[n] = best
    main = runs[rules]
    rounds = range(max(1, repeat))
    side = [_side_by_side(pair, site, data) for _ in rounds]
    control = _side_by_side((configs[few], configs[few]), site, data)
    noise = _chunks(_readings(households, readings, seed, "noise"))
    noise_side = [_side_by_side(pair, site, noise) for _ in rounds]
    noise_tries, noise_sequential = _rounds(configs, site, noise, compare, repeat, compare)
    del noise
    # The same number of rules, but scoped to other households than the readings come from:
    # the cost of the index alone, apart from the extra rules that really run above.
    idle = (configs[few], bench_rules(many, households, seed, h_offset=households))
    idle_site = bench_site(2 * households)
    idle_side = [_side_by_side(idle, idle_site, data) for _ in rounds]
    return {
        "households": households, "rules": rules, "readings": readings, "seed": seed,
        "workload": "smooth",
        "events_per_s": main["events_per_s"], "us_p50": main["us_p50"],
        "us_p99": main["us_p99"],
        "ratio_many_rules": statistics.median(side),
        "ratio_many_rules_rounds": [round(x, 3) for x in side],
        "side_by_side_control": control,
        "ratio_many_rules_sequential": statistics.median(sequential),
        "ratio_many_rules_sequential_rounds": [round(x, 3) for x in sequential],
        "ratio_many_rules_noise": statistics.median(noise_side),
        "ratio_many_rules_noise_rounds": [round(x, 3) for x in noise_side],
        "ratio_many_rules_noise_sequential": statistics.median(noise_sequential),
        "ratio_many_rules_noise_sequential_rounds": [round(x, 3) for x in noise_sequential],
        "ratio_many_rules_not_firing": statistics.median(idle_side),
        "actions_by_rules": {str(n): runs[n]["actions"] for n in counts},
        "noise_actions_by_rules": {str(n): noise_tries[n][0]["actions"] for n in compare},
        "runs": list(runs.values()),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "inactivity": inactivity_memory(memory_households) if memory_households else None,
    }


def _side_by_side(configs: tuple[RulesConfig, RulesConfig], site: SiteIndex,
                  chunks: list[list[Reading]]) -> float:
    """Throughput of an engine with ``configs[1]`` ÷ one with ``configs[0]``, measured side
    by side in this process: both engines get the same readings one simulated second at a
    time (a few hundred readings, about a millisecond), alternating which goes first, and
    each engine's ``feed`` calls are timed in CPU time. A drift of the machine's speed (a
    neighbour on the host, the CPU's clock) lasts far longer than a millisecond, so it hits
    both sides of the ratio alike, where whole runs one after the other see it as a swing of
    up to ±20 %. Garbage collection runs as in the gateway (heap settled once both engines
    are built); a collection is paid by the engine whose allocation triggers it, which can
    favour one slot, so the measurement is made twice with the engines in swapped slots and
    the geometric mean of the two ratios is returned."""
    cpu = time.process_time_ns
    ratios = []
    for order in ((0, 1), (1, 0)):
        engines = [Engine(configs[i], site) for i in order]
        spent = [0, 0]
        settle()
        for c, chunk in enumerate(chunks):
            for e in ((0, 1) if c % 2 == 0 else (1, 0)):
                eng = engines[e]
                eng.tick(chunk[0].ts)
                feed = eng.feed
                t0 = cpu()
                for r in chunk:
                    feed(r, r.ts)
                spent[e] += cpu() - t0
        first, second = spent if order == (0, 1) else spent[::-1]
        ratios.append(first / second)
        del engines
    return math.sqrt(ratios[0] * ratios[1])


def _rounds(configs: dict[int, RulesConfig], site: SiteIndex, data: list[list[Reading]],
            counts: tuple[int, ...], repeat: int, pair: tuple[int, int]
            ) -> tuple[dict[int, list[dict[str, Any]]], list[float]]:
    """``repeat`` rounds of one run per rule count (order reversed every other round);
    returns the runs by rule count and, per round, events/s of ``pair[1]`` ÷ ``pair[0]``."""
    tries: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    ratios = []
    for i in range(max(1, repeat)):
        for n in (counts if i % 2 == 0 else counts[::-1]):
            tries[n].append(_run(configs[n], site, data))
        few, many = (tries[n][-1]["events_per_s"] for n in pair)
        ratios.append(many / few)
    return tries, ratios


def _chunks(readings: list[Reading]) -> list[list[Reading]]:
    """``readings`` cut into runs of one simulated second (the engine is ticked per run)."""
    chunks: list[list[Reading]] = []
    for r in readings:
        if not chunks or (r.ts - chunks[-1][0].ts).total_seconds() >= 1.0:
            chunks.append([])
        chunks[-1].append(r)
    return chunks
