"""Help requests (求助 / 生活服务): the list, a phone call entered by staff, assign, done and
the resident's feedback (``gateway.help_requests``)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import Ctx, need
from gateway.api.errors import ApiError
from gateway.auth import Principal
from gateway.blocking import blocking
from gateway.help_requests import FEEDBACK, HelpDesk, HelpError
from gateway.store import help as help_rows

__all__ = ["router"]

router = APIRouter()
Reader = Annotated[Principal, Depends(need("help.read"))]
Actor = Annotated[Principal, Depends(need("help.act"))]
HelpId = Annotated[int, Path(ge=1, le=2**62)]
ListState = Literal["open", "received", "assigned", "done", "closed"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewHelp(_Body):
    category: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    household_id: str = Field(min_length=1, max_length=64)
    note: str = Field(default="", max_length=500)
    channel: Literal["phone", "console"] = "phone"
    #: the console's id of this submission: a retried POST records nothing more
    request_id: str | None = Field(default=None, min_length=8, max_length=64,
                                   pattern=r"^[A-Za-z0-9_-]+$")


class AssignBody(_Body):
    to: str = Field(min_length=1, max_length=50)


class DoneBody(_Body):
    note: str = Field(default="", max_length=500)


class FeedbackBody(_Body):
    rating: Literal["satisfied", "neutral", "unsatisfied"]
    note: str = Field(default="", max_length=500)


def desk_of(ctx: Ctx) -> HelpDesk:
    """The service's help desk, or one over the API's store and site (tests, tools)."""
    desk = ctx.extra.get("help")
    if desk is None:
        desk = ctx.extra["help"] = HelpDesk(ctx.book.store, lambda: ctx.site,
                                           callback_url=ctx.book.callback_url)
    return desk


def _error(exc: HelpError) -> ApiError:
    return ApiError(exc.status, exc.code, str(exc))


def _categories(ctx: Ctx) -> list[dict]:
    return [{"id": k, "zh": v.zh, "en": v.en}
            for k, v in ctx.site.site.help_categories.items()]


@router.get("/api/help-requests", tags=["help"])
async def list_help(p: Reader, ctx: Ctx, state: ListState | None = None,
                    grid_cell: Annotated[str | None, Field(max_length=64)] = None) -> dict:
    """Help requests, newest first (at most 200), with the site's categories. Addresses and
    notes masked for roles without ``contacts.read``."""
    desk = desk_of(ctx)
    found = await blocking(help_rows.listing, ctx.book.store, state=state, grid_cell=grid_cell)
    personal = p.can("contacts.read")
    return {"requests": [desk.view(r, personal=personal) for r in found],
            "categories": _categories(ctx), "feedback": list(FEEDBACK)}


@router.post("/api/help-requests", tags=["help"], status_code=201)
async def create_help(body: NewHelp, p: Actor, ctx: Ctx) -> dict:
    """A help request staff enter for a phone call (channel ``phone``) or otherwise
    (``console``); queued at once as a service case for the case system."""
    try:
        help_id = await desk_of(ctx).create(category=body.category,
                                            household_id=body.household_id, note=body.note,
                                            actor=p.name, channel=body.channel,
                                            request_id=body.request_id)
    except HelpError as exc:
        raise _error(exc) from None
    return await _one(ctx, p, help_id)


async def _one(ctx: Ctx, p: Principal, help_id: int) -> dict:
    row = await blocking(help_rows.get, ctx.book.store, help_id)
    if row is None:
        raise ApiError(404, "help_not_found", f"no help request {help_id}")
    events = await blocking(help_rows.events_of, ctx.book.store, help_id)
    return {**desk_of(ctx).view(row, personal=p.can("contacts.read")), "events": events}


@router.get("/api/help-requests/{help_id}", tags=["help"])
async def get_help(help_id: HelpId, p: Reader, ctx: Ctx) -> dict:
    """One request with its history."""
    return await _one(ctx, p, help_id)


@router.post("/api/help-requests/{help_id}/assign", tags=["help"])
async def assign_help(help_id: HelpId, body: AssignBody, p: Actor, ctx: Ctx) -> dict:
    """received|assigned -> assigned to ``to`` (a note to the case)."""
    try:
        await desk_of(ctx).assign(help_id, body.to, p.name)
    except HelpError as exc:
        raise _error(exc) from None
    return await _one(ctx, p, help_id)


@router.post("/api/help-requests/{help_id}/done", tags=["help"])
async def done_help(help_id: HelpId, body: DoneBody, p: Actor, ctx: Ctx) -> dict:
    """received|assigned -> done (the case resolved, reason handled)."""
    try:
        await desk_of(ctx).done(help_id, p.name, body.note)
    except HelpError as exc:
        raise _error(exc) from None
    return await _one(ctx, p, help_id)


@router.post("/api/help-requests/{help_id}/feedback", tags=["help"])
async def feedback_help(help_id: HelpId, body: FeedbackBody, p: Actor, ctx: Ctx) -> dict:
    """done -> closed with the resident's feedback (a note to the case)."""
    try:
        await desk_of(ctx).feedback(help_id, body.rating, p.name, body.note)
    except HelpError as exc:
        raise _error(exc) from None
    return await _one(ctx, p, help_id)
