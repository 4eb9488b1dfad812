"""The engine's notion of time: a step-proof timer clock and a queue of due timers.

Policy (docs/rules.md, "Time and ordering"): the caller passes ``now`` (aware UTC) to every
``feed``/``tick``. Timers do not run on the wall clock directly but on *engine time* ``t``
(float seconds), which advances by the wall-clock difference between consecutive calls when
that difference is between 0 and ``max_step``. A forward jump larger than ``max_step`` is a
clock step (NTP correcting a board without RTC, an operator setting the date): engine time does
not advance, so no timer fires because of it. A backward jump never moves engine time back.
Small backward jitter (up to ``max_step``) is absorbed without moving the wall reference.
Right after a restore from a snapshot, the first gap counts in full (downtime is real time:
an inactive resident must not get extra hours because the gateway restarted).
"""

from __future__ import annotations

import heapq
import itertools
from datetime import datetime, timezone
from typing import Any, Protocol

__all__ = ["EngineClock", "TimerOwner", "TimerQueue"]


class EngineClock:
    """Maps wall time (epoch seconds from the caller) to monotonic engine time ``t``."""

    __slots__ = ("wall", "t", "max_step", "steps", "resumed")

    def __init__(self, max_step: float) -> None:
        self.wall = float("-inf")        # last wall time seen (epoch seconds); -inf: none
        self.t = 0.0                     # engine time at ``wall``
        self.max_step = max_step
        self.steps = 0                   # clock steps absorbed
        self.resumed = False

    def advance(self, wall: float) -> float:
        """Observe wall time ``wall``; return engine time now."""
        last = self.wall
        if last == float("-inf"):
            self.wall = wall
            self.t = wall   # engine time starts equal to wall time: easy to read in snapshots
            return wall
        d = wall - last
        if 0.0 <= d <= self.max_step:
            self.t += d
            self.wall = wall
        elif d > 0.0:
            if self.resumed:
                self.t += d
            else:
                self.steps += 1
            self.wall = wall
        elif d < -self.max_step:
            self.steps += 1
            self.wall = wall
        self.resumed = False
        return self.t

    def event_time(self, ts: float) -> float:
        """Engine time of a reading stamped ``ts`` (wall epoch), never after engine now."""
        age = self.wall - ts  
        return self.t - age if age > 0.0 else self.t

    def to_wall(self, t: float) -> float:
        """Wall epoch seconds corresponding to engine time ``t`` under the current offset."""
        return t + (self.wall - self.t)  

    def wall_dt(self, t: float) -> datetime:
        return datetime.fromtimestamp(self.to_wall(t), timezone.utc)

    def state(self) -> dict[str, Any]:
        return {"wall": None if self.wall == float("-inf") else self.wall, "t": self.t,
                "steps": self.steps}

    def load(self, d: dict[str, Any]) -> None:
        wall = d["wall"]
        self.wall = float("-inf") if wall is None else float(wall)
        self.t, self.steps = float(d["t"]), int(d.get("steps", 0))
        self.resumed = wall is not None


class TimerOwner(Protocol):
    #: stable rank of the owner, unique within an engine (a rule's position in the config;
    #: the alarm book: -1): with the key it orders timers due at the same instant
    order: int

    def on_timer(self, key: str, due: float, t: float) -> None: ...


class TimerQueue:
    """Min-heap of (due, key) per owner, with lazy cancellation.

    An owner keeps its own ``{key: due}``; a popped timer whose due no longer equals the
    owner's record is stale and dropped. So cancel = forget the key; reschedule = schedule.
    Timers due at the same instant run in the order of (owner's ``order``, key): a function
    of the state alone, not of the order they were scheduled in, so that an engine restored
    from a snapshot (which re-schedules its timers rule by rule) fires them in the same order
    as the engine that never stopped.

    Entries hold the owner's rank, not the owner: a tuple of numbers and a string, which the
    garbage collector stops tracking at its first look (a busy site keeps thousands of
    cancelled-but-not-yet-due entries; they must not be scanned again and again).
    """

    __slots__ = ("_heap", "_seq", "_owners")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, int]] = []
        self._seq = itertools.count()   # only orders duplicates of one (owner, key, due)
        self._owners: dict[int, TimerOwner] = {}

    def register(self, owner: TimerOwner) -> None:
        """Make ``owner`` known by its rank (the engine registers every owner when it is
        built, so that a shared rank is a build error, not one in the middle of a feed)."""
        if self._owners.setdefault(owner.order, owner) is not owner:
            raise ValueError(f"two timer owners share the rank {owner.order}")

    def schedule(self, owner: TimerOwner, key: str, due: float) -> None:
        rank = owner.order
        if self._owners.get(rank) is not owner:
            self.register(owner)
        heapq.heappush(self._heap, (due, rank, key, next(self._seq)))

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def run_due(self, t: float) -> None:
        """Call ``owner.on_timer(key, due, t)`` for every timer due at or before ``t``."""
        heap, owners = self._heap, self._owners
        while heap and heap[0][0] <= t:
            due, rank, key, _ = heapq.heappop(heap)
            owners[rank].on_timer(key, due, t)

    def __len__(self) -> int:
        return len(self._heap)
