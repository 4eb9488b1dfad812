"""Issue 2, end to end: an SOS from a real MQTT client reaches the console API and the case
system; bad input on the way is rejected, counted and does not stop the next good message."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from tests.support import (EXAMPLE, GatewayProcess, metric_value, mqtt_publish, site_copy,
                           wait_for)

pytestmark = pytest.mark.integration


@pytest.fixture
def gateway(tmp_path, mosquitto, case_system, case_secret):
    port = __import__("gateway.broker", fromlist=["free_port"]).free_port()
    config = site_copy(tmp_path / "site", mqtt_port=mosquitto.port, case_url=case_system.url,
                       callback_url=f"http://127.0.0.1:{port}/api/case-callback")
    gw = GatewayProcess(config, tmp_path / "data", env={"CASE_SYSTEM_SECRET": case_secret},
                        port=port)
    token = gw.token("duty", "duty-desk-1")
    gw.start()
    gw.test_token = token
    yield gw
    gw.stop()


def _open_alarms(api: httpx.Client) -> list[dict]:
    r = api.get("/api/alarms", params={"state": "open"})
    assert r.status_code == 200, r.text
    return r.json()["alarms"]


def test_sos_reaches_console_and_case_system_and_survives_restart(gateway, mosquitto,
                                                                   case_system):
    api = gateway.api(gateway.test_token)
    assert _open_alarms(api) == []

    # garbage first: malformed JSON, unknown device, wrong type, oversize, non-object
    mqtt_publish(mosquitto.port, [
        ("devices/caller-7-101", b"{not json"),
        ("devices/no-such-device", {"event": "sos"}),
        ("devices/caller-7-101", {"sos": "yes please"}),
        ("devices/smoke-7-101", b'{"smoke": true, "pad": "' + b"x" * 5000 + b'"}'),
        ("devices/caller-7-101", b"[1, 2, 3]"),
        ("devices/caller-7-101", b"[" * 3000),          # nested too deeply for the parser
        ("zigbee2mqtt/bridge/devices", b"[" * 3000),
    ])
    t0 = time.monotonic()
    mqtt_publish(mosquitto.port, [("devices/caller-7-101", {"event": "sos", "battery": 81})])
    alarms = wait_for(lambda: _open_alarms(api), timeout=1.0, what="SOS alarm in /api/alarms")
    latency = time.monotonic() - t0
    print(f"publish -> visible in API: {latency * 1000:.0f} ms")
    assert len(alarms) == 1, alarms
    alarm = alarms[0]
    assert alarm["severity"] == "critical" and alarm["category"] == "emergency_call"
    assert alarm["device_id"] == "caller-7-101" and alarm["state"] == "raised"
    assert alarm["household"]["address"] == "田林路200弄7号101室"
    assert alarm["grid"]["code"] == "310104-012-03" and alarm["grid"]["grid_member"] == "王芳"

    # the garbage was rejected by reason, and only the SOS became an alarm
    metrics = gateway.metrics()
    for reason in ("unknown_device", "wrong_type", "oversize", "not_an_object"):
        assert metric_value(metrics, "gateway_rejected_total", reason=reason) == 1, reason
    assert metric_value(metrics, "gateway_rejected_total", reason="malformed_json") == 3

    # exactly one case in the grid case system, mapped from the household and grid cell
    cases = wait_for(lambda: case_system.cases()["cases"] or None, timeout=10,
                     what="case created")
    assert len(cases) == 1, cases
    assert cases[0]["grid_cell_code"] == "310104-012-03"
    wait_for(lambda: api.get(f"/api/alarms/{alarm['id']}").json()["case_id"], timeout=10,
             what="case id recorded on the alarm")

    # acknowledge and resolve, recorded with who and when
    r = api.post(f"/api/alarms/{alarm['id']}/ack", json={"note": "已电话联系"})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "acknowledged" and r.json()["ack_by"] == "token:duty-desk-1"
    assert api.post(f"/api/alarms/{alarm['id']}/ack").status_code == 409
    r = api.post(f"/api/alarms/{alarm['id']}/resolve",
                 json={"reason": "handled", "note": "网格员已上门"})
    assert r.status_code == 200, r.text
    detail = api.get(f"/api/alarms/{alarm['id']}").json()
    actions = [(e["action"], e["actor"]) for e in detail["events"]]
    assert ("acknowledged", "token:duty-desk-1") in actions
    assert ("resolved", "token:duty-desk-1") in actions
    assert detail["ack_at"] and detail["resolved_at"] and detail["resolve_reason"] == "handled"

    # restart: the alarm, its state and history are still there
    assert gateway.stop() == 0
    gateway.start()
    api = gateway.api(gateway.test_token)
    after = api.get(f"/api/alarms/{alarm['id']}").json()
    assert after["state"] == "resolved"
    assert [(e["action"], e["actor"]) for e in after["events"]][:len(actions)] == actions
    assert _open_alarms(api) == []
    # still exactly one case after restart (no re-sending)
    assert len(case_system.cases()["cases"]) == 1


def test_cancel_clears_and_retrigger_updates(gateway, mosquitto):
    api = gateway.api(gateway.test_token)
    mqtt_publish(mosquitto.port, [("devices/caller-7-302", {"event": "sos"})])
    first = wait_for(lambda: _open_alarms(api), timeout=5, what="alarm")[0]
    mqtt_publish(mosquitto.port, [("devices/caller-7-302", {"event": "sos"})])
    wait_for(lambda: _open_alarms(api)[0]["count"] >= 2, timeout=5, what="retrigger count")
    assert len(_open_alarms(api)) == 1
    mqtt_publish(mosquitto.port, [("devices/caller-7-302", {"event": "cancel"})])
    cleared = wait_for(lambda: api.get(f"/api/alarms/{first['id']}").json()["cleared_at"],
                       timeout=5, what="cleared")
    assert cleared


def test_smoke_raises_critical_fire_alarm(gateway, mosquitto):
    api = gateway.api(gateway.test_token)
    mqtt_publish(mosquitto.port, [("devices/smoke-station-4", {"smoke": True})])
    alarm = wait_for(lambda: _open_alarms(api), timeout=5, what="smoke alarm")[0]
    assert alarm["category"] == "fire" and alarm["severity"] == "critical"
    assert alarm["household"] is None and alarm["grid"]["code"] == "310104-012-04"


def test_api_requires_auth(gateway):
    assert httpx.get(f"{gateway.url}/api/alarms").status_code == 401
    bad = httpx.get(f"{gateway.url}/api/alarms", headers={"Authorization": "Bearer gw_nope"})
    assert bad.status_code == 401
    assert httpx.get(f"{gateway.url}/healthz").json()["status"] == "ok"


def test_config_validate_reports_file_line_errors(tmp_path):
    site = tmp_path / "broken"
    import shutil

    shutil.copytree(EXAMPLE, site)
    devices = (site / "devices.yaml").read_text()
    devices = devices.replace("household: h-7-302", "household: h-nowhere", 1)
    devices = devices.replace("type: smoke_detector", "type: toaster", 1)
    (site / "devices.yaml").write_text(devices)
    (site / "site.yaml").write_text((site / "site.yaml").read_text().replace(
        "timezone: Asia/Shanghai", "timezone: Mars/Olympus"))
    res = subprocess.run([sys.executable, "-m", "gateway.cli", "config", "validate", str(site)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    err = res.stderr
    lines = {ln.split(": ")[0] for ln in err.splitlines() if ".yaml:" in ln}
    dev_lines = devices.splitlines()
    toaster = next(i for i, ln in enumerate(dev_lines, 1) if "toaster" in ln)
    assert f"{site}/devices.yaml:{toaster}" in lines, err
    assert "unknown device type 'toaster'" in err
    tz_line = next(i for i, ln in enumerate((site / "site.yaml").read_text().splitlines(), 1)
                   if "Mars/Olympus" in ln)
    assert f"{site}/site.yaml:{tz_line}" in lines and "Mars/Olympus" in err, err
    # the unknown household is reported too (all problems in one pass)
    assert "unknown household 'h-nowhere'" in err, err
    nowhere = next(i for i, ln in enumerate(dev_lines, 1) if "h-nowhere" in ln)
    assert f"{site}/devices.yaml:{nowhere}: devices[2].household: unknown household" in err
