"""The Zigbee2MQTT catalogue a community buys (issue 14): payloads made by Zigbee2MQTT's own
converters (zigbee-herdsman-converters, pinned; tests/data/z2m/, made by
simulators/z2m_fixtures/generate.mjs) decode through the shipped zigbee2mqtt-* profiles into
the readings they mean, for every model and case: the alarm in the alarm case, the normal state
in the normal case, every action of every button either an SOS or explicitly ignored, battery,
battery_state, tamper, the fault variants, gas concentration, presence. A value a profile's map
does not know costs that field only (counted as unknown_value, the rest delivered), through the
real intake and Mosquitto; and a fixture payload published to Mosquitto raises the alarm in a
real gateway's API, a multi-key remote's sos_actions included.

What each Zigbee2MQTT key must give is written down here (EXPECTED, SOS_ACTIONS,
IGNORED_ACTIONS), independently of the profiles: removing a mapping from a profile fails."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from drivers import DecodeError
from drivers import zigbee2mqtt as z2m
from drivers.mqtt import DeviceBinding, MqttIntake
from drivers.profiles import Profile, ProfileMisfit, decode_json, load_profiles, with_sos_actions
from edge_config.schema import DevicesFile
from gateway.metrics import Metrics
from gateway.model import Kind, utc
from tests.support import (AckingSink, GatewayProcess, mqtt_publish, running, site_copy, until,
                           wait_for)

DATA = Path(__file__).parent / "data" / "z2m"
FIXTURES = [json.loads(p.read_text(encoding="utf-8"))
            for p in sorted((DATA / "models").glob("*.json"))]
PROFILES = load_profiles()
NOW = utc()

#: the profile a device of each class gets (the default of its device type)
CLASS_PROFILE = {
    "smoke": "zigbee2mqtt-smoke-detector", "gas": "zigbee2mqtt-gas-detector",
    "co": "zigbee2mqtt-gas-detector", "water_leak": "zigbee2mqtt-water-leak-detector",
    "contact": "zigbee2mqtt-door-contact", "occupancy": "zigbee2mqtt-motion-sensor",
    "presence": "zigbee2mqtt-motion-sensor", "button": "zigbee2mqtt-emergency-caller",
    "temperature": "zigbee2mqtt-temperature-sensor",
}
#: the keys whose true/false is the class's alarm (contact: false = open); a presence sensor
#: may report occupancy only (Sonoff SNZB-06P)
CLASS_KEY = {"smoke": ("smoke",), "gas": ("gas",), "co": ("carbon_monoxide",),
             "water_leak": ("water_leak",), "contact": ("contact",),
             "occupancy": ("occupancy",), "presence": ("presence", "occupancy")}

#: actions of an emergency caller that are a press (SOS) ...
SOS_ACTIONS = {"emergency", "single", "double", "triple", "quadruple", "many", "hold", "long",
               "click"} | {f"{k}_{p}" for k in range(1, 5) for p in ("single", "double", "hold")}
#: ... and those that carry nothing (release after a hold, Heiman's zone restore, a gesture,
#: a security remote's arm/disarm keys)
IGNORED_ACTIONS = {"release", "off", "shake", "disarm", "arm_day_zones", "arm_night_zones",
                   "arm_all_zones", "arm_partial_zones", "exit_delay"}
#: Zigbee2MQTT keys no kind exists for (CO in ppm): not read, never an error
UNREAD = {"co"}


def _fault(v: Any) -> bool:
    return v if isinstance(v, bool) else v != "none"


#: Zigbee2MQTT key -> (metric, kind, value of the reading) for a raw value
EXPECTED: dict[str, Any] = {
    "smoke": lambda v: ("smoke", Kind.SMOKE, v),
    "gas": lambda v: ("gas", Kind.GAS, v),
    "carbon_monoxide": lambda v: ("carbon_monoxide", Kind.CARBON_MONOXIDE, v),
    "water_leak": lambda v: ("water_leak", Kind.WATER_LEAK, v),
    "contact": lambda v: ("door_open", Kind.DOOR_OPEN, not v),
    "occupancy": lambda v: ("occupancy", Kind.MOTION, v),
    "presence": lambda v: ("presence", Kind.MOTION, v),
    "tamper": lambda v: ("tamper", Kind.TAMPER, v),
    "battery_low": lambda v: ("battery_low", Kind.BATTERY_LOW, v),
    "battery_state": lambda v: ("battery_low", Kind.BATTERY_LOW, v == "low"),
    "device_fault": lambda v: ("fault", Kind.FAULT, v),
    "fault_alarm": lambda v: ("fault", Kind.FAULT, v),
    "fault": lambda v: ("fault", Kind.FAULT, _fault(v)),
    "gas_value": lambda v: ("gas_density", Kind.GAS_CONCENTRATION, v),
    "gas_density": lambda v: ("gas_density", Kind.GAS_CONCENTRATION, v),
    "temperature": lambda v: ("temperature", Kind.TEMPERATURE, v),
    "humidity": lambda v: ("humidity", Kind.HUMIDITY, v),
    "battery": lambda v: ("battery", Kind.BATTERY, v),
    "voltage": lambda v: ("battery_voltage", Kind.VOLTAGE, v / 1000),
    "linkquality": lambda v: ("linkquality", Kind.SIGNAL, v),
}
CLASS_KEYS = {  # keys each profile must read (a smoke detector's temperature is not its job)
    "temperature": {"temperature", "humidity"},
    "button": {"action"},
}


def _cases():
    for fx in FIXTURES:
        for case in fx["cases"]:
            yield pytest.param(fx, case, id=f"{fx['model']}: {case['name']}")


def _decode(profile: Profile, payload: dict) -> tuple[set[tuple], list[DecodeError]]:
    problems: list[DecodeError] = []
    readings = decode_json(profile, "dev-1", json.dumps(payload), NOW,
                           where="zigbee2mqtt/dev-1", problems=problems)
    return {(r.metric, r.kind, r.value) for r in readings}, problems


def _has(got: set[tuple], want: tuple) -> bool:
    metric, kind, value = want
    return any(m == metric and k == kind and (v == pytest.approx(value) if isinstance(
        value, float) and not isinstance(value, bool) else v == value) for m, k, v in got)


def test_the_catalogue_has_forty_models_across_every_class():
    assert len(FIXTURES) >= 40
    counts = Counter(fx["class"] for fx in FIXTURES)
    assert set(counts) == set(CLASS_PROFILE), counts
    vendors = {fx["vendor"] for fx in FIXTURES}
    assert {"Aqara", "Xiaomi", "Heiman", "Tuya", "SONOFF"} <= vendors
    for fx in FIXTURES:
        names = [c["name"] for c in fx["cases"]]
        keys = CLASS_KEY.get(fx["class"])
        if keys is not None:    # the alarm and the normal state, both made by the converters
            assert any({c["expect"].get(k) for c in fx["cases"]} >= {True, False}
                       for k in keys), (fx["model"], names)
        elif fx["class"] == "button":
            assert any("action" in c["expect"] for c in fx["cases"]), fx["model"]
        else:
            assert any("temperature" in c["expect"] for c in fx["cases"]), fx["model"]
    assert sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file()) < 2 * 1024 * 1024


def test_every_action_the_buttons_send_is_an_sos_or_explicitly_ignored():
    """An action neither list knows fails here, so a regenerated catalogue with a new action
    is a decision to make, not a silent unknown_value."""
    sent = {c["expect"]["action"] for fx in FIXTURES for c in fx["cases"]
            if "action" in c["expect"]}
    exposed = {a for fx in FIXTURES if fx["class"] == "button" for e in fx["exposes"]
               if e.get("property") == "action" for a in e.get("values", [])}
    assert sent - SOS_ACTIONS - IGNORED_ACTIONS == set()
    assert exposed - SOS_ACTIONS - IGNORED_ACTIONS == set()
    assert SOS_ACTIONS & IGNORED_ACTIONS == set()


@pytest.mark.parametrize("fx, case", list(_cases()))
def test_each_case_decodes_to_what_it_means(fx, case):
    profile = PROFILES.by_id[CLASS_PROFILE[fx["class"]]]
    assert isinstance(profile, Profile)
    payload = case["payload"]
    got, problems = _decode(profile, payload) if payload.keys() & profile.fields.keys() \
        else (set(), [])
    assert problems == [], f"{fx['model']} {payload}: {problems}"
    relevant = set(EXPECTED) - {"temperature", "humidity"} | CLASS_KEYS.get(fx["class"], set())
    for key, raw in payload.items():
        if key == "action":
            sos = ("sos", Kind.SOS, True)
            assert _has(got, sos) == (raw in SOS_ACTIONS), (fx["model"], raw, got)
            assert raw in SOS_ACTIONS | IGNORED_ACTIONS
        elif key in UNREAD:
            assert not any(m == key for m, _, _ in got)
        elif key in relevant and key in EXPECTED:
            assert _has(got, EXPECTED[key](raw)), f"{fx['model']} {key}={raw!r}: {got}"
    for key, raw in case["expect"].items():         # what the case is about, once more
        if key in EXPECTED:
            assert _has(got, EXPECTED[key](raw)), f"{fx['model']} {key}={raw!r}: {got}"
    for class_key in CLASS_KEY.get(fx["class"], ()):
        if class_key in case["expect"]:
            alarm = case["expect"][class_key] is (class_key != "contact")
            assert ("alarm" in case["name"]) == alarm


def test_bridge_devices_lists_every_model_with_its_exposes():
    entries = json.loads((DATA / "bridge_devices.json").read_text(encoding="utf-8"))
    assert entries[0]["type"] == "Coordinator"
    devices = entries[1:]
    assert {d["definition"]["model"] for d in devices} == {fx["model"] for fx in FIXTURES}
    for d in devices:
        assert d["friendly_name"] == d["ieee_address"] and d["type"] in ("EndDevice", "Router")
        assert d["definition"]["exposes"] and d["interview_completed"] is True
    parsed = z2m.bridge_devices((DATA / "bridge_devices.json").read_bytes())
    assert len(parsed) == len(FIXTURES)
    assert all(e["topic"] == f"zigbee2mqtt/{e['ieee_address']}" for e in parsed)


# -- which key of a multi-key remote means SOS: sos_actions ---------------------------------

def _fixture(model: str) -> dict:
    return next(fx for fx in FIXTURES if fx["model"] == model)


def test_sos_actions_of_a_device_override_the_action_map():
    caller = PROFILES.by_id["zigbee2mqtt-emergency-caller"]
    assert isinstance(caller, Profile)
    only4 = with_sos_actions(caller, ["4_single", "4_hold"])
    for case in _fixture("TS0044")["cases"]:
        action = case["expect"].get("action")
        if action is None:
            continue
        got, problems = _decode(only4, case["payload"])
        assert problems == []          # the other keys are ignored, not unknown
        assert _has(got, ("sos", Kind.SOS, True)) == (action in ("4_single", "4_hold")), action
        assert _has(got, ("battery", Kind.BATTERY, case["payload"]["battery"]))
    got, problems = _decode(only4, {"action": "7_single", "battery": 50})
    assert [p.reason for p in problems] == ["unknown_value"] and _has(
        got, ("battery", Kind.BATTERY, 50))
    assert with_sos_actions(caller, None) is caller
    with pytest.raises(ProfileMisfit, match="sos_actions"):
        smoke = PROFILES.by_id["zigbee2mqtt-smoke-detector"]
        assert isinstance(smoke, Profile)
        with_sos_actions(smoke, ["single"])


def _device(**kw: Any) -> dict:
    return {"id": "btn-1", "type": "emergency_caller", "household": "h-7-101",
            "mqtt": {"zigbee2mqtt": "0xa4c138000000aa01"}, **kw}


@pytest.mark.parametrize("device, message", [
    (_device(sos_actions=[]), "devices.btn-1.sos_actions: list 1 to 64"),
    (_device(sos_actions=["4 single"]), "devices.btn-1.sos_actions: '4 single' is not"),
    (_device(sos_actions=["4_single", "4_single"]), "listed twice"),
    (_device(type="smoke_detector", sos_actions=["single"]),
     "devices.btn-1.sos_actions: only for an emergency_caller"),
])
def test_sos_actions_are_validated_naming_the_device(device, message):
    with pytest.raises(ValidationError, match=message):
        DevicesFile.model_validate({"devices": [device]})
    assert DevicesFile.model_validate({"devices": [_device(sos_actions=["4_single"])]}) \
        .devices[0].sos_actions == ["4_single"]


# -- an unknown enumeration value through the real intake -----------------------------------

@pytest.mark.integration
async def test_an_unknown_action_costs_that_field_only(mosquitto, caplog):
    caller = PROFILES.by_id["zigbee2mqtt-emergency-caller"]
    assert isinstance(caller, Profile)
    sink, metrics, errors = AckingSink(), Metrics(), []
    intake = MqttIntake(host="127.0.0.1", port=mosquitto.port, client_id="gw-z2m-unknown",
                        sink=sink, metrics=metrics, on_error=lambda d, r: errors.append((d, r)),
                        bindings={"zigbee2mqtt/remote": DeviceBinding(
                            "btn-1", "emergency_caller", "h-7-101", "cell-1", caller)})
    caplog.set_level(logging.WARNING, logger="drivers.mqtt")
    async with running(intake):
        await until(intake.connected.is_set, 10, "intake connected")
        mqtt_publish(mosquitto.port, [
            ("zigbee2mqtt/remote", {"action": "rotate_left", "battery": 77, "linkquality": 99}),
            ("zigbee2mqtt/remote", {"action": "rotate_left"}),
            ("zigbee2mqtt/remote", {"action": "rotate_left"}),
            ("zigbee2mqtt/remote", {"action": "rotate_left"}),
            ("zigbee2mqtt/remote", {"action": "emergency", "battery": 76}),
        ])
        await until(lambda: any(r.kind is Kind.SOS for r in sink.readings), 10, "the SOS")
    got = [(r.kind, r.value) for r in sink.readings]
    assert got == [(Kind.BATTERY, 77.0), (Kind.SIGNAL, 99.0), (Kind.SOS, True),
                   (Kind.BATTERY, 76.0)]
    assert metrics.get("gateway_bad_fields_total", reason="unknown_value", field="action",
                       transport="mqtt") == 4
    assert metrics.by_label("gateway_rejected_total", "reason") == {}
    # a field's problem (field:...), never a lost message: the device is not degraded by it
    assert errors == [("btn-1", "field:unknown_value")] * 4
    assert ("bad field zigbee2mqtt/remote (device btn-1) field 'action': value 'rotate_left'"
            in caplog.text)


# -- end to end: a real gateway, Mosquitto, the API ------------------------------------------

def _payload(model: str, case: str) -> dict:
    return next(c["payload"] for c in _fixture(model)["cases"] if c["name"] == case)


@pytest.mark.integration
def test_fixture_payloads_raise_alarms_in_a_real_gateway(tmp_path, mosquitto):
    smoke, remote = _fixture("HS1SA-E"), _fixture("TS0044")
    smoke_ieee = next(d["ieee_address"] for d in json.loads(
        (DATA / "bridge_devices.json").read_text())[1:] if d["definition"]["model"] == "HS1SA-E")
    site = site_copy(tmp_path / "site", mqtt_port=mosquitto.port)
    with open(site / "devices.yaml", "a", encoding="utf-8") as fh:
        fh.write(f"""
  - id: z-smoke-7-101
    type: smoke_detector
    household: h-7-101
    mqtt: {{zigbee2mqtt: "{smoke_ieee}"}}
  - id: z-remote-7-101
    type: emergency_caller
    household: h-7-101
    mqtt: {{zigbee2mqtt: remote_7_101}}
    sos_actions: [4_single]
""")
    gw = GatewayProcess(site, tmp_path / "data")
    token = gw.token("installer", "z2m-test")
    gw.start()
    try:
        api = gw.api(token)

        def open_alarms() -> list[tuple[str, str]]:
            alarms = api.get("/api/alarms", params={"state": "open"}).json()["alarms"]
            return sorted((a["device_id"], a["category"]) for a in alarms)

        assert smoke["vendor"] == "Heiman" and remote["vendor"] == "Tuya"
        mqtt_publish(mosquitto.port, [
            (f"zigbee2mqtt/{smoke_ieee}", _payload("HS1SA-E", "smoke normal")),
            ("zigbee2mqtt/remote_7_101", _payload("TS0044", "action 1_single")),
            ("zigbee2mqtt/remote_7_101", _payload("TS0044", "action 1_hold")),
        ])
        wait_for(lambda: "battery" in {r["metric"] for r in api.get(
            "/api/devices/z-remote-7-101/readings").json()["readings"]}, timeout=10,
            what="the remote's battery from its non-SOS keys")
        assert open_alarms() == []
        mqtt_publish(mosquitto.port, [
            (f"zigbee2mqtt/{smoke_ieee}", _payload("HS1SA-E", "smoke alarm")),
            ("zigbee2mqtt/remote_7_101", _payload("TS0044", "action 4_single")),
        ])
        assert wait_for(lambda: len(a := open_alarms()) == 2 and a, timeout=15,
                        what="smoke and SOS alarms") == [
            ("z-remote-7-101", "emergency_call"), ("z-smoke-7-101", "fire")]
    finally:
        gw.stop()
