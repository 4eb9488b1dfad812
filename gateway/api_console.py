"""Duty console endpoints beyond the live board: alarm history (+ CSV), households, device
faults, users and the audit log. Registered by :func:`gateway.api.create_app`."""


import csv
import io
import json
from datetime import datetime, timezone
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.alarms import HistoryFilter
from gateway.auth import ROLES, AuthError, Principal
from gateway.device_modes import effective_mode

__all__ = ["add_console_routes"]

State = Literal["open", "raised", "acknowledged", "resolved"]
SeverityName = Literal["critical", "major", "minor", "info"]
CSV_COLUMNS = ("id", "raised_at", "severity", "category", "state", "device_id", "household_id",
               "address", "grid_cell", "message_zh", "count", "escalation_tier_name", "ack_by",
               "ack_at", "resolved_by", "resolved_at", "resolve_reason", "resolve_note",
               "case_id", "case_status")
MAX_EXPORT = 50_000


class UserBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(pattern=r"^[A-Za-z0-9_.-]{2,32}$")
    role: Literal[ROLES]  # type: ignore[valid-type]
    password: str = Field(min_length=10, max_length=256)
    display_name: str = Field(default="", max_length=50)


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


def add_console_routes(app: FastAPI, ctx, need, decorate) -> None:
    def history_filter(state: State | None = None, severity: SeverityName | None = None,
                       category: Annotated[str | None, Query(max_length=64)] = None,
                       household_id: Annotated[str | None, Query(max_length=64)] = None,
                       grid_cell: Annotated[str | None, Query(max_length=64)] = None,
                       device_id: Annotated[str | None, Query(max_length=64)] = None,
                       since: datetime | None = None, until: datetime | None = None,
                       include_tests: bool = False) -> HistoryFilter:
        return HistoryFilter(state, severity, category, household_id, grid_cell, device_id,
                             _iso(since), _iso(until), include_tests)

    Filter = Annotated[HistoryFilter, Depends(history_filter)]

    # -- history -------------------------------------------------------------------------
    @app.get("/api/history", tags=["alarms"])
    def history(p: Annotated[Principal, Depends(need("alarms.read"))], f: Filter,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> dict:
        """Alarms matching the filters, newest first, one page at a time."""
        total, rows = ctx.book.history(f, limit, offset)
        return {"total": total, "offset": offset, "alarms": [decorate(a, p) for a in rows]}

    @app.get("/api/history.csv", tags=["alarms"], response_class=Response,
             responses={200: {"content": {"text/csv": {}}}})
    def history_csv(p: Annotated[Principal, Depends(need("alarms.read"))], f: Filter) -> Response:
        """The same filters as ``/api/history`` as a CSV file (UTF-8 with BOM for Excel).
        Contacts are never exported."""
        _total, rows = ctx.book.history(f, MAX_EXPORT, 0)
        buf = io.StringIO()
        buf.write("\ufeff")
        w = csv.writer(buf)
        w.writerow(CSV_COLUMNS)
        for a in rows:
            hh = ctx.site.household(a.get("household_id"))
            a["address"] = hh.address if hh else ""
            w.writerow([_safe_cell(a.get(c)) for c in CSV_COLUMNS])
        return Response(buf.getvalue(), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": 'attachment; filename="alarms.csv"'})

    # -- households ----------------------------------------------------------------------
    from gateway.api import grid_json, household_json

    @app.get("/api/households", tags=["households"])
    def households(p: Annotated[Principal, Depends(need("households.read"))]) -> dict:
        """Every household with its grid cell; contacts masked for roles that don't need them."""
        counts: dict[str, int] = {}
        for d in ctx.site.devices.devices:
            if d.household:
                counts[d.household] = counts.get(d.household, 0) + 1
        return {"households": [dict(household_json(h, p), devices=counts.get(h.id, 0),
                                    grid=grid_json(ctx.site.grid_cell(h.grid_cell)))
                               for h in ctx.site.site.households],
                "grid_cells": [grid_json(c) for c in ctx.site.site.grid_cells]}

    @app.get("/api/households/{household_id}", tags=["households"])
    def household(household_id: str,
                  p: Annotated[Principal, Depends(need("households.read"))]) -> dict:
        """One household: card, grid cell, devices with health, open alarms."""
        hh = ctx.site.household(household_id)
        if hh is None:
            raise HTTPException(404, f"household {household_id!r} not found")
        devices = []
        for d in ctx.site.devices.devices:
            if d.household == household_id:
                h = ctx.devices.devices.get(d.id) if ctx.devices else None
                mode = effective_mode(d)     # a test/maintenance mode ends by itself
                devices.append(dict(h.to_json() if h else {"device_id": d.id},
                                    name=d.name, mode=mode,
                                    mode_until=d.mode_until.isoformat()
                                    if mode != "normal" and d.mode_until else None))
        _n, open_alarms = ctx.book.history(HistoryFilter(state="open",
                                                         household_id=household_id), 100, 0)
        return {"household": household_json(hh, p),
                "grid": grid_json(ctx.site.grid_cell(hh.grid_cell)), "devices": devices,
                "open_alarms": [decorate(a, p) for a in open_alarms]}

    # -- faults --------------------------------------------------------------------------
    @app.get("/api/faults", tags=["devices"])
    def faults(p: Annotated[Principal, Depends(need("devices.read"))],
               include_cleared: bool = False) -> dict:
        """Device faults (silent, offline, low battery, tamper...) kept apart from alarms."""
        return {"faults": ctx.book.faults(open_only=not include_cleared)}

    # -- users and audit -----------------------------------------------------------------
    @app.get("/api/users", tags=["admin"])
    def users(p: Annotated[Principal, Depends(need("users.manage"))]) -> dict:
        return {"users": ctx.auth.users()}

    @app.post("/api/users", tags=["admin"], status_code=201)
    def add_user(body: UserBody, p: Annotated[Principal, Depends(need("users.manage"))]) -> dict:
        """Create a console user (the admin sets a first password; at least 10 characters)."""
        try:
            ctx.auth.add_user(body.username, body.role, body.password,
                              display_name=body.display_name, actor=p.name)
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"user": body.username, "role": body.role}

    @app.post("/api/users/{username}/disable", tags=["admin"])
    def disable_user(username: str,
                     p: Annotated[Principal, Depends(need("users.manage"))]) -> dict:
        try:
            ctx.auth.disable_user(username, p.name)
        except AuthError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return {"user": username, "disabled": True}

    @app.get("/api/audit", tags=["admin"])
    def audit(p: Annotated[Principal, Depends(need("audit.read"))],
              actor: Annotated[str | None, Query(max_length=64)] = None,
              limit: Annotated[int, Query(ge=1, le=5000)] = 200) -> dict:
        """Who did what (logins, alarm actions, config edits, users), newest first."""
        return {"audit": [dict(r, detail=json.loads(r["detail"] or "{}"))
                          for r in ctx.auth.audit_log(limit, actor)]}
