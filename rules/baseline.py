"""Learned hour-of-week activity of each household (numpy, 196 bytes per household).

Contract:
- ``p[i, h]`` (uint8, 0..252) is the learned chance that household ``i`` is active during
  local hour-of-week ``h`` (0 = Monday 00:00-01:00). It is a running mean over the first
  weeks, then an exponential average over about the last four weeks.
- :meth:`roll` is called with the wall time; when the local hour changes it folds the hour
  that just ended into ``p`` (active households move towards 252, the others towards 0). If
  more than one hour passed unobserved (downtime, clock step) nothing is learned for them.
- :meth:`usual_by` answers "by when is this household usually active again after ``since``":
  the end of the first later hour-of-week slot with ``p >= 50 %``, or None if there is none.
- :meth:`learned` is true once a household has been observed for ``min_weeks`` weeks.
"""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import numpy as np

from rules.localtime import local

__all__ = ["HourOfWeekBaseline", "HOURS_PER_WEEK", "USUAL"]

HOURS_PER_WEEK = 168
FULL = 252          # p value of "always active"
USUAL = FULL // 2   # p at or above this: usually active in that hour


class HourOfWeekBaseline:
    def __init__(self, n: int) -> None:
        self.p = np.zeros((n, HOURS_PER_WEEK), dtype=np.uint8)
        self.active = np.zeros(n, dtype=np.uint8)    # active during the current hour
        self.hours = np.zeros(n, dtype=np.uint16)    # hours observed (saturates)
        self.cur_how = -1
        self.cur_start = float("nan")                # wall epoch: start of the current hour

    @property
    def nbytes(self) -> int:
        return self.p.nbytes + self.active.nbytes + self.hours.nbytes

    def roll(self, wall: float, zone: ZoneInfo) -> None:
        d = local(wall, zone)
        how = d.weekday() * 24 + d.hour
        if how == self.cur_how:
            return
        start = d.replace(minute=0, second=0, microsecond=0).timestamp()
        if self.cur_how >= 0 and 0 < start - self.cur_start <= 3600.0 + 1e-6:
            self._fold(self.cur_how)
        self.active[:] = 0
        self.cur_how, self.cur_start = how, start

    def _fold(self, slot: int) -> None:
        weeks = (self.hours // HOURS_PER_WEEK).astype(np.float32)
        w = np.maximum(1.0 / (1.0 + weeks), 0.25)
        col = self.p[:, slot].astype(np.float32)
        col += (self.active.astype(np.float32) * FULL - col) * w
        self.p[:, slot] = np.rint(col).astype(np.uint8)
        self.hours[self.hours < 65535] += 1

    def learned(self, i: int, min_weeks: int) -> bool:
        return int(self.hours[i]) >= min_weeks * HOURS_PER_WEEK

    def usual_by(self, i: int, since: float, zone: ZoneInfo) -> tuple[float, int] | None:
        """(wall epoch, hour-of-week) by which household ``i`` is usually active after
        ``since``; None when no later hour of the week is usually active."""
        d = local(since, zone)
        h0 = d.weekday() * 24 + d.hour
        later = np.roll(self.p[i], -(h0 + 1))
        hits = np.flatnonzero(later >= USUAL)
        if not hits.size:
            return None
        k = int(hits[0]) + 1                       # hours after the slot of ``since``
        slot_end = d.replace(minute=0, second=0, microsecond=0) + timedelta(hours=k + 1)
        return slot_end.timestamp(), (h0 + k) % HOURS_PER_WEEK

    def arrays(self) -> dict[str, np.ndarray]:
        return {"p": self.p, "active": self.active, "hours": self.hours}
