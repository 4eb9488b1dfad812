"""Call plans and response guidance from the site config (issue 13.1, 13.2): validation with
located errors, the plan an alarm gets (site default, per-household override), role
masking, and the call outcome endpoint (roles, CSRF, bad outcome, idempotent request, the
history event and the outbox row for the case)."""

from __future__ import annotations

import json
import shutil

import pytest

from gateway.call_plans import plan_for
from gateway.forwarder import to_case_update
from gateway.kernel.errors import ConfigError
from gateway.site import load_site
from tests.api_fixtures import api_env, raise_sos  # noqa: F401  (fixture)
from tests.support import EXAMPLE


def _site(tmp_path, edit=None):
    d = tmp_path / "site"
    shutil.copytree(EXAMPLE, d)
    if edit is not None:
        text = (d / "site.yaml").read_text(encoding="utf-8")
        (d / "site.yaml").write_text(edit(text), encoding="utf-8")
    return d


def test_the_example_site_has_plans_and_guidance():
    site = load_site(EXAMPLE)
    keys = [c.key for c in plan_for(site, "emergency_call", "h-7-101", None)]
    assert keys == ["resident:0", "contact:0", "grid_member", "on_call:ambulance"]
    # the household's own plan for emergency calls: the neighbour first (no resident phone)
    keys = [c.key for c in plan_for(site, "emergency_call", "h-7-302", None)]
    assert keys == ["contact:0", "contact:1", "grid_member", "on_call:ambulance"]
    # its smoke alarm follows the site's fire plan
    fire = plan_for(site, "fire", "h-7-302", None)
    assert [c.key for c in fire] == ["on_call:fire_brigade", "resident:0", "on_call:property",
                                     "grid_member", "on_call:duty_officer"]
    assert fire[1].phone is None and fire[3].phone == "138-0000-0011"
    # a shared device (micro fire station): no residents, the cell's grid member
    station = plan_for(site, "fire", None, "310104-012-04")
    assert [c.name for c in station if c.kind == "grid_member"] == ["李强"]
    # a category without its own entry: the default
    assert [c.key for c in plan_for(site, "intrusion", "h-9-201", None)] == [
        "resident:0", "resident:1", "grid_member", "on_call:duty_officer"]


@pytest.mark.parametrize("edit, expected", [
    (lambda t: t.replace("call_plan: [resident, property, grid_member]",
                         "call_plan: [resident, propery, grid_member]"),
     r"site\.yaml:\d+: response\.water_leak\.call_plan\[1\]: unknown call plan step "
     r"'propery'"),
    (lambda t: t.replace("  water_leak:\n", "  water_lek:\n"),
     r"site\.yaml:\d+: response\.water_lek: unknown alarm category 'water_lek'"),
    (lambda t: t.replace("emergency_call: [contacts, grid_member, ambulance]",
                         "emergency_call: [contacts, grid_member, ambulence]"),
     r"site\.yaml:\d+: households\[1\]\.call_plans\.emergency_call\[2\]: unknown call plan "
     r"step 'ambulence'"),
    (lambda t: t.replace('grid_member_phone: "138-0000-0011"', 'grid_member_phone: "call me"'),
     r"site\.yaml:\d+: grid_cells\[0\]\.grid_member_phone: String should match pattern"),
    (lambda t: t.replace("    priority: 4\n", "    priority: 0\n"),
     r"site\.yaml:\d+: response\.water_leak\.priority: Input should be greater than or equal "
     r"to 1"),
    (lambda t: t.replace("      zh:\n        - \"电话告知住户关闭进水总阀\"",
                         "      zn:\n        - \"电话告知住户关闭进水总阀\""),
     r"site\.yaml:\d+: response\.water_leak\.guidance\.zh: Field required"),
])
def test_config_errors_name_file_line_and_field(tmp_path, edit, expected):
    import re

    d = _site(tmp_path, edit)
    with pytest.raises(ConfigError) as exc:
        load_site(d)
    text = str(exc.value)
    assert re.search(expected, text), text


def test_the_error_names_the_right_line(tmp_path):
    d = _site(tmp_path, lambda t: t.replace("call_plan: [resident, property, grid_member]",
                                            "call_plan: [resident, propery, grid_member]"))
    with pytest.raises(ConfigError) as exc:
        load_site(d)
    line = int(str(exc.value).split("site.yaml:")[1].split(":")[0])
    assert "propery" in (d / "site.yaml").read_text().splitlines()[line - 1]


def test_card_shows_plan_and_guidance_masked_by_role(api_env):
    a = raise_sos(api_env, "caller-7-101")
    duty = api_env.client("duty").get(f"/api/alarms/{a}").json()
    plan = duty["response"]["call_plan"]
    assert [(c["key"], c["name"], c["phone"]) for c in plan] == [
        ("resident:0", "张桂英", "138-0000-0021"), ("contact:0", "张伟", "13800000001"),
        ("grid_member", "王芳", "138-0000-0011"),
        ("on_call:ambulance", "急救中心（120）", "138-0000-0120")]
    assert duty["response"]["guidance"]["zh"][0] == "回拨住户，问清需要什么帮助"
    assert duty["response"]["guidance"]["en"][0].startswith("Call the resident back")
    assert duty["response"]["priority"] == 3
    assert duty["household"]["residents"] == [{"name": "张桂英", "phone": "138-0000-0021"}]
    # installers (no contacts.read): every phone masked, residents' and contacts' names too
    inst = api_env.client("installer").get(f"/api/alarms/{a}").json()
    plan = inst["response"]["call_plan"]
    assert [(c["name"], c["phone"]) for c in plan] == [
        ("张*", "138****0021"), ("张*", "138****0001"), ("王芳", "138****0011"),
        ("急救中心（120）", "138****0120")]
    assert inst["household"]["residents"] == [{"name": "张*", "phone": "138****0021"}]
    listed = api_env.client("installer").get("/api/alarms").json()["alarms"][0]
    assert "0021" in json.dumps(listed) and "138-0000-0021" not in json.dumps(listed)


def _outbox(env, alarm_id: int) -> list[dict]:
    return env.store.query("SELECT topic, payload FROM outbox WHERE alarm_id=? ORDER BY seq",
                           (alarm_id,))


def test_recording_a_call_outcome(api_env):
    a = raise_sos(api_env, "caller-7-101")
    duty = api_env.client("duty")
    r = duty.post(f"/api/alarms/{a}/calls", json={"contact": "resident:0",
                                                  "outcome": "no_answer",
                                                  "request_id": "tap-0001-abcdef"})
    assert r.status_code == 200, r.text
    plan = r.json()["response"]["call_plan"]
    assert plan[0]["outcomes"][0]["outcome"] == "no_answer"
    assert plan[0]["outcomes"][0]["by"] == "duty"
    # the same tap again (a retry after a lost reply): nothing recorded twice
    again = duty.post(f"/api/alarms/{a}/calls", json={"contact": "resident:0",
                                                      "outcome": "no_answer",
                                                      "request_id": "tap-0001-abcdef"})
    assert again.status_code == 200 and len(again.json()["response"]["call_plan"][0][
        "outcomes"]) == 1
    assert duty.post(f"/api/alarms/{a}/calls", json={"contact": "contact:0",
                                                     "outcome": "connected"}).status_code == 200
    events = duty.get(f"/api/alarms/{a}").json()["events"]
    calls = [e for e in events if e["action"] == "call"]
    assert [(e["actor"], e["detail"]["contact"], e["detail"]["name"], e["detail"]["outcome"])
            for e in calls] == [("duty", "resident:0", "张桂英", "no_answer"),
                                ("duty", "contact:0", "张伟", "connected")]
    # one case update per call, in the outbox (durable), after the create
    rows = _outbox(api_env, a)
    assert [r["topic"] for r in rows] == ["case.create", "case.update", "case.update"]
    upd = json.loads(rows[2]["payload"])
    assert upd["event"] == "note" and upd["call"]["outcome"] == "connected"
    assert upd["note"] == "电话联系 张伟（儿子）：接通"
    wire = to_case_update(upd)
    assert wire.kind.value == "note" and wire.call is not None
    assert wire.call.contact == "contact:0" and wire.actor == "duty"
    assert "phone" not in wire.model_dump_json()
    # installers see the call's name masked in the history
    inst = api_env.client("installer").get(f"/api/alarms/{a}").json()["events"]
    assert [e["detail"]["name"] for e in inst if e["action"] == "call"] == ["张*", "张*"]
    audit = api_env.store.query("SELECT action FROM audit WHERE action='alarm.call'")
    assert len(audit) == 2


def test_call_outcome_roles_csrf_and_errors(api_env):
    a = raise_sos(api_env, "caller-7-101")
    body = {"contact": "resident:0", "outcome": "connected"}
    # installers read the board but do not act on alarms
    r = api_env.client("installer").post(f"/api/alarms/{a}/calls", json=body)
    assert r.status_code == 403
    assert api_env.client().post(f"/api/alarms/{a}/calls", json=body).status_code == 401
    # a session without its CSRF token
    duty = api_env.client("duty")
    del duty.headers["X-CSRF-Token"]
    assert duty.post(f"/api/alarms/{a}/calls", json=body).status_code == 403
    duty = api_env.client("duty")
    # a bad outcome: 422 naming the field and the outcomes there are
    r = duty.post(f"/api/alarms/{a}/calls", json={"contact": "resident:0", "outcome": "ok"})
    assert r.status_code == 422
    item = r.json()["detail"][0]
    assert item["loc"] == ["body", "outcome"]
    assert "connected, no_answer, on_site, notified" in item["msg"]
    # a contact the alarm's plan does not have
    r = duty.post(f"/api/alarms/{a}/calls", json={"contact": "on_call:fire_brigade",
                                                  "outcome": "connected"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "contact"]
    assert "not in the call plan" in r.json()["detail"][0]["msg"]
    assert duty.post("/api/alarms/999999/calls", json=body).status_code == 404
    # admin may; bearer tokens need no CSRF
    assert api_env.bearer("admin").post(f"/api/alarms/{a}/calls",
                                        json=body).status_code == 200
    # once resolved, the calls are closed
    assert duty.post(f"/api/alarms/{a}/ack", json={}).status_code == 200
    assert duty.post(f"/api/alarms/{a}/resolve", json={"reason": "handled"}).status_code == 200
    r = duty.post(f"/api/alarms/{a}/calls", json=body)
    assert r.status_code == 409 and r.json()["code"] == "wrong_state"
