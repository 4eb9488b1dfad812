"""Commands (linkage) as the alarm history holds them: ``alarm_events`` rows, no table of their own.

A command's every step is one event of its alarm, written by :func:`append_event` in the
linkage's transactions (gateway/linkage.py), with ``command_id`` in the detail:
``command_requested`` (who asked, the device, the action) then ``command_sent`` per attempt
(``command_failed`` when the transport refused it) and one terminal step:
``command_confirmed``, ``command_not_confirmed``, ``command_skipped`` (never sent: mode, rate
limit, no way to reach the device) or ``command_interrupted`` (the gateway stopped while it
was in flight). A rule's commands are planned in the raise transaction
(``commands_planned``) and resolved to devices once (``commands_resolved``, written with the
``command_requested`` rows). The readers here answer: what is planned but not resolved, what
is requested but not finished (both after a restart), and each alarm's commands for the card.
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.store.core import Store

__all__ = ["PLANNED", "REQUESTED", "RESOLVED", "STEPS", "TERMINAL", "commands_of",
           "plan_of", "unfinished", "unresolved_plans"]

PLANNED = "commands_planned"
RESOLVED = "commands_resolved"
REQUESTED = "command_requested"
#: the steps of one command, in the order they can come
STEPS = ("command_requested", "command_sent", "command_failed", "command_confirmed",
         "command_not_confirmed", "command_skipped", "command_interrupted")
#: the steps that end a command
TERMINAL = frozenset({"command_confirmed", "command_not_confirmed", "command_skipped",
                      "command_interrupted"})
_STEP_LIST = ",".join(f"'{s}'" for s in STEPS)
_TERMINAL_LIST = ",".join(f"'{s}'" for s in sorted(TERMINAL))


def plan_of(conn: sqlite3.Connection | Store, alarm_id: int) -> tuple[list[dict], bool]:
    """The commands planned for alarm ``alarm_id`` (the rule's ``then`` intents) and whether
    they were resolved to devices already."""
    rows = _query(conn, f"SELECT action, detail FROM alarm_events WHERE alarm_id = ? AND "
                        f"action IN ('{PLANNED}', '{RESOLVED}') ORDER BY id", (alarm_id,))
    plan: list[dict] = []
    resolved = False
    for r in rows:
        if r["action"] == PLANNED:
            plan.extend(json.loads(r["detail"]).get("then", []))
        else:
            resolved = True
    return plan, resolved


def unresolved_plans(store: Store) -> list[int]:
    """Alarms whose planned commands were never resolved to devices (a crash right after
    the raise was committed), oldest first."""
    return [r["alarm_id"] for r in store.query(
        f"SELECT p.alarm_id FROM alarm_events p WHERE p.action = '{PLANNED}' AND NOT EXISTS "
        f"(SELECT 1 FROM alarm_events r WHERE r.alarm_id = p.alarm_id AND r.action = "
        f"'{RESOLVED}') ORDER BY p.id")]


def unfinished(store: Store) -> list[dict]:
    """Commands requested and never ended (in flight when the gateway stopped): each
    ``{alarm_id, ts, actor, **detail}`` of its ``command_requested`` event, with the alarm's
    ``state``."""
    out = []
    for r in store.query(
            f"SELECT e.alarm_id, e.ts, e.actor, e.detail, a.state FROM alarm_events e JOIN "
            f"alarms a ON a.id = e.alarm_id WHERE e.action = '{REQUESTED}' AND NOT EXISTS "
            f"(SELECT 1 FROM alarm_events t WHERE t.alarm_id = e.alarm_id AND t.action IN "
            f"({_TERMINAL_LIST}) AND json_extract(t.detail, '$.command_id') = "
            f"json_extract(e.detail, '$.command_id')) ORDER BY e.id"):
        out.append({"alarm_id": r["alarm_id"], "ts": r["ts"], "actor": r["actor"],
                    "alarm_state": r["state"], **json.loads(r["detail"])})
    return out


def commands_of(store: Store, alarm_ids: list[int]) -> dict[int, list[dict]]:
    """Each alarm's commands, oldest first, for the card: alarm id -> ``[{command_id,
    device_id, action, by, automatic, status, ts, attempts, reason, requested_at}]`` where
    ``status`` is the last step's name without ``command_`` (``requested``, ``sent``,
    ``failed``, ``confirmed``, ``not_confirmed``, ``skipped``, ``interrupted``) and ``ts``
    its time. (A rule's target that found no device is in the history only, as
    ``commands_resolved`` with no devices: a household without a valve is no news.)"""
    out: dict[int, list[dict]] = {}
    for start in range(0, len(alarm_ids), 500):
        chunk = alarm_ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        per: dict[tuple[int, str], dict] = {}
        for e in store.query(
                f"SELECT alarm_id, ts, action, actor, detail FROM alarm_events WHERE "
                f"alarm_id IN ({marks}) AND action IN ({_STEP_LIST}) "
                f"ORDER BY id", tuple(chunk)):
            d = json.loads(e["detail"])
            key = (e["alarm_id"], d.get("command_id", ""))
            c = per.get(key)
            if c is None:
                c = per[key] = {"command_id": key[1], "device_id": d.get("device_id"),
                                "action": d.get("action"), "by": e["actor"],
                                "automatic": bool(d.get("automatic")), "attempts": 0,
                                "reason": None, "requested_at": e["ts"]}
                out.setdefault(e["alarm_id"], []).append(c)
            c["status"] = e["action"].removeprefix("command_")
            c["ts"] = e["ts"]
            if e["action"] == "command_sent":
                c["attempts"] = d.get("attempt", c["attempts"] + 1)
            if d.get("reason"):
                c["reason"] = d["reason"]
    return out


def _query(conn: sqlite3.Connection | Store, sql: str, params: tuple[Any, ...]) -> list[Any]:
    if isinstance(conn, sqlite3.Connection):
        return list(conn.execute(sql, params).fetchall())
    return conn.query(sql, params)
