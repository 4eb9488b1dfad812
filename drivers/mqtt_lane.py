"""Which connection feeds an alarm message: the MQTT intake's alarm lane and its markers.

The intake (drivers/mqtt.py) reads the device broker on two connections. The **main** one is
a persistent session (QoS 1, acknowledged after the commit) subscribed to everything: the one
source of truth. The **alarm lane** is a clean session at QoS 0 on the exact topics of the
devices that give alarms; under load an SOS waits in the broker's queue for the main session
behind every telemetry message published before it (seconds in a burst), not on the lane.

Which copy of an alarm message is fed to the rules is decided with **markers**: while the lane
is up, it publishes ``<nonce>:<n>`` (QoS 1, n = 0, 1, 2, ... every :data:`MARK_S`; a nonce per
lane connection) to a topic both connections read. The broker puts a session's messages in
one queue, so marker n splits what each connection reads into the same *intervals*: the two
copies of a message are read in the same interval. Rules:

- *Ahead*: an alarm-class message the lane reads is fed at once and remembered by
  (interval, topic, bytes) — once the main connection has read marker 0 of the lane's
  current connection (everything published before it), and while no older copy of that
  topic was *left* to the main connection. Otherwise the lane leaves it to the main
  connection (remembered as left): fed early, it would reach the rules before older
  messages of the same device still queued for the main session (a detector's earlier
  ``smoke: false`` would clear the new fire). So after a start, or a lane back while the
  main drains a backlog, the lane feeds nothing until the main connection has caught up.
- The main connection, for an alarm-class message of a lane topic in an armed interval:
  the same (interval, topic, bytes) ahead is its twin: acknowledged once the twin is
  committed, not fed again; one left is fed by the main connection. Otherwise it is
  **held** until the lane reads that copy (then
  the held one is fed and the lane's dropped) or the lane has passed the interval (it missed
  it: fed then), for :data:`HOLD_S` at most. Holding keeps a device's alarms in the order
  published when the lane is the slower one.
- Anything else — not armed, not a lane topic, the lane down or gone to a new connection —
  is read by the main connection as it always was.
- When the main connection reads marker n, copies the lane read before it are stale (their
  twins were not delivered to the main session: a full queue dropped them) and forgotten;
  so are copies older than :data:`FORGET_S`.

So a message the main session gets is fed, or paired with a committed copy of the same bytes
read in the same interval. Two identical presses of one device within one interval, one of
them dropped for the main session by the broker, may pair with each other: the count stays
right. Markers rely on the broker keeping one queue per session in order (Mosquitto does); a
broker that reorders makes copies miss each other: read twice, never lost. A reconnect of
the main connection (redelivery) can read a held or paired message twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["FORGET_S", "HOLD_S", "MARK_S", "Copy", "Held", "LanePairing", "parse_marker"]

#: seconds between two markers of the alarm lane
MARK_S = 0.25
#: seconds a main copy waits for the lane at most (a lane that stops marking without
#: disconnecting must not hold alarms back)
HOLD_S = 2.0
#: copies remembered per (interval, topic) at most
KEEP = 64
#: seconds a copy the lane read waits for its twin on the main connection at most
FORGET_S = 600.0

Interval = tuple[str, int]


@dataclass(slots=True, eq=False)
class Copy:
    """An alarm message fed from the lane, waiting for its twin on the main connection."""

    payload: bytes
    committed: bool = False
    then: list[Callable[[], None]] = field(default_factory=list)

    def commit_done(self) -> None:
        """The pipeline saved this copy's readings (its inbox commit)."""
        self.committed = True
        then, self.then = self.then, []
        for ack in then:
            ack()

    def after_commit(self, ack: Callable[[], None]) -> None:
        if self.committed:
            ack()
        else:
            self.then.append(ack)


@dataclass(slots=True, eq=False)
class Held:
    """An alarm message the main connection read before the lane: fed by ``feed`` once the
    lane has read its copy or passed its interval."""

    interval: Interval
    topic: str
    payload: bytes
    feed: Callable[[], None]
    at: float
    done: bool = False


def parse_marker(payload: bytes) -> Interval | None:
    """``<nonce>:<n>`` or None."""
    nonce, sep, n = payload.decode("ascii", "replace").rpartition(":")
    if not sep or not nonce or not n.isdigit():
        return None
    return nonce, int(n)


class LanePairing:
    """The rules of the module docstring. Pure bookkeeping: the intake does the I/O."""

    def __init__(self, keep: int = KEEP, forget_s: float = FORGET_S) -> None:
        self.keep, self.forget_s = keep, forget_s
        #: the lane's current connection (None: down) and the last marker it read (-1: none)
        self.nonce: str | None = None
        self.lane_mark = -1
        #: the last marker the main connection read (None: none since its connect)
        self.main_mark: Interval | None = None
        #: copies the lane fed, and copies it read but left to the main connection (not
        #: armed, or an older copy of that topic was left so), per (interval, topic)
        self.ahead: dict[tuple[str, int, str], deque[Copy]] = {}
        self.left: dict[tuple[str, int, str], deque[bytes]] = {}
        self._left_per_topic: dict[str, int] = {}
        #: when each (interval, topic) was first seen (to forget), in that order
        self._seen: dict[tuple[str, int, str], float] = {}
        self.held: deque[Held] = deque()

    @property
    def armed(self) -> bool:
        """The lane feeds what it reads (of topics with nothing left to the main)."""
        main = self.main_mark
        return (self.nonce is not None and self.lane_mark >= 0 and main is not None
                and main[0] == self.nonce)

    # -- the lane ---------------------------------------------------------------------------
    def lane_up(self, nonce: str) -> None:
        self.nonce, self.lane_mark = nonce, -1

    def lane_down(self) -> list[Held]:
        """The lane is gone: what the main connection holds is fed by it now (returned).
        What the lane read still pairs with its twins (same interval)."""
        self.nonce, self.lane_mark = None, -1
        return self._release(lambda h: True)

    def lane_marker(self, mark: Interval, now: float) -> list[Held]:
        """The lane read a marker: held copies of the intervals it passed were missed by it
        (returned, to be fed by the main connection)."""
        self._forget(now)
        if mark[0] != self.nonce:
            return []
        self.lane_mark = mark[1]
        return self._release(lambda h: h.interval[0] != mark[0] or h.interval[1] < mark[1])

    def from_lane(self, topic: str, payload: bytes, now: float) -> Copy | Held | None:
        """The lane read an alarm message. A :class:`Copy` to feed (it is ahead); the main
        connection's :class:`Held` twin, to feed now instead; None: not to feed (the main
        connection feeds it)."""
        if self.nonce is None or self.lane_mark < 0:
            return None         # before the lane's first marker: the main has it earlier
        key = (self.nonce, self.lane_mark, topic)
        for h in self.held:
            if h.interval == key[:2] and h.topic == topic and h.payload == payload:
                self.held.remove(h)
                h.done = True
                return h
        self._seen.setdefault(key, now)
        main = self.main_mark
        if main is None or main[0] != self.nonce or self._left_per_topic.get(topic):
            # the main session may still have older messages of this device to read: fed
            # now, this one would overtake them
            left = self.left.setdefault(key, deque())
            if len(left) < self.keep:
                left.append(payload)
                self._left_per_topic[topic] = self._left_per_topic.get(topic, 0) + 1
            return None
        copy = Copy(payload)
        ahead = self.ahead.setdefault(key, deque())
        ahead.append(copy)
        if len(ahead) > self.keep:
            ahead.popleft()     # its twin, if it comes, is read again
        return copy

    # -- the main connection ----------------------------------------------------------------
    def main_reset(self) -> None:
        """A new main connection: redelivered messages come before any marker."""
        self.main_mark = None

    def main_marker(self, mark: Interval) -> None:
        """The main connection read a marker: what the lane read before it and the main
        did not pair was not delivered to the main session (forgotten)."""
        self.main_mark = mark
        nonce, n = mark
        for key in [k for k in self._seen if k[0] != nonce or k[1] < n]:
            self._drop(key)

    def from_main(self, topic: str, payload: bytes) -> Copy | Interval | None:
        """The main connection read an alarm message of a lane topic: its twin ahead (only
        acknowledge it once that is committed), an interval (hold it: :meth:`hold`), or
        None (feed it)."""
        mark = self.main_mark
        if mark is None:
            return None
        key = (*mark, topic)
        ahead = self.ahead.get(key)
        if ahead:
            for copy in ahead:
                if copy.payload == payload:
                    ahead.remove(copy)
                    return copy
        left = self.left.get(key)
        if left and payload in left:
            left.remove(payload)
            self._left_per_topic[topic] -= 1
            return None
        if self.nonce != mark[0] or self.lane_mark > mark[1]:
            return None         # the lane cannot have it: gone, or passed it without
        return mark             # the lane will read it, or pass its interval

    def hold(self, interval: Interval, topic: str, payload: bytes, feed: Callable[[], None],
             now: float) -> Held:
        held = Held(interval, topic, payload, feed, now)
        self.held.append(held)
        return held

    def expire(self, held: Held) -> bool:
        """``held`` waited :data:`HOLD_S`: True if it is still held (then fed now)."""
        if held.done:
            return False
        self.held.remove(held)
        held.done = True
        return True

    def _release(self, which: Callable[[Held], bool]) -> list[Held]:
        out = [h for h in self.held if which(h)]
        for h in out:
            self.held.remove(h)
            h.done = True
        return out

    def _forget(self, now: float) -> None:
        """What waited :data:`FORGET_S` for the main connection (it is down, or far behind)."""
        for key, at in list(self._seen.items()):
            if at > now - self.forget_s:
                break
            self._drop(key)

    def _drop(self, key: tuple[str, int, str]) -> None:
        self._seen.pop(key, None)
        self.ahead.pop(key, None)
        left = self.left.pop(key, None)
        if left:
            n = self._left_per_topic[key[2]] - len(left)
            if n:
                self._left_per_topic[key[2]] = n
            else:
                del self._left_per_topic[key[2]]
