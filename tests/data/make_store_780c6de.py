"""Make a store with the code of the previous release, 780c6de, and print it as SQL.

Run with that release's code first on the path (tests/test_store_schema.py does, when the
git history is at hand)::

    git archive 780c6de gateway rules drivers edge_config | tar -x -C /tmp/prev
    PYTHONPATH=/tmp/prev python tests/data/make_store_780c6de.py /tmp/prev.db \\
        /tmp/prev/edge_config/examples/tianlin > tests/data/store_780c6de.sql

The store has what a running gateway of that release writes: alarms raised, retriggered,
escalated, acknowledged, resolved and cleared with their history; outbox rows delivered,
refused and pending (retried once); a case status callback; a device fault and a test
record; an unprocessed inbox row; the notifier's, upstream's and case poller's cursors and a
rule engine snapshot; users, a session, an API token, the setup token's hash; audit entries.
The first line says the session cookie, the API token and the users' password.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sqlite3
import sys
from datetime import timedelta
from pathlib import Path

# that release's modules, looked up at run time: this tree's own differ, and no type
# checker or linter should take these names for theirs
_old = {name: importlib.import_module(name) for name in (
    "gateway.alarms", "gateway.auth", "gateway.case_feedback", "gateway.forwarder",
    "gateway.model", "gateway.pipeline", "gateway.store", "edge_config.loader",
    "rules.actions")}
PASSWORD = "correct horse battery"


async def make(db: Path, site_dir: Path) -> dict:
    model, actions = _old["gateway.model"], _old["rules.actions"]
    forwarder, pipeline = _old["gateway.forwarder"], _old["gateway.pipeline"]
    apply_case_event = _old["gateway.case_feedback"].apply_case_event
    crit = model.Severity.CRITICAL
    async with _old["gateway.store"].Store(db) as store:
        book = _old["gateway.alarms"].AlarmBook(store, _old["edge_config.loader"].load_site(
            site_dir))
        t = model.utc() - timedelta(minutes=5)
        sos = actions.RaiseAlarm("sos:caller-7-101", "sos", "emergency_call", crit,
                                 "caller-7-101", "h-7-101", "310104-012-03", "一键呼叫", "SOS",
                                 t, True)
        smoke = actions.RaiseAlarm("smoke:smoke-7-101", "smoke", "fire", crit, "smoke-7-101",
                                   "h-7-101", "310104-012-03", "烟感报警", "Smoke", t, True)
        [a1] = await book.apply([sos])
        await book.apply([sos])                                   # retriggered: count 2
        await book.apply([smoke])
        await book.apply([actions.Escalate(smoke.key, 1, "grid_member", ("grid_member",), t)])
        await book.apply([actions.RaiseFault("fault:caller-7-102:battery_low", "battery_low",
                                             "caller-7-102", "h-7-102", "310104-012-03",
                                             "电量低", "battery low", t)])
        await book.apply([actions.TestRecord("caller-7-103", "sos", t, True)])
        await book.acknowledge(a1.alarm_id, "wangfang", "已电话联系")
        await book.resolve(a1.alarm_id, "wangfang", "handled", "已上门")
        await book.apply([actions.ClearAlarm(smoke.key, t, "smoke gone", False)])
        rows = store.query("SELECT * FROM outbox ORDER BY seq")
        # the first create delivered, the first update refused, the rest pending (one of
        # them tried once)
        Outcome = forwarder.Outcome
        outs = [Outcome(rows[0]["seq"], rows[0]["alarm_id"], rows[0]["topic"], "delivered",
                        case_id="C-1", status="accepted"),
                Outcome(rows[2]["seq"], rows[2]["alarm_id"], rows[2]["topic"], "failed",
                        error="invalid_payload: grid_cell_code"),
                Outcome(rows[1]["seq"], rows[1]["alarm_id"], rows[1]["topic"], "retry",
                        error="timeout")]
        await store.write(lambda c: forwarder._apply(c, outs))
        await store.write(lambda c: apply_case_event(
            c, event_id="ev-1", case_id="C-1", status="dispatched", handler="李", note="派单",
            via="callback"))
        reading = model.Reading(device_id="caller-7-101", kind="sos", value=True, ts=t)
        await store.write(lambda c: pipeline._insert_inbox(c, [pipeline._Pending([reading],
                                                                                  None)]))
        await store.set_meta("notify_cursor", "3")
        await store.set_meta("upstream_cursor", "2")
        await store.set_meta("case_poll_since", t.isoformat())
        await store.set_meta("rules_snapshot", "{}")
        auth = _old["gateway.auth"].Auth(store)
        auth.issue_setup_token()
        auth.add_user("admin", "admin", PASSWORD, display_name="管理员")
        auth.add_user("duty", "duty", PASSWORD, display_name="值班员")
        cookie, _ = auth.login("duty", PASSWORD, "10.0.0.5")
        token = auth.create_token("installer", "tablet")
        await store.audit("cli", "site.edit", "devices.yaml", note="x")
    return {"cookie": cookie, "token": token, "password": PASSWORD}


def main() -> None:
    db, site_dir = Path(sys.argv[1]), Path(sys.argv[2])
    secrets = asyncio.run(make(db, site_dir))
    conn = sqlite3.connect(db)
    print("-- " + json.dumps(secrets))
    print(f"PRAGMA user_version = {conn.execute('PRAGMA user_version').fetchone()[0]};")
    for line in conn.iterdump():
        print(line)
    conn.close()


if __name__ == "__main__":
    main()
