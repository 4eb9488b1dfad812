"""The store's schema, in one place: the baseline and the numbered migrations after it.

The version of a store is SQLite's ``PRAGMA user_version``.

- **Version 0, the baseline** (:data:`BASELINE`), is the schema the previous release
  (commit 780c6de) created: ``gateway/store.py``'s tables plus the ``device_tests`` and
  ``device_faults`` that its ``AlarmBook`` created on start. Its stores say
  ``user_version = 0`` (that release never set it) and carry ``meta.schema_version = '1'``.
- **Each migration** (:data:`MIGRATIONS`) takes the store from ``version - 1`` to
  ``version``. A new store is made the same way as an old one is upgraded — the baseline,
  then every step — so the two are the same by construction (tests/test_store_schema.py
  checks it against a store the previous release made).

:func:`migrate` runs when a :class:`~gateway.store.Store` opens: every pending step and the
new ``user_version`` in ONE transaction (``BEGIN IMMEDIATE``; SQLite's DDL is
transactional), so a crash or a failing step leaves the store exactly as it was, and two
processes opening the same old store upgrade it once (the second finds it done). A store
whose version is newer than this code knows is refused (``StoreError``): it was written by
a later release (roll back with that release's pre-upgrade backup, docs/deploy.md).

Rules for a new step: append it with the next number, never edit a released one; it must
keep the data (``ALTER TABLE ... ADD/RENAME/DROP COLUMN``, ``CREATE ... IF NOT EXISTS``,
``UPDATE``); say why in ``why``; docs/architecture.md "Store schema" lists the steps.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.kernel.errors import StoreError

__all__ = ["BASELINE", "MIGRATIONS", "SCHEMA_VERSION", "Migration", "migrate", "statements",
           "version_of"]

#: The schema of the previous release (780c6de), verbatim: gateway/store.py's _SCHEMA and
#: gateway/alarms.py's _create_device_tables. Never edit it: change the schema by a step.
BASELINE = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    source TEXT NOT NULL,
    reading TEXT NOT NULL,
    processed_at TEXT
);
CREATE INDEX IF NOT EXISTS inbox_pending ON inbox(seq) WHERE processed_at IS NULL;
CREATE TABLE IF NOT EXISTS alarms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    category TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('raised', 'acknowledged', 'resolved')),
    device_id TEXT,
    household_id TEXT,
    grid_cell TEXT,
    message_zh TEXT NOT NULL,
    message_en TEXT NOT NULL,
    value TEXT,
    count INTEGER NOT NULL DEFAULT 1,
    test INTEGER NOT NULL DEFAULT 0,
    occurred_at TEXT NOT NULL,
    raised_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    cleared_at TEXT,
    escalation_tier INTEGER NOT NULL DEFAULT 0,
    escalation_tier_name TEXT,
    ack_by TEXT, ack_at TEXT, ack_note TEXT,
    resolved_by TEXT, resolved_at TEXT, resolve_reason TEXT, resolve_note TEXT,
    case_id TEXT, case_status TEXT, case_error TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS alarms_open_key ON alarms(key) WHERE state != 'resolved';
CREATE INDEX IF NOT EXISTS alarms_state ON alarms(state, severity, raised_at);
CREATE TABLE IF NOT EXISTS alarm_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alarm_id INTEGER NOT NULL REFERENCES alarms(id),
    ts TEXT NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS alarm_events_alarm ON alarm_events(alarm_id, id);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    alarm_id INTEGER NOT NULL,
    topic TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    delivered_at TEXT,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(seq) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS outbox_alarm ON outbox(alarm_id, seq);
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY, role TEXT NOT NULL, display_name TEXT NOT NULL DEFAULT '',
    password_hash TEXT NOT NULL, created_at TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY, username TEXT NOT NULL, csrf TEXT NOT NULL,
    created REAL NOT NULL, last_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS api_tokens (
    token_hash TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL,
    created_at TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS case_callbacks (
    event_id TEXT PRIMARY KEY, received_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS device_tests (id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, rule_id TEXT NOT NULL, ts TEXT NOT NULL, value TEXT);
CREATE INDEX IF NOT EXISTS device_tests_device ON device_tests(device_id, id);
CREATE TABLE IF NOT EXISTS device_faults (key TEXT PRIMARY KEY, fault TEXT NOT NULL, device_id TEXT, household_id TEXT, grid_cell TEXT, severity TEXT NOT NULL, message_zh TEXT NOT NULL, message_en TEXT NOT NULL, raised_at TEXT NOT NULL, cleared_at TEXT);
"""  # noqa: E501 - the device tables as the previous release wrote them, one line each


@dataclass(frozen=True, slots=True)
class Migration:
    """One step: from ``version - 1`` to ``version``."""

    version: int
    why: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "alarm_book: the rule engine's bookkeeping per alarm key, written with each "
                 "alarm change (docs/architecture.md, Guarantees); stores of the development "
                 "line after 780c6de have it already",
              """
CREATE TABLE IF NOT EXISTS alarm_book (
    key TEXT PRIMARY KEY,
    alarm_id INTEGER,
    state TEXT NOT NULL,
    version INTEGER NOT NULL
);
"""),
    Migration(2, "outbox.next_attempt_at dropped: never written (the forwarder backs off as a "
                 "whole, in memory: one backoff and a circuit breaker for the case system, "
                 "not per row), so it only ever said 0",
              "ALTER TABLE outbox DROP COLUMN next_attempt_at;"),
    Migration(3, "meta.schema_version dropped: the version is PRAGMA user_version (the "
                 "previous release wrote '1' once, at creation, and never read it)",
              "DELETE FROM meta WHERE key = 'schema_version';"),
    Migration(4, "help requests (求助, their own lifecycle and their own outbox of service "
                 "cases: never the alarm outbox, whose rows belong to alarms) and visits "
                 "(探访) of households (issue 15, items 4 and 5)",
              """
CREATE TABLE help_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    category TEXT NOT NULL,
    household_id TEXT NOT NULL,
    grid_cell TEXT NOT NULL,
    device_id TEXT,
    channel TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    assigned_to TEXT,
    assigned_at TEXT,
    done_by TEXT,
    done_at TEXT,
    feedback TEXT,
    feedback_note TEXT NOT NULL DEFAULT '',
    feedback_at TEXT,
    case_id TEXT,
    case_status TEXT,
    case_error TEXT,
    request_key TEXT UNIQUE
);
CREATE INDEX help_requests_case ON help_requests(case_id);
CREATE INDEX help_requests_state ON help_requests(state, id);
CREATE TABLE help_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    help_id INTEGER NOT NULL,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX help_events_help ON help_events(help_id, id);
CREATE TABLE help_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    help_id INTEGER NOT NULL,
    topic TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at TEXT NOT NULL,
    delivered_at TEXT
);
CREATE INDEX help_outbox_state ON help_outbox(state, seq);
CREATE TABLE visits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    household_id TEXT NOT NULL,
    grid_cell TEXT NOT NULL,
    visited_at TEXT NOT NULL,
    visitor TEXT NOT NULL,
    recorded_by TEXT NOT NULL,
    via TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    request_key TEXT UNIQUE
);
CREATE INDEX visits_household ON visits(household_id, visited_at);
CREATE INDEX visits_time ON visits(visited_at);
"""),
    Migration(5, "household care states (外出 away, 住院 hospital, 有人陪护 carer), one row per "
                 "household while one is in force (issue 15, item 1); their history is the "
                 "audit log",
              """
CREATE TABLE household_care (
    household_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    started_at TEXT NOT NULL,
    expected_end TEXT,
    note TEXT NOT NULL DEFAULT '',
    via TEXT NOT NULL,
    set_by TEXT NOT NULL,
    set_at TEXT NOT NULL
);
"""),
    Migration(6, "one outbox for the case system: service cases (help requests) join the "
                 "alarm cases in ``outbox``, told apart by ``kind`` ('alarm': ``alarm_id``; "
                 "'service': ``help_id``), so one forwarder, one breaker and one "
                 "``gateway outbox`` serve both; ``help_outbox``'s rows (pending ones "
                 "included, keys and attempts as they were) are carried over in their order "
                 "and the table dropped. SQLite cannot make ``alarm_id`` nullable in place: "
                 "the table is made anew and its rows copied with their ``seq``",
              """
CREATE TABLE outbox_new (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL DEFAULT 'alarm' CHECK (kind IN ('alarm', 'service')),
    alarm_id INTEGER,
    help_id INTEGER,
    topic TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    delivered_at TEXT,
    last_error TEXT,
    CHECK ((kind = 'alarm') = (alarm_id IS NOT NULL)),
    CHECK ((kind = 'service') = (help_id IS NOT NULL))
);
INSERT INTO outbox_new (seq, kind, alarm_id, topic, idempotency_key, payload, created_at,
                        attempts, state, delivered_at, last_error)
    SELECT seq, 'alarm', alarm_id, topic, idempotency_key, payload, created_at, attempts,
           state, delivered_at, last_error FROM outbox ORDER BY seq;
INSERT INTO outbox_new (kind, help_id, topic, idempotency_key, payload, created_at,
                        attempts, state, delivered_at, last_error)
    SELECT 'service', help_id, topic, idempotency_key, payload, created_at, attempts,
           CASE WHEN state IN ('pending', 'delivered', 'failed') THEN state ELSE 'pending' END,
           delivered_at, last_error FROM help_outbox ORDER BY seq;
DROP TABLE outbox;
DROP TABLE help_outbox;
ALTER TABLE outbox_new RENAME TO outbox;
CREATE INDEX outbox_pending ON outbox(seq) WHERE state = 'pending';
CREATE INDEX outbox_alarm ON outbox(alarm_id, seq);
CREATE INDEX outbox_help ON outbox(help_id, seq);
"""),
    Migration(7, "the command events a start looks for, indexed on their own (partial "
                 "indexes): the linkage's recovery (``store.commands.unfinished``, "
                 "``unresolved_plans``) scanned every alarm event, ~15 ms each per 50,000 "
                 "alarms on the event loop before the alarm session could subscribe",
              """
CREATE INDEX IF NOT EXISTS alarm_events_planned ON alarm_events(id)
    WHERE action = 'commands_planned';
CREATE INDEX IF NOT EXISTS alarm_events_requested ON alarm_events(id)
    WHERE action = 'command_requested';
"""),
)

#: The version this code makes and reads.
SCHEMA_VERSION = MIGRATIONS[-1].version


def statements(script: str) -> list[str]:
    """The SQL statements of ``script``, one by one (``executescript`` would commit the
    transaction the migration runs in)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete SQL statement: {buf.strip()[:80]!r}")
    return out


def version_of(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection,
            steps: Sequence[Migration] = MIGRATIONS) -> tuple[int, int]:
    """Bring the store on ``conn`` (autocommit mode, no transaction open) to the version of
    the last of ``steps``: (version found, version now). One transaction for all of it."""
    newest = steps[-1].version if steps else 0
    if newest and version_of(conn) == newest:      # the usual case: no write lock taken
        return newest, newest
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = version_of(conn)     # read inside the lock: another process may have done it
        if found > newest:
            raise StoreError(f"store schema version {found} is newer than this gateway's "
                             f"({newest}): it was written by a later release")
        if found == 0:
            for sql in statements(BASELINE):
                conn.execute(sql)
        for step in steps:
            if step.version > found:
                for sql in statements(step.sql):
                    conn.execute(sql)
        if newest != found:
            conn.execute(f"PRAGMA user_version = {int(newest)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found, newest
