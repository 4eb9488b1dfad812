"""Learned rhythm of each household: how long after an active hour activity usually resumes.

Contract:
- Slots are local hours of the day on weekdays (0-23) and at weekends (24-47); the slot of
  an hour stands for the moment that hour ends (its *boundary*: slot 6 is 07:00).
- A *sample* for slot ``s`` is taken at every boundary a gap at home passes: when a gap
  that began at home before the end of an hour of slot ``s`` ends after it, ``y`` = time
  from that boundary to the activity that ended the gap ("how long after 03:00 until this
  household was active again", for every night the gap went through 03:00). So each slot
  gets a sample on every day the household was home and quiet at that boundary, including
  the hours of the night a resident who gets up for the toilet rarely starts a gap in.
  Only ended gaps are learned: the gap being judged never moves its own deadline.
- ``late[i, s]`` (uint8, units of :data:`UNIT`) is the largest sample of the current window
  of :data:`WINDOW` (14 days, aligned on the epoch), ``late_before`` that of the previous
  one; the household's usual limit is the larger of the two: the latest it resumed over the
  last two to four weeks. So a changed habit is learned from its first occurrence and one
  unusual night is forgotten after four weeks at most. ``count[i, s]`` counts samples
  (saturating at 255; halved when a window ends).
- :meth:`usual_by` answers "by when is this household usually active again after ``since``":
  a chain over the boundaries after ``since``: the first boundary plus ``late`` of its slot
  or of the hour before or after it if longer (unless that one is the night's: at least
  :data:`SLEEP`) — one day's maximum of an hour is a thin sample, and a spell of quiet
  that fell at 13:00 one day may fall at 12:00 the next;
  then every later boundary that comes before the time found so far (the household is
  usually still quiet there) adds its own boundary plus ``late``, and the latest holds. A
  toilet visit at 02:10 is so judged by the waits after 03:00, 04:00 ... up to the usual
  wake-up; a gap before the usual nap by the waits through the nap; the chain ends at the
  first boundary after which the household is usually active within the hour, except that
  the next :data:`AHEAD` boundaries still count if the wait after them is usually the night
  (at least :data:`SLEEP`: an early night is judged by the usual waking). A slot with
  fewer than :data:`RICH` samples also takes the limit of the same hour of the other kind
  of day (weekends are sparse); one with fewer than ``min_samples`` is left out. None if
  the first boundary's slot is unknown.
- :meth:`roll` counts hours observed per household; :meth:`learned` is true after
  ``min_weeks`` weeks.
About 100 bytes per household.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import numpy as np

__all__ = ["GapBaseline", "HOURS_PER_WEEK", "SLOTS", "UNIT", "WINDOW", "slot_of"]

HOURS_PER_WEEK = 168
SLOTS = 48
UNIT = 300.0          # seconds per step of ``late`` (255 steps = 21 h 15 min)
WINDOW = 14 * 86400.0  # the maximum is kept per window of this length, over two windows
RICH = 8              # samples of a slot that make the other kind of day's limit irrelevant
CHAIN = 24            # boundaries a chain of :meth:`GapBaseline.usual_by` looks at, at most
AHEAD = 2             # boundaries past the chain's end that count if usually followed by sleep
SLEEP = 3 * 3600.0    # a wait this long after a boundary: the household usually sleeps then


def slot_of(wall: float, zone: ZoneInfo) -> tuple[int, datetime]:
    """(slot, local start of the hour) of the epoch ``wall``."""
    d = datetime.fromtimestamp(wall, timezone.utc).astimezone(zone)
    start = d.replace(minute=0, second=0, microsecond=0)
    return _slot(start), start


def _slot(d: datetime) -> int:
    """Slot of the local time ``d``: its hour, plus 24 at weekends."""
    return d.hour + (24 if d.weekday() >= 5 else 0)


def _next_hour(start: datetime, zone: ZoneInfo) -> datetime:
    """Local start of the hour after the one starting at ``start`` (across DST changes)."""
    return datetime.fromtimestamp(start.timestamp() + 3600.0, timezone.utc).astimezone(zone)


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
        """The gap of household ``i`` from wall ``last`` (at home) ended at wall ``now``:
        a sample for each boundary it passed (module contract)."""
        start = slot_of(last, self.zone)[1]
        for _ in range(CHAIN):
            end = _next_hour(start, self.zone)
            end_ts = end.timestamp()
            if now <= end_ts:
                return
            slot = _slot(start)
            y = min(255, math.ceil((now - end_ts) / UNIT))
            if y > self.late[i, slot]:
                self.late[i, slot] = y
            if self.count[i, slot] < 255:
                self.count[i, slot] += 1
            start = end

    def _limit(self, late: np.ndarray, count: np.ndarray, s: int,
               min_samples: int) -> tuple[int, int] | None:
        """(limit in units, slot it came from) of slot ``s``; None if too few samples."""
        o = (s + 24) % SLOTS
        if count[s] >= RICH or count[o] < min_samples:
            return (int(late[s]), s) if count[s] >= min_samples else None
        # few samples of this kind of day: the other kind's limit too
        if count[s] >= min_samples and late[s] >= late[o]:
            return int(late[s]), s
        return int(late[o]), o

    def usual_by(self, i: int, since: float, min_samples: int) -> tuple[float, bool] | None:
        """(wall epoch by which household ``i`` is usually active again after ``since``,
        whether that was learned on weekend days); None when nothing is known."""
        start = slot_of(since, self.zone)[1]
        late = np.maximum(self.late[i], self.late_before[i])
        count = self.count[i]
        best: tuple[float, bool] | None = None
        ahead = AHEAD
        for _ in range(CHAIN):
            end = _next_hour(start, self.zone)
            boundary = end.timestamp()
            beyond = best is not None and boundary >= best[0]
            if beyond:
                if ahead == 0:
                    break       # usually active again before this boundary
                ahead -= 1
            s = _slot(start)
            got = self._limit(late, count, s, min_samples)
            if best is None and got is not None:    # the first: as its neighbours' too
                day = s - s % 24
                for nb in (day + (s - 1) % 24, day + (s + 1) % 24):
                    near = self._limit(late, count, nb, min_samples)
                    if near is not None and got[0] < near[0] and near[0] * UNIT < SLEEP:
                        got = (near[0], got[1])
            if got is None:
                if best is None:
                    return None
            elif not beyond or got[0] * UNIT >= SLEEP:  # an early night: judged by the waking
                by = boundary + got[0] * UNIT
                if best is None or by > best[0]:
                    best, ahead = (by, got[1] >= 24), AHEAD
            start = end
        return best

    def arrays(self) -> dict[str, np.ndarray]:
        return {"late": self.late, "late_before": self.late_before, "count": self.count,
                "hours": self.hours}
