"""Replay recorded readings through an engine: their own timestamps are the clock.

Contract:
- :func:`readings_from_jsonl` parses lines in the format of ``Reading.to_json()`` (one JSON
  object per line; blank lines and lines starting with ``#`` are skipped). A bad line is not
  fatal: it is skipped and ``(line_number, message)`` appended to ``errors``.
- :func:`replay` feeds each reading at ``now = reading.ts`` (never moving ``now`` backwards:
  an out-of-order line is fed at the latest time seen so far, where the engine's ordering
  policy applies), ticks at every whole multiple of ``tick_every`` seconds of recorded time
  in between (as the gateway ticks; aligned so that a replay resumed from a snapshot ticks
  at the same instants), and after the last reading keeps ticking until ``until`` (if given). It
  yields every action as its ``to_json()`` dict, in order. Same engine state + same input =
  same output (the engine has no other source of time or randomness).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any
from datetime import datetime, timedelta

from gateway.kernel.model import Reading
from rules.engine import Engine

__all__ = ["readings_from_jsonl", "replay"]


def readings_from_jsonl(lines: Iterable[str],
                        errors: list[tuple[int, str]] | None = None) -> Iterator[Reading]:
    for n, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            yield Reading.from_json(json.loads(text))
        except (ValueError, TypeError, KeyError) as exc:
            if errors is not None:
                what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
                errors.append((n, what))


def replay(engine: Engine, readings: Iterable[Reading], *, tick_every: float = 60.0,
           until: datetime | None = None) -> Iterator[dict[str, Any]]:
    step = timedelta(seconds=tick_every)
    now: datetime | None = None
    for r in readings:
        if now is not None:
            yield from _ticks(engine, now, r.ts, step)
        now = r.ts if now is None or r.ts > now else now
        for a in engine.feed(r, now):
            yield a.to_json()
        for a in engine.tick(now):
            yield a.to_json()
    if until is not None and now is not None and until > now:
        yield from _ticks(engine, now, until, step)
        for a in engine.tick(until):
            yield a.to_json()


def _ticks(engine: Engine, start: datetime, end: datetime,
           step: timedelta) -> Iterator[dict[str, Any]]:
    # ticks fall on whole multiples of ``step`` since the epoch, so that a replay resumed
    # from a snapshot ticks at the same instants as an uninterrupted one
    n = start.timestamp() // step.total_seconds() + 1
    t = datetime.fromtimestamp(n * step.total_seconds(), start.tzinfo)
    while t < end:
        for a in engine.tick(t):
            yield a.to_json()
        t += step
