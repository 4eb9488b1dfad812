"""Visits (探访) of households by grid members and volunteers: ``visits``."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.store.core import Store

__all__ = ["between", "by_request_key", "insert"]


def insert(conn: sqlite3.Connection, *, household_id: str, grid_cell: str, visited_at: str,
           visitor: str, recorded_by: str, via: str, note: str,
           request_key: str | None) -> int:
    cur = conn.execute(
        "INSERT INTO visits (household_id, grid_cell, visited_at, visitor, recorded_by, via,"
        " note, request_key) VALUES (?,?,?,?,?,?,?,?)",
        (household_id, grid_cell, visited_at, visitor, recorded_by, via, note, request_key))
    return int(cur.lastrowid or 0)


def by_request_key(conn: sqlite3.Connection, key: str) -> int | None:
    row = conn.execute("SELECT id FROM visits WHERE request_key=?", (key,)).fetchone()
    return int(row[0]) if row else None


def between(store: Store, start: str, end: str, grid_cell: str | None = None) -> list[dict]:
    """Visits with ``start <= visited_at < end`` (UTC ISO strings), oldest first."""
    sql = "SELECT * FROM visits WHERE visited_at>=? AND visited_at<?"
    params: tuple = (start, end)
    if grid_cell:
        sql += " AND grid_cell=?"
        params += (grid_cell,)
    return store.query(sql + " ORDER BY visited_at, id", params)
