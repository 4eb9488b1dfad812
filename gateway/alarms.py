"""Alarm lifecycle: raised -> acknowledged -> resolved, each transition with who and when.

Rule actions (``rules.actions``) and staff commands become transactions in the store. Every
transition that the grid case system must hear about writes its outbox row in the *same*
transaction, so an alarm is never changed without its case being told (and vice versa).

A repeated trigger while an alarm with the same key is open updates it (count, last value)
instead of opening a second one; the store enforces this with a unique index on open keys.
"""

from __future__ import annotations

import builtins
import json
import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime

from edge_config.loader import SiteConfig
from gateway import GatewayError
from gateway.case_refusals import refusal
from gateway.kernel.clock import utc_iso
from gateway.metrics import Metrics
from gateway.model import Severity
from gateway.store import Row, Store, Tx, append_event, devices, inbox, outbox, record_audit
from gateway.store import alarms as alarm_rows
from gateway.store import commands as command_rows
from gateway.store.alarms import HistoryFilter
from gateway.store.events import call_with_request, calls_of, events_of

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

    # -- rule actions ----------------------------------------------------------------
    async def apply(self, actions: Iterable, inbox_seqs: Iterable[int] = (),
                    journal: Iterable[tuple[str, dict, int]] = (), *,
                    hold_s: float = 0.0) -> list[Change]:
        """Apply rule actions, write the engine's alarm bookkeeping (``journal``: entries
        of ``rules.AlarmBook.journal``) and mark the inbox rows that caused them processed,
        atomically (``hold_s``: see ``Store.write``). An action for an alarm that is not open
        is never dropped silently: a trigger raises a new alarm (``Change.reopened``),
        anything else is recorded where it can be, counted
        (``gateway_orphan_actions_total{action}``) and logged."""
        actions = list(actions)
        seqs = list(inbox_seqs)
        entries = list(journal)

        def tx(conn: Tx) -> tuple[list[Change], list[tuple[str, str, str]]]:
            changes: list[Change] = []
            orphans: list[tuple[str, str, str]] = []
            for action in actions:
                handler = getattr(self, f"_on_{type(action).__name__}", None)
                if handler is not None:
                    change = handler(conn, action, orphans)
                    if change is not None:
                        changes.append(change)
            if entries:
                alarm_rows.write_journal(conn, entries, {c.key for c in changes if c.reopened})
            if seqs:
                inbox.mark_processed(conn, seqs, _now())
            return changes, orphans

        changes, orphans = await self.store.write(tx, hold_s=hold_s)
        for action, key, note in orphans:
            if self.metrics is not None:
                self.metrics.inc("gateway_orphan_actions_total", action=action)
            log.warning("rule action %s for alarm %s, which is not open: %s", action, key, note)
        if changes:
            self.on_change(changes)
        return changes

    def _open_by_key(self, conn: Tx, key: str) -> Row | None:
        return alarm_rows.open_by_key(conn, key)

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
        return alarm_rows.open_id(self.store, key)

    def engine_state(self, fired: Collection[str] | None = None) -> EngineState:
        """The rule engine's alarm and fault bookkeeping as the store has it (see
        ``rules.Engine.adopt_store``): journal entries, open alarms, open faults, and the
        keys whose last alarm ended with its condition (cleared) and is resolved (of
        ``fired`` only, when given: ``rules.Engine.fired_keys``)."""
        from rules.alarms import StoredAlarm

        journal, ids, version = alarm_rows.read_journal(self.store)
        stored = [StoredAlarm(r["key"], r["rule_id"], Severity(r["severity"]),
                              r["state"] == "acknowledged"
                              or self.escalation_stopped(r["case_status"]),
                              r["count"], r["escalation_tier"],
                              datetime.fromisoformat(r["raised_at"]).timestamp(),
                              r["cleared_at"] is not None, (r["message_zh"], r["message_en"]),
                              ids.get(r["key"]) == r["id"])
                  for r in alarm_rows.open_alarms(self.store)]
        faults = devices.open_fault_keys(self.store)
        ended = alarm_rows.ended_keys(self.store, fired)
        return EngineState(journal, stored, version, faults, ended)

    def _on_RaiseAlarm(self, conn: Tx, a, orphans: list | None = None) -> Change:
        ts = a.ts.isoformat() if isinstance(a.ts, datetime) else str(a.ts)
        now = _now()
        row = self._open_by_key(conn, a.key)
        if row is not None:
            alarm_rows.retrigger(conn, row["id"], a.value, now)
            append_event(conn, row["id"], "retriggered", f"rule:{a.rule_id}", now, value=a.value)
            return Change(row["id"], "updated", a.key, a.rule_id)
        alarm_id = alarm_rows.insert(
            conn, key=a.key, rule_id=a.rule_id, category=a.category, severity=str(a.severity),
            device_id=a.device_id, household_id=a.household_id, grid_cell=a.grid_cell,
            message_zh=a.message_zh, message_en=a.message_en, value=a.value, test=a.test,
            occurred_at=ts, now=now)
        append_event(conn, alarm_id, "raised", f"rule:{a.rule_id}", now, value=a.value,
                     occurred_at=ts)
        if getattr(a, "then", ()):   # the rule's commands (linkage): planned with the alarm
            append_event(conn, alarm_id, command_rows.PLANNED, f"rule:{a.rule_id}", now,
                         then=[c.to_json() for c in a.then])
        if not a.test:
            self._enqueue(conn, alarm_id, "case.create", self._case_payload(a, alarm_id, ts), now)
        return Change(alarm_id, "raised", a.key, a.rule_id)

    def _on_UpdateAlarm(self, conn: Tx, a, orphans: list) -> Change | None:
        row = self._open_by_key(conn, a.key)
        if row is None:
            if a.again is not None:    # a trigger: the alarm was resolved here meanwhile
                change = self._on_RaiseAlarm(conn, a.again)
                return Change(change.alarm_id, "raised", a.key, a.again.rule_id, True)
            orphans.append(("update", a.key, "flapping note dropped"))
            return None
        now = _now()
        cleared = None if a.again is not None else row["cleared_at"]   # a trigger: active
        alarm_rows.update(conn, row["id"], count=max(a.count, row["count"]),
                          message_zh=a.message_zh, message_en=a.message_en, cleared_at=cleared,
                          now=now)
        append_event(conn, row["id"], "updated", SYSTEM_ACTOR, now, count=a.count)
        return Change(row["id"], "updated", a.key)

    def _on_ClearAlarm(self, conn: Tx, a, orphans: list) -> Change | None:
        row = self._open_by_key(conn, a.key)
        if row is None:
            last = alarm_rows.last_by_key(conn, a.key)
            if last is None:
                orphans.append(("clear", a.key, "no alarm with this key"))
                return None
            now = _now()   # recorded on the alarm that was resolved before the clear came
            alarm_rows.mark_cleared(conn, last["id"], now)
            append_event(conn, last["id"], "cleared", "device", now, reason=a.reason,
                         after_resolved=True)
            orphans.append(("clear", a.key, f"recorded on resolved alarm {last['id']}"))
            return Change(last["id"], "cleared", a.key)
        now = _now()
        alarm_rows.clear(conn, row["id"], now)
        append_event(conn, row["id"], "cleared", "device", now, reason=a.reason)
        if a.auto_resolve:
            self._resolve_tx(conn, row, "device", "cancelled_by_resident", a.reason or "")
            return Change(row["id"], "resolved")
        self._enqueue_update(conn, row, {"event": "cleared", "reason": a.reason}, now)
        return Change(row["id"], "cleared")

    def _on_Escalate(self, conn: Tx, a, orphans: list) -> Change | None:
        row = self._open_by_key(conn, a.key)
        if row is None:
            orphans.append(("escalate", a.key, f"tier {a.tier} not sent"))
            return None
        if (row["state"] != "raised" or a.tier <= row["escalation_tier"]
                or self.escalation_stopped(row["case_status"])):
            return None   # acknowledged or the case taken (the engine hears of it next), or
            #               this tier notified already
        now = _now()
        alarm_rows.escalate(conn, row["id"], a.tier, a.tier_name, now)
        append_event(conn, row["id"], "escalated", SYSTEM_ACTOR, now, tier=a.tier,
                     tier_name=a.tier_name, targets=list(a.targets or []))
        return Change(row["id"], "escalated")

    def _on_CareEnded(self, conn: Tx, a, orphans: list) -> None:
        # a household's care state ended by itself (gateway.household_care)
        from gateway.household_care import ended_by_rule

        ended_by_rule(conn, a)

    def _on_TestRecord(self, conn: Tx, a, orphans: list) -> None:
        # A device in test/maintenance mode: recorded for commissioning, never an alarm.
        ts = a.ts.isoformat() if isinstance(a.ts, datetime) else str(a.ts)
        devices.record_test(conn, a.device_id, a.rule_id, ts, a.value)

    def _on_RaiseFault(self, conn: Tx, a, orphans: list) -> None:
        ts = a.ts.isoformat() if isinstance(a.ts, datetime) else str(a.ts)
        devices.raise_fault(conn, key=a.key, fault=a.fault, device_id=a.device_id,
                            household_id=a.household_id, grid_cell=a.grid_cell,
                            severity=str(a.severity), message_zh=a.message_zh,
                            message_en=a.message_en, raised_at=ts)

    def _on_ClearFault(self, conn: Tx, a, orphans: list) -> None:
        ts = a.ts.isoformat() if isinstance(a.ts, datetime) else str(a.ts)
        devices.clear_fault(conn, a.key, ts)

    # -- staff commands --------------------------------------------------------------
    async def acknowledge(self, alarm_id: int, actor: str, note: str = "") -> dict:
        def tx(conn: Tx) -> None:
            row = _row_of(conn, alarm_id)
            if row["state"] != "raised":
                raise AlarmStateError(f"alarm {alarm_id} is {row['state']}, not raised")
            now = _now()
            alarm_rows.acknowledge(conn, alarm_id, actor, note, now)
            append_event(conn, alarm_id, "acknowledged", actor, now, note=note)
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

        def tx(conn: Tx) -> None:
            row = _row_of(conn, alarm_id)
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

    def _resolve_tx(self, conn: Tx, row: Row, actor: str, reason: str,
                    note: str) -> None:
        now = _now()
        alarm_rows.resolve(conn, row["id"], actor, reason, note, now)
        append_event(conn, row["id"], "resolved", actor, now, reason=reason, note=note)
        self._enqueue_update(conn, row, {"event": "resolved", "by": actor, "reason": reason,
                                         "note": note}, now)

    async def record_call(self, alarm_id: int, actor: str, contact: str, outcome: str,
                          note: str = "", request_id: str | None = None) -> dict:
        """Record the outcome of one call of the alarm's call plan (``contact``: a
        ``gateway.call_plans.Call`` key of this alarm's plan) in its history, and queue it
        for the case as a ``note`` update with the call (contract 1.2) in the same
        transaction. A ``request_id`` seen on this alarm before records nothing again (a
        retried request). Raises AlarmNotFound, AlarmStateError (resolved), ValueError
        (an outcome or a contact the alarm's plan does not have)."""
        from gateway.call_plans import CALL_OUTCOMES, OUTCOME_WORDS, plan_for

        if outcome not in CALL_OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}: one of {', '.join(CALL_OUTCOMES)}")

        def tx(conn: Tx) -> bool:
            row = _row_of(conn, alarm_id)
            if request_id is not None and call_with_request(conn, alarm_id, request_id):
                return False
            if row["state"] == "resolved":
                raise AlarmStateError(f"alarm {alarm_id} is resolved: its calls are closed")
            plan = plan_for(self.site, row["category"], row["household_id"], row["grid_cell"])
            call = next((c for c in plan if c.key == contact), None)
            if call is None:
                raise ValueError(f"{contact!r} is not in the call plan of alarm {alarm_id} "
                                 f"(its calls: {', '.join(c.key for c in plan) or 'none'})")
            now = _now()
            who = {"contact": call.key, "kind": call.kind, "name": call.name,
                   "relation": call.relation}
            append_event(conn, alarm_id, "call", actor, now, **who, outcome=outcome,
                         note=note, **({"request_id": request_id} if request_id else {}))
            record_audit(conn, actor, "alarm.call", str(alarm_id), contact=call.key,
                         outcome=outcome)
            words = f"电话联系 {call.label()}：{OUTCOME_WORDS[outcome]['zh']}"
            self._enqueue_update(conn, row, {"event": "note", "by": actor,
                                             "note": f"{words}。{note}" if note else words,
                                             "call": dict(who, outcome=outcome)}, now)
            return True

        if await self.store.write(tx):
            self.on_change([Change(alarm_id, "call")])
        return self.get(alarm_id)

    # -- case system outbox ----------------------------------------------------------
    def case_note(self, conn: Tx, alarm_id: int, note: str, by: str | None = None) -> None:
        """A note for the alarm's case (an update of kind ``note``), in the caller's
        transaction (the linkage's outcome of a command); nothing for a test alarm."""
        row = alarm_rows.by_id(conn, alarm_id)
        if row is not None:
            self._enqueue_update(conn, row, {"event": "note", "by": by, "note": note[:1000]},
                                 _now())

    def _enqueue(self, conn: Tx, alarm_id: int, topic: str, payload: dict,
                 now: str) -> None:
        outbox.enqueue(conn, alarm_id, topic, payload, now, self._key_prefix)

    def _enqueue_update(self, conn: Tx, row: Row, update: dict, now: str) -> None:
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
    # (below this method, ``list`` in the class body names it: annotations say builtins.list)
    def list(self, state: str | None = None, limit: int = 200, since_id: int = 0) -> list[dict]:
        rows = [self._decoded(r) for r in alarm_rows.board(self.store, state, limit, since_id)]
        calls = calls_of(self.store, [r["id"] for r in rows])
        commands = command_rows.commands_of(self.store, [r["id"] for r in rows])
        self._named([c for cs in commands.values() for c in cs])    # one pass for the board
        for r in rows:
            r["calls"] = calls.get(r["id"], [])
            r["commands"] = commands.get(r["id"], [])
        return rows

    def _named(self, commands: builtins.list[dict]) -> builtins.list[dict]:
        """Commands with their device's name (devices.yaml ``name``; the id without one)."""
        if not commands:
            return commands
        wanted = {c.get("device_id") for c in commands}
        names = {d.id: d.name for d in self.site.devices.devices if d.id in wanted and d.name}
        for c in commands:
            c["device_name"] = names.get(str(c.get("device_id")), c.get("device_id"))
        return commands

    def get(self, alarm_id: int, with_events: bool = False) -> dict:
        row = alarm_rows.get(self.store, alarm_id)
        if row is None:
            raise AlarmNotFound(f"alarm {alarm_id} not found")
        out = self._decoded(row)
        out["calls"] = calls_of(self.store, [alarm_id]).get(alarm_id, [])
        out["commands"] = self._named(
            command_rows.commands_of(self.store, [alarm_id]).get(alarm_id, []))
        if with_events:
            out["events"] = events_of(self.store, alarm_id)
        return out

    def history(self, f: HistoryFilter, limit: int = 100,
                offset: int = 0) -> tuple[int, builtins.list[dict]]:
        """(total matching, one page newest first) of alarms matching ``f``."""
        total, page = alarm_rows.history(self.store, f, limit, offset)
        return total, [self._decoded(r) for r in page]

    def _decoded(self, row: dict) -> dict:
        out = _decode(row)
        out["escalation_stopped"] = (out["state"] == "raised"
                                     and self.escalation_stopped(out["case_status"]))
        return out

    def device_tests(self, device_id: str | None = None, limit: int = 50) -> builtins.list[dict]:
        """Presses of devices in test mode, newest first."""
        return devices.tests(self.store, device_id, limit)

    def faults(self, open_only: bool = True, limit: int = 1000) -> builtins.list[dict]:
        """Device faults (not alarms) raised by the supervision rules, newest first."""
        return devices.faults(self.store, open_only, limit)


def _row_of(conn: Tx, alarm_id: int) -> Row:
    """The alarm's row in a staff command's transaction; AlarmNotFound if there is none."""
    row = alarm_rows.by_id(conn, alarm_id)
    if row is None:
        raise AlarmNotFound(f"alarm {alarm_id} not found")
    return row


def _decode(row: dict) -> dict:
    row = dict(row)
    row["value"] = json.loads(row["value"]) if row.get("value") else None
    row["test"] = bool(row["test"])
    # a refused case in words for the card (never the raw reply): docs/case-system.md 9
    row["case_refusal"] = refusal(row.get("case_error"), bool(row.get("case_id")))
    return row
