"""The duty board: alarms, acknowledge and resolve, resolve reasons, the live stream (SSE)."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from gateway.alarms import CASE_REASONS, RESOLVE_REASONS
from gateway.api.deps import Ctx, credentials, need
from gateway.api.views import decorate
from gateway.auth import AuthError, Principal
from gateway.blocking import blocking

__all__ = ["AckBody", "ResolveBody", "router"]

router = APIRouter(tags=["alarms"])
AlarmId = Annotated[int, Path(ge=1, le=2**63 - 1, description="alarm id")]
Reader = Annotated[Principal, Depends(need("alarms.read"))]
Actor = Annotated[Principal, Depends(need("alarms.act"))]


class AckBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(default="", max_length=1000)


def _reason_required(schema: dict) -> None:
    # ``reason`` has no default: required in the schema, a clear error when missing
    schema["properties"]["reason"].pop("default", None)
    schema["required"] = ["reason", *schema.get("required", [])]


class ResolveBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_reason_required)
    reason: Literal[tuple(RESOLVE_REASONS)] = Field(  # type: ignore[valid-type]
        default=None, validate_default=True,
        description="why the alarm is resolved; staff choose it, there is no default")
    note: str = Field(default="", max_length=1000)

    @field_validator("reason", mode="before")
    @classmethod
    def _reason_given(cls, value: Any) -> Any:
        if value is None or value == "":
            raise PydanticCustomError(
                "reason_required", "a reason is required to resolve an alarm (there is no "
                "default): one of {choices}", {"choices": ", ".join(RESOLVE_REASONS)})
        return value


@router.get("/api/alarms")
async def list_alarms(p: Reader, ctx: Ctx,
                      state: Literal["open", "raised", "acknowledged", "resolved"] | None = None,
                      limit: Annotated[int, Query(ge=1, le=5000)] = 500) -> dict:
    """Alarms, open first, then by severity (critical first) and newest first."""
    rows = await blocking(ctx.book.list, state, limit)
    return {"alarms": [decorate(ctx, a, p) for a in rows]}


@router.get("/api/alarms/{alarm_id}")
async def get_alarm(alarm_id: AlarmId, p: Reader, ctx: Ctx) -> dict:
    return decorate(ctx, await blocking(ctx.book.get, alarm_id, with_events=True), p)


@router.post("/api/alarms/{alarm_id}/ack")
async def ack(alarm_id: AlarmId, p: Actor, ctx: Ctx, body: AckBody | None = None) -> dict:
    alarm = await ctx.book.acknowledge(alarm_id, p.name, body.note if body else "")
    return decorate(ctx, alarm, p)


@router.post("/api/alarms/{alarm_id}/resolve")
async def resolve(alarm_id: AlarmId, body: ResolveBody, p: Actor, ctx: Ctx) -> dict:
    """Resolve with a reason staff chose (422 without one). A critical alarm must be
    acknowledged first: 409 ``{"code": "ack_required"}`` otherwise."""
    alarm = await ctx.book.resolve(alarm_id, p.name, body.reason, body.note,
                                   require_ack=True)
    return decorate(ctx, alarm, p)


@router.get("/api/resolve-reasons")
async def reasons(p: Reader) -> dict:
    return {"reasons": RESOLVE_REASONS, "labels": {**RESOLVE_REASONS, **CASE_REASONS}}


@router.get("/api/stream")
async def stream(request: Request, p: Reader, ctx: Ctx) -> StreamingResponse:
    """Server-Sent Events: ``event: alarm`` with the changed alarm as JSON data.

    While it is open the stream re-checks its session every ``stream_check_s`` (15 s),
    which keeps an open board's session from idling out; when the session has ended
    (absolute limit, logout, user disabled) it sends ``event: session`` with
    ``{"state": "ended", "detail": ...}`` and closes."""
    q = ctx.broadcaster.subscribe()
    check_s = ctx.auth.stream_check_s

    async def session_ended() -> str | None:
        try:
            await credentials(request, ctx)
        except AuthError as exc:
            return str(exc)
        return None

    async def events() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        due = loop.time() + check_s
        try:
            yield b"retry: 2000\n\n"
            while True:
                try:
                    async with asyncio.timeout(max(0.0, due - loop.time())):
                        ev = await q.get()
                except TimeoutError:
                    ev = False
                if loop.time() >= due:
                    due = loop.time() + check_s
                    ended = await session_ended()
                    if ended is not None:
                        data = json.dumps({"state": "ended", "detail": ended})
                        yield f"event: session\ndata: {data}\n\n".encode()
                        return
                if ev is False:
                    yield b": keepalive\n\n"
                    continue
                if ev is None:
                    return
                alarm = ev.get("alarm")
                if alarm is not None:
                    ev = dict(ev, alarm=decorate(ctx, alarm, p))
                data = json.dumps(ev, ensure_ascii=False)
                yield f"event: {ev['type']}\ndata: {data}\n\n".encode()
        finally:
            ctx.broadcaster.unsubscribe(q)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store",
                                      "X-Accel-Buffering": "no"})
