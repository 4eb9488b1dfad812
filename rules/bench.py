"""Benchmark workload of the rule engine (``python -m simulators.bench rules`` calls this).

Contract: :func:`run_rules_bench` builds a synthetic site (``households`` households with a
caller, smoke detector, motion sensor, door contact and electricity meter each), a rule set of
``rules`` rules (ten site-wide rules of every kind plus rules scoped to households, devices
and grid cells), and ``readings`` readings of a realistic mix (meters, temperature, motion,
doors, heartbeats, a few alarms), all from ``seed``. It feeds them through ``Engine.feed``
(ticking once per simulated second, not timed) and returns figures; nothing is printed.
The same run is repeated with 10 and with 10,000 rules for ``ratio_many_rules``.
"""

from __future__ import annotations

import gc
import random
import resource
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from gateway.model import Kind, Reading
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


def _base_rules() -> list[dict]:
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


def _readings(site_households: int, n: int, seed: int) -> list[Reading]:
    rng = random.Random(seed)
    step = timedelta(seconds=3600.0 / max(n, 1))     # one simulated hour in total
    energy = [0.0] * site_households
    out: list[Reading] = []
    ts = _START
    for _ in range(n):
        ts += step
        h = rng.randrange(site_households)
        x = rng.random()
        if x < 0.35:
            energy[h] += rng.random() * 0.01
            r = Reading(f"meter-{h}", Kind.ENERGY, energy[h], ts)
        elif x < 0.50:
            r = Reading(f"meter-{h}", Kind.POWER, rng.random() * 4000.0, ts)
        elif x < 0.65:
            r = Reading(f"smoke-{h}", Kind.TEMPERATURE, 18.0 + rng.random() * 15.0, ts)
        elif x < 0.80:
            r = Reading(f"motion-{h}", Kind.MOTION, rng.random() < 0.5, ts)
        elif x < 0.90:
            r = Reading(f"door-{h}", Kind.DOOR_OPEN, rng.random() < 0.5, ts)
        elif x < 0.97:
            dev = f"{rng.choice(list(_TYPES))}-{h}"
            r = Reading(dev, Kind.BATTERY, 30.0 + rng.random() * 70.0, ts)
        elif x < 0.995:
            r = Reading(f"smoke-{h}", Kind.SMOKE, rng.random() < 0.01, ts)
        else:
            r = Reading(f"caller-{h}", Kind.SOS, rng.random() < 0.5, ts)
        out.append(r)
    return out


def _run(cfg: RulesConfig, site: SiteIndex, readings: list[Reading]) -> dict[str, Any]:
    """Feed ``readings`` in chunks of one simulated second, ticking before each chunk.
    Throughput is events per second of this process's CPU time in the loop without the
    ticks (a shared machine's other load does not count against it); ``events_per_s_wall``
    is the same over wall time spent in ``feed``. Every 32nd chunk times each call (wall)
    for the latency percentiles."""
    eng = Engine(cfg, site)
    feed, tick = eng.feed, eng.tick
    clock = time.perf_counter_ns
    chunks: list[list[Reading]] = []
    for r in readings:
        if not chunks or (r.ts - chunks[-1][0].ts).total_seconds() >= 1.0:
            chunks.append([])
        chunks[-1].append(r)
    lat: list[int] = []
    actions = busy = 0
    cpu = time.process_time_ns
    gc.collect()
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
    n = len(readings)
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
    """Figures of the benchmark (see module contract). Keys: ``events_per_s``, ``us_p50``,
    ``us_p99``, ``ratio_many_rules``, ``runs`` (one per rule count: the best of ``repeat``
    runs, with every run's events/s in ``all_events_per_s``), ``rss_mb`` (peak),
    ``inactivity``. Runs of the rule counts are interleaved so that a change in the machine's
    load hits them alike."""
    site = bench_site(households)
    data = _readings(households, readings, seed)
    gc.freeze()   # the recorded readings are input, not engine garbage to scan
    counts = (rules, *compare)
    configs = {n: bench_rules(n, households, seed) for n in counts}
    tries: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    for _ in range(max(1, repeat)):
        for n in counts:
            tries[n].append(_run(configs[n], site, data))
    runs = {}
    for n, rows in tries.items():
        best = dict(max(rows, key=lambda row: row["events_per_s"]))
        best["all_events_per_s"] = [round(row["events_per_s"]) for row in rows]
        runs[n] = best
    few, many = compare
    main = runs[rules]
    # The same number of rules, but scoped to other households than the readings come from:
    # the cost of the index alone, apart from the extra rules that really fire above.
    idle_site = bench_site(2 * households)
    idle_cfg = bench_rules(many, households, seed, h_offset=households)
    idle = max((_run(idle_cfg, idle_site, data) for _ in range(max(1, repeat))),
               key=lambda row: row["events_per_s"])
    return {
        "households": households, "rules": rules, "readings": readings, "seed": seed,
        "events_per_s": main["events_per_s"], "us_p50": main["us_p50"],
        "us_p99": main["us_p99"],
        "ratio_many_rules": runs[many]["events_per_s"] / runs[few]["events_per_s"],
        "ratio_many_rules_not_firing": idle["events_per_s"] / runs[few]["events_per_s"],
        "actions_by_rules": {str(n): runs[n]["actions"] for n in counts},
        "runs": list(runs.values()),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "inactivity": inactivity_memory(memory_households) if memory_households else None,
    }
