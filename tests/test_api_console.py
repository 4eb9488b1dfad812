"""Console and installer API in-process: history filters and CSV, masking, installer edits
(validated, atomic, previous version kept, applied without restart), test records, gauges."""

from __future__ import annotations

import asyncio

from gateway.model import utc
from gateway.site import load_site
from rules.actions import TestRecord
from tests.api_fixtures import api_env, raise_sos  # noqa: F401  (fixture)


def test_history_filters_and_csv(api_env):
    a = raise_sos(api_env, "caller-7-101")
    raise_sos(api_env, "caller-9-201")
    duty = api_env.client("duty")
    assert duty.post(f"/api/alarms/{a}/ack", json={}).status_code == 200   # critical: ack first
    assert duty.post(f"/api/alarms/{a}/resolve", json={"reason": "false_alarm",
                                                      "note": "=cmd()"}).status_code == 200
    r = duty.get("/api/history", params={"state": "resolved"}).json()
    assert r["total"] == 1 and r["alarms"][0]["resolve_reason"] == "false_alarm"
    r = duty.get("/api/history", params={"household_id": "h-9-201"}).json()
    assert [x["device_id"] for x in r["alarms"]] == ["caller-9-201"]
    assert duty.get("/api/history", params={"since": "2999-01-01T00:00:00Z"}).json()["total"] == 0
    bad = duty.get("/api/history", params={"severity": "apocalyptic"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "severity"]
    csv_text = duty.get("/api/history.csv", params={"state": "resolved"}).text
    lines = csv_text.lstrip("\ufeff").splitlines()
    assert lines[0].startswith("编号,发生时间（UTC+08:00）,级别") and len(lines) == 2
    assert "'=cmd()" in lines[1]                      # formula neutralised
    assert "13800000001" not in csv_text              # contacts never exported


def test_contacts_masked_for_installer_only(api_env):
    raise_sos(api_env)
    full = api_env.client("duty").get("/api/alarms").json()["alarms"][0]["household"]
    masked = api_env.client("installer").get("/api/alarms").json()["alarms"][0]["household"]
    assert full["contacts"][0] == {"name": "张伟", "relation": "儿子", "phone": "13800000001"}
    assert masked["contacts"][0] == {"name": "张*", "relation": "儿子", "phone": "138****0001"}
    hh = api_env.client("installer").get("/api/households/h-7-101").json()
    assert hh["household"]["contacts"][0]["phone"] == "138****0001"
    assert hh["grid"]["grid_member"] == "王芳"


def test_bad_edit_leaves_files_untouched_with_field_errors(api_env):
    path = api_env.site_dir / "devices.yaml"
    before = path.read_text()
    c = api_env.client("installer")
    r = c.post("/api/config/devices", json={"id": "x-1", "type": "smoke_detector",
                                            "household": "h-unknown"})
    assert r.status_code == 422
    assert r.json()["detail"] == [{"loc": ["body", "household"], "type": "config",
                                   "msg": "unknown household 'h-unknown'",
                                   "code": "unknown_household",
                                   "params": {"value": "h-unknown"}}]
    r = c.post("/api/config/devices", json={"id": "x-2", "type": "smoke_detector",
                                            "household": "h-9-201",
                                            "topic": "devices/caller-9-201"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "mqtt"]
    assert "already used" in r.json()["detail"][0]["msg"]
    r = c.post("/api/config/devices", json={"id": "bad id!", "type": "toaster"})
    assert r.status_code == 422
    assert {tuple(e["loc"]) for e in r.json()["detail"]} >= {("body", "id"), ("body", "type")}
    assert path.read_text() == before
    assert not (api_env.site_dir / "devices.yaml.prev").exists()


def test_edit_is_atomic_versioned_and_applied(api_env):
    path = api_env.site_dir / "devices.yaml"
    before = path.read_text()
    c = api_env.client("installer")
    r = c.post("/api/config/devices", json={"id": "door-9-201", "type": "door_contact",
                                            "household": "h-9-201", "name": "入户门"})
    assert r.status_code == 201, r.text
    assert (api_env.site_dir / "devices.yaml.prev").read_text() == before
    assert len(list((api_env.site_dir / ".versions").iterdir())) == 1
    text = path.read_text()
    assert "# Devices bound to households." in text          # comments kept
    assert '"310104-012-04"' in text                          # quoting kept
    assert load_site(api_env.site_dir).devices.devices[-1].id == "door-9-201"
    # applied without restart: device health knows it, the form lists it
    assert "door-9-201" in {d["device_id"] for d in c.get("/api/devices").json()["devices"]}
    assert c.put("/api/devices/door-9-201/mode", json={"mode": "test"}).json()[
        "device"]["mode"] == "test"
    assert "mode: test" in path.read_text()
    r = c.put("/api/config/devices/door-9-201", json={"id": "door-9-201", "type": "door_contact",
                                                      "household": "h-7-302"})
    assert r.status_code == 200 and r.json()["device"]["household"] == "h-7-302"
    assert r.json()["device"]["mode"] == "normal"
    assert c.delete("/api/config/devices/door-9-201").status_code == 200
    assert c.delete("/api/config/devices/door-9-201").status_code == 404
    audit = [e for e in api_env.client("admin").get("/api/audit").json()["audit"]
             if e["action"] != "login"]
    assert [e["action"] for e in audit[:4]] == ["device.remove", "device.edit", "device.mode",
                                                "device.create"]
    assert all(e["actor"] == "installer" for e in audit[:4])


def test_test_records_and_checklist(api_env):
    book = api_env.ctx.book
    asyncio.run(book.apply([TestRecord("caller-7-101", "sos", utc(), True)]))
    c = api_env.client("installer")
    tests = c.get("/api/devices/caller-7-101/tests").json()["tests"]
    assert len(tests) == 1 and tests[0]["rule_id"] == "sos" and tests[0]["value"] is True
    assert c.get("/api/alarms").json()["alarms"] == []          # a test is never an alarm
    items = {i["id"]: i["ok"] for i in c.get("/api/households/h-7-101/checklist").json()["items"]}
    assert items["tested:caller-7-101"] and not items["tested:smoke-7-101"]
    assert not items["online:caller-7-101"]
    r = c.post("/api/households/h-7-101/commissioned")
    assert r.status_code == 409 and "online:caller-7-101" in r.json()["detail"]


def test_metrics_include_device_and_component_gauges(api_env):
    text = api_env.client().get("/metrics").text
    assert "gateway_devices_unknown 6" in text
    assert "gateway_component_ready_store 1" in text


def test_users_admin(api_env):
    admin = api_env.client("admin")
    assert admin.post("/api/users", json={"username": "zhang", "role": "duty",
                                          "password": "short"}).status_code == 422
    assert admin.post("/api/users", json={"username": "zhang", "role": "duty",
                                          "password": "long-enough-1"}).status_code == 201
    assert admin.post("/api/users", json={"username": "zhang", "role": "duty",
                                          "password": "long-enough-1"}).status_code == 409
    users = admin.get("/api/users").json()["users"]
    assert all("password_hash" not in u for u in users)
    duty = api_env.client("duty")
    assert admin.post("/api/users/duty/disable").status_code == 200
    assert duty.get("/api/me").status_code == 401               # session ends at once
    assert admin.post("/api/users/admin/disable").status_code == 409   # last admin stays
