"""Every page and dialog of the console and the installer in zh-CN and in English, in Debian's
Chromium against a real gateway (issue 13.4): no untranslated string.

The site is the example site with more kinds of devices (a Zigbee gas detector, water leak
detector and motion sensor) and a supervision rule, a real Mosquitto and the simulated grid
case system, so that the board has alarms of several categories, the devices page a fault,
history alarms with cases (statuses, a resolve reason) and the audit log logins, users,
tokens, device edits and alarm actions.

What fails the test, on any visible text, option, placeholder, title or aria-label:
- in zh-CN: an identifier-like token (snake_case, dotted.action, camelCase) or an English
  word (Latin letters) other than the few names and unit symbols of :data:`LATIN_OK`, or an
  ASCII colon after a Chinese word (紧急联系人: where zh-CN writes 紧急联系人：);
- in English: any CJK character (including full-width punctuation).
Site data is excepted, and only that: elements marked ``data-raw`` (addresses, names of
people, devices and grid cells, ids, MQTT topics, profile ids: what the site's files or the
devices themselves say; inside a rule's message, the console marks the site's names it
holds), a ``title`` listing device names (``data-raw-title``) and the language menu (each
language named in itself).
"""

from __future__ import annotations

import re

import pytest
from ruamel.yaml import YAML

from gateway.broker import free_port
from tests.support import GatewayProcess, mqtt_publish, site_copy, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser]

#: Latin words allowed in the zh-CN console: product and protocol names, unit symbols
LATIN_OK = frozenset({"Zigbee", "Zigbee2MQTT", "MQTT", "CSV", "kWh", "Hz", "LEL", "RH", "lqi"})
SNAKE = re.compile(r"\b[a-z][a-z0-9]*_[a-z0-9_]+\b")
DOTTED = re.compile(r"\b[a-z]+\.[a-z_]+\b")
CAMEL = re.compile(r"\b[a-z]+[A-Z][A-Za-z]*\b")
LATIN = re.compile(r"[A-Za-z][A-Za-z0-9]*")
CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uf900-\ufaff\uff00-\uffef]")
#: an ASCII colon after a Chinese word (紧急联系人: 张三): zh-CN takes the full-width ：
HALF_COLON = re.compile(r"[\u3400-\u9fff]\s*:")

#: the exception list, as a CSS selector: site data and the language menu
EXCEPT = "[data-raw], #lang"

#: every visible string of the page (text, options of visible selects, placeholders, titles,
#: aria-labels), leaving out what EXCEPT matches
COLLECT = """(except) => {
  const out = [];
  const skipped = el => !!el.closest(except);
  const visible = el => { const r = el.getClientRects(); return r.length > 0 && getComputedStyle(el).visibility !== "hidden"; };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement, s = n.textContent.trim();
    if (!s || !el || ["SCRIPT", "STYLE", "OPTION"].includes(el.tagName) || skipped(el) || !visible(el)) continue;
    out.push(s);
  }
  for (const sel of document.querySelectorAll("select")) {
    if (skipped(sel) || !visible(sel)) continue;
    for (const o of sel.options) if (!skipped(o) && o.textContent.trim()) out.push(o.textContent.trim());
  }
  for (const el of document.querySelectorAll("[placeholder], [title], [aria-label]")) {
    if (skipped(el) || !visible(el)) continue;
    for (const a of ["placeholder", "title", "aria-label"]) {
      const v = el.getAttribute(a);
      if (v && !(a === "title" && el.hasAttribute("data-raw-title"))) out.push(v);
    }
  }
  return out;
}"""


def untranslated(texts: list[str], lang: str) -> list[str]:
    """The strings of ``texts`` that are not in ``lang`` (see module docstring)."""
    bad = []
    for s in texts:
        if lang == "en":
            if CJK.search(s):
                bad.append(s)
            continue
        if SNAKE.search(s) or DOTTED.search(s) or HALF_COLON.search(s) or any(
                w not in LATIN_OK for w in CAMEL.findall(s)):
            bad.append(s)
        elif any(w not in LATIN_OK for w in LATIN.findall(s)):
            bad.append(s)
    return bad


def test_the_checker_catches_what_it_should():
    assert untranslated(["一键呼叫 已按下", "电量 85 %", "用电量 12.5 kWh", "Zigbee 网络"],
                        "zh") == []
    assert untranslated(["sos true good"], "zh") == ["sos true good"]
    assert untranslated(["紧急联系人:", "在线: 3"], "zh") == ["紧急联系人:", "在线: 3"]
    assert untranslated(["紧急联系人：", "22:35"], "zh") == []
    for raw in ("device.create", "silent", "motion_sensor", "wrong user name or password",
                "登录 login", "camelCase"):
        assert untranslated([raw], "zh") == [raw], raw
    assert untranslated(["Alarms", "Resolve"], "en") == []
    assert untranslated(["已处置", "Note："], "en") == ["已处置", "Note："]


def _site(tmp_path, mosquitto, case_system, port: int):
    config = site_copy(tmp_path / "site", mqtt_port=mosquitto.port, case_url=case_system.url,
                       callback_url=f"http://127.0.0.1:{port}/api/case-callback")
    # cases close within 2 s and wait for staff's confirmation: alarms stay on the board
    with open(config / "uplinks.yaml", "a", encoding="utf-8") as fh:
        fh.write("  on_case_closed: confirm\n")
    yaml = YAML()
    devices = yaml.load(config / "devices.yaml")
    devices["devices"] += [
        {"id": "gas-7-101", "type": "gas_detector", "household": "h-7-101", "name": "厨房燃气探测器",
         "mqtt": {"zigbee2mqtt": "gas-7-101"}},
        {"id": "leak-9-201", "type": "water_leak_detector", "household": "h-9-201",
         "name": "卫生间水浸探测器", "mqtt": {"zigbee2mqtt": "leak-9-201"}},
        {"id": "motion-7-101", "type": "motion_sensor", "household": "h-7-101",
         "name": "客厅人体感应器", "mqtt": {"zigbee2mqtt": "motion-7-101"}}]
    yaml.dump(devices, config / "devices.yaml")
    rules = yaml.load(config / "rules.yaml")
    rules["rules"].append({"id": "device_health", "kind": "supervision", "battery_below": 20,
                           "message": {"zh": "设备故障：{household_address}{device_name}（{fault}）",
                                       "en": "Device fault: {device_name}, {household_address} "
                                             "({fault})"}})
    yaml.dump(rules, config / "rules.yaml")
    return config


@pytest.fixture
def gateway(tmp_path, mosquitto, case_system, case_secret):
    port = free_port()
    config = _site(tmp_path, mosquitto, case_system, port)
    gw = GatewayProcess(config, tmp_path / "data", env={"CASE_SYSTEM_SECRET": case_secret},
                        port=port)
    gw.add_users("duty", "installer", "admin")
    gw.installer_token = gw.token("installer", "commissioning-tablet")
    gw.start()
    yield gw
    gw.stop()


def _demo_traffic(gw, mosquitto) -> None:
    """Alarms of several categories, a fault, readings, history with cases, audit entries."""
    mqtt_publish(mosquitto.port, [
        ("devices/caller-7-101", {"event": "sos", "battery": 90}),
        ("devices/smoke-7-302", {"smoke": True}),
        ("zigbee2mqtt/gas-7-101", {"gas": True, "battery": 95}),
        ("zigbee2mqtt/leak-9-201", {"water_leak": True, "battery": 5}),
        ("zigbee2mqtt/motion-7-101", {"occupancy": True, "battery": 80, "linkquality": 120})])
    api = gw.api(gw.installer_token)
    wait_for(lambda: len(api.get("/api/alarms").json()["alarms"]) >= 4, timeout=15,
             what="four alarms")
    wait_for(lambda: api.get("/api/faults").json()["faults"], timeout=15, what="a fault")
    alarms = api.get("/api/alarms").json()["alarms"]
    wait_for(lambda: all(a["case_id"] for a in api.get("/api/alarms").json()["alarms"]),
             timeout=15, what="cases opened")
    # an installer's edits (device.create, device.mode) for the audit log
    r = api.post("/api/config/devices", json={"id": "caller-7-302b", "type": "emergency_caller",
                                              "household": "h-7-302", "name": "客厅一键呼叫器"})
    assert r.status_code == 201, r.text
    assert api.put("/api/devices/motion-7-101/mode", json={"mode": "test"}).status_code == 200
    return alarms


def _check(page, lang: str, where: str, problems: list[str]) -> None:
    page.wait_for_timeout(300)      # (the page's own fetches after a click)
    bad = untranslated(page.evaluate(COLLECT, EXCEPT), lang)
    problems += [f"{lang} {where}: {s!r}" for s in bad]


def _visit_everything(page, gw, lang: str, problems: list[str]) -> None:
    from playwright.sync_api import expect

    page.goto(gw.url + "/")
    page.select_option("#lang", lang)
    # -- login, its error, the first admin's setup form
    page.fill("#login input[name=username]", "duty")
    page.fill("#login input[name=password]", "not the password")
    page.click("#login button[type=submit]")
    expect(page.locator("#login-error")).not_to_be_empty(timeout=5000)
    _check(page, lang, "login (wrong password)", problems)
    # switching language says the error again in the new one (it stayed in the old one)
    other = "en" if lang == "zh" else "zh"
    page.select_option("#lang", other)
    expect(page.locator("#login-error")).to_have_text(
        "Wrong user name or password" if other == "en" else "用户名或密码错误")
    page.select_option("#lang", lang)
    page.click("#to-setup")
    page.fill("#setup input[name=setup_token]", "no-such-token-at-all")
    page.fill("#setup input[name=username]", "admin2")
    page.fill("#setup input[name=password]", "long enough password")
    page.click("#setup button[type=submit]")
    expect(page.locator("#setup-error")).not_to_be_empty(timeout=5000)
    _check(page, lang, "setup form (refused)", problems)
    # -- log in as admin: every tab
    page.goto(gw.url + "/")
    page.fill("#login input[name=username]", "admin")
    page.fill("#login input[name=password]", gw.passwords["admin"])
    page.click("#login button[type=submit]")
    page.wait_for_selector("#conn.live", timeout=10_000)
    page.wait_for_selector("#alarms .alarm", timeout=10_000)
    _check(page, lang, "board", problems)
    # the resolve dialog of an acknowledged alarm
    card = page.locator("#alarms .alarm[data-state=raised]").first
    card.locator("button.ack").click()
    ack_card = page.locator("#alarms .alarm[data-state=acknowledged]").first
    expect(ack_card).to_be_visible(timeout=5000)
    ack_card.locator("button.resolve").click()     # no reason chosen: the card says so
    _check(page, lang, "board (reason required)", problems)
    ack_card.locator("select.reason").select_option("false_alarm")
    ack_card.locator("button.resolve").click()
    expect(page.locator("#resolve-dialog")).to_be_visible()
    _check(page, lang, "resolve dialog", problems)
    page.click("#rd-confirm")
    expect(page.locator("#resolve-dialog")).to_be_hidden(timeout=5000)
    # history
    page.click("#nav [data-view=history]")
    page.wait_for_selector("#history-table tr[data-id]", timeout=5000)
    _check(page, lang, "history", problems)
    # devices: faults and the groups
    page.click("#nav [data-view=devices]")
    page.wait_for_selector("#device-groups tr.dev", timeout=5000)
    _check(page, lang, "devices", problems)
    # installer: the form with its field errors, a device's readings, the checklist
    page.click("#nav [data-view=installer]")
    page.wait_for_selector("#configured .configured-device", timeout=5000)
    form = page.locator("#device-form")
    form.locator("input[name=id]").fill("caller-7-101")           # taken
    form.locator("button[type=submit]").click()
    expect(page.locator("#device-form .ferr[data-for=id]")).not_to_be_empty(timeout=5000)
    _check(page, lang, "installer form (id taken)", problems)
    form.locator("input[name=id]").fill("bad id!")                # pattern
    form.locator("button[type=submit]").click()
    page.wait_for_timeout(500)
    _check(page, lang, "installer form (bad id)", problems)
    page.locator("#configured .configured-device[data-device=motion-7-101] button.detail").click()
    page.wait_for_selector("#device-detail tr.reading", timeout=5000)
    _check(page, lang, "installer device readings", problems)
    page.locator("#checklist-household").select_option("h-7-101")
    page.wait_for_selector("#checklist li", timeout=5000)
    _check(page, lang, "installer checklist", problems)
    # households: the list, a care state set from it (its dialog, then its tag)
    page.click("#nav [data-view=households]")
    page.wait_for_selector("#hh-list tr.hh-row", timeout=5000)
    _check(page, lang, "households", problems)
    page.locator("#hh-list tr.hh-row[data-household=h-7-101] .care-btn").click()
    expect(page.locator("#care-dialog")).to_be_visible()
    _check(page, lang, "care dialog (households)", problems)
    page.select_option("#cd-state", "hospital")
    page.click("#cd-save")
    expect(page.locator("#hh-list tr[data-household=h-7-101] .tag.care")).to_be_visible()
    _check(page, lang, "households (in hospital)", problems)
    page.locator("#hh-list tr.hh-row[data-household=h-7-101] .care-btn").click()
    page.click("#cd-end-now")
    expect(page.locator("#hh-list tr[data-household=h-7-101] .tag.care")).to_have_count(0)
    # Zigbee network page (empty network)
    page.click("#nav [data-view=zigbee]")
    page.wait_for_timeout(500)
    _check(page, lang, "zigbee network", problems)
    # admin: users, the audit log, a refused new user
    page.click("#nav [data-view=admin]")
    page.wait_for_selector("#audit tr[data-action]", timeout=5000)
    _check(page, lang, "admin", problems)
    uf = page.locator("#user-form")
    uf.locator("input[name=username]").fill("duty")
    uf.locator("input[name=password]").fill("a long password")
    uf.locator("button[type=submit]").click()
    expect(page.locator("#user-error")).not_to_be_empty(timeout=5000)
    _check(page, lang, "admin (user exists)", problems)


def test_every_page_and_dialog_in_both_languages(browser, gateway, mosquitto):
    _demo_traffic(gateway, mosquitto)
    problems: list[str] = []
    for lang, locale in (("zh", "zh-CN"), ("en", "en-GB")):
        context = browser.new_context(locale=locale, timezone_id="Asia/Shanghai")
        page = context.new_page()
        try:
            _visit_everything(page, gateway, lang, problems)
        finally:
            context.close()
    assert not problems, "untranslated:\n" + "\n".join(problems)


def _on_a_phone(browser, gateway, user: str, locale: str, ready: str):
    """A 390x844 context logged in as ``user``, its app shown (``ready``): (context, page)."""
    context = browser.new_context(locale=locale, timezone_id="Asia/Shanghai",
                                  viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(gateway.url + "/")
    page.fill("#login input[name=username]", user)
    page.fill("#login input[name=password]", gateway.passwords[user])
    page.click("#login button[type=submit]")
    page.wait_for_selector(ready, timeout=10_000)
    return context, page


def test_history_fits_a_phone(browser, gateway, mosquitto):
    _demo_traffic(gateway, mosquitto)
    context, page = _on_a_phone(browser, gateway, "duty", "zh-CN", "#conn.live")
    try:
        for view, ready in (("history", "#history-table tr[data-id]"),
                            ("devices", "#device-groups tr.dev"), ("board", "#alarms .alarm")):
            page.click(f"#nav [data-view={view}]")
            page.wait_for_selector(ready, timeout=5000)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{view}: the page is {width} px wide on a 390 px phone"
    finally:
        context.close()
    # the installer's device list too, in both languages (English words are longer)
    for locale in ("zh-CN", "en"):
        context, page = _on_a_phone(browser, gateway, "installer", locale, "#app:not([hidden])")
        try:
            page.click("#nav [data-view=installer]")
            page.wait_for_selector("#configured tr.configured-device", timeout=5000)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"installer ({locale}): {width} px wide on a 390 px phone"
        finally:
            context.close()


#: the nav's tabs, each one's top and the header's height (px)
NAV_ROWS = """() => ({tops: [...document.querySelectorAll('#nav .tab')].filter(b => b.offsetParent)
  .map(b => Math.round(b.getBoundingClientRect().top)), head: document.querySelector('#top').offsetHeight,
  width: document.documentElement.scrollWidth})"""




def test_the_nav_fits_one_row_at_1280_in_both_languages(browser, gateway):
    """Night-shift walk: in English at 1280 and 1366 px the duty nav took 2 rows and the
    admin's 3 (a 120-160 px header). The tabs in one row in both languages (under the title and
    tools when they do not fit beside them); a phone still fits 390 px."""
    for user in ("duty", "admin"):
        for locale in ("en", "zh-CN"):
            for width in (1280, 1366, 390):
                context = browser.new_context(locale=locale, timezone_id="Asia/Shanghai",
                                              viewport={"width": width, "height": 800})
                page = context.new_page()
                try:
                    page.add_init_script(f"localStorage.setItem('lang', '{locale[:2]}')")
                    page.goto(gateway.url + "/")
                    page.fill("#login input[name=username]", user)
                    page.fill("#login input[name=password]", gateway.passwords[user])
                    page.click("#login button[type=submit]")
                    page.wait_for_selector("#conn.live", timeout=10_000)
                    got = page.evaluate(NAV_ROWS)
                    where = f"{user}, {locale}, {width} px: {got}"
                    assert len(got["tops"]) >= 6, where
                    assert got["width"] <= width, where
                    if width >= 1280:
                        assert len(set(got["tops"])) == 1, where
                        assert got["head"] <= 96, where   # at most title + tools, then tabs
                finally:
                    context.close()
