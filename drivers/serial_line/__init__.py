"""Serial lines (RS-485 / RS-232 via pyserial, asyncio): DL/T 645 and CJ/T 188 meters, polled;
Contact ID lines printed by an alarm receiver, read.

One :class:`SerialLine` owns one port (a path such as ``/dev/ttyUSB0`` or a udev symlink) and
runs until cancelled. The package is split along its seams:

- ``transport``: the settings, the devices, the port read through the event loop
  (``loop.add_reader`` on the port's file descriptor, so a quiet line costs nothing), and
  :class:`LineLost`;
- ``meters``: :class:`~drivers.serial_line.meters.MeterPoller` (DL/T 645, CJ/T 188);
- ``receiver``: :class:`~drivers.serial_line.receiver.ContactIdReceiver` (Contact ID,
  ACK/NAK);
- here: :class:`SerialLine`, which supervises the port and keeps what both share (the
  intake, rejections, the devices' availability).

Supervision: when the adapter disappears (read/write fails with ``EIO``, the port reports
readiness but returns no data, or the path is gone) the line goes *offline* - logged once,
every device on it reported unavailable - and the port is reopened with capped exponential
backoff and jitter. When the path is back (the adapter plugged in again, possibly as a new
tty behind the same symlink) the line comes back *online* without restarting the gateway.

Commands (the linkage's :class:`~gateway.kernel.commands.CommandWriter`): a CJ/T 188 meter
whose profile has a valve takes ``close_valve`` / ``open_valve`` through
:meth:`SerialLine.send`. The valve frame is queued for the line's task and written between
two meters' polls (one conversation at a time on the half-duplex line), the meter's answer
checked (C=0x84; a refusal, C=0xC4, no answer after two attempts, or the line offline
is a :class:`~gateway.kernel.commands.CommandError` naming the device; a command sent while
the port is still being opened waits for it), and the meter is read again at once and 1 s
and 3 s later for the ``valve_open`` reading that confirms it.

Meters: every ``period_s`` each meter is asked for the items of its profile, one request
at a time (half-duplex RS-485), each answer awaited for ``timeout_s``. Replies go through
:class:`~drivers.codecs.framing.FrameSplitter`, so wake-up bytes, junk between frames and
replies split across reads are handled; every bad frame is counted by reason
(``gateway_rejected_total{transport="serial"}``). A meter that fails ``quarantine_after``
polls in a row is reported unavailable once and then polled only every few cycles (capped
backoff) so it does not eat the line's time.

An exception our own decoding raises on a meter's reply or a receiver's event (a bug, not a
``DecodeError``) costs that reply or event only: counted as ``decode_error``, reported to
``decode_watch`` (the device's fault ``decode_error``), and the receiver's line is still
acknowledged; the line's task goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import serial

from drivers import DECODE_ERROR, DecodeError, DecodeWatch, IntakeSink
from drivers.command_queue import CommandQueue
from drivers.profiles import Cjt188Profile
from drivers.serial_line.meters import MeterPoller
from drivers.serial_line.receiver import ContactIdReceiver
from drivers.serial_line.transport import (PROTOCOLS, UNDECODABLE, LineLost, LineSettings, Port,
                                           SerialDevice, Undecodable, open_port)
from gateway.kernel.clock import utc
from gateway.kernel.commands import Action, Command, CommandError
from gateway.kernel.component import StateTracker
from gateway.kernel.metrics import MetricsSink
from gateway.kernel.model import Kind, Reading
from gateway.kernel.resilience import Backoff, RateLimitedLog

__all__ = ["PROTOCOLS", "ContactIdReceiver", "LineLost", "LineSettings", "MeterPoller",
           "SerialDevice", "SerialLine", "takes_command"]

log = logging.getLogger(__name__)


#: the commands a CJ/T 188 meter with a valve takes
VALVE_ACTIONS = frozenset({Action.CLOSE_VALVE, Action.OPEN_VALVE})


def takes_command(dev: SerialDevice, action: Action) -> bool:
    """Whether ``dev`` takes ``action``: a CJ/T 188 meter with a valve, opened or closed."""
    return (action in VALVE_ACTIONS and isinstance(dev.profile, Cjt188Profile)
            and dev.profile.has_valve)


class SerialLine:
    """Polls meters on, or reads receiver lines from, one serial port until cancelled;
    writes valve commands to CJ/T 188 meters (``supports()``, ``send()``)."""

    def __init__(self, line_id: str, settings: LineSettings, devices: list[SerialDevice],
                 sink: IntakeSink, metrics: MetricsSink, *,
                 on_error: Callable[[str, str], None] | None = None,
                 on_unknown: Callable[[str, str], None] | None = None,
                 decode_watch: DecodeWatch | None = None):
        self.line_id = line_id
        self.settings = settings
        self.devices = list(devices)
        self.sink = sink
        self.metrics = metrics
        self.on_error = on_error or (lambda device_id, reason: None)
        self.on_unknown = on_unknown or (lambda key, sample: None)
        self.decode_watch = decode_watch or DecodeWatch()
        self.status = StateTracker(f"serial line {line_id} ({settings.device})", "starting", logger=log)
        self.opened = 0                       # times the port was (re)opened
        self._unavailable: set[str] = set()
        self.rlog = RateLimitedLog(log)
        self._reopen = Backoff(base_s=0.2, cap_s=30.0)
        self._by_id = {d.device_id: d for d in self.devices}
        self.commands: CommandQueue[SerialDevice] = CommandQueue("serial", metrics)
        self._meters = MeterPoller(self)
        self._receiver = ContactIdReceiver(self)
        self.polls_ok: dict[str, int] = self._meters.polls_ok

    # -- supervision ----------------------------------------------------------------------
    async def run(self) -> None:
        delays = self._reopen.delays()
        while True:
            try:
                port = self._open()
            except (OSError, serial.SerialException) as exc:
                self._offline(f"cannot open {self.settings.device}: {exc}")
                self.commands.fail_all(f"cannot open {self.settings.device}", self._who())
                await asyncio.sleep(next(delays))
                continue
            self.opened += 1
            self.status.set("online")
            delays = self._reopen.delays()
            try:
                if self.settings.protocol == "contact_id":
                    await self._receiver.run(port)
                else:
                    await self._meters.run(port)
            except LineLost as exc:
                self._offline(str(exc))
                self.metrics.inc("gateway_driver_reconnects_total", driver="serial")
                self.commands.fail_all(f"lost: {exc}", self._who())
                await asyncio.sleep(next(delays))
            finally:
                port.close()
                self.commands.fail_all("is closed (stopped or reopening)", self._who())

    def _open(self) -> Port:
        return open_port(self.settings)

    def _offline(self, why: str) -> None:
        if self.state != "offline":
            self.status.set("offline", why)
            for dev in self.devices:
                self.set_available(dev, False)

    @property
    def state(self) -> str:
        """``starting``, ``online`` or ``offline`` (the health endpoint shows it)."""
        return self.status.value

    # -- commands -------------------------------------------------------------------------
    def supports(self, device_id: str, action: Action) -> bool:
        """Whether ``device_id`` is a CJ/T 188 meter with a valve on this line and
        ``action`` opens or closes it."""
        dev = self._by_id.get(device_id)
        return dev is not None and takes_command(dev, action)

    async def send(self, command: Command) -> None:
        """Write the valve command (serialized with the polls); returns once the meter
        answered it. ``CommandError`` naming the device when it cannot be written."""
        if not self.supports(command.device_id, command.action):
            raise CommandError(f"device {command.device_id}: no {command.action} command on "
                               f"{self._who()} (not on the line, or not a CJ/T 188 meter "
                               f"with a valve)")
        if self.state == "offline":            # starting: queued, served once the port is open
            raise CommandError(f"device {command.device_id}: {self._who()} is offline")
        # the line's task takes it after the poll in progress and the commands queued
        # before it, then up to two attempts
        attempts_s = self.settings.timeout_s * MeterPoller.VALVE_ATTEMPTS
        await self.commands.submit(command.device_id, command, self._by_id[command.device_id],
                                   limit_s=self.settings.timeout_s + attempts_s + 1.0,
                                   per_ahead_s=attempts_s, who=self._who())

    def _who(self) -> str:
        return f"serial line {self.line_id} ({self.settings.device})"

    # -- what the meter poller and the receiver share (transport.LineContext) -------------
    def is_unavailable(self, device_id: str) -> bool:
        return device_id in self._unavailable

    def set_available(self, dev: SerialDevice, available: bool) -> None:
        if available == (dev.device_id not in self._unavailable):
            return
        if available:
            self._unavailable.discard(dev.device_id)
        else:
            self._unavailable.add(dev.device_id)
        self.offer(dev, [Reading(dev.device_id, Kind.AVAILABILITY, available, utc(),
                                 metric="availability")])

    def offer(self, dev: SerialDevice, readings: list[Reading],
              ack: Callable[[], None] | None = None, durable: bool = False) -> None:
        if readings:
            self.sink.offer([r.with_site(household_id=dev.household_id, grid_cell=dev.grid_cell,
                                         device_type=dev.device_type) for r in readings], ack,
                            durable=durable)

    def reject(self, exc: DecodeError, device_id: str | None) -> None:
        self.metrics.inc("gateway_rejected_total", reason=exc.reason, transport="serial")
        if device_id:
            self.on_error(device_id, exc.reason)
        where = f"line {self.line_id} {exc.where}".strip()
        self.rlog.warning((exc.reason, device_id or self.line_id), "rejected %s%s: %s [%s]",
                          where, f" (device {device_id})" if device_id else "", exc.detail,
                          exc.reason)

    def undecodable(self, dev: SerialDevice, exc: Exception, where: str) -> Undecodable:
        """Our decoding raised on input of ``dev`` (a bug, not a DecodeError): counted, the
        device gets fault ``decode_error`` (logged once per cause); returns UNDECODABLE."""
        self.metrics.inc("gateway_rejected_total", reason=DECODE_ERROR, transport="serial")
        self.on_error(dev.device_id, DECODE_ERROR)
        self.decode_watch.failed(dev.device_id, "serial", exc, f"line {self.line_id} {where}")
        return UNDECODABLE
