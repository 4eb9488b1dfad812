"""Modbus TCP and RTU polling: one task per bus, requests serialized, dead devices fenced off.

A *bus* is one Modbus endpoint the gateway talks to: an RS-485 line behind a serial port
(RTU), or a TCP endpoint (a meter, or an RS-485-to-Ethernet gateway) addressing devices by
unit id. :class:`ModbusBus` owns one pymodbus client and polls every device on it once per
``period_s``, one request at a time (an RS-485 line carries one conversation at a time, and
a TCP-to-RTU gateway serializes anyway). Each device's register map comes from its profile;
adjacent registers are merged into reads of at most 125 registers
(:func:`drivers.codecs.modbus_registers.plan_reads`).

One dead device must not slow the others, so each cycle runs in two passes:

1. *healthy* devices (last poll succeeded, or never polled), in a fixed order, each read with
   the bus timeout and ``retries`` retries;
2. *failing* devices in the time left before the next cycle, one attempt each, with a
   timeout no longer than that slack. After ``quarantine_after`` failed polls in a row a
   device is *quarantined*: reported unavailable (an ``availability`` reading False, logged
   once) and only probed after a capped exponential backoff with jitter. Its first good poll
   brings it back (``availability`` True).

Commands (the linkage's :class:`~gateway.kernel.commands.CommandWriter`): a device whose
profile has ``commands`` is written through :meth:`ModbusBus.send`: a coil write (function
05) or a holding-register write (06/16). The write is queued for the bus task and made
between two devices' polls (or at once when the bus is idle between cycles): the bus never
carries two conversations, and a command waits at most for the poll in progress. It is
answered, or :class:`~gateway.kernel.commands.CommandError` names the device (no answer
after ``retries`` retries, an exception response, a bus offline or lost meanwhile; a
command sent while the bus is still connecting, as after a restart, waits for it). After a
write the device is re-polled early (``confirm_polls_s`` after it: at once, then while a
valve motor runs) so that the reading which confirms the command comes fast.

Bad answers (Modbus exception responses, short replies, timeouts) are counted by reason
(``gateway_rejected_total{transport="modbus"}``) and reported to ``on_error``; a value the
device could not give is never reported as 0. An exception our own decoding of a block of
registers raises (a bug) costs that block only: counted as ``decode_error``, reported to
``decode_watch`` (the device's fault ``decode_error``); the device answered, so it is not
quarantined. A lost connection is re-established with
capped exponential backoff and jitter, without restarting anything else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient, ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from drivers import DECODE_ERROR, DecodeError, DecodeWatch, IntakeSink
from drivers.command_queue import CommandQueue
from drivers.codecs.modbus_registers import BIT_FUNCTIONS, ReadRequest, WriteRequest, decode_block
from gateway.kernel.clock import utc
from gateway.kernel.commands import Action, Command, CommandError
from gateway.kernel.component import StateTracker
from gateway.kernel.metrics import MetricsSink
from gateway.kernel.model import Kind, Reading
from gateway.kernel.resilience import Backoff, RateLimitedLog

__all__ = ["BusEndpoint", "ModbusBus", "ModbusDevice", "PollPolicy", "PollStats"]

log = logging.getLogger(__name__)
# pymodbus logs every timeout at ERROR; we count and log them ourselves, once per transition.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def _stop_if_cancelled() -> None:
    """Honour a cancellation pymodbus dropped. It awaits each answer with
    ``asyncio.wait_for``, which on Python 3.11 returns the answer and swallows a cancel that
    arrives in the same loop turn (CPython gh-86296): a bus told to stop would poll on (a
    test's ``running()`` then waits forever). The task still counts the request."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@dataclass(frozen=True, slots=True)
class BusEndpoint:
    """Where a bus is: ``tcp`` (host, port) or ``rtu`` (serial port and line settings)."""

    kind: str                      # "tcp" | "rtu"
    host: str = "127.0.0.1"
    port: int = 502
    device: str = ""               # serial port path for rtu
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8

    def __post_init__(self) -> None:
        if self.kind not in ("tcp", "rtu"):
            raise ValueError(f"bus kind {self.kind!r}: tcp or rtu")
        if self.kind == "rtu" and not self.device:
            raise ValueError("an rtu bus needs a serial device path")

    def describe(self) -> str:
        return f"tcp://{self.host}:{self.port}" if self.kind == "tcp" else \
            f"rtu:{self.device}@{self.baudrate}{self.bytesize}{self.parity}{self.stopbits}"


@dataclass(frozen=True, slots=True)
class PollPolicy:
    period_s: float = 1.0
    timeout_s: float = 0.5
    retries: int = 1
    quarantine_after: int = 3
    quarantine_base_s: float = 5.0
    quarantine_max_s: float = 300.0
    min_probe_s: float = 0.05      # slack below this is not worth a probe
    #: after a command's write, the device is polled again this long after it (seconds)
    confirm_polls_s: tuple[float, ...] = (0.0, 1.0, 3.0)

    def __post_init__(self) -> None:
        if not (self.period_s > 0 and self.timeout_s > 0 and self.retries >= 0
                and all(d >= 0 for d in self.confirm_polls_s)
                and self.quarantine_after >= 1 and 0 < self.quarantine_base_s
                <= self.quarantine_max_s):
            raise ValueError("poll policy: positive period/timeout, retries >= 0, "
                             "quarantine_after >= 1, 0 < base <= max")


@dataclass(frozen=True, slots=True)
class ModbusDevice:
    """One device on a bus: its unit id, its planned reads, its place in the site, and the
    write each command action makes (its profile's ``commands``)."""

    device_id: str
    unit: int
    requests: tuple[ReadRequest, ...]
    device_type: str = ""
    household_id: str | None = None
    grid_cell: str | None = None
    commands: tuple[tuple[Action, WriteRequest], ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.unit <= 247:
            raise ValueError(f"{self.device_id}: unit id {self.unit} outside 0..247")
        if not self.requests:
            raise ValueError(f"{self.device_id}: nothing to read")

    def takes(self, action: Action) -> bool:
        """Whether its profile has a write for ``action``."""
        return any(a == action for a, _ in self.commands)


@dataclass(slots=True)
class PollStats:
    """Per-device bookkeeping (also what the benchmark reads)."""

    ok: int = 0
    failed: int = 0
    consecutive_failures: int = 0
    quarantined: bool = False
    next_probe: float = 0.0
    last_ok: float | None = None              # monotonic time of the last good poll
    last_error: str = ""
    intervals: list[float] = field(default_factory=list)   # only when record_intervals
    _probe_delays: Iterator[float] | None = None   # set when quarantined


class ModbusBus:
    """Polls the devices of one bus until cancelled (``run()``); writes commands
    (``supports()``, ``send()``: a :class:`~gateway.kernel.commands.CommandWriter`)."""

    def __init__(self, bus_id: str, endpoint: BusEndpoint, devices: list[ModbusDevice],
                 sink: IntakeSink, metrics: MetricsSink, *, policy: PollPolicy | None = None,
                 on_error: Callable[[str, str], None] | None = None,
                 decode_watch: DecodeWatch | None = None,
                 record_intervals: bool = False):
        ids = [d.device_id for d in devices]
        if len(set(ids)) != len(ids):
            raise ValueError(f"bus {bus_id}: duplicate device ids")
        self.bus_id = bus_id
        self.endpoint = endpoint
        self.devices = list(devices)
        self.sink = sink
        self.metrics = metrics
        self.policy = policy or PollPolicy()
        self.on_error = on_error or (lambda device_id, reason: None)
        self.decode_watch = decode_watch or DecodeWatch()
        self.record_intervals = record_intervals
        self.stats: dict[str, PollStats] = {d.device_id: PollStats() for d in devices}
        self.status = StateTracker(f"modbus bus {bus_id} ({endpoint.describe()})", "starting",
                                   logger=log)
        self.cycles = 0
        self.overruns = 0
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._rlog = RateLimitedLog(log)
        self._reconnect = Backoff(base_s=0.5, cap_s=30.0)
        # a quarantined device is probed no sooner than half the nominal delay
        self._probe = Backoff(base_s=self.policy.quarantine_base_s,
                              cap_s=self.policy.quarantine_max_s, jitter="equal")
        self._by_id = {d.device_id: d for d in devices}
        self.commands: CommandQueue[tuple[ModbusDevice, WriteRequest]] = CommandQueue(
            "modbus", metrics, self.policy.confirm_polls_s)

    # -- connection ---------------------------------------------------------------------
    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        ep, p = self.endpoint, self.policy
        # retries=0 and no automatic reconnect: both are this class's policy, not pymodbus's
        client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if ep.kind == "tcp":
            client = AsyncModbusTcpClient(ep.host, port=ep.port, timeout=p.timeout_s,
                                          retries=0, reconnect_delay=0,
                                          name=f"modbus[{self.bus_id}]")
        else:
            client = AsyncModbusSerialClient(ep.device, baudrate=ep.baudrate, parity=ep.parity,
                                             stopbits=ep.stopbits, bytesize=ep.bytesize,
                                             timeout=p.timeout_s, retries=0, reconnect_delay=0,
                                             name=f"modbus[{self.bus_id}]")
        # pymodbus drops a TCP connection after 3 unanswered requests in a row: a few dead
        # units next to each other (or writes queued to them) would cut off the live ones.
        # Silent devices are this class's business (quarantine); the connection goes only
        # when every device of the bus failed one full round in a row.
        client.set_max_no_responses((p.retries + 1) * len(self.devices) + 3)
        return client

    async def run(self) -> None:
        delays = self._reconnect.delays()
        while True:
            client = self._make_client()
            self._client = client
            try:
                try:
                    async with asyncio.timeout(max(5.0, self.policy.timeout_s * 4)):
                        ok = await client.connect()
                except TimeoutError:
                    ok = False
                if not ok:
                    self.status.set("offline", f"cannot connect to {self.endpoint.describe()}")
                    self.metrics.inc("gateway_driver_reconnects_total", driver="modbus")
                    await asyncio.sleep(next(delays))
                    continue
                self.status.set("online")
                delays = self._reconnect.delays()
                await self._poll_forever(client)
            except ConnectionException as exc:
                self.status.set("offline", f"connection lost: {exc}")
                self.metrics.inc("gateway_driver_reconnects_total", driver="modbus")
                self._all_unavailable()
                self.commands.fail_all(f"connection lost: {exc}", self._who())
                await asyncio.sleep(next(delays))
            finally:
                client.close()
                self.commands.fail_all("is not connected (stopped or reconnecting)",
                                       self._who())

    @property
    def state(self) -> str:
        """``starting``, ``online`` or ``offline`` (the health endpoint shows it)."""
        return self.status.value

    # -- the cycle ----------------------------------------------------------------------
    async def _poll_forever(self, client: ModbusBaseClient) -> None:
        period = self.policy.period_s
        start = time.monotonic()
        k = 0
        while True:
            _stop_if_cancelled()
            due = start + k * period
            now = time.monotonic()
            if now - due > period:
                # the bus could not keep up: skip the cycles that are already over
                skipped = int((now - due) // period)
                self.overruns += skipped
                self.metrics.inc("gateway_modbus_overruns_total", skipped, bus=self.bus_id)
                k += skipped
                due = start + k * period
            await self._cycle(client, due + period)
            if not client.connected:
                raise ConnectionException(f"bus {self.bus_id} disconnected")
            self.cycles += 1
            k += 1
            await self._idle_until(client, due + period)

    async def _cycle(self, client: ModbusBaseClient, cycle_end: float) -> None:
        p = self.policy
        failing: list[ModbusDevice] = []
        for dev in self.devices:
            st = self.stats[dev.device_id]
            if st.consecutive_failures:
                failing.append(dev)
                continue
            await self._between(client)
            await self._poll(client, dev, p.timeout_s, p.retries)
        now = time.monotonic()
        for dev in failing:
            st = self.stats[dev.device_id]
            if st.quarantined and now < st.next_probe:
                continue
            await self._between(client)
            now = time.monotonic()
            slack = cycle_end - now - p.min_probe_s
            if slack < p.min_probe_s:
                break      # no time left this cycle; healthy devices keep their period
            await self._poll(client, dev, min(p.timeout_s, slack), 0)
            now = time.monotonic()

    async def _poll(self, client: ModbusBaseClient, dev: ModbusDevice, timeout_s: float,
                    retries: int) -> None:
        readings: list[Reading] = []
        ts = utc()
        clean = True
        for req in dev.requests:
            for attempt in range(retries + 1):
                try:
                    registers = await self._read(client, dev, req, timeout_s)
                    readings += decode_block(req, registers, device_id=dev.device_id, ts=ts)
                    break
                except DecodeError as exc:
                    if attempt < retries and exc.reason == "timeout":
                        continue
                    self._failed(dev, exc)
                    return
                except (ConnectionException, asyncio.CancelledError):
                    raise
                except Exception as exc:  # noqa: BLE001 - our decoding failed on this block
                    clean = False
                    self._undecodable(dev, req, exc)
                    break
        self._succeeded(dev, readings)
        if clean:
            self.decode_watch.ok(dev.device_id)

    async def _read(self, client: ModbusBaseClient, dev: ModbusDevice, req: ReadRequest,
                    timeout_s: float) -> list[int]:
        where = f"bus {self.bus_id} unit {dev.unit} (device {dev.device_id}) " \
                f"fc{req.function} @{req.address}+{req.count}"
        read = {1: client.read_coils, 2: client.read_discrete_inputs,
                3: client.read_holding_registers, 4: client.read_input_registers}[req.function]
        try:
            async with asyncio.timeout(timeout_s + 0.5):   # pymodbus times out first
                rr = await read(req.address, count=req.count, device_id=dev.unit)
        except (TimeoutError, ModbusIOException) as exc:
            raise DecodeError("timeout", f"no answer within {timeout_s:.3g} s",
                              where=where) from exc
        except ConnectionException:
            raise
        except ModbusException as exc:
            raise DecodeError("modbus_error", str(exc), where=where) from exc
        if rr.isError():
            code = getattr(rr, "exception_code", None)
            raise DecodeError("modbus_exception", f"exception response, code {code}",
                              where=where)
        if req.function in BIT_FUNCTIONS:       # bits come padded to whole bytes
            return [int(b) for b in rr.bits[:req.count]]
        return list(rr.registers)

    # -- commands -----------------------------------------------------------------------
    def supports(self, device_id: str, action: Action) -> bool:
        """Whether ``device_id`` is on this bus and its profile has a write for ``action``."""
        dev = self._by_id.get(device_id)
        return dev is not None and dev.takes(action)

    async def send(self, command: Command) -> None:
        """Write ``command`` on the bus (serialized with the polls); returns once the device
        answered the write. ``CommandError`` naming the device when it cannot be written."""
        dev = self._by_id.get(command.device_id)
        write = dict(dev.commands).get(command.action) if dev is not None else None
        if dev is None or write is None:
            raise CommandError(f"device {command.device_id}: no {command.action} command on "
                               f"Modbus bus {self.bus_id} (not on the bus, or its profile has "
                               f"no such command)")
        if self.status.value == "offline":     # starting: queued, served once connected
            raise CommandError(f"device {dev.device_id}: {self._who()} is offline")
        p = self.policy
        # the bus task takes it before the next device's poll: at most one poll (of a
        # failing device, one timeout), the writes queued before it, then its own attempts
        attempts_s = (p.retries + 1) * (p.timeout_s + 0.5)
        await self.commands.submit(dev.device_id, command, (dev, write),
                                   limit_s=2 * p.timeout_s + attempts_s + 1.0,
                                   per_ahead_s=attempts_s, who=self._who())

    def _who(self) -> str:
        return f"Modbus bus {self.bus_id} ({self.endpoint.describe()})"

    async def _between(self, client: ModbusBaseClient) -> None:
        """Between two polls: queued writes, then early polls that are due."""
        while (pending := self.commands.next()) is not None:
            dev, write = pending.target
            try:
                await self._write(client, dev, write)
            except CommandError as exc:
                self.commands.settle(pending, exc)
                continue
            except ConnectionException as exc:
                self.commands.settle(pending, CommandError(
                    f"device {dev.device_id}: {self._who()} connection lost during the "
                    f"write: {exc}"))
                raise
            self.commands.settle(pending, None)
        while (device_id := self.commands.due_poll()) is not None:
            await self._poll(client, self._by_id[device_id], self.policy.timeout_s, 0)
            if self.commands.waiting:
                await self._between(client)     # a command that came meanwhile goes first
                return

    async def _idle_until(self, client: ModbusBaseClient, until: float) -> None:
        """Wait for the next cycle, serving writes and early polls meanwhile."""
        while True:
            _stop_if_cancelled()
            await self._between(client)
            if time.monotonic() >= until:
                return
            await self.commands.wait(until)

    async def _write(self, client: ModbusBaseClient, dev: ModbusDevice,
                     write: WriteRequest) -> None:
        where = f"device {dev.device_id} (Modbus bus {self.bus_id} unit {dev.unit}, " \
                f"{write.describe()})"
        p = self.policy
        for attempt in range(p.retries + 1):
            try:
                async with asyncio.timeout(p.timeout_s + 0.5):   # pymodbus times out first
                    if write.function == 5:
                        rr = await client.write_coil(write.address, bool(write.values[0]),
                                                     device_id=dev.unit)
                    elif write.function == 6:
                        rr = await client.write_register(write.address, write.values[0],
                                                         device_id=dev.unit)
                    else:
                        rr = await client.write_registers(write.address, list(write.values),
                                                          device_id=dev.unit)
            except (TimeoutError, ModbusIOException) as exc:
                if attempt < p.retries:
                    continue
                raise CommandError(f"{where}: no answer within {p.timeout_s:.3g} s "
                                   f"({p.retries + 1} attempts)") from exc
            except ConnectionException:
                raise
            except ModbusException as exc:
                raise CommandError(f"{where}: {exc}") from exc
            if rr.isError():
                code = getattr(rr, "exception_code", None)
                raise CommandError(f"{where}: exception response, code {code}")
            return

    # -- outcomes -----------------------------------------------------------------------
    def _succeeded(self, dev: ModbusDevice, readings: list[Reading]) -> None:
        st = self.stats[dev.device_id]
        now = time.monotonic()
        if self.record_intervals and st.last_ok is not None:
            st.intervals.append(now - st.last_ok)
        st.ok += 1
        st.last_ok = now
        st.consecutive_failures = 0
        if st.quarantined:
            st.quarantined = False
            log.info("modbus device %s (bus %s unit %d) answers again", dev.device_id,
                     self.bus_id, dev.unit)
            readings.append(Reading(dev.device_id, Kind.AVAILABILITY, True, utc(),
                                    metric="availability"))
        self.metrics.inc("gateway_ingest_messages_total", transport="modbus")
        self._offer(dev, readings)

    def _failed(self, dev: ModbusDevice, exc: DecodeError) -> None:
        st = self.stats[dev.device_id]
        st.failed += 1
        st.consecutive_failures += 1
        st.last_error = exc.reason
        self.metrics.inc("gateway_rejected_total", reason=exc.reason, transport="modbus")
        self.on_error(dev.device_id, exc.reason)
        if not st.quarantined:
            self._rlog.warning((exc.reason, dev.device_id), "modbus %s: %s [%s]", exc.where,
                               exc.detail, exc.reason)
        p = self.policy
        if st.quarantined:
            assert st._probe_delays is not None
            st.next_probe = time.monotonic() + next(st._probe_delays)
        elif st.consecutive_failures >= p.quarantine_after:
            st.quarantined = True
            st._probe_delays = delays = self._probe.delays()
            st.next_probe = time.monotonic() + next(delays)
            log.warning("modbus device %s (bus %s unit %d) quarantined after %d failed polls "
                        "(%s); probing with backoff", dev.device_id, self.bus_id, dev.unit,
                        st.consecutive_failures, exc.reason)
            self._offer(dev, [Reading(dev.device_id, Kind.AVAILABILITY, False, utc(),
                                      metric="availability")])

    def _undecodable(self, dev: ModbusDevice, req: ReadRequest, exc: Exception) -> None:
        """Our decoding raised on a block the device answered: that block's readings are
        lost (counted), the device gets fault ``decode_error`` (logged once per cause)."""
        self.metrics.inc("gateway_rejected_total", reason=DECODE_ERROR, transport="modbus")
        self.on_error(dev.device_id, DECODE_ERROR)
        self.decode_watch.failed(dev.device_id, "modbus", exc,
                                 f"bus {self.bus_id} unit {dev.unit} fc{req.function} "
                                 f"@{req.address}+{req.count}")

    def _all_unavailable(self) -> None:
        for dev in self.devices:
            st = self.stats[dev.device_id]
            if not st.quarantined:
                st.quarantined = True
                st.consecutive_failures = max(st.consecutive_failures, 1)
                st._probe_delays = self._probe.delays()
                st.next_probe = 0.0      # probe as soon as the bus is back
                self._offer(dev, [Reading(dev.device_id, Kind.AVAILABILITY, False, utc(),
                                          metric="availability")])

    def _offer(self, dev: ModbusDevice, readings: list[Reading]) -> None:
        if readings:
            self.sink.offer([r.with_site(household_id=dev.household_id, grid_cell=dev.grid_cell,
                                         device_type=dev.device_type) for r in readings], None)
