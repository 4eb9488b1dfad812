"""Device health, the unknown-devices inbox, last readings, faults, test/maintenance modes.

Device health (``HealthBook``) is the event loop's own in-memory state: read on the loop,
never on a worker thread. Faults live in the store (read through ``gateway.blocking``)."""

from typing import Annotated

from fastapi import APIRouter, Depends

from gateway.api.context import ApiContext
from gateway.api.deps import Ctx, need
from gateway.api.errors import ApiError
from gateway.auth import Principal
from gateway.blocking import blocking
from gateway.device_modes import modes_json

__all__ = ["router"]

router = APIRouter(tags=["devices"])
Reader = Annotated[Principal, Depends(need("devices.read"))]


#: open supervision faults that mean the device is not reporting: its state is ``offline``
#: (the devices page never says 在线 beside 长时间未上报)
_SILENT_FAULTS = frozenset({"silent", "offline"})


@router.get("/api/devices")
async def list_devices(p: Reader, ctx: Ctx) -> dict:
    """Health of every configured device (online/offline/degraded, battery, last seen), with
    its configured ``name``. An open device fault of the supervision rules shows too: the
    device's ``fault`` (when health has none of its own) and its state (``offline`` for
    ``silent``/``offline``, else at least ``degraded``), so the page agrees with the faults
    list; ``summary`` counts these states."""
    names = {d.id: d.name for d in ctx.site.devices.devices}
    out: list[dict] = []
    summary: dict[str, int] = {}
    for row in await shown_health(ctx):
        row["name"] = names.get(row["device_id"], "")
        summary[row["state"]] = summary.get(row["state"], 0) + 1
        out.append(row)
    return {"devices": out, "summary": summary}


async def shown_health(ctx: ApiContext) -> list[dict]:
    """Each device's health as staff see it (the devices page, the installer's state
    filter): health's own, with an open supervision fault taken in — ``offline`` for
    ``silent``/``offline``, else at least ``degraded`` — and its ``fault``."""
    open_faults = await blocking(ctx.book.faults, open_only=True)
    fault_of: dict[str, str] = {}
    for f in reversed(open_faults):          # newest first: the newest fault wins
        if f.get("device_id"):
            fault_of[f["device_id"]] = f["fault"]
    rows: list[dict] = []
    for h in list(ctx.devices.devices.values()):
        row = h.to_json()
        fault = fault_of.get(h.device_id)
        if fault is not None:
            row["fault"] = row["fault"] or fault
            if fault in _SILENT_FAULTS:
                row["state"] = "offline"
            elif row["state"] == "online":
                row["state"] = "degraded"
        rows.append(row)
    return rows


@router.get("/api/devices/unknown")
async def unknown_devices(p: Annotated[Principal, Depends(need("devices.write"))],
                          ctx: Ctx) -> dict:
    """Devices seen on the bus that no configuration binds (the installer's inbox)."""
    return {"unknown": sorted(ctx.devices.unknown.values(), key=lambda e: -e["last_seen"])}


@router.get("/api/devices/{device_id}/readings")
async def device_readings(device_id: str, p: Reader, ctx: Ctx) -> dict:
    """The last decoded readings of a device (newest last)."""
    h = ctx.devices.devices.get(device_id)
    if h is None:
        raise ApiError(404, "device_not_found", f"device {device_id!r} not configured",
                       device=device_id)
    return {"device": h.to_json(), "readings": [r.to_json() for r in h.readings()]}


@router.get("/api/faults")
async def faults(p: Reader, ctx: Ctx, include_cleared: bool = False) -> dict:
    """Device faults (silent, offline, low battery, tamper...) kept apart from alarms."""
    return {"faults": await blocking(ctx.book.faults, open_only=not include_cleared)}


@router.get("/api/devices/modes")
async def device_modes(p: Annotated[Principal, Depends(need("alarms.read"))], ctx: Ctx) -> dict:
    """Devices in test or maintenance mode now, with the time each mode ends (the duty
    board's count and tags). Also sent on the live stream as ``event: modes``."""
    return modes_json(ctx.site)
