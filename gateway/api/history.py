"""Alarm history (+ CSV export) and households."""

import csv
import io
from datetime import datetime, timezone
from typing import Annotated, Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from gateway.alarms import CASE_REASONS, RESOLVE_REASONS, AlarmBook, HistoryFilter
from gateway.api.deps import Ctx, need
from gateway.api.errors import ApiError
from gateway.api.views import decorate, grid_json, household_json
from gateway.auth import Principal
from gateway.blocking import blocking
from gateway.catalogue import lang_of, text, zone_label
from gateway.device_modes import effective_mode

__all__ = ["CSV_COLUMNS", "MAX_EXPORT", "router"]

router = APIRouter()
State = Literal["open", "raised", "acknowledged", "resolved"]
SeverityName = Literal["critical", "major", "minor", "info"]
#: the export's columns (headers from the catalogue: ``csv_<column>``)
CSV_COLUMNS = ("id", "raised_at", "severity", "category", "state", "device_id", "device_name",
               "household_id", "address", "grid_cell", "message", "count",
               "escalation_tier_name", "ack_by", "ack_at", "resolved_by", "resolved_at",
               "resolve_reason", "resolve_note", "case_id", "case_status")
#: columns holding a time: the site's local time, ``YYYY-MM-DD HH:MM:SS`` (the zone in the
#: header)
_TIMES = frozenset({"raised_at", "ack_at", "resolved_at"})
#: columns holding a code, in words: the catalogue's key prefix
_WORDS = {"severity": "", "state": "", "category": "cat_", "case_status": "cs_",
          "escalation_tier_name": "tier_"}
CsvLang = Literal["zh-CN", "zh", "en"]
MAX_EXPORT = 50_000
AlarmsReader = Annotated[Principal, Depends(need("alarms.read"))]
HouseholdsReader = Annotated[Principal, Depends(need("households.read"))]


def _iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc).isoformat()


def _safe_cell(value: object) -> object:
    # CSV injection: a cell starting with = + - @ is a formula in spreadsheet programs.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


async def history_filter(state: State | None = None, severity: SeverityName | None = None,
                         category: Annotated[str | None, Query(max_length=64)] = None,
                         household_id: Annotated[str | None, Query(max_length=64)] = None,
                         grid_cell: Annotated[str | None, Query(max_length=64)] = None,
                         device_id: Annotated[str | None, Query(max_length=64)] = None,
                         since: datetime | None = None, until: datetime | None = None,
                         include_tests: bool = False) -> HistoryFilter:
    return HistoryFilter(state, severity, category, household_id, grid_cell, device_id,
                         _iso(since), _iso(until), include_tests)


Filter = Annotated[HistoryFilter, Depends(history_filter)]


def _local(value: object, zone: ZoneInfo) -> str:
    """A stored timestamp (ISO with offset) as the site's local ``YYYY-MM-DD HH:MM:SS``."""
    if not value:
        return ""
    ts = datetime.fromisoformat(str(value))
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def _actor(lang: str, actor: object) -> str:
    """Who did it, in words (the console's actorLabel): users stay their names."""
    a = str(actor or "")
    if a.startswith("case_system:"):
        who = a[12:]
        return text(lang, "actor_case_handler", name=who) if who else text(lang,
                                                                          "actor_case_system")
    if a in ("system", "device", "cli", "setup"):
        return text(lang, f"actor_{a}")
    if a.startswith("rule:"):
        return text(lang, "actor_rule")
    if a.startswith("token:"):
        return text(lang, "actor_token", name=a[6:])
    return a


def _cell(lang: str, column: str, a: dict, zone: ZoneInfo) -> object:
    value = a.get(column)
    if column in _TIMES:
        return _local(value, zone)
    if value in (None, ""):
        return ""
    if column in _WORDS:
        return text(lang, _WORDS[column] + str(value), default=str(value))
    if column == "resolve_reason":
        label = {**RESOLVE_REASONS, **CASE_REASONS}.get(str(value))
        return label[lang] if label else value
    if column in ("ack_by", "resolved_by"):
        return _actor(lang, value)
    return value


def _csv(book: AlarmBook, site, f: HistoryFilter, lang: str = "zh") -> str:
    """The CSV export (blocking: the query and up to MAX_EXPORT rows of formatting): headers
    and codes in ``lang``'s words, times in the site's timezone, every cell CSV-injection
    safe, UTF-8 with a BOM (Excel)."""
    _total, rows = book.history(f, MAX_EXPORT, 0)
    tz = site.site.site.timezone
    zone = ZoneInfo(tz)
    names = {d.id: d.name for d in site.devices.devices}
    buf = io.StringIO()
    buf.write("\ufeff")
    w = csv.writer(buf)
    w.writerow([text(lang, f"csv_{c}", tz=zone_label(tz)) for c in CSV_COLUMNS])
    for a in rows:
        hh = site.household(a.get("household_id"))
        a["address"] = hh.address if hh else ""
        a["device_name"] = names.get(a.get("device_id") or "", "")
        a["message"] = a.get("message_zh" if lang == "zh" else "message_en")
        w.writerow([_safe_cell(_cell(lang, c, a, zone)) for c in CSV_COLUMNS])
    return buf.getvalue()


# -- history -----------------------------------------------------------------------------
@router.get("/api/history", tags=["alarms"])
async def history(p: AlarmsReader, f: Filter, ctx: Ctx,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> dict:
    """Alarms matching the filters, newest first, one page at a time."""
    total, rows = await blocking(ctx.book.history, f, limit, offset)
    return {"total": total, "offset": offset, "alarms": [decorate(ctx, a, p) for a in rows]}


@router.get("/api/history.csv", tags=["alarms"], response_class=Response,
            responses={200: {"content": {"text/csv": {}}}})
async def history_csv(p: AlarmsReader, f: Filter, ctx: Ctx, lang: CsvLang = "zh-CN") -> Response:
    """The same filters as ``/api/history`` as a CSV file (UTF-8 with BOM for Excel):
    headers, severities, categories, states, case statuses, resolve reasons and actors in
    the console's language ``lang`` (zh-CN default, en); times in the site's timezone as
    ``YYYY-MM-DD HH:MM:SS``, the zone named by its UTC offset in the time columns' headers and the file name.
    Contacts are never exported."""
    lang_key = lang_of(lang)
    body = await blocking(_csv, ctx.book, ctx.site, f, lang_key)
    zone = zone_label(ctx.site.site.site.timezone).replace(":", "")     # UTC+0800
    name = f"{text(lang_key, 'csv_filename')}-{zone}.csv"
    return Response(body, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f"attachment; filename=\"alarms-{zone}.csv\"; "
                               f"filename*=UTF-8''{quote(name)}"})


# -- households --------------------------------------------------------------------------
@router.get("/api/households", tags=["households"])
async def households(p: HouseholdsReader, ctx: Ctx) -> dict:
    """Every household with its grid cell; contacts masked for roles that don't need them."""
    counts: dict[str, int] = {}
    for d in ctx.site.devices.devices:
        if d.household:
            counts[d.household] = counts.get(d.household, 0) + 1
    return {"households": [dict(household_json(h, p), devices=counts.get(h.id, 0),
                                grid=grid_json(ctx.site.grid_cell(h.grid_cell)))
                           for h in ctx.site.site.households],
            "grid_cells": [grid_json(c) for c in ctx.site.site.grid_cells]}


@router.get("/api/households/{household_id}", tags=["households"])
async def household(household_id: str, p: HouseholdsReader, ctx: Ctx) -> dict:
    """One household: card, grid cell, devices with health, open alarms."""
    site = ctx.site
    hh = site.household(household_id)
    if hh is None:
        raise ApiError(404, "household_not_found", f"household {household_id!r} not found",
                       household=household_id)
    devices = []
    for d in site.devices.devices:
        if d.household == household_id:
            h = ctx.devices.devices.get(d.id) if ctx.devices else None
            mode = effective_mode(d)     # a test/maintenance mode ends by itself
            devices.append(dict(h.to_json() if h else {"device_id": d.id},
                                name=d.name, mode=mode,
                                mode_until=d.mode_until.isoformat()
                                if mode != "normal" and d.mode_until else None))
    _n, open_alarms = await blocking(ctx.book.history, HistoryFilter(
        state="open", household_id=household_id), 100, 0)
    return {"household": household_json(hh, p),
            "grid": grid_json(site.grid_cell(hh.grid_cell)), "devices": devices,
            "open_alarms": [decorate(ctx, a, p) for a in open_alarms]}
