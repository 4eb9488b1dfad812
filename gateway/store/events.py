"""Alarm history (``alarm_events``): every transition of an alarm with actor and time.

:func:`append_event` is the ONE place a row is written: the alarm book (raise, retrigger,
update, clear, escalate, acknowledge, resolve), the forwarder (``case_created``) and case
feedback (``case_status``, a resolve by the case system) call it in the transaction of the
change. Readers follow the table by ``id`` with their own cursors (:mod:`.cursors`): the
notifier (escalations) and the upstream publisher (everything).
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.store.core import Store

__all__ = ["append_event", "call_with_request", "calls_of", "count_after", "escalations_after",
           "events_after", "events_of", "last_event_id"]


def append_event(conn: sqlite3.Connection, alarm_id: int, action: str, actor: str, ts: str, /,
                 **detail: Any) -> int:
    """Record one transition of alarm ``alarm_id`` in the caller's transaction; its id."""
    cur = conn.execute("INSERT INTO alarm_events (alarm_id, ts, action, actor, detail) "
                       "VALUES (?,?,?,?,?)",
                       (alarm_id, ts, action, actor, json.dumps(detail, ensure_ascii=False)))
    return int(cur.lastrowid or 0)


def events_of(store: Store, alarm_id: int) -> list[dict]:
    """The history of one alarm, oldest first (``detail`` decoded)."""
    return [dict(e, detail=json.loads(e["detail"])) for e in store.query(
        "SELECT ts, action, actor, detail FROM alarm_events WHERE alarm_id=? ORDER BY id",
        (alarm_id,))]


def calls_of(store: Store, alarm_ids: list[int]) -> dict[int, list[dict]]:
    """The recorded call outcomes (``call`` events) of each of ``alarm_ids``, oldest first:
    alarm id -> ``[{ts, actor, **detail}]`` (alarms without any are left out)."""
    out: dict[int, list[dict]] = {}
    for start in range(0, len(alarm_ids), 500):
        chunk = alarm_ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        for e in store.query(f"SELECT alarm_id, ts, actor, detail FROM alarm_events WHERE "
                             f"action = 'call' AND alarm_id IN ({marks}) ORDER BY id",
                             tuple(chunk)):
            out.setdefault(e["alarm_id"], []).append(
                {"ts": e["ts"], "actor": e["actor"], **json.loads(e["detail"])})
    return out


def call_with_request(conn: sqlite3.Connection, alarm_id: int, request_id: str) -> bool:
    """A call outcome with this ``request_id`` is recorded on the alarm already (a repeated
    request: the console's retry after a lost reply)."""
    return conn.execute("SELECT 1 FROM alarm_events WHERE alarm_id = ? AND action = 'call' "
                        "AND json_extract(detail, '$.request_id') = ?",
                        (alarm_id, request_id)).fetchone() is not None


def events_after(store: Store, cursor: int, limit: int) -> list[dict]:
    """Events after ``cursor`` in id order, each with its alarm's row (``ev_id``: the
    event's id; ``alarm_id``, ``ts``, ``action``, ``actor``, ``detail``: the event's)."""
    return store.query(
        "SELECT a.*, e.id AS ev_id, e.alarm_id, e.ts, e.action, e.actor, e.detail FROM "
        "alarm_events e JOIN alarms a ON a.id = e.alarm_id WHERE e.id > ? ORDER BY e.id LIMIT ?",
        (cursor, limit))


def escalations_after(store: Store, cursor: int, limit: int) -> list[dict]:
    """``escalated`` events after ``cursor`` in id order, each with its alarm's row
    (``ev_id``, ``ts``, ``detail``: the event's)."""
    return store.query(
        "SELECT e.id AS ev_id, e.ts, e.detail, a.* FROM alarm_events e JOIN alarms a "
        "ON a.id = e.alarm_id WHERE e.id > ? AND e.action = 'escalated' ORDER BY e.id "
        "LIMIT ?", (cursor, limit))


def last_event_id(store: Store) -> int:
    """The newest event's id (0: none yet)."""
    row = store.query_one("SELECT max(id) AS m FROM alarm_events")
    return int(row["m"] or 0) if row else 0


def count_after(store: Store, cursor: int) -> int:
    """Events after ``cursor``."""
    row = store.query_one("SELECT count(*) AS n FROM alarm_events WHERE id > ?", (cursor,))
    return row["n"] if row else 0
