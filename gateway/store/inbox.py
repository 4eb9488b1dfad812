"""The inbox (``inbox``): alarm-class readings accepted from devices, committed before the
device or broker is acknowledged and kept until the rules have processed them (their
actions commit with :func:`mark_processed` in one transaction)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.store.core import Store

__all__ = ["accept", "count", "mark_processed", "unprocessed"]


def accept(conn: sqlite3.Connection, received_at: str, source: str, reading: str) -> int:
    """One reading (JSON) from ``source``; its ``seq``."""
    cur = conn.execute("INSERT INTO inbox (received_at, source, reading) VALUES (?,?,?)",
                       (received_at, source, reading))
    return int(cur.lastrowid or 0)


def mark_processed(conn: sqlite3.Connection, seqs: Iterable[int], now: str) -> None:
    conn.executemany("UPDATE inbox SET processed_at=? WHERE seq=?", [(now, s) for s in seqs])


def unprocessed(store: Store) -> list[dict]:
    """Rows not yet processed, in the order accepted (``seq``, ``reading``)."""
    return store.query("SELECT seq, reading FROM inbox WHERE processed_at IS NULL "
                       "ORDER BY seq")


def count(store: Store) -> int:
    """Rows kept (processed or not)."""
    row = store.query_one("SELECT count(*) AS n FROM inbox")
    return row["n"] if row else 0
