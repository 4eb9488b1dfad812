"""A site for linkage tests: the example site with Zigbee2MQTT gas detectors, gas valves and a
siren, and its gas rule closing the household's valve and sounding its siren (``then:``)."""

from __future__ import annotations

from pathlib import Path

from tests.support import site_copy, wait_for

DEVICES = """
  - id: gas-7-101
    type: gas_detector
    household: h-7-101
    name: 厨房燃气探测器
    mqtt: {zigbee2mqtt: "h7-101/gas"}
  - id: valve-7-101
    type: gas_valve
    household: h-7-101
    name: 厨房燃气阀
    mqtt: {zigbee2mqtt: "h7-101/gas-valve"}
  - id: siren-7-101
    type: siren
    household: h-7-101
    name: 声光报警器
    mqtt: {zigbee2mqtt: "h7-101/siren"}
  - id: gas-7-302
    type: gas_detector
    household: h-7-302
    mqtt: {zigbee2mqtt: "h7-302/gas"}
  - id: valve-7-302
    type: gas_valve
    household: h-7-302
    name: 燃气阀（检修中）
    mqtt: {zigbee2mqtt: "h7-302/gas-valve"}
    mode: maintenance
"""

GAS_RULE = """    category: gas
    then:                                   # 联动: close the household's gas valve(s), if any
      - action: close_valve
        target: {household: same, type: gas_valve}
    message:
      zh: "燃气泄漏报警"
"""
GAS_THEN = """    category: gas
    then:
      - action: close_valve
        target: {household: same, type: gas_valve}
      - action: siren_on
        target: {household: same, type: siren}
        duration: 1m
    message:
      zh: "燃气泄漏报警"
"""


def linkage_site(dest: Path, *, mqtt_port: int, case_url: str | None = None,
                 callback_url: str | None = None, confirm_timeout_s: float = 2.0,
                 attempts: int = 2, devices: str = DEVICES, gas_rule: str = GAS_THEN,
                 gateway_yaml: str = "") -> Path:
    """The example site with ``devices`` added, its gas rule's category..message replaced
    by ``gas_rule`` and ``gateway_yaml`` (buses, lines) added to gateway.yaml."""
    config = site_copy(dest, mqtt_port=mqtt_port, case_url=case_url, callback_url=callback_url)
    path = config / "devices.yaml"
    path.write_text(path.read_text().rstrip("\n") + "\n" + devices.lstrip("\n"))
    rules = config / "rules.yaml"
    text = rules.read_text()
    assert text.count(GAS_RULE) == 1, "the example's gas rule changed: update this fixture"
    rules.write_text(text.replace(GAS_RULE, gas_rule))
    with (config / "gateway.yaml").open("a") as f:
        f.write(gateway_yaml)
        f.write(f"linkage:\n  confirm_timeout_s: {confirm_timeout_s}\n  attempts: {attempts}\n")
    return config


def commands_of(api, alarm_id: int) -> list[dict]:
    """The alarm's commands as the API (and the card) shows them."""
    return api.get(f"/api/alarms/{alarm_id}").json()["commands"]


def staff_command_confirmed(api, alarm_id: int, device_id: str, action: str) -> dict:
    """Staff send ``action`` to ``device_id`` from the alarm's card; waits until the device
    confirmed it and returns the command as the API shows it."""
    res = api.post(f"/api/alarms/{alarm_id}/commands",
                   json={"device_id": device_id, "action": action})
    assert res.status_code == 200, res.text
    cid = res.json()["command_id"]
    return wait_for(lambda: next((c for c in commands_of(api, alarm_id)
                                  if c["command_id"] == cid and c["status"] == "confirmed"),
                                 None), timeout=15, what=f"the staff's {action} confirmed")
