"""The store: group commit, savepoint isolation, durability across reopen."""

from __future__ import annotations

import asyncio
import sqlite3

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
