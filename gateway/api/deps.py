"""FastAPI dependencies shared by the routers: the context, the principal, permissions.

Every dependency is ``async`` (FastAPI runs a sync one on its thread pool); the blocking part
of authentication (a store query, a session's last-seen write) goes through
``gateway.blocking``.
"""

import functools
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from gateway.api.context import ApiContext
from gateway.api.errors import ApiError
from gateway.auth import Auth, AuthError, Principal
from gateway.blocking import blocking

__all__ = ["COOKIE", "Ctx", "LoggedIn", "authenticate", "get_ctx", "need", "principal"]

COOKIE = "gw_session"


async def get_ctx(request: Request) -> ApiContext:
    """The running gateway's :class:`ApiContext` (``create_app`` puts it on the app)."""
    return request.app.state.ctx


Ctx = Annotated[ApiContext, Depends(get_ctx)]


def authenticate(auth: Auth, authorization: str, cookie: str | None) -> Principal:
    """The principal of a Bearer token (``authorization``) or a session cookie; AuthError if
    none. Blocking (store queries): call it through ``gateway.blocking``."""
    if authorization.lower().startswith("bearer "):
        return auth.from_bearer(authorization[7:].strip())
    if not cookie:
        raise AuthError("not logged in", 401, "not_logged_in")
    return auth.from_cookie(cookie)


async def credentials(request: Request, ctx: ApiContext) -> Principal:
    """The request's principal; AuthError if none (also the live stream's re-check)."""
    authz = request.headers.get("authorization", "")
    cookie = request.cookies.get(COOKIE)
    if not authz.lower().startswith("bearer ") and not cookie:
        raise AuthError("not logged in")      # nothing to look up: no thread needed
    return await blocking(authenticate, ctx.auth, authz, cookie)


async def principal(request: Request, ctx: Ctx) -> Principal:
    """Who calls: 401 without a valid token or session, 403 for a session's change without
    its CSRF token (``X-CSRF-Token``)."""
    try:
        p = await credentials(request, ctx)
    except AuthError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    if p.kind == "session" and request.method not in ("GET", "HEAD", "OPTIONS"):
        if request.headers.get("x-csrf-token") != p.csrf:
            raise ApiError(403, "csrf", "missing or wrong X-CSRF-Token")
    return p


LoggedIn = Annotated[Principal, Depends(principal)]


@functools.cache
def need(permission: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency: the principal, 403 unless it holds ``permission``
    (``gateway.auth.PERMISSIONS``). One function per permission, so FastAPI's per-request
    cache runs it once however many routes' parameters name it."""

    async def dep(p: LoggedIn) -> Principal:
        if not p.can(permission):
            raise ApiError(403, "role_forbidden", f"role {p.role!r} may not {permission}",
                           role=p.role, permission=permission)
        return p

    dep.__name__ = f"need_{permission.replace('.', '_')}"
    return dep
