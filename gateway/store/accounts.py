"""Console users (``users``), browser sessions (``sessions``), API tokens (``api_tokens``)
and the one-time setup token (its hash in ``meta``). Only hashes of secrets are stored:
Argon2id for passwords, SHA-256 for session cookies and tokens (``gateway.auth``)."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from gateway.kernel.errors import StoreError

if TYPE_CHECKING:
    from gateway.store.core import Store

__all__ = ["NameTaken", "active_role", "add_session", "add_token", "add_user", "delete_session",
           "delete_user", "disable_user", "drop_setup_token", "enabled_admins",
           "enabled_user", "has_admin", "session", "set_setup_token", "setup_token",
           "token", "touch_session", "user", "user_exists", "users"]

_SETUP = "setup_token_hash"


class NameTaken(StoreError):
    """A user of that name exists already."""


# -- the first admin -------------------------------------------------------------------------
def has_admin(store: Store) -> bool:
    """An admin exists and is not disabled."""
    return store.query_one("SELECT 1 AS x FROM users WHERE role='admin' AND disabled=0"
                           ) is not None


def setup_token(store: Store) -> str | None:
    """The hash of the one-time setup token (None: none issued, or used)."""
    return store.get_meta(_SETUP)


def set_setup_token(conn: sqlite3.Connection, token_hash: str) -> None:
    conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_SETUP, token_hash))


def drop_setup_token(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM meta WHERE key=?", (_SETUP,))


# -- users -----------------------------------------------------------------------------------
def user_exists(store: Store, username: str) -> bool:
    return store.query_one("SELECT 1 AS x FROM users WHERE username=?", (username,)) is not None


def add_user(conn: sqlite3.Connection, username: str, role: str, display_name: str,
             password_hash: str, created_at: str) -> None:
    """A new user (:class:`NameTaken` when the name is taken)."""
    try:
        conn.execute("INSERT INTO users (username, role, display_name, password_hash, "
                     "created_at) VALUES (?,?,?,?,?)",
                     (username, role, display_name, password_hash, created_at))
    except sqlite3.IntegrityError as exc:
        raise NameTaken(f"user {username!r} exists") from exc


def delete_user(conn: sqlite3.Connection, username: str) -> None:
    conn.execute("DELETE FROM users WHERE username=?", (username,))


def users(store: Store) -> list[dict]:
    """Every user by name (never the password hash)."""
    return store.query("SELECT username, role, display_name, created_at, disabled "
                       "FROM users ORDER BY username")


def user(store: Store, username: str) -> dict | None:
    """A user's ``role`` and ``disabled``, or None."""
    return store.query_one("SELECT role, disabled FROM users WHERE username=?", (username,))


def enabled_user(store: Store, username: str) -> dict | None:
    """The whole row of a user who is not disabled (with the password hash), or None."""
    return store.query_one("SELECT * FROM users WHERE username=? AND disabled=0", (username,))


def active_role(store: Store, username: str) -> str | None:
    """The role of a user who is not disabled (None: no such user, or disabled)."""
    row = store.query_one("SELECT role FROM users WHERE username=? AND disabled=0",
                          (username,))
    return row["role"] if row else None


def enabled_admins(store: Store) -> int:
    row = store.query_one("SELECT count(*) AS n FROM users WHERE role='admin' AND disabled=0")
    return row["n"] if row else 0


def disable_user(conn: sqlite3.Connection, username: str) -> None:
    """Disable a user and end their sessions."""
    conn.execute("UPDATE users SET disabled=1 WHERE username=?", (username,))
    conn.execute("DELETE FROM sessions WHERE username=?", (username,))


# -- sessions --------------------------------------------------------------------------------
def add_session(conn: sqlite3.Connection, token_hash: str, username: str, csrf: str,
                created: float, last_seen: float) -> None:
    conn.execute("INSERT INTO sessions VALUES (?,?,?,?,?)",
                 (token_hash, username, csrf, created, last_seen))


def session(store: Store, token_hash: str) -> dict | None:
    """``username``, ``csrf``, ``created``, ``last_seen`` (epoch seconds), or None."""
    return store.query_one("SELECT * FROM sessions WHERE token_hash=?", (token_hash,))


def touch_session(conn: sqlite3.Connection, token_hash: str, now: float) -> None:
    """The session's last request (never moves back)."""
    conn.execute("UPDATE sessions SET last_seen=max(last_seen, ?) WHERE token_hash=?",
                 (now, token_hash))


def delete_session(conn: sqlite3.Connection, token_hash: str) -> None:
    conn.execute("DELETE FROM sessions WHERE token_hash=?", (token_hash,))


# -- API tokens ------------------------------------------------------------------------------
def add_token(conn: sqlite3.Connection, token_hash: str, name: str, role: str,
              created_at: str) -> None:
    conn.execute("INSERT INTO api_tokens (token_hash, name, role, created_at) "
                 "VALUES (?,?,?,?)", (token_hash, name, role, created_at))


def token(store: Store, token_hash: str) -> dict | None:
    """``name`` and ``role`` of a token that is not revoked, or None."""
    return store.query_one("SELECT name, role FROM api_tokens WHERE token_hash=? AND "
                           "revoked=0", (token_hash,))
