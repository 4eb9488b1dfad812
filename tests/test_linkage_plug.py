"""A smart plug (智能插座) through the whole loop: a kitchen smoke detector's report over MQTT
raises the fire alarm; the rule's ``then`` cuts the household's socket (the electric heater),
confirmed by the plug's reported state (a Zigbee2MQTT-shaped plug, simulators/z2m_actuators.py);
exactly one case reaches the simulated case system and its feedback comes back to the
alarm; only staff with ``commands.restore`` may restore the power, from the card."""

from __future__ import annotations

import pytest

from gateway.broker import free_port
from simulators.z2m_actuators import Actuator, Actuators
from tests.linkage_fixtures import commands_of, linkage_site, staff_command_confirmed
from tests.support import GatewayProcess, mqtt_publish, wait_for

pytestmark = [pytest.mark.integration]

PLUG = """
  - id: plug-7-101
    type: smart_plug
    household: h-7-101
    name: 电暖器插座
    mqtt: {zigbee2mqtt: "h7-101/heater-plug"}
"""
SMOKE_RULE = """    category: fire
    message:
      zh: "烟感报警"
"""
SMOKE_THEN = """    category: fire
    then:                                   # 联动: cut the household's sockets
      - action: switch_off
        target: {household: same, type: smart_plug}
    message:
      zh: "烟感报警"
"""


def test_smoke_cuts_the_socket_one_case_and_staff_restore_power(tmp_path, mosquitto,
                                                                 case_system, case_secret):
    port = free_port()
    config = linkage_site(tmp_path / "site", mqtt_port=mosquitto.port, case_url=case_system.url,
                          callback_url=f"http://127.0.0.1:{port}/api/case-callback",
                          confirm_timeout_s=2.0, attempts=2, devices=PLUG)
    rules = config / "rules.yaml"
    text = rules.read_text()
    assert text.count(SMOKE_RULE) == 1, "the example's smoke rule changed: update this test"
    rules.write_text(text.replace(SMOKE_RULE, SMOKE_THEN))
    gw = GatewayProcess(config, tmp_path / "data", env={"CASE_SYSTEM_SECRET": case_secret},
                        port=port)
    admin = gw.token("admin", "plug-admin")
    duty_token = gw.token("duty", "plug-duty")
    plug = Actuator("plug", "h7-101/heater-plug")
    with Actuators(mosquitto.port, [plug]):
        gw.start()
        try:
            api, duty = gw.api(admin), gw.api(duty_token)
            mqtt_publish(mosquitto.port, [("devices/smoke-7-101", {"smoke": True})])
            alarm = wait_for(lambda: next((a for a in api.get("/api/alarms").json()["alarms"]
                                           if a["device_id"] == "smoke-7-101"), None),
                             timeout=15, what="the fire alarm")
            assert alarm["category"] == "fire" and alarm["commandable"] is True
            cmd = wait_for(lambda: next((c for c in commands_of(api, alarm["id"])
                                         if c["device_id"] == "plug-7-101"
                                         and c["status"] == "confirmed"), None),
                           timeout=15, what="the socket cut and confirmed")
            assert cmd["action"] == "switch_off" and cmd["automatic"] is True
            assert plug.on is False and plug.received == [{"state": "OFF"}]

            # exactly one case; its feedback (dispatched, then closed) reaches the alarm
            def cases():
                return [c for c in case_system.cases()["cases"] if c["device"] == "smoke-7-101"]
            wait_for(lambda: len(cases()) == 1, timeout=15, what="the fire case")
            closed = wait_for(lambda: (a := api.get(f"/api/alarms/{alarm['id']}").json())
                              and a["case_status"] == "closed" and a, timeout=20,
                              what="the case's feedback on the alarm")
            assert [e["detail"].get("status") for e in closed["events"]
                    if e["action"] == "case_status"][-1] == "closed"
            assert len(cases()) == 1
            notes = [u["note"] for u in cases()[0]["updates"] if u["kind"] == "note"]
            assert any("断电" in n and "电暖器插座" in n for n in notes), notes

            # restoring the power is an inverse: not for the duty officer, for an admin
            res = duty.post(f"/api/alarms/{alarm['id']}/commands",
                            json={"device_id": "plug-7-101", "action": "switch_on"})
            assert res.status_code == 403 and res.json()["code"] == "restore_forbidden"
            mine = staff_command_confirmed(api, alarm["id"], "plug-7-101", "switch_on")
            assert mine["automatic"] is False and plug.on is True
        finally:
            gw.stop()
