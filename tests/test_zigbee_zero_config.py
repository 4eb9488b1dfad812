"""Zigbee2MQTT zero-config (issue 14.1 and 14.5): from ``zigbee2mqtt/bridge/devices`` the
inbox keeps each device's definition, proposes a device type and profile from its exposes
(never from its friendly name), says what the profile does not read or why nothing is
proposed, and the installer registers one device or the whole network in one validated edit.
The broker passes a 500-device list and the gateway reads it.

The models are tests/data/z2m/bridge_devices.json: the definitions of zigbee-herdsman-
converters (the version in tests/data/z2m/VERSION) of devices sold in China, written by
simulators/z2m_fixtures/generate.mjs; each model's class is in tests/data/z2m/models/.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from drivers import zigbee2mqtt as z2m
from drivers.profiles import Profile, load_profiles
from gateway.kernel.model import DEVICE_TYPES
from tests.api_fixtures import api_env  # noqa: F401  (fixture)

DATA = Path(__file__).resolve().parent / "data" / "z2m"
ROOT = Path(__file__).resolve().parent.parent
BRIDGE = DATA / "bridge_devices.json"
PROFILES = load_profiles()

#: A model's class (tests/data/z2m/models/*.json) -> the device types that are right for it
#: (the first that exists is what the rules propose; the others are its fallbacks).
RIGHT = {
    "smoke": {"smoke_detector"},
    "gas": {"gas_detector"},
    "co": {"co_detector", "carbon_monoxide_detector", "gas_detector"},   # gas: if it reads CO
    "water_leak": {"water_leak_detector"},
    "contact": {"door_contact"},
    "occupancy": {"motion_sensor", "presence_sensor"},
    "presence": {"presence_sensor", "motion_sensor"},
    "button": {"emergency_caller"},
    "temperature": {"temperature_sensor"},
}
#: The expose that makes a model of that class what it is.
TRIGGER = {"smoke": "smoke", "gas": "gas", "co": "carbon_monoxide", "water_leak": "water_leak",
           "contact": "contact", "occupancy": "occupancy", "presence": "presence",
           "button": "action", "temperature": "temperature"}


def _bridge() -> list[dict]:
    if not BRIDGE.exists():
        pytest.fail("tests/data/z2m/bridge_devices.json is missing (simulators/z2m_fixtures/"
                    "generate.mjs writes it)")
    return json.loads(BRIDGE.read_text(encoding="utf-8"))


def _classes() -> dict[str, str]:
    out = {}
    for path in (DATA / "models").glob("*.json"):
        model = json.loads(path.read_text(encoding="utf-8"))
        out[model["model"]] = model["class"]
    return out


def _class_of(entry: dict) -> str | None:
    """A model's class from its fixture file, or (for a model without one) from its
    converter's own description."""
    cls = _classes().get(entry["model"])
    if cls is not None:
        return cls
    text = entry["description"].lower()
    for word, c in (("smoke", "smoke"), ("carbon monoxide", "co"), ("gas", "gas"),
                    ("water", "water_leak"), ("leak", "water_leak"), ("door", "contact"),
                    ("contact", "contact"), ("presence", "presence"), ("radar", "presence"),
                    ("motion", "occupancy"), ("pir", "occupancy"), ("sos", "button"),
                    ("button", "button"), ("switch", "button"), ("temperature", "temperature")):
        if word in text:
            return c
    return None


def _entries() -> list[dict]:
    return z2m.bridge_devices(json.dumps(_bridge()).encode())


def test_bridge_devices_keeps_each_devices_definition():
    raw = _bridge()
    entries = _entries()
    coordinator = [r for r in raw if r["type"] == "Coordinator"]
    assert len(entries) == len(raw) - len(coordinator) >= 40
    by_ieee = {r["ieee_address"]: r for r in raw}
    for e in entries:
        r = by_ieee[e["ieee_address"]]
        assert e["topic"] == f"zigbee2mqtt/{r['friendly_name']}"
        assert e["model"] == r["definition"]["model"] and e["vendor"] == r["definition"]["vendor"]
        assert e["description"] == r["definition"]["description"]
        assert e["exposes"] == r["definition"]["exposes"]        # nothing dropped
        assert e["network_role"] == r["type"] and "type" not in e  # the role is not a type
        assert e["power_source"] == (r["power_source"] or "")
    # the inbox gets it back from the intake's JSON (gateway.health.HealthBook.saw_unknown)
    assert z2m.inbox_entry(json.dumps(entries[0])) == entries[0]
    assert z2m.inbox_entry('{"smoke": true}') is None and z2m.inbox_entry("on") is None


def test_every_model_is_proposed_the_right_type_or_the_gap_is_named():
    """Over every model of bridge_devices.json: the proposed type is right for its class and
    its profile reads the expose that decided; a model not proposed is one whose deciding
    expose no shipped profile reads yet (``unread``, naming it), never a wrong type."""
    proposed, gaps = {}, {}
    for e in _entries():
        # Zigbee2MQTT's default friendly name is the IEEE address: nothing to read there
        assert re.fullmatch(r"0x[0-9a-f]{16}", e["friendly_name"])
        p = z2m.propose(e, PROFILES)
        cls = _class_of(e)
        assert cls in RIGHT, (e["model"], e["description"])
        if p.device_type is None:
            assert p.why == "unread" and p.trigger == TRIGGER[cls], (e["model"], p)
            gaps[e["model"]] = p.trigger
            continue
        assert p.device_type in RIGHT[cls], (e["model"], cls, p)
        assert p.device_type in DEVICE_TYPES
        profile = PROFILES.by_id[p.profile]
        assert isinstance(profile, Profile) and profile.device_type == p.device_type
        assert p.profile.startswith("zigbee2mqtt-")
        assert p.trigger in profile.fields
        assert not {prop for prop, _ in p.unmapped} & set(profile.fields)
        proposed[e["model"]] = p.device_type
    assert len(proposed) >= 40, (proposed, gaps)
    # the shipped profiles read every class of the catalogue (issue 14.2): no gap left
    assert not gaps, gaps


@pytest.mark.parametrize(("model", "device_type", "why"), [
    ("JTYJ-GD-01LM/BW", "smoke_detector", "smoke"),
    ("HS1CG-M", "gas_detector", "gas"),
    ("SJCGQ11LM", "water_leak_detector", "water_leak"),
    ("MCCGQ11LM", "door_contact", "contact"),
    ("RTCGQ11LM", "motion_sensor", "occupancy"),
    ("TS0215A_sos", "emergency_caller", "sos"),
    ("HS1RC-N", "emergency_caller", "sos"),           # a remote's SOS key
    ("TS0041", "emergency_caller", "button"),         # a plain button used as a caller
    ("SNZB-02", "temperature_sensor", "temperature"),
])
def test_known_models(model, device_type, why):
    e = next(e for e in _entries() if e["model"] == model)
    p = z2m.propose(e, PROFILES)
    assert (p.device_type, p.why) == (device_type, why)
    assert p.profile == "zigbee2mqtt-" + device_type.replace("_", "-")


def test_what_the_profile_does_not_read_is_shown():
    by_model = {e["model"]: e for e in _entries()}
    p = z2m.propose(by_model["JTYJ-GD-01LM/BW"], PROFILES)
    assert ("smoke_density", "Smoke density") in p.unmapped
    # a remote's arm/disarm keys are ignored by the caller profile: not "unread"
    remote = z2m.propose(by_model["HS1RC-N"], PROFILES)
    assert remote.device_type == "emergency_caller" and not remote.unmapped_values
    # action values the profile neither maps nor ignores are named
    newer = dict(by_model["TS0215A_sos"], exposes=[
        {"property": "action", "type": "enum", "access": 1,
         "values": ["emergency", "wake_up_call"]}])
    assert z2m.propose(newer, PROFILES).unmapped_values == ("wake_up_call",)
    # an alarm the proposed profile ignores is named apart
    smoke = dict(by_model["HS1SA-E"], exposes=[
        *by_model["HS1SA-E"]["exposes"],
        {"property": "carbon_monoxide", "label": "Carbon monoxide", "type": "binary",
         "access": 1}])
    p = z2m.propose(smoke, PROFILES)
    assert p.device_type == "smoke_detector" and p.unread_alarms == ("carbon_monoxide",)


def test_not_proposed_says_why():
    raw = _bridge()
    coordinator = z2m.device_entry(next(r for r in raw if r["type"] == "Coordinator"))
    assert z2m.propose(coordinator, PROFILES).why == "coordinator"
    plug = z2m.device_entry({
        "ieee_address": "0xa4c1380000009999", "type": "Router", "friendly_name": "0xa4c1380000009999",
        "power_source": "Mains (single phase)", "supported": True,
        "definition": {"model": "TS011F_plug_1", "vendor": "Tuya", "description": "Smart plug",
                       "exposes": [
                           {"type": "switch", "features": [
                               {"name": "state", "property": "state", "type": "binary",
                                "access": 7, "value_on": "ON", "value_off": "OFF"}]},
                           {"name": "power", "property": "power", "type": "numeric",
                            "access": 5, "unit": "W"},
                           {"name": "linkquality", "property": "linkquality",
                            "type": "numeric", "access": 1}]}})
    assert z2m.propose(plug, PROFILES) == z2m.Proposal(None, None, "no_sensors")
    pairing = z2m.device_entry({"ieee_address": "0x1", "type": "EndDevice",
                                "friendly_name": "0x1", "supported": False,
                                "definition": None, "interview_completed": False})
    assert z2m.propose(pairing, PROFILES).why == "not_interviewed"
    # a CO detector while no profile reads carbon_monoxide: not proposed as something else
    co = z2m.device_entry(next(r for r in raw if (r.get("definition") or {}).get("model")
                               == "HS1CA-E"))
    assert z2m.propose(co, PROFILES).device_type in RIGHT["co"]
    without_co = [t for t in DEVICE_TYPES
                  if t not in ("co_detector", "carbon_monoxide_detector", "gas_detector")]
    p = z2m.propose(co, PROFILES, without_co)
    assert (p.device_type, p.why, p.trigger) == (None, "unread", "carbon_monoxide")


def test_the_type_table_uses_types_as_they_appear():
    """A type the kernel does not have is skipped; once it exists (with its profile) the
    same table proposes it: presence -> presence_sensor before motion_sensor."""
    fp1 = {"network_role": "Router", "model": "X", "supported": True, "exposes": [
        {"property": "presence", "type": "binary", "access": 1},
        {"property": "occupancy", "type": "binary", "access": 1}]}
    p = z2m.propose(fp1, PROFILES, [t for t in DEVICE_TYPES if t != "presence_sensor"])
    assert p.device_type == "motion_sensor" and p.trigger in ("presence", "occupancy")
    rule = next(r for r in z2m.RULES if r.why == "presence")
    assert rule.types[0] == "presence_sensor"


def test_suggest_id():
    assert z2m.suggest_id("smoke_detector", "h-7-101", "0x1", []) == "smoke-7-101"
    assert z2m.suggest_id("smoke_detector", "h-7-101", "0x1", ["smoke-7-101"]) == "smoke-7-101-2"
    assert z2m.suggest_id("emergency_caller", None, "0x00158D0000A1B2C3", []) == "caller-a1b2c3"
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}",
                        z2m.suggest_id("door_contact", "户 7/101", "", []))


# -- the broker: a 500-device list passes ------------------------------------------------------

def _limit(path: Path) -> int:
    m = re.search(r"^message_size_limit (\d+)$", path.read_text(), re.M)
    assert m, path
    return int(m[1])


def test_message_size_limit_holds_500_devices():
    """Measured per device from the fixtures' real definitions, with a real network's
    endpoints/bindings block: 500 of the largest model fit the broker and the gateway."""
    endpoints = {"1": {
        "bindings": [{"cluster": c, "target": {"endpoint": 1, "type": "endpoint",
                                               "ieee_address": "0x00124b0026b8d0c7"}}
                     for c in ("genPowerCfg", "ssIasZone")],
        "configured_reportings": [{"attribute": a, "cluster": "genPowerCfg",
                                   "maximum_report_interval": 62000,
                                   "minimum_report_interval": 3600, "reportable_change": 0}
                                  for a in ("batteryPercentageRemaining", "batteryVoltage")],
        "clusters": {"input": ["genBasic", "genPowerCfg", "genIdentify", "ssIasZone",
                               "ssIasWd", "genPollCtrl"], "output": ["genOta", "genTime"]},
        "scenes": []}}
    sizes = [len(json.dumps(dict(r, endpoints=endpoints), separators=(",", ":"),
                            ensure_ascii=False).encode())
             for r in _bridge() if r["type"] != "Coordinator"]
    worst = 500 * max(sizes)
    for conf in ("deploy/mosquitto/community-gateway.conf", "deploy/docker/mosquitto.conf"):
        assert _limit(ROOT / conf) >= worst * 1.4, (conf, worst)
        assert _limit(ROOT / conf) == z2m.MAX_BRIDGE_BYTES   # what passes is read
    assert 1800 < sum(sizes) / len(sizes) < 4000          # the comment's figures hold


# -- the API: proposals and one-step / whole-network registration ------------------------------

def _inbox(env, entries: list[dict]) -> None:
    for e in entries:
        env.ctx.devices.saw_unknown(e["topic"], "zigbee2mqtt",
                                    json.dumps({k: v for k, v in e.items() if k != "topic"}))


def test_network_page_api_proposes_and_registers(api_env):  # noqa: F811
    entries = _entries()
    _inbox(api_env, entries)
    c = api_env.client("installer")
    net = c.get("/api/installer/zigbee").json()["devices"]
    assert len(net) == len(entries)
    smoke = next(d for d in net if d["model"] == "JTYJ-GD-01LM/BW")
    assert smoke["proposal"]["device_type"] == "smoke_detector"
    assert smoke["proposal"]["profile"] == "zigbee2mqtt-smoke-detector"
    assert smoke["network_role"] == "EndDevice" and smoke["vendor"] == "Xiaomi"
    door = next(d for d in net if d["model"] == "MCCGQ11LM")
    # the whole selection in one edit; ids made from the household
    r = c.post("/api/installer/zigbee/register", json={"devices": [
        {"zigbee2mqtt": smoke["friendly_name"], "type": "smoke_detector",
         "profile": "zigbee2mqtt-smoke-detector", "household": "h-7-101", "name": "客厅烟感"},
        {"zigbee2mqtt": door["friendly_name"], "type": "door_contact", "household": "h-7-101",
         "name": "入户门磁"}]})
    assert r.status_code == 201, r.text
    ids = [d["id"] for d in r.json()["registered"]]
    assert ids == ["smoke-7-101-2", "door-7-101"]       # smoke-7-101 exists already
    text = (api_env.site_dir / "devices.yaml").read_text()
    assert "zigbee2mqtt: '" + smoke["friendly_name"] in text or \
        f"zigbee2mqtt: {smoke['friendly_name']}" in text
    assert "客厅烟感" in text
    # bound now: out of the inbox and the network page
    left = {d["friendly_name"] for d in c.get("/api/installer/zigbee").json()["devices"]}
    assert smoke["friendly_name"] not in left and door["friendly_name"] not in left
    audit = api_env.client("admin").get("/api/audit").json()
    assert {a["target"] for a in audit["audit"] if a["action"] == "device.create"} >= set(ids)
    # registered twice: refused, nothing written
    again = c.post("/api/installer/zigbee/register", json={"devices": [
        {"zigbee2mqtt": smoke["friendly_name"], "type": "smoke_detector",
         "household": "h-7-101"}]})
    assert again.status_code == 409
    assert again.json()["detail"][0]["loc"] == ["body", "devices", 0, "zigbee2mqtt"]


def test_register_refuses_all_when_one_is_wrong(api_env):  # noqa: F811
    entries = _entries()
    _inbox(api_env, entries)
    c = api_env.client("installer")
    before = (api_env.site_dir / "devices.yaml").read_text()
    r = c.post("/api/installer/zigbee/register", json={"devices": [
        {"zigbee2mqtt": entries[0]["friendly_name"], "type": "smoke_detector",
         "household": "h-7-101"},
        {"zigbee2mqtt": entries[1]["friendly_name"], "type": "smoke_detector",
         "household": "h-nowhere"}]})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail[0]["loc"] == ["body", "devices", 1, "household"]
    assert "h-nowhere" in detail[0]["msg"]
    assert (api_env.site_dir / "devices.yaml").read_text() == before
    # a profile that does not fit the type is refused the same way as in the device form
    r = c.post("/api/installer/zigbee/register", json={"devices": [
        {"zigbee2mqtt": entries[0]["friendly_name"], "type": "smoke_detector",
         "profile": "zigbee2mqtt-door-contact", "household": "h-7-101"}]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:3] == ["body", "devices", 0]
