"""In-process counters and gauges, rendered in the Prometheus text format at ``/metrics``.

Deliberately tiny: the gateway's hot paths increment plain dict entries (no locks: everything
runs on the event loop thread; the store's writer thread only reads its own counters).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable

__all__ = ["Metrics", "RateLimitedLog"]


class Metrics:
    """Counters with one label set each, gauges computed on scrape, and a latency histogram."""

    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self) -> None:
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
        self.gauges: dict[str, Callable[[], float]] = {}
        self.help: dict[str, str] = {}
        self._hist: dict[str, list[float]] = {}

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self.counters[(name, tuple(sorted(labels.items())))] += amount

    def get(self, name: str, **labels: str) -> float:
        return self.counters.get((name, tuple(sorted(labels.items()))), 0.0)

    def total(self, name: str) -> float:
        return sum(v for (n, _l), v in self.counters.items() if n == name)

    def by_label(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for (n, labels), v in self.counters.items():
            if n == name:
                key = dict(labels).get(label, "")
                out[key] = out.get(key, 0.0) + v
        return out

    def gauge(self, name: str, fn: Callable[[], float], help_text: str = "") -> None:
        self.gauges[name] = fn
        if help_text:
            self.help[name] = help_text

    def observe(self, name: str, seconds: float) -> None:
        h = self._hist.setdefault(name, [0.0] * (len(self.BUCKETS) + 2))
        for i, b in enumerate(self.BUCKETS):
            if seconds <= b:
                h[i] += 1
        h[-2] += 1          # count
        h[-1] += seconds    # sum

    def render(self) -> str:
        lines: list[str] = []
        names = sorted({n for n, _ in self.counters})
        for name in names:
            lines.append(f"# TYPE {name} counter")
            for (n, labels), v in sorted(self.counters.items()):
                if n == name:
                    lab = ",".join(f'{k}="{_esc(val)}"' for k, val in labels)
                    lines.append(f"{name}{{{lab}}} {v:g}" if lab else f"{name} {v:g}")
        for name, fn in sorted(self.gauges.items()):
            if name in self.help:
                lines.append(f"# HELP {name} {self.help[name]}")
            lines.append(f"# TYPE {name} gauge")
            try:
                lines.append(f"{name} {float(fn()):g}")
            except (ValueError, TypeError, ArithmeticError):
                lines.append(f"{name} NaN")
        for name, h in sorted(self._hist.items()):
            lines.append(f"# TYPE {name} histogram")
            for i, b in enumerate(self.BUCKETS):
                lines.append(f'{name}_bucket{{le="{b:g}"}} {h[i]:g}')
            lines.append(f'{name}_bucket{{le="+Inf"}} {h[-2]:g}')
            lines.append(f"{name}_count {h[-2]:g}")
            lines.append(f"{name}_sum {h[-1]:g}")
        return "\n".join(lines) + "\n"


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class RateLimitedLog:
    """Log a repeated problem once per key per interval, with how many were suppressed."""

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0):
        self.logger = logger
        self.interval_s = interval_s
        self._last: dict[tuple, tuple[float, int]] = {}

    def warning(self, key: tuple, msg: str, *args: object) -> None:
        self._log(logging.WARNING, key, msg, *args)

    def error(self, key: tuple, msg: str, *args: object) -> None:
        self._log(logging.ERROR, key, msg, *args)

    def _log(self, level: int, key: tuple, msg: str, *args: object) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(key, (-1e18, 0))
        if now - last >= self.interval_s:
            if suppressed:
                msg += f" (+{suppressed} similar suppressed)"
            self.logger.log(level, msg, *args)
            self._last[key] = (now, 0)
            if len(self._last) > 10_000:      # bound memory under a flood of distinct keys
                self._last.clear()
        else:
            self._last[key] = (last, suppressed + 1)
