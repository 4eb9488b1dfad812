"""SQLite database files as a whole, for backup and restore (``gateway.backup``): an online
copy of a live database and an integrity check. They work on any SQLite file of the data
directory (the store, the embedded telemetry) and never change the source: a backup of a
store of an earlier release is a copy of that store, not upgraded (the gateway upgrades
it when it opens it, :mod:`.schema`)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.kernel.errors import StoreError

__all__ = ["copy_database", "integrity_check"]


def copy_database(src: Path, dest: Path) -> dict:
    """Copy the live database ``src`` to the new file ``dest`` with SQLite's online backup
    API (in steps: writers are not blocked for long; a snapshot of one committed state, WAL
    included), as one self-contained file. Facts of the copy: ``integrity`` (``"ok"`` or
    what ``PRAGMA integrity_check`` found), ``schema_version`` (``PRAGMA user_version``),
    ``instance_id`` (None where the file has no ``meta``). StoreError if SQLite fails.

    Run as root (sudo, install.sh) on a stopped gateway, SQLite creates the store's -wal/-shm
    files and gives them the database file's owner itself, so the service keeps access.
    """
    try:
        # read-only URI: a backup never changes the live store's content
        live = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30)
        try:
            copy = sqlite3.connect(dest)
            try:
                live.backup(copy, pages=1024)
                facts: dict = {"integrity": copy.execute("PRAGMA integrity_check").fetchone()[0],
                               "schema_version": copy.execute("PRAGMA user_version").fetchone()[0],
                               "instance_id": None}
                if facts["integrity"] != "ok":
                    return facts
                if copy.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone():
                    row = copy.execute("SELECT value FROM meta WHERE key='instance_id'"
                                       ).fetchone()
                    facts["instance_id"] = row[0] if row else None
                copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            finally:
                copy.close()
        finally:
            live.close()
    except sqlite3.Error as exc:
        raise StoreError(str(exc)) from exc
    return facts


def integrity_check(path: Path) -> str:
    """``"ok"``, or what ``PRAGMA integrity_check`` found wrong. StoreError if the file
    cannot be read as a database."""
    try:
        conn = sqlite3.connect(path)
        try:
            return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(str(exc)) from exc
