"""Case status events seen (``case_callbacks``): the one dedup of callbacks and polling, by
the case system's ``event_id``. (The case's id and status live on its alarm:
:mod:`.alarms`.)"""

from __future__ import annotations

import logging
import sqlite3

log = logging.getLogger(__name__)

__all__ = ["RANK", "advance", "claim", "first_seen", "opened", "unclaim"]

#: the case lifecycle's order (docs/case-system.md section 5); closed and rejected are final.
#: A case's status on its alarm or help request never moves back down this order.
RANK = {"accepted": 0, "dispatched": 1, "on_site": 2, "closed": 3, "rejected": 3}


def first_seen(conn: sqlite3.Connection, event_id: str, now: str) -> bool:
    """Record ``event_id`` in the caller's transaction; False if it was recorded before
    (a duplicate delivery)."""
    cur = conn.execute("INSERT OR IGNORE INTO case_callbacks VALUES (?, ?)", (event_id, now))
    return cur.rowcount != 0


#: the rows a case belongs to: an alarm's, a help request's (service case)
_SUBJECTS = ("alarms", "help_requests")


def claim(conn: sqlite3.Connection, table: str, row_id: int, case_id: str) -> bool:
    """The case system reported on a case before the reply that opened it was recorded: the
    case's id on its alarm or help request (``table``) now (the key matched: the same
    case); whether it was taken (False: the row has a case already)."""
    assert table in _SUBJECTS
    return conn.execute(f"UPDATE {table} SET case_id=? WHERE id=? AND case_id IS NULL",
                        (case_id, row_id)).rowcount == 1


def unclaim(conn: sqlite3.Connection, table: str, row_id: int) -> None:
    """The create request was refused: a case claimed for its key was not ours."""
    assert table in _SUBJECTS
    conn.execute(f"UPDATE {table} SET case_id=NULL, case_status=NULL WHERE id=?", (row_id,))


def advance(conn: sqlite3.Connection, table: str, row_id: int, status: str) -> bool:
    """The case's status on its alarm or help request (``table``), unless the stored one is
    further on in the lifecycle (``RANK``; events come out of order: retries, polling after
    callbacks, a reply recorded after a callback); whether it moved."""
    assert table in _SUBJECTS
    row = conn.execute(f"SELECT case_status FROM {table} WHERE id=?", (row_id,)).fetchone()
    if row is None or row[0] == status or (
            row[0] is not None and RANK.get(status, 0) < RANK.get(row[0], -1)):
        return False
    conn.execute(f"UPDATE {table} SET case_status=? WHERE id=?", (status, row_id))
    return True


def opened(conn: sqlite3.Connection, table: str, row_id: int, case_id: str,
           status: str | None) -> None:
    """The case system's reply opened the case of an alarm or help request (``table``): its
    id, no refusal, and its status unless a callback that overtook the reply (the same case,
    claimed by its key) already moved it further. A reply naming another case than the one
    claimed wins, with its own status."""
    assert table in _SUBJECTS
    row = conn.execute(f"SELECT case_id FROM {table} WHERE id=?", (row_id,)).fetchone()
    if row is not None and row[0] is not None and row[0] != case_id:
        log.error("%s %s: the case system replied with case %s, but case %s was reported for "
                  "its key before: the reply's case is kept", table, row_id, case_id, row[0])
        conn.execute(f"UPDATE {table} SET case_status=NULL WHERE id=?", (row_id,))
    conn.execute(f"UPDATE {table} SET case_id=?, case_error=NULL WHERE id=?", (case_id, row_id))
    if status:
        advance(conn, table, row_id, status)
