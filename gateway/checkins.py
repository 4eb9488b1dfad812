"""Today's daily check-ins (报平安) of the households that opted in, for the console.

:func:`checkins_json` puts together what the rule engine knows (``rules.checkin``: each
opted-in household's window and last check-in) and the store: the care states in force
(``household_care``, the one source of truth: away or in hospital, excused) and the missed
check-in's follow-up alarm of today. One row per household, in the rule file's order:

- ``checked_in`` — at ``at`` (site-local ISO time); ``alarm_id`` set when it came after a
  follow-up was raised (a late check-in clears it);
- ``due`` — not yet, ``by`` not passed;
- ``missed`` — ``by`` passed without a check-in: ``alarm_id`` and ``alarm_state`` of its
  follow-up (None while the engine has not judged it yet, e.g. right after a start);
- ``excused`` — not checked in, away or in hospital (``care``): never asked.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.store import Store
from gateway.store import alarms as alarm_rows
from gateway.store.household_care import all_care
from rules.checkin import checkins_today

__all__ = ["checkins_json"]

_EXCUSED = frozenset({"away", "hospital"})


def checkins_json(engine: Any, site: Any, store: Store, now: datetime) -> dict[str, Any]:
    """``{"date": YYYY-MM-DD (site-local), "checkins": [row, ...]}`` for wall time ``now``."""
    zone = ZoneInfo(site.site.site.timezone)

    def iso(epoch: float) -> str:
        return datetime.fromtimestamp(epoch, zone).isoformat(timespec="seconds")

    care = {row["household_id"]: row["state"] for row in all_care(store)}
    rows = []
    for c in checkins_today(engine, now.timestamp()):
        hh = site.household(c["household_id"])
        cell = site.grid_cell(hh.grid_cell) if hh is not None else None
        alarm = alarm_rows.latest_of_key(store, c["alarm_key"])
        if alarm is not None and datetime.fromisoformat(alarm["raised_at"]).timestamp() \
                < c["opens"]:
            alarm = None            # a follow-up of an earlier day
        if c["checked_in"]:
            status = "checked_in"
        elif care.get(c["household_id"]) in _EXCUSED:
            status = "excused"
        elif now.timestamp() < c["by"]:
            status = "due"
        else:
            status = "missed"
        rows.append({
            "household_id": c["household_id"],
            "address": hh.address if hh is not None else c["household_id"],
            "grid_cell": hh.grid_cell if hh is not None else None,
            "grid_cell_name": cell.name if cell is not None else None,
            "status": status, "by": iso(c["by"]), "opens": iso(c["opens"]),
            "at": iso(c["last"]) if c["checked_in"] else None,
            "last": iso(c["last"]) if c["last"] is not None else None,
            "care": care.get(c["household_id"]),
            "alarm_id": alarm["id"] if alarm else None,
            "alarm_state": alarm["state"] if alarm else None})
    return {"date": datetime.fromtimestamp(now.timestamp(), zone).date().isoformat(),
            "checkins": rows}
