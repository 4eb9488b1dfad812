"""The meter poller of a serial line: DL/T 645 and CJ/T 188 meters, polled.

Every ``period_s`` each meter is asked for the items of its profile, one request at a time
(half-duplex RS-485), each answer awaited for ``timeout_s``. Replies go through
:class:`~drivers.codecs.framing.FrameSplitter`, so wake-up bytes, junk between frames and
replies split across reads are handled; every bad frame is counted by reason
(``gateway_rejected_total{transport="serial"}``). A meter that fails ``quarantine_after``
polls in a row is reported unavailable once and then polled only every few cycles (capped
backoff) so it does not eat the line's time. An exception our own decoding raises on one
item costs that item only.

Valve commands (CJ/T 188) queued on the line (:class:`drivers.command_queue.CommandQueue`)
are written before the next meter's poll and while the line waits for the next cycle; each
is followed by early reads of its meter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import ParamSpec, TypeVar

from drivers import DecodeError
from drivers.codecs import cjt188, dlt645
from drivers.codecs.framing import CJT188_LAYOUT, DLT645_LAYOUT, FrameSplitter
from drivers.profiles import Cjt188Profile, Dlt645Profile
from drivers.serial_line.transport import (UNDECODABLE, LineContext, LineLost, Port,
                                           SerialDevice, Undecodable)
from gateway.kernel.clock import utc
from gateway.kernel.commands import Action, Command, CommandError
from gateway.kernel.model import Reading

__all__ = ["MeterPoller"]

log = logging.getLogger(__name__)
_P = ParamSpec("_P")
_T = TypeVar("_T")


class MeterPoller:
    """Polls the meters of one line over an open port until the port is lost."""

    #: a valve command not answered is sent once more (RS-485 noise) before it fails
    VALVE_ATTEMPTS = 2

    def __init__(self, line: LineContext):
        self.line = line
        devices = line.devices
        self.polls_ok: dict[str, int] = {d.device_id: 0 for d in devices}
        self._fails: dict[str, int] = {d.device_id: 0 for d in devices}
        self._skip: dict[str, int] = {d.device_id: 0 for d in devices}
        self._layout = DLT645_LAYOUT if line.settings.protocol == "dlt645" else CJT188_LAYOUT
        self._by_id = {d.device_id: d for d in devices}

    def _decoding(self, dev: SerialDevice, decode: Callable[_P, _T], *args: _P.args,
                  **kwargs: _P.kwargs) -> _T | Undecodable:
        try:
            return decode(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a bug of ours costs this reply only
            return self.line.undecodable(dev, exc, f"address {dev.address}")

    async def run(self, port: Port) -> None:
        period = self.line.settings.period_s
        start = time.monotonic()
        k = 0
        while True:
            for dev in self.line.devices:
                await self._between(port)
                if self._skip[dev.device_id] > 0:
                    self._skip[dev.device_id] -= 1
                    continue
                await self._poll_meter(port, dev)
            k += 1
            due = start + k * period
            if time.monotonic() >= due:
                k = int((time.monotonic() - start) // period) + 1   # overran: next cycle now
                continue
            while True:
                await self._between(port)
                if time.monotonic() >= due:
                    break
                await self.line.commands.wait(due)

    # -- commands -----------------------------------------------------------------------
    async def _between(self, port: Port) -> None:
        """Between two polls: queued valve commands, then early reads that are due."""
        commands = self.line.commands
        while (pending := commands.next()) is not None:
            try:
                error = await self._write_valve(port, pending.target, pending.command)
            except LineLost as exc:
                commands.settle(pending, CommandError(
                    f"device {pending.device_id}: serial line {self.line.line_id} lost "
                    f"during the valve command: {exc}"))
                raise
            commands.settle(pending, error)
        while (device_id := commands.due_poll()) is not None:
            await self._poll_meter(port, self._by_id[device_id])
            if commands.waiting:
                await self._between(port)       # a command that came meanwhile goes first
                return

    async def _write_valve(self, port: Port, dev: SerialDevice,
                           command: Command) -> CommandError | None:
        """Send the valve frame and check the meter's answer; the error, or None."""
        prof = dev.profile
        assert isinstance(prof, Cjt188Profile)
        request = cjt188.build_valve_request(dev.address,
                                             open_valve=command.action is Action.OPEN_VALVE,
                                             meter_type=prof.meter_type)
        where = (f"device {dev.device_id} (meter {dev.address} on serial line "
                 f"{self.line.line_id})")

        def decode(raw: bytes) -> cjt188.Cjt188ValveReply | DecodeError:
            try:
                return cjt188.decode_valve_reply(raw, expect_address=dev.address)
            except DecodeError as exc:
                if exc.reason == "abnormal_reply":
                    return exc              # the meter answered: it refuses
                raise

        for _ in range(self.VALVE_ATTEMPTS):
            answer = await self._transact(port, dev, request, decode)
            if isinstance(answer, DecodeError):
                return CommandError(f"{where} refused the {command.action} command: "
                                    f"{answer.detail}")
            if answer is UNDECODABLE:
                return CommandError(f"{where}: its answer to the {command.action} command "
                                    f"could not be decoded")
            if answer is not None:
                return None
        return CommandError(f"{where}: no answer to the {command.action} command within "
                            f"{self.line.settings.timeout_s:.3g} s ({self.VALVE_ATTEMPTS} "
                            f"attempts)")

    async def _poll_meter(self, port: Port, dev: SerialDevice) -> None:
        line = self.line
        readings: list[Reading] = []
        ok = True
        clean = True        # no reply our decoding raised on (see SerialLine.undecodable)
        if isinstance(dev.profile, Dlt645Profile):
            for di in dev.profile.identifiers():
                request = dlt645.build_read_request(dev.address, di)
                reply = await self._transact(port, dev, request, partial(
                    dlt645.decode_read_reply, expect_address=dev.address, expect_di=di))
                if reply is None:
                    ok = False
                    break
                reading = (reply if reply is UNDECODABLE
                           else self._decoding(dev, reply.reading, dev.device_id, utc()))
                if reading is UNDECODABLE:
                    clean = False       # the meter answered: this item only is lost
                    continue
                readings.append(reading)
        elif isinstance(dev.profile, Cjt188Profile):
            prof = dev.profile
            request = cjt188.build_read_request(dev.address, meter_type=prof.meter_type)
            answer = await self._transact(port, dev, request, partial(
                cjt188.decode_read_reply, expect_address=dev.address,
                clock_high_first=prof.clock_high_first))
            if answer is None:
                ok = False
            else:
                decoded = (answer if answer is UNDECODABLE
                           else self._decoding(dev, answer.readings, dev.device_id, utc(),
                                               has_valve=prof.has_valve))
                if decoded is UNDECODABLE:
                    clean = False
                else:
                    readings = decoded
        else:
            raise ValueError(f"{dev.device_id}: profile {dev.profile.id} is not a meter profile")
        if ok:
            self.polls_ok[dev.device_id] += 1
            self._fails[dev.device_id] = 0
            line.metrics.inc("gateway_ingest_messages_total", transport="serial")
            line.offer(dev, readings)
            line.set_available(dev, True)
            if clean:
                line.decode_watch.ok(dev.device_id)
            return
        fails = self._fails[dev.device_id] = self._fails[dev.device_id] + 1
        if fails >= line.settings.quarantine_after:
            if not line.is_unavailable(dev.device_id):
                log.warning("serial meter %s (line %s address %s) does not answer: skipped "
                            "with backoff", dev.device_id, line.line_id, dev.address)
            line.set_available(dev, False)
            self._skip[dev.device_id] = min(2 ** (fails - line.settings.quarantine_after), 32)

    async def _transact(self, port: Port, dev: SerialDevice, request: bytes,
                        decode: Callable[[bytes], _T]) -> _T | Undecodable | None:
        """Send one request; return the decoded reply, or None (reason counted)."""
        line = self.line
        port.drain_input()              # a late answer to an earlier request is stale now
        port.write(request)
        splitter = FrameSplitter(self._layout)
        deadline = time.monotonic() + line.settings.timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                items = splitter.flush()
                for item in items:
                    if isinstance(item, DecodeError):
                        line.reject(item, dev.device_id)
                if not any(isinstance(i, DecodeError) and i.reason == "truncated"
                           for i in items):
                    line.reject(DecodeError("timeout", f"no answer within "
                                            f"{line.settings.timeout_s:.3g} s",
                                            where=f"address {dev.address}"), dev.device_id)
                return None
            chunk = await port.read(left)
            for item in splitter.feed(chunk) if chunk else []:
                if isinstance(item, DecodeError):
                    line.reject(item, dev.device_id)
                    continue
                try:
                    return decode(item)
                except DecodeError as exc:
                    line.reject(exc, dev.device_id)
                    if exc.reason != "unexpected_reply":
                        return None
                    # another meter's late answer: keep waiting for ours
                except Exception as exc:  # noqa: BLE001 - a bug of ours: this reply only
                    return line.undecodable(dev, exc, f"address {dev.address} reply "
                                            f"{item[:32].hex(' ')}")
