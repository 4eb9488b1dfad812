"""Resolving deliberately (issue 12.7): staff resolve a critical alarm only once it is
acknowledged, always with a reason they chose (there is no default). The system's own
resolves (a device clear with auto-resolve, the case system closing the case) are not held
to the rule."""

from __future__ import annotations

import asyncio
import secrets

from gateway.case_feedback import apply_case_event
from gateway.model import Severity, utc
from rules.actions import ClearAlarm, RaiseAlarm
from tests.api_fixtures import api_env, raise_sos  # noqa: F401  (fixture)


def _audit(env, action: str) -> list[dict]:
    return env.store.query("SELECT * FROM audit WHERE action=?", (action,))


def test_a_critical_alarm_is_acknowledged_before_staff_resolve_it(api_env):
    a = raise_sos(api_env)
    duty = api_env.client("duty")
    for client in (duty, api_env.bearer("duty")):     # sessions and machine clients alike
        r = client.post(f"/api/alarms/{a}/resolve", json={"reason": "handled"})
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "ack_required"
        assert r.json()["detail"] == (f"alarm {a} is critical and not acknowledged: "
                                      "acknowledge it before resolving it")
    alarm = api_env.ctx.book.get(a, with_events=True)
    assert alarm["state"] == "raised" and alarm["resolved_at"] is None
    assert [e["action"] for e in alarm["events"]] == ["raised"]
    assert _audit(api_env, "alarm.resolve") == []                     # nothing written

    assert duty.post(f"/api/alarms/{a}/ack", json={"note": "已电话联系"}).status_code == 200
    r = duty.post(f"/api/alarms/{a}/resolve", json={"reason": "handled", "note": "已上门"})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "resolved" and r.json()["resolved_by"] == "duty"
    assert r.json()["resolve_reason"] == "handled"
    r = duty.post(f"/api/alarms/{a}/resolve", json={"reason": "handled"})
    assert r.status_code == 409 and r.json()["code"] == "wrong_state"


def test_the_reason_has_no_default(api_env):
    a = raise_sos(api_env)
    duty = api_env.client("duty")
    assert duty.post(f"/api/alarms/{a}/ack", json={}).status_code == 200
    for body in ({}, {"note": "已处理"}, {"reason": ""}, {"reason": None}):
        r = duty.post(f"/api/alarms/{a}/resolve", json=body)
        assert r.status_code == 422, (body, r.text)
        [err] = r.json()["detail"]
        assert err["loc"] == ["body", "reason"] and err["type"] == "reason_required", err
        assert err["msg"].startswith("a reason is required to resolve an alarm (there is no "
                                     "default): one of handled, false_alarm"), err
    r = duty.post(f"/api/alarms/{a}/resolve", json={"reason": "whatever"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "reason"]
    assert api_env.ctx.book.get(a)["state"] == "acknowledged"

    schema = api_env.app.openapi()["components"]["schemas"]["ResolveBody"]
    assert schema["required"] == ["reason"]
    assert "default" not in schema["properties"]["reason"]
    assert api_env.client("duty").get("/api/resolve-reasons").json()["reasons"]


def test_only_critical_alarms_need_the_acknowledgement(api_env):
    site = api_env.ctx.site
    [change] = asyncio.run(api_env.ctx.book.apply([RaiseAlarm(
        f"leak:{secrets.token_hex(4)}", "leak", "water_leak", Severity.MAJOR, "caller-7-101",
        "h-7-101", site.household("h-7-101").grid_cell, "漏水", "Water leak", utc())]))
    r = api_env.client("duty").post(f"/api/alarms/{change.alarm_id}/resolve",
                                    json={"reason": "false_alarm"})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "resolved"


def test_the_systems_own_resolves_are_not_held_to_it(api_env):
    book, store = api_env.ctx.book, api_env.store
    # a device clear with auto-resolve closes an unacknowledged critical alarm
    key = f"sos:caller-7-101:{secrets.token_hex(4)}"
    a = raise_sos(api_env, key=key)
    [change] = asyncio.run(book.apply([ClearAlarm(key, utc(), "cancelled at the device", True)]))
    assert change.action == "resolved"
    alarm = book.get(a)
    assert alarm["state"] == "resolved" and alarm["resolved_by"] == "device"

    # the grid case system closing the case closes an unacknowledged critical alarm
    b = raise_sos(api_env)
    store.write_sync(lambda c: c.execute("UPDATE alarms SET case_id='C-77' WHERE id=?", (b,)))
    change = store.write_sync(lambda c: apply_case_event(
        c, event_id="ev-1", case_id="C-77", status="closed", handler="wangfang",
        note="已上门，住户平安", via="callback"))
    assert change is not None and change.action == "resolved"
    alarm = book.get(b)
    assert alarm["state"] == "resolved" and alarm["resolved_by"] == "case_system:wangfang"
