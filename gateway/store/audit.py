"""The audit log: who did what, when (``audit``)."""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any

from gateway.kernel.clock import utc_iso

if TYPE_CHECKING:
    from gateway.store.core import Store

__all__ = ["audit_log", "last_entry", "record_audit"]


def record_audit(conn: sqlite3.Connection, actor: str, action: str, target: str = "",
                 **detail: Any) -> None:
    """One entry, in the caller's transaction (with the change it records)."""
    conn.execute("INSERT INTO audit (ts, actor, action, target, detail) VALUES (?,?,?,?,?)",
                 (utc_iso(), actor, action, target, json.dumps(detail, ensure_ascii=False)))


def audit_log(store: Store, limit: int = 200, actor: str | None = None) -> list[dict]:
    """Entries newest first, of one actor or all."""
    sql, params = "SELECT * FROM audit", []
    if actor:
        sql, params = sql + " WHERE actor=?", [actor]
    return store.query(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))


def last_entry(store: Store, action: str, target: str) -> dict | None:
    """The newest entry of ``action`` on ``target`` (its ``ts`` and ``actor``), or None."""
    return store.query_one("SELECT ts, actor FROM audit WHERE action=? AND target=? "
                           "ORDER BY id DESC LIMIT 1", (action, target))
