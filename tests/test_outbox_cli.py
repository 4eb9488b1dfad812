"""`gateway outbox`: failed case rows are listed and can be queued again after a fix."""

from __future__ import annotations

import subprocess

from gateway.store import Store
from tests.support import VENV_BIN


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "gateway"), *args], capture_output=True, text=True,
                          timeout=60)


def test_failed_rows_are_listed_and_queued_again(tmp_path):
    store = Store(tmp_path / "gateway.db")
    store.open()
    try:
        def seed(c):
            c.execute("INSERT INTO alarms (key, rule_id, category, severity, state, message_zh,"
                      " message_en, occurred_at, raised_at, updated_at, case_error) VALUES "
                      "('k', 'sos', 'emergency_call', 'critical', 'raised', 'z', 'e', 't', 't',"
                      " 't', 'validation_error: grid_cell_code')")
            c.execute("INSERT INTO outbox (alarm_id, topic, idempotency_key, payload, created_at,"
                      " attempts, state, last_error) VALUES (1, 'case.create', 'site-x-1-0', "
                      "'{}', 't', 1, 'failed', 'validation_error: grid_cell_code')")
        store.write_sync(seed)
    finally:
        store.close()
    listed = _cli("outbox", "--data", str(tmp_path))
    assert listed.returncode == 0
    assert "seq 1 alarm 1 case.create after 1 attempt(s): validation_error: grid_cell_code" \
        in listed.stdout
    again = _cli("outbox", "--data", str(tmp_path), "--retry-failed")
    assert again.returncode == 0 and "1 row(s) queued again" in again.stdout
    store = Store(tmp_path / "gateway.db")
    store.open()
    try:
        assert store.query_one("SELECT state, attempts FROM outbox") == {"state": "pending",
                                                                          "attempts": 0}
        assert store.query_one("SELECT case_error FROM alarms")["case_error"] is None
        assert store.query_one("SELECT action FROM audit WHERE action='outbox.retry_failed'")
    finally:
        store.close()
    assert "no failed rows" in _cli("outbox", "--data", str(tmp_path)).stdout
