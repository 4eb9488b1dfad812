"""Telemetry is never starved by alarm-class readings waiting for their commit.

Every Zigbee2MQTT motion or door report carries ``tamper: false`` (alarm-class), so such
readings arrive all the time and each goes through the inbox commit. A change that paused
the rules' telemetry while an inbox commit was in flight (to give an alarm its turns of the
loop) starved telemetry completely under a steady stream of them (a fresh-eyes review: 0 of
3,024 readings fed in 3 s; the inactivity rule would have seen no motion): it was withdrawn,
and these tests keep it so, also while a failed commit waits to be retried (a full disk).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from types import SimpleNamespace

from gateway import StoreError
from gateway.metrics import Metrics
from gateway.model import Kind, Reading
from gateway.pipeline import Pipeline
from gateway.store import Store
from tests.support import until


class _Engine:
    """Records what the rules were fed, in order; makes no actions."""

    def __init__(self) -> None:
        self.fed: list[str] = []
        self.book = SimpleNamespace(journal=lambda: [])

    def feed(self, reading: Reading, now) -> list:
        self.fed.append(reading.device_id)
        return []

    def repeats_nothing(self, reading: Reading) -> bool:
        return False        # every alarm-class reading here goes the durable way


class _Book:
    def __init__(self) -> None:
        self.holds: list[tuple[bool, float]] = []     # (with inbox rows, hold_s)

    async def apply(self, actions, seqs, journal, **kw) -> list:
        self.holds.append((bool(seqs), kw.get("hold_s", 0.0)))
        return []


def _motion(i: int) -> Reading:
    return Reading(f"motion-{i}", Kind.MOTION, True, datetime.now(timezone.utc))


def _sos() -> Reading:
    return Reading("caller-1", Kind.SOS, True, datetime.now(timezone.utc))


class _SlowStore:
    """The real store; the inbox commit takes ``delay_s`` in the writer thread, or fails
    ``failures`` times first (as a full disk does)."""

    def __init__(self, store: Store, delay_s: float = 0.0, failures: int = 0) -> None:
        self.store, self.delay_s, self.failures = store, delay_s, failures
        self.holds: list[float] = []

    async def write(self, fn, **kw):
        self.holds.append(kw.get("hold_s", 0.0))
        if self.failures:
            self.failures -= 1
            await asyncio.sleep(0.01)
            raise StoreError("store commit failed: database or disk is full")

        def slow(conn):
            time.sleep(self.delay_s)
            return fn(conn)

        return await self.store.write(slow, **kw)

    def __getattr__(self, name: str):
        return getattr(self.store, name)


async def test_a_steady_stream_of_alarm_class_readings_does_not_starve_telemetry(tmp_path):
    store = Store(tmp_path / "gateway.db")
    store.open()
    engine = _Engine()
    pipe = Pipeline(_SlowStore(store, delay_s=0.15), engine, _Book(), Metrics())  # type: ignore[arg-type]
    tasks = [asyncio.create_task(pipe._committer()), asyncio.create_task(pipe._processor())]
    try:
        now = datetime.now(timezone.utc)
        for i in range(30):         # a report every 100 ms for 3 s; each commit takes 150 ms
            pipe.offer([Reading(f"m{i}", Kind.MOTION, True, now),
                        Reading(f"m{i}", Kind.TAMPER, False, now)], lambda: None)
            await asyncio.sleep(0.1)
        # the motions went to the rules meanwhile (the paused version left all 30 queued)
        assert pipe._telemetry_q.qsize() <= 2
    finally:
        for t in tasks:
            t.cancel()
        store.close()


async def _run(tmp_path, **slow) -> _Engine:
    store = Store(tmp_path / "gateway.db")
    store.open()
    engine = _Engine()
    pipe = Pipeline(_SlowStore(store, **slow), engine, _Book(), Metrics())  # type: ignore[arg-type]
    tasks = [asyncio.create_task(pipe._committer()), asyncio.create_task(pipe._processor())]
    try:
        for i in range(3000):
            pipe.offer([_motion(i)], None)
        acked: list[bool] = []
        pipe.offer([_sos()], lambda: acked.append(True))
        await until(lambda: "caller-1" in engine.fed, 10, "the alarm fed to the rules")
        assert acked == [True]
        await until(lambda: len(engine.fed) == 3001, 10, "all telemetry fed")
        return engine
    finally:
        for t in tasks:
            t.cancel()
        store.close()


async def test_telemetry_goes_on_while_a_failed_commit_waits_to_be_retried(tmp_path):
    engine = await _run(tmp_path, failures=4)    # retried after 0.05, 0.1, 0.2, 0.4 s
    assert engine.fed.index("caller-1") > 0
    assert engine.fed.count("caller-1") == 1


async def test_an_alarms_commits_hold_the_loop_and_telemetrys_do_not(tmp_path):
    from gateway.pipeline import ALARM_HOLD_S
    store = Store(tmp_path / "gateway.db")
    store.open()
    slow, book = _SlowStore(store), _Book()
    engine = _Engine()
    engine.feed = lambda r, now: (engine.fed.append(r.device_id), [object()])[1]  # an action
    pipe = Pipeline(slow, engine, book, Metrics())  # type: ignore[arg-type]
    tasks = [asyncio.create_task(pipe._committer()), asyncio.create_task(pipe._processor())]
    try:
        pipe.offer([_motion(1)], None)
        await until(lambda: book.holds, 5, "the motion's actions applied")
        pipe.offer([_sos()], lambda: None)
        await until(lambda: len(book.holds) == 2, 5, "the alarm applied")
        assert slow.holds == [ALARM_HOLD_S]                     # the inbox commit
        assert book.holds == [(False, 0.0), (True, ALARM_HOLD_S)]
    finally:
        for t in tasks:
            t.cancel()
        store.close()
