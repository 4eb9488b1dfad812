"""Zigbee zero-config in Debian's Chromium (Playwright), against a real gateway process and a
real Mosquitto (issue 14.1): Zigbee2MQTT's retained ``zigbee2mqtt/bridge/devices`` with the
64 real models of tests/data/z2m/bridge_devices.json (friendly names are the IEEE addresses,
as Zigbee2MQTT names a new device) reaches the installer's inbox with the right proposal for
every device, in words; the installer registers a smoke detector, a door contact, an SOS
button and a water leak sensor from the network page in one step; the smoke detector's
alarm payload on ``zigbee2mqtt/<friendly_name>`` then reaches the duty board.
"""

from __future__ import annotations

import json
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from playwright.sync_api import expect

from drivers import zigbee2mqtt as z2m
from drivers.profiles import load_profiles
from gateway.broker import free_port
from tests.support import GatewayProcess, browser_login, mqtt_publish, site_copy

pytestmark = [pytest.mark.integration, pytest.mark.browser]

BRIDGE = Path(__file__).resolve().parent / "data" / "z2m" / "bridge_devices.json"
H_7_302 = "田林路200弄7号302室"
#: model -> (household, name, the type's words): what the installer registers
REGISTER = {
    "JTYJ-GD-01LM/BW": ("h-7-302", "厨房烟感", "烟感"),
    "MCCGQ11LM": ("h-7-302", "入户门磁", "门磁"),
    "TS0215A_sos": ("h-9-201", "床头紧急按钮", "一键呼叫器"),
    "SJCGQ11LM": ("h-7-302", "卫生间水浸", "水浸探测器"),
}

#: A smart plug (a router): nothing to register, the inbox says why
PLUG = {"ieee_address": "0xa4c1380000009999", "type": "Router", "network_address": 39321,
        "friendly_name": "0xa4c1380000009999", "supported": True, "disabled": False,
        "power_source": "Mains (single phase)", "interview_completed": True,
        "definition": {"model": "TS011F_plug_1", "vendor": "Tuya", "description": "Smart plug",
                       "exposes": [{"type": "switch", "features": [
                           {"name": "state", "property": "state", "type": "binary",
                            "access": 7, "value_on": "ON", "value_off": "OFF"}]},
                           {"name": "power", "property": "power", "type": "numeric",
                            "access": 5, "unit": "W"}]}}


@pytest.fixture
def gateway(tmp_path, mosquitto):
    config = site_copy(tmp_path / "site", mqtt_port=mosquitto.port)
    gw = GatewayProcess(config, tmp_path / "data", port=free_port())
    gw.add_users("duty", "installer")
    gw.start()
    yield gw
    gw.stop()


def _publish_retained(port: int, topic: str, payload: bytes) -> None:
    """As Zigbee2MQTT publishes its device list: retained, QoS 1, acknowledged."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="zigbee2mqtt-test")
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        info = c.publish(topic, payload, qos=1, retain=True)
        info.wait_for_publish(timeout=10)
        assert info.is_published()
    finally:
        c.disconnect()
        c.loop_stop()


def test_a_zigbee_network_is_proposed_registered_and_alarms(browser, gateway, mosquitto):
    raw = json.loads(BRIDGE.read_text(encoding="utf-8")) + [PLUG]
    payload = json.dumps(raw, separators=(",", ":")).encode()   # as Zigbee2MQTT sends it
    entries = z2m.bridge_devices(payload)
    assert len(entries) >= 40
    profiles = load_profiles()
    expected = {e["topic"]: z2m.propose(e, profiles).device_type or "" for e in entries}
    by_model = {e["model"]: e for e in entries}
    _publish_retained(mosquitto.port, "zigbee2mqtt/bridge/devices", payload)

    duty_ctx, duty = browser_login(browser, gateway, "duty")
    inst_ctx, inst = browser_login(browser, gateway, "installer")
    try:
        duty.wait_for_selector("#board-empty", timeout=5000)

        # the inbox: every device with the proposal made from its exposes, in words
        inst.click("[data-view=installer]")
        rows = inst.locator("#zigbee-inbox tr.z-inbox")
        expect(rows).to_have_count(len(entries), timeout=10_000)
        shown = dict(zip(rows.evaluate_all("rs => rs.map(r => r.dataset.topic)"),
                         rows.evaluate_all("rs => rs.map(r => r.dataset.type)"), strict=True))
        assert shown == expected
        for model, (_, _, words) in REGISTER.items():
            row = inst.locator(f"#zigbee-inbox tr.z-inbox[data-topic='{by_model[model]['topic']}']")
            assert row.locator(".z-type").inner_text() == words
        types = set(inst.locator("#zigbee-inbox .z-type").all_inner_texts())
        assert types and not any("_" in t for t in types), types       # no raw type codes
        assert "依据：烟雾报警" in inst.locator(
            f"tr.z-inbox[data-topic='{by_model['JTYJ-GD-01LM/BW']['topic']}']").inner_text()
        plug = inst.locator(f"tr.z-inbox[data-topic='zigbee2mqtt/{PLUG['friendly_name']}']")
        assert plug.locator(".z-none").inner_text().startswith(   # not proposed, and why
            "不建议登记：没有网关可读取的报警或感应能力")
        assert plug.locator("button").count() == 0
        # in English
        inst.select_option("#lang", "en")
        smoke_row = inst.locator(
            f"#zigbee-inbox tr.z-inbox[data-topic='{by_model['JTYJ-GD-01LM/BW']['topic']}']")
        expect(smoke_row.locator(".z-type")).to_have_text("smoke detector", timeout=5000)
        inst.select_option("#lang", "zh")

        # the network page: choose households and names, register the four in one step
        inst.locator("#to-zigbee").click()
        table = inst.locator("#zigbee-network tr.z-row")
        expect(table).to_have_count(len(entries), timeout=10_000)
        for model, (household, name, _) in REGISTER.items():
            row = inst.locator(f"#zigbee-network tr.z-row[data-topic='{by_model[model]['topic']}']")
            row.locator("select.z-household").select_option(household)
            row.locator("input.z-name").fill(name)
            expect(row.locator("input.z-pick")).to_be_checked()    # chosen by filling it in
        inst.click("#zigbee-register")
        done = inst.locator("#zigbee-done li.z-done")
        expect(done).to_have_count(len(REGISTER), timeout=15_000)
        assert {"smoke-7-302-2", "door-7-302", "caller-9-201-2", "leak-7-302"} == set(
            done.evaluate_all("ls => ls.map(l => l.dataset.device)"))
        expect(table).to_have_count(len(entries) - len(REGISTER), timeout=5000)
        text = (gateway.config / "devices.yaml").read_text(encoding="utf-8")
        assert "厨房烟感" in text and by_model["JTYJ-GD-01LM/BW"]["friendly_name"] in text

        # the smoke detector's alarm, as Zigbee2MQTT publishes it, reaches the duty board
        smoke = by_model["JTYJ-GD-01LM/BW"]["friendly_name"]
        mqtt_publish(mosquitto.port, [(f"zigbee2mqtt/{smoke}", {
            "smoke": True, "battery": 97, "battery_low": False, "tamper": False,
            "voltage": 3025, "linkquality": 120, "smoke_density": 9.2})])
        card = duty.locator(".alarm", has_text=H_7_302)
        expect(card).to_have_attribute("data-state", "raised", timeout=10_000)
        assert "紧急" in card.inner_text()
    finally:
        inst_ctx.close()
        duty_ctx.close()
