"""Sessions: login, logout, who am I, and the first admin's setup."""

import math

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import COOKIE, Ctx, LoggedIn
from gateway.api.errors import ApiError
from gateway.auth import PERMISSIONS, AuthError
from gateway.blocking import blocking

__all__ = ["LoginBody", "SetupBody", "router"]

router = APIRouter(tags=["auth"])


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class SetupBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    setup_token: str = Field(min_length=8, max_length=128)
    username: str = Field(pattern=r"^[A-Za-z0-9_.-]{2,32}$")
    password: str = Field(min_length=10, max_length=256)


@router.post("/api/login")
async def login(body: LoginBody, request: Request, response: Response, ctx: Ctx) -> dict:
    client = request.client.host if request.client else "?"
    try:
        token, p = await blocking(ctx.auth.login, body.username, body.password, client)
    except AuthError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict",
                        secure=ctx.secure_cookies, max_age=math.ceil(ctx.auth.max_s))
    return {"user": p.name, "role": p.role, "csrf": p.csrf}


@router.post("/api/logout")
async def logout(request: Request, response: Response, p: LoggedIn, ctx: Ctx) -> dict:
    cookie = request.cookies.get(COOKIE)
    if cookie:
        await blocking(ctx.auth.logout, cookie)
    response.delete_cookie(COOKIE)
    return {"ok": True}


@router.get("/api/me")
async def me(p: LoggedIn, ctx: Ctx) -> dict:
    """Who is logged in, what they may do, and what the console needs to know."""
    esc = ctx.site.rules.escalation if ctx.site.rules is not None else None
    return {"user": p.name, "role": p.role, "csrf": p.csrf,
            "permissions": sorted(k for k in PERMISSIONS if p.can(k)),
            "site": {"id": ctx.site.site.site.id, "name": ctx.site.site.site.name,
                     "language": ctx.site.site.site.language,
                     "timezone": ctx.site.site.site.timezone},
            "escalation": None if esc is None else {
                "min_severity": str(esc.min_severity),
                "tiers": [{"name": t.name, "after_s": t.after, "notify": t.notify}
                          for t in esc.tiers]}}


@router.post("/api/setup")
async def setup(body: SetupBody, ctx: Ctx) -> dict:
    """Create the first admin with the one-time setup token printed at first start."""
    try:
        await blocking(ctx.auth.complete_setup, body.setup_token, body.username, body.password)
    except AuthError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    return {"ok": True, "user": body.username, "role": "admin"}
