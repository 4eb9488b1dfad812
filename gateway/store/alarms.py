"""Alarms (``alarms``) and the rule engine's bookkeeping of them (``alarm_book``).

Writers take the connection of the caller's transaction (``gateway.alarms.AlarmBook``,
the forwarder, case feedback: the alarm change, its history row (:mod:`.events`) and its
outbox row (:mod:`.outbox`) commit together). Readers take the store (its reader
connection). Rows come back as ``sqlite3.Row`` inside a transaction, as dicts from the
reader; ``value`` is JSON text, ``test`` 0/1 (``gateway.alarms`` decodes them for the API).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.store import cases

if TYPE_CHECKING:
    from gateway.store.core import Store

__all__ = ["HistoryFilter", "acknowledge", "advance_status_of_case",
           "board", "by_case_id", "by_id", "case_id_of", "clear",
           "ended_keys", "escalate", "get", "history", "insert", "last_by_key",
           "latest_of_key", "mark_cleared", "open_alarms", "open_by_key",
           "open_by_severity", "open_id", "read_journal", "resolve", "retrigger",
           "set_case_error", "update", "write_journal"]


# -- in the caller's transaction -----------------------------------------------------------
def open_by_key(conn: sqlite3.Connection, key: str) -> sqlite3.Row | None:
    """The open (not resolved) alarm with ``key``; at most one (unique index)."""
    return conn.execute("SELECT * FROM alarms WHERE key=? AND state!='resolved'",
                        (key,)).fetchone()


def by_id(conn: sqlite3.Connection, alarm_id: int) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM alarms WHERE id=?", (alarm_id,)).fetchone()


def last_by_key(conn: sqlite3.Connection, key: str) -> sqlite3.Row | None:
    """The newest alarm with ``key``, open or not (``id``, ``cleared_at``)."""
    return conn.execute("SELECT id, cleared_at FROM alarms WHERE key=? "
                        "ORDER BY id DESC LIMIT 1", (key,)).fetchone()


def insert(conn: sqlite3.Connection, *, key: str, rule_id: str, category: str, severity: str,
           device_id: str | None, household_id: str | None, grid_cell: str | None,
           message_zh: str, message_en: str, value: Any, test: bool, occurred_at: str,
           now: str) -> int:
    """A new raised alarm; its id. ``value`` is stored as JSON."""
    cur = conn.execute(
        "INSERT INTO alarms (key, rule_id, category, severity, state, device_id, household_id,"
        " grid_cell, message_zh, message_en, value, test, occurred_at, raised_at, updated_at)"
        " VALUES (?,?,?,?, 'raised', ?,?,?,?,?,?,?,?,?,?)",
        (key, rule_id, category, severity, device_id, household_id, grid_cell, message_zh,
         message_en, json.dumps(value), int(bool(test)), occurred_at, now, now))
    return int(cur.lastrowid or 0)


def retrigger(conn: sqlite3.Connection, alarm_id: int, value: Any, now: str) -> None:
    """The open alarm's trigger came again: count, last value, active again."""
    conn.execute("UPDATE alarms SET count=count+1, updated_at=?, value=?, cleared_at=NULL"
                 " WHERE id=?", (now, json.dumps(value), alarm_id))


def update(conn: sqlite3.Connection, alarm_id: int, *, count: int, message_zh: str,
           message_en: str, cleared_at: str | None, now: str) -> None:
    conn.execute("UPDATE alarms SET count=?, updated_at=?, message_zh=?, message_en=?, "
                 "cleared_at=? WHERE id=?",
                 (count, now, message_zh, message_en, cleared_at, alarm_id))


def clear(conn: sqlite3.Connection, alarm_id: int, now: str) -> None:
    """The alarm's condition ended."""
    conn.execute("UPDATE alarms SET cleared_at=?, updated_at=? WHERE id=?",
                 (now, now, alarm_id))


def mark_cleared(conn: sqlite3.Connection, alarm_id: int, now: str) -> None:
    """The condition of an alarm resolved before it ended has ended (the first time
    counts; ``updated_at`` stays)."""
    conn.execute("UPDATE alarms SET cleared_at=coalesce(cleared_at, ?) WHERE id=?",
                 (now, alarm_id))


def escalate(conn: sqlite3.Connection, alarm_id: int, tier: int, tier_name: str,
             now: str) -> None:
    conn.execute("UPDATE alarms SET escalation_tier=?, escalation_tier_name=?, updated_at=?"
                 " WHERE id=?", (tier, tier_name, now, alarm_id))


def acknowledge(conn: sqlite3.Connection, alarm_id: int, actor: str, note: str,
                now: str) -> None:
    conn.execute("UPDATE alarms SET state='acknowledged', ack_by=?, ack_at=?, ack_note=?,"
                 " updated_at=? WHERE id=?", (actor, now, note, now, alarm_id))


def resolve(conn: sqlite3.Connection, alarm_id: int, actor: str, reason: str, note: str,
            now: str) -> None:
    conn.execute("UPDATE alarms SET state='resolved', resolved_by=?, resolved_at=?, "
                 "resolve_reason=?, resolve_note=?, updated_at=? WHERE id=?",
                 (actor, now, reason, note, now, alarm_id))


# -- the alarm's case ------------------------------------------------------------------------
def set_case_error(conn: sqlite3.Connection, alarm_id: int, code: str) -> None:
    """The case system refused a message of the alarm (short code, for the card)."""
    conn.execute("UPDATE alarms SET case_error=? WHERE id=?", (code, alarm_id))


def advance_status_of_case(conn: sqlite3.Connection, case_id: str, status: str) -> None:
    """The case's current status on its alarm, unless the alarm's is further on."""
    for (alarm_id,) in conn.execute("SELECT id FROM alarms WHERE case_id=?",
                                    (case_id,)).fetchall():
        cases.advance(conn, "alarms", alarm_id, status)


def by_case_id(conn: sqlite3.Connection, case_id: str) -> sqlite3.Row | None:
    """The alarm of a case (``id``, ``state``, ``household_id``)."""
    return conn.execute("SELECT id, state, household_id FROM alarms WHERE case_id=?",
                        (case_id,)).fetchone()


# -- the rule engine's bookkeeping (alarm_book) ---------------------------------------------
def write_journal(conn: sqlite3.Connection, entries: Iterable[tuple[str, dict, int]],
                  reopened: set[str]) -> None:
    """The engine's bookkeeping of each key, with the id of the alarm open with that key now
    (None where none is, or where this transaction opened it for a trigger the engine took
    for an update: its entry describes the old alarm). A retried older batch never
    overwrites a newer entry (``version``)."""
    rows = []
    for key, entry, version in entries:
        alarm_id = None
        if entry.get("open") is not None and key not in reopened:
            row = conn.execute("SELECT id FROM alarms WHERE key=? AND state!='resolved'",
                               (key,)).fetchone()
            alarm_id = row[0] if row else None
        rows.append((key, alarm_id, json.dumps(entry, separators=(",", ":")), version))
    conn.executemany(
        "INSERT INTO alarm_book (key, alarm_id, state, version) VALUES (?,?,?,?) "
        "ON CONFLICT(key) DO UPDATE SET alarm_id=excluded.alarm_id, state=excluded.state, "
        "version=excluded.version WHERE excluded.version > alarm_book.version", rows)


def read_journal(store: Store) -> tuple[dict[str, dict], dict[str, int | None], int]:
    """(entry per key, id of the alarm each was written for, the highest version)."""
    journal: dict[str, dict] = {}
    ids: dict[str, int | None] = {}
    version = 0
    for r in store.query("SELECT key, alarm_id, state, version FROM alarm_book"):
        journal[r["key"]] = json.loads(r["state"])
        ids[r["key"]] = r["alarm_id"]
        version = max(version, r["version"])
    return journal, ids, version


# -- reads -----------------------------------------------------------------------------------
def get(store: Store, alarm_id: int) -> dict | None:
    return store.query_one("SELECT * FROM alarms WHERE id=?", (alarm_id,))


def open_id(store: Store, key: str) -> int | None:
    """Id of the open alarm with ``key`` (None: none open)."""
    row = store.query_one("SELECT id FROM alarms WHERE key=? AND state!='resolved'", (key,))
    return row["id"] if row else None


def latest_of_key(store: Store, key: str) -> dict | None:
    """The newest alarm with ``key``, open or not (``id``, ``state``, ``raised_at``,
    ``cleared_at``)."""
    return store.query_one("SELECT id, state, raised_at, cleared_at FROM alarms WHERE key=? "
                           "ORDER BY id DESC LIMIT 1", (key,))


def case_id_of(store: Store, alarm_id: int) -> str | None:
    row = store.query_one("SELECT case_id FROM alarms WHERE id=?", (alarm_id,))
    return row["case_id"] if row else None


def open_alarms(store: Store) -> list[dict]:
    return store.query("SELECT * FROM alarms WHERE state!='resolved'")


def ended_keys(store: Store, among: Collection[str] | None = None) -> set[str]:
    """Keys whose last alarm is resolved and ended with its condition (cleared); of
    ``among`` only, when given (a start asks for the few keys its rules hold: the whole
    history's keys took 0.1 s of a 50,000-alarm store's start)."""
    sql = ("SELECT a.key FROM alarms a JOIN (SELECT key, max(id) AS last FROM alarms {} "
           "GROUP BY key) l ON a.id = l.last "
           "WHERE a.state='resolved' AND a.cleared_at IS NOT NULL")
    if among is None or len(among) > 500:      # (more: one pass over the table is quicker)
        every = {r["key"] for r in store.query(sql.format(""))}
        return every if among is None else every & set(among)
    if not among:
        return set()
    return {r["key"] for r in store.query(
        sql.format(f"WHERE key IN ({','.join('?' * len(among))})"), tuple(among))}


def open_by_severity(store: Store) -> dict[str, int]:
    """Open alarms counted by severity."""
    return {r["severity"]: r["n"] for r in store.query(
        "SELECT severity, count(*) AS n FROM alarms WHERE state != 'resolved' "
        "GROUP BY severity")}


def board(store: Store, state: str | None = None, limit: int = 200,
          since_id: int = 0) -> list[dict]:
    """Alarms for the duty board: open first, then by severity, newest first.
    ``state``: ``open`` (not resolved), a state, or None (any)."""
    sql = "SELECT * FROM alarms WHERE id > ?"
    params: list = [since_id]
    if state == "open":
        sql += " AND state != 'resolved'"
    elif state:
        sql += " AND state = ?"
        params.append(state)
    sql += (" ORDER BY CASE state WHEN 'resolved' THEN 1 ELSE 0 END, "
            "CASE severity WHEN 'critical' THEN 0 WHEN 'major' THEN 1 WHEN 'minor' THEN 2 "
            "ELSE 3 END, id DESC LIMIT ?")
    params.append(limit)
    return store.query(sql, tuple(params))


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    """Filters of the alarm history; every field optional (None = any)."""

    state: str | None = None            # open | raised | acknowledged | resolved
    severity: str | None = None
    category: str | None = None
    household_id: str | None = None
    grid_cell: str | None = None
    device_id: str | None = None
    since: str | None = None            # ISO 8601, compared with raised_at
    until: str | None = None
    include_tests: bool = False

    def sql(self) -> tuple[str, list]:
        clauses: list[str] = []
        params: list = []
        if self.state == "open":
            clauses.append("state != 'resolved'")
        elif self.state:
            clauses.append("state = ?")
            params.append(self.state)
        for column in ("severity", "category", "household_id", "grid_cell", "device_id"):
            value = getattr(self, column)
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.since:
            clauses.append("raised_at >= ?")
            params.append(self.since)
        if self.until:
            clauses.append("raised_at < ?")
            params.append(self.until)
        if not self.include_tests:
            clauses.append("test = 0")
        return (" AND ".join(clauses) or "1=1"), params


def history(store: Store, f: HistoryFilter, limit: int = 100,
            offset: int = 0) -> tuple[int, list[dict]]:
    """(total matching, one page newest first) of alarms matching ``f``."""
    where, params = f.sql()
    row = store.query_one(f"SELECT count(*) AS n FROM alarms WHERE {where}", tuple(params))
    rows = store.query(f"SELECT * FROM alarms WHERE {where} ORDER BY id DESC "
                       f"LIMIT ? OFFSET ?", (*params, limit, offset))
    return (row["n"] if row else 0), rows
