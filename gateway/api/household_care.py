"""Household care states (外出 / 住院 / 有人陪护): the states in force, set one, end one
(``gateway.household_care``); today's daily check-ins (报平安, ``gateway.checkins``)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from gateway.api.deps import Ctx, need
from gateway.api.errors import ApiError
from gateway.auth import Principal
from gateway.blocking import blocking
from gateway.checkins import checkins_json
from gateway.household_care import CareDesk, CareError
from gateway.model import utc

__all__ = ["care_desk", "router"]

router = APIRouter()
Reader = Annotated[Principal, Depends(need("households.read"))]
Actor = Annotated[Principal, Depends(need("alarms.act"))]


class CareBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: Literal["away", "hospital", "carer"]
    #: default: now
    start: AwareDatetime | None = None
    #: when the resident is expected back (away, hospital) or the carer to leave; none: open
    expected_end: AwareDatetime | None = None
    note: str = Field(default="", max_length=200)


def care_desk(ctx: Ctx) -> CareDesk:
    """The service's desk, or one over the API's store and site (tests, tools)."""
    desk = ctx.extra.get("care")
    if desk is None:
        desk = ctx.extra["care"] = CareDesk(ctx.book.store, lambda: ctx.site)
    return desk


def _counts(states: list[dict]) -> dict[str, int]:
    return {s: sum(1 for r in states if r["state"] == s) for s in ("away", "hospital", "carer")}


@router.get("/api/care", tags=["care"])
async def list_care(p: Reader, ctx: Ctx) -> dict:
    """Households in a care state, with counts per state (the board header)."""
    states = await blocking(care_desk(ctx).states)
    if not p.can("contacts.read"):
        states = [{**s, "note": ""} for s in states]
    return {"care": states, "counts": _counts(states)}


@router.put("/api/households/{household_id}/care", tags=["care"])
async def set_care(household_id: str, body: CareBody, p: Actor, ctx: Ctx) -> dict:
    """Set the household's care state (replacing the one in force); audited ``care.set``."""
    try:
        return await care_desk(ctx).set(household_id, body.state, actor=p.name,
                                        start=body.start, expected_end=body.expected_end,
                                        note=body.note)
    except CareError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None


@router.delete("/api/households/{household_id}/care", tags=["care"])
async def end_care(household_id: str, p: Actor, ctx: Ctx) -> dict:
    """End the household's care state (the resident is back); audited ``care.end``."""
    if not await care_desk(ctx).end(household_id, actor=p.name):
        raise ApiError(404, "not_found", f"household {household_id!r} has no care state")
    return {"household_id": household_id, "ended": True}


@router.get("/api/checkins", tags=["care"])
async def list_checkins(p: Reader, ctx: Ctx) -> dict:
    """Today's check-ins (site-local day) of the households that opted in: checked in (at),
    due (by), missed (its follow-up alarm) or excused (away, in hospital). Empty without a
    running rule engine."""
    engine = care_desk(ctx).engine()
    if engine is None:
        return {"date": None, "checkins": []}
    # on the loop: the engine is only touched there (its state changes with each reading)
    return checkins_json(engine, ctx.site, ctx.book.store, utc())
