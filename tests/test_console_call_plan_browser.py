"""Issue 13.1-13.3 in Debian's Chromium (Playwright), against a real gateway process, a real
Mosquitto and (for the call outcome) the simulated case system as a process:

- the card shows the call plan of the alarm's category and household in order, with
  tap-to-call ``tel:`` links, and the response guidance; one tap records a call's outcome,
  which shows on the card, in the alarm's history, and reaches the case system as exactly
  one update (a ``note`` with the call);
- the board: header and counters stay in view while the cards scroll; the order puts an
  inactivity alarm first among 20 emergency-call presses (unacknowledged first, then the
  site's category priority, then severity, then the one waiting longest); filters by
  category and grid cell; an escalated card says 已升级至网格员, also once acknowledged.
"""

from __future__ import annotations

import httpx
import pytest
from ruamel.yaml import YAML

from gateway.broker import free_port
from tests.support import GatewayProcess, browser_login, mqtt_publish, site_copy, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CALLER = "田林路200弄7号101室"         # caller-7-101's household
LONELY = "田林路200弄7号302室"         # lives alone; its motion sensor goes quiet
PRESSES = 20
INACTIVE_S = 4


def _gateway(tmp_path, mosquitto, case_system=None) -> GatewayProcess:
    port = free_port()
    config = site_copy(tmp_path / "site", mqtt_port=mosquitto.port,
                       case_url=case_system.url if case_system else None,
                       callback_url=f"http://127.0.0.1:{port}/api/case-callback"
                       if case_system else None)
    env = {"CASE_SYSTEM_SECRET": case_system.secret} if case_system else None
    gw = GatewayProcess(config, tmp_path / "data", env=env, port=port)
    gw.add_users("duty")
    gw.admin_token = gw.token("admin", "test-admin")
    return gw


def test_the_card_shows_whom_to_call_and_records_each_call(browser, tmp_path, mosquitto,
                                                           case_secret):
    from playwright.sync_api import expect

    from tests.support import CaseSystemProcess

    # the case stays open (accepted, then dispatched): its alarm stays on the board
    cases = CaseSystemProcess(case_secret, tmp_path, dispatch_after=0.5, on_site_after=600,
                              close_after=600).start()
    gw = _gateway(tmp_path, mosquitto, cases).start()
    context, page = browser_login(browser, gw, "duty")
    try:
        mqtt_publish(mosquitto.port, [("devices/caller-7-101", {"event": "sos"})])
        card = page.locator(".alarm", has_text=CALLER)
        expect(card).to_have_attribute("data-state", "raised", timeout=5000)
        # the plan for an emergency call in this household, in order, each with its link
        calls = card.locator(".call-plan li.call")
        expect(calls).to_have_count(4)
        assert [calls.nth(i).get_attribute("data-key") for i in range(4)] == [
            "resident:0", "contact:0", "grid_member", "on_call:ambulance"]
        texts = [calls.nth(i).locator(".who").inner_text() for i in range(4)]
        assert texts == ["张桂英（本人）", "张伟（儿子）", "王芳（网格员）", "急救中心（120）"], texts
        links = [calls.nth(i).locator("a.tel").get_attribute("href") for i in range(4)]
        assert links == ["tel:13800000021", "tel:13800000001", "tel:13800000011",
                         "tel:13800000120"], links
        assert calls.nth(0).locator("a.tel").inner_text() == "138-0000-0021"
        expect(card.locator(".call-plan h4")).to_have_text("呼叫顺序")
        guidance = card.locator(".guidance li")
        expect(card.locator(".guidance h4")).to_have_text("处置指引")
        assert guidance.all_inner_texts() == ["回拨住户，问清需要什么帮助",
                                              "无人接听：打紧急联系人，并请网格员上门",
                                              "身体不适或摔倒：拨打 120"]
        assert calls.nth(0).locator("button.outcome").all_inner_texts() == [
            "接通", "无人接听", "已到场", "已通知"]

        # one tap: the resident did not answer
        calls.nth(0).locator("button.outcome[data-outcome=no_answer]").click()
        expect(calls.nth(0).locator(".outcome-tag")).to_have_text("无人接听", timeout=5000)
        expect(page.locator("#toast")).to_contain_text("已记录")
        # the son answered
        calls.nth(1).locator("button.outcome[data-outcome=connected]").click()
        expect(calls.nth(1).locator(".outcome-tag")).to_have_text("接通", timeout=5000)
        expect(card).to_have_attribute("data-state", "raised")      # a call is not an ack

        api = gw.api(gw.admin_token)
        alarm = [a for a in api.get("/api/alarms").json()["alarms"]
                 if a["device_id"] == "caller-7-101"][0]
        events = api.get(f"/api/alarms/{alarm['id']}").json()["events"]
        recorded = [(e["actor"], e["detail"]["contact"], e["detail"]["outcome"])
                    for e in events if e["action"] == "call"]
        assert recorded == [("duty", "resident:0", "no_answer"),
                            ("duty", "contact:0", "connected")]

        # each reached the case system as one update, exactly once
        def updates():
            found = [c for c in cases.cases()["cases"] if c["case_id"] == alarm["case_id"]]
            ups = [u for u in found[0]["updates"] if u["call"]] if found else []
            return ups if len(ups) == 2 else None
        case_updates = wait_for(updates, timeout=15, what="two call updates at the case system")
        assert [(u["kind"], u["call"]["contact"], u["call"]["outcome"], u["requests"])
                for u in case_updates] == [("note", "resident:0", "no_answer", 1),
                                           ("note", "contact:0", "connected", 1)]
        assert case_updates[0]["note"] == "电话联系 张桂英（本人）：无人接听"
        assert all(u["applied"] for u in case_updates)
        page.wait_for_timeout(2500)          # the forwarder's idle poll: nothing sent again
        again = [c for c in cases.cases()["cases"] if c["case_id"] == alarm["case_id"]][0]
        assert [u["requests"] for u in again["updates"] if u["call"]] == [1, 1]
        assert len([u for u in again["updates"] if u["call"]]) == 2

        # in English: the same plan in words, the guidance of the site in English
        page.select_option("#lang", "en")
        expect(card.locator(".guidance h4")).to_have_text("What to do")
        assert card.locator(".guidance li").first.inner_text().startswith(
            "Call the resident back")
        expect(calls.nth(0).locator(".outcome-tag")).to_have_text("No answer")
        assert calls.nth(0).locator(".who").inner_text() == "张桂英 (resident)"   # English brackets in English
    finally:
        context.close()
        gw.stop()
        cases.stop()


def _crowded_site(gw: GatewayProcess) -> None:
    """20 more emergency callers (a stream of presses), a motion sensor in the household of
    the resident living alone, and an inactivity threshold of seconds."""
    yaml = YAML()
    devices = yaml.load((gw.config / "devices.yaml").read_text(encoding="utf-8"))
    homes = ["h-7-101", "h-9-201"]
    for i in range(PRESSES):
        devices["devices"].append({"id": f"caller-x{i:02d}", "type": "emergency_caller",
                                   "household": homes[i % 2],
                                   "mqtt": {"topic": f"devices/caller-x{i:02d}"}})
    devices["devices"].append({"id": "motion-7-302", "type": "motion_sensor",
                               "household": "h-7-302", "mqtt": {"zigbee2mqtt": "motion_7_302"}})
    with open(gw.config / "devices.yaml", "w", encoding="utf-8") as f:
        yaml.dump(devices, f)
    rules = yaml.load((gw.config / "rules.yaml").read_text(encoding="utf-8"))
    rule = next(r for r in rules["rules"] if r["id"] == "inactivity")
    rule["threshold"] = f"{INACTIVE_S}s"
    rule["households"] = ["h-7-302"]
    for key in ("baseline", "repeat_after"):
        rule.pop(key, None)
    with open(gw.config / "rules.yaml", "w", encoding="utf-8") as f:
        yaml.dump(rules, f)


def test_the_board_puts_real_incidents_first(browser, tmp_path, mosquitto):
    from playwright.sync_api import expect

    gw = _gateway(tmp_path, mosquitto)
    _crowded_site(gw)
    gw.start()
    context, page = browser_login(browser, gw, "duty")
    try:
        # the resident's last movement; then a stream of presses while nothing moves
        mqtt_publish(mosquitto.port, [("zigbee2mqtt/motion_7_302",
                                       {"occupancy": True, "battery": 90})])
        for i in range(PRESSES // 2):
            mqtt_publish(mosquitto.port, [(f"devices/caller-x{i:02d}", {"event": "sos"})])
        cards = page.locator("#alarms .alarm")
        expect(page.locator(".alarm[data-category=inactivity]")).to_have_count(
            1, timeout=(INACTIVE_S + 10) * 1000)
        for i in range(PRESSES // 2, PRESSES):           # more presses after it
            mqtt_publish(mosquitto.port, [(f"devices/caller-x{i:02d}", {"event": "sos"})])
        expect(cards).to_have_count(PRESSES + 1, timeout=10_000)

        def order() -> list[str]:
            return page.eval_on_selector_all(
                "#alarms .alarm", "els => els.map(e => e.dataset.category + ':' + e.dataset.id)")
        # the inactivity alarm (major) first among the unacknowledged, above 20 critical
        # presses: its category's priority (1) is above the emergency call's (3)
        assert order()[0].startswith("inactivity:"), order()
        # the presses: the one waiting longest first
        ids = [int(x.split(":")[1]) for x in order()[1:]]
        assert ids == sorted(ids), ids
        inactivity = page.locator(".alarm[data-category=inactivity]")
        assert LONELY in inactivity.inner_text()
        # its plan: the household's resident has no phone of her own: said so, no link
        first = inactivity.locator(".call-plan li.call").first
        assert first.get_attribute("data-key") == "resident:0"
        assert first.locator("a.tel").count() == 0 and "无电话" in first.inner_text()
        # two contacts, one separator in the console's language (night-shift walk: '，' in English)
        expect(inactivity.locator(".contacts")).to_contain_text("13800000002，孙丽")
        page.select_option("#lang", "en")
        expect(inactivity.locator(".contacts")).to_contain_text("13800000002, 孙丽")
        page.select_option("#lang", "zh")

        # the smoke in another flat: fire first (priority 1, critical), then the inactivity
        mqtt_publish(mosquitto.port, [("devices/smoke-7-101", {"smoke": True})])
        expect(page.locator(".alarm[data-category=fire]")).to_have_count(1, timeout=5000)
        expect(cards.first).to_have_attribute("data-category", "fire")
        expect(cards.nth(1)).to_have_attribute("data-category", "inactivity")

        # escalated at once to the grid member (tier 0 s), in words, with what comes next
        oldest = page.locator(f".alarm[data-id='{ids[0]}']")
        expect(oldest.locator(".esc.escalated")).to_have_text("已升级至网格员")
        expect(oldest.locator(".esc[data-due]")).to_contain_text("升级至值班主任还剩")
        # two phrases, two sentences (night-shift walk: 'Escalated to grid memberEscalates to…')
        expect(oldest.locator(".card-body > .meta")).to_contain_text("已升级至网格员；升级至值班主任还剩")
        # acknowledged: below every unacknowledged card, still saying it was escalated
        oldest.locator("button.ack").click()
        expect(oldest).to_have_attribute("data-state", "acknowledged", timeout=5000)
        expect(cards.last).to_have_attribute("data-id", str(ids[0]))
        expect(oldest.locator(".esc.escalated")).to_have_text("已升级至网格员")
        assert oldest.locator(".esc[data-due]").count() == 0

        # filters: by category, by grid cell; the counters say how many are shown
        page.select_option("#f-category", "inactivity")
        expect(page.locator("#alarms .alarm:visible")).to_have_count(1)
        expect(page.locator("#n-shown")).to_have_text(f"显示 1 / {PRESSES + 2}")
        page.select_option("#f-category", "")
        page.select_option("#f-cell", "310104-012-04")         # h-9-201's cell: half the presses
        expect(page.locator("#alarms .alarm:visible")).to_have_count(PRESSES // 2)
        assert all(a["grid_cell"] == "310104-012-04" for a in _alarms(gw)
                   if str(a["id"]) in page.eval_on_selector_all(
                       "#alarms .alarm:not([hidden])", "els => els.map(e => e.dataset.id)"))
        labels = page.locator("#f-cell option").all_inner_texts()
        assert "田林七村第4网格 (10)" in labels, labels
        page.select_option("#f-category", "emergency_call")
        expect(page.locator("#alarms .alarm:visible")).to_have_count(PRESSES // 2)
        page.select_option("#f-cell", "")
        page.select_option("#f-category", "")
        expect(page.locator("#alarms .alarm:visible")).to_have_count(PRESSES + 2)
        assert page.locator("#n-shown").count() == 0

        # the header (connection, sound) and the counters stay in view while the list scrolls
        page.set_viewport_size({"width": 1280, "height": 700})
        page.mouse.wheel(0, 4000)
        page.wait_for_function("() => window.scrollY > 1000")
        assert page.evaluate("document.querySelector('#top').getBoundingClientRect().top") == 0
        for sel in ("#conn", "#mute", "#n-critical", "#f-category"):
            box = page.locator(sel).bounding_box()
            assert box is not None and 0 <= box["y"] < 200, (sel, box)
        assert page.inner_text("#n-critical") == str(PRESSES)   # 19 raised presses + the smoke
    finally:
        context.close()
        gw.stop()


def _alarms(gw: GatewayProcess) -> list[dict]:
    r = httpx.get(f"{gw.url}/api/alarms", params={"limit": 500},
                  headers={"Authorization": f"Bearer {gw.admin_token}"}, timeout=5)
    return r.json()["alarms"]
