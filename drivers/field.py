"""Field buses of a site: one task per Modbus bus, per serial line and per DC-09 receiver.

:func:`plan_field` turns the site configuration (``gateway.yaml`` buses, lines and
``dc09_receivers``, ``devices.yaml`` devices with ``modbus:``/``serial:``/``dc09:``
transports, their profiles) into plans; :class:`FieldDrivers` runs one named task per plan
(``modbus[<bus>]``, ``serial[<line>]``, ``dc09[<receiver>]``) and, when the installer edits
the site, restarts only the ones whose plan changed (:meth:`FieldDrivers.rebind`), without
restarting the gateway. A DC-09 receiver runs when it has accounts, even without devices
(its panels then count as unknown devices the installer sees).

Commands (linkage): :meth:`FieldDrivers.writer_for` gives the running bus or line that can
write commands to a device (a Modbus device whose profile has ``commands``, a CJ/T 188 meter
with a valve), and ``FieldDrivers`` is itself a
:class:`~gateway.kernel.commands.CommandWriter` that routes each command to the driver
running the device at that moment (so a rebind, which replaces drivers, never leaves the
linkage holding a stopped one). What a device takes is read from the plans, so the answer
does not depend on whether its driver has started yet (the linkage asks at start-up).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from drivers import DecodeWatch, IntakeSink
from drivers.codecs.modbus_registers import plan_reads
from drivers.profiles import ModbusProfile, ProfileMisfit, ProfileSet, fit_profile
from drivers.serial_line import LineSettings, SerialDevice, SerialLine, takes_command
from gateway.kernel.commands import Action, Command, CommandError, CommandWriter
from gateway.kernel.errors import ConfigError
from gateway.kernel.metrics import MetricsSink

if TYPE_CHECKING:     # imported where used: pysiaalarm loads only for a site with DC-09 panels,
    # pymodbus (about 2 MB of a Pi's memory) only for a site with Modbus buses
    from drivers.modbus import BusEndpoint, ModbusBus, ModbusDevice, PollPolicy
    from drivers.sia import Dc09Account, Dc09Device, ReceiverSettings, SiaReceiver

__all__ = ["BusPlan", "FieldDrivers", "LinePlan", "Plan", "ReceiverPlan", "plan_field"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BusPlan:
    bus_id: str
    endpoint: BusEndpoint
    policy: PollPolicy
    devices: tuple[ModbusDevice, ...]


@dataclass(frozen=True)
class LinePlan:
    line_id: str
    settings: LineSettings
    devices: tuple[SerialDevice, ...]


@dataclass(frozen=True)
class ReceiverPlan:
    receiver_id: str
    settings: ReceiverSettings
    accounts: tuple[Dc09Account, ...]
    devices: tuple[Dc09Device, ...]


Plan = BusPlan | LinePlan | ReceiverPlan


def plan_field(site: Any, profiles: ProfileSet) -> dict[str, Plan]:
    """Plans keyed ``modbus:<bus id>`` / ``serial:<line id>`` / ``dc09:<receiver id>``;
    ``ConfigError`` naming the device when its bus, line or receiver is unknown or its
    profile does not fit (``fit_profile``), naming the account when its key cannot be read
    (:func:`drivers.sia.account_key`).
    ``site`` is an ``edge_config`` site, typed ``Any``: drivers/ may not import edge_config
    (docs/architecture.md, "Layers")."""
    gw = site.gateway
    by_bus: dict[str, list[ModbusDevice]] = {b.id: [] for b in gw.modbus_buses}
    by_line: dict[str, list[SerialDevice]] = {ln.id: [] for ln in gw.serial_lines}
    protocols = {ln.id: ln.protocol for ln in gw.serial_lines}
    by_receiver: dict[str, list[Dc09Device]] = {r.id: [] for r in gw.dc09_receivers}
    problems: list[str] = []
    for d in site.devices.devices:
        where = f"devices.yaml: devices.{d.id}"
        if d.dc09 is not None:
            if d.dc09.receiver not in by_receiver:
                problems.append(f"{where}.dc09.receiver: unknown DC-09 receiver "
                                f"{d.dc09.receiver!r}")
                continue
            try:
                fit_profile(profiles, d.id, d.type, d.profile, "contact_id",
                            transport=f"SIA DC-09 receiver {d.dc09.receiver!r}")
            except ProfileMisfit as exc:
                problems.append(f"{where}.profile: {exc}")
                continue
            grid = d.grid_cell or (site.household(d.household).grid_cell if d.household
                                   else None)
            from drivers.sia import Dc09Device

            by_receiver[d.dc09.receiver].append(Dc09Device(
                d.id, d.dc09.account.upper(), d.dc09.zone, d.type, d.household, grid))
            continue
        if d.modbus is None and d.serial is None:
            continue
        if d.modbus is not None and d.modbus.bus not in by_bus:
            problems.append(f"{where}.modbus.bus: unknown bus {d.modbus.bus!r}")
            continue
        if d.serial is not None and d.serial.line not in by_line:
            problems.append(f"{where}.serial.line: unknown line {d.serial.line!r}")
            continue
        fmt = "modbus" if d.modbus else protocols[d.serial.line]
        transport = (f"Modbus bus {d.modbus.bus!r}" if d.modbus
                     else f"serial line {d.serial.line!r} ({fmt})")
        try:
            profile = fit_profile(profiles, d.id, d.type, d.profile, fmt, transport=transport)
        except ProfileMisfit as exc:
            problems.append(f"{where}.profile: {exc}")
            continue
        grid = d.grid_cell or (site.household(d.household).grid_cell if d.household else None)
        if d.modbus is not None:
            from drivers.modbus import ModbusDevice

            assert isinstance(profile, ModbusProfile)
            reads = tuple(plan_reads(profile.entries(), max_gap=profile.max_gap))
            by_bus[d.modbus.bus].append(ModbusDevice(d.id, d.modbus.unit, reads, d.type,
                                                     d.household, grid, profile.writes()))
        else:
            by_line[d.serial.line].append(SerialDevice(
                d.id, d.serial.address.upper(), profile, d.type, d.household, grid,
                d.serial.zone))
    receivers: dict[str, Plan] = {}
    for ri, r in enumerate(gw.dc09_receivers):
        from drivers.sia import Dc09Account, ReceiverSettings, account_key

        accounts = []
        for ai, a in enumerate(r.accounts):
            key = None
            if a.key is not None:
                try:
                    key = account_key(a.key, a.key_format, Path(site.directory),
                                      f"gateway.yaml: dc09_receivers[{ri}].accounts[{ai}].key")
                except ConfigError as exc:
                    problems += exc.issues
                    continue
            accounts.append(Dc09Account(a.account.upper(), key, a.supervision_s))
        receivers[f"dc09:{r.id}"] = ReceiverPlan(
            r.id, ReceiverSettings(r.host, r.port, r.protocol), tuple(accounts),
            tuple(by_receiver[r.id]))
    if problems:
        raise ConfigError(problems)
    plans: dict[str, Plan] = {}
    for b in gw.modbus_buses:
        from drivers.modbus import BusEndpoint, PollPolicy

        if b.tcp is not None:
            endpoint = BusEndpoint("tcp", host=b.tcp.host, port=b.tcp.port)
        else:
            endpoint = BusEndpoint("rtu", device=b.rtu.device, baudrate=b.rtu.baudrate,
                                   parity=b.rtu.parity, stopbits=b.rtu.stopbits,
                                   bytesize=b.rtu.bytesize)
        policy = PollPolicy(period_s=b.period_s, timeout_s=b.timeout_s, retries=b.retries,
                            quarantine_after=b.quarantine_after,
                            quarantine_base_s=min(5.0, b.quarantine_max_s),
                            quarantine_max_s=b.quarantine_max_s)
        plans[f"modbus:{b.id}"] = BusPlan(b.id, endpoint, policy, tuple(by_bus[b.id]))
    for ln in gw.serial_lines:
        settings = LineSettings(ln.device, ln.protocol, baudrate=ln.baudrate,
                                bytesize=ln.bytesize, parity=ln.parity, stopbits=ln.stopbits,
                                period_s=ln.period_s, timeout_s=ln.timeout_s,
                                ack=bytes.fromhex(ln.ack_hex or ""),
                                nak=bytes.fromhex(ln.nak_hex or ""))
        plans[f"serial:{ln.id}"] = LinePlan(ln.id, settings, tuple(by_line[ln.id]))
    plans.update(receivers)
    return plans


class FieldDrivers:
    """Runs the plans' drivers as named tasks; ``rebind()`` swaps changed ones; writes
    commands through them (``writer_for``, ``supports``, ``send``)."""

    def __init__(self, plans: dict[str, Plan], sink: IntakeSink,
                 metrics: MetricsSink, *, on_error: Callable[[str, str], None] | None = None,
                 on_unknown: Callable[[str, str, str], None] | None = None,
                 decode_watch: DecodeWatch | None = None):
        self.plans = plans
        self.sink = sink
        self.metrics = metrics
        self.on_error = on_error
        self.on_unknown = on_unknown
        self.decode_watch = decode_watch
        self.drivers: dict[str, ModbusBus | SerialLine | SiaReceiver] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tg: asyncio.TaskGroup | None = None

    def _build(self, plan: Plan) -> ModbusBus | SerialLine | SiaReceiver:
        if isinstance(plan, BusPlan):
            from drivers.modbus import ModbusBus

            return ModbusBus(plan.bus_id, plan.endpoint, list(plan.devices), self.sink,
                             self.metrics, policy=plan.policy, on_error=self.on_error,
                             decode_watch=self.decode_watch)
        transport = "serial" if isinstance(plan, LinePlan) else "dc09"
        unknown = None
        if self.on_unknown is not None:
            on_unknown = self.on_unknown
            unknown = lambda key, sample: on_unknown(key, transport, sample)  # noqa: E731
        if isinstance(plan, ReceiverPlan):
            from drivers.sia import SiaReceiver

            return SiaReceiver(plan.receiver_id, plan.settings, list(plan.accounts),
                               list(plan.devices), self.sink, self.metrics,
                               on_error=self.on_error, on_unknown=unknown,
                               decode_watch=self.decode_watch)
        return SerialLine(plan.line_id, plan.settings, list(plan.devices), self.sink,
                          self.metrics, on_error=self.on_error, on_unknown=unknown,
                          decode_watch=self.decode_watch)

    def _start(self, key: str) -> None:
        assert self._tg is not None
        plan = self.plans[key]
        driver = self._build(plan)
        self.drivers[key] = driver
        self._tasks[key] = self._tg.create_task(driver.run(), name=_task_name(plan))

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for key, plan in self.plans.items():
                if _runs(plan):
                    self._start(key)
            await asyncio.Event().wait()     # until cancelled; rebind() adds tasks meanwhile

    def rebind(self, plans: dict[str, Plan]) -> None:
        """Restart the buses/lines whose plan changed; stop removed ones; start new ones."""
        old, self.plans = self.plans, plans
        for key in set(old) | set(plans):
            if old.get(key) == plans.get(key) and key in self._tasks:
                continue
            task = self._tasks.pop(key, None)
            if task is not None:
                task.cancel()
                self.drivers.pop(key, None)
            if key in plans and _runs(plans[key]) and self._tg is not None:
                log.info("field bus %s: configuration changed, restarting its driver", key)
                self._start(key)

    # -- commands (linkage) -------------------------------------------------------------
    def writer_for(self, device_id: str) -> CommandWriter | None:
        """The running Modbus bus or serial line that writes commands to ``device_id``
        (one of its actions at least), or None. Ask again after a rebind: it replaces
        drivers (or use this object's own ``supports``/``send``)."""
        for key, driver in list(self.drivers.items()):
            # a bus's or a line's driver (a DC-09 receiver takes no commands); by its plan,
            # as ModbusBus is imported only for a site with Modbus buses
            if isinstance(self.plans.get(key), (BusPlan, LinePlan)):
                writer = cast("CommandWriter", driver)
                if any(writer.supports(device_id, action) for action in Action):
                    return writer
        return None

    def reachable(self) -> set[str]:
        """The devices of the plans' buses and lines that take a command (one at least)."""
        out: set[str] = set()
        for plan in list(self.plans.values()):
            if isinstance(plan, BusPlan):
                out.update(d.device_id for d in plan.devices if d.commands)
            elif isinstance(plan, LinePlan):
                out.update(d.device_id for d in plan.devices
                           if any(takes_command(d, a) for a in Action))
        return out

    def supports(self, device_id: str, action: Action) -> bool:
        """Whether a bus or line of the plans has ``device_id`` and a way to ``action``."""
        for plan in list(self.plans.values()):
            if isinstance(plan, BusPlan):
                if any(d.device_id == device_id and d.takes(action) for d in plan.devices):
                    return True
            elif isinstance(plan, LinePlan):
                if any(d.device_id == device_id and takes_command(d, action)
                       for d in plan.devices):
                    return True
        return False

    async def send(self, command: Command) -> None:
        """Write ``command`` through the driver running its device now; ``CommandError``
        naming the device when none can, or from the driver."""
        writer = self.writer_for(command.device_id)
        if writer is None:
            raise CommandError(f"device {command.device_id}: no running Modbus bus or serial "
                               f"line writes commands to it")
        await writer.send(command)

    @property
    def state(self) -> str:
        """``online`` when every bus and line is (or there are none), else ``degraded``;
        each one's own state is in :meth:`states`."""
        states = self.states().values()
        return "online" if all(st == "online" for st in states) else "degraded"

    def states(self) -> dict[str, str]:
        # read from the API's worker threads (/healthz) while a reload may replace drivers on
        # the loop: iterate a snapshot (list() of a dict is atomic under the GIL)
        return {key: d.state for key, d in list(self.drivers.items())}


def _runs(plan: Plan) -> bool:
    """A bus or line runs when it has devices; a DC-09 receiver when it has accounts."""
    return bool(plan.accounts if isinstance(plan, ReceiverPlan) else plan.devices)


def _task_name(plan: Plan) -> str:
    if isinstance(plan, BusPlan):
        return f"modbus[{plan.bus_id}]"
    if isinstance(plan, LinePlan):
        return f"serial[{plan.line_id}]"
    return f"dc09[{plan.receiver_id}]"
