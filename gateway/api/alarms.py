"""The duty board: alarms, acknowledge and resolve, resolve reasons, the live stream (SSE)."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from gateway.alarms import CASE_REASONS, RESOLVE_REASONS
from gateway.api.deps import Ctx, credentials, need
from gateway.api.views import decorate
from gateway.auth import AuthError, Principal
from gateway.blocking import blocking
from gateway.call_plans import CALL_OUTCOMES

__all__ = ["AckBody", "CallBody", "ResolveBody", "router"]

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


class CallBody(BaseModel):
    """One call of the alarm's call plan and what came of it (the card's one tap)."""

    model_config = ConfigDict(extra="forbid")
    contact: str = Field(min_length=1, max_length=64, pattern=r"^\S+$", description="the "
                         "call's key in the alarm's plan (response.call_plan[].key): "
                         "resident:0, contact:1, grid_member, on_call:<id>")
    outcome: Literal[CALL_OUTCOMES] = Field(  # type: ignore[valid-type]
        description="connected 接通, no_answer 无人接听, on_site 已到场, notified 已通知")
    note: str = Field(default="", max_length=500)
    request_id: str | None = Field(
        default=None, min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$",
        description="the console's id of this tap: the same id again records nothing more "
                    "(a retry after a lost reply)")

    @field_validator("outcome", mode="before")
    @classmethod
    def _outcome_known(cls, value: Any) -> Any:
        if value not in CALL_OUTCOMES:
            raise PydanticCustomError(
                "literal_error", "outcome must be one of {expected} (接通 / 无人接听 / 已到场 / "
                "已通知)", {"expected": ", ".join(CALL_OUTCOMES)})
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


@router.post("/api/alarms/{alarm_id}/calls")
async def record_call(alarm_id: AlarmId, body: CallBody, p: Actor, ctx: Ctx) -> dict:
    """Record the outcome of one call of the alarm's call plan: in its history (event
    ``call``) and, through the outbox, as an update of its case (kind ``note`` with the
    call). 422 for a contact that is not in the alarm's plan, 409 ``wrong_state`` once the
    alarm is resolved. The same ``request_id`` again answers the alarm and records nothing."""
    try:
        alarm = await ctx.book.record_call(alarm_id, p.name, body.contact, body.outcome,
                                           body.note, body.request_id)
    except ValueError as exc:
        raise HTTPException(422, [{"loc": ["body", "contact"], "msg": str(exc),
                                   "type": "value_error", "code": "value_error",
                                   "params": {}}]) from None
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
