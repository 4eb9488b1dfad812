"""Installer at community scale: ``python -m simulators.bench installer [--quick]``.

A generated site (``simulators.site_gen``: ``--households`` households, ~5.7 devices each;
default 885 households = 5,043 devices, ``--quick`` 180 = ~1,030) is loaded and wired the
way the service wires it: the installer's ``SiteEditor`` (its fast path made at the first
edit, ``SiteEditor.defer``, as the service does: ``first_edit_ms`` is that edit's time), a
``SiteBus`` checked with ``gateway.service.check_site`` and subscribed like the service
(``apply_engine``, ``apply_intake``, ``apply_field``, ``apply_health``, the board's modes, a
heap settle after a whole reload), its heap settled as the service's is at start-up. Each
measured operation is what an API call does between the request and the answer: the
editor's edit (devices.yaml validated and written) and the site bus's publish (applied to
the running engine, intake and health).

Operations, ``--ops`` of each kind on random devices: ``mode`` (test mode on, then off),
``edit`` (a new name), ``move`` (to another household: the engine takes the device's new
place), ``add`` (a new device), ``remove`` (one added before). ``*_ms``: p50 and p95 of
wall time per kind, and ``all_p95_ms`` over every operation; ``*_cpu_ms``: the same in
this process's CPU time (a shared machine's other load does not count).

Baseline, same run, same site: ``full_reload_ms``, the path every edit took before: the
whole devices.yaml through ruamel's round trip, validated on a copy of the site, written,
and published whole (new engine, every binding, every health row, heap settle);
``--full`` times (median). ``ratio_full_over_p50`` = full reload ÷ the p50 of all
operations; ``ratio_full_over_p95`` likewise with the p95. ``equal_to_reload``: after
every operation, the site the editor holds equals one loaded from the files (checked once
at the end, not timed), and the engine's, intake's and health's state equals a fresh build.

Bar (issue 13.7): p95 <= 300 ms per save or mode change on a 5,000-device site.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["add_args", "run"]


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--households", type=int, default=None, help="default 885 (quick 180)")
    p.add_argument("--ops", type=int, default=None, help="operations of each kind "
                   "(default 30, quick 8)")
    p.add_argument("--full", type=int, default=None, help="whole reloads timed (default 2, "
                   "quick 1)")
    p.add_argument("--seed", type=int, default=0)


class _Intake:
    """The MQTT intake's part the site bus touches (its bindings)."""

    def __init__(self, bindings: dict) -> None:
        self.bindings = bindings

    def rebind(self, bindings: dict) -> None:
        self.bindings = bindings


class _Field:
    def rebind(self, plans: dict) -> None:
        self.plans = plans


class Rig:
    """The service's site wiring around one site directory (see module docstring)."""

    def __init__(self, directory: Path) -> None:
        from types import SimpleNamespace

        from gateway.change_bus import SiteBus
        from gateway.device_modes import modes_json
        from gateway.health import HealthBook
        from gateway.heap import settle
        from gateway.installer import SiteEditor, files_state
        from gateway.service import (
            _settle_after_reload, apply_engine, apply_field, apply_health, apply_intake,
            bindings_for, build_engine, check_site, health_rows,
        )
        from gateway.site import load_site

        self.directory = directory
        keys = files_state(directory)
        cache = directory.parent / "site-cache.json"     # the data directory's, as the service
        site = dataclasses.replace(load_site(directory, cache=cache), trees={})
        self.editor = SiteEditor(directory, check=bindings_for, cache=cache)
        self.editor.defer(site, keys)
        self.bus = SiteBus(site, check=check_site)
        self.pipeline = SimpleNamespace(engine=build_engine(site))
        self.intake = _Intake(bindings_for(site))
        self.health = HealthBook(health_rows(site))
        self.events: list[dict] = []
        bus, pipe = self.bus, self.pipeline
        bus.subscribe(lambda new, ch: apply_engine(pipe, new, ch), change=True)  # type: ignore[arg-type]
        bus.subscribe(lambda new, ch: apply_intake(self.intake, new, ch),  # type: ignore[arg-type]
                      change=True)
        bus.subscribe(lambda new, ch: apply_field(_Field(), new, ch),  # type: ignore[arg-type]
                      change=True)
        bus.subscribe(lambda new, ch: apply_health(self.health, new, ch), change=True)
        bus.subscribe(lambda new: self.events.append(modes_json(new)))
        bus.subscribe(lambda new, ch: _settle_after_reload(new) if ch is None else None,
                      change=True)
        settle()        # as the service does once it is wired (gateway.kernel.heap)

    def take(self, site: Any) -> None:
        """What the API does with the editor's answer (``_take_effect``)."""
        change = self.editor.change_of(site)
        if change is not None:
            self.bus.publish(site, change)
        else:
            self.bus.publish(site)


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))], 1)


async def _ops(rig: Rig, n: int, rng: random.Random) -> dict[str, list[tuple[float, float]]]:
    ed = rig.editor
    site = rig.bus.current
    devices = [d for d in site.devices.devices if d.mqtt is not None and d.household]
    households = [h.id for h in site.site.households]
    out: dict[str, list[tuple[float, float]]] = {k: [] for k in
                                                  ("mode", "edit", "move", "add", "remove")}
    added: list[str] = []

    async def timed(kind: str, edit) -> None:
        t0, c0 = time.perf_counter(), time.process_time()   # the coroutine runs from here
        rig.take(await edit)
        out[kind].append(((time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000))
        if "first" not in out:          # the first edit makes the fast path: apart
            out["first"] = [out[kind].pop()]

    def entry(d: Any, **over: Any) -> dict:
        e = {"id": d.id, "type": d.type, "household": d.household, "name": d.name,
             "profile": d.profile, "mqtt": d.mqtt.model_dump(exclude_none=True)}
        e.update(over)
        return e

    for i in range(n):
        d = rng.choice(devices)
        await timed("mode", ed.set_mode(d.id, "test", actor="bench"))
        await timed("mode", ed.set_mode(d.id, "normal", actor="bench"))
        d = rng.choice(devices)
        await timed("edit", ed.upsert_device(entry(d, name=f"{d.name} {i}"),
                                                     create=False, actor="bench"))
        d = rng.choice(devices)
        cur = next(x for x in rig.bus.current.devices.devices if x.id == d.id)
        await timed("move", ed.upsert_device(
            entry(cur, household=rng.choice(households)), create=False, actor="bench"))
        new_id = f"bench-caller-{i}"
        hh = rng.choice(households)
        await timed("add", ed.upsert_device(
            {"id": new_id, "type": "emergency_caller", "household": hh, "name": "一键呼叫器",
             "profile": "json-emergency-caller", "mqtt": {"topic": f"devices/{new_id}"}},
            create=True, actor="bench"))
        added.append(new_id)
        if i % 2 == 1:
            gone = added.pop(0)
            await timed("remove", ed.remove_device(gone, actor="bench"))
    return out


async def _full(rig: Rig, rng: random.Random) -> tuple[float, float]:
    """The whole-file path and a whole publish (as every edit before issue 13.7)."""
    ed = rig.editor
    d = rng.choice([d for d in rig.bus.current.devices.devices if d.mqtt is not None])
    ed._base = None                       # noqa: SLF001 - the baseline: no fast path
    t0, c0 = time.perf_counter(), time.process_time()
    site = await ed.set_mode(d.id, "test", actor="bench")
    rig.bus.publish(site)
    wall, cpu = (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000
    rig.take(await ed.set_mode(d.id, "normal", actor="bench"))   # fast again (primed)
    return wall, cpu


def _equal_to_reload(rig: Rig) -> dict[str, bool]:
    """The running state equals what a restart with the same files makes."""
    from gateway.service import apply_modes, bindings_for, build_engine, health_rows
    from gateway.site import load_site

    fresh = load_site(rig.directory)
    site = rig.bus.current
    engine = build_engine(fresh)
    engine.load_snapshot(rig.pipeline.engine.snapshot())
    apply_modes(engine, fresh)
    snap_a, snap_b = rig.pipeline.engine.snapshot(), engine.snapshot()
    rows = [(h.device_id, h.device_type, h.household_id, h.grid_cell)
            for h in rig.health.devices.values()]
    return {"site": fresh.devices == site.devices,
            "engine": snap_a == snap_b and dict(rig.pipeline.engine.site.devices)
            == dict(engine.site.devices),
            "intake": rig.intake.bindings == bindings_for(fresh),
            "health": rows == health_rows(fresh)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from simulators.community import Community
    from simulators.site_gen import write_site

    quick = bool(getattr(args, "quick", False))
    households = args.households or (180 if quick else 885)
    n = args.ops or (8 if quick else 30)
    fulls = args.full or (1 if quick else 2)
    rng = random.Random(args.seed)
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-installer-") as tmp:
        community = Community(households, args.seed)
        directory = write_site(Path(tmp) / "site", community)
        t0 = time.perf_counter()
        rig = Rig(directory)
        start_s = time.perf_counter() - t0
        ops = asyncio.run(_ops(rig, n, rng))
        first = ops.pop("first")[0]
        full = [asyncio.run(_full(rig, rng)) for _ in range(fulls)]
        equal = _equal_to_reload(rig)
        paths = rig.editor.last_path
    every = [w for xs in ops.values() for w, _ in xs]
    every_cpu = [c for xs in ops.values() for _, c in xs]
    out: dict[str, Any] = {"devices": len(community.devices), "households": households,
                           "ops_per_kind": n, "start_s": round(start_s, 1),
                           "first_edit_ms": round(first[0], 1)}
    for kind, xs in ops.items():
        out[f"{kind}_ms"] = {"p50": _pct([w for w, _ in xs], 0.5),
                             "p95": _pct([w for w, _ in xs], 0.95)}
        out[f"{kind}_cpu_ms"] = {"p50": _pct([c for _, c in xs], 0.5),
                                 "p95": _pct([c for _, c in xs], 0.95)}
    out["all_p50_ms"], out["all_p95_ms"] = _pct(every, 0.5), _pct(every, 0.95)
    out["all_cpu_p95_ms"] = _pct(every_cpu, 0.95)
    full_ms = statistics.median(w for w, _ in full)
    out["full_reload_ms"] = round(full_ms, 1)
    out["full_reload_cpu_ms"] = round(statistics.median(c for _, c in full), 1)
    out["ratio_full_over_p50"] = round(full_ms / max(out["all_p50_ms"], 0.1), 1)
    out["ratio_full_over_p95"] = round(full_ms / max(out["all_p95_ms"], 0.1), 1)
    out["last_path"] = paths
    out["equal_to_reload"] = equal
    out["ok"] = all(equal.values())
    out["load_avg_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    out["cpus"] = os.cpu_count()
    return out
