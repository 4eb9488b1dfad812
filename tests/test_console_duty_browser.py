"""Issue 12.7 and 12.8 in Debian's Chromium (Playwright), against a real gateway process and
a real Mosquitto: resolving a critical alarm deliberately (acknowledged first, a reason
chosen, one confirmation), and the night shift keeping its board when the session would
idle out or ends (short session limits through the environment, seconds instead of hours).
"""

from __future__ import annotations

import secrets
import time

import pytest

from gateway.broker import free_port
from tests.support import GatewayProcess, mqtt_publish, site_copy, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CALLER = "田林路200弄7号101室"        # caller-7-101's household
SMOKE = "田林路200弄7号302室"         # smoke-7-302's household
IDLE_S, MAX_S = 3, 18                 # the short session limits of the night-shift test


def _gateway(tmp_path, mosquitto, env: dict | None = None) -> GatewayProcess:
    # no case system: the simulated one closes cases within seconds, and a closed case
    # resolves its alarm (12.3), which would take the cards these tests look at away
    port = free_port()
    config = site_copy(tmp_path / "site", mqtt_port=mosquitto.port)
    gw = GatewayProcess(config, tmp_path / "data", env=env, port=port)
    gw.password = secrets.token_urlsafe(12)
    res = gw.cli("user", "add", "--username", "duty", "--role", "duty", "--password-stdin",
                 "--data", str(gw.data), input=gw.password + "\n")
    assert res.returncode == 0, res.stderr
    gw.admin_token = gw.token("admin", "test-admin")
    return gw.start()


@pytest.fixture
def gateway(tmp_path, mosquitto):
    gw = _gateway(tmp_path, mosquitto)
    yield gw
    gw.stop()


@pytest.fixture
def night_gateway(tmp_path, mosquitto):
    gw = _gateway(tmp_path, mosquitto, env={"GATEWAY_SESSION_IDLE_S": str(IDLE_S),
                                            "GATEWAY_SESSION_MAX_S": str(MAX_S)})
    yield gw
    gw.stop()


def _login(browser, gw):
    context = browser.new_context(locale="zh-CN", timezone_id="Asia/Shanghai")
    page = context.new_page()
    page.goto(gw.url + "/")
    page.fill("#login input[name=username]", "duty")
    page.fill("#login input[name=password]", gw.password)
    page.click("#login button[type=submit]")     # (the click also unlocks the alarm sound)
    page.wait_for_selector("#app:not([hidden])", timeout=10_000)
    return context, page


def _alarm(gw, address: str) -> dict:
    api = gw.api(gw.admin_token)
    found = [a for a in api.get("/api/alarms", params={"limit": 50}).json()["alarms"]
             if a["household"] and a["household"]["address"] == address]
    assert len(found) == 1, found
    return found[0]


def _plays(page) -> int:
    return page.evaluate("window.__alarmSoundPlays || 0")


def test_a_critical_alarm_is_resolved_deliberately(browser, gateway, mosquitto):
    from playwright.sync_api import expect

    context, page = _login(browser, gateway)
    try:
        mqtt_publish(mosquitto.port, [("devices/caller-7-101", {"event": "sos"})])
        card = page.locator(".alarm", has_text=CALLER)
        expect(card).to_have_attribute("data-state", "raised", timeout=5000)
        # not acknowledged: no resolve offered, and the card says why
        expect(card.locator(".needs-ack")).to_have_text("紧急报警须先确认接警，才能处置")
        assert card.locator("button.resolve").count() == 0
        assert card.locator("select.reason").count() == 0
        alarm_id = _alarm(gateway, CALLER)["id"]
        # the API refuses it too, and the console says so in Chinese
        refused = page.evaluate(f"""api('/api/alarms/{alarm_id}/resolve', {{method: 'POST',
            body: JSON.stringify({{reason: 'handled'}})}}).then(() => 'resolved',
            e => e.status + ' ' + e.message)""")
        assert refused == "409 该紧急报警尚未确认接警，不能处置：请先确认接警"

        card.locator("button.ack").click()
        expect(card).to_have_attribute("data-state", "acknowledged", timeout=3000)
        # now resolve is offered, with no reason chosen
        reason = card.locator("select.reason")
        expect(card.locator("button.resolve")).to_be_visible()
        assert reason.input_value() == ""
        assert reason.evaluate("s => s.selectedOptions[0].textContent") == "请选择处置原因…"
        card.locator("button.resolve").click()
        expect(card.locator(".reason-error")).to_have_text("请先选择处置原因")
        dialog = page.locator("#resolve-dialog")
        expect(dialog).to_be_hidden()

        # a reason chosen: one confirmation that names the alarm and the reason; cancel
        reason.select_option("false_alarm")
        expect(card.locator(".reason-error")).to_have_text("")
        card.locator("input.note").fill("住户误按，已电话确认")
        card.locator("button.resolve").click()
        expect(dialog).to_be_visible()
        text = dialog.inner_text()
        assert "确认处置完成？" in text and "紧急" in text and CALLER in text, text
        assert _alarm(gateway, CALLER)["message_zh"] in text, text
        assert "处置原因：误报" in text and "住户误按，已电话确认" in text, text
        dialog.locator("#rd-cancel").click()
        expect(dialog).to_be_hidden()
        page.wait_for_timeout(500)
        expect(card).to_have_attribute("data-state", "acknowledged")
        assert card.locator("select.reason").input_value() == "false_alarm"  # choice kept
        assert _alarm(gateway, CALLER)["state"] == "acknowledged"

        # confirm: resolved with the chosen reason; the card leaves the board
        card.locator("button.resolve").click()
        expect(dialog).to_be_visible()
        dialog.locator("#rd-confirm").click()
        expect(dialog).to_be_hidden()
        expect(card).to_have_count(0, timeout=3000)
        done = gateway.api(gateway.admin_token).get(f"/api/alarms/{alarm_id}").json()
        assert done["state"] == "resolved" and done["resolve_reason"] == "false_alarm"
        assert done["resolved_by"] == "duty" and done["resolve_note"] == "住户误按，已电话确认"
    finally:
        context.close()


def test_the_night_shift_keeps_its_board(browser, night_gateway, mosquitto):
    from playwright.sync_api import expect

    gw = night_gateway
    t_login = time.monotonic()
    context, page = _login(browser, gw)
    try:
        requests: list[tuple[float, str]] = []
        page.on("request", lambda r: requests.append((time.monotonic(), r.url)))
        mqtt_publish(mosquitto.port, [("devices/caller-7-101", {"event": "sos"}),
                                      ("devices/smoke-7-302", {"smoke": True})])
        caller = page.locator(".alarm", has_text=CALLER)
        smoke = page.locator(".alarm", has_text=SMOKE)
        expect(caller).to_have_attribute("data-state", "raised", timeout=5000)
        expect(smoke).to_have_attribute("data-state", "raised", timeout=5000)
        wait_for(lambda: _plays(page) >= 1, timeout=5, what="the alert sounding")
        # from now on count how few cards the board ever shows
        page.evaluate("""() => { const box = document.querySelector('#alarms');
            window.__minCards = box.querySelectorAll('.alarm').length;
            new MutationObserver(() => { window.__minCards = Math.min(window.__minCards,
                box.querySelectorAll('.alarm').length); }).observe(box, {childList: true}); }""")

        # a quiet spell longer than the idle limit: the page asks nothing, the stream is open
        quiet_from = time.monotonic()
        page.wait_for_timeout((IDLE_S + 2) * 1000)
        asked = [u for t, u in requests if t >= quiet_from and "/api/stream" not in u]
        assert asked == [], asked
        assert time.monotonic() - t_login < MAX_S - 4, "too slow for the absolute limit"
        expect(page.locator("#relogin")).to_be_hidden()
        # the first acknowledge after the quiet spell works
        smoke.locator("button.ack").click()
        expect(smoke).to_have_attribute("data-state", "acknowledged", timeout=3000)
        expect(page.locator("#toast.bad")).to_be_hidden()

        # the absolute limit: the board keeps its cards and its sound, and asks for the password
        relogin = page.locator("#relogin")
        remaining = MAX_S - (time.monotonic() - t_login)
        expect(relogin).to_be_visible(timeout=(remaining + 6) * 1000)
        assert time.monotonic() - t_login >= MAX_S - 1
        expect(relogin.locator("h2")).to_have_text("登录已过期，请重新输入密码")
        assert relogin.locator("input[name=username]").input_value() == "duty"
        expect(page.locator("#login")).to_be_hidden()           # not the login page
        expect(page.locator("#app")).to_be_visible()
        expect(page.locator("#conn")).to_have_text("○ 登录已过期")
        expect(caller).to_be_visible()
        expect(smoke).to_be_visible()
        assert page.locator(".alarm").count() == 2
        expect(caller).to_have_attribute("data-state", "raised")
        assert "王芳" in caller.inner_text()                      # the household card as before
        assert page.evaluate("AlarmSound.playing()") is True
        plays = _plays(page)
        page.wait_for_timeout(3000)                              # more than one sound period
        assert _plays(page) > plays, "the alert stopped sounding when the session ended"
        assert page.evaluate("window.__minCards") == 2

        # log in again: the board resumes, live, without losing a card
        relogin.locator("input[name=password]").fill(gw.password)
        relogin.locator("button[type=submit]").click()
        expect(relogin).to_be_hidden(timeout=5000)
        expect(page.locator("#conn")).to_have_text("● 实时连接", timeout=5000)
        mqtt_publish(mosquitto.port, [("devices/caller-9-201", {"event": "sos"})])
        expect(page.locator(".alarm", has_text="田林路200弄9号201室")).to_be_visible(timeout=5000)
        caller.locator("button.ack").click()
        expect(caller).to_have_attribute("data-state", "acknowledged", timeout=3000)
        assert page.evaluate("window.__minCards") == 2
        assert page.locator(".alarm").count() == 3
    finally:
        context.close()
