"""Resilience: the one backoff, the one circuit breaker and the one rate limiter.

Part of the kernel (:mod:`gateway.kernel`): imports nothing else of the project. Every retry
loop, reconnect loop and limit of the project uses these (docs/architecture.md, "Layers"):

- :class:`Backoff` — capped exponential backoff, ``base_s * 2**attempt`` up to ``cap_s``, with
  one of three jitters: ``full`` (uniform in ``[0, d]``: reconnects and uplink retries, so that
  many clients do not come back in step), ``equal`` (uniform in ``[d/2, d]``: a quarantined
  Modbus device's probes, never much sooner than planned) or ``none`` (exactly ``d``: the
  store-retry loops of the pipeline and the forwarder, the notification retries).
  ``delay(n)`` is a pure function of the attempt number; ``delays()`` is the endless iterator
  the reconnect loops take the next sleep from (a fresh one after a success).
- :class:`CircuitBreaker` — closed / open / half-open with one trial call at a time.
- :class:`RateLimit` — a sliding window per key: at most ``limit`` events in any
  ``window_s``; refusals counted per key. :class:`RateLimitedLog` is a log that says a
  repeated problem once per key and interval (``RateLimit(1, interval_s)``) with how many
  were suppressed.

None of them locks: each is used from one thread (the event loop), or under its owner's lock.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

__all__ = ["Backoff", "BreakerState", "CircuitBreaker", "Jitter", "RateLimit", "RateLimitedLog"]

log = logging.getLogger(__name__)

Jitter = Literal["full", "equal", "none"]

#: ``delays()`` stops doubling here: ``base_s * 2**30`` is past any cap.
_MAX_ITER_ATTEMPT = 30


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff.

    ``delay(n)`` for the n-th retry (0-based) with nominal ``d = min(cap_s, base_s * 2**n)``
    seconds is uniform in ``[0, d]`` (``jitter="full"``, the default), uniform in
    ``[d/2, d]`` (``"equal"``) or ``d`` (``"none"``), then raised to ``at_least`` (a
    server's Retry-After) but never above ``cap_s``. A pure function of the attempt number,
    so the outbox can persist the attempt count and compute the next due time after a
    restart. (tenacity's ``wait_random_exponential`` is the same curve but wants a live
    ``RetryCallState``; this needs none.)
    """

    base_s: float = 1.0
    cap_s: float = 300.0
    jitter: Jitter = "full"
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.cap_s:
            raise ValueError(f"need 0 < base_s <= cap_s, got {self.base_s}, {self.cap_s}")
        if self.jitter not in ("full", "equal", "none"):
            raise ValueError(f"jitter must be full, equal or none, got {self.jitter!r}")

    def delay(self, attempt: int, *, at_least: float = 0.0) -> float:
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(attempt, 64))
        if self.jitter == "full":
            d = self.rng.uniform(0.0, ceiling)
        elif self.jitter == "equal":
            d = self.rng.uniform(ceiling / 2, ceiling)
        else:
            d = ceiling
        return min(self.cap_s, max(at_least, d))

    def delays(self) -> Iterator[float]:
        """An endless iterator of ``delay(0)``, ``delay(1)``, ...: take the next sleep with
        ``next()``; start a fresh one after a success."""
        attempt = 0
        while True:
            yield self.delay(attempt)
            attempt = min(attempt + 1, _MAX_ITER_ATTEMPT)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Stops calling a failing peer for a while, then lets one trial call through.

    closed: every call allowed; ``failure_threshold`` consecutive failures -> open.
    open: no call allowed until ``reset_timeout_s`` (of ``clock``, default monotonic) has
    passed -> half-open. half-open: one trial call at a time; success -> closed, failure ->
    open again. A trial that never reports (its task was cancelled) frees its slot after
    ``reset_timeout_s``. Transitions are logged once each, naming the breaker (``name``).
    Not thread-safe; one event loop.
    """

    def __init__(self, failure_threshold: int = 5, reset_timeout_s: float = 30.0, *,
                 clock: Callable[[], float] = time.monotonic, name: str = "case-system") -> None:
        if failure_threshold < 1 or reset_timeout_s <= 0:
            raise ValueError("failure_threshold >= 1 and reset_timeout_s > 0 required")
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._name = name
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_at: float | None = None

    def __repr__(self) -> str:
        return f"CircuitBreaker({self._name!r}, state={self.state.value}, failures={self._failures})"

    @property
    def state(self) -> BreakerState:
        if (self._state is BreakerState.OPEN
                and self._clock() - self._opened_at >= self.reset_timeout_s):
            self._set(BreakerState.HALF_OPEN)
        return self._state

    def retry_in(self) -> float:
        """Seconds until a call may be allowed again (0 when one may be now)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.reset_timeout_s - self._clock())

    def allow(self) -> bool:
        """Whether a call may go out now; in half-open this takes the one trial slot."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        now = self._clock()
        if self._trial_at is not None and now - self._trial_at < self.reset_timeout_s:
            return False
        self._trial_at = now
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._trial_at = None
        self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._failures += 1
        self._trial_at = None
        if self._state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            self._set(BreakerState.OPEN)

    def _set(self, new: BreakerState) -> None:
        if new is not self._state:  # health is state: log the transition once
            level = logging.WARNING if new is BreakerState.OPEN else logging.INFO
            log.log(level, "circuit %s: %s -> %s", self._name, self._state.value, new.value)
            self._state = new


class RateLimit:
    """Sliding window per key: at most ``limit`` events in any ``window_s`` seconds of
    ``clock`` (default monotonic).

    ``allow(key)`` takes a slot when one is free and says whether it did; a refusal is
    counted in ``held[key]`` (``take_held`` reads and resets it: "N more were held back").
    ``count``/``record``/``forget``/``reset`` serve a limit on events that are known only
    afterwards (failed logins: counted while checked, taken back when the password was right).
    Memory is bounded: past ``max_keys`` keys, those with nothing in their window are
    dropped, and if that is not enough (a flood of distinct keys) all of them.
    """

    def __init__(self, limit: int, window_s: float, *,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000) -> None:
        if limit < 1 or not window_s > 0:
            raise ValueError(f"need limit >= 1 and window_s > 0, got {limit}, {window_s}")
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._events: dict[Hashable, deque[float]] = {}
        #: refusals per key since its last ``take_held``
        self.held: dict[Hashable, int] = {}

    def now(self) -> float:
        return self._clock()

    def _window(self, key: Hashable, now: float) -> deque[float]:
        q = self._events.get(key)
        if q is None:
            q = self._events[key] = deque()
            if len(self._events) > self.max_keys:
                self._shrink(now)
                q = self._events.setdefault(key, deque())
        while q and now - q[0] >= self.window_s:
            q.popleft()
        return q

    def allow(self, key: Hashable) -> bool:
        """Take a slot for ``key`` if fewer than ``limit`` were taken in the window."""
        now = self._clock()
        q = self._window(key, now)
        if len(q) >= self.limit:
            self.held[key] = self.held.get(key, 0) + 1
            return False
        q.append(now)
        return True

    def take_held(self, key: Hashable) -> int:
        """How many ``allow(key)`` refused since the last call (and reset that count)."""
        return self.held.pop(key, 0)

    def count(self, key: Hashable, now: float | None = None) -> int:
        """Events of ``key`` in the window ending ``now``."""
        return len(self._window(key, self._clock() if now is None else now))

    def record(self, key: Hashable, at: float) -> None:
        """Count an event of ``key`` at ``at`` (a time of ``clock``), limit or not."""
        self._window(key, at).append(at)

    def forget(self, key: Hashable, at: float) -> None:
        """Take back the event of ``key`` recorded at ``at``, if it is still counted."""
        q = self._events.get(key)
        if q and at in q:
            q.remove(at)

    def reset(self, key: Hashable) -> None:
        """Forget ``key`` altogether."""
        self._events.pop(key, None)
        self.held.pop(key, None)

    def _shrink(self, now: float) -> None:
        self._events = {k: q for k, q in self._events.items()
                        if q and now - q[-1] < self.window_s}
        if len(self._events) > self.max_keys:
            self._events.clear()
        self.held = {k: n for k, n in self.held.items() if k in self._events}


class RateLimitedLog:
    """Log a repeated problem once per key per interval, with how many were suppressed.

    Not locked: each driver keeps its own and uses it on the event loop's thread only."""

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0, *,
                 clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.interval_s = interval_s
        self._limit = RateLimit(1, interval_s, clock=clock)

    def warning(self, key: Hashable, msg: str, *args: object) -> None:
        self._log(logging.WARNING, key, msg, *args)

    def error(self, key: Hashable, msg: str, *args: object) -> None:
        self._log(logging.ERROR, key, msg, *args)

    def _log(self, level: int, key: Hashable, msg: str, *args: object) -> None:
        if self._limit.allow(key):
            suppressed = self._limit.take_held(key)
            if suppressed:
                msg += f" (+{suppressed} similar suppressed)"
            self.logger.log(level, msg, *args)
