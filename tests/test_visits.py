"""Visits (issue 15.5): recording a visit (API, roles, CSRF, a retried POST), the month's
coverage per grid cell in the site's local time (visited / due / overdue, the month-end
reminder), masking, and the monthly CSV in the console's language."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
from datetime import datetime, timedelta, timezone

from gateway.visits import coverage, coverage_csv, month_bounds, record_visit
from tests.api_fixtures import api_env  # noqa: F401  (fixture)

UTC = timezone.utc


def _cell(cov: dict, code: str) -> dict:
    return next(c for c in cov["cells"] if c["code"] == code)


def test_months_are_calendar_months_in_the_sites_time():
    m = month_bounds("Asia/Shanghai", "2026-12")
    assert m.start.astimezone(UTC) == datetime(2026, 11, 30, 16, tzinfo=UTC)
    assert m.end.astimezone(UTC) == datetime(2026, 12, 31, 16, tzinfo=UTC)
    # 2026-11-30 17:00 UTC is already December in Shanghai
    assert month_bounds("Asia/Shanghai", None, datetime(2026, 11, 30, 17, tzinfo=UTC)).label \
        == "2026-12"


def test_coverage_visited_due_overdue_and_the_reminder(api_env):  # noqa: F811
    store, site = api_env.store, api_env.ctx.site
    # a visit at 2026-11-30 17:00 UTC counts for December (Shanghai), not November
    asyncio.run(record_visit(store, site, household_id="h-7-101", visitor="王芳",
                             actor="duty", visited_at=datetime(2026, 11, 30, 17, tzinfo=UTC)))
    asyncio.run(record_visit(store, site, household_id="h-9-201", visitor="志愿者 小李",
                             actor="duty", visited_at=datetime(2026, 12, 1, 2, tzinfo=UTC)))
    mid = datetime(2026, 12, 10, 4, tzinfo=UTC)
    dec = coverage(store, site, "2026-12", now=mid)
    cell = _cell(dec, "310104-012-03")
    assert (cell["visited"], cell["due"], cell["overdue"], cell["total"]) == (1, 1, 0, 2)
    assert cell["rate"] == 0.5
    assert {h["household_id"]: h["status"] for h in cell["households"]} == {
        "h-7-101": "visited", "h-7-302": "due"}
    assert _cell(dec, "310104-012-04")["total"] == 0       # h-9-201 is not flagged
    assert dec["other_visits"] == 1
    assert dec["remind"] == []                             # not yet the month's last week
    late = coverage(store, site, "2026-12", now=datetime(2026, 12, 26, 4, tzinfo=UTC))
    assert late["remind"] == [{"grid_cell": "310104-012-03", "grid_member": cell["grid_member"],
                               "households": ["h-7-302"]}]
    nov = coverage(store, site, "2026-11", now=mid)        # November is over: nobody visited
    assert nov["ended"] and _cell(nov, "310104-012-03")["overdue"] == 2
    assert nov["remind"] == []
    masked = coverage(store, site, "2026-12", now=mid, personal=False)
    assert all(h["address"].endswith("***") for h in _cell(masked, "310104-012-03")[
        "households"])


def test_the_csv_in_both_languages(api_env):  # noqa: F811
    store, site = api_env.store, api_env.ctx.site
    asyncio.run(record_visit(store, site, household_id="h-7-101", visitor="王芳", actor="duty",
                             visited_at=datetime(2026, 12, 3, 1, 30, tzinfo=UTC)))
    now = datetime(2026, 12, 10, tzinfo=UTC)
    zh, month = coverage_csv(store, site, "2026-12", "zh", now=now)
    assert month == "2026-12" and zh.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(zh.lstrip("\ufeff"))))
    assert rows[0] == ["网格", "网格员", "住户编号", "地址", "探访状态", "探访次数",
                       "最近探访时间（UTC+08:00）", "最近探访人"]
    first = next(r for r in rows[1:] if r[2] == "h-7-101")
    assert first[4] == "已探访" and first[5] == "1" and first[6] == "2026-12-03 09:30:00"
    assert next(r for r in rows[1:] if r[2] == "h-7-302")[4] == "待探访"
    en, _ = coverage_csv(store, site, "2026-12", "en", now=now)
    head = next(csv.reader(io.StringIO(en.lstrip("\ufeff"))))
    assert head[4] == "Visit status" and head[6] == "Last visit (UTC+08:00)"


def test_the_api(api_env):  # noqa: F811
    duty = api_env.client("duty")
    r = duty.post("/api/visits", json={"household_id": "h-7-302", "note": "身体尚好",
                                       "request_id": "visit-0001"})
    assert r.status_code == 201, r.text
    again = duty.post("/api/visits", json={"household_id": "h-7-302", "note": "身体尚好",
                                           "request_id": "visit-0001"})
    assert again.json()["id"] == r.json()["id"]            # a retried POST: one visit
    cov = duty.get("/api/visits/coverage").json()
    hh = next(h for h in _cell(cov, "310104-012-03")["households"]
              if h["household_id"] == "h-7-302")
    assert hh["status"] == "visited" and hh["visits"] == 1 and hh["visitor"] == "duty"
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert duty.post("/api/visits", json={"household_id": "h-7-302", "visited_at": future}
                     ).json()["code"] == "visit_in_future"
    assert duty.post("/api/visits", json={"household_id": "h-x"}).json()["code"] == \
        "household_not_found"
    assert duty.get("/api/visits/coverage?month=2026-13").status_code == 422
    r = duty.get("/api/visits.csv?lang=en")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "visits-" in r.headers["content-disposition"]
    assert api_env.client("installer").get("/api/visits/coverage").status_code == 403
    assert api_env.client("installer").post("/api/visits",
                                            json={"household_id": "h-7-302"}).status_code == 403


def _site_with_reader(tmp_path):
    import shutil

    from gateway.site import load_site
    from tests.support import EXAMPLE

    site_dir = tmp_path / "site"
    shutil.copytree(EXAMPLE, site_dir)
    (site_dir / "profiles").mkdir(exist_ok=True)
    (site_dir / "profiles" / "door-reader.yaml").write_text(
        "id: json-door-reader\ndevice_type: door_access\nformat: json\n"
        "fields:\n  access: {kind: access}\n", "utf-8")
    with open(site_dir / "devices.yaml", "a", encoding="utf-8") as f:
        f.write("  - id: door-7-302\n    type: door_access\n    household: h-7-302\n"
                "    profile: json-door-reader\n    mqtt: {topic: devices/door-7-302}\n"
                "    visit_cards: {A1B2C3: 王芳, VOL-0007: 志愿者 小李}\n")
    return load_site(site_dir)


async def test_a_visit_card_at_the_households_door_records_one_visit_a_day(tmp_path):
    from drivers.profiles import decode_json, load_profiles, with_visit_cards
    from gateway.model import Kind
    from gateway.store import Store
    from gateway.visits import VisitCards

    site = _site_with_reader(tmp_path)
    base = load_profiles(site.directory / "profiles").by_id["json-door-reader"]
    prof = with_visit_cards(base, {"A1B2C3": "王芳"})
    now = datetime(2026, 12, 6, 2, tzinfo=UTC)
    read = decode_json(prof, "door-7-302", {"access": "granted", "card": "a1b2c3"}, now)
    assert [(r.kind, r.value, r.metric) for r in read] == [
        (Kind.ACCESS, "granted", "access"), (Kind.BUTTON, "A1B2C3", "visit_card")]
    other = decode_json(prof, "door-7-302", {"access": "granted", "card": "FFFF"}, now)
    assert [r.kind for r in other] == [Kind.ACCESS]          # a resident's own card: no visit
    store = Store(tmp_path / "gateway.db")
    store.open()
    try:
        cards = VisitCards(store, lambda: site)
        first = await cards.card_read(read[1])
        leaving = dataclasses.replace(read[1], ts=now + timedelta(hours=1))
        assert await cards.card_read(leaving) == first        # arriving and leaving: one
        assert await cards.card_read(other[0]) is None
        cov = coverage(store, site, "2026-12", now=now)
        hh = next(h for h in _cell(cov, "310104-012-03")["households"]
                  if h["household_id"] == "h-7-302")
        assert hh["status"] == "visited" and hh["visitor"] == "王芳" and hh["visits"] == 1
    finally:
        store.close()


def test_visit_cards_only_on_a_households_door_reader(tmp_path):
    import pytest

    from gateway import ConfigError
    from gateway.site import load_site

    site = _site_with_reader(tmp_path)
    text = (site.directory / "devices.yaml").read_text("utf-8")
    (site.directory / "devices.yaml").write_text(
        text.replace("    household: h-7-302\n    profile: json-door-reader",
                     "    grid_cell: \"310104-012-03\"\n    profile: json-door-reader"), "utf-8")
    with pytest.raises(ConfigError, match="visit_cards"):
        load_site(site.directory)
