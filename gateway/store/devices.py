"""What the store keeps about devices apart from alarms: the presses and readings of
devices in test mode (``device_tests``: commissioning, never alarms) and device faults
(``device_faults``: supervision and inactivity faults of the rule engine, decode faults of
the drivers), open until ``cleared_at``."""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.store.core import Store

__all__ = ["clear_fault", "faults", "open_fault_devices", "open_fault_keys", "raise_fault",
           "record_test", "tests"]


def record_test(conn: sqlite3.Connection, device_id: str, rule_id: str, ts: str,
                value: Any) -> None:
    conn.execute("INSERT INTO device_tests (device_id, rule_id, ts, value) VALUES (?,?,?,?)",
                 (device_id, rule_id, ts, json.dumps(value)))


def tests(store: Store, device_id: str | None = None, limit: int = 50) -> list[dict]:
    """Tests recorded, of one device or all, newest first (``value`` decoded)."""
    sql = "SELECT * FROM device_tests"
    params: tuple = ()
    if device_id is not None:
        sql += " WHERE device_id=?"
        params = (device_id,)
    rows = store.query(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
    return [dict(r, value=json.loads(r["value"]) if r["value"] else None) for r in rows]


def raise_fault(conn: sqlite3.Connection, *, key: str, fault: str, device_id: str | None,
                household_id: str | None, grid_cell: str | None, severity: str,
                message_zh: str, message_en: str, raised_at: str) -> None:
    """Open fault ``key`` (a fault raised again starts afresh)."""
    conn.execute("INSERT OR REPLACE INTO device_faults (key, fault, device_id, household_id,"
                 " grid_cell, severity, message_zh, message_en, raised_at, cleared_at)"
                 " VALUES (?,?,?,?,?,?,?,?,?,NULL)",
                 (key, fault, device_id, household_id, grid_cell, severity, message_zh,
                  message_en, raised_at))


def clear_fault(conn: sqlite3.Connection, key: str, ts: str) -> None:
    """Fault ``key`` ended at ``ts`` (if it is open)."""
    conn.execute("UPDATE device_faults SET cleared_at=? WHERE key=? AND cleared_at IS NULL",
                 (ts, key))


def faults(store: Store, open_only: bool = True, limit: int = 1000) -> list[dict]:
    """Faults newest first."""
    sql = "SELECT * FROM device_faults"
    if open_only:
        sql += " WHERE cleared_at IS NULL"
    return store.query(sql + " ORDER BY raised_at DESC LIMIT ?", (limit,))


def open_fault_keys(store: Store) -> list[str]:
    return [r["key"] for r in store.query(
        "SELECT key FROM device_faults WHERE cleared_at IS NULL")]


def open_fault_devices(store: Store, fault: str) -> list[str]:
    """Devices with an open fault of kind ``fault``."""
    return [r["device_id"] for r in store.query(
        "SELECT device_id FROM device_faults WHERE fault=? AND cleared_at IS NULL", (fault,))]
