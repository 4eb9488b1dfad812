"""Learned rhythm of each household: how long after an active hour activity usually resumes.

Contract:
- Slots are local hours of the day on weekdays (0-23) and at weekends (24-47).
- A *sample* for slot ``s`` is taken when a gap that began at home in an hour of slot ``s``
  ends after that hour: ``y`` = time from the end of that hour to the activity that ended the
  gap (so the long gap of the night is measured to the wake-up, whatever the bedtime was).
  Only ended gaps are learned: the gap being judged never moves its own deadline.
- ``late[i, s]`` (uint8, units of :data:`UNIT`) is the largest sample of the current window
  of :data:`WINDOW` (14 days, aligned on the epoch), ``late_before`` that of the previous
  one; the household's usual limit is the larger of the two: the latest it resumed over the
  last two to four weeks. So a changed habit is learned from its first occurrence and one
  unusual night is forgotten after four weeks at most. ``count[i, s]`` counts samples
  (saturating at 255; halved when a window ends).
- :meth:`usual_by` answers "by when is this household usually active again after ``since``":
  the latest of: the end of the hour of ``since`` plus ``late`` of its slot; the same for
  each of the twelve hours before (a toilet visit at 02:10 is judged by the usual wake-up
  after the evening; a gap after a usual nap hour by the end of the nap); and for the next
  two hours if usually followed by sleep (:data:`SLEEP`: an early night). A slot with
  fewer than :data:`RICH` samples also takes the limit of the same hour of the other kind
  of day (weekends are sparse); one with fewer than ``min_samples`` is left out. None if nothing is known.
- :meth:`roll` counts hours observed per household; :meth:`learned` is true after
  ``min_weeks`` weeks.
About 100 bytes per household.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np

__all__ = ["GapBaseline", "HOURS_PER_WEEK", "SLOTS", "UNIT", "slot_of"]

HOURS_PER_WEEK = 168
SLOTS = 48
UNIT = 300.0          # seconds per step of ``late`` (255 steps = 21 h 15 min)
WINDOW = 14 * 86400.0  # the maximum is kept per window of this length, over two windows
LOOKBACK = 12         # hours before that of ``since`` whose usual limits also hold
RICH = 8              # samples of a slot that make the other kind of day's limit irrelevant
AHEAD = 2             # hours after that of ``since`` that count if usually followed by sleep
SLEEP = 3 * 3600.0    # a limit this long after an hour: the household usually sleeps then


def slot_of(wall: float, zone: ZoneInfo) -> tuple[int, datetime]:
    """(slot, local start of the hour) of the epoch ``wall``."""
    d = datetime.fromtimestamp(wall, timezone.utc).astimezone(zone)
    start = d.replace(minute=0, second=0, microsecond=0)
    return d.hour + (24 if d.weekday() >= 5 else 0), start


class GapBaseline:
    def __init__(self, n: int, zone: ZoneInfo) -> None:
        self.zone = zone
        self.late = np.zeros((n, SLOTS), dtype=np.uint8)
        self.late_before = np.zeros((n, SLOTS), dtype=np.uint8)
        self.window = -1                             # index of the current window
        self.count = np.zeros((n, SLOTS), dtype=np.uint8)
        self.hours = np.zeros(n, dtype=np.uint16)    # hours observed (saturates)
        self.cur_start = float("nan")                # wall epoch: start of the current hour

    @property
    def nbytes(self) -> int:
        return (self.late.nbytes + self.late_before.nbytes + self.count.nbytes
                + self.hours.nbytes)

    def roll(self, wall: float, watched: np.ndarray) -> None:
        """Count an hour for the ``watched`` households when the local hour changes (an
        hour is counted only if the previous one was seen to start: no credit for
        downtime or clock steps)."""
        if self.cur_start <= wall < self.cur_start + 3600.0:
            return
        window = int(wall // WINDOW)
        if window != self.window:
            if self.window >= 0:
                self.late_before[:] = self.late if window == self.window + 1 else 0
                self.late[:] = 0
                self.count >>= 1
            self.window = window
        start = slot_of(wall, self.zone)[1].timestamp()
        if 0 < start - self.cur_start <= 3600.0 + 1e-6:
            h = self.hours
            h[watched & (h < 65535)] += 1
        self.cur_start = start

    def learned(self, i: int, min_weeks: int) -> bool:
        return int(self.hours[i]) >= min_weeks * HOURS_PER_WEEK

    def learn(self, i: int, last: float, now: float) -> None:
        """The gap of household ``i`` from wall ``last`` (at home) ended at wall ``now``."""
        slot, start = slot_of(last, self.zone)
        end = (start + timedelta(hours=1)).timestamp()
        if now <= end:
            return
        y = min(255, math.ceil((now - end) / UNIT))
        if y > self.late[i, slot]:
            self.late[i, slot] = y
        if self.count[i, slot] < 255:
            self.count[i, slot] += 1

    def usual_by(self, i: int, since: float, min_samples: int) -> tuple[float, bool] | None:
        """(wall epoch by which household ``i`` is usually active again after ``since``,
        whether that was learned on weekend days); None when nothing is known."""
        slot, start = slot_of(since, self.zone)
        late = np.maximum(self.late[i], self.late_before[i])
        count = self.count[i]
        best: tuple[float, bool] | None = None
        for back in range(-AHEAD, LOOKBACK + 1):
            hour = start - timedelta(hours=back)
            s = hour.hour + (24 if hour.weekday() >= 5 else 0)
            o = (s + 24) % SLOTS
            if count[s] >= RICH or count[o] < min_samples:
                if count[s] < min_samples:
                    continue
                lim = int(late[s])
            else:       # few samples of this kind of day: the other kind's limit too
                lim = max(int(late[o]), int(late[s]) if count[s] >= min_samples else 0)
                s = s if count[s] >= min_samples and late[s] >= late[o] else o
            if back < 0 and lim * UNIT < SLEEP:
                continue        # later hours count only when usually followed by sleep
            by = (hour + timedelta(hours=1)).timestamp() + lim * UNIT
            if by > since and (best is None or by > best[0]):
                best = (by, s >= 24)
        return best

    def arrays(self) -> dict[str, np.ndarray]:
        return {"late": self.late, "late_before": self.late_before, "count": self.count,
                "hours": self.hours}
