"""The console's help and visits tabs in Debian's Chromium (Playwright), against a real
gateway process and Mosquitto (issue 15.4, 15.5):

- 求助: a phone request entered from the form shows as received; a caller's help key pressed
  over MQTT shows by itself (the tab looks again every 5 s) with its source in words; assign,
  done and the resident's feedback move it through its states; the case number and status
  from the simulated case system show on the row; in English the same in English;
- 探访: the month's coverage of the site's special-difficulty households per grid cell
  (待探访), a visit recorded from the form turns its household to 已探访 and the cell's rate to
  50 %, the grid member's card read at a household's door reader (over MQTT) makes it 100 %,
  the CSV link asks for the month in the console's language, the reminder shows in the
  month's last 7 days only; in English the statuses in English.
"""

from __future__ import annotations

import calendar
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.help_fixtures import DOOR_TOPIC, HELP_TOPIC, help_gateway
from tests.support import browser_login, mqtt_publish
from tests.test_console_i18n_browser import COLLECT, EXCEPT, untranslated

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def _words(page, lang: str) -> None:
    """Every visible string is in ``lang`` (site data marked data-raw apart), as the
    console's i18n test asks of the other pages."""
    from playwright.sync_api import expect

    expect(page.locator("#toast")).to_be_hidden(timeout=6000)   # a message of the other language
    page.wait_for_timeout(300)
    assert untranslated(page.evaluate(COLLECT, EXCEPT), lang) == []


def test_the_help_tab(browser, tmp_path, mosquitto, case_secret):
    from playwright.sync_api import expect

    from tests.support import CaseSystemProcess

    cases = CaseSystemProcess(case_secret, tmp_path, dispatch_after=600, on_site_after=600,
                              close_after=600).start()
    gw = help_gateway(tmp_path, mosquitto, cases, "duty").start()
    context, page = browser_login(browser, gw, "duty")
    try:
        page.click('#nav [data-view="help"]')
        expect(page.locator('#nav [data-view="help"]')).to_have_text("求助")
        expect(page.locator("#view-help h3").first).to_have_text("求助 / 生活服务")
        expect(page.locator("#help-list")).to_contain_text("暂无求助")
        assert page.locator("#help-category option").all_inner_texts() == [
            "助餐", "家政", "维修", "就医陪护", "代购", "咨询"]
        # a phone call entered by staff: no household chosen for them (night-shift walk: the
        # first one was), saving without one says so and sends nothing
        page.select_option("#help-category", "repair")
        hh = page.locator("#help-form select[name=household_id]")
        expect(hh).to_have_value("")
        expect(hh.locator("option").first).to_have_text("请选择住户")
        page.click("#help-form button[type=submit]")
        expect(page.locator("#help-error")).to_have_text("住户：必填")
        expect(hh).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#help-list")).to_contain_text("暂无求助")
        page.select_option("#help-form select[name=household_id]", "h-7-302")
        page.fill("#help-form input[name=note]", "厨房水龙头漏水")
        page.click("#help-form button[type=submit]")
        expect(page.locator("#toast")).to_contain_text("求助已登记")
        row = page.locator(".help-row", has_text="维修")
        expect(row).to_have_attribute("data-state", "received")
        expect(row).to_contain_text("田林路200弄7号302室")
        expect(row).to_contain_text("电话")
        expect(row.locator(".help-state")).to_have_text("已受理")
        # its service case, accepted by the case system
        expect(row.locator(".help-case")).to_contain_text("已受理", timeout=10_000)
        expect(row.locator(".help-case [data-raw]")).to_have_text(
            __import__("re").compile(r"^GC\d{8}-\d{6}$"))
        # a help key of the resident's caller: shows by itself
        mqtt_publish(mosquitto.port, [(HELP_TOPIC, {"action": "2_single"})])
        key = page.locator(".help-row", has_text="助餐")
        expect(key).to_contain_text("呼叫器按键", timeout=10_000)
        expect(key).to_contain_text("田林路200弄7号101室")
        key = page.locator(f'.help-row[data-help="{key.get_attribute("data-help")}"]')
        # assign, done, then the resident's feedback
        key.locator("input.assign-to").fill("王芳")
        key.locator("button.assign").click()
        expect(key).to_have_attribute("data-state", "assigned")
        expect(key).to_contain_text("王芳")
        key.locator("button.done").click()
        expect(key).to_have_count(0)                 # the default list: not done yet
        page.select_option("#help-state", "")
        expect(key).to_have_attribute("data-state", "done")
        key.locator("select.rating").select_option("satisfied")
        key.locator("button.feedback").click()
        expect(key).to_have_attribute("data-state", "closed")
        expect(key.locator(".help-state")).to_have_text("已回访")
        expect(key.locator(".actions")).to_have_text("满意")
        _words(page, "zh")
        # English
        page.select_option("#lang", "en")
        expect(page.locator('#nav [data-view="help"]')).to_have_text("Help")
        expect(key.locator(".help-state")).to_have_text("feedback recorded")
        expect(page.locator(".help-row", has_text="Repairs")).to_contain_text("phone")
        assert page.locator("#help-category option").first.inner_text() == "Meals"
        expect(page.locator("#help-form select[name=household_id] option").first).to_have_text(
            "Choose a household")
        _words(page, "en")
    finally:
        context.close()
        gw.stop()
        cases.stop()


def test_the_visits_tab(browser, tmp_path, mosquitto):
    from playwright.sync_api import expect

    gw = help_gateway(tmp_path, mosquitto, None, "duty").start()
    context, page = browser_login(browser, gw, "duty")
    try:
        page.click('#nav [data-view="visits"]')
        now = datetime.now(ZoneInfo("Asia/Shanghai"))
        month = f"{now.year:04d}-{now.month:02d}"
        expect(page.locator("#visit-month")).to_have_value(month)
        cell = page.locator('.coverage-cell[data-cell="310104-012-03"]')
        expect(cell.locator("tr[data-status=due]")).to_have_count(2)
        expect(cell.locator(".cov-counts")).to_contain_text("探访率：0%")
        expect(page.locator('.coverage-cell[data-cell="310104-012-04"]')).to_contain_text(
            "本网格无特殊困难老人户")
        last_week = calendar.monthrange(now.year, now.month)[1] - now.day < 7
        expect(page.locator(".visit-remind")).to_have_count(1 if last_week else 0)
        href = page.locator("#visits-csv").get_attribute("href")
        assert href == f"/api/visits.csv?month={month}&lang=zh-CN"
        # record a visit of 田林路200弄7号302室: chosen, not the first household by default
        hh = page.locator("#visit-form select[name=household_id]")
        expect(hh).to_have_value("")
        page.click("#visit-form button[type=submit]")
        expect(page.locator("#visit-error")).to_have_text("住户：必填")
        page.select_option("#visit-form select[name=household_id]", "h-7-302")
        page.fill("#visit-form input[name=visitor]", "志愿者 小李")
        page.fill("#visit-form input[name=note]", "身体尚好")
        page.click("#visit-form button[type=submit]")
        expect(page.locator("#toast")).to_contain_text("探访已登记")
        expect(hh).to_have_value("")                 # the next call: chosen again
        visited = cell.locator('tr[data-household="h-7-302"]')
        expect(visited).to_have_attribute("data-status", "visited")
        expect(visited).to_contain_text("已探访")
        expect(visited).to_contain_text("志愿者 小李")
        expect(cell.locator(".cov-counts")).to_contain_text("探访率：50%")
        expect(cell.locator('tr[data-household="h-7-101"]')).to_contain_text("待探访")
        # the grid member's card at 田林路200弄7号101室's door reader: a visit too
        mqtt_publish(mosquitto.port, [(DOOR_TOPIC, {"access": "granted", "card": "A1B2C3"})])
        page.wait_for_timeout(500)
        page.locator("#visit-month").dispatch_event("change")     # (the page drawn again)
        by_card = cell.locator('tr[data-household="h-7-101"]')
        expect(by_card).to_have_attribute("data-status", "visited", timeout=5000)
        expect(by_card).to_contain_text("王芳")
        expect(cell.locator(".cov-counts")).to_contain_text("探访率：100%")
        _words(page, "zh")
        # the CSV in Chinese, through the console's session
        csv = page.request.get(gw.url + href)
        assert csv.status == 200 and "探访状态" in csv.text() and "已探访" in csv.text()
        # English
        page.select_option("#lang", "en")
        expect(visited).to_contain_text("visited")
        expect(cell.locator(".cov-counts")).to_contain_text("Visited: 100%")
        assert page.locator("#visits-csv").get_attribute("href").endswith("lang=en")
        _words(page, "en")
        # the phone's width: the page still works
        page.set_viewport_size({"width": 390, "height": 800})
        expect(visited).to_be_visible()
    finally:
        context.close()
        gw.stop()


def test_the_help_tab_of_a_site_without_categories(browser, tmp_path, mosquitto):
    """A site without help_categories (the demo community): no form with an empty 类别 list
    that can only fail (night-shift walk: '类别：必填'), but a line that says why."""
    from playwright.sync_api import expect

    from gateway.broker import free_port
    from tests.support import GatewayProcess, site_copy

    config = site_copy(tmp_path / "site", mqtt_port=mosquitto.port)
    site = (config / "site.yaml").read_text("utf-8")
    start = site.index("help_categories:")
    end = site.index("\n\n", start)
    (config / "site.yaml").write_text(site[:start] + site[end + 2:], "utf-8")
    gw = GatewayProcess(config, tmp_path / "data", port=free_port())
    gw.add_users("duty")
    gw.start()
    context, page = browser_login(browser, gw, "duty")
    try:
        page.click('#nav [data-view="help"]')
        expect(page.locator("#help-list")).to_contain_text("暂无求助")
        expect(page.locator("#help-form")).to_be_hidden()
        expect(page.locator("#help-no-categories")).to_contain_text("本社区未设置求助类别")
        _words(page, "zh")
        page.select_option("#lang", "en")
        expect(page.locator("#help-no-categories")).to_contain_text("no help categories")
        _words(page, "en")
    finally:
        context.close()
        gw.stop()
