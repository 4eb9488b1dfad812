"""The grid case system's status callbacks (authenticated by their HMAC signature)."""

from fastapi import APIRouter, Request

from gateway.api.deps import Ctx
from gateway.api.errors import ApiError

__all__ = ["router"]

router = APIRouter(tags=["case system"])


@router.post("/api/case-callback")
async def case_callback(request: Request, ctx: Ctx) -> dict:
    """Status changes of cases, POSTed (signed) by the grid case system."""
    if ctx.case_callback is None:
        raise ApiError(404, "no_case_system", "no case system configured")
    body = await request.body()
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return await ctx.case_callback(request.method, target, request.headers, body)
