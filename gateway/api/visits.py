"""Visits (探访): record one, the month's coverage per grid cell and its CSV
(``gateway.visits``)."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from gateway.api.deps import Ctx, need
from gateway.api.errors import ApiError
from gateway.auth import Principal
from gateway.blocking import blocking
from gateway.catalogue import lang_of, text
from gateway.visits import VisitError, coverage, coverage_csv, record_visit

__all__ = ["router"]

router = APIRouter()
Reader = Annotated[Principal, Depends(need("visits.read"))]
Writer = Annotated[Principal, Depends(need("visits.write"))]
MonthQ = Annotated[str | None, Query(pattern=r"^[0-9]{4}-[0-9]{2}$")]


class NewVisit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    household_id: str = Field(min_length=1, max_length=64)
    #: who visited (a grid member, a volunteer); default: the user recording it
    visitor: str = Field(default="", max_length=50)
    note: str = Field(default="", max_length=500)
    #: when (default: now); with its offset
    visited_at: AwareDatetime | None = None
    request_id: str | None = Field(default=None, min_length=8, max_length=64,
                                   pattern=r"^[A-Za-z0-9_-]+$")


@router.post("/api/visits", tags=["visits"], status_code=201)
async def new_visit(body: NewVisit, p: Writer, ctx: Ctx) -> dict:
    """Record a visit of a household (a retried POST with the same ``request_id``: one)."""
    try:
        vid = await record_visit(ctx.book.store, ctx.site, household_id=body.household_id,
                                 visitor=body.visitor.strip() or p.name, actor=p.name,
                                 note=body.note, visited_at=body.visited_at,
                                 request_id=body.request_id)
    except VisitError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    return {"id": vid}


@router.get("/api/visits/coverage", tags=["visits"])
async def visit_coverage(p: Reader, ctx: Ctx, month: MonthQ = None) -> dict:
    """Special-difficulty households per grid cell: visited / due / overdue in the calendar
    month (site local time; default the current one) and the reminder of the month's last
    days. Addresses masked for roles without ``contacts.read``."""
    try:
        return await blocking(lambda: coverage(ctx.book.store, ctx.site, month,
                                               personal=p.can("contacts.read")))
    except VisitError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None


@router.get("/api/visits.csv", tags=["visits"], response_class=Response,
            responses={200: {"content": {"text/csv": {}}}})
async def visits_csv(p: Reader, ctx: Ctx, month: MonthQ = None,
                     lang: Literal["zh-CN", "zh", "en"] = "zh-CN") -> Response:
    """The month's coverage as CSV (UTF-8 with BOM): headers and statuses in the console's
    language, times in the site's local time (the zone in the header)."""
    key = lang_of(lang)
    try:
        body, label = await blocking(coverage_csv, ctx.book.store, ctx.site, month, key)
    except VisitError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    name = f"{text(key, 'vcsv_filename')}-{label}.csv"
    return Response(body, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f"attachment; filename=\"visits-{label}.csv\"; "
                               f"filename*=UTF-8''{quote(name)}"})
