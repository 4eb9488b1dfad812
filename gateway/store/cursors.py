"""Readers' positions, kept in ``meta`` so a restart neither loses nor repeats their work.

- :data:`NOTIFY` (``notify_cursor``): the last ``alarm_events`` id the notifier handled.
- :data:`UPSTREAM` (``upstream_cursor``): the last ``alarm_events`` id the upstream broker
  acknowledged.
- :data:`CASE_POLL` (``case_poll_since``): the newest ``updated_at`` (ISO 8601) of the cases
  the case-status poller has applied.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.store.core import Store

__all__ = ["CASE_POLL", "NOTIFY", "UPSTREAM", "event_cursor", "read_cursor", "save_cursor",
           "write_cursor"]

NOTIFY = "notify_cursor"
UPSTREAM = "upstream_cursor"
CASE_POLL = "case_poll_since"
_NAMES = frozenset({NOTIFY, UPSTREAM, CASE_POLL})


def _checked(name: str) -> str:
    if name not in _NAMES:
        raise ValueError(f"unknown cursor {name!r}")
    return name


def read_cursor(store: Store, name: str) -> str | None:
    """The saved position (None: never saved)."""
    return store.get_meta(_checked(name))


def event_cursor(store: Store, name: str) -> int:
    """An ``alarm_events`` cursor as an id (0: from the start)."""
    return int(read_cursor(store, name) or 0)


def write_cursor(conn: sqlite3.Connection, name: str, value: str | int) -> None:
    """Save the position in the caller's transaction (with the work it records)."""
    conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_checked(name), str(value)))


async def save_cursor(store: Store, name: str, value: str | int) -> None:
    """Save the position in a transaction of its own."""
    _checked(name)
    await store.write(lambda c: write_cursor(c, name, value))
