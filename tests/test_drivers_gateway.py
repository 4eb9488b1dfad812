"""The gateway (a real process) reads every transport of a site at once: Zigbee2MQTT devices
through Mosquitto (payloads sent with mosquitto_pub), SDM630 meters on a Modbus TCP bus (a
pymodbus server, one unit dead), a DL/T 645 meter on a pty and a Contact ID receiver on
another - and the installer sees the readings, the device health and the unknown Zigbee
devices through the API, the receiver its ACK."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from drivers.codecs.contact_id import ContactIdEvent, encode_line
from gateway.broker import free_port, wait_port
from simulators.serial_meters import MeterBus, PtyAdapter
from tests.support import GatewayProcess, metric_value, site_copy, wait_for

pytestmark = pytest.mark.integration

METER = "210987654321"
EXTRA_DEVICES = """
  - id: z-door-7-101
    type: door_contact
    household: h-7-101
    mqtt: {zigbee2mqtt: hall_door}
  - id: z-sos-7-101
    type: emergency_caller
    household: h-7-101
    mqtt: {zigbee2mqtt: sos_button_bedroom}
  - id: z-leak-7-101
    type: water_leak_detector
    household: h-7-101
    mqtt: {zigbee2mqtt: kitchen_leak}
  - id: em-b7-1
    type: electricity_meter
    grid_cell: "310104-012-03"
    profile: eastron-sdm630
    modbus: {bus: b7-meters, unit: 1}
  - id: em-b7-2
    type: electricity_meter
    grid_cell: "310104-012-03"
    profile: eastron-sdm630
    modbus: {bus: b7-meters, unit: 2}
  - id: em-645
    type: electricity_meter
    grid_cell: "310104-012-03"
    profile: dlt645-meter
    serial: {line: rs485-1, address: "%s"}
  - id: cid-caller-7-101
    type: emergency_caller
    household: h-7-101
    profile: contact-id-receiver
    serial: {line: receiver, address: "1234", zone: 1}
""" % METER


def _pub(port: int, topic: str, payload: str | dict | list, retain: bool = False) -> None:
    body = payload if isinstance(payload, str) else json.dumps(payload)
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic,
                    "-m", body] + (["-r"] if retain else []), check=True, timeout=10)


@pytest.fixture
def field_site(tmp_path, mosquitto):
    modbus_port = free_port()
    sim = subprocess.Popen([sys.executable, "-m", "simulators.modbus_meters", "--port",
                            str(modbus_port), "--units", "1-2", "--dead", "2"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    adapter = PtyAdapter(tmp_path / "ttyRS485-1")
    receiver = PtyAdapter(tmp_path / "ttyRS232-receiver")
    meters = MeterBus(adapter, protocol="dlt645", dlt645_meters={METER: {
        0x00010000: 4521.37, 0x00020000: 12.5, 0x02010100: 229.8, 0x02020100: 3.217,
        0x02030000: 739.2}}).start()
    try:
        wait_port(modbus_port, timeout=20)
        site = site_copy(tmp_path / "site", mqtt_port=mosquitto.port)
        with open(site / "devices.yaml", "a", encoding="utf-8") as fh:
            fh.write(EXTRA_DEVICES)
        with open(site / "gateway.yaml", "a", encoding="utf-8") as fh:
            fh.write(f"""modbus_buses:
  - id: b7-meters
    tcp: {{host: 127.0.0.1, port: {modbus_port}}}
    period_s: 0.5
    timeout_s: 0.2
serial_lines:
  - id: rs485-1
    device: {adapter.path}
    protocol: dlt645
    period_s: 0.5
    timeout_s: 0.5
  - id: receiver
    device: {receiver.path}
    protocol: contact_id
    baudrate: 9600
    parity: N
    ack_hex: "06"
""")
        gw = GatewayProcess(site, tmp_path / "data")
        gw.test_token = gw.token("installer", "field-test")
        gw.duty_token = gw.token("duty", "field-duty")
        gw.receiver = receiver
        gw.start()
        yield gw
        gw.stop()
    finally:
        meters.stop()
        adapter.unplug()
        receiver.unplug()
        sim.terminate()
        sim.wait(10)


def _readings(api, device: str) -> dict[str, dict]:
    r = api.get(f"/api/devices/{device}/readings")
    assert r.status_code == 200, r.text
    return {x["metric"]: x for x in r.json()["readings"]}


def _state(api, device: str) -> str:
    return api.get(f"/api/devices/{device}/readings").json()["device"]["state"]


def test_modbus_and_serial_meters_are_polled_and_a_dead_unit_is_offline(field_site):
    api = field_site.api(field_site.test_token)
    sdm = wait_for(lambda: (r := _readings(api, "em-b7-1")) and "energy_total" in r and r,
                   timeout=15, what="SDM630 readings")
    assert sdm["voltage_l1"]["unit"] == "V" and 215 <= sdm["voltage_l1"]["value"] <= 235
    assert sdm["frequency"]["value"] == 50.0 and sdm["energy_import"]["unit"] == "kWh"
    assert sdm["voltage_l1"]["grid_cell"] == "310104-012-03"
    wait_for(lambda: _state(api, "em-b7-2") == "offline", timeout=15,
             what="dead Modbus unit reported offline")
    assert _state(api, "em-b7-1") == "online"
    dlt = wait_for(lambda: (r := _readings(api, "em-645")) and "power_total" in r and r,
                   timeout=15, what="DL/T 645 readings")
    assert dlt["energy_import"]["value"] == 4521.37 and dlt["voltage_a"]["value"] == 229.8
    assert dlt["current_a"]["value"] == 3.217 and dlt["power_total"]["value"] == 739.2
    assert dlt["power_total"]["unit"] == "W"
    health = api.get("/readyz").json()["components"]
    assert health["modbus:b7-meters"]["state"] == "online"
    assert health["serial:rs485-1"]["state"] == "online"
    metrics = field_site.metrics()
    assert metric_value(metrics, "gateway_rejected_total", reason="timeout",
                        transport="modbus") >= 1


def test_zigbee2mqtt_devices_work_without_a_profile(field_site, mosquitto):
    api = field_site.api(field_site.test_token)
    port = mosquitto.port
    _pub(port, "zigbee2mqtt/hall_door", {"contact": False, "battery": 91, "linkquality": 87,
                                         "voltage": 2950, "illuminance": 12})
    door = wait_for(lambda: (r := _readings(api, "z-door-7-101")) and "battery_voltage" in r
                    and r, timeout=10, what="door contact readings")
    assert door["door_open"]["value"] is True           # contact false = open
    assert door["battery"]["value"] == 91.0 and door["linkquality"]["value"] == 87.0
    assert door["battery_voltage"]["value"] == pytest.approx(2.95)

    # bad value: rejected by reason, naming device and field; the next message gets through
    _pub(port, "zigbee2mqtt/kitchen_leak", {"water_leak": "maybe"})
    _pub(port, "zigbee2mqtt/kitchen_leak", {"water_leak": True, "battery": 64})
    # (the alarm-class reading is committed before it is seen; battery may come first)
    leak = wait_for(lambda: (r := _readings(api, "z-leak-7-101")) and "water_leak" in r and r,
                    timeout=10, what="leak reading")
    assert leak["water_leak"]["value"] is True
    assert metric_value(field_site.metrics(), "gateway_rejected_total", reason="wrong_type",
                        transport="mqtt") == 1
    assert "zigbee2mqtt/kitchen_leak (device z-leak-7-101) field 'water_leak'" in \
        field_site.log_text()

    # an SOS button's "emergency" action is an SOS alarm; Zigbee2MQTT's empty action is not
    _pub(port, "zigbee2mqtt/sos_button_bedroom", {"action": "", "battery": 100})
    _pub(port, "zigbee2mqtt/sos_button_bedroom", {"action": "emergency", "battery": 100})
    open_alarms = lambda: sorted((a["device_id"], a["category"]) for a in api.get(  # noqa: E731
        "/api/alarms", params={"state": "open"}).json()["alarms"])
    wait_for(lambda: ("z-sos-7-101", "emergency_call") in open_alarms(), timeout=10,
             what="SOS alarm from the Zigbee button")
    # beside the leak's own alarm (the site's water_leak rule): the empty action raised none
    assert open_alarms() == [("z-leak-7-101", "water_leak"), ("z-sos-7-101", "emergency_call")]

    # availability: offline and back, both JSON and the bare word of older versions
    _pub(port, "zigbee2mqtt/hall_door/availability", {"state": "offline"})
    wait_for(lambda: _state(api, "z-door-7-101") == "offline", timeout=10, what="offline")
    _pub(port, "zigbee2mqtt/hall_door/availability", "online")
    wait_for(lambda: _state(api, "z-door-7-101") == "online", timeout=10, what="online")

    # the coordinator's device list feeds the installer's inbox of unknown devices
    _pub(port, "zigbee2mqtt/bridge/devices", [
        {"type": "Coordinator", "ieee_address": "0x00124b0000000000",
         "friendly_name": "Coordinator"},
        {"type": "EndDevice", "ieee_address": "0x00158d0001a2b3c4", "friendly_name": "hall_door",
         "definition": {"model": "MCCGQ11LM", "vendor": "Aqara"}},
        {"type": "EndDevice", "ieee_address": "0x00158d0009f8e7d6",
         "friendly_name": "0x00158d0009f8e7d6",
         "definition": {"model": "SJCGQ11LM", "vendor": "Aqara"}},
    ], retain=True)
    unknown = wait_for(lambda: api.get("/api/devices/unknown").json()["unknown"] or None,
                       timeout=10, what="unknown Zigbee device in the inbox")
    entry = next(u for u in unknown if u["id"] == "zigbee2mqtt/0x00158d0009f8e7d6")
    assert entry["transport"] == "zigbee2mqtt" and "SJCGQ11LM" in entry["sample"]
    assert not any(u["id"] == "zigbee2mqtt/hall_door" for u in unknown)


def test_receiver_event_becomes_an_alarm_and_is_acknowledged_once_committed(field_site):
    """A Contact ID receiver line with ``ack_hex``: the event's ACK comes back over the line
    (only after the inbox commit: tests/test_drivers_serial.py holds the pipeline's ack to
    show that), and the event is an alarm on the console."""
    wait_for(lambda: field_site.api(field_site.test_token).get("/readyz").json()["components"]
             ["serial:receiver"]["state"] == "online", timeout=10, what="receiver line online")
    sos = encode_line(ContactIdEvent("1234", 1, 101, 1, 1))
    field_site.receiver.write(sos.encode() + b"\r\n")
    answer = wait_for(lambda: field_site.receiver.read(0.5), timeout=10, what="ACK from gateway")
    assert answer == b"\x06"
    api = field_site.api(field_site.duty_token)
    alarm = wait_for(lambda: [a for a in api.get("/api/alarms", params={"state": "open"})
                              .json()["alarms"] if a["device_id"] == "cid-caller-7-101"],
                     timeout=5, what="receiver SOS in /api/alarms")[0]
    assert alarm["category"] == "emergency_call" and alarm["state"] == "raised"
