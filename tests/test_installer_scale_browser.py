"""Issue 13.7 in Debian's Chromium (Playwright), against a real gateway process with a
generated 5,043-device site and a real Mosquitto: the installer's device list is searched,
filtered and paged on the server; a mode change shows that it is in flight, takes one
request however often it is clicked, and takes effect (the device is in test mode); a new
device saved from the form takes effect at once (its MQTT alarm reaches the duty board).
"""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from gateway.broker import free_port
from simulators.community import Community
from simulators.site_gen import write_site
from tests.support import GatewayProcess, browser_login, mqtt_publish, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser]

HOUSEHOLDS = 885            # 5,043 devices


@pytest.fixture
def gateway(tmp_path, mosquitto):
    site = write_site(tmp_path / "site", Community(HOUSEHOLDS, 0), mqtt_port=mosquitto.port)
    (site / "uplinks.yaml").write_text("{}\n")
    gw = GatewayProcess(site, tmp_path / "data", port=free_port())
    gw.add_users("duty", "installer")
    gw.start(wait_ready=False)
    wait_for(gw.ready, timeout=150, interval=0.2, what="gateway /readyz (5,043 devices)")
    yield gw
    gw.stop()


def _busy_watch(page) -> None:
    """Record in the page whether a control showed it was busy (aria-busy with the
    in-flight label) at any moment."""
    page.evaluate("""() => { window.__busySeen = false;
      new MutationObserver(() => { if (document.querySelector('[aria-busy=true] .busy-indicator'))
        window.__busySeen = true; }).observe(document.body,
        {subtree: true, attributes: true, childList: true, characterData: true}); }""")


def test_installer_list_and_saves_at_community_scale(browser, gateway, mosquitto):
    inst_ctx, inst = browser_login(browser, gateway, "installer")
    duty_ctx, duty = browser_login(browser, gateway, "duty")
    try:
        inst.click("[data-view=installer]")
        expect(inst.locator("#cfg-range")).to_have_text("第 1–50 台，共 5043 台", timeout=15_000)
        assert inst.locator(".configured-device").count() == 50

        # paging
        inst.click("#cfg-next")
        expect(inst.locator("#cfg-range")).to_have_text("第 51–100 台，共 5043 台")
        inst.click("#cfg-prev")
        expect(inst.locator("#cfg-range")).to_have_text("第 1–50 台，共 5043 台")

        # search by an address (the household's), then by a device id
        inst.fill("#cfg-q", "模拟路100弄12号303室")
        expect(inst.locator("#cfg-range")).to_have_text(re.compile(r"共 [5-6] 台"))
        ids = inst.locator(".configured-device").evaluate_all(
            "rows => rows.map(r => r.dataset.device)")
        assert ids and all(i.endswith("12-303") for i in ids), ids
        inst.fill("#cfg-q", "motion-30-101")
        expect(inst.locator(".configured-device")).to_have_count(1)

        # filters: household, type, state
        inst.fill("#cfg-q", "")
        inst.select_option("#cfg-household", "h-02-101")
        expect(inst.locator("#cfg-range")).to_have_text(re.compile(r"第 1–[5-6] 台"))
        inst.select_option("#cfg-type", "smoke_detector")
        expect(inst.locator(".configured-device")).to_have_count(1)
        expect(inst.locator(".configured-device")).to_have_attribute("data-device",
                                                                     "smoke-02-101")
        inst.select_option("#cfg-household", "")
        expect(inst.locator("#cfg-range")).to_have_text(re.compile(r"共 8\d\d 台"))
        inst.select_option("#cfg-type", "")
        inst.select_option("#cfg-state", "test")
        expect(inst.locator("#configured")).to_contain_text("没有符合条件的设备")
        inst.select_option("#cfg-state", "")

        # a mode change: busy while in flight, one request for a double click, in effect
        inst.fill("#cfg-q", "motion-30-101")
        row = inst.locator(".configured-device[data-device='motion-30-101']")
        expect(row).to_have_count(1)
        _busy_watch(inst)
        sent: list[str] = []
        inst.on("request", lambda r: sent.append(r.method) if r.url.endswith(
            "/api/devices/motion-30-101/mode") else None)
        row.locator("button.mode").dblclick()
        expect(inst.locator(".configured-device[data-device='motion-30-101']")
               ).to_have_attribute("data-mode", "test", timeout=10_000)
        assert sent == ["PUT"], sent
        assert inst.evaluate("window.__busySeen") is True
        inst.select_option("#cfg-state", "test")
        expect(inst.locator(".configured-device")).to_have_count(1)
        expect(duty.locator("#modes-pill")).to_contain_text("1", timeout=10_000)
        inst.select_option("#cfg-state", "")

        # a new device from the form: saved once, busy meanwhile, its alarm on the board
        form = inst.locator("#device-form")
        form.locator("input[name=id]").fill("caller-new-1")
        form.locator("select[name=type]").select_option("emergency_caller")
        form.locator("select[name=household]").select_option("h-05-101")
        form.locator("input[name=name]").fill("新装呼叫器")
        form.locator("input[name=topic]").fill("devices/caller-new-1")
        form.locator("select[name=profile]").select_option("json-emergency-caller")
        _busy_watch(inst)
        saves: list[str] = []
        inst.on("request", lambda r: saves.append(r.method) if r.url.endswith(
            "/api/config/devices") and r.method == "POST" else None)
        form.locator("button[type=submit]").dblclick()
        inst.fill("#cfg-q", "caller-new-1")
        expect(inst.locator(".configured-device[data-device='caller-new-1']")).to_have_count(
            1, timeout=10_000)
        assert saves == ["POST"], saves
        assert inst.evaluate("window.__busySeen") is True
        mqtt_publish(mosquitto.port, [("devices/caller-new-1", json.dumps({"sos": True}))])
        card = duty.locator(".alarm", has_text="模拟路100弄5号101室")
        expect(card).to_have_attribute("data-state", "raised", timeout=10_000)
    finally:
        inst_ctx.close()
        duty_ctx.close()
