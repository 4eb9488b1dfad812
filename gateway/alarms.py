"""Alarm lifecycle: raised -> acknowledged -> resolved, each transition with who and when.

Rule actions (``rules.actions``) and staff commands become transactions in the store. Every
transition that the grid case system must hear about writes its outbox row in the *same*
transaction, so an alarm is never changed without its case being told (and vice versa).

A repeated trigger while an alarm with the same key is open updates it (count, last value)
instead of opening a second one; the store enforces this with a unique index on open keys.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from edge_config.loader import SiteConfig
from gateway import GatewayError
from gateway.case_refusals import refusal
from gateway.kernel.clock import utc_iso
from gateway.metrics import Metrics
from gateway.model import Severity
from gateway.store import Store, record_audit

__all__ = ["AlarmBook", "AlarmError", "AlarmNotFound", "AlarmStateError", "CASE_REASONS",
           "HistoryFilter", "RESOLVE_REASONS", "SYSTEM_ACTOR"]

RESOLVE_REASONS: dict[str, dict[str, str]] = {
    "handled": {"zh": "已处置", "en": "Handled"},
    "false_alarm": {"zh": "误报", "en": "False alarm"},
    "cancelled_by_resident": {"zh": "住户取消", "en": "Cancelled by resident"},
    "test": {"zh": "测试", "en": "Test"},
    "device_fault": {"zh": "设备故障", "en": "Device fault"},
    "other": {"zh": "其他", "en": "Other"},
}
#: reasons only the system gives (shown in history, never offered to staff)
CASE_REASONS: dict[str, dict[str, str]] = {
    "case_closed": {"zh": "工单已结案", "en": "Case closed"},
}
_CASE_ORDER = ("accepted", "dispatched", "on_site", "closed")
SYSTEM_ACTOR = "system"
log = logging.getLogger(__name__)


class AlarmError(GatewayError):
    """Base of alarm command errors (mapped to HTTP 404/409 by the API)."""


class AlarmNotFound(AlarmError):
    pass


class AlarmStateError(AlarmError):
    """The alarm is not in a state that allows the command; ``code`` says which rule."""

    def __init__(self, message: str, code: str = "wrong_state"):
        self.code = code
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Change:
    """One alarm that changed, with what happened (for the live stream). ``reopened``: the
    alarm was raised for a trigger the rule engine took for an update of an alarm that is
    resolved here (``key``/``rule_id`` tell the engine which bookkeeping to start afresh)."""

    alarm_id: int
    action: str
    key: str = ""
    rule_id: str = ""
    reopened: bool = False


@dataclass(slots=True)
class EngineState:
    """What the store holds of the rule engine's alarm and fault bookkeeping (read at start,
    for ``rules.Engine.adopt_store``)."""

    journal: dict
    stored: list
    version: int
    open_faults: list[str]
    ended: set[str]


_now = utc_iso


def _event(conn: sqlite3.Connection, alarm_id: int, action: str, actor: str, ts: str,
           **detail) -> None:
    conn.execute("INSERT INTO alarm_events (alarm_id, ts, action, actor, detail) "
                 "VALUES (?,?,?,?,?)",
                 (alarm_id, ts, action, actor, json.dumps(detail, ensure_ascii=False)))


class AlarmBook:
    """Applies rule actions and staff commands to the alarms in the store."""

    def __init__(self, store: Store, site: SiteConfig, *,
                 on_change: Callable[[list[Change]], None] | None = None,
                 callback_url: str | None = None, metrics: Metrics | None = None):
        self.store = store
        self.site = site
        self.on_change = on_change or (lambda changes: None)
        self.callback_url = callback_url
        self.metrics = metrics
        self._key_prefix = f"{site.site.site.id}-{store.instance_id}"
        store.write_sync(_create_device_tables)

    # -- rule actions ----------------------------------------------------------------
    async def apply(self, actions: Iterable, inbox_seqs: Iterable[int] = (),
                    journal: Iterable[tuple[str, dict, int]] = ()) -> list[Change]:
        """Apply rule actions, write the engine's alarm bookkeeping (``journal``: entries
        of ``rules.AlarmBook.journal``) and mark the inbox rows that caused them processed,
        atomically. An action for an alarm that is not open is never dropped silently: a
        trigger raises a new alarm (``Change.reopened``), anything else is recorded where it
        can be, counted (``gateway_orphan_actions_total{action}``) and logged."""
        actions = list(actions)
        seqs = list(inbox_seqs)
        entries = list(journal)

        def tx(conn: sqlite3.Connection) -> tuple[list[Change], list[tuple[str, str, str]]]:
            changes: list[Change] = []
            orphans: list[tuple[str, str, str]] = []
            for action in actions:
                handler = getattr(self, f"_on_{type(action).__name__}", None)
                if handler is not None:
                    change = handler(conn, action, orphans)
                    if change is not None:
                        changes.append(change)
            if entries:
                _write_journal(conn, entries, {c.key for c in changes if c.reopened})
            if seqs:
                now = _now()
                conn.executemany("UPDATE inbox SET processed_at=? WHERE seq=?",
                                 [(now, s) for s in seqs])
            return changes, orphans

        changes, orphans = await self.store.write(tx)
        for action, key, note in orphans:
            if self.metrics is not None:
                self.metrics.inc("gateway_orphan_actions_total", action=action)
            log.warning("rule action %s for alarm %s, which is not open: %s", action, key, note)
        if changes:
            self.on_change(changes)
        return changes

    def _open_by_key(self, conn: sqlite3.Connection, key: str) -> sqlite3.Row | None:
        return conn.execute("SELECT * FROM alarms WHERE key=? AND state!='resolved'",
                            (key,)).fetchone()

    def escalation_stopped(self, case_status: str | None) -> bool:
        """The case system has taken the case far enough that escalation beyond the first
        tier stops (uplinks.yaml ``case_system.stop_escalation_at``)."""
        uplink = self.site.uplinks.case_system
        at = uplink.stop_escalation_at if uplink is not None else "never"
        if at == "never" or case_status not in _CASE_ORDER:
            return False
        return _CASE_ORDER.index(case_status) >= _CASE_ORDER.index(at)

    def open_id(self, key: str) -> int | None:
        """Id of the open alarm with ``key`` (None: none open)."""
        row = self.store.query_one("SELECT id FROM alarms WHERE key=? AND state!='resolved'",
                                   (key,))
        return row["id"] if row else None

    def engine_state(self) -> EngineState:
        """The rule engine's alarm and fault bookkeeping as the store has it (see
        ``rules.Engine.adopt_store``): journal entries, open alarms, open faults, and the
        keys whose last alarm ended with its condition (cleared) and is resolved."""
        from rules.alarms import StoredAlarm

        journal: dict[str, dict] = {}
        ids: dict[str, int | None] = {}
        version = 0
        for r in self.store.query("SELECT key, alarm_id, state, version FROM alarm_book"):
            journal[r["key"]] = json.loads(r["state"])
            ids[r["key"]] = r["alarm_id"]
            version = max(version, r["version"])
        stored = [StoredAlarm(r["key"], r["rule_id"], Severity(r["severity"]),
                              r["state"] == "acknowledged"
                              or self.escalation_stopped(r["case_status"]),
                              r["count"], r["escalation_tier"],
                              datetime.fromisoformat(r["raised_at"]).timestamp(),
                              r["cleared_at"] is not None, (r["message_zh"], r["message_en"]),
                              ids.get(r["key"]) == r["id"])
                  for r in self.store.query("SELECT * FROM alarms WHERE state!='resolved'")]
        faults = [r["key"] for r in self.store.query(
            "SELECT key FROM device_faults WHERE cleared_at IS NULL")]
        ended = {r["key"] for r in self.store.query(
            "SELECT a.key FROM alarms a JOIN (SELECT key, max(id) AS last FROM alarms "
            "GROUP BY key) l ON a.id = l.last "
            "WHERE a.state='resolved' AND a.cleared_at IS NOT NULL")}
        return EngineState(journal, stored, version, faults, ended)

    def _on_RaiseAlarm(self, conn: sqlite3.Connection, a, orphans: list | None = None
                       ) -> Change:
        ts = a.ts.isoformat() if isinstance(a.ts, datetime) else str(a.ts)
        now = _now()
        value = json.dumps(a.value)
        row = self._open_by_key(conn, a.key)
        if row is not None:
            conn.execute("UPDATE alarms SET count=count+1, updated_at=?, value=?, cleared_at=NULL"
                         " WHERE id=?", (now, value, row["id"]))
            _event(conn, row["id"], "retriggered", f"rule:{a.rule_id}", now, value=a.value)
            return Change(row["id"], "updated", a.key, a.rule_id)
        cur = conn.execute(
            "INSERT INTO alarms (key, rule_id, category, severity, state, device_id, household_id,"
            " grid_cell, message_zh, message_en, value, test, occurred_at, raised_at, updated_at)"
            " VALUES (?,?,?,?, 'raised', ?,?,?,?,?,?,?,?,?,?)",
            (a.key, a.rule_id, a.category, str(a.severity), a.device_id, a.household_id,
             a.grid_cell, a.message_zh, a.message_en, value, int(bool(a.test)), ts, now, now))
        alarm_id = cur.lastrowid
        _event(conn, alarm_id, "raised", f"rule:{a.rule_id}", now, value=a.value, occurred_at=ts)
        if not a.test:
            self._enqueue(conn, alarm_id, "case.create", self._case_payload(a, alarm_id, ts), now)
        return Change(alarm_id, "raised", a.key, a.rule_id)

    def _on_UpdateAlarm(self, conn: sqlite3.Connection, a, orphans: list) -> Change | None:
        row = self._open_by_key(conn, a.key)
        if row is None:
            if a.again is not None:    # a trigger: the alarm was resolved here meanwhile
                change = self._on_RaiseAlarm(conn, a.again)
                return Change(change.alarm_id, "raised", a.key, a.again.rule_id, True)
            orphans.append(("update", a.key, "flapping note dropped"))
            return None
        now = _now()
        cleared = None if a.again is not None else row["cleared_at"]   # a trigger: active
        conn.execute("UPDATE alarms SET count=?, updated_at=?, message_zh=?, message_en=?, "
                     "cleared_at=? WHERE id=?", (max(a.count, row["count"]), now,
                                                 a.message_zh, a.message_en, cleared,
                                                 row["id"]))
        _event(conn, row["id"], "updated", SYSTEM_ACTOR, now, count=a.count)
        return Change(row["id"], "updated", a.key)

    def _on_ClearAlarm(self, conn: sqlite3.Connection, a, orphans: list) -> Change | None:
        row = self._open_by_key(conn, a.key)
        if row is None:
            last = conn.execute("SELECT id, cleared_at FROM alarms WHERE key=? "
                                "ORDER BY id DESC LIMIT 1", (a.key,)).fetchone()
            if last is None:
                orphans.append(("clear", a.key, "no alarm with this key"))
                return None
            now = _now()   # recorded on the alarm that was resolved before the clear came
            conn.execute("UPDATE alarms SET cleared_at=coalesce(cleared_at, ?) WHERE id=?",
                         (now, last["id"]))
            _event(conn, last["id"], "cleared", "device", now, reason=a.reason,
                   after_resolved=True)
            orphans.append(("clear", a.key, f"recorded on resolved alarm {last['id']}"))
            return Change(last["id"], "cleared", a.key)
        now = _now()
        conn.execute("UPDATE alarms SET cleared_at=?, updated_at=? WHERE id=?",
                     (now, now, row["id"]))
        _event(conn, row["id"], "cleared", "device", now, reason=a.reason)
        if a.auto_resolve:
            self._resolve_tx(conn, row, "device", "cancelled_by_resident", a.reason or "")
            return Change(row["id"], "resolved")
        self._enqueue_update(conn, row, {"event": "cleared", "reason": a.reason}, now)
        return Change(row["id"], "cleared")

    def _on_Escalate(self, conn: sqlite3.Connection, a, orphans: list) -> Change | None:
        row = self._open_by_key(conn, a.key)
        if row is None:
            orphans.append(("escalate", a.key, f"tier {a.tier} not sent"))
            return None
        if (row["state"] != "raised" or a.tier <= row["escalation_tier"]
                or self.escalation_stopped(row["case_status"])):
            return None   # acknowledged or the case taken (the engine hears of it next), or
            #               this tier notified already
        now = _now()
        conn.execute("UPDATE alarms SET escalation_tier=?, escalation_tier_name=?, updated_at=?"
                     " WHERE id=?", (a.tier, a.tier_name, now, row["id"]))
        _event(conn, row["id"], "escalated", SYSTEM_ACTOR, now, tier=a.tier,
               tier_name=a.tier_name, targets=list(a.targets or []))
        return Change(row["id"], "escalated")

    def _on_TestRecord(self, conn: sqlite3.Connection, a, orphans: list) -> None:
        # A device in test/maintenance mode: recorded for commissioning, never an alarm.
        ts = a.ts.isoformat() if isinstance(a.ts, datetime) else str(a.ts)
        conn.execute("INSERT INTO device_tests (device_id, rule_id, ts, value) VALUES (?,?,?,?)",
                     (a.device_id, a.rule_id, ts, json.dumps(a.value)))

    def _on_RaiseFault(self, conn: sqlite3.Connection, a, orphans: list) -> None:
        ts = a.ts.isoformat() if isinstance(a.ts, datetime) else str(a.ts)
        conn.execute("INSERT OR REPLACE INTO device_faults (key, fault, device_id, household_id,"
                     " grid_cell, severity, message_zh, message_en, raised_at, cleared_at)"
                     " VALUES (?,?,?,?,?,?,?,?,?,NULL)",
                     (a.key, a.fault, a.device_id, a.household_id, a.grid_cell, str(a.severity),
                      a.message_zh, a.message_en, ts))

    def _on_ClearFault(self, conn: sqlite3.Connection, a, orphans: list) -> None:
        ts = a.ts.isoformat() if isinstance(a.ts, datetime) else str(a.ts)
        conn.execute("UPDATE device_faults SET cleared_at=? WHERE key=? AND cleared_at IS NULL",
                     (ts, a.key))

    # -- staff commands --------------------------------------------------------------
    async def acknowledge(self, alarm_id: int, actor: str, note: str = "") -> dict:
        def tx(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT * FROM alarms WHERE id=?", (alarm_id,)).fetchone()
            if row is None:
                raise AlarmNotFound(f"alarm {alarm_id} not found")
            if row["state"] != "raised":
                raise AlarmStateError(f"alarm {alarm_id} is {row['state']}, not raised")
            now = _now()
            conn.execute("UPDATE alarms SET state='acknowledged', ack_by=?, ack_at=?, ack_note=?,"
                         " updated_at=? WHERE id=?", (actor, now, note, now, alarm_id))
            _event(conn, alarm_id, "acknowledged", actor, now, note=note)
            record_audit(conn, actor, "alarm.acknowledge", str(alarm_id))
            self._enqueue_update(conn, row, {"event": "acknowledged", "by": actor,
                                             "note": note}, now)

        await self.store.write(tx)
        self.on_change([Change(alarm_id, "acknowledged")])
        return self.get(alarm_id)

    async def resolve(self, alarm_id: int, actor: str, reason: str, note: str = "", *,
                      require_ack: bool = False) -> dict:
        """Resolve an alarm with a reason. ``require_ack`` (staff, through the API): a
        critical alarm must be acknowledged first (AlarmStateError ``ack_required``). The
        system's own paths (a device clear with auto-resolve, the case system closing the
        case) do not come through here and are not held to it."""
        if reason not in RESOLVE_REASONS:
            raise ValueError(f"unknown reason {reason!r}")

        def tx(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT * FROM alarms WHERE id=?", (alarm_id,)).fetchone()
            if row is None:
                raise AlarmNotFound(f"alarm {alarm_id} not found")
            if row["state"] == "resolved":
                raise AlarmStateError(f"alarm {alarm_id} is already resolved")
            if require_ack and row["severity"] == "critical" and row["state"] == "raised":
                raise AlarmStateError(f"alarm {alarm_id} is critical and not acknowledged: "
                                      f"acknowledge it before resolving it", "ack_required")
            self._resolve_tx(conn, row, actor, reason, note)
            record_audit(conn, actor, "alarm.resolve", str(alarm_id), reason=reason)

        await self.store.write(tx)
        self.on_change([Change(alarm_id, "resolved")])
        return self.get(alarm_id)

    def _resolve_tx(self, conn: sqlite3.Connection, row: sqlite3.Row, actor: str, reason: str,
                    note: str) -> None:
        now = _now()
        conn.execute("UPDATE alarms SET state='resolved', resolved_by=?, resolved_at=?, "
                     "resolve_reason=?, resolve_note=?, updated_at=? WHERE id=?",
                     (actor, now, reason, note, now, row["id"]))
        _event(conn, row["id"], "resolved", actor, now, reason=reason, note=note)
        self._enqueue_update(conn, row, {"event": "resolved", "by": actor, "reason": reason,
                                         "note": note}, now)

    # -- case system outbox ----------------------------------------------------------
    def _enqueue(self, conn: sqlite3.Connection, alarm_id: int, topic: str, payload: dict,
                 now: str) -> None:
        n = conn.execute("SELECT count(*) FROM outbox WHERE alarm_id=?", (alarm_id,)).fetchone()[0]
        key = f"{self._key_prefix}-{alarm_id}-{n}"
        payload = dict(payload, idempotency_key=key, sequence=n)
        conn.execute("INSERT INTO outbox (alarm_id, topic, idempotency_key, payload, created_at)"
                     " VALUES (?,?,?,?,?)",
                     (alarm_id, topic, key, json.dumps(payload, ensure_ascii=False), now))

    def _enqueue_update(self, conn: sqlite3.Connection, row: sqlite3.Row, update: dict,
                        now: str) -> None:
        if row["test"]:
            return
        self._enqueue(conn, row["id"], "case.update", dict(update, at=now), now)

    def _case_payload(self, a, alarm_id: int, ts: str) -> dict:
        """The case to open for alarm ``a`` (docs/case-system.md 4.1, contract 1.1): a
        household-level alarm (inactivity, count or compound per household) has no single
        device: ``device`` is left out and ``devices`` lists the household's devices the rule
        watches."""
        household = self.site.household(a.household_id)
        device = next((d for d in self.site.devices.devices if d.id == a.device_id), None) \
            if a.device_id else None
        if household is not None:
            place = {"id": household.id, "address": household.address}
        else:  # a shared device (entrance, micro fire station) or a grid cell: its place
            cell = self.site.grid_cell(a.grid_cell)
            label = (device.name if device and device.name else a.device_id) or ""
            address = f"{cell.name if cell else ''} {label}".strip()
            place = {"id": a.device_id or a.grid_cell or self.site.site.site.id,
                     "address": address or self.site.site.site.name}
        payload = {
            "site_id": self.site.site.site.id,
            "grid_cell_code": a.grid_cell,
            "household": place,
            "category": a.category,
            "severity": str(a.severity),
            "title": a.message_zh[:120],
            "description": a.message_en[:2000],
            "occurred_at": ts,
            "devices": self._source_devices(a, device),
            "gateway_alarm_id": alarm_id,
            "callback_url": self.callback_url,
        }
        if a.device_id:
            payload["device"] = {"id": a.device_id, "type": device.type if device else "unknown"}
        return payload

    def _source_devices(self, a, device) -> list[dict]:
        """The devices alarm ``a`` is based on, as far as the site says: its device, or the
        household's devices that pass the rule's device filters (for inactivity: its
        activity sensors). At most ``MAX_DEVICES``."""
        from gateway.uplink.case_system import MAX_DEVICES

        if device is not None:
            return [{"id": device.id, "type": device.type}]
        if a.household_id is None:
            return []
        rules = self.site.rules.rules if self.site.rules is not None else []
        rule = next((r for r in rules if r.id == a.rule_id), None)
        types: set[str] | None = None
        if rule is not None and getattr(rule, "kind", "") == "inactivity":
            from rules.inactivity import SOURCE_DEVICE_TYPES

            types = set().union(*(SOURCE_DEVICE_TYPES.get(k, frozenset())
                                  for k in rule.sources))
        out: list[dict] = []
        for d in self.site.devices.devices:
            if d.household != a.household_id or (types is not None and d.type not in types):
                continue
            if rule is not None and ((rule.devices and d.id not in rule.devices) or
                                     (rule.device_types and d.type not in rule.device_types)):
                continue
            out.append({"id": d.id, "type": d.type})
            if len(out) == MAX_DEVICES:
                break
        return out

    # -- queries ---------------------------------------------------------------------
    def list(self, state: str | None = None, limit: int = 200, since_id: int = 0) -> list[dict]:
        sql = "SELECT * FROM alarms WHERE id > ?"
        params: list = [since_id]
        if state == "open":
            sql += " AND state != 'resolved'"
        elif state:
            sql += " AND state = ?"
            params.append(state)
        sql += (" ORDER BY CASE state WHEN 'resolved' THEN 1 ELSE 0 END, "
                "CASE severity WHEN 'critical' THEN 0 WHEN 'major' THEN 1 WHEN 'minor' THEN 2 "
                "ELSE 3 END, id DESC LIMIT ?")
        params.append(limit)
        return [self._decoded(r) for r in self.store.query(sql, tuple(params))]

    def get(self, alarm_id: int, with_events: bool = False) -> dict:
        row = self.store.query_one("SELECT * FROM alarms WHERE id=?", (alarm_id,))
        if row is None:
            raise AlarmNotFound(f"alarm {alarm_id} not found")
        out = self._decoded(row)
        if with_events:
            out["events"] = [dict(e, detail=json.loads(e["detail"])) for e in self.store.query(
                "SELECT ts, action, actor, detail FROM alarm_events WHERE alarm_id=? ORDER BY id",
                (alarm_id,))]
        return out


    def history(self, f: HistoryFilter, limit: int = 100,
                offset: int = 0) -> tuple[int, list[dict]]:
        """(total matching, one page newest first) of alarms matching ``f``."""
        where, params = f.sql()
        total = self.store.query_one(f"SELECT count(*) AS n FROM alarms WHERE {where}",
                                     tuple(params))["n"]
        rows = self.store.query(f"SELECT * FROM alarms WHERE {where} ORDER BY id DESC "
                                f"LIMIT ? OFFSET ?", (*params, limit, offset))
        return total, [self._decoded(r) for r in rows]

    def _decoded(self, row: dict) -> dict:
        out = _decode(row)
        out["escalation_stopped"] = (out["state"] == "raised"
                                     and self.escalation_stopped(out["case_status"]))
        return out

    def device_tests(self, device_id: str | None = None, limit: int = 50) -> list[dict]:
        """Presses of devices in test mode, newest first."""
        sql = "SELECT * FROM device_tests"
        params: tuple = ()
        if device_id is not None:
            sql += " WHERE device_id=?"
            params = (device_id,)
        rows = self.store.query(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
        return [dict(r, value=json.loads(r["value"]) if r["value"] else None) for r in rows]

    def faults(self, open_only: bool = True, limit: int = 1000) -> list[dict]:
        """Device faults (not alarms) raised by the supervision rules, newest first."""
        sql = "SELECT * FROM device_faults"
        if open_only:
            sql += " WHERE cleared_at IS NULL"
        return self.store.query(sql + " ORDER BY raised_at DESC LIMIT ?", (limit,))


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    """Filters of the alarm history; every field optional (None = any)."""

    state: str | None = None            # open | raised | acknowledged | resolved
    severity: str | None = None
    category: str | None = None
    household_id: str | None = None
    grid_cell: str | None = None
    device_id: str | None = None
    since: str | None = None            # ISO 8601, compared with raised_at
    until: str | None = None
    include_tests: bool = False

    def sql(self) -> tuple[str, list]:
        clauses: list[str] = []
        params: list = []
        if self.state == "open":
            clauses.append("state != 'resolved'")
        elif self.state:
            clauses.append("state = ?")
            params.append(self.state)
        for column in ("severity", "category", "household_id", "grid_cell", "device_id"):
            value = getattr(self, column)
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.since:
            clauses.append("raised_at >= ?")
            params.append(self.since)
        if self.until:
            clauses.append("raised_at < ?")
            params.append(self.until)
        if not self.include_tests:
            clauses.append("test = 0")
        return (" AND ".join(clauses) or "1=1"), params


def _write_journal(conn: sqlite3.Connection, entries: list[tuple[str, dict, int]],
                   reopened: set[str]) -> None:
    """The engine's bookkeeping of each key, with the id of the alarm open with that key now
    (None where none is, or where this transaction opened it for a trigger the engine took
    for an update: its entry describes the old alarm). A retried older batch never
    overwrites a newer entry (``version``)."""
    rows = []
    for key, entry, version in entries:
        alarm_id = None
        if entry.get("open") is not None and key not in reopened:
            row = conn.execute("SELECT id FROM alarms WHERE key=? AND state!='resolved'",
                               (key,)).fetchone()
            alarm_id = row[0] if row else None
        rows.append((key, alarm_id, json.dumps(entry, separators=(",", ":")), version))
    conn.executemany(
        "INSERT INTO alarm_book (key, alarm_id, state, version) VALUES (?,?,?,?) "
        "ON CONFLICT(key) DO UPDATE SET alarm_id=excluded.alarm_id, state=excluded.state, "
        "version=excluded.version WHERE excluded.version > alarm_book.version", rows)


def _create_device_tables(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS device_tests (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                 " device_id TEXT NOT NULL, rule_id TEXT NOT NULL, ts TEXT NOT NULL, value TEXT)")
    conn.execute("CREATE INDEX IF NOT EXISTS device_tests_device ON device_tests(device_id, id)")
    conn.execute("CREATE TABLE IF NOT EXISTS device_faults (key TEXT PRIMARY KEY,"
                 " fault TEXT NOT NULL, device_id TEXT, household_id TEXT, grid_cell TEXT,"
                 " severity TEXT NOT NULL, message_zh TEXT NOT NULL, message_en TEXT NOT NULL,"
                 " raised_at TEXT NOT NULL, cleared_at TEXT)")


def _decode(row: dict) -> dict:
    row = dict(row)
    row["value"] = json.loads(row["value"]) if row.get("value") else None
    row["test"] = bool(row["test"])
    # a refused case in words for the card (never the raw reply): docs/case-system.md 9
    row["case_refusal"] = refusal(row.get("case_error"), bool(row.get("case_id")))
    return row
