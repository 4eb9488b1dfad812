"""Alarm history (+ CSV export) and households."""

import csv
import io
from datetime import datetime, timezone
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from gateway.alarms import AlarmBook, HistoryFilter
from gateway.api.deps import Ctx, need
from gateway.api.errors import ApiError
from gateway.api.views import decorate, grid_json, household_json
from gateway.auth import Principal
from gateway.blocking import blocking
from gateway.device_modes import effective_mode

__all__ = ["CSV_COLUMNS", "MAX_EXPORT", "router"]

router = APIRouter()
State = Literal["open", "raised", "acknowledged", "resolved"]
SeverityName = Literal["critical", "major", "minor", "info"]
CSV_COLUMNS = ("id", "raised_at", "severity", "category", "state", "device_id", "household_id",
               "address", "grid_cell", "message_zh", "count", "escalation_tier_name", "ack_by",
               "ack_at", "resolved_by", "resolved_at", "resolve_reason", "resolve_note",
               "case_id", "case_status")
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


def _csv(book: AlarmBook, site, f: HistoryFilter) -> str:
    """The CSV export (blocking: the query and up to MAX_EXPORT rows of formatting)."""
    _total, rows = book.history(f, MAX_EXPORT, 0)
    buf = io.StringIO()
    buf.write("\ufeff")
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for a in rows:
        hh = site.household(a.get("household_id"))
        a["address"] = hh.address if hh else ""
        w.writerow([_safe_cell(a.get(c)) for c in CSV_COLUMNS])
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
async def history_csv(p: AlarmsReader, f: Filter, ctx: Ctx) -> Response:
    """The same filters as ``/api/history`` as a CSV file (UTF-8 with BOM for Excel).
    Contacts are never exported."""
    text = await blocking(_csv, ctx.book, ctx.site, f)
    return Response(text, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": 'attachment; filename="alarms.csv"'})


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
