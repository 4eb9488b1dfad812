"""Profile files and transport configuration are validated with located errors: a bad register
map names the entry and field; a device on an unknown bus, a taken address or a profile of
the wrong format is reported as FILE:LINE by `gateway config validate`."""

from __future__ import annotations

import shutil

import pytest
from ruamel.yaml import YAML

from drivers.profiles import ModbusProfile, load_profiles, parse_profile
from gateway import ConfigError
from gateway.site import load_site
from tests.support import EXAMPLE


def _profile(text: str):
    return parse_profile(YAML(typ="safe").load(text), "test.yaml")


def test_every_shipped_profile_loads_and_sdm_maps_are_float32_input_registers():
    profiles = load_profiles()
    for pid in ("eastron-sdm120", "eastron-sdm630"):
        p = profiles.by_id[pid]
        assert isinstance(p, ModbusProfile)
        assert all(e.function == 4 and e.data_type == "float32" and e.word_order == "big"
                   for e in p.entries())
    sdm630 = {e.metric: e.address for e in profiles.by_id["eastron-sdm630"].entries()}
    assert sdm630["voltage_l3"] == 0x04 and sdm630["power_total"] == 0x34
    assert sdm630["frequency"] == 0x46 and sdm630["energy_total"] == 0x156


@pytest.mark.parametrize("text, message", [
    ("id: m1\ndevice_type: water_meter\nformat: modbus\nregisters:\n"
     "  - {metric: v, kind: water_volume, address: 0, unit: l}\n",
     "registers[0]: v: water_volume is in m3, not l; convert with scale"),
    ("id: m1\ndevice_type: water_meter\nformat: modbus\nregisters:\n"
     "  - {metric: v, kind: water_volume, address: 0}\n"
     "  - {metric: v, kind: battery, address: 2}\n", "duplicate metric 'v'"),
    ("id: m1\ndevice_type: water_meter\nformat: modbus\nregisters:\n"
     "  - {metric: v, kind: water_volume, address: 0, function: 6}\n", "registers.0.function"),
    ("id: m1\ndevice_type: water_meter\nformat: modbus\nregisters:\n"
     "  - {metric: leak, kind: water_leak, address: 0, data_type: float32}\n",
     "boolean kind water_leak needs an integer type"),
    ("id: d1\ndevice_type: electricity_meter\nformat: dlt645\nread: [energy, voltage_a]\n",
     "unknown DL/T 645 item 'energy'"),
    ("id: x1\ndevice_type: door_contact\nformat: bacnet\n", "format 'bacnet'"),
])
def test_bad_profiles_name_file_and_field(text, message):
    with pytest.raises(ValueError) as err:
        _profile(text)
    assert "profile test.yaml" in str(err.value) and message in str(err.value), str(err.value)


def test_site_profile_overrides_and_extends(tmp_path):
    (tmp_path / "my-meter.yaml").write_text(
        "id: my-water-meter\ndevice_type: water_meter\nformat: modbus\n"
        "defaults: {function: 4, data_type: uint32, word_order: little}\n"
        "registers:\n  - {metric: volume, kind: water_volume, address: 10, scale: 0.01}\n")
    profiles = load_profiles(tmp_path)
    (entry,) = profiles.by_id["my-water-meter"].entries()
    assert (entry.function, entry.data_type, entry.word_order, entry.address) == \
        (4, "uint32", "little", 10)
    assert profiles.for_device("water_meter", fmt="modbus").id == "modbus-water-meter"


def _site(tmp_path, devices: str, gateway: str):
    site = tmp_path / "site"
    shutil.copytree(EXAMPLE, site)
    with open(site / "devices.yaml", "a", encoding="utf-8") as fh:
        fh.write(devices)
    (site / "gateway.yaml").write_text(gateway)
    return site


def test_transport_errors_are_located(tmp_path):
    devices = """
  - id: em-1
    type: electricity_meter
    grid_cell: "310104-012-03"
    profile: eastron-sdm630
    modbus: {bus: b1, unit: 1}
  - id: em-2
    type: electricity_meter
    grid_cell: "310104-012-03"
    profile: eastron-sdm630
    modbus: {bus: b1, unit: 1}
  - id: em-3
    type: electricity_meter
    grid_cell: "310104-012-03"
    modbus: {bus: nowhere, unit: 2}
  - id: wm-1
    type: water_meter
    grid_cell: "310104-012-03"
    profile: eastron-sdm630
    serial: {line: rs485, address: "12345678901234"}
"""
    gateway = """mqtt: {host: 127.0.0.1, port: 1883}
modbus_buses:
  - id: b1
    tcp: {host: 127.0.0.1, port: 502}
serial_lines:
  - id: rs485
    device: /dev/ttyUSB1
    protocol: cjt188
"""
    site = _site(tmp_path, devices, gateway)
    with pytest.raises(ConfigError) as err:
        load_site(site)
    issues = "\n".join(err.value.issues)
    lines = (site / "devices.yaml").read_text().splitlines()

    def line_of(text: str, nth: int = 0) -> int:
        return [i for i, ln in enumerate(lines, 1) if text in ln][nth]

    assert f"devices.yaml:{line_of('modbus: {bus: b1, unit: 1}', 1)}: devices[7].modbus.bus: " \
           "address already used by device 'em-1'" in issues, issues
    assert f"devices.yaml:{line_of('bus: nowhere')}: devices[8].modbus.bus: unknown Modbus " \
           "bus 'nowhere'" in issues, issues
    assert f"devices.yaml:{line_of('profile: eastron-sdm630', 2)}: devices[9].profile: " \
           "profile 'eastron-sdm630' is for electricity_meter over Modbus; water_meter 'wm-1' " \
           "over serial line 'rs485' (cjt188) needs a cjt188 profile such as " \
           "cjt188-water-meter, cjt188-water-meter-valve" in issues, issues


def test_transport_schema_errors_are_located(tmp_path):
    devices = """
  - id: both
    type: water_meter
    grid_cell: "310104-012-03"
    mqtt: {topic: devices/both}
    serial: {line: rs485, address: "12345678901235"}
"""
    gateway = """modbus_buses:
  - id: b1
    tcp: {host: 127.0.0.1, port: 502}
    rtu: {device: /dev/ttyUSB0}
"""
    site = _site(tmp_path, devices, gateway)
    with pytest.raises(ConfigError) as err:
        load_site(site)
    issues = "\n".join(err.value.issues)
    assert "gateway.yaml:2: modbus_buses[0]: give exactly one of tcp or rtu" in issues, issues
    assert "devices[6]: a device needs exactly one transport (mqtt, modbus, serial or dc09), got " \
           "mqtt, serial" in issues, issues


def test_valid_transport_site_loads(tmp_path):
    devices = """
  - id: em-1
    type: electricity_meter
    grid_cell: "310104-012-03"
    modbus: {bus: b1, unit: 3}
  - id: wm-1
    type: water_meter
    household: h-7-101
    serial: {line: mbus, address: "12345678901234"}
"""
    gateway = """modbus_buses:
  - {id: b1, rtu: {device: /dev/ttyUSB0, baudrate: 9600}, period_s: 5}
serial_lines:
  - {id: mbus, device: /dev/ttyUSB1, protocol: cjt188}
"""
    site = load_site(_site(tmp_path, devices, gateway))
    from drivers.field import plan_field

    plans = plan_field(site, load_profiles())
    bus = plans["modbus:b1"]
    assert bus.endpoint.kind == "rtu" and bus.policy.period_s == 5
    assert [(d.device_id, d.unit) for d in bus.devices] == [("em-1", 3)]
    # defaults: the first shipped profile of the type in the transport's format
    assert plans["serial:mbus"].devices[0].profile.id.startswith("cjt188-water-meter")
    assert plans["serial:mbus"].settings.baudrate == 2400


def test_receiver_answers_configured_and_refused_on_meter_lines(tmp_path):
    devices = """
  - id: panel-1234
    type: alarm_panel
    household: h-7-101
    serial: {line: receiver, address: "1234"}
"""
    gateway = """serial_lines:
  - {id: receiver, device: /dev/ttyUSB2, protocol: contact_id, ack_hex: 06, nak_hex: "15"}
"""
    from drivers.field import plan_field

    plans = plan_field(load_site(_site(tmp_path, devices, gateway)), load_profiles())
    settings = plans["serial:receiver"].settings
    assert (settings.ack, settings.nak) == (b"\x06", b"\x15")
    bad = """serial_lines:
  - id: mbus
    device: /dev/ttyUSB1
    protocol: cjt188
    ack_hex: "06"
  - {id: receiver, device: /dev/ttyUSB2, protocol: contact_id, ack_hex: "0G"}
"""
    with pytest.raises(ConfigError) as err:
        load_site(_site(tmp_path / "bad", devices, bad))
    issues = "\n".join(err.value.issues)
    assert "gateway.yaml:2: serial_lines[0]: ack_hex/nak_hex are for protocol contact_id" \
           in issues, issues
    assert "gateway.yaml:6: serial_lines[1].ack_hex" in issues, issues
