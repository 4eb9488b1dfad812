"""Commands to devices from the alarm card (linkage, gateway/linkage.py): what the card may send,
and sending it.

The safe actions (关阀 close valve, 鸣笛 sound siren, 断电 cut power) need ``commands.send``;
their inverses (开阀 open, 静音 silence, 通电 restore) ``commands.restore`` as well (403
``restore_forbidden``). The console asks staff to confirm before it calls these. A device in
test or maintenance mode is never actuated: the command is recorded as skipped, with what
would have been sent.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.alarms import AlarmId, Reader
from gateway.api.deps import Ctx, need
from gateway.api.errors import ApiError
from gateway.auth import Principal
from gateway.blocking import blocking
from gateway.kernel.commands import Action
from gateway.linkage import INVERSE_ACTIONS, Linkage, LinkageError

__all__ = ["CommandBody", "router"]

router = APIRouter(tags=["commands"])
Sender = Annotated[Principal, Depends(need("commands.send"))]


class CommandBody(BaseModel):
    """One command to one device of the alarm's household (or grid cell)."""

    model_config = ConfigDict(extra="forbid")
    device_id: str = Field(min_length=1, max_length=80, pattern=r"^\S+$")
    action: Literal[tuple(a.value for a in Action)] = Field(  # type: ignore[valid-type]
        description="close_valve 关阀, open_valve 开阀, siren_on 鸣笛, siren_off 静音, "
                    "switch_off 断电, switch_on 通电")


def _linkage(ctx: Ctx) -> Linkage:
    linkage = ctx.extra.get("linkage")
    if linkage is None:
        raise ApiError(503, "linkage_stopped", "commands to devices are not running here")
    return linkage


@router.get("/api/alarms/{alarm_id}/commands")
async def commands(alarm_id: AlarmId, p: Reader, ctx: Ctx) -> dict:
    """The alarm's commands so far (``commands``, as on the board) and the devices staff
    may command from its card (``devices``: id, name, type, mode, actions)."""
    alarm = await blocking(ctx.book.get, alarm_id)
    return {"commands": alarm["commands"], "devices": _linkage(ctx).commandable(alarm),
            "can_restore": p.can("commands.restore")}


@router.post("/api/alarms/{alarm_id}/commands")
async def send(alarm_id: AlarmId, body: CommandBody, p: Sender, ctx: Ctx) -> dict:
    """Send one command (after the console's confirmation). 403 ``restore_forbidden`` for an
    inverse action without ``commands.restore``; 409 ``not_commandable`` for a device that is
    not the alarm's or cannot do the action. Answers the command as the card shows it; its
    outcome comes on the live stream (the alarm's ``commands``)."""
    action = Action(body.action)
    if action in INVERSE_ACTIONS and not p.can("commands.restore"):
        raise ApiError(403, "restore_forbidden", f"role {p.role!r} may not {action.value}: "
                       f"it needs commands.restore", action=action.value)
    linkage = _linkage(ctx)
    alarm = await blocking(ctx.book.get, alarm_id)
    try:
        return await linkage.request(alarm, body.device_id, action, p.name)
    except LinkageError as exc:
        raise ApiError(503 if exc.code == "linkage_stopped" else 409, exc.code, str(exc),
                       device_id=body.device_id, action=action.value) from None
