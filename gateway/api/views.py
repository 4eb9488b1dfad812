"""How the API shows alarms and households (shared by the routers)."""

from typing import overload

from edge_config.schema import Household
from gateway.api.context import ApiContext
from gateway.auth import Principal

__all__ = ["decorate", "grid_json", "household_json"]


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
            "contacts": [{"name": c.name if full else c.name[:1] + "*", "relation": c.relation,
                          "phone": c.phone if full else _mask_phone(c.phone)}
                         for c in hh.contacts]}


def grid_json(cell) -> dict | None:
    return None if cell is None else {"code": cell.code, "name": cell.name,
                                      "grid_member": cell.grid_member}


def decorate(ctx: ApiContext, alarm: dict, p: Principal) -> dict:
    """An alarm with its household card (masked by role) and grid cell."""
    alarm = dict(alarm)
    alarm["household"] = household_json(ctx.site.household(alarm.get("household_id")), p)
    alarm["grid"] = grid_json(ctx.site.grid_cell(alarm.get("grid_cell")))
    return alarm
