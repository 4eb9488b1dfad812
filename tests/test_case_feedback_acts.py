"""Case feedback acts (issue 12.3): a case dispatched to a grid member stops escalation beyond
the grid member; a closed case resolves its alarm (actor ``case_system:<handler>``, reason
``case_closed``) or, by the site setting ``on_case_closed: confirm``, leaves it open marked
for staff. Real gateway process, real Mosquitto, the simulated case system with its callbacks
(accepted at once, dispatched after 0.5 s, on site after 1 s, closed after 4 s), and the
console in Debian's Chromium."""

from __future__ import annotations


import pytest

from gateway.broker import free_port
from tests.support import CaseSystemProcess, GatewayProcess, mqtt_publish, site_copy, wait_for
from tests.test_console_browser import _login

pytestmark = [pytest.mark.integration]

TIERS = ("escalation:\n  tiers:\n    - {name: grid_member, after: 0s, notify: [grid_member]}\n"
         "    - {name: duty_officer, after: 2s, notify: [duty_officer]}\n"
         "    - {name: street_office, after: 3s, notify: [street_office]}\n")


def _case_system(tmp_path, case_secret, dispatch: float, on_site: float, close: float):
    cs = CaseSystemProcess(case_secret, tmp_path, dispatch_after=dispatch,
                           on_site_after=on_site, close_after=close).start()
    yield cs
    cs.stop()


@pytest.fixture
def case_system(tmp_path, case_secret):
    yield from _case_system(tmp_path, case_secret, 0.5, 1.0, 4.0)


def _duty_user(gw: GatewayProcess, secret: str) -> None:
    """A duty login for the browser (tests.test_console_browser._login reads gw.passwords)."""
    gw.passwords = {"duty": "night-shift-" + secret[:8]}
    res = gw.cli("user", "add", "--username", "duty", "--role", "duty", "--password-stdin",
                 "--data", str(gw.data), input=gw.passwords["duty"] + "\n")
    assert res.returncode == 0, res.stderr


def _gateway(tmp_path, mosquitto, case_system, case_secret, **uplink: str) -> GatewayProcess:
    port = free_port()
    config = site_copy(tmp_path / "site", mqtt_port=mosquitto.port, case_url=case_system.url,
                       callback_url=f"http://127.0.0.1:{port}/api/case-callback")
    with open(config / "uplinks.yaml", "a", encoding="utf-8") as fh:
        fh.writelines(f"  {k}: {v}\n" for k, v in uplink.items())
    rules = (config / "rules.yaml").read_text(encoding="utf-8")
    (config / "rules.yaml").write_text(rules[:rules.index("escalation:")] + TIERS,
                                       encoding="utf-8")
    gw = GatewayProcess(config, tmp_path / "data", env={"CASE_SYSTEM_SECRET": case_secret},
                        port=port)
    gw.duty = gw.token("duty", "test-duty")
    return gw.start()


def _alarm(gw: GatewayProcess, device: str) -> dict:
    with gw.api(gw.duty) as api:
        rows = [a for a in api.get("/api/alarms", params={"limit": 50}).json()["alarms"]
                if a["device_id"] == device]
        return api.get(f"/api/alarms/{rows[0]['id']}").json() if rows else {}


def test_closed_case_resolves_its_alarm_and_the_taken_case_stops_escalation(
        tmp_path, mosquitto, case_system, case_secret):
    gw = _gateway(tmp_path, mosquitto, case_system, case_secret)
    try:
        mqtt_publish(mosquitto.port, [("devices/caller-7-101", {"event": "sos"})])
        alarm = wait_for(lambda: (a := _alarm(gw, "caller-7-101")).get("state") == "resolved"
                         and a, timeout=20, what="the alarm resolved by its closed case")
        assert alarm["resolve_reason"] == "case_closed"
        assert alarm["resolved_by"].startswith("case_system:")
        assert alarm["resolved_by"] != "case_system:"           # names the handler
        # tier 2 was due 2 s after the raise, after the case was dispatched (0.5 s) and before
        # it closed (4 s): the dispatch stopped it
        actions = [(e["action"], e["detail"].get("status")) for e in alarm["events"]]
        assert ("case_status", "closed") in actions
        assert [a for a, _ in actions].count("escalated") == 1, actions
        assert alarm["escalation_tier"] == 1                      # the grid member only
    finally:
        gw.stop()


@pytest.mark.browser
def test_confirm_mode_keeps_the_alarm_open_marked_closed_on_the_card(
        tmp_path, mosquitto, case_system, case_secret, browser):
    gw = _gateway(tmp_path, mosquitto, case_system, case_secret, on_case_closed="confirm",
                  stop_escalation_at="never")
    _duty_user(gw, case_secret)
    try:
        context, page = _login(browser, gw, "duty")
        try:
            mqtt_publish(mosquitto.port, [("devices/caller-7-101", {"event": "sos"})])
            card = page.wait_for_selector(".alarm", timeout=5000)
            page.wait_for_function(
                "() => document.querySelector('.alarm .case')?.textContent.includes("
                "'工单已结案，待确认')", timeout=15_000)
            assert card.get_attribute("data-state") == "raised"     # still open, for staff
            alarm = wait_for(lambda: (a := _alarm(gw, "caller-7-101"))["escalation_tier"] >= 2
                             and a, timeout=10, what="tier 2 (escalation not stopped)")
            assert alarm["state"] == "raised" and alarm["case_status"] == "closed"
            text = page.inner_text(".alarm")
            assert "closed" not in text and "case_system" not in text
        finally:
            context.close()
    finally:
        gw.stop()


@pytest.fixture
def slow_case_system(tmp_path, case_secret):
    yield from _case_system(tmp_path, case_secret, 1.5, 3.0, 8.0)


@pytest.mark.browser
def test_live_case_updates_keep_what_staff_type_and_history_speaks_chinese(
        tmp_path, mosquitto, slow_case_system, case_secret, browser):
    """The night-shift walk found a note cut off mid-typing by a live case update, and raw
    codes (on_site, case_system:李强, closed) in the history."""
    gw = _gateway(tmp_path, mosquitto, slow_case_system, case_secret)
    _duty_user(gw, case_secret)
    try:
        context, page = _login(browser, gw, "duty")
        try:
            mqtt_publish(mosquitto.port, [("devices/caller-7-101", {"event": "sos"})])
            page.wait_for_selector(".alarm[data-state=raised] button.ack", timeout=5000).click()
            note = page.wait_for_selector(".alarm[data-state=acknowledged] input.note",
                                          timeout=5000)
            drawn = page.evaluate("Object.values(window.__drawn)[0]")
            note.click()
            text = "住户说是误按了按钮，已电话确认平安无事"
            page.keyboard.type(text, delay=150)      # about 3 s: dispatched and on site
            assert page.evaluate("Object.values(window.__drawn)[0]") > drawn, \
                "no live update came while typing: the test proves nothing"
            assert page.input_value(".alarm input.note") == text
            assert page.evaluate("document.activeElement.classList.contains('note')")
            # the case closes (8 s): the alarm leaves the board; the history says it in words
            page.wait_for_selector(".alarm", state="detached", timeout=15_000)
            # ... not without a word: the duty worker is told the case closed it
            toast = page.locator("#toast")
            assert toast.is_visible() and toast.inner_text() == "工单已结案，一条一键呼叫报警已处置"
            page.click("#nav [data-view=history]")
            row = page.wait_for_selector("#history-table tbody tr", timeout=5000)
            cells = row.inner_text()
            assert "工单已结案" in cells and "已上门处置" in cells and "（工单系统）" in cells
            assert "已结案" in cells
            for raw in ("case_system", "closed", "on_site", "dispatched", "accepted"):
                assert raw not in cells, (raw, cells)
            # device types in words on the devices page
            page.click("#nav [data-view=devices]")
            page.wait_for_selector("tr.dev", timeout=5000)
            devices = page.inner_text("#view-devices") if page.query_selector(
                "#view-devices") else page.inner_text("body")
            assert "一键呼叫器" in devices and "烟感" in devices
            for raw in ("emergency_caller", "smoke_detector", "motion_sensor"):
                assert raw not in devices, raw
        finally:
            context.close()
    finally:
        gw.stop()
