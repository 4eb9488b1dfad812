"""Keep the garbage collector off the gateway's long-lived state.

Part of the kernel (:mod:`gateway.kernel`, imports nothing else of the project), so that the
rules benchmark (``rules/bench.py``) settles its engine the way the gateway does.

Contract: :func:`settle` runs a full collection and then moves every object that is still
alive into the collector's permanent generation (``gc.freeze``), so later collections scan
only what was made since (per-reading objects, and the rule engine's streams, made at each
device's first reading of a kind), not the site, the rule engine's thousands of compiled
rules and routes, or the web app. The gateway calls it once its service is wired
(start-up) and after each site reload; the rules benchmark calls it after building an engine,
so that it measures the engine as the gateway runs it.

Trade-off: an object that was alive at a ``settle`` and later becomes cyclic garbage stays
in memory until the next ``settle`` (which first unfreezes everything, so the engine replaced
by a reload is freed then). Objects of start-up only are few and bounded.

Cost: one full collection, on the event loop. For a site of 10,000 households with 10,000
rules (about 400k tracked objects) it took about 0.2 s at start-up and 0.35 s after a reload
on the 2-core development VM (building the new engine itself takes about 1.6 s); each
settle's duration is logged.

:func:`pause` (``gateway run``, before the service is imported): no collection until the
next :func:`settle`, which collects once and turns the collector back on. Building the
start-up state of a large site (the validated site, the rule engine's routes, device
health: a few million container objects that all stay alive) made the collector scan the
growing heap again and again: 1.5–2.5 s of a 10,000-household start (docs/benchmarks.md,
"ready"). The service's start-up settle then does not collect either (``settle(collect=
False)``): such a start left ~1,000 objects of cyclic garbage (classes and functions made by
imports, a YAML reader), which a full collection of ~860,000 objects took 0.4–0.5 s to
find; they stay in the permanent generation until the next settle.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

__all__ = ["freeze_survivors", "pause", "resume", "settle", "watch_collections"]

#: the collector was turned off by :func:`pause` (and :func:`settle` turns it back on)
_paused = False


def settle(collect: bool = True, count: bool = True) -> dict[str, float]:
    """Collect, then freeze what is left. Returns ``{"frozen": n, "ms": elapsed}``.
    ``collect`` false skips the collection only while :func:`pause` holds the collector off
    (a start-up: see the module docstring); otherwise, e.g. a process that ran another
    service before (the tests), whose frozen objects may be garbage now, it collects.
    ``count`` false leaves ``frozen`` out: counting walks every frozen object (~30 ms for
    the ~840,000 of a 10,000-household start, all of the start-up settle's time)."""
    t0 = time.perf_counter()
    gc.unfreeze()
    if collect or not _paused:
        gc.collect()
    gc.freeze()
    resume()
    out = {"ms": (time.perf_counter() - t0) * 1000.0}
    if count:
        out["frozen"] = gc.get_freeze_count()
    return out


def pause() -> None:
    """No garbage collection until the next :func:`settle` (or :func:`resume`): for a
    process's start-up, whose objects nearly all stay alive (see the module docstring).
    Nothing when the collector is already off."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """The collector back on, if :func:`pause` turned it off."""
    global _paused
    if _paused:
        _paused = False
        gc.enable()


def freeze_survivors() -> None:
    """After a full collection: freeze what survived it (``gc.freeze``), so the next full
    collection scans only what was promoted since, not the same long-lived readings,
    streams and buffers again (on the development VM a full collection of ~56,000 such
    objects stopped the event loop for 50-250 ms, every few seconds under load: the tail of
    the alarm latency, docs/benchmarks.md "path"). Cyclic garbage among frozen objects
    waits for the next :func:`settle` (the gateway settles every hour and after a reload)."""
    gc.freeze()


def watch_collections(observe: Callable[[float, int], None]) -> None:
    """Call ``observe(seconds, generation)`` after each collection (``gc.callbacks``): a
    full collection stops the event loop, and with it an alarm on its way (the gateway
    exports them as ``gateway_gc_pause_seconds``)."""
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            observe(time.perf_counter() - started[0], info.get("generation", 0))

    gc.callbacks.append(callback)
