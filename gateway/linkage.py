"""Linkage (联动): the commands alarms send to devices — resolved, made safe, sent, confirmed, recorded.

What a rule's ``then`` asks (rules/commands.py) is planned in the raise transaction
(``commands_planned``, gateway/alarms.py). After that commit the change bus tells
:meth:`Linkage.on_changes`; the linkage task then

1. **resolves** the plan to devices of the site (``device``; a ``household`` or ``grid`` cell,
   ``same`` being the alarm's, optionally of one ``type``; without a type only the devices
   that can do the action) and writes ``commands_resolved`` with one ``command_requested``
   per device, in one transaction (a crash before it: the plan is resolved at the next start;
   after it: see below);
2. **makes it safe**: a rule's commands are only ``SAFE_ACTIONS`` (the spec refuses others, and
   this checks again); a device in test or maintenance mode (gateway/device_modes.py) is never
   actuated — ``command_skipped`` records what would have been sent; each device takes at
   most ``rate_limit`` commands per ``rate_window_s`` (the kernel's ``RateLimit``), the rest
   are skipped; a device no writer reaches is skipped (``no_writer``);
3. **sends** through the device's transport (:class:`WriterRegistry`: each transport's
   ``CommandWriter``) and **waits for the device's reported state**
   (``CONFIRMING_KIND``/``EXPECTED_STATE``, readings seen through :meth:`Linkage.hooked`)
   for ``confirm_timeout_s``, ``attempts`` times at most; then ``command_confirmed``, or
   ``command_not_confirmed`` with a device fault ``command_not_confirmed`` (cleared by the
   device's next confirmed command).

Every step is an ``alarm_events`` row (the alarm's history, gateway/store/commands.py) and an
audit entry, committed before the next step starts, and each is told on the change bus (the
card updates). Staff's commands from the card (:meth:`Linkage.request`) take steps 2–3; the
API checks their permission (inverse actions need ``commands.restore``).

**Restart.** A command in flight when the gateway stopped is never finished silently: at
start each requested command without an end gets ``command_interrupted`` (its history says
how far it got: requested, sent, or failed). An automatic command — always a safe action —
whose alarm is still open is then requested again (``retry_of``: the interrupted one) and
carried out as new; a staff command is not sent again (staff see it interrupted on the card
and decide). So an open, a silence or a restore is never sent by a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway import GatewayError
from gateway.alarms import SYSTEM_ACTOR, AlarmNotFound, Change
from gateway.device_modes import effective_mode
from gateway.kernel.clock import utc_iso
from gateway.kernel.commands import (CONFIRMING_KIND, EXPECTED_STATE, INVERSE, SAFE_ACTIONS,
                                     Action, Command, CommandError, CommandWriter,
                                     ListsDevices)
from gateway.kernel.resilience import RateLimit
from gateway.metrics import Metrics
from gateway.model import Quality, Reading
from gateway.store import Store, Tx, append_event, devices, record_audit
from gateway.store import alarms as alarm_rows
from gateway.store import commands as command_rows

__all__ = ["INVERSE_ACTIONS", "Linkage", "LinkageError", "LinkageSettings", "WriterRegistry",
           "FAULT"]

log = logging.getLogger(__name__)

#: the device fault of a command its device never confirmed
FAULT = "command_not_confirmed"
#: the actions only staff send, with ``commands.restore`` (open, silence, restore)
INVERSE_ACTIONS: frozenset[Action] = frozenset(INVERSE.values())


class LinkageError(GatewayError):
    """A staff command that cannot be taken; ``code`` says why (gateway/api/errors.py)."""

    def __init__(self, message: str, code: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class LinkageSettings:
    """How long a device has to confirm (per attempt), how many attempts, the rate limit."""

    confirm_timeout_s: float = 15.0
    attempts: int = 3
    rate_limit: int = 6
    rate_window_s: float = 60.0


class WriterRegistry:
    """Device -> the transport's writer: the first registered writer that supports the
    device and action (each transport's writer knows its own devices)."""

    def __init__(self) -> None:
        self._writers: list[CommandWriter] = []

    def add(self, writer: CommandWriter) -> None:
        self._writers.append(writer)

    def writer_for(self, device_id: str, action: Action) -> CommandWriter | None:
        return next((w for w in self._writers if w.supports(device_id, action)), None)

    def actions_of(self, device_id: str) -> list[Action]:
        """What the device can be commanded to do, in ``Action`` order."""
        return [a for a in Action if self.writer_for(device_id, a) is not None]

    def reachable(self, device_ids: Iterable[str]) -> set[str]:
        """Those of ``device_ids`` that some writer can command (any action). A writer
        that lists its devices (``reachable()``) is asked once, not per device and action:
        asking 5,683 devices one by one held the event loop 88 ms (the first alarm card
        after each start or site edit, docs/benchmarks.md "path", sixth round)."""
        ids = set(device_ids)
        out: set[str] = set()
        for w in self._writers:
            if isinstance(w, ListsDevices):
                out |= ids.intersection(w.reachable())
            else:
                out.update(d for d in ids if any(w.supports(d, a) for a in Action))
        return out


#: ``AlarmBook.case_note``: a note for the alarm's case, in the caller's transaction
CaseNote = Callable[[Tx, int, str, "str | None"], None]


@dataclass
class _Job:
    alarm_id: int
    command: Command
    automatic: bool
    actor: str


class Linkage:
    """Carries out alarms' commands (see module docstring). ``run()`` is its task."""

    def __init__(self, store: Store, site: Callable[[], Any], registry: WriterRegistry, *,
                 on_change: Callable[[list[Change]], None] | None = None,
                 metrics: Metrics | None = None, settings: LinkageSettings | None = None,
                 case_note: CaseNote | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.site = site
        self.registry = registry
        self.on_change = on_change or (lambda changes: None)
        self.metrics = metrics
        self.settings = settings or LinkageSettings()
        self.case_note = case_note
        self._limit = RateLimit(self.settings.rate_limit, self.settings.rate_window_s,
                                clock=clock)
        self._plans: list[int] = []          # raised alarms whose plan is to be resolved
        self._wake = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        #: (device, kind) -> [(expected value, future)] of commands waiting for their state
        self._waiting: dict[tuple[str, str], list[tuple[bool, asyncio.Future[bool]]]] = {}
        self._in_flight = 0
        #: (site, households, grid cells) with a device a writer reaches: :meth:`can_command`
        self._index: tuple[Any, set[str], set[str]] | None = None

    def health(self, writer_state: str) -> dict:
        """The ``/healthz`` entry: the MQTT command writer's state and the commands in
        flight (being sent or waiting for their device's state). Never holds readiness: a
        gateway that cannot command a valve still raises the alarm."""
        return {"state": writer_state if self._tg is not None else "stopped",
                "in_flight": self._in_flight}

    # -- inputs -------------------------------------------------------------------------
    def on_changes(self, changes: Sequence[Change]) -> None:
        """Change-bus subscriber: a raised alarm may have planned commands."""
        raised = [c.alarm_id for c in changes if c.action == "raised"]
        if raised:
            self._plans.extend(raised)
            self._wake.set()

    def hooked(self, on_reading: Callable[[Reading], None]) -> Callable[[Reading], None]:
        """``on_reading`` that also lets a reported state confirm a waiting command."""
        waiting = self._waiting

        def both(reading: Reading) -> None:
            on_reading(reading)
            if waiting and (reading.device_id, reading.kind.value) in waiting:
                self._seen(reading)
        return both

    def _seen(self, reading: Reading) -> None:
        if reading.quality is not Quality.GOOD:
            return
        for expected, fut in self._waiting.get((reading.device_id, reading.kind.value), []):
            if reading.value == expected and not fut.done():
                fut.set_result(True)

    # -- the task ------------------------------------------------------------------------
    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                await self._recover()
                while True:
                    await self._wake.wait()
                    self._wake.clear()
                    plans, self._plans = self._plans, []
                    await self._resolve_plans(plans)     # all waiting: one transaction
            finally:
                self._tg = None

    async def _recover(self) -> None:
        """Finish honestly what a stop left (module docstring, "Restart")."""
        for c in command_rows.unfinished(self.store):
            retry = (c.get("automatic") and c.get("action") in {a.value for a in SAFE_ACTIONS}
                     and c["alarm_state"] != "resolved")
            await self._step(c["alarm_id"], "command_interrupted", c, reason="gateway_restart",
                             resent=bool(retry))
            log.warning("command %s (%s to %s) was in flight when the gateway stopped%s",
                        c["command_id"], c["action"], c["device_id"],
                        "; sending it again" if retry else "; not sent again")
            if retry:
                job = await self._request(c["alarm_id"], c["device_id"], Action(c["action"]),
                                          c["actor"], c.get("params") or {}, automatic=True,
                                          retry_of=c["command_id"])
                self._start(job)
        await self._resolve_plans(command_rows.unresolved_plans(self.store))

    # -- step 1: a plan to devices ---------------------------------------------------------
    async def _resolve_plans(self, alarm_ids: list[int]) -> None:
        """Resolve the plans of these alarms (those that have one, not yet resolved) and
        start their commands."""
        if not alarm_ids:
            return
        site = self.site()

        def tx(conn: Tx) -> tuple[list[_Job], list[int]]:
            jobs: list[_Job] = []
            done: list[int] = []
            for alarm_id in dict.fromkeys(alarm_ids):
                made = self._resolve_tx(conn, site, alarm_id)
                if made is not None:
                    jobs += made
                    done.append(alarm_id)
            return jobs, done

        jobs, done = await self.store.write(tx)
        if done:
            self.on_change([Change(alarm_id, "command") for alarm_id in done])
        for job in jobs:
            self._start(job)

    def _resolve_tx(self, conn: Tx, site: Any, alarm_id: int) -> list[_Job] | None:
        """One alarm's plan to devices, in the caller's transaction; None: no plan to
        resolve (none, or resolved already)."""
        plan, resolved = command_rows.plan_of(conn, alarm_id)
        if not plan or resolved:
            return None
        alarm = alarm_rows.by_id(conn, alarm_id)
        if alarm is None:
            return None
        now = utc_iso()
        targets: list[tuple[str, Action, dict]] = []
        for intent in plan:
            action = Action(intent["action"])
            if action not in SAFE_ACTIONS:   # the spec refuses these; never sent anyway
                log.error("alarm %s: rule command %s is not a safe action: dropped",
                          alarm_id, action.value)
                continue
            for device_id in self._targets(site, alarm, intent["target"], action):
                if (device_id, action) not in {(d, a) for d, a, _ in targets}:
                    targets.append((device_id, action, intent.get("params") or {}))
        append_event(conn, alarm_id, command_rows.RESOLVED, SYSTEM_ACTOR, now,
                     devices=[d for d, _, _ in targets],
                     actions=sorted({i["action"] for i in plan}))
        actor = f"rule:{alarm['rule_id']}"
        return [self._request_tx(conn, alarm_id, d, a, actor, p, automatic=True)
                for d, a, p in targets]

    def _targets(self, site: Any, alarm: Any, target: dict, action: Action) -> list[str]:
        """The site's devices a command target names, for the alarm ``alarm``."""
        if "device" in target:
            return [target["device"]] if _device(site, target["device"]) is not None else []
        want_type = target.get("type")
        if "household" in target:
            hh = alarm["household_id"] if target["household"] == "same" else target["household"]
            if hh is None:
                return []
            found = [d for d in site.devices.devices if d.household == hh]
        else:
            cell = alarm["grid_cell"] if target["grid"] == "same" else target["grid"]
            if cell is None:
                return []
            found = [d for d in site.devices.devices if _cell_of(site, d) == cell]
        if want_type is not None:
            return [d.id for d in found if d.type == want_type]
        return [d.id for d in found if self.registry.writer_for(d.id, action) is not None]

    # -- staff --------------------------------------------------------------------------
    def can_command(self, household_id: str | None, grid_cell: str | None) -> bool:
        """Whether an alarm of this household (else grid cell) has a device staff may
        command (the card's 联动控制); made once per site and asked per card."""
        site = self.site()
        index = self._index
        if index is None or index[0] is not site:
            households: set[str] = set()
            cells: set[str] = set()
            reach = self.registry.reachable(d.id for d in site.devices.devices)
            for d in site.devices.devices:
                if d.id in reach:
                    if d.household:
                        households.add(d.household)
                    cell = _cell_of(site, d)
                    if cell:
                        cells.add(cell)
            index = self._index = (site, households, cells)
        if household_id:
            return household_id in index[1]
        return grid_cell is not None and grid_cell in index[2]

    def commandable(self, alarm: dict) -> list[dict]:
        """The devices staff may command from this alarm's card: those of its household
        (else of its grid cell) that a writer reaches, with their actions and mode."""
        site = self.site()
        if alarm.get("household_id"):
            found = [d for d in site.devices.devices if d.household == alarm["household_id"]]
        elif alarm.get("grid_cell"):
            found = [d for d in site.devices.devices
                     if _cell_of(site, d) == alarm["grid_cell"]]
        else:
            found = []
        out = []
        for d in found:
            actions = self.registry.actions_of(d.id)
            if actions:
                out.append({"device_id": d.id, "name": d.name or d.id, "type": d.type,
                            "mode": effective_mode(d),
                            "actions": [a.value for a in actions]})
        return out

    async def request(self, alarm: dict, device_id: str, action: Action, actor: str) -> dict:
        """A staff command from the alarm's card; returns the command as the card shows it.
        ``LinkageError`` (code ``not_commandable``) when the device is not one of the
        alarm's commandable devices or cannot do ``action``; ``linkage_stopped`` when the
        linkage is not running. The permission is the API's to check."""
        devices_ = {d["device_id"]: d for d in self.commandable(alarm)}
        if device_id not in devices_ or action.value not in devices_[device_id]["actions"]:
            raise LinkageError(f"device {device_id!r} cannot {action.value} from alarm "
                               f"{alarm['id']}", "not_commandable")
        if self._tg is None:
            raise LinkageError("the linkage is not running", "linkage_stopped")
        job = await self._request(alarm["id"], device_id, action, actor, {}, automatic=False)
        self._start(job)
        return {"command_id": job.command.command_id, "device_id": device_id,
                "action": action.value, "status": "requested"}

    # -- steps 2 and 3 --------------------------------------------------------------------
    async def _request(self, alarm_id: int, device_id: str, action: Action, actor: str,
                       params: dict, *, automatic: bool, retry_of: str | None = None) -> _Job:
        def tx(conn: Tx) -> _Job:
            if alarm_rows.by_id(conn, alarm_id) is None:
                raise AlarmNotFound(f"alarm {alarm_id} not found")
            return self._request_tx(conn, alarm_id, device_id, action, actor, params,
                                    automatic=automatic, retry_of=retry_of)
        job = await self.store.write(tx)
        self.on_change([Change(alarm_id, "command")])
        return job

    def _request_tx(self, conn: Tx, alarm_id: int, device_id: str, action: Action, actor: str,
                    params: dict, *, automatic: bool, retry_of: str | None = None) -> _Job:
        command = Command(f"{alarm_id}-{uuid.uuid4().hex[:10]}", device_id, action, params)
        detail: dict[str, Any] = {"command_id": command.command_id, "device_id": device_id,
                                  "action": action.value, "params": params,
                                  "automatic": automatic}
        if retry_of:
            detail["retry_of"] = retry_of
        append_event(conn, alarm_id, command_rows.REQUESTED, actor, utc_iso(), **detail)
        record_audit(conn, "rule" if automatic else actor, "command.request", device_id,
                     **_audited(alarm_id, detail))
        return _Job(alarm_id, command, automatic, actor)

    def _start(self, job: _Job) -> None:
        if self._tg is None:    # pragma: no cover - jobs are made by the running task
            raise LinkageError("the linkage is not running", "linkage_stopped")
        self._tg.create_task(self._carry(job), name=f"command[{job.command.command_id}]")

    async def _carry(self, job: _Job) -> None:
        """Steps 2 and 3 for one command; every outcome recorded."""
        self._in_flight += 1
        try:
            await self._carry_out(job)
        finally:
            self._in_flight -= 1

    async def _carry_out(self, job: _Job) -> None:
        c = job.command
        base = {"command_id": c.command_id, "device_id": c.device_id, "action": c.action.value,
                "automatic": job.automatic, "actor": job.actor}
        device = _device(self.site(), c.device_id)
        mode = effective_mode(device) if device is not None else "normal"
        if job.automatic and c.action not in SAFE_ACTIONS:
            await self._step(job.alarm_id, "command_skipped", base, reason="unsafe")
            return
        if device is None:
            await self._step(job.alarm_id, "command_skipped", base, reason="unknown_device")
            return
        if mode != "normal":    # never actuated: record what would have been sent
            await self._step(job.alarm_id, "command_skipped", base, reason=f"mode_{mode}",
                             would_send={"action": c.action.value, "params": c.params})
            return
        writer = self.registry.writer_for(c.device_id, c.action)
        if writer is None:
            await self._step(job.alarm_id, "command_skipped", base, reason="no_writer")
            return
        if not self._limit.allow(c.device_id):
            await self._step(job.alarm_id, "command_skipped", base, reason="rate_limited",
                             would_send={"action": c.action.value, "params": c.params})
            return
        key = (c.device_id, CONFIRMING_KIND[c.action])
        expected = EXPECTED_STATE[c.action]
        last_error = ""
        for attempt in range(1, self.settings.attempts + 1):
            fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            entry = (expected, fut)
            self._waiting.setdefault(key, []).append(entry)   # before the send: no race
            try:
                try:
                    started = time.monotonic()
                    await writer.send(c)
                except CommandError as exc:
                    last_error = str(exc)
                    await self._step(job.alarm_id, "command_failed", base, attempt=attempt,
                                     reason=last_error)
                    await asyncio.sleep(min(2.0, self.settings.confirm_timeout_s / 4))
                    continue
                await self._step(job.alarm_id, "command_sent", base, attempt=attempt)
                self._observe("gateway_command_send_seconds", time.monotonic() - started)
                try:
                    async with asyncio.timeout(self.settings.confirm_timeout_s):
                        await fut
                except TimeoutError:
                    continue
                await self._step(job.alarm_id, "command_confirmed", base, attempt=attempt,
                                 value=expected, fault_cleared=True)
                self._count(c.action, "confirmed")
                return
            finally:
                waiters = self._waiting.get(key, [])
                if entry in waiters:
                    waiters.remove(entry)
                if not waiters:
                    self._waiting.pop(key, None)
        reason = "send_failed" if last_error else "no_state_reported"
        await self._step(job.alarm_id, "command_not_confirmed", base,
                         attempts=self.settings.attempts, reason=reason,
                         timeout_s=self.settings.confirm_timeout_s, fault_raised=True)
        self._count(c.action, "not_confirmed")

    async def _step(self, alarm_id: int, step: str, base: dict, **detail: Any) -> None:
        """Record one step of a command: the alarm's history, the audit log (and the
        device fault of an unconfirmed command, raised or cleared), then the change bus."""
        site = self.site()
        raise_fault = detail.pop("fault_raised", False)
        clear_fault = detail.pop("fault_cleared", False)
        info = {k: base[k] for k in ("command_id", "device_id", "action")}

        def tx(conn: Tx) -> None:
            now = utc_iso()
            append_event(conn, alarm_id, step, SYSTEM_ACTOR, now, **info, **detail)
            record_audit(conn, SYSTEM_ACTOR, "command." + step.removeprefix("command_"),
                         info["device_id"], **_audited(alarm_id, {**info, **detail}))
            fault_key = f"linkage:{info['device_id']}:{FAULT}"
            if raise_fault:
                d = _device(site, info["device_id"])
                hh = d.household if d is not None else None
                name = (d.name if d is not None and d.name else info["device_id"])
                devices.raise_fault(
                    conn, key=fault_key, fault=FAULT, device_id=info["device_id"],
                    household_id=hh, grid_cell=_cell_of(site, d) if d is not None else None,
                    severity="major", raised_at=now,
                    message_zh=f"{name} 未确认联动指令（{info['action']}）",
                    message_en=f"{name} did not confirm the command {info['action']}")
            if clear_fault:
                devices.clear_fault(conn, fault_key, now)
            if self.case_note is not None and step in _CASE_NOTED:
                self.case_note(conn, alarm_id, _case_note(site, step, base, detail),
                               None if base.get("automatic") else base.get("actor"))

        await self.store.write(tx)
        self.on_change([Change(alarm_id, "command")])

    def _count(self, action: Action, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.inc("gateway_commands_total", action=action.value, outcome=outcome)

    def _observe(self, name: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.observe(name, seconds)


#: the steps the alarm's case hears of (a note: what was done to which device)
_CASE_NOTED = frozenset({"command_confirmed", "command_not_confirmed", "command_skipped"})


def _case_note(site: Any, step: str, base: dict, detail: dict) -> str:
    """A command's outcome in words for the case system (zh-CN, from the catalogue)."""
    from gateway.catalogue import text

    action = base["action"]
    verb, what = text("zh", f"cmd_{action}"), text("zh", f"cmd_done_{action}")
    if step == "command_confirmed":
        key = "cmd_st_confirmed_auto" if base.get("automatic") else "cmd_st_confirmed"
        said = text("zh", key, what=what)
    elif step == "command_skipped":
        said = text("zh", "cmd_st_skipped", verb=verb,
                    reason=text("zh", f"cmdr_{detail.get('reason')}", default=""))
    else:
        said = text("zh", "cmd_st_not_confirmed", verb=verb)
    d = _device(site, base["device_id"])
    name = d.name if d is not None and d.name else base["device_id"]
    return f"{text('zh', 'cmd_note')}{said}（{name}）"


def _audited(alarm_id: int, detail: dict) -> dict:
    """A step's detail for the audit log (whose own ``action`` is the step: the command's
    action is ``command_action`` there)."""
    out = {("command_action" if k == "action" else k): v for k, v in detail.items()}
    out["alarm_id"] = alarm_id
    return out


def _device(site: Any, device_id: str) -> Any:
    return next((d for d in site.devices.devices if d.id == device_id), None)


def _cell_of(site: Any, d: Any) -> str | None:
    if d.grid_cell:
        return d.grid_cell
    hh = site.household(d.household) if d.household else None
    return hh.grid_cell if hh is not None else None
