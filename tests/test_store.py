"""The store: group commit, savepoint isolation, durability across reopen."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
import time

import pytest

from gateway import StoreError
from gateway.store import Store


async def test_concurrent_writes_are_grouped_and_all_committed(tmp_path):
    async with Store(tmp_path / "g.db") as store:
        async def one(i: int) -> int:
            return await store.write(lambda c: c.execute(
                "INSERT INTO audit (ts, actor, action) VALUES ('t', ?, 'x')", (str(i),)).lastrowid)

        ids = await asyncio.gather(*(one(i) for i in range(500)))
        assert len(set(ids)) == 500
        assert store.writes == 500
        assert store.commits < 500, "writes queued together must share transactions"
    async with Store(tmp_path / "g.db") as again:
        assert again.query_one("SELECT count(*) AS n FROM audit")["n"] == 500


async def test_one_failing_write_does_not_undo_the_others(tmp_path):
    async with Store(tmp_path / "g.db") as store:
        def bad(c):
            c.execute("INSERT INTO audit (ts, actor, action) VALUES ('t', 'bad', 'x')")
            raise ValueError("refused by the caller")

        good = store.write(lambda c: c.execute(
            "INSERT INTO audit (ts, actor, action) VALUES ('t', 'good', 'x')"))
        results = await asyncio.gather(good, store.write(bad), return_exceptions=True)
        assert isinstance(results[1], ValueError)
        actors = [r["actor"] for r in store.query("SELECT actor FROM audit")]
        assert actors == ["good"]


async def test_sql_error_becomes_store_error(tmp_path):
    async with Store(tmp_path / "g.db") as store:
        with pytest.raises(StoreError):
            await store.write(lambda c: c.execute("INSERT INTO nowhere VALUES (1)"))
        # the writer still works afterwards
        await store.set_meta("k", "v")
        assert store.get_meta("k") == "v"


def test_wal_and_full_sync(tmp_path):
    store = Store(tmp_path / "g.db")
    store.open()
    try:
        conn = sqlite3.connect(tmp_path / "g.db")
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()
        assert store.instance_id and len(store.instance_id) == 12
    finally:
        store.close()


async def test_closed_store_refuses_writes(tmp_path):
    store = Store(tmp_path / "g.db")
    store.open()
    store.close()
    with pytest.raises(StoreError):
        await store.write(lambda c: None)


async def _busy_loop(stop: asyncio.Event) -> None:
    """The event loop as the intake keeps it under load: CPU in 4 ms slices."""
    while not stop.is_set():
        end = time.perf_counter() + 0.004
        while time.perf_counter() < end:
            pass
        await asyncio.sleep(0)


def _many_statements(c):
    for i in range(40):       # an alarm's commit: a few dozen statements
        c.execute("INSERT INTO audit (ts, actor, action) VALUES ('t', ?, 'x')", (str(i),))
    return "done"


async def test_a_held_write_commits_at_once_while_the_event_loop_is_busy(tmp_path):
    # Unheld, the writer thread waits for the GIL at each SQLite call while the loop
    # computes (up to the switch interval each time; gateway run's 0.5 ms here)
    from gateway.cli import SWITCH_INTERVAL_S
    from gateway.pipeline import ALARM_HOLD_S

    interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        async with Store(tmp_path / "g.db") as store:
            stop = asyncio.Event()
            busy = asyncio.create_task(_busy_loop(stop))
            try:
                await asyncio.sleep(0.05)
                took = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    assert await store.write(_many_statements, hold_s=ALARM_HOLD_S) == "done"
                    took.append(time.perf_counter() - t0)
            finally:
                stop.set()
                await busy
            assert store.held == 3
            assert max(took) < 0.1, took
    finally:
        sys.setswitchinterval(interval)


async def test_a_held_write_that_takes_longer_lets_the_loop_go_and_still_commits(tmp_path):
    async with Store(tmp_path / "g.db") as store:
        ticks: list[float] = []

        async def ticker() -> None:
            for _ in range(20):
                ticks.append(time.perf_counter())
                await asyncio.sleep(0.01)

        def slow(c):
            time.sleep(0.2)
            return c.execute("INSERT INTO audit (ts, actor, action) VALUES ('t', 'a', 'x')"
                             ).lastrowid

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        rowid = await store.write(slow, hold_s=0.02)
        assert store.held == 1
        assert rowid and time.perf_counter() - t0 >= 0.2
        # the loop ran while the commit was still going (held 20 ms, not 200)
        assert any(t0 + 0.05 < t < t0 + 0.19 for t in ticks), [t - t0 for t in ticks]
        await task

        def bad(c):
            raise ValueError("refused by the caller")

        with pytest.raises(ValueError):
            await store.write(bad, hold_s=0.5)
        assert store.query_one("SELECT count(*) AS n FROM audit")["n"] == 1


async def test_a_write_does_not_hold_the_loop_while_the_writer_is_in_another_batch(tmp_path):
    # it would wait for that batch's commit (its fsync: tens of ms on an SD card)
    async with Store(tmp_path / "g.db") as store:
        in_batch = threading.Event()

        def slow(c):
            in_batch.set()
            time.sleep(0.2)

        first = asyncio.create_task(store.write(slow))
        await asyncio.to_thread(in_batch.wait, 5)      # the writer is in slow's batch
        t0 = time.perf_counter()
        second = asyncio.create_task(store.write(_many_statements, hold_s=0.5))
        await asyncio.sleep(0)                 # second's first step: queued, not held
        assert time.perf_counter() - t0 < 0.05
        assert await second == "done" and store.held == 0
        await first


async def test_a_held_write_on_a_slow_disk_lets_the_loop_go_during_the_fsync(tmp_path):
    # recent commits slower than FAST_COMMIT_S (an SD card's fsync): the loop is held only
    # until the writes have run, and goes on during the COMMIT; fast commits: held through
    from gateway.store.core import FAST_COMMIT_S
    async with Store(tmp_path / "g.db") as store:
        for slow_disk in (True, False):
            turns: list[int] = []

            async def other_task(turns: list[int] = turns) -> None:
                turns.append(1)

            store.commits_s.clear()
            store.commits_s.extend([FAST_COMMIT_S * 10] * (9 if slow_disk else 0))
            task = asyncio.create_task(other_task())
            assert await store.write(_many_statements, hold_s=0.5) == "done"
            assert turns == ([1] if slow_disk else []), slow_disk
            await task
        assert store.held == 2
        # on a slow disk every 16th held write still goes through (measures it again)
        store.commits_s.extend([FAST_COMMIT_S * 10] * 9)
        store.held = 15
        turns = []
        task = asyncio.create_task(other_task(turns))
        assert await store.write(_many_statements, hold_s=0.5) == "done"
        assert turns == []
        await task
        assert min(store.commits_s) < FAST_COMMIT_S * 10      # measured again
