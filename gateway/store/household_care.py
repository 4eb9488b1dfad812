"""Household care states (``household_care``): one row per household while it is away, in
hospital or has a carer (gateway.household_care). Ended states are deleted; their history
is the audit log."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.store.core import Store

__all__ = ["all_care", "delete_care", "get_care", "put_care"]


def all_care(store: Store) -> list[dict[str, Any]]:
    return store.query("SELECT * FROM household_care ORDER BY household_id")


def get_care(conn: sqlite3.Connection, household_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM household_care WHERE household_id=?",
                       (household_id,)).fetchone()
    return None if row is None else dict(row)


def put_care(conn: sqlite3.Connection, household_id: str, state: str, started_at: str,
             expected_end: str | None, note: str, via: str, set_by: str, set_at: str) -> None:
    conn.execute("INSERT OR REPLACE INTO household_care (household_id, state, started_at, "
                 "expected_end, note, via, set_by, set_at) VALUES (?,?,?,?,?,?,?,?)",
                 (household_id, state, started_at, expected_end, note, via, set_by, set_at))


def delete_care(conn: sqlite3.Connection, household_id: str) -> bool:
    return conn.execute("DELETE FROM household_care WHERE household_id=?",
                        (household_id,)).rowcount > 0
