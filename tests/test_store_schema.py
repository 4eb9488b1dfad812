"""The store's schema in one place, with migrations (gateway/store/schema.py), and the store
package as the only place that speaks SQL.

A store of the previous release (780c6de) is tests/data/store_780c6de.sql: made by that
release's own code (tests/data/make_store_780c6de.py; the last test makes it again from the
git history, when the history is at hand, and checks the file is what that release makes).
"""

from __future__ import annotations

import ast
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gateway import StoreError
from gateway.alarms import AlarmBook
from gateway.auth import Auth
from gateway.model import Severity, utc
from gateway.site import load_site
from gateway.store import SCHEMA_VERSION, Store, cursors, events, inbox, outbox, schema
from rules.actions import RaiseAlarm
from tests.support import EXAMPLE

ROOT = Path(__file__).resolve().parent.parent
DUMP = ROOT / "tests" / "data" / "store_780c6de.sql"
MAKER = ROOT / "tests" / "data" / "make_store_780c6de.py"
PREVIOUS = "780c6de"
LONG = 10 * 365 * 86400.0    # the fixture's session was made long ago: no expiry here


def previous_store(path: Path) -> dict:
    """A store as the previous release left it; the secrets to log in with."""
    text = DUMP.read_text(encoding="utf-8")
    conn = sqlite3.connect(path)
    conn.executescript(text)
    conn.close()
    return json.loads(text.splitlines()[0].removeprefix("-- "))


def raw(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    return conn


def contents(path: Path) -> dict[str, list[dict]]:
    """Every row of every table, as dicts, in rowid order."""
    conn = raw(path)
    try:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {n: [dict(r) for r in conn.execute(f'SELECT * FROM "{n}" ORDER BY rowid')]
                for n in names}
    finally:
        conn.close()


def shape(path: Path) -> set[tuple[str, str, str]]:
    """The schema as SQLite keeps it: (type, name, sql) of every table and index."""
    conn = raw(path)
    try:
        return {(r["type"], r["name"], r["sql"] or "") for r in conn.execute(
            "SELECT type, name, sql FROM sqlite_master")}
    finally:
        conn.close()


def user_version(path: Path) -> int:
    conn = raw(path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def test_the_steps_are_numbered_one_after_the_other():
    assert [m.version for m in schema.MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))
    for m in schema.MIGRATIONS:
        assert m.why and schema.statements(m.sql)


def test_a_new_store_is_the_previous_release_s_store_upgraded(tmp_path):
    """New stores are made the way old ones are upgraded (baseline + every step)."""
    previous_store(tmp_path / "old.db")
    for name in ("old.db", "new.db"):
        Store(tmp_path / name).open()
    assert shape(tmp_path / "new.db") == shape(tmp_path / "old.db")
    assert user_version(tmp_path / "new.db") == user_version(tmp_path / "old.db") \
        == SCHEMA_VERSION
    columns = [r[1] for r in raw(tmp_path / "new.db").execute("PRAGMA table_info(outbox)")]
    assert "next_attempt_at" not in columns        # never written: dropped (step 2)
    names = {n for _t, n, _s in shape(tmp_path / "new.db")}
    assert {"alarm_book", "device_tests", "device_faults"} <= names


async def test_a_store_of_the_previous_release_upgrades_in_place_with_its_data(tmp_path):
    db = tmp_path / "gateway.db"
    secrets = previous_store(db)
    before = contents(db)
    assert user_version(db) == 0 and "alarm_book" not in before

    store = Store(db)
    store.open()
    try:
        after = contents(db)
        assert user_version(db) == SCHEMA_VERSION
        # every row kept, as it was: only the column and meta row the steps drop are gone;
        # the outbox's rows are alarms' (step 6: one outbox with service cases)
        for table, rows in before.items():
            kept = rows
            if table == "outbox":
                kept = [{**{k: v for k, v in r.items() if k != "next_attempt_at"},
                         "kind": "alarm", "help_id": None} for r in rows]
            elif table == "meta":
                kept = [r for r in rows if r["key"] != "schema_version"]
            elif table == "sqlite_sequence":    # the outbox made anew (step 6): its row last
                kept, after[table] = sorted(rows, key=str), sorted(after[table], key=str)
            assert after[table] == kept, table
        assert after["alarm_book"] == []
        iid = {r["key"]: r["value"] for r in before["meta"]}["instance_id"]
        assert store.instance_id == iid

        # ... and the gateway carries on with it
        book = AlarmBook(store, load_site(EXAMPLE))
        state = book.engine_state()
        assert [a.key for a in state.stored] == ["smoke:smoke-7-101"]
        assert state.open_faults == ["fault:caller-7-102:battery_low"]
        assert state.journal == {}            # no journal yet: the rows say it (Guarantees)
        assert [e["action"] for e in book.get(1, with_events=True)["events"]] == [
            "raised", "retriggered", "acknowledged", "resolved", "case_created", "case_status"]

        sos = RaiseAlarm("sos:caller-7-101", "sos", "emergency_call", Severity.CRITICAL,
                         "caller-7-101", "h-7-101", "310104-012-03", "一键呼叫", "SOS", utc(),
                         True)
        smoke = RaiseAlarm("smoke:smoke-7-101", "smoke", "fire", Severity.CRITICAL,
                           "smoke-7-101", "h-7-101", "310104-012-03", "烟感报警", "Smoke",
                           utc(), True)
        changes = await book.apply([sos, smoke], journal=[("sos:caller-7-101", {"open": 3}, 1)])
        assert [(c.alarm_id, c.action) for c in changes] == [(3, "raised"), (2, "updated")]
        assert book.get(2)["count"] == 2
        await book.acknowledge(2, "wangfang")
        keys = {r["alarm_id"]: r["idempotency_key"] for r in store.query(
            "SELECT alarm_id, idempotency_key FROM outbox WHERE seq > 5")}
        assert keys == {3: f"tianlin-07-{iid}-3-0", 2: f"tianlin-07-{iid}-2-2"}
        assert store.query("SELECT key, alarm_id FROM alarm_book") == [
            {"key": "sos:caller-7-101", "alarm_id": 3}]

        # the outbox: the oldest pending row of each alarm, refused rows queued again
        assert [r["seq"] for r in outbox.due(store, 10)] == [2, 4, 6]
        assert [r["seq"] for r in outbox.failed(store)] == [3]
        assert store.write_sync(outbox.requeue_failed) == 1
        assert book.get(1)["case_error"] is None
        assert [r["seq"] for r in outbox.due(store, 10)] == [2, 3, 6]

        # the readers' cursors, the inbox, accounts
        assert cursors.event_cursor(store, cursors.NOTIFY) == 3
        assert cursors.event_cursor(store, cursors.UPSTREAM) == 2
        assert cursors.read_cursor(store, cursors.CASE_POLL).startswith("20")
        assert events.count_after(store, 2) == events.last_event_id(store) - 2
        assert [r["seq"] for r in inbox.unprocessed(store)] == [1]
        auth = Auth(store, idle_s=LONG, max_s=LONG)
        assert auth.from_cookie(secrets["cookie"]).name == "duty"
        assert auth.from_bearer(secrets["token"]).role == "installer"
        assert auth.login("admin", secrets["password"], "10.0.0.9")[1].role == "admin"
    finally:
        store.close()

    # opened again: nothing left to do
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        assert schema.migrate(conn) == (SCHEMA_VERSION, SCHEMA_VERSION)
    finally:
        conn.close()


def test_a_failing_step_leaves_the_store_as_it_was(tmp_path):
    db = tmp_path / "gateway.db"
    previous_store(db)
    before, old_shape = contents(db), shape(db)
    bad = schema.Migration(SCHEMA_VERSION + 1, "test: fails halfway",
                           "CREATE TABLE half (a);\nINSERT INTO nowhere VALUES (1);")
    conn = sqlite3.connect(db, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="nowhere"):
        schema.migrate(conn, (*schema.MIGRATIONS, bad))
    conn.close()
    assert user_version(db) == 0
    assert contents(db) == before and shape(db) == old_shape
    Store(db).open()           # and the real steps still apply
    assert user_version(db) == SCHEMA_VERSION


def test_a_store_of_a_later_release_is_refused(tmp_path):
    db = tmp_path / "gateway.db"
    Store(db).open()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this gateway"):
        Store(db).open()
    assert user_version(db) == SCHEMA_VERSION + 1


def test_two_processes_opening_an_old_store_upgrade_it_once(tmp_path):
    db = tmp_path / "gateway.db"
    previous_store(db)
    results: list = []

    def open_it() -> None:
        conn = sqlite3.connect(db, isolation_level=None, timeout=30)
        try:
            results.append(schema.migrate(conn))
        finally:
            conn.close()

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [(0, SCHEMA_VERSION)] + [(SCHEMA_VERSION, SCHEMA_VERSION)] * 3


# -- no SQL outside the store package -------------------------------------------------------
#: Modules of gateway/ that may use SQLite themselves, and why.
OWN_DATABASE = {
    # the embedded telemetry sink: its own file (telemetry.db), its own writer thread and
    # schema (raw + rollups, docs/telemetry.md); not the store
    "gateway/telemetry.py",
}
_SQL = re.compile(r"""["'](SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|PRAGMA|REPLACE)\s""")


def _gateway_modules() -> list[Path]:
    return sorted(p for p in (ROOT / "gateway").rglob("*.py")
                  if "store" not in p.relative_to(ROOT / "gateway").parts[:1])


def test_no_sql_outside_the_store_package():
    found = []
    for path in _gateway_modules():
        rel = str(path.relative_to(ROOT))
        if rel in OWN_DATABASE:
            continue
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) \
                    else [node.module or ""]
                if "sqlite3" in mods:
                    found.append(f"{rel}:{node.lineno}: imports sqlite3")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
                    node.func.attr in ("execute", "executemany", "executescript")
                    or node.func.attr in ("query", "query_one") and node.args):
                found.append(f"{rel}:{node.lineno}: .{node.func.attr}(...)")
        for n, line in enumerate(text.splitlines(), 1):
            if _SQL.search(line):
                found.append(f"{rel}:{n}: {line.strip()}")
    assert found == []


def test_the_store_package_imports_only_the_kernel_and_itself():
    for path in sorted((ROOT / "gateway" / "store").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mod = node.module
                if mod == "gateway" or mod.startswith("gateway."):
                    assert mod.startswith(("gateway.kernel", "gateway.store")), \
                        f"{path.name} imports {mod}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith(("gateway", "rules", "drivers",
                                                      "edge_config", "simulators")) \
                        or alias.name.startswith(("gateway.kernel", "gateway.store")), \
                        f"{path.name} imports {alias.name}"


# -- the fixture is what the previous release makes -----------------------------------------
def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, timeout=60,
                          check=False)


def test_the_fixture_is_a_store_of_the_previous_release(tmp_path):
    """Make the store again with the previous release's own code (from the git history):
    the fixture has its schema, tables and columns, and as many rows of each."""
    try:
        have = _git("cat-file", "-e", f"{PREVIOUS}^{{commit}}").returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        have = False
    if not have:
        pytest.skip(f"no git history with {PREVIOUS} at hand")
    tree = tmp_path / "prev"
    tree.mkdir()
    archive = _git("archive", PREVIOUS, "gateway", "rules", "drivers", "edge_config")
    assert archive.returncode == 0, archive.stderr
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True,
                   timeout=60)
    env = dict(os.environ, PYTHONPATH=str(tree))
    made = subprocess.run([sys.executable, str(MAKER), str(tmp_path / "made.db"),
                           str(tree / "edge_config" / "examples" / "tianlin")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
                          check=False)
    assert made.returncode == 0, made.stderr
    previous_store(tmp_path / "fixture.db")
    assert shape(tmp_path / "made.db") == shape(tmp_path / "fixture.db")
    ours, theirs = contents(tmp_path / "fixture.db"), contents(tmp_path / "made.db")
    assert {t: len(r) for t, r in ours.items()} == {t: len(r) for t, r in theirs.items()}
    assert {t: list(r[0]) for t, r in ours.items() if r} == \
        {t: list(r[0]) for t, r in theirs.items() if r}



def test_the_linkage_s_recovery_reads_its_command_events_by_their_indexes(tmp_path):
    """A start looks for commands in flight and plans not resolved (``store.commands``): by
    step 7's partial indexes, not a scan of every alarm event (~15 ms per query at 50,000
    alarms, on the event loop before the alarm session subscribes): a query rewritten so
    that its terms no longer match an index's (``action IN (...)``, another action name)
    would silently scan again."""
    from gateway.store import commands

    store = Store(tmp_path / "gateway.db")
    store.open()
    try:
        reader = store._reader
        assert reader is not None
        seen: list[str] = []
        reader.set_trace_callback(seen.append)
        assert commands.unfinished(store) == [] and commands.unresolved_plans(store) == []
        reader.set_trace_callback(None)
        plans = {" ".join(str(row[-1]) for row in reader.execute(f"EXPLAIN QUERY PLAN {sql}"))
                 for sql in seen if "alarm_events" in sql}
        assert len(plans) == 2, seen
        assert any("USING INDEX alarm_events_planned" in p for p in plans), plans
        assert any("USING INDEX alarm_events_requested" in p for p in plans), plans
    finally:
        store.close()
