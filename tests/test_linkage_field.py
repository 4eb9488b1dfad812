"""Linkage through the field drivers (issue 16), against real peers: a real gateway process,
Mosquitto, a Modbus valve controller (a pymodbus server in its own process) and a CJ/T 188
gas meter with a valve on a pty line.

A gas detector's payload raises the gas alarm; its rule closes the household's gas valve
(Modbus coil write) and its gas meter's valve (CJ/T 188 valve frame) — each confirmed by the
device's next ``valve_open`` reading, which the bus's or line's early re-poll brings well
before their 5 s period. A valve on a unit that never answers: ``command_failed`` naming it,
then not confirmed. Staff re-open the Modbus valve (an inverse) with the same writer."""

from __future__ import annotations

import pytest

from gateway.broker import free_port
from simulators.modbus_meters import MeterProcess
from simulators.serial_meters import MeterBus, PtyAdapter
from tests.linkage_fixtures import commands_of, linkage_site, staff_command_confirmed
from tests.support import GatewayProcess, mqtt_publish, wait_for

pytestmark = [pytest.mark.integration]

METER = "00000000007101"
DEVICES = f"""
  - id: gas-7-101
    type: gas_detector
    household: h-7-101
    mqtt: {{zigbee2mqtt: "h7-101/gas"}}
  - id: valve-7-101
    type: gas_valve
    household: h-7-101
    name: 厨房燃气阀
    profile: modbus-gas-valve
    modbus: {{bus: valves, unit: 1}}
  - id: valve-7-101-b
    type: gas_valve
    household: h-7-101
    name: 阳台燃气阀
    profile: modbus-gas-valve
    modbus: {{bus: valves, unit: 9}}
  - id: gm-7-101
    type: gas_meter
    household: h-7-101
    profile: cjt188-gas-meter
    serial: {{line: mbus, address: "{METER}"}}
"""
THEN = """    category: gas
    then:
      - action: close_valve
        target: {household: same, type: gas_valve}
      - action: close_valve
        target: {household: same, type: gas_meter}
    message:
      zh: "燃气泄漏报警"
"""


def _site(tmp_path, mqtt_port: int, modbus_port: int, line: str):
    return linkage_site(
        tmp_path / "site", mqtt_port=mqtt_port, devices=DEVICES, gas_rule=THEN,
        gateway_yaml=(f"modbus_buses:\n  - {{id: valves, tcp: {{host: 127.0.0.1, port: "
                      f"{modbus_port}}}, period_s: 5, timeout_s: 0.3, retries: 0}}\n"
                      f"serial_lines:\n  - {{id: mbus, device: {line}, protocol: cjt188, "
                      f"period_s: 5, timeout_s: 0.3}}\n"))


def _ended(api, alarm_id: int, devices: set[str]) -> dict[str, dict] | None:
    got = {c["device_id"]: c for c in commands_of(api, alarm_id)
           if c["status"] in ("confirmed", "not_confirmed", "skipped")}
    return got if devices <= set(got) else None


def test_gas_alarm_closes_a_modbus_valve_and_a_cjt188_meter_valve(tmp_path, mosquitto):
    modbus_port = free_port()
    valves = MeterProcess(modbus_port, [1], "modbus-gas-valve")    # unit 9 never answers
    adapter = PtyAdapter(tmp_path / "ttyUSB-gas")
    meters = MeterBus(adapter, protocol="cjt188", cjt188_type=0x30,
                      cjt188_meters={METER: 12.5}).start()
    config = _site(tmp_path, mosquitto.port, modbus_port, str(adapter.path))
    gw = GatewayProcess(config, tmp_path / "data", env={})
    admin = gw.token("admin", "linkage-field-test")
    try:
        gw.start()
        api = gw.api(admin)
        # both drivers have polled once (valve open) before the leak
        wait_for(lambda: all(d["state"] == "online" for k, d in api.get("/healthz").json()
                             ["components"].items() if k in ("modbus:valves", "serial:mbus")),
                 timeout=15, what="the bus and the line online")
        mqtt_publish(mosquitto.port, [("zigbee2mqtt/h7-101/gas", {"gas": True, "battery": 90})])
        alarm = wait_for(lambda: next((a for a in api.get("/api/alarms").json()["alarms"]
                                       if a["device_id"] == "gas-7-101"), None),
                         timeout=15, what="the gas alarm")
        done = wait_for(lambda: _ended(api, alarm["id"],
                                       {"valve-7-101", "gm-7-101", "valve-7-101-b"}),
                        timeout=30, what="the three commands ended")
        assert done["valve-7-101"]["status"] == "confirmed", done
        assert done["gm-7-101"]["status"] == "confirmed", done
        assert done["valve-7-101-b"]["status"] == "not_confirmed", done
        assert [(w.unit, w.function, w.address, w.values) for w in valves.writes] == [
            (1, 5, 0, (0,))]                                      # coil 0 off, once
        assert meters.valve_commands == [(METER, False)] and meters.valves[METER] == "closed"

        events = api.get(f"/api/alarms/{alarm['id']}").json()["events"]
        steps = [(e["action"], e["detail"].get("device_id"), e["detail"].get("reason", ""))
                 for e in events]
        for device in ("valve-7-101", "gm-7-101"):
            assert [a for a, d, _ in steps if d == device] == [
                "command_requested", "command_sent", "command_confirmed"], steps
        failed = [r for a, d, r in steps if d == "valve-7-101-b" and a == "command_failed"]
        assert len(failed) == 2 and all("valve-7-101-b" in r and "no answer" in r
                                        for r in failed), steps

        # staff re-open the Modbus valve: the inverse goes through the same writer
        staff_command_confirmed(api, alarm["id"], "valve-7-101", "open_valve")
        assert [w.values for w in valves.writes] == [(0,), (1,)]
    finally:
        gw.stop()
        meters.stop()
        adapter.unplug()
        valves.stop()
