"""Administration: console users and the audit log."""

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import Ctx, need
from gateway.api.errors import ApiError
from gateway.auth import ROLES, Auth, AuthError, Principal, UserExists
from gateway.blocking import blocking

__all__ = ["UserBody", "router"]

router = APIRouter(tags=["admin"])
Admin = Annotated[Principal, Depends(need("users.manage"))]


class UserBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(pattern=r"^[A-Za-z0-9_.-]{2,32}$")
    role: Literal[ROLES]  # type: ignore[valid-type]
    password: str = Field(min_length=10, max_length=256)
    display_name: str = Field(default="", max_length=50)


def _audit(auth: Auth, limit: int, actor: str | None) -> list[dict]:
    return [dict(r, detail=json.loads(r["detail"] or "{}"))
            for r in auth.audit_log(limit, actor)]


@router.get("/api/users")
async def users(p: Admin, ctx: Ctx) -> dict:
    return {"users": await blocking(ctx.auth.users)}


@router.post("/api/users", status_code=201)
async def add_user(body: UserBody, p: Admin, ctx: Ctx) -> dict:
    """Create a console user (the admin sets a first password; at least 10 characters)."""
    try:
        await blocking(ctx.auth.add_user, body.username, body.role, body.password,
                       display_name=body.display_name, actor=p.name)
    except UserExists as exc:
        raise ApiError(409, "user_exists", str(exc), user=body.username) from None
    except ValueError as exc:
        raise ApiError(422, "password_short" if "password" in str(exc) else "invalid",
                       str(exc)) from None
    return {"user": body.username, "role": body.role}


@router.post("/api/users/{username}/disable")
async def disable_user(username: str, p: Admin, ctx: Ctx) -> dict:
    try:
        await blocking(ctx.auth.disable_user, username, p.name)
    except AuthError as exc:
        raise ApiError(exc.status, exc.code, str(exc), user=username) from None
    return {"user": username, "disabled": True}


@router.get("/api/audit")
async def audit(p: Annotated[Principal, Depends(need("audit.read"))], ctx: Ctx,
                actor: Annotated[str | None, Query(max_length=64)] = None,
                limit: Annotated[int, Query(ge=1, le=5000)] = 200) -> dict:
    """Who did what (logins, alarm actions, config edits, users), newest first."""
    return {"audit": await blocking(_audit, ctx.auth, limit, actor)}
