"""The console's 报平安 page (issue 15.3) in Debian's Chromium (Playwright), against a real
gateway process and Mosquitto: today's check-in of each household that opted in.

The site's rules.yaml gets two check-in rules: h-7-101 and h-9-201 check in by 23:59 (h-7-101's
caller key is pressed over MQTT: 已于 HH:MM 报平安; h-9-201 has not: 请于 23:59 前报平安, then,
in hospital, 免报（住院）); h-7-302 by the next full minute after start-up, which passes
during the test: its follow-up alarm is raised and the row links to it (查看跟进报警 opens the
board at that card). Every visible string is in the console's language, zh-CN and English.
(Within 3 minutes of local midnight the test cannot place its deadlines in one day and is
skipped.)
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from ruamel.yaml import YAML

from tests.help_fixtures import HELP_TOPIC, help_gateway
from tests.support import browser_login, mqtt_publish
from tests.test_care_browser import _words

pytestmark = [pytest.mark.integration, pytest.mark.browser]
ZONE = ZoneInfo("Asia/Shanghai")


def _with_checkins(site_dir, soon: str) -> None:
    yaml = YAML(typ="safe")
    rules = yaml.load((site_dir / "rules.yaml").read_text(encoding="utf-8"))
    rules["rules"] += [
        {"id": "checkin_day", "kind": "checkin", "households": ["h-7-101", "h-9-201"],
         "opens": "00:00", "by": "23:59"},
        {"id": "checkin_soon", "kind": "checkin", "households": ["h-7-302"],
         "opens": "00:00", "by": soon}]
    (site_dir / "rules.yaml").write_text(json.dumps(rules, ensure_ascii=False), "utf-8")


@pytest.mark.timeout(180)
def test_today_s_check_ins(browser, tmp_path, mosquitto):
    from playwright.sync_api import expect

    now = datetime.now(ZONE)
    by = (now + timedelta(seconds=75)).replace(second=0, microsecond=0)   # 15-75 s away
    if by.date() != now.date() or now.hour == 0 and now.minute < 3 or by.hour * 60 + by.minute > 23 * 60 + 58:
        pytest.skip("too close to local midnight to place today's deadlines")
    soon = f"{by:%H:%M}"
    gw = help_gateway(tmp_path, mosquitto, None, "duty")
    _with_checkins(tmp_path / "site", soon)
    gw.start()
    context, page = browser_login(browser, gw, "duty")
    try:
        mqtt_publish(mosquitto.port, [(HELP_TOPIC, {"action": "2_single"})])   # h-7-101: OK
        page.click('#nav [data-view="checkins"]')
        expect(page.locator('#nav [data-view="checkins"]')).to_have_text("报平安")
        expect(page.locator("#view-checkins h3")).to_have_text("今日报平安")
        expect(page.locator("#checkin-date")).to_have_text(f"日期：{now.date().isoformat()}")
        rows = page.locator(".checkin-row")
        expect(rows).to_have_count(3)
        ok = page.locator('.checkin-row[data-household="h-7-101"]')
        expect(ok).to_have_attribute("data-status", "checked_in", timeout=10_000)
        expect(ok.locator(".ci-status")).to_have_text(
            __import__("re").compile(r"^已于 \d\d:\d\d 报平安$"))
        expect(ok).to_contain_text("田林路200弄7号101室")
        due = page.locator('.checkin-row[data-household="h-9-201"]')
        expect(due.locator(".ci-status")).to_have_text("请于 23:59 前报平安")
        soon_row = page.locator('.checkin-row[data-household="h-7-302"]')
        expect(soon_row.locator(".ci-status")).to_have_text(f"请于 {soon} 前报平安")
        _words(page, "zh")
        # the deadline passes: missed, with its follow-up alarm (the page looks every 5 s)
        wait_ms = int((by - datetime.now(ZONE)).total_seconds() * 1000) + 20_000
        expect(soon_row).to_have_attribute("data-status", "missed", timeout=max(wait_ms, 20_000))
        expect(soon_row.locator(".ci-status")).to_have_text(f"{soon} 前未报平安")
        link = soon_row.locator("a.ci-alarm")
        expect(link).to_have_text("查看跟进报警", timeout=10_000)
        alarm_id = link.get_attribute("data-alarm")
        # in hospital: not asked today
        r = httpx.put(f"{gw.url}/api/households/h-9-201/care", json={"state": "hospital"},
                      headers={"Authorization": f"Bearer {gw.admin_token}"}, timeout=10)
        assert r.status_code == 200, r.text
        expect(due.locator(".ci-status")).to_have_text("免报（住院）", timeout=10_000)
        _words(page, "zh")
        # English
        page.select_option("#lang", "en")
        expect(page.locator('#nav [data-view="checkins"]')).to_have_text("Check-ins")
        expect(page.locator("#view-checkins h3")).to_have_text("Today's check-ins")
        expect(ok.locator(".ci-status")).to_have_text(
            __import__("re").compile(r"^Checked in at \d\d:\d\d$"))
        expect(soon_row.locator(".ci-status")).to_have_text(f"Missed (due by {soon})")
        expect(due.locator(".ci-status")).to_have_text("Not asked (In hospital)")
        expect(link).to_have_text("Open its follow-up alarm")
        _words(page, "en")
        # the link opens the board at the follow-up alarm's card
        link.click()
        expect(page.locator('#nav [data-view="board"]')).to_have_class(
            __import__("re").compile(r"\bactive\b"))
        card = page.locator(f'article.alarm[data-id="{alarm_id}"]')
        expect(card).to_be_visible()
        expect(card).to_have_class(__import__("re").compile(r"\bflash\b"))
        expect(card).to_contain_text("No check-in")
        # a follow-up has no device: its line has no empty slot ("Raised 10:02 · · Escalated")
        meta = card.locator(".card-body > .meta").inner_text()
        assert "· ·" not in meta and "··" not in meta, meta
    finally:
        context.close()
        gw.stop()
