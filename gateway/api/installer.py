"""Installer endpoints: device configuration (validated, atomic, applied without a restart),
test and maintenance mode (each with its end: gateway.device_modes), test records, the
commissioning checklist.

Every edit goes through :class:`gateway.installer.SiteEditor` (its file I/O runs on
``gateway.blocking``'s threads) and then the service's reload hook (``ApiContext.reload``,
on the event loop: it swaps the loop's own state); a rejected edit answers 422 with
``detail`` as a list of ``{"loc": ["body", field], "msg": ...}`` (the same shape as
FastAPI's own validation errors), and leaves the files untouched.
"""

import json
import logging
import re
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from drivers import zigbee2mqtt as z2m
from gateway.alarms import AlarmBook
from gateway.api.context import ApiContext
from gateway.api.deps import Ctx, need
from gateway.api.devices import shown_health
from gateway.api.errors import ApiError
from gateway.auth import Principal
from gateway.blocking import blocking
from gateway.device_modes import (
    CHOICES, DEFAULT_CHOICE, MAX_S, effective_mode, mode_until, parse_mode_duration,
)
from gateway.installer import InstallerError, checklist
from gateway.model import DEVICE_TYPES, utc
from gateway.store.audit import last_entry

__all__ = ["DeviceBody", "ModeBody", "ZigbeeRegisterBody", "router"]

log = logging.getLogger(__name__)
router = APIRouter(tags=["installer"])
ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
Mode = Literal["normal", "test", "maintenance"]
DURATION_DOC = ("how long a test or maintenance mode lasts: '30m', '2h', '90s' or seconds; "
                "1 s to 24 h, default 2 h; it then ends by itself (ignored for normal)")
Writer = Annotated[Principal, Depends(need("devices.write"))]
Reader = Annotated[Principal, Depends(need("devices.read"))]


def _duration(v):
    return None if v is None or v == "" else parse_mode_duration(v)


def _seconds(duration: str | float | None) -> float | None:
    """A body's validated ``duration``: the validator (``_duration``) has made it seconds or
    None; the string form is declared for the schema only."""
    return _duration(duration) if isinstance(duration, str) else duration


class DeviceBody(BaseModel):
    """A device as the installer form sends it (``devices.yaml`` entry)."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=ID)
    type: Literal[DEVICE_TYPES]  # type: ignore[valid-type]
    household: str | None = Field(default=None, pattern=ID)
    grid_cell: str | None = Field(default=None, max_length=32)
    name: str = Field(default="", max_length=100)
    profile: str | None = Field(default=None, max_length=64)
    topic: str | None = Field(default=None, min_length=1, max_length=200,
                              description="MQTT topic; default devices/<id>")
    zigbee2mqtt: str | None = Field(default=None, min_length=1, max_length=100,
                                    description="Zigbee2MQTT friendly name (instead of topic)")
    mode: Mode = "normal"
    duration: str | float | None = Field(default=None, description=DURATION_DOC)

    @field_validator("duration", mode="before")
    @classmethod
    def _seconds(cls, v):
        return _duration(v)

    def to_entry(self, until=None) -> dict:
        mqtt = ({"zigbee2mqtt": self.zigbee2mqtt} if self.zigbee2mqtt
                else {"topic": self.topic or f"devices/{self.id}"})
        normal = self.mode == "normal"
        return {"id": self.id, "type": self.type, "household": self.household,
                "grid_cell": self.grid_cell, "name": self.name, "profile": self.profile,
                "mqtt": mqtt, "mode": None if normal else self.mode,
                "mode_until": None if normal or until is None else until.isoformat()}


class ModeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Mode
    duration: str | float | None = Field(default=None, description=DURATION_DOC)

    @field_validator("duration", mode="before")
    @classmethod
    def _seconds(cls, v):
        return _duration(v)


def _device_json(d) -> dict:
    mode = effective_mode(d)
    return {"id": d.id, "type": d.type, "household": d.household, "grid_cell": d.grid_cell,
            "name": d.name, "profile": d.profile, "topic": d.topic,
            "zigbee2mqtt": d.mqtt.zigbee2mqtt if d.mqtt else None, "mode": mode,
            "mode_until": d.mode_until.isoformat() if mode != "normal" and d.mode_until
            else None}


def _problem(exc: InstallerError) -> HTTPException:
    return HTTPException(exc.status, [{"loc": ["body", e["field"]], "msg": e["message"],
                                       "type": "config"} for e in exc.errors])


def _editor(ctx: ApiContext):
    if ctx.editor is None:
        raise ApiError(503, "editing_unavailable",
                       "configuration editing is not available on this gateway")
    return ctx.editor


def _take_effect(ctx: ApiContext, site) -> None:
    """An edited site takes effect (on the loop: the reload swaps the loop's state)."""
    change = ctx.editor.change_of(site) if ctx.editor is not None else None
    if ctx.reload is not None:
        if change is not None:        # an edit of a few devices: applied as such
            ctx.reload(site, change)
        else:
            ctx.reload(site)
    else:
        ctx.site = site
    if ctx.devices is not None:       # bound now: out of the unknown-devices inbox
        for d in site.devices.devices:
            if change is None or d.id in change.touched:
                ctx.devices.unknown.pop(d.topic, None)


async def _apply(ctx: ApiContext, site, actor: str, action: str, target: str,
                 **detail) -> None:
    """An edited site takes effect, and the edit is audited."""
    _take_effect(ctx, site)
    await ctx.book.store.audit(actor, action, target, **detail)


def _find(ctx: ApiContext, device_id: str):
    d = next((d for d in ctx.site.devices.devices if d.id == device_id), None)
    if d is None:
        raise ApiError(404, "device_not_found", f"device {device_id!r} not configured",
                       device=device_id)
    return d


def _until_for(ctx: ApiContext, mode: str, seconds: float | None, current=None):
    """The end of a test/maintenance mode being set: ``seconds`` from now (default 2 h);
    an edit that keeps the device's current mode and names no duration keeps its end."""
    if mode == "normal":
        return None
    if (seconds is None and current is not None and effective_mode(current) == mode
            and current.mode_until is not None):
        return current.mode_until
    return mode_until(ctx.site, seconds)


def _mode_detail(mode: str, until) -> dict:
    return {"mode": mode} if until is None else {
        "mode": mode, "until": until.isoformat(),
        "duration_s": max(0, round((until - utc()).total_seconds()))}


def _options(site) -> dict:
    """What the device form offers (blocking: reads the profiles' files)."""
    from drivers.profiles import load_profiles

    profiles = load_profiles(site.directory / "profiles")
    return {"device_types": list(DEVICE_TYPES),
            "modes": ["normal", "test", "maintenance"],
            "mode_durations": list(CHOICES), "mode_duration_default": DEFAULT_CHOICE,
            "mode_duration_max_s": MAX_S,
            "households": [{"id": h.id, "address": h.address, "grid_cell": h.grid_cell}
                           for h in site.site.households],
            "grid_cells": [{"code": c.code, "name": c.name}
                           for c in site.site.grid_cells],
            "profiles": sorted(({"id": pid, "device_type": getattr(pr, "device_type", None),
                                 "description": getattr(pr, "description", "")}
                                for pid, pr in profiles.by_id.items()),
                               key=lambda x: x["id"])}


def _tests_and_sign_off(book: AlarmBook, device_ids: list[str],
                        household_id: str) -> tuple[dict[str, int], dict | None]:
    """Tests recorded per device and the last sign-off (blocking: store queries)."""
    tests = {dev: len(book.device_tests(dev, limit=1)) for dev in device_ids}
    row = last_entry(book.store, "household.commissioned", household_id)
    return tests, dict(row) if row else None


async def _household_checklist(ctx: ApiContext, household_id: str) -> dict:
    hh = ctx.site.household(household_id)
    if hh is None:
        raise ApiError(404, "household_not_found", f"household {household_id!r} not found",
                       household=household_id)
    ids = [d.id for d in ctx.site.devices.devices if d.household == household_id]
    tests, signed = await blocking(_tests_and_sign_off, ctx.book, ids, household_id)
    # device health: the loop's state, read on the loop
    return checklist(ctx.site, household_id, ctx.devices, tests, signed)


@router.get("/api/installer/options")
async def options(p: Writer, ctx: Ctx) -> dict:
    """What the device form offers: types, households, grid cells, profiles."""
    return await blocking(_options, ctx.site)


MODES_FILTER = ("normal", "test", "maintenance")
StateFilter = Literal["normal", "test", "maintenance", "online", "degraded", "offline",
                      "unknown"]


def _matches(d, q: str, address: str) -> bool:
    """Search: the text in the id, name, household, topic or the household's address."""
    return any(q in (x or "").casefold() for x in (d.id, d.name, d.household, d.topic,
                                                   d.grid_cell, address))


@router.get("/api/config/devices")
async def config_devices(
        p: Writer, ctx: Ctx,
        q: Annotated[str | None, Query(max_length=100, description="search id, name, "
                                       "household, address, topic, grid cell")] = None,
        household: Annotated[str | None, Query(max_length=64)] = None,
        type: Annotated[str | None, Query(max_length=64)] = None,  # noqa: A002
        state: Annotated[StateFilter | None, Query(description="a mode (normal, test, "
                                                   "maintenance) or a health state")] = None,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int | None, Query(ge=1, le=500)] = None) -> dict:
    """The configured devices as the installer edits them: all of them, or the page
    ``offset``..``offset+limit`` of those matching the search ``q`` and the filters, with
    ``total`` (how many match) for the pager."""
    site = ctx.site
    devices = site.devices.devices
    if household:
        devices = [d for d in devices if d.household == household]
    if type:
        devices = [d for d in devices if d.type == type]
    if state in MODES_FILTER:
        now = utc()
        devices = [d for d in devices if effective_mode(d, now) == state]
    elif state is not None:      # as the devices page shows it (open supervision faults too)
        shown = ({r["device_id"]: r["state"] for r in await shown_health(ctx)}
                 if ctx.devices is not None else {})
        devices = [d for d in devices if shown.get(d.id, "unknown") == state]
    if q and q.strip():
        needle = q.strip().casefold()
        devices = [d for d in devices if _matches(
            d, needle, (hh.address if (hh := site.household(d.household)) else ""))]
    total = len(devices)
    page = devices[offset:offset + limit] if limit is not None else devices[offset:]
    return {"devices": [_device_json(d) for d in page], "total": total, "offset": offset,
            "limit": limit}


@router.post("/api/config/devices", status_code=201)
async def create_device(body: DeviceBody, p: Writer, ctx: Ctx) -> dict:
    """Add a device (e.g. from the unknown-devices inbox); applied without a restart."""
    until = _until_for(ctx, body.mode, _seconds(body.duration))
    try:
        site = await _editor(ctx).upsert_device(body.to_entry(until), create=True,
                                                actor=p.name)
    except InstallerError as exc:
        raise _problem(exc) from None
    await _apply(ctx, site, p.name, "device.create", body.id, type=body.type,
                 household=body.household, **_mode_detail(body.mode, until))
    return {"device": _device_json(_find(ctx, body.id))}


@router.put("/api/config/devices/{device_id}")
async def edit_device(device_id: str, body: DeviceBody, p: Writer, ctx: Ctx) -> dict:
    """Replace a device's configuration (its id stays); applied without a restart."""
    if body.id != device_id:
        raise HTTPException(422, [{"loc": ["body", "id"], "type": "config", "code": "id_fixed",
                                   "params": {},
                                   "msg": "the id cannot be changed; remove and add"}])
    current = next((d for d in ctx.site.devices.devices if d.id == device_id), None)
    until = _until_for(ctx, body.mode, _seconds(body.duration), current)
    try:
        site = await _editor(ctx).upsert_device(body.to_entry(until), create=False,
                                                actor=p.name)
    except InstallerError as exc:
        raise _problem(exc) from None
    await _apply(ctx, site, p.name, "device.edit", device_id, household=body.household,
                 **_mode_detail(body.mode, until))
    return {"device": _device_json(_find(ctx, device_id))}


@router.delete("/api/config/devices/{device_id}")
async def remove_device(device_id: str, p: Writer, ctx: Ctx) -> dict:
    try:
        site = await _editor(ctx).remove_device(device_id, actor=p.name)
    except InstallerError as exc:
        raise _problem(exc) from None
    await _apply(ctx, site, p.name, "device.remove", device_id)
    return {"removed": device_id}


@router.get("/api/config/versions")
async def versions(p: Writer, ctx: Ctx) -> dict:
    """Previous versions of devices.yaml kept by the editor (newest first)."""
    return {"versions": [{"name": v.name, "saved_at": v.saved_at, "size": v.size}
                         for v in await blocking(_editor(ctx).versions)]}


@router.put("/api/devices/{device_id}/mode")
async def set_mode(device_id: str, body: ModeBody, p: Writer, ctx: Ctx) -> dict:
    """Test or maintenance mode for ``duration`` (default 2 h, at most 24 h): triggers
    are recorded as tests, never alarms, until the mode ends by itself or is set back
    to normal (kept in devices.yaml as ``mode`` and ``mode_until``)."""
    until = _until_for(ctx, body.mode, _seconds(body.duration))
    try:
        site = await _editor(ctx).set_mode(device_id, body.mode, actor=p.name, until=until)
    except InstallerError as exc:
        raise _problem(exc) from None
    await _apply(ctx, site, p.name, "device.mode", device_id,
                 **_mode_detail(body.mode, until))
    return {"device": _device_json(_find(ctx, device_id))}


@router.get("/api/devices/{device_id}/tests")
async def device_tests(device_id: str, p: Reader, ctx: Ctx) -> dict:
    """Test presses recorded for a device (newest first)."""
    _find(ctx, device_id)
    return {"tests": await blocking(ctx.book.device_tests, device_id)}


@router.get("/api/households/{household_id}/checklist")
async def get_checklist(household_id: str, p: Reader, ctx: Ctx) -> dict:
    """The commissioning checklist of a household (computed live)."""
    return await _household_checklist(ctx, household_id)


@router.post("/api/households/{household_id}/commissioned")
async def sign_off(household_id: str, p: Writer, ctx: Ctx) -> dict:
    """Record that the household is commissioned; 409 while an item is open."""
    result = await _household_checklist(ctx, household_id)
    if not result["complete"]:
        open_items = [i["id"] for i in result["items"] if not i["ok"]]
        raise ApiError(409, "checklist_incomplete",
                       f"checklist incomplete: {', '.join(open_items)}", items=open_items)
    await ctx.book.store.audit(p.name, "household.commissioned", household_id,
                               items=json.dumps([i["id"] for i in result["items"]]))
    return await _household_checklist(ctx, household_id)


# -- zero-config: the Zigbee network from bridge/devices --------------------------------------

class ZigbeeDeviceBody(BaseModel):
    """One Zigbee device to register: its Zigbee2MQTT friendly name, the proposed (or
    chosen) type and profile, where it is, and a name staff read; ``id`` default:
    ``drivers.zigbee2mqtt.suggest_id``."""

    model_config = ConfigDict(extra="forbid")
    zigbee2mqtt: str = Field(min_length=1, max_length=100)
    type: Literal[DEVICE_TYPES]  # type: ignore[valid-type]
    profile: str | None = Field(default=None, max_length=64)
    household: str | None = Field(default=None, pattern=ID)
    grid_cell: str | None = Field(default=None, max_length=32)
    name: str = Field(default="", max_length=100)
    id: str | None = Field(default=None, pattern=ID)


class ZigbeeRegisterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    devices: list[ZigbeeDeviceBody] = Field(min_length=1, max_length=1000)


def _zigbee_inbox(ctx: ApiContext) -> list[dict]:
    """The inbox's devices from Zigbee2MQTT's bridge/devices (read on the loop)."""
    if ctx.devices is None:
        return []
    return [e for e in ctx.devices.unknown.values() if isinstance(e.get("zigbee"), dict)]


def _proposals(site, entries: list[dict]) -> list[dict]:
    """Each inbox entry with what zero-config proposes (blocking: reads the profiles)."""
    from drivers.profiles import load_profiles

    profiles = load_profiles(site.directory / "profiles")
    out = []
    for e in entries:
        z = e["zigbee"]
        out.append({"topic": e["id"], "friendly_name": z.get("friendly_name"),
                    "ieee_address": z.get("ieee_address"), "model": z.get("model"),
                    "vendor": z.get("vendor"), "description": z.get("description"),
                    "network_role": z.get("network_role"), "power_source": z.get("power_source"),
                    "last_seen": e.get("last_seen"),
                    "proposal": z2m.propose(z, profiles).to_json()})
    return sorted(out, key=lambda x: (x["proposal"]["device_type"] is None,
                                      x["proposal"]["device_type"] or "",
                                      x["friendly_name"] or ""))


@router.get("/api/installer/zigbee")
async def zigbee_network(p: Writer, ctx: Ctx) -> dict:
    """The unregistered devices of the Zigbee network (Zigbee2MQTT's bridge/devices), each
    with the device type and profile proposed from its exposes, what the profile does not
    read, or why nothing is proposed."""
    return {"devices": await blocking(_proposals, ctx.site, _zigbee_inbox(ctx))}


def _bulk_problem(exc: InstallerError) -> HTTPException:
    detail = []
    for e in exc.errors:
        m = re.match(r"^devices\[(\d+)\]\.(.+)$", e["field"])
        loc = ["body", "devices", int(m[1]), m[2]] if m else ["body", e["field"]]
        detail.append({"loc": loc, "msg": e["message"], "type": "config"})
    return HTTPException(exc.status, detail)


@router.post("/api/installer/zigbee/register", status_code=201)
async def zigbee_register(body: ZigbeeRegisterBody, p: Writer, ctx: Ctx) -> dict:
    """Register Zigbee devices in one edit (one device, or a whole network from one page):
    validated like the device form (all or none), applied without a restart, each audited
    as ``device.create``. Ids left out are made by ``suggest_id``."""
    bound = {d.mqtt.zigbee2mqtt: d.id for d in ctx.site.devices.devices
             if d.mqtt is not None and d.mqtt.zigbee2mqtt}
    ieee = {e["zigbee"].get("friendly_name"): str(e["zigbee"].get("ieee_address") or "")
            for e in _zigbee_inbox(ctx)}
    taken = {d.id for d in ctx.site.devices.devices} | {d.id for d in body.devices if d.id}
    problems, entries, names = [], [], set()
    for i, d in enumerate(body.devices):
        if d.zigbee2mqtt in bound or d.zigbee2mqtt in names:
            problems.append({"loc": ["body", "devices", i, "zigbee2mqtt"], "type": "config",
                             "msg": f"{d.zigbee2mqtt!r} is already registered"
                             + (f" as {bound[d.zigbee2mqtt]!r}" if d.zigbee2mqtt in bound
                                else " in this request")})
        names.add(d.zigbee2mqtt)
        device_id = d.id or z2m.suggest_id(d.type, d.household, ieee.get(d.zigbee2mqtt, ""),
                                           taken)
        taken.add(device_id)
        entries.append({"id": device_id, "type": d.type, "household": d.household,
                        "grid_cell": d.grid_cell, "name": d.name, "profile": d.profile,
                        "mqtt": {"zigbee2mqtt": d.zigbee2mqtt}})
    if problems:
        raise HTTPException(409, problems)
    try:
        site = await _editor(ctx).add_devices(entries, actor=p.name)
    except InstallerError as exc:
        raise _bulk_problem(exc) from None
    _take_effect(ctx, site)
    for e in entries:
        await ctx.book.store.audit(p.name, "device.create", e["id"], type=e["type"],
                                   household=e["household"], zigbee2mqtt=e["mqtt"]["zigbee2mqtt"])
    return {"registered": [_device_json(_find(ctx, e["id"])) for e in entries]}
