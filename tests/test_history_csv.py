"""The history CSV (issue 13.6): the site's local time, headers and codes in the console's
language (``lang``, zh-CN by default), CSV-injection safe, UTF-8 with a BOM."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from gateway.model import Severity
from gateway.store import cases
from rules.actions import RaiseAlarm
from tests.api_fixtures import api_env  # noqa: F401  (fixture)

RAISED = datetime(2024, 3, 1, 16, 30, 5, 123000, tzinfo=timezone.utc)
SHANGHAI = ZoneInfo("Asia/Shanghai")     # the example site's zone (site.yaml)


def _alarm(env) -> int:
    action = RaiseAlarm("sos:caller-7-101:csv", "sos", "emergency_call", Severity.CRITICAL,
                        "caller-7-101", "h-7-101", env.ctx.site.household("h-7-101").grid_cell, "一键呼叫：卧室一键呼叫器",
                        "Emergency call: bedroom caller", RAISED, True)
    alarm_id = asyncio.run(env.ctx.book.apply([action]))[0].alarm_id
    duty = env.client("duty")
    assert duty.post(f"/api/alarms/{alarm_id}/ack", json={}).status_code == 200
    r = duty.post(f"/api/alarms/{alarm_id}/resolve", json={"reason": "false_alarm",
                                                         "note": "=HYPERLINK(\"x\")"})
    assert r.status_code == 200, r.text
    env.store.write_sync(lambda c: cases.opened(c, "alarms", alarm_id, "GC-2024-0001", "on_site"))
    return alarm_id


def _local(env, alarm_id: int, field: str = "raised_at") -> str:
    """What the export must say: the stored UTC time of the alarm, in Shanghai's time."""
    stored = env.client("duty").get(f"/api/alarms/{alarm_id}").json()[field]
    utc = datetime.fromisoformat(stored)
    assert utc.utcoffset().total_seconds() == 0
    return utc.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def _rows(env, **params) -> tuple[list[list[str]], str, str]:
    r = env.client("duty").get("/api/history.csv", params=params)
    assert r.status_code == 200, r.text
    raw = r.content
    assert raw.startswith(b"\xef\xbb\xbf")                 # UTF-8 with BOM (Excel)
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    return rows, r.headers["content-type"], r.headers["content-disposition"]


def test_csv_in_chinese_and_local_time_by_default(api_env):
    alarm_id = _alarm(api_env)
    rows, ctype, disposition = _rows(api_env)
    assert ctype.startswith("text/csv") and "UTC+0800" in disposition
    head, body = rows[0], rows[1:]
    assert head[:6] == ["编号", "发生时间（UTC+08:00）", "级别", "类别", "状态", "设备编号"]
    assert {"设备名称", "地址", "内容", "确认人", "处置原因", "工单号", "工单状态"} <= set(head)
    (row,) = [dict(zip(head, r)) for r in body if r[0] == str(alarm_id)]
    # local (UTC+8, no offset written), to the second
    assert row["发生时间（UTC+08:00）"] == _local(api_env, alarm_id)
    assert row["处置时间（UTC+08:00）"] == _local(api_env, alarm_id, "resolved_at")
    assert row["级别"] == "紧急" and row["类别"] == "一键呼叫" and row["状态"] == "已处置"
    assert row["处置原因"] == "误报" and row["工单状态"] == "已到场"
    assert row["设备名称"] == "卧室一键呼叫器" and row["内容"] == "一键呼叫：卧室一键呼叫器"
    assert row["地址"] == "田林路200弄7号101室" and row["确认人"] == "duty"
    assert row["处置备注"].startswith("'=")                 # a formula is neutralised
    acked = datetime.strptime(row["确认时间（UTC+08:00）"], "%Y-%m-%d %H:%M:%S")
    now = datetime.now(SHANGHAI).replace(tzinfo=None)
    assert abs((acked - now).total_seconds()) < 600      # Shanghai's time now, not UTC's
    assert "13800000001" not in "\n".join(",".join(r) for r in rows)   # no contacts


def test_csv_in_english_on_request(api_env):
    alarm_id = _alarm(api_env)
    rows, _ctype, _disposition = _rows(api_env, lang="en")
    head = rows[0]
    (row,) = [dict(zip(head, r)) for r in rows[1:] if r[0] == str(alarm_id)]
    assert row["Raised (UTC+08:00)"] == _local(api_env, alarm_id)
    assert row["Severity"] == "Critical" and row["Category"] == "emergency call"
    assert row["State"] == "Resolved" and row["Reason"] == "False alarm"
    assert row["Case status"] == "on site" and row["Message"] == "Emergency call: bedroom caller"
    text = "\n".join(",".join(r) for r in rows)
    assert not any("\u4e00" <= ch <= "\u9fff" for ch in text.replace(row["Address"], "")
                   .replace(row["Device name"], ""))


def test_csv_lang_must_be_known(api_env):
    r = api_env.client("duty").get("/api/history.csv", params={"lang": "fr"})
    assert r.status_code == 422 and r.json()["detail"][0]["code"] == "literal_error"
