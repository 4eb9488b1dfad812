"""Case status events seen (``case_callbacks``): the one dedup of callbacks and polling, by
the case system's ``event_id``. (The case's id and status live on its alarm:
:mod:`.alarms`.)"""

from __future__ import annotations

import sqlite3

__all__ = ["RANK", "first_seen"]

#: the case lifecycle's order (docs/case-system.md section 5); closed and rejected are final.
#: A case's status on its alarm or help request never moves back down this order.
RANK = {"accepted": 0, "dispatched": 1, "on_site": 2, "closed": 3, "rejected": 3}


def first_seen(conn: sqlite3.Connection, event_id: str, now: str) -> bool:
    """Record ``event_id`` in the caller's transaction; False if it was recorded before
    (a duplicate delivery)."""
    cur = conn.execute("INSERT OR IGNORE INTO case_callbacks VALUES (?, ?)", (event_id, now))
    return cur.rowcount != 0
