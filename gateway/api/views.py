"""How the API shows alarms and households (shared by the routers)."""

from typing import overload

from edge_config.schema import Household
from gateway.api.context import ApiContext
from gateway.auth import Principal
from gateway.call_plans import guidance_for, plan_for, priority_for

__all__ = ["decorate", "device_name", "grid_json", "household_json", "response_json"]


def _mask_phone(p: str) -> str:
    digits = p.replace(" ", "")
    return digits[:3] + "****" + digits[-4:] if len(digits) >= 8 else "****"


@overload
def household_json(hh: Household, p: Principal) -> dict: ...
@overload
def household_json(hh: None, p: Principal) -> None: ...
def household_json(hh: Household | None, p: Principal) -> dict | None:
    """A household card; contacts masked for roles without ``contacts.read``."""
    if hh is None:
        return None
    full = p.can("contacts.read")
    return {"id": hh.id, "address": hh.address, "building": hh.building,
            "grid_cell": hh.grid_cell, "lives_alone": hh.lives_alone,
            "residents": [{"name": r.name if full else _mask_name(r.name),
                           "phone": None if r.phone is None else
                           r.phone if full else _mask_phone(r.phone)} for r in hh.residents],
            "contacts": [{"name": c.name if full else _mask_name(c.name),
                          "relation": c.relation,
                          "phone": c.phone if full else _mask_phone(c.phone)}
                         for c in hh.contacts]}


def _mask_name(name: str) -> str:
    return name[:1] + "*"


def response_json(ctx: ApiContext, alarm: dict, p: Principal) -> dict:
    """How staff respond to ``alarm``: its call plan in order (each call with the outcomes
    recorded so far), the guidance for its category, its board priority. Without
    ``contacts.read`` every phone is masked and residents' and contacts' names too (as on
    the household card); staff and offices keep their names."""
    full = p.can("contacts.read")
    calls = alarm.get("calls") or []
    plan = []
    for c in plan_for(ctx.site, alarm["category"], alarm.get("household_id"),
                      alarm.get("grid_cell")):
        personal = c.kind in ("resident", "contact")
        plan.append({
            "key": c.key, "kind": c.kind, "relation": c.relation,
            "name": c.name if full or not personal else _mask_name(c.name),
            "phone": None if c.phone is None else c.phone if full else _mask_phone(c.phone),
            "outcomes": [{"outcome": o["outcome"], "by": o["actor"], "at": o["ts"]}
                         for o in calls if o.get("contact") == c.key]})
    return {"priority": priority_for(ctx.site, alarm["category"]), "call_plan": plan,
            "guidance": guidance_for(ctx.site, alarm["category"])}


def _masked_event(e: dict) -> dict:
    if e.get("action") != "call":
        return e
    d = dict(e["detail"])
    if d.get("kind") in ("resident", "contact"):
        d["name"] = _mask_name(str(d.get("name", "")))
    d.pop("note", None)
    return dict(e, detail=d)


def grid_json(cell) -> dict | None:
    return None if cell is None else {"code": cell.code, "name": cell.name,
                                      "grid_member": cell.grid_member}


_names: list = [None, {}]      # (the site's devices file, device id -> name) of the last site


def device_name(ctx: ApiContext, device_id: str | None) -> str:
    """The configured name of a device ("" if none): what the card shows instead of its id.
    (The map is made once per site the gateway runs, not per alarm.)"""
    devices = ctx.site.devices
    if _names[0] is not devices:
        _names[1] = {d.id: d.name for d in devices.devices}
        _names[0] = devices
    return _names[1].get(device_id or "", "")


def decorate(ctx: ApiContext, alarm: dict, p: Principal) -> dict:
    """An alarm with its household card (masked by role), grid cell and response (call
    plan, guidance, priority: :func:`response_json`)."""
    alarm = dict(alarm)
    alarm["household"] = household_json(ctx.site.household(alarm.get("household_id")), p)
    alarm["grid"] = grid_json(ctx.site.grid_cell(alarm.get("grid_cell")))
    alarm["device_name"] = device_name(ctx, alarm.get("device_id"))
    if "category" in alarm:
        alarm["response"] = response_json(ctx, alarm, p)
    alarm.pop("calls", None)               # (in the plan, by call)
    linkage = ctx.extra.get("linkage")     # the card offers 联动控制 only where it can act
    alarm["commandable"] = bool(linkage is not None and linkage.can_command(
        alarm.get("household_id"), alarm.get("grid_cell")))
    if "events" in alarm and not p.can("contacts.read"):
        alarm["events"] = [_masked_event(e) for e in alarm["events"]]
    return alarm
