"""The duty console and installer pages in Debian's Chromium (Playwright), against a real
gateway process, a real Mosquitto and the simulated case system.

Set GATEWAY_SCREENSHOTS=1 to (re)write docs/screenshots/*.png from this run.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pytest

from gateway.broker import free_port
from tests.support import GatewayProcess, mqtt_publish, site_copy, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser]

DOCS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


@pytest.fixture
def gateway(tmp_path, mosquitto, case_system, case_secret):
    port = free_port()
    config = site_copy(tmp_path / "site", mqtt_port=mosquitto.port, case_url=case_system.url,
                       callback_url=f"http://127.0.0.1:{port}/api/case-callback")
    # staff resolve here (the simulated case closes within 2 s), and the card counts down to
    # the next tier (tests/test_case_feedback_acts.py covers the defaults)
    with open(config / "uplinks.yaml", "a", encoding="utf-8") as fh:
        fh.write("  on_case_closed: confirm\n  stop_escalation_at: never\n")
    gw = GatewayProcess(config, tmp_path / "data", env={"CASE_SYSTEM_SECRET": case_secret},
                        port=port)
    gw.passwords = {}
    for role in ("duty", "installer"):
        gw.passwords[role] = secrets.token_urlsafe(12)
        res = gw.cli("user", "add", "--username", role, "--role", role, "--password-stdin",
                     "--data", str(gw.data), input=gw.passwords[role] + "\n")
        assert res.returncode == 0, res.stderr
    gw.admin_token = gw.token("admin", "test-admin")
    gw.start()
    yield gw
    gw.stop()


def _shot(page, tmp_path: Path, name: str) -> None:
    target = DOCS if os.environ.get("GATEWAY_SCREENSHOTS") == "1" else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target / name), full_page=False)


def _login(browser, gw, role: str, **ctx_args):
    context = browser.new_context(locale="zh-CN", timezone_id="Asia/Shanghai", **ctx_args)
    context.grant_permissions(["notifications"], origin=gw.url)
    # count notifications shown (the real Notification still runs)
    context.add_init_script("""(() => { const N = window.Notification; window.__notes = [];
        window.Notification = function (title, opts) { window.__notes.push(title); return new N(title, opts); };
        window.Notification.permission = N.permission; window.Notification.requestPermission = N.requestPermission.bind(N);
    })();""")
    page = context.new_page()
    page.goto(gw.url + "/")
    page.fill("#login input[name=username]", role)
    page.fill("#login input[name=password]", gw.passwords[role])
    page.click("#login button[type=submit]")
    page.wait_for_selector("#app:not([hidden])", timeout=10_000)
    return context, page


def test_duty_sees_sos_within_2s_acknowledges_and_resolves(browser, gateway, mosquitto,
                                                             tmp_path):
    context, page = _login(browser, gateway, "duty")
    try:
        page.wait_for_selector("#board-empty", timeout=5000)
        assert page.inner_text("#board-empty") == "当前没有未处理的报警"
        assert page.get_attribute("html", "lang") == "zh-CN"

        t0 = time.monotonic()
        mqtt_publish(mosquitto.port, [("devices/caller-7-101", {"event": "sos"})])
        card = page.locator(".alarm[data-state=raised]").first   # re-found on each use
        card.wait_for(timeout=2000)
        print(f"publish -> card drawn: {(time.monotonic() - t0) * 1000:.0f} ms")
        text = card.inner_text()
        assert "紧急" in text and "待处理" in text
        assert "田林路200弄7号101室" in text and "独居" in text
        assert "王芳" in text and "310104-012-03" in text
        assert "13800000001" in text           # duty may read emergency contacts
        assert "升级至" in text                 # escalation countdown
        assert "秒前" in text                  # time since raised
        # the critical alarm sounds and notifies, repeating until acknowledged
        wait_for(lambda: page.evaluate("window.__alarmSoundPlays || 0") >= 2, timeout=8,
                 what="alarm sound repeating")
        assert page.evaluate("window.__notes.length") >= 1
        assert page.inner_text("#n-critical") == "1"

        mqtt_publish(mosquitto.port, [("devices/smoke-7-302", {"smoke": True})])
        page.wait_for_selector(".alarm.critical >> nth=1", timeout=3000)
        _shot(page, tmp_path, "board-zh.png")
        page.set_viewport_size({"width": 390, "height": 844})
        _shot(page, tmp_path, "board-zh-phone.png")
        page.set_viewport_size({"width": 1280, "height": 800})

        # acknowledge in one click: state changes, the sound stops once none is unacknowledged
        caller = page.locator(".alarm", has_text="田林路200弄7号101室")
        caller.locator("button.ack").click()
        page.wait_for_selector(".alarm[data-state=acknowledged]", timeout=3000)
        smoke = page.locator(".alarm", has_text="田林路200弄7号302室")
        smoke.locator("button.ack").click()
        wait_for(lambda: page.evaluate("document.querySelectorAll('.alarm[data-state=raised]')"
                                       ".length") == 0, timeout=3, what="both acknowledged")
        plays = page.evaluate("window.__alarmSoundPlays")
        page.wait_for_timeout(3000)   # one sound period: no new pattern may start
        assert page.evaluate("window.__alarmSoundPlays") == plays

        # resolve with a reason and a note, confirmed once: the card leaves the board
        caller.locator("select.reason").select_option("false_alarm")
        caller.locator("input.note").fill("住户误按，已电话确认")
        caller.locator("button.resolve").click()
        page.click("#resolve-dialog #rd-confirm")
        page.wait_for_function("() => !document.body.innerText.includes('田林路200弄7号101室')",
                               timeout=3000)
        assert page.locator(".alarm").count() == 1

        # history shows it resolved with the reason; CSV export carries the filters
        page.click("[data-view=history]")
        page.select_option("#history-filter select[name=state]", "resolved")
        page.click("#history-filter button[type=submit]")
        # (the tab first shows the unfiltered history; wait for the filtered table)
        page.wait_for_function("() => document.querySelector('#page').textContent === '共 1 条'",
                               timeout=3000)
        row = page.locator("#history-table tbody tr")
        assert row.count() == 1
        assert "误报" in row.inner_text() and "住户误按" in row.inner_text()
        assert "state=resolved" in page.get_attribute("#csv", "href")
        csv_text = page.evaluate("fetch(document.querySelector('#csv').href).then(r => r.text())")
        # (in the console's language: the reason in words, never its code)
        assert "误报" in csv_text and "false_alarm" not in csv_text
        assert "13800000001" not in csv_text

        # English is available
        page.select_option("#lang", "en")
        assert page.inner_text("[data-view=board]") == "Alarms"
    finally:
        context.close()


def test_installer_registers_unknown_device_and_test_press_is_a_test(browser, gateway,
                                                                     mosquitto, tmp_path):
    mqtt_publish(mosquitto.port, [("devices/caller-new-9", {"event": "sos", "battery": 90})])
    context, page = _login(browser, gateway, "installer")
    try:
        # installers see masked contacts and no acknowledge buttons
        page.click("[data-view=installer]")
        row = page.wait_for_selector(".unknown-device[data-topic='devices/caller-new-9']",
                                     timeout=5000)
        row.query_selector("button.register").click()
        form = page.locator("#device-form")
        assert form.locator("input[name=id]").input_value() == "caller-new-9"
        assert form.locator("select[name=type]").input_value() == "emergency_caller"

        # a field-level error first: an id that exists
        form.locator("input[name=id]").fill("caller-7-101")
        form.locator("select[name=household]").select_option("h-9-201")
        form.locator("button[type=submit]").click()
        page.wait_for_function(
            "() => document.querySelector('.ferr[data-for=id]').textContent === '该设备编号已存在'",
            timeout=3000)

        form.locator("input[name=id]").fill("caller-new-9")
        form.locator("select[name=mode]").select_option("test")
        form.locator("input[name=name]").fill("调试中的呼叫器")
        form.locator("button[type=submit]").click()
        dev = page.locator(".configured-device[data-device='caller-new-9'][data-mode=test]")
        dev.wait_for(timeout=5000)
        assert "测试" in dev.inner_text()

        # the binding took effect without a restart: a press is decoded and recorded as a test
        assert page.locator(".unknown-device[data-topic='devices/caller-new-9']").count() == 0
        dev.locator("button.detail").click()
        mqtt_publish(mosquitto.port, [("devices/caller-new-9", {"event": "sos"})])
        page.wait_for_selector("#device-detail .test-record", timeout=5000)
        assert "测试" in page.inner_text("#device-detail")
        api = gateway.api(gateway.admin_token)
        alarms = api.get("/api/alarms").json()["alarms"]
        assert not [a for a in alarms if a["device_id"] == "caller-new-9"], alarms

        page.select_option("#checklist-household", "h-9-201")
        page.wait_for_selector("#checklist li[data-item='tested:caller-new-9'].ok", timeout=3000)
        assert page.locator("#checklist li[data-item='normal:caller-new-9'].todo").count() == 1
        _shot(page, tmp_path, "installer-zh.png")

        # out of test mode, the same press is a real alarm
        page.click(".configured-device[data-device='caller-new-9'] button.mode")
        page.wait_for_selector(".configured-device[data-device='caller-new-9'][data-mode=normal]",
                               timeout=5000)
        mqtt_publish(mosquitto.port, [("devices/caller-new-9", {"event": "sos"})])
        wait_for(lambda: [a for a in api.get("/api/alarms", params={"state": "open"}).json()
                          ["alarms"] if a["device_id"] == "caller-new-9"], timeout=5,
                 what="alarm from the commissioned device")
        page.click("[data-view=board]")
        # the board redraws a card when the alarm changes (case created ...): wait on a
        # locator, which re-finds the card, not on one element handle that may be replaced
        from playwright.sync_api import expect

        card = page.locator(".alarm[data-state=raised]").first
        expect(card).to_contain_text("138****0003", timeout=5000)   # installer: masked
        assert "13800000003" not in card.inner_text()
        assert page.locator(".alarm button.ack").count() == 0
        assert "mode: test" not in (gateway.config / "devices.yaml").read_text()
        assert (gateway.config / "devices.yaml.prev").exists()
    finally:
        context.close()
