"""Help requests (求助 / 生活服务): ``help_requests`` and their history ``help_events``. Their
service cases go through the case outbox (:mod:`.outbox`, kind ``service``) with the alarms'
cases, delivered by ``gateway.forwarder``.

A request is ``received`` (a caller key or staff for a phone call), then ``assigned`` (to a
person, by staff or when the case system dispatches it), ``done``, and ``closed`` once the
resident's feedback is recorded. Its outbox rows are keyed ``<prefix>-help-<id>-<n>``
(the idempotency key that makes resends safe) and go out strictly in order per request.
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.store.core import Store

__all__ = ["STATES", "add_event", "by_case_id", "by_request_key", "events_of",
           "get", "insert", "listing", "recent_by_device", "set_case_error",
           "set_state"]

#: the lifecycle, in order
STATES = ("received", "assigned", "done", "closed")


def insert(conn: sqlite3.Connection, *, category: str, household_id: str, grid_cell: str,
           device_id: str | None, channel: str, note: str, actor: str, now: str,
           request_key: str | None) -> int:
    cur = conn.execute(
        "INSERT INTO help_requests (category, household_id, grid_cell, device_id, channel,"
        " note, state, created_by, created_at, request_key) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (category, household_id, grid_cell, device_id, channel, note, "received", actor,
         now, request_key))
    return int(cur.lastrowid or 0)


def by_request_key(conn: sqlite3.Connection, key: str) -> int | None:
    row = conn.execute("SELECT id FROM help_requests WHERE request_key=?", (key,)).fetchone()
    return int(row[0]) if row else None


def recent_by_device(conn: sqlite3.Connection, device_id: str, category: str,
                     since: str) -> int | None:
    """A request of this device and category created at or after ``since`` (a key pressed
    twice, a message delivered twice): the same request."""
    row = conn.execute("SELECT id FROM help_requests WHERE device_id=? AND category=? AND "
                       "created_at>=? ORDER BY id DESC LIMIT 1",
                       (device_id, category, since)).fetchone()
    return int(row[0]) if row else None


def set_state(conn: sqlite3.Connection, help_id: int, state: str, now: str, actor: str,
              **fields: Any) -> None:
    """Move request ``help_id`` to ``state`` and set the columns named in ``fields``."""
    cols = {"state": state, **fields}
    if state == "assigned":
        cols.setdefault("assigned_at", now)
    elif state == "done":
        cols.update(done_at=now, done_by=actor)
    elif state == "closed":
        cols.setdefault("feedback_at", now)
    allowed = {"state", "assigned_to", "assigned_at", "done_at", "done_by", "feedback",
               "feedback_note", "feedback_at"}
    if not set(cols) <= allowed:
        raise ValueError(f"unknown columns {sorted(set(cols) - allowed)}")
    sets = ", ".join(f"{c}=?" for c in cols)
    conn.execute(f"UPDATE help_requests SET {sets} WHERE id=?", (*cols.values(), help_id))


def add_event(conn: sqlite3.Connection, help_id: int, action: str, actor: str, now: str,
              **detail: Any) -> None:
    conn.execute("INSERT INTO help_events (help_id, ts, actor, action, detail) "
                 "VALUES (?,?,?,?,?)",
                 (help_id, now, actor, action, json.dumps(detail, ensure_ascii=False)))


def get(store: Store | sqlite3.Connection, help_id: int) -> dict | None:
    sql = "SELECT * FROM help_requests WHERE id=?"
    if isinstance(store, sqlite3.Connection):
        cur = store.execute(sql, (help_id,))
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row)) if row else None
    return store.query_one(sql, (help_id,))


def listing(store: Store, *, state: str | None = None, grid_cell: str | None = None,
            limit: int = 200) -> list[dict]:
    where, params = [], []
    if state == "open":
        where.append("state IN ('received', 'assigned')")
    elif state:
        where.append("state=?")
        params.append(state)
    if grid_cell:
        where.append("grid_cell=?")
        params.append(grid_cell)
    sql = "SELECT * FROM help_requests" + (" WHERE " + " AND ".join(where) if where else "")
    return store.query(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))


def events_of(store: Store, help_id: int) -> list[dict]:
    rows = store.query("SELECT ts, actor, action, detail FROM help_events WHERE help_id=? "
                       "ORDER BY id", (help_id,))
    return [dict(r, detail=json.loads(r["detail"])) for r in rows]


# -- the case system: service cases (their rows are in the one ``outbox``, kind 'service')

def set_case_error(conn: sqlite3.Connection, help_id: int, error: str) -> None:
    """The case system refused the request's service case: a short code on the request."""
    conn.execute("UPDATE help_requests SET case_error=? WHERE id=?", (error[:200], help_id))


def by_case_id(conn: sqlite3.Connection, case_id: str) -> dict | None:
    cols = ("id", "state", "case_status", "assigned_to", "household_id")
    row = conn.execute(f"SELECT {', '.join(cols)} FROM help_requests WHERE case_id=?",
                       (case_id,)).fetchone()
    return dict(zip(cols, row)) if row else None


