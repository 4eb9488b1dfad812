"""Test and maintenance modes end on their own; every device type can pass its test.

In-process: the rule engine's test records for readings, the installer API's durations and
audit, the mode keeper (expiry, a mode without an end). Integration: the real gateway process
and Mosquitto, a motion sensor and a meter in test mode complete the checklist's test item,
and a mode whose end passed while the gateway was stopped is normal after the restart.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

import pytest

from gateway.device_modes import ModeKeeper, effective_mode, modes_json
from gateway.model import utc
from gateway.site import load_site
from rules.actions import RaiseAlarm, TestRecord
from rules.engine import Engine
from rules.testing import at, config, reading, small_site
from tests.api_fixtures import api_env  # noqa: F401  (fixture)
from tests.support import GatewayProcess, mqtt_publish, site_copy, wait_for

SITE = small_site(1)
SOS = {"id": "sos", "kind": "match", "device_types": ["emergency_caller"],
       "when": {"kind": "sos", "value": True}, "severity": "critical"}


def feed(eng: Engine, dev: str, kind: str, value, s: float) -> list:
    return eng.feed(reading(dev, kind, value, s, SITE), at(s))


# -- the rule engine: a good reading in test mode is the device's test -----------------------
def test_readings_of_a_device_in_test_mode_are_its_test() -> None:
    eng = Engine(config(SOS), SITE)
    for dev in ("motion-1", "door-1", "water-1", "caller-1"):
        eng.set_device_mode(dev, "test")
    [m] = feed(eng, "motion-1", "motion", True, 1)
    assert m == TestRecord("motion-1", "reading:motion", at(1), True)
    assert feed(eng, "motion-1", "motion", False, 2) == []        # no motion: not a test
    assert feed(eng, "motion-1", "battery", 90.0, 3) == []        # supervision: not a test
    [d] = feed(eng, "door-1", "door_open", True, 4)
    assert d.rule_id == "reading:door_open"
    # a meter: its first reading is a test, then at most one a minute
    [w] = feed(eng, "water-1", "water_volume", 12.5, 5)
    assert w.rule_id == "reading:water_volume" and w.value == 12.5
    assert feed(eng, "water-1", "water_volume", 12.6, 30) == []
    assert len(feed(eng, "water-1", "water_volume", 12.7, 66)) == 1
    # a press a rule listens to: one record (the rule's), not two
    [c] = feed(eng, "caller-1", "sos", True, 70)
    assert c.rule_id == "sos"
    # in normal mode nothing of this: the press is an alarm, the motion nothing
    eng.set_device_mode("caller-1", "normal")
    eng.set_device_mode("motion-1", "normal")
    assert feed(eng, "motion-1", "motion", True, 80) == []
    [a] = feed(eng, "caller-1", "sos", False, 81) + feed(eng, "caller-1", "sos", True, 82)
    assert isinstance(a, RaiseAlarm)


# -- the installer API: durations, audit, the board's list ----------------------------------
def test_mode_is_set_for_a_chosen_duration_and_audited(api_env) -> None:  # noqa: F811
    c = api_env.client("installer")
    path = api_env.site_dir / "devices.yaml"
    t0 = utc()
    r = c.put("/api/devices/caller-7-101/mode", json={"mode": "test", "duration": "30m"})
    assert r.status_code == 200, r.text
    dev = r.json()["device"]
    until = datetime.fromisoformat(dev["mode_until"])
    assert dev["mode"] == "test" and until.utcoffset() == timedelta(hours=8)   # site's time
    assert timedelta(minutes=29) < until - t0 <= timedelta(minutes=30, seconds=1)
    assert f"mode_until: '{dev['mode_until']}'" in path.read_text()
    # default 2 h; never more than 24 h; nonsense refused at the field
    r = c.put("/api/devices/smoke-7-101/mode", json={"mode": "maintenance"})
    until = datetime.fromisoformat(r.json()["device"]["mode_until"])
    assert timedelta(minutes=119) < until - t0 <= timedelta(hours=2, seconds=1)
    for bad in ("25h", "0s", "soon", -5, True):
        r = c.put("/api/devices/caller-9-201/mode", json={"mode": "test", "duration": bad})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "duration"]
    # the duty board's list: soonest end first
    modes = api_env.client("duty").get("/api/devices/modes").json()
    assert modes["count"] == 2
    assert [(m["device_id"], m["mode"], m["household_id"]) for m in modes["devices"]] == [
        ("caller-7-101", "test", "h-7-101"), ("smoke-7-101", "maintenance", "h-7-101")]
    # an edit keeping the mode keeps its end; back to normal drops it
    body = {"id": "caller-7-101", "type": "emergency_caller", "household": "h-7-101",
            "topic": "devices/caller-7-101", "name": "卧室一键呼叫器", "mode": "test"}
    r = c.put("/api/config/devices/caller-7-101", json=body)
    assert r.json()["device"]["mode_until"] == dev["mode_until"]
    r = c.put("/api/devices/caller-7-101/mode", json={"mode": "normal"})
    assert r.json()["device"] == {**r.json()["device"], "mode": "normal", "mode_until": None}
    assert "caller-7-101" not in str(c.get("/api/devices/modes").json())
    audit = [e for e in api_env.client("admin").get("/api/audit").json()["audit"]
             if e["action"] == "device.mode"]
    assert [(e["target"], e["detail"]["mode"]) for e in audit] == [
        ("caller-7-101", "normal"), ("smoke-7-101", "maintenance"), ("caller-7-101", "test")]
    assert audit[2]["detail"]["until"] == dev["mode_until"]
    assert 1790 <= audit[2]["detail"]["duration_s"] <= 1800


# -- the mode keeper --------------------------------------------------------------------------
def test_keeper_ends_modes_on_time_and_bounds_modes_without_an_end(api_env) -> None:  # noqa: F811
    c = api_env.client("installer")
    r = c.put("/api/devices/caller-7-101/mode", json={"mode": "test", "duration": "4s"})
    until = datetime.fromisoformat(r.json()["device"]["mode_until"])
    path = api_env.site_dir / "devices.yaml"   # a hand edit: maintenance without an end
    path.write_text(path.read_text().replace(
        "    mqtt: {topic: devices/smoke-7-302}\n",
        "    mqtt: {topic: devices/smoke-7-302}\n    mode: maintenance\n"))
    api_env.ctx.reload(load_site(api_env.site_dir))
    engine_modes: dict[str, str] = {}
    keeper = ModeKeeper(api_env.ctx.editor, lambda: api_env.ctx.site,
                        lambda dev, mode: engine_modes.__setitem__(dev, mode),
                        api_env.ctx.reload, api_env.store.audit)

    async def scenario():
        first = await keeper.step()
        # bounded (2 h from now); the test mode runs on
        assert [(ch["action"], ch["device_id"]) for ch in first] == [
            ("bounded", "smoke-7-302")]
        assert engine_modes == {"caller-7-101": "test", "smoke-7-302": "maintenance"}
        assert await keeper.step() == []
        await asyncio.sleep((until - utc()).total_seconds() + 0.1)
        second = await keeper.step()
        assert [(ch["action"], ch["device_id"]) for ch in second] == [
            ("expired", "caller-7-101")]
        assert engine_modes["caller-7-101"] == "normal"

    asyncio.run(scenario())
    site = load_site(api_env.site_dir)
    modes = {d.id: (d.mode, d.mode_until) for d in site.devices.devices}
    assert modes["caller-7-101"] == ("normal", None)
    assert modes["smoke-7-302"][0] == "maintenance"
    assert timedelta(minutes=119) < modes["smoke-7-302"][1] - utc() <= timedelta(hours=2)
    assert [m["device_id"] for m in modes_json(api_env.ctx.site)["devices"]] == ["smoke-7-302"]
    audit = api_env.client("admin").get("/api/audit", params={"actor": "system"}).json()["audit"]
    assert [(e["action"], e["target"]) for e in audit] == [
        ("device.mode_expired", "caller-7-101"), ("device.mode_until", "smoke-7-302")]
    assert audit[0]["detail"]["mode"] == "test" and audit[0]["detail"]["while_stopped"] is False


def test_effective_mode_is_normal_once_the_end_has_passed(tmp_path) -> None:
    dest = site_copy(tmp_path / "site", mqtt_port=1883)
    p = dest / "devices.yaml"
    p.write_text(p.read_text().replace(   # as a YAML timestamp, unquoted, written by hand
        "    mqtt: {topic: devices/caller-7-101}\n",
        "    mqtt: {topic: devices/caller-7-101}\n    mode: test\n"
        "    mode_until: 2030-01-01T08:00:00+08:00\n"))
    d = next(d for d in load_site(dest).devices.devices if d.id == "caller-7-101")
    assert d.mode == "test" and d.mode_until == datetime.fromisoformat("2030-01-01T00:00:00Z")
    assert effective_mode(d, d.mode_until - timedelta(seconds=1)) == "test"
    assert effective_mode(d, d.mode_until) == "normal"
    # an end without a test/maintenance mode is a mistake the loader names
    p.write_text(p.read_text().replace("    mode: test\n", ""))
    with pytest.raises(Exception, match="mode_until is only for mode test or maintenance"):
        load_site(dest)


# -- the real gateway ---------------------------------------------------------------------------
METER_PROFILE = """id: json-electricity-meter
device_type: electricity_meter
format: json
description: JSON electricity meter (energy, power)
fields:
  energy: {kind: energy}
  power: {kind: power}
"""


@pytest.mark.integration
def test_motion_sensor_and_meter_pass_their_test_in_test_mode(tmp_path, mosquitto) -> None:
    config = site_copy(tmp_path / "site", mqtt_port=mosquitto.port)
    (config / "profiles").mkdir(exist_ok=True)
    (config / "profiles" / "json-electricity-meter.yaml").write_text(METER_PROFILE)
    gw = GatewayProcess(config, tmp_path / "data")
    token = gw.token("installer", "commissioning")
    gw.start()
    try:
        api = gw.api(token)
        for body in ({"id": "motion-9-201", "type": "motion_sensor", "household": "h-9-201",
                      "name": "客厅人体感应", "zigbee2mqtt": "motion-9-201", "mode": "test"},
                     {"id": "meter-9-201", "type": "electricity_meter", "household": "h-9-201",
                      "name": "电表", "topic": "devices/meter-9-201",
                      "profile": "json-electricity-meter", "mode": "test",
                      "duration": "1h"}):
            r = api.post("/api/config/devices", json=body)
            assert r.status_code == 201, r.text

        def items() -> dict:
            r = api.get("/api/households/h-9-201/checklist")
            return {i["id"]: i["ok"] for i in r.json()["items"]}

        before = items()
        assert not before["tested:motion-9-201"] and not before["tested:meter-9-201"]
        # readings that are no test: a battery report, "no motion"
        mqtt_publish(mosquitto.port, [
            ("zigbee2mqtt/motion-9-201", {"occupancy": False, "battery": 95}),
        ])
        time.sleep(1.0)
        assert not items()["tested:motion-9-201"]
        # the installer walks past the sensor; the meter reports
        mqtt_publish(mosquitto.port, [
            ("zigbee2mqtt/motion-9-201", {"occupancy": True, "battery": 95}),
            ("devices/meter-9-201", {"energy": 1234.5, "power": 310.0}),
        ])
        after = wait_for(lambda: (lambda i: i if i["tested:motion-9-201"]
                                  and i["tested:meter-9-201"] else None)(items()),
                         timeout=10, what="both devices tested")
        assert not after["normal:motion-9-201"]        # still in test mode: not signed off
        tests = api.get("/api/devices/meter-9-201/tests").json()["tests"]
        assert {t["rule_id"] for t in tests} == {"reading:energy", "reading:power"}
        motion = api.get("/api/devices/motion-9-201/tests").json()["tests"]
        assert [(t["rule_id"], t["value"]) for t in motion] == [("reading:motion", True)]
        assert api.get("/api/alarms").json()["alarms"] == []     # tests, never alarms
        for dev in ("motion-9-201", "meter-9-201"):
            assert api.put(f"/api/devices/{dev}/mode",
                           json={"mode": "normal"}).status_code == 200
        final = items()
        assert all(final[f"{k}:{d}"] for k in ("tested", "normal")
                   for d in ("motion-9-201", "meter-9-201"))
    finally:
        gw.stop()


@pytest.mark.integration
def test_a_mode_that_ended_while_stopped_is_normal_after_the_restart(tmp_path,
                                                                     mosquitto) -> None:
    config = site_copy(tmp_path / "site", mqtt_port=mosquitto.port)
    gw = GatewayProcess(config, tmp_path / "data")
    token = gw.token("admin", "ops")
    gw.start()
    try:
        api = gw.api(token)
        r = api.put("/api/devices/caller-9-201/mode", json={"mode": "test", "duration": "10s"})
        assert r.status_code == 200, r.text
        until = datetime.fromisoformat(r.json()["device"]["mode_until"])
        assert gw.stop() == 0
        # stopped past its end
        time.sleep(max(0.0, (until - utc()).total_seconds()) + 1)
        gw.start()
        assert api.get("/api/devices/modes").json() == {"devices": [], "count": 0}
        mqtt_publish(mosquitto.port, [("devices/caller-9-201", {"event": "sos"})])
        wait_for(lambda: [a for a in api.get("/api/alarms").json()["alarms"]
                          if a["device_id"] == "caller-9-201" and not a["test"]],
                 timeout=10, what="a real alarm from the device back in normal mode")
        wait_for(lambda: "mode: test" not in (config / "devices.yaml").read_text(), timeout=5,
                 what="devices.yaml back to normal")
        audit = wait_for(lambda: [e for e in api.get("/api/audit").json()["audit"]
                                  if e["action"] == "device.mode_expired"], timeout=5,
                         what="audit of the automatic return")
        assert audit[0]["actor"] == "system" and audit[0]["target"] == "caller-9-201"
        assert audit[0]["detail"]["while_stopped"] is True
    finally:
        gw.stop()
