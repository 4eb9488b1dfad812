"""gateway.kernel.resilience: the one backoff and the one rate limiter, with the curves the
loops that use them had before they were merged (the circuit breaker: tests/test_case_system.py)."""

from __future__ import annotations

import logging
import random

import pytest

from gateway.kernel.resilience import Backoff, RateLimit, RateLimitedLog
from gateway.store import COMMIT_RETRY


def test_full_jitter_is_uniform_below_the_doubling_ceiling() -> None:
    b = Backoff(base_s=0.5, cap_s=30.0, rng=random.Random(3))
    for attempt in range(12):
        ceiling = min(30.0, 0.5 * 2 ** attempt)
        for _ in range(50):
            assert 0.0 <= b.delay(attempt) <= ceiling


def test_equal_jitter_never_comes_before_half_the_nominal_delay() -> None:
    b = Backoff(base_s=5.0, cap_s=300.0, jitter="equal", rng=random.Random(3))
    for attempt in range(10):
        nominal = min(300.0, 5.0 * 2 ** attempt)
        for _ in range(50):
            assert nominal / 2 <= b.delay(attempt) <= nominal


def test_no_jitter_doubles_exactly() -> None:
    """The store-retry loops' curve: 0.05, 0.1, 0.2, ... at most 5 s."""
    assert [COMMIT_RETRY.delay(n) for n in range(9)] == [
        0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert COMMIT_RETRY.delay(10_000) == 5.0
    notify = Backoff(base_s=0.2, cap_s=5.0, jitter="none")
    assert [notify.delay(n) for n in range(3)] == [0.2, 0.4, 0.8]


def test_delays_iterates_the_same_curve_and_keeps_going() -> None:
    a = Backoff(base_s=0.2, cap_s=30.0, rng=random.Random(9))
    b = Backoff(base_s=0.2, cap_s=30.0, rng=random.Random(9))
    it = a.delays()
    assert [next(it) for _ in range(8)] == [b.delay(n) for n in range(8)]
    for _ in range(100):                   # endless, and past the cap it stays at the cap
        assert next(it) <= 30.0


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(base_s=10, cap_s=1)
    with pytest.raises(ValueError):
        Backoff(jitter="half")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Backoff().delay(-1)


def test_rate_limit_sliding_window_and_held_count() -> None:
    now = [0.0]
    rl = RateLimit(2, 60.0, clock=lambda: now[0])
    assert [rl.allow("a") for _ in range(4)] == [True, True, False, False]
    now[0] = 30.0
    assert not rl.allow("a") and rl.allow("b")
    assert rl.held == {"a": 3}
    now[0] = 60.0                          # the first two fall out of the window
    assert rl.allow("a") and rl.take_held("a") == 3 and rl.take_held("a") == 0


def test_rate_limit_counts_and_takes_back() -> None:
    """The shape of a login limit: counted while checked, taken back when it was right."""
    now = [100.0]
    rl = RateLimit(3, 300.0, clock=lambda: now[0])
    rl.record("u", 100.0)
    rl.record("u", 101.0)
    assert rl.count("u") == 2
    rl.forget("u", 101.0)
    rl.forget("u", 555.0)                  # not counted: nothing happens
    assert rl.count("u") == 1
    now[0] = 400.0
    assert rl.count("u") == 0
    rl.record("u", 400.0)
    rl.reset("u")
    assert rl.count("u") == 0


def test_rate_limit_memory_is_bounded() -> None:
    now = [0.0]
    rl = RateLimit(1, 10.0, clock=lambda: now[0], max_keys=100)
    for i in range(100):
        rl.allow(i)
    now[0] = 20.0                          # all of those windows are empty now
    rl.allow("fresh")
    assert len(rl._events) == 1            # noqa: SLF001 - the expired keys were dropped
    for i in range(500):                   # a flood of distinct keys inside one window
        rl.allow(("flood", i))
    assert len(rl._events) <= 101          # noqa: SLF001


def test_rate_limited_log_says_how_many_were_suppressed(caplog) -> None:
    now = [0.0]
    rlog = RateLimitedLog(logging.getLogger("t.rlog"), 60.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="t.rlog")
    for _ in range(4):
        rlog.warning(("bad", "dev1"), "dev1: %s", "bad")
    rlog.error(("bad", "dev2"), "dev2: %s", "bad")
    now[0] = 60.0
    rlog.warning(("bad", "dev1"), "dev1: %s", "bad")
    assert [r.getMessage() for r in caplog.records] == [
        "dev1: bad", "dev2: bad", "dev1: bad (+3 similar suppressed)"]
