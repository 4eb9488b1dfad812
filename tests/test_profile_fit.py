"""A profile must fit its device (issue 12.4): `gateway config validate` and the installer
refuse a profile of the wrong format for the device's transport or of another device type,
naming the device, the profile and what would fit. A gas detector saved with the
`dlt645-meter` profile on an MQTT topic used to be accepted and then lose every alarm."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from drivers.profiles import ProfileMisfit, fit_profile, load_profiles
from gateway import ConfigError
from gateway.service import bindings_for
from gateway.site import load_site
from tests.api_fixtures import api_env  # noqa: F401 - fixture
from tests.support import EXAMPLE

PROFILES = load_profiles()
GAS_ON_MQTT = """  - id: gas-3
    type: gas_detector
    household: h-7-101
    name: 厨房燃气探测器
    profile: dlt645-meter
    mqtt: {topic: devices/gas-3}
"""
MISFIT_GAS = ("profile 'dlt645-meter' is for electricity_meter over serial (DL/T 645); "
              "gas_detector 'gas-3' over MQTT needs a json profile such as "
              "zigbee2mqtt-gas-detector")


def _fit(device_type: str, profile: str | None, fmt: str = "json", **kw):
    return fit_profile(PROFILES, "dev-1", device_type, profile, fmt, **kw)


def _misfit(device_type: str, profile: str | None, fmt: str = "json", **kw) -> str:
    with pytest.raises(ProfileMisfit) as err:
        _fit(device_type, profile, fmt, **kw)
    return str(err.value)


def test_fit_rules():
    # the format must be the transport's: json over MQTT, modbus on a bus, the line's protocol
    assert _misfit("gas_detector", "dlt645-meter", transport="MQTT") == (
        "profile 'dlt645-meter' is for electricity_meter over serial (DL/T 645); gas_detector "
        "'dev-1' over MQTT needs a json profile such as zigbee2mqtt-gas-detector")
    assert "needs a modbus profile such as eastron-sdm120, eastron-sdm630" in _misfit(
        "electricity_meter", "dlt645-meter", "modbus")
    # the type must be the device's: a smoke detector's JSON keys are not a gas detector's
    assert _misfit("gas_detector", "json-smoke-detector").startswith(
        "profile 'json-smoke-detector' is for smoke_detector over MQTT (JSON); gas_detector")
    assert "needs a modbus profile such as eastron-sdm120" in _misfit(
        "electricity_meter", "modbus-water-meter", "modbus")
    # Contact ID profiles serve every type: an account's zone can be a caller or a detector
    for device_type in ("emergency_caller", "smoke_detector", "alarm_panel"):
        assert _fit(device_type, "contact-id-receiver", "contact_id").id == "contact-id-receiver"
    assert "is for any device type over serial (Contact ID receiver)" in _misfit(
        "electricity_meter", "contact-id-receiver", "dlt645")
    # defaults: Zigbee2MQTT devices get zigbee2mqtt-<type>, others the type's first json one
    assert _fit("gas_detector", None, zigbee2mqtt=True).id == "zigbee2mqtt-gas-detector"
    assert _fit("emergency_caller", None).id == "json-emergency-caller"
    assert _fit("emergency_caller", None, zigbee2mqtt=True).id == \
        "zigbee2mqtt-emergency-caller"
    assert _fit("water_meter", None, "cjt188").id.startswith("cjt188-water-meter")
    assert _misfit("gas_detector", "no-such-profile") == (
        "unknown profile 'no-such-profile'; gas_detector 'dev-1' over MQTT (JSON) needs a json "
        "profile such as zigbee2mqtt-gas-detector")
    assert _misfit("heat_detector", None) == (
        "no json profile for type 'heat_detector'; heat_detector 'dev-1' over MQTT (JSON) needs "
        "a json profile of device_type heat_detector: none is shipped or in the site's "
        "profiles/ (add one: docs/profiles.md)")


def test_example_and_generated_demo_sites_fit(tmp_path):
    from simulators.community import Community
    from simulators.site_gen import write_site

    for site_dir in (EXAMPLE, write_site(tmp_path / "demo", Community(40, seed=3))):
        site = load_site(site_dir)
        bindings = bindings_for(site)
        assert len(bindings) == len(site.devices.devices)
        for d in site.devices.devices:
            assert bindings[d.topic].profile.device_type == d.type, d.id


def test_config_validate_refuses_a_misfit_with_file_line(tmp_path):
    site = tmp_path / "site"
    shutil.copytree(EXAMPLE, site)
    with open(site / "devices.yaml", "a", encoding="utf-8") as fh:
        fh.write(GAS_ON_MQTT)
        fh.write("""  - id: em-9
    type: electricity_meter
    grid_cell: "310104-012-03"
    profile: modbus-water-meter
    modbus: {bus: b1, unit: 9}
""")
    (site / "gateway.yaml").write_text("mqtt: {host: 127.0.0.1, port: 1883}\nmodbus_buses:\n"
                                       "  - {id: b1, tcp: {host: 127.0.0.1, port: 502}}\n")
    lines = (site / "devices.yaml").read_text().splitlines()
    gas_line = lines.index("    profile: dlt645-meter") + 1
    meter_line = lines.index("    profile: modbus-water-meter") + 1

    def validate() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gateway.cli", "config", "validate",
                               str(site)], capture_output=True, text=True, timeout=60)

    res = validate()
    assert res.returncode == 1, res.stdout
    assert res.stderr.splitlines() == [
        f"{site}/devices.yaml:{gas_line}: devices[6].profile: {MISFIT_GAS}",
        f"{site}/devices.yaml:{meter_line}: devices[7].profile: profile 'modbus-water-meter' "
        "is for water_meter over Modbus; electricity_meter 'em-9' over Modbus bus 'b1' needs a "
        "modbus profile such as eastron-sdm120, eastron-sdm630",
        "2 problem(s) found"]
    # the same site as the running gateway would load it: refused too, never half-bound
    with pytest.raises(ConfigError):
        load_site(site)
    # fixed as the message says: valid
    text = (site / "devices.yaml").read_text().replace("profile: dlt645-meter",
                                                       "profile: zigbee2mqtt-gas-detector")
    (site / "devices.yaml").write_text(text.replace("    profile: modbus-water-meter\n", ""))
    res = validate()
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr


def test_installer_refuses_a_misfit_profile(api_env):  # noqa: F811 - fixture
    path = api_env.site_dir / "devices.yaml"
    before = path.read_text()
    c = api_env.client("installer")
    gas = {"id": "gas-3", "type": "gas_detector", "household": "h-7-101",
           "profile": "dlt645-meter", "topic": "devices/gas-3"}
    r = c.post("/api/config/devices", json=gas)
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == [{"loc": ["body", "profile"], "type": "config",
                                   "msg": MISFIT_GAS, "code": "profile_misfit",
                                   "params": {"value": "dlt645-meter"}}]
    # an existing device edited to a profile of another type: refused the same way
    r = c.put("/api/config/devices/smoke-7-101", json={
        "id": "smoke-7-101", "type": "smoke_detector", "household": "h-7-101",
        "profile": "json-emergency-caller", "topic": "devices/smoke-7-101"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == [{"loc": ["body", "profile"], "type": "config", "msg":
                                   "profile 'json-emergency-caller' is for emergency_caller "
                                   "over MQTT (JSON); smoke_detector 'smoke-7-101' over MQTT "
                                   "needs a json profile such as json-smoke-detector, "
                                   "zigbee2mqtt-smoke-detector", "code": "profile_misfit",
                                   "params": {"value": "json-emergency-caller"}}]
    assert path.read_text() == before                 # nothing saved, nothing applied
    assert "gas-3" not in {d["device_id"] for d in c.get("/api/devices").json()["devices"]}
    # the profile the message names is taken, and the device is bound and shown
    r = c.post("/api/config/devices", json=dict(gas, profile="zigbee2mqtt-gas-detector"))
    assert r.status_code == 201, r.text
    assert "gas-3" in {d["device_id"] for d in c.get("/api/devices").json()["devices"]}
    assert bindings_for(load_site(api_env.site_dir))["devices/gas-3"].profile.id == \
        "zigbee2mqtt-gas-detector"
