"""Name placeholders of rule messages (issue 13.5): ``{device_name}``, ``{household_address}``,
``{grid_cell_name}`` from the site, each falling back to the id when the site names nothing;
a supervision fault's message names the device and the fault in words."""

from __future__ import annotations

from rules.actions import RaiseAlarm, RaiseFault
from rules.engine import Engine
from rules.site import DeviceInfo, HouseholdInfo, SiteIndex
from rules.testing import at, config, reading

SITE = SiteIndex.build(
    [DeviceInfo("caller-1", "emergency_caller", "h1", "g1", name="卧室一键呼叫器"),
     DeviceInfo("caller-2", "emergency_caller", "h2", "g2")],
    [HouseholdInfo("h1", "g1", address="田林路200弄7号101室"), HouseholdInfo("h2", "g2")])
SITE = SiteIndex(SITE.devices, SITE.households, SITE.tz, {"g1": "田林第一网格"})

SOS = {"id": "sos", "kind": "match", "severity": "critical", "category": "emergency_call",
       "message": {"zh": "一键呼叫：{household_address}（{device_name}，{grid_cell_name}）",
                   "en": "Emergency call: {household_address} ({device_name}, {grid_cell_name})"},
       "when": {"kind": "sos", "value": True}}
HEALTH = {"id": "device_health", "kind": "supervision", "battery_below": 20,
          "message": {"zh": "设备故障：{household_address}{device_name}（{fault}）",
                      "en": "Device fault: {device_name}, {household_address} ({fault})"}}


def test_messages_name_the_place_in_words() -> None:
    eng = Engine(config(SOS), SITE)
    [a] = eng.feed(reading("caller-1", "sos", True, 10, SITE), at(10))
    assert isinstance(a, RaiseAlarm)
    assert a.message_zh == "一键呼叫：田林路200弄7号101室（卧室一键呼叫器，田林第一网格）"
    assert a.message_en == "Emergency call: 田林路200弄7号101室 (卧室一键呼叫器, 田林第一网格)"


def test_names_fall_back_to_ids() -> None:
    eng = Engine(config(SOS), SITE)
    [a] = eng.feed(reading("caller-2", "sos", True, 10, SITE), at(10))
    assert a.message_zh == "一键呼叫：h2（caller-2，g2）"


def test_a_fault_message_names_the_device_and_the_fault_in_words() -> None:
    eng = Engine(config(HEALTH), SITE)
    out = eng.feed(reading("caller-1", "battery", 5.0, 10, SITE), at(10))
    [f] = [x for x in out if isinstance(x, RaiseFault)]
    assert f.message_zh == "设备故障：田林路200弄7号101室卧室一键呼叫器（电量低）"
    assert "battery_low" not in f.message_zh and "battery_low" not in f.message_en
