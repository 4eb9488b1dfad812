"""Durable alarm records per second through the store's group commit.

Each record is what the pipeline makes durable before it acknowledges an alarm-class
message: one ``inbox`` row holding the reading, written by its own ``Store.write`` call
(SQLite WAL, ``synchronous=FULL``: committed means fsynced). ``--concurrency`` writers are
outstanding at a time, as when many devices report at once; the writer thread commits
everything queued during the previous fsync in one transaction.

Baseline in the same run: one commit per record (one writer waiting for each commit).
``records_per_s`` is the group-commit figure (bar >= 20,000/s, goal >= 50,000/s, one core).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from gateway.model import Kind, Reading
from gateway.store import Store, inbox

__all__ = ["add_args", "run"]


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--records", type=int, default=300_000)
    p.add_argument("--baseline-records", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=4000)
    p.add_argument("--dir", help="where the database goes (default: a temp dir)")


def _record(i: int) -> str:
    r = Reading(f"caller-{i % 500}", Kind.SOS, True,
                datetime(2024, 5, 1, 8, 0, tzinfo=timezone.utc), device_type="emergency_caller",
                household_id=f"h-{i % 500}", grid_cell="310104-012-03")
    return json.dumps(r.to_json(), ensure_ascii=False)


async def _bench(store: Store, n: int, concurrency: int) -> float:
    body = [_record(i) for i in range(min(n, 1000))]

    def insert(i: int):
        def fn(conn):
            return inbox.accept(conn, "2024-05-01T08:00:00+00:00", f"caller-{i % 500}",
                                body[i % len(body)])
        return fn

    next_i = iter(range(n))

    async def writer() -> None:   # each keeps one write outstanding; no lock needed
        for i in next_i:
            await store.write(insert(i))

    t = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(min(concurrency, n))))
    return n / (time.perf_counter() - t)


def run(args: argparse.Namespace) -> dict:
    if args.quick:
        args.records, args.baseline_records = 60_000, 500
    with tempfile.TemporaryDirectory(prefix="bench-outbox-", dir=args.dir) as tmp:
        async def main() -> dict:
            async with Store(Path(tmp) / "base.db") as base:
                b = await _bench(base, args.baseline_records, 1)
            async with Store(Path(tmp) / "group.db") as store:
                commits0 = store.commits
                g = await _bench(store, args.records, args.concurrency)
                rows = inbox.count(store)
                commits = store.commits - commits0
            return {"records": args.records, "records_per_s": round(g),
                    "baseline_one_commit_per_record_per_s": round(b),
                    "ratio": round(g / b, 1), "commits": commits,
                    "records_per_commit": round(args.records / max(commits, 1), 1),
                    "rows_durable": rows, "bar_20k_met": g >= 20_000}
        return asyncio.run(main())
