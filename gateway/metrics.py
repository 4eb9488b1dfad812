"""In-process counters, gauges and histograms, rendered in the Prometheus text format at
``/metrics``.

Deliberately tiny, and safe from any thread. The event loop's thread changes them all the
time (drivers, pipeline, forwarder); ``/metrics`` renders them on a worker thread of
``gateway.blocking`` (its gauges read the store); anything on the store's writer thread or a
worker may count too. One lock guards the maps: every change takes it for a dict update, and
``render``/``total``/``by_label`` take a copy under it and do the formatting and call the
gauges (which may query the store) after releasing it, so the loop never waits on a scrape.

The exceptions are the hot paths of ``drivers/mqtt.py`` and ``gateway/pipeline.py``
(readings fed), which add to ``counters`` directly
(``counters[key] += 1``, no label sort, no lock): allowed on the event loop's thread only,
for a key no other thread changes. A copy taken under the lock is one C-level step that no
such update can interleave with (no bytecode runs inside it).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict
from collections.abc import Callable

from gateway.kernel.heap import freeze_survivors, settle, watch_collections

__all__ = ["Metrics", "watch_stalls"]

Key = tuple[str, tuple[tuple[str, str], ...]]

log = logging.getLogger(__name__)


class Metrics:
    """Counters with one label set each, gauges computed on scrape, and a latency histogram."""

    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self) -> None:
        self.counters: dict[Key, float] = defaultdict(float)
        self.gauges: dict[str, Callable[[], float]] = {}
        self.help: dict[str, str] = {}
        self._hist: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self.counters[key] += amount

    def get(self, name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            return self.counters.get(key, 0.0)

    def _counters(self) -> dict[Key, float]:
        with self._lock:
            return dict(self.counters)

    def total(self, name: str) -> float:
        return sum(v for (n, _l), v in self._counters().items() if n == name)

    def by_label(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for (n, labels), v in self._counters().items():
            if n == name:
                key = dict(labels).get(label, "")
                out[key] = out.get(key, 0.0) + v
        return out

    def gauge(self, name: str, fn: Callable[[], float], help_text: str = "") -> None:
        with self._lock:
            self.gauges[name] = fn
            if help_text:
                self.help[name] = help_text

    def observe(self, name: str, seconds: float) -> None:
        with self._lock:
            h = self._hist.get(name)
            if h is None:
                h = self._hist[name] = [0.0] * (len(self.BUCKETS) + 2)
            for i, b in enumerate(self.BUCKETS):
                if seconds <= b:
                    h[i] += 1
            h[-2] += 1          # count
            h[-1] += seconds    # sum

    def render(self) -> str:
        with self._lock:          # copies only; gauges are called after the lock is released
            counters = dict(self.counters)
            gauges = dict(self.gauges)
            helps = dict(self.help)
            hists = {name: list(h) for name, h in self._hist.items()}
        lines: list[str] = []
        current = None
        for (name, labels), v in sorted(counters.items()):
            if name != current:
                lines.append(f"# TYPE {name} counter")
                current = name
            lab = ",".join(f'{k}="{_esc(val)}"' for k, val in labels)
            lines.append(f"{name}{{{lab}}} {v:g}" if lab else f"{name} {v:g}")
        for name, fn in sorted(gauges.items()):
            if name in helps:
                lines.append(f"# HELP {name} {helps[name]}")
            lines.append(f"# TYPE {name} gauge")
            try:
                lines.append(f"{name} {float(fn()):g}")
            except (ValueError, TypeError, ArithmeticError):
                lines.append(f"{name} NaN")
        for name, h in sorted(hists.items()):
            lines.append(f"# TYPE {name} histogram")
            for i, b in enumerate(self.BUCKETS):
                lines.append(f'{name}_bucket{{le="{b:g}"}} {h[i]:g}')
            lines.append(f'{name}_bucket{{le="+Inf"}} {h[-2]:g}')
            lines.append(f"{name}_count {h[-2]:g}")
            lines.append(f"{name}_sum {h[-1]:g}")
        return "\n".join(lines) + "\n"


async def watch_stalls(metrics: Metrics, every_s: float = 0.05,
                       settle_every_s: float = 3600.0) -> None:
    """What holds the event loop up, and with it an alarm on its way: how late each wake-up
    of a task sleeping ``every_s`` comes (``gateway_loop_lag_seconds``) and how long each
    full garbage collection takes (``gateway_gc_pause_seconds``, generation 2). After a
    full collection its survivors are frozen (``freeze_survivors``: the next one is short);
    every ``settle_every_s`` the heap is settled (``settle``: frozen cyclic garbage freed,
    one longer pause, logged). Runs until cancelled."""
    # a collection can start in any thread, inside any lock (the metrics' own): the
    # callback only appends, the pauses are observed here
    pauses: list[float] = []
    watch_collections(lambda s, gen: pauses.append(s) if gen == 2 else None)
    loop = asyncio.get_running_loop()
    settled = loop.time()
    while True:
        due = loop.time() + every_s
        await asyncio.sleep(every_s)
        metrics.observe("gateway_loop_lag_seconds", max(0.0, loop.time() - due))
        if pauses:
            freeze_survivors()
            while pauses:
                metrics.observe("gateway_gc_pause_seconds", pauses.pop())
        if loop.time() - settled >= settle_every_s:
            done = settle()
            settled = loop.time()
            pauses.clear()
            log.info("heap settled: %d objects frozen in %.0f ms", done["frozen"], done["ms"])


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

