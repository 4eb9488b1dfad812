"""Call plans and response guidance of an alarm, from the site config (docs/site-config.md).

:func:`plan_for` expands the plan that applies to an alarm's category and household (the
household's own ``call_plans`` entry, else the site's ``response.<category>``, else
``response.default``) into the people to call, in order; :func:`guidance_for` and
:func:`priority_for` read the same section. Pure functions of the site: no store, no clock.

Each call has a ``key`` that names it on this alarm (``resident:0``, ``contact:1``,
``grid_member``, ``on_call:duty_officer``): staff record an outcome against it
(``gateway.alarms.AlarmBook.record_call``).
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_config.loader import SiteConfig
from edge_config.schema import CALL_OUTCOMES, AlarmResponse

__all__ = ["CALL_OUTCOMES", "OUTCOME_WORDS", "Call", "guidance_for", "plan_for",
           "priority_for"]

#: an outcome in words, for the case system's note (the console has its own catalogue)
OUTCOME_WORDS: dict[str, dict[str, str]] = {
    "connected": {"zh": "接通", "en": "answered"},
    "no_answer": {"zh": "无人接听", "en": "no answer"},
    "on_site": {"zh": "已到场", "en": "on site"},
    "notified": {"zh": "已通知", "en": "notified"},
}
assert tuple(OUTCOME_WORDS) == CALL_OUTCOMES


@dataclass(frozen=True, slots=True)
class Call:
    """One person (or office) to call: ``kind`` is ``resident``, ``contact``,
    ``grid_member`` or ``on_call``; ``phone`` None when the site has no number for them."""

    key: str
    kind: str
    name: str
    relation: str = ""
    phone: str | None = None

    def label(self) -> str:
        """Who, in words for the case system's note: 张伟（儿子）, 王芳（网格员）."""
        role = {"resident": "本人", "grid_member": "网格员"}.get(self.kind, self.relation)
        return f"{self.name}（{role}）" if role else self.name


def _response(site: SiteConfig, category: str) -> tuple[AlarmResponse | None,
                                                         AlarmResponse | None]:
    responses = site.site.response
    return responses.get(category), responses.get("default")


def plan_for(site: SiteConfig, category: str, household_id: str | None,
             grid_cell: str | None) -> list[Call]:
    """The calls to make for an alarm of ``category`` in ``household_id`` (None: a shared
    device) and ``grid_cell``, in order. Steps that name nobody here (``resident`` of a
    shared device, a household without contacts) are left out."""
    household = site.household(household_id)
    steps: list[str] | None = None
    if household is not None:
        steps = household.call_plans.get(category)
    if steps is None:
        own, default = _response(site, category)
        steps = (own.call_plan if own is not None and own.call_plan is not None
                 else default.call_plan if default is not None else None)
    if not steps:
        return []
    cell = site.grid_cell(household.grid_cell if household is not None else grid_cell)
    calls: list[Call] = []
    for step in steps:
        if step == "resident" and household is not None:
            calls += [Call(f"resident:{i}", "resident", r.name, "", r.phone)
                      for i, r in enumerate(household.residents)]
        elif step == "contacts" and household is not None:
            calls += [Call(f"contact:{i}", "contact", c.name, c.relation, c.phone)
                      for i, c in enumerate(household.contacts)]
        elif step == "grid_member" and cell is not None and cell.grid_member:
            calls.append(Call("grid_member", "grid_member", cell.grid_member, "",
                              cell.grid_member_phone))
        elif step in site.site.on_call:
            entry = site.site.on_call[step]
            calls.append(Call(f"on_call:{step}", "on_call", entry.name, "", entry.phone))
    unique: dict[str, Call] = {}    # a step named twice in a plan: called once, first place
    for c in calls:
        unique.setdefault(c.key, c)
    return list(unique.values())


def guidance_for(site: SiteConfig, category: str) -> dict[str, list[str]] | None:
    """What to do for ``category`` (``{"zh": [...], "en": [...]}``), or None."""
    own, default = _response(site, category)
    chosen = own.guidance if own is not None and own.guidance is not None else (
        default.guidance if default is not None else None)
    return None if chosen is None else {"zh": list(chosen.zh), "en": list(chosen.en)}


def priority_for(site: SiteConfig, category: str) -> int:
    """The board's priority of ``category`` (1 first; 5 when the site says nothing)."""
    own, default = _response(site, category)
    return own.priority if own is not None else default.priority if default is not None else 5
