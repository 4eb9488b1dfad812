"""Visits (探访): grid members and volunteers record their visits of households; households
flagged ``special_difficulty`` (site.yaml) need one per calendar month in the site's local
time (特殊困难老年人月探访率 100 %).

Coverage of a month, per grid cell: each such household is ``visited`` (a visit in the
month), ``due`` (none yet, the month still running) or ``overdue`` (the month ended without
one). The reminder is a console item, not a message: in the last :data:`REMIND_DAYS` days of
the month the coverage page lists, per grid member, the households still due (``remind``),
so the duty room and the grid member see it whenever they open the page.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from gateway import GatewayError
from gateway.catalogue import text, zone_label
from gateway.model import Reading, utc
from gateway.reading_queue import ReadingQueue
from gateway.store import Store, Tx, record_audit
from gateway.store import visits as rows

__all__ = ["CSV_COLUMNS", "REMIND_DAYS", "VISIT_METRIC", "VisitCards", "VisitError",
           "coverage", "coverage_csv", "month_bounds", "record_visit"]

#: the metric of a visit card's ``button`` reading (drivers.profiles.with_visit_cards)
VISIT_METRIC = "visit_card"

#: the reminder shows in the month's last this many days
REMIND_DAYS = 7
CSV_COLUMNS = ("grid_cell", "grid_member", "household_id", "address", "status", "visits",
               "last_visit", "visitor")


class VisitError(GatewayError):
    def __init__(self, message: str, code: str, status: int = 422):
        self.code, self.status = code, status
        super().__init__(message)


def _utc_iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class Month:
    year: int
    month: int
    start: datetime     # local midnight of the 1st, aware
    end: datetime       # local midnight of the next month's 1st, aware

    @property
    def label(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


def month_bounds(tz: str, month: str | None = None, now: datetime | None = None) -> Month:
    """The calendar month ``YYYY-MM`` (default: the current one) in zone ``tz``."""
    zone = ZoneInfo(tz)
    if month is None:
        local = (now or utc()).astimezone(zone)
        y, m = local.year, local.month
    else:
        try:
            y, m = (int(x) for x in month.split("-"))
            date(y, m, 1)
        except ValueError:
            raise VisitError(f"month {month!r} is not YYYY-MM", "invalid") from None
    ny, nm = (y + 1, 1) if m == 12 else (y, m + 1)
    return Month(y, m, datetime(y, m, 1, tzinfo=zone), datetime(ny, nm, 1, tzinfo=zone))


async def record_visit(store: Store, site: Any, *, household_id: str, visitor: str,
                       actor: str, note: str = "", visited_at: datetime | None = None,
                       via: str = "console", request_id: str | None = None) -> int:
    """Record one visit (``request_id``: a retried POST records nothing more)."""
    hh = site.household(household_id)
    if hh is None:
        raise VisitError(f"unknown household {household_id!r}", "household_not_found", 404)
    when = visited_at or utc()
    if when.tzinfo is None:
        raise VisitError("visited_at needs a time zone offset", "invalid")
    if when > utc() + timedelta(minutes=5):
        raise VisitError("visited_at is in the future", "visit_in_future")
    key = f"{via}:{request_id}" if request_id else None

    def tx(conn: Tx) -> int:
        if key is not None:
            known = rows.by_request_key(conn, key)
            if known is not None:
                return known
        vid = rows.insert(conn, household_id=hh.id, grid_cell=hh.grid_cell,
                          visited_at=_utc_iso(when), visitor=visitor, recorded_by=actor,
                          via=via, note=note, request_key=key)
        record_audit(conn, actor, "visit.record", hh.id, visit=vid, visitor=visitor)
        return vid

    return await store.write(tx)


def coverage(store: Store, site: Any, month: str | None = None, *,
             now: datetime | None = None, personal: bool = True) -> dict:
    """The month's coverage per grid cell (see the module's text); ``personal`` False: the
    addresses masked."""
    tz = site.site.site.timezone
    m = month_bounds(tz, month, now)
    now = now or utc()
    ended = now >= m.end
    started = now >= m.start
    days_left = max(0, (m.end - max(now, m.start)).days) if not ended else 0
    visits = rows.between(store, _utc_iso(m.start), _utc_iso(m.end))
    by_household: dict[str, list[dict]] = {}
    for v in visits:
        by_household.setdefault(v["household_id"], []).append(v)
    zone = ZoneInfo(tz)
    cells = []
    for cell in site.site.grid_cells:
        households = []
        for hh in site.site.households:
            if hh.grid_cell != cell.code or not hh.special_difficulty:
                continue
            mine = by_household.get(hh.id, [])
            status = "visited" if mine else ("overdue" if ended else "due")
            last = mine[-1] if mine else None
            households.append({
                "household_id": hh.id,
                "address": hh.address if personal else hh.address[:4] + "***",
                "status": status, "visits": len(mine),
                "last_visit": datetime.fromisoformat(last["visited_at"]).astimezone(
                    zone).isoformat() if last else None,
                "visitor": last["visitor"] if last else None,
            })
        counts = {s: sum(h["status"] == s for h in households)
                  for s in ("visited", "due", "overdue")}
        cells.append({"code": cell.code, "name": cell.name, "grid_member": cell.grid_member,
                      "households": households, **counts,
                      "total": len(households),
                      "rate": round(counts["visited"] / len(households), 4)
                      if households else None})
    remind = [{"grid_cell": c["code"], "grid_member": c["grid_member"],
               "households": [h["household_id"] for h in c["households"]
                              if h["status"] == "due"]}
              for c in cells if c["due"]] if started and not ended and \
        days_left <= REMIND_DAYS else []
    others = [v for v in visits if v["household_id"] not in
              {h.id for h in site.site.households if h.special_difficulty}]
    return {"month": m.label, "timezone": tz, "ended": ended, "days_left": days_left,
            "remind_days": REMIND_DAYS, "cells": cells, "remind": remind,
            "other_visits": len(others)}


def coverage_csv(store: Store, site: Any, month: str | None, lang: str, *,
                 now: datetime | None = None) -> tuple[str, str]:
    """(the CSV, the month) of one month's coverage: headers and statuses in ``lang``, times
    in the site's local time ``YYYY-MM-DD HH:MM:SS`` (the zone in the header)."""
    cov = coverage(store, site, month, now=now)
    tz = cov["timezone"]
    buf = io.StringIO()
    buf.write("\ufeff")
    w = csv.writer(buf)
    w.writerow([text(lang, f"vcsv_{c}", tz=zone_label(tz)) for c in CSV_COLUMNS])
    for cell in cov["cells"]:
        for h in cell["households"]:
            last = h["last_visit"]
            values = [f"{cell['name']} ({cell['code']})", cell["grid_member"] or "",
                      h["household_id"], h["address"], text(lang, "vs_" + h["status"]),
                      h["visits"],
                      datetime.fromisoformat(last).strftime("%Y-%m-%d %H:%M:%S") if last else "",
                      h["visitor"] or ""]
            w.writerow([_safe(v) for v in values])
    return buf.getvalue(), cov["month"]


def _safe(value: object) -> object:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


class VisitCards:
    """Visits by card: a household's door reader with ``visit_cards`` (devices.yaml) reads
    the card of a grid member or volunteer; :meth:`offer` (the pipeline's reading hook)
    queues it and :meth:`run` records the visit (``via`` card, the card's visitor, actor
    ``device``). The same card at the same reader on the same local day (arriving and
    leaving) is one visit."""

    def __init__(self, store: Store, site_of: Any):
        self.store = store
        self.site_of = site_of
        self.cards = ReadingQueue(VISIT_METRIC, self.card_read, "visit card read")
        #: the pipeline's reading hook (a card read is queued) and the task writing them
        self.offer, self.run = self.cards.offer, self.cards.run

    async def card_read(self, reading: Reading) -> int | None:
        """The visit of one card read (None: not a visit card of this reader)."""
        site = self.site_of()
        device = next((d for d in site.devices.devices if d.id == reading.device_id), None)
        visitor = (device.visit_cards or {}).get(str(reading.value)) if device else None
        if device is None or visitor is None or not device.household:
            return None
        when = min(reading.ts, utc())
        day = when.astimezone(ZoneInfo(site.site.site.timezone)).date().isoformat()
        return await record_visit(self.store, site, household_id=device.household,
                                  visitor=visitor, actor="device", visited_at=when,
                                  via="card", request_id=f"{device.id}:{reading.value}:{day}")
