"""The case outbox (``outbox``): messages to the grid case system, written in the same
transaction as the change that caused them, delivered by ``gateway.forwarder``.

Two kinds of row, one queue: ``alarm`` rows belong to an alarm (``alarm_id``: its case),
``service`` rows to a help request (``help_id``: its service case, contract 1.3). A row is
``pending`` until the case system took it (``delivered``) or refused it (``failed``,
surfaced on its alarm or request as ``case_error``; ``gateway outbox --retry-failed``
queues it again). The rows of one alarm or request are numbered (``sequence``) and keyed
(``<prefix>-<alarm id>-<sequence>``, ``<prefix>-help-<request id>-<sequence>``: the
idempotency key that makes resends safe).
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.store.core import Store

__all__ = ["ALARM", "KINDS", "SERVICE", "due", "enqueue", "failed", "failed_count",
           "oldest_pending_created_at", "owner_of_key", "pending_count", "record_delivered",
           "record_failed", "record_retry", "requeue_failed"]

#: an alarm's case (``alarm_id``)
ALARM = "alarm"
#: a help request's service case (``help_id``)
SERVICE = "service"
KINDS = (ALARM, SERVICE)
_SUBJECT = {ALARM: "alarm_id", SERVICE: "help_id"}
_KEY = {ALARM: "{prefix}-{id}-{n}", SERVICE: "{prefix}-help-{id}-{n}"}


def enqueue(conn: sqlite3.Connection, subject_id: int, topic: str, payload: dict, now: str,
            key_prefix: str, kind: str = ALARM) -> str:
    """Queue ``payload`` for alarm ``subject_id`` (``kind`` ``service``: help request) in the
    caller's transaction, numbered after its earlier rows (``sequence``) and keyed by it
    (``idempotency_key``, both added to the payload); the key."""
    col = _SUBJECT[kind]
    n = conn.execute(f"SELECT count(*) FROM outbox WHERE {col}=?", (subject_id,)).fetchone()[0]
    key = _KEY[kind].format(prefix=key_prefix, id=subject_id, n=n)
    payload = dict(payload, idempotency_key=key, sequence=n)
    conn.execute(f"INSERT INTO outbox (kind, {col}, topic, idempotency_key, payload, "
                 "created_at) VALUES (?,?,?,?,?,?)",
                 (kind, subject_id, topic, key, json.dumps(payload, ensure_ascii=False), now))
    return key


def owner_of_key(conn: sqlite3.Connection, key: str) -> tuple[int | None, int | None] | None:
    """The (alarm id, help request id) whose case is being opened under ``key``: its
    ``case.create`` row, still pending (no reply recorded yet). None otherwise: a create
    delivered has its case id stored, a refused one opened no case of ours."""
    row = conn.execute("SELECT alarm_id, help_id FROM outbox WHERE idempotency_key=? "
                       "AND topic='case.create' AND state='pending'", (key,)).fetchone()
    return (row[0], row[1]) if row is not None else None


def due(store: Store, limit: int) -> list[dict]:
    """The oldest pending row of each of the first ``limit`` alarms and requests, in seq
    order."""
    return store.query(
        "SELECT o.* FROM outbox o WHERE o.state='pending' AND NOT EXISTS ("
        " SELECT 1 FROM outbox p WHERE p.alarm_id=o.alarm_id AND p.state='pending'"
        " AND p.seq < o.seq) AND NOT EXISTS ("
        " SELECT 1 FROM outbox p WHERE p.help_id=o.help_id AND p.state='pending'"
        " AND p.seq < o.seq) ORDER BY o.seq LIMIT ?", (limit,))


def pending_count(store: Store, kind: str | None = None) -> int:
    """Rows not yet delivered (of ``kind``, else of both)."""
    where = " AND kind=?" if kind else ""
    row = store.query_one("SELECT count(*) AS n FROM outbox WHERE state='pending'" + where,
                          (kind,) if kind else ())
    return row["n"] if row else 0


def failed_count(store: Store) -> int:
    row = store.query_one("SELECT count(*) AS n FROM outbox WHERE state='failed'")
    return row["n"] if row else 0


def oldest_pending_created_at(store: Store) -> str | None:
    """When the oldest undelivered row was queued (None: none is)."""
    row = store.query_one("SELECT created_at FROM outbox WHERE state='pending' "
                          "ORDER BY seq LIMIT 1")
    return row["created_at"] if row else None


def record_retry(conn: sqlite3.Connection, seq: int, error: str) -> None:
    """An attempt failed and will be made again."""
    conn.execute("UPDATE outbox SET attempts=attempts+1, last_error=? WHERE seq=?",
                 (error, seq))


def record_failed(conn: sqlite3.Connection, seq: int, error: str) -> None:
    """The case system refused the row: no further attempts until it is queued again."""
    conn.execute("UPDATE outbox SET state='failed', attempts=attempts+1, last_error=? "
                 "WHERE seq=?", (error, seq))


def record_delivered(conn: sqlite3.Connection, seq: int, now: str) -> None:
    conn.execute("UPDATE outbox SET state='delivered', delivered_at=?, "
                 "attempts=attempts+1, last_error=NULL WHERE seq=?", (now, seq))


def failed(store: Store, kind: str | None = None) -> list[dict]:
    """Refused rows (of ``kind``, else of both) in seq order (``seq``, ``kind``,
    ``alarm_id``, ``help_id``, ``topic``, ``attempts``, ``last_error``)."""
    where = " AND kind=?" if kind else ""
    return store.query("SELECT seq, kind, alarm_id, help_id, topic, attempts, last_error "
                       "FROM outbox WHERE state='failed'" + where + " ORDER BY seq",
                       (kind,) if kind else ())


def requeue_failed(conn: sqlite3.Connection) -> int:
    """Queue every refused row again (attempts from 0) and take the refusal off their
    alarms and requests (``case_error``); how many rows."""
    n = conn.execute("UPDATE outbox SET state='pending', attempts=0 "
                     "WHERE state='failed'").rowcount
    conn.execute("UPDATE alarms SET case_error=NULL WHERE id IN (SELECT alarm_id "
                 "FROM outbox WHERE state='pending' AND kind='alarm')")
    conn.execute("UPDATE help_requests SET case_error=NULL WHERE id IN (SELECT help_id "
                 "FROM outbox WHERE state='pending' AND kind='service')")
    return n
