"""Local time of the site for quiet hours and learned baselines (epoch seconds in/out).

Contract: all functions take and return POSIX epoch seconds (UTC) and a ``ZoneInfo``; local
wall times are resolved with zoneinfo, so DST zones are handled (a local time that does not
exist on a DST day resolves forward, per ``fold=0``).
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from rules.spec import TimeWindow

__all__ = ["active_deadline", "hour_of_week", "in_window", "local", "next_local_time",
           "window_end_after"]


def local(epoch: float, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc).astimezone(zone)


def hour_of_week(epoch: float, zone: ZoneInfo) -> int:
    """0 = Monday 00:00–01:00 local, ..., 167 = Sunday 23:00–24:00."""
    d = local(epoch, zone)
    return d.weekday() * 24 + d.hour


def in_window(epoch: float, window: TimeWindow, zone: ZoneInfo) -> bool:
    d = local(epoch, zone)
    return window.contains(d.hour * 60 + d.minute)


def next_local_time(epoch: float, minute_of_day: int, zone: ZoneInfo) -> float:
    """First epoch strictly after ``epoch`` whose local time is ``minute_of_day``."""
    d = local(epoch, zone)
    hm = time(minute_of_day // 60, minute_of_day % 60)
    for days in range(0, 3):
        cand = datetime.combine(d.date() + timedelta(days=days), hm, zone).timestamp()
        if cand > epoch:
            return cand
    raise AssertionError("unreachable: a local time recurs within three days")


def window_end_after(epoch: float, window: TimeWindow, zone: ZoneInfo) -> float:
    """``epoch`` itself when outside ``window``, else the end of the window it is in."""
    if not in_window(epoch, window, zone):
        return epoch
    return next_local_time(epoch, window.end, zone)


def active_deadline(start: float, seconds: float, quiet: TimeWindow | None,
                    zone: ZoneInfo) -> float:
    """Epoch at which ``seconds`` of time *outside* ``quiet`` have passed since ``start``."""
    if quiet is None:
        return start + seconds
    x, left = start, seconds
    for _ in range(4 * (int(seconds // 86400) + 2)):
        x = window_end_after(x, quiet, zone)
        boundary = next_local_time(x, quiet.start, zone)
        if boundary - x >= left:
            return x + left
        left -= boundary - x
        x = boundary
    raise AssertionError("unreachable: each day has time outside the quiet hours")
