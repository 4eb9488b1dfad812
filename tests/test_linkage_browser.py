"""Linkage on the duty console (issue 16): the gas alarm's card shows the valve the rule closed,
confirmed by the valve (已自动关阀 ✔ HH:MM:SS, "Valve closed automatically ✔" in English);
an administrator re-opens it from the card after one confirmation step (开阀 ... 确认发送),
and the card shows the valve's confirmation. A duty officer is offered the close but not the
open (the inverse needs ``commands.restore``). Real gateway process, Mosquitto, Zigbee2MQTT-
shaped actuators, Debian's Chromium."""

from __future__ import annotations

import re

import pytest

from simulators.z2m_actuators import Actuator, Actuators
from tests.linkage_fixtures import linkage_site
from tests.test_console_i18n_browser import COLLECT, EXCEPT, untranslated
from tests.support import GatewayProcess, browser_login, mqtt_publish

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CLOSED = ".alarm .commands .cmd.confirmed[data-action=close_valve][data-device=valve-7-101]"
OPENED = ".alarm .commands .cmd.confirmed[data-action=open_valve][data-device=valve-7-101]"


def test_card_shows_the_automatic_closure_and_staff_reopen_with_confirmation(
        tmp_path, mosquitto, browser):
    config = linkage_site(tmp_path / "site", mqtt_port=mosquitto.port, confirm_timeout_s=5)
    gw = GatewayProcess(config, tmp_path / "data")
    gw.add_users("duty", "admin")
    valve = Actuator("valve", "h7-101/gas-valve")
    siren = Actuator("siren", "h7-101/siren")
    with Actuators(mosquitto.port, [valve, siren]):
        gw.start()
        try:
            context, page = browser_login(browser, gw, "admin")
            try:
                mqtt_publish(mosquitto.port, [("zigbee2mqtt/h7-101/gas", {"gas": True})])
                page.wait_for_selector(CLOSED, timeout=15_000)
                text = page.inner_text(CLOSED)
                assert re.match(r"已自动关阀 ✔ \d\d:\d\d:\d\d · 厨房燃气阀", text), text
                assert valve.on is False
                card = page.inner_text(".alarm")
                for raw in ("close_valve", "valve-7-101", "confirmed", "rule:gas"):
                    assert raw not in card, (raw, card)

                # staff re-open: the card's control, the device's action, one confirmation
                page.click(".alarm .cmd-open")
                page.wait_for_selector("#command-dialog[open] .cmd-device", timeout=10_000)
                row = page.locator("#command-dialog .cmd-device[data-device=valve-7-101]")
                row.locator("button[data-action=open_valve]").click()
                assert page.inner_text("#cmdd-question") == "确认对「厨房燃气阀」执行「开阀」？"
                # the card and the dialog: no English, no codes in zh-CN (site names aside)
                assert untranslated(page.evaluate(COLLECT, EXCEPT), "zh") == []
                assert valve.on is False          # nothing sent before the confirmation
                page.click("#cmdd-confirm")
                page.wait_for_selector(OPENED, timeout=15_000)
                assert valve.on is True and valve.received[-1] == {"state": "ON"}
                opened = page.inner_text(OPENED)
                assert re.match(r"已开阀 ✔ \d\d:\d\d:\d\d · 厨房燃气阀 admin操作", opened), opened
                assert page.is_visible(CLOSED)     # what the rule did stays on the card

                # the audit log says each step in words, with the command
                page.click('#nav [data-view="admin"]')
                row = page.locator('#audit tr[data-action="command.confirmed"]').first
                row.wait_for(timeout=10_000)
                assert re.search(r"指令已确认：(开阀|关阀|鸣笛)", row.inner_text()), row.inner_text()
                # the rule's own request names its maker in words, not the raw "rule"
                auto = page.locator('#audit tr[data-action="command.request"][data-actor="rule"]')
                assert auto.count() >= 1
                assert auto.first.locator("td").nth(1).inner_text() == "规则（自动）"
                assert untranslated(page.evaluate(COLLECT, EXCEPT), "zh") == []
                page.click('#nav [data-view="board"]')
                page.wait_for_selector("#toast", state="hidden", timeout=10_000)   # 已发送：开阀
                page.select_option("#lang", "en")
                page.wait_for_function(
                    "() => /Valve closed automatically ✔/.test(document.querySelector("
                    f"'{CLOSED}')?.textContent)", timeout=10_000)
                assert untranslated(page.evaluate(COLLECT, EXCEPT), "en") == []
            finally:
                context.close()

            # a duty officer: the close is offered, the open is not (commands.restore)
            context, page = browser_login(browser, gw, "duty")
            try:
                page.wait_for_selector(".alarm .cmd-open", timeout=10_000)
                page.click(".alarm .cmd-open")
                page.wait_for_selector("#command-dialog[open] .cmd-device", timeout=10_000)
                row = page.locator("#command-dialog .cmd-device[data-device=valve-7-101]")
                assert row.locator("button[data-action=close_valve]").is_enabled()
                assert row.locator("button[data-action=open_valve]").is_disabled()
                page.click("#cmdd-cancel")
            finally:
                context.close()
        finally:
            gw.stop()
