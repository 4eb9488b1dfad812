"""Serial lines (RS-485 / RS-232 via pyserial, asyncio): DL/T 645 and CJ/T 188 meters, polled;
Contact ID lines printed by an alarm receiver, read.

One :class:`SerialLine` owns one port (a path such as ``/dev/ttyUSB0`` or a udev symlink) and
runs until cancelled. pyserial opens and configures the port; reads go through the event loop
(``loop.add_reader`` on the port's file descriptor), so a quiet line costs nothing.

Supervision: when the adapter disappears (read/write fails with ``EIO``, the port reports
readiness but returns no data, or the path is gone) the line goes *offline* - logged once,
every device on it reported unavailable - and the port is reopened with capped exponential
backoff and jitter. When the path is back (the adapter plugged in again, possibly as a new
tty behind the same symlink) the line comes back *online* without restarting the gateway.

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
import os
import string
import time
from collections.abc import Callable
from dataclasses import dataclass

import serial

from drivers import DECODE_ERROR, DecodeError, DecodeWatch, DriverError, IntakeSink
from drivers.codecs import cjt188, contact_id, dlt645
from drivers.codecs.framing import CJT188_LAYOUT, DLT645_LAYOUT, FrameSplitter
from drivers.profiles import AnyProfile, Cjt188Profile, Dlt645Profile
from gateway.kernel.clock import utc
from gateway.kernel.metrics import MetricsSink
from gateway.kernel.model import Kind, Reading
from gateway.kernel.resilience import Backoff, RateLimitedLog

__all__ = ["LineLost", "LineSettings", "SerialDevice", "SerialLine"]

log = logging.getLogger(__name__)

PROTOCOLS = ("dlt645", "cjt188", "contact_id")
_REFUSALS = 3        # a receiver line that will not decode is refused this often, then acked
_UNDECODABLE = object()   # a reply our decoding raised on (counted and reported already)


class LineLost(DriverError):
    """The serial adapter went away (unplugged, pty closed)."""


@dataclass(frozen=True, slots=True)
class LineSettings:
    device: str
    protocol: str                  # dlt645 | cjt188 | contact_id
    baudrate: int = 2400
    bytesize: int = 8
    parity: str = "E"
    stopbits: int = 1
    period_s: float = 60.0
    timeout_s: float = 1.0
    quarantine_after: int = 3
    ack: bytes = b""               # contact_id: sent once an event is safe (e.g. b"\x06")
    nak: bytes = b""               # contact_id: sent for an event line with a bad checksum

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r}, one of {', '.join(PROTOCOLS)}")


@dataclass(frozen=True, slots=True)
class SerialDevice:
    """A meter (``address`` as on its nameplate) or a Contact ID account (``address`` =
    account, ``zone`` = one zone of it, None = the whole account)."""

    device_id: str
    address: str
    profile: AnyProfile
    device_type: str = ""
    household_id: str | None = None
    grid_cell: str | None = None
    zone: int | None = None


class _Port:
    """A pyserial port read through the event loop."""

    def __init__(self, ser: serial.Serial):
        self.ser = ser
        self.fd = ser.fileno()
        self.closed = False
        self._loop = asyncio.get_running_loop()

    async def read(self, timeout: float) -> bytes:
        """Bytes available within ``timeout`` (b"" if none); ``LineLost`` if the port died."""
        ready = self._loop.create_future()
        self._loop.add_reader(self.fd, lambda: ready.done() or ready.set_result(None))
        try:
            async with asyncio.timeout(timeout):
                await ready
        except TimeoutError:
            return b""
        finally:
            self._loop.remove_reader(self.fd)
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise LineLost(f"read failed: {exc.strerror or exc}") from exc
        if not data:
            raise LineLost("port readable but returned no data (adapter unplugged?)")
        return data

    def write(self, data: bytes) -> None:
        if self.closed:          # its fd number may belong to another file by now
            raise LineLost("port closed")
        try:
            os.write(self.fd, data)
        except OSError as exc:
            raise LineLost(f"write failed: {exc.strerror or exc}") from exc

    def drain_input(self) -> None:
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            return
        except OSError as exc:
            raise LineLost(f"read failed: {exc.strerror or exc}") from exc

    def close(self) -> None:
        self.closed = True
        try:
            self.ser.close()
        except (OSError, serial.SerialException):
            pass   # the adapter is already gone; nothing left to release


class SerialLine:
    """Polls meters on, or reads receiver lines from, one serial port until cancelled."""

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
        self.state = "starting"
        self.opened = 0                       # times the port was (re)opened
        self.polls_ok: dict[str, int] = {d.device_id: 0 for d in devices}
        self._fails: dict[str, int] = {d.device_id: 0 for d in devices}
        self._skip: dict[str, int] = {d.device_id: 0 for d in devices}
        self._unavailable: set[str] = set()
        self._rlog = RateLimitedLog(log)
        self._reopen = Backoff(base_s=0.2, cap_s=30.0)
        self._layout = DLT645_LAYOUT if settings.protocol == "dlt645" else CJT188_LAYOUT
        self._rx_seq = 0                      # receiver lines read so far (stale-ACK guard)
        self._refused = (b"", 0)              # the last unreadable line, times refused

    # -- supervision ----------------------------------------------------------------------
    async def run(self) -> None:
        delays = self._reopen.delays()
        while True:
            try:
                port = self._open()
            except (OSError, serial.SerialException) as exc:
                self._offline(f"cannot open {self.settings.device}: {exc}")
                await asyncio.sleep(next(delays))
                continue
            self.opened += 1
            self._transition("online")
            delays = self._reopen.delays()
            try:
                if self.settings.protocol == "contact_id":
                    await self._read_receiver(port)
                else:
                    await self._poll_meters(port)
            except LineLost as exc:
                self._offline(str(exc))
                self.metrics.inc("gateway_driver_reconnects_total", driver="serial")
                await asyncio.sleep(next(delays))
            finally:
                port.close()

    def _open(self) -> _Port:
        s = self.settings
        ser = serial.Serial(s.device, baudrate=s.baudrate, bytesize=s.bytesize, parity=s.parity,
                            stopbits=s.stopbits, timeout=0, exclusive=True)
        return _Port(ser)

    def _offline(self, why: str) -> None:
        if self.state != "offline":
            self._transition("offline", why)
            for dev in self.devices:
                self._set_available(dev, False)

    def _transition(self, state: str, why: str = "") -> None:
        if state != self.state:
            level = logging.INFO if state == "online" else logging.WARNING
            log.log(level, "serial line %s (%s) %s -> %s%s", self.line_id, self.settings.device,
                    self.state, state, f" ({why})" if why else "")
            self.state = state

    def _set_available(self, dev: SerialDevice, available: bool) -> None:
        if available == (dev.device_id not in self._unavailable):
            return
        if available:
            self._unavailable.discard(dev.device_id)
        else:
            self._unavailable.add(dev.device_id)
        self._offer(dev, [Reading(dev.device_id, Kind.AVAILABILITY, available, utc(),
                                  metric="availability")])

    def _offer(self, dev: SerialDevice, readings: list[Reading],
               ack: Callable[[], None] | None = None, durable: bool = False) -> None:
        if readings:
            self.sink.offer([r.with_site(household_id=dev.household_id, grid_cell=dev.grid_cell,
                                         device_type=dev.device_type) for r in readings], ack,
                            durable=durable)

    def _reject(self, exc: DecodeError, device_id: str | None) -> None:
        self.metrics.inc("gateway_rejected_total", reason=exc.reason, transport="serial")
        if device_id:
            self.on_error(device_id, exc.reason)
        where = f"line {self.line_id} {exc.where}".strip()
        self._rlog.warning((exc.reason, device_id or self.line_id), "rejected %s%s: %s [%s]",
                           where, f" (device {device_id})" if device_id else "", exc.detail,
                           exc.reason)

    def _undecodable(self, dev: SerialDevice, exc: Exception, where: str) -> object:
        """Our decoding raised on input of ``dev`` (a bug, not a DecodeError): counted, the
        device gets fault ``decode_error`` (logged once per cause); returns _UNDECODABLE."""
        self.metrics.inc("gateway_rejected_total", reason=DECODE_ERROR, transport="serial")
        self.on_error(dev.device_id, DECODE_ERROR)
        self.decode_watch.failed(dev.device_id, "serial", exc, f"line {self.line_id} {where}")
        return _UNDECODABLE

    def _decoding(self, dev: SerialDevice, decode: Callable[[], object]) -> object:
        try:
            return decode()
        except Exception as exc:  # noqa: BLE001 - a bug of ours costs this reply only
            return self._undecodable(dev, exc, f"address {dev.address}")

    # -- meters ---------------------------------------------------------------------------
    async def _poll_meters(self, port: _Port) -> None:
        period = self.settings.period_s
        start = time.monotonic()
        k = 0
        while True:
            for dev in self.devices:
                if self._skip[dev.device_id] > 0:
                    self._skip[dev.device_id] -= 1
                    continue
                await self._poll_meter(port, dev)
            k += 1
            due = start + k * period
            now = time.monotonic()
            if now < due:
                await asyncio.sleep(due - now)
            else:
                k = int((now - start) // period) + 1   # overran: start the next cycle now

    async def _poll_meter(self, port: _Port, dev: SerialDevice) -> None:
        readings: list[Reading] = []
        ok = True
        clean = True        # no reply our decoding raised on (see _undecodable)
        if isinstance(dev.profile, Dlt645Profile):
            for di in dev.profile.identifiers():
                request = dlt645.build_read_request(dev.address, di)
                reply = await self._transact(port, dev, request, lambda raw, di=di: (
                    dlt645.decode_read_reply(raw, expect_address=dev.address, expect_di=di)))
                if reply is None:
                    ok = False
                    break
                if reply is not _UNDECODABLE:
                    reply = self._decoding(dev, lambda r=reply: r.reading(dev.device_id, utc()))
                if reply is _UNDECODABLE:
                    clean = False       # the meter answered: this item only is lost
                    continue
                readings.append(reply)
        elif isinstance(dev.profile, Cjt188Profile):
            prof = dev.profile
            request = cjt188.build_read_request(dev.address, meter_type=prof.meter_type)
            reply = await self._transact(port, dev, request, lambda raw: cjt188.decode_read_reply(
                raw, expect_address=dev.address, clock_high_first=prof.clock_high_first))
            if reply is None:
                ok = False
            else:
                if reply is not _UNDECODABLE:
                    reply = self._decoding(dev, lambda r=reply: r.readings(
                        dev.device_id, utc(), has_valve=prof.has_valve))
                if reply is _UNDECODABLE:
                    clean = False
                else:
                    readings = reply
        else:
            raise ValueError(f"{dev.device_id}: profile {dev.profile.id} is not a meter profile")
        if ok:
            self.polls_ok[dev.device_id] += 1
            self._fails[dev.device_id] = 0
            self.metrics.inc("gateway_ingest_messages_total", transport="serial")
            self._offer(dev, readings)
            self._set_available(dev, True)
            if clean:
                self.decode_watch.ok(dev.device_id)
            return
        fails = self._fails[dev.device_id] = self._fails[dev.device_id] + 1
        if fails >= self.settings.quarantine_after:
            if dev.device_id not in self._unavailable:
                log.warning("serial meter %s (line %s address %s) does not answer: skipped "
                            "with backoff", dev.device_id, self.line_id, dev.address)
            self._set_available(dev, False)
            self._skip[dev.device_id] = min(2 ** (fails - self.settings.quarantine_after), 32)

    async def _transact(self, port: _Port, dev: SerialDevice, request: bytes, decode):
        """Send one request; return the decoded reply, or None (reason counted)."""
        port.drain_input()              # a late answer to an earlier request is stale now
        port.write(request)
        splitter = FrameSplitter(self._layout)
        deadline = time.monotonic() + self.settings.timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                items = splitter.flush()
                for item in items:
                    if isinstance(item, DecodeError):
                        self._reject(item, dev.device_id)
                if not any(isinstance(i, DecodeError) and i.reason == "truncated"
                           for i in items):
                    self._reject(DecodeError("timeout", f"no answer within "
                                             f"{self.settings.timeout_s:.3g} s",
                                             where=f"address {dev.address}"), dev.device_id)
                return None
            chunk = await port.read(left)
            for item in splitter.feed(chunk) if chunk else []:
                if isinstance(item, DecodeError):
                    self._reject(item, dev.device_id)
                    continue
                try:
                    return decode(item)
                except DecodeError as exc:
                    self._reject(exc, dev.device_id)
                    if exc.reason != "unexpected_reply":
                        return None
                    # another meter's late answer: keep waiting for ours
                except Exception as exc:  # noqa: BLE001 - a bug of ours: this reply only
                    return self._undecodable(dev, exc, f"address {dev.address} reply "
                                             f"{item[:32].hex(' ')}")

    # -- Contact ID receiver ----------------------------------------------------------------
    async def _read_receiver(self, port: _Port) -> None:
        by_zone = {(d.address.upper(), d.zone): d for d in self.devices}
        buf = bytearray()
        while True:
            chunk = await port.read(3600.0)
            if not chunk:
                continue
            buf += chunk
            if len(buf) > 4096:                 # no line end in 4 KiB: not a receiver
                self._reject(DecodeError("oversize", "4096 bytes without a line end",
                                         where="receiver line"), None)
                buf.clear()
            *lines, rest = bytes(buf).replace(b"\r", b"\n").split(b"\n")
            buf = bytearray(rest)
            for raw in lines:
                if raw.strip():
                    self._receiver_line(raw, by_zone, port)

    def _receiver_line(self, raw: bytes, by_zone: dict, port: _Port) -> None:
        """Decode one receiver line and answer it (when the line has ``ack``/``nak``).

        - An event of a known account is acknowledged only once the pipeline has it in its
          inbox (every event, not only alarm-class ones), and only if no newer line has come
          since: an ACK carries no sequence number, so an ACK for a copy the receiver has
          already resent would be taken as the answer to the resend (or to the next event).
        - A line that does not decode but has the digits of an event (12 or more hex digits:
          a bad checksum, a lost or garbled character) is refused — ``nak``, or silence — so
          the receiver sends it again; the same line refused ``_REFUSALS`` times running is
          acknowledged and logged as an error (``unreadable_gave_up``), so one bad stored
          event cannot block the receiver.
        - Anything else (a status line such as a receiver's heartbeat, an unknown account or
          event code) is acknowledged at once: sending it again would not make it usable; it
          is counted (unknown accounts are shown to installers)."""
        settings = self.settings
        self._rx_seq += 1
        try:
            event = contact_id.parse_line(raw)
        except DecodeError as exc:
            self._reject(exc, None)
            if sum(chr(b) in string.hexdigits for b in raw) < 12:
                self._answer(port, settings.ack)   # a status line (heartbeat), not an event
                return
            last, times = self._refused
            times = times + 1 if raw == last else 1
            if times > _REFUSALS:
                self._refused = (b"", 0)
                self.metrics.inc("gateway_rejected_total", reason="unreadable_gave_up",
                                 transport="serial")
                log.error("line %s: receiver line %r refused %d times; acknowledged so that "
                          "the receiver goes on (the event in it is lost)", self.line_id,
                          raw[:80], _REFUSALS)
                self._answer(port, settings.ack)
            else:
                self._refused = (raw, times)
                self._answer(port, settings.nak)
            return
        except Exception as exc:  # noqa: BLE001 - a bug of ours: counted, logged, acknowledged
            # no account known yet, so no device to put in fault: resending would not help
            self.metrics.inc("gateway_rejected_total", reason=DECODE_ERROR, transport="serial")
            self._rlog.error((DECODE_ERROR, self.line_id), "line %s: cannot decode receiver "
                             "line %r: %s: %s (acknowledged: the event in it is lost)",
                             self.line_id, raw[:80], type(exc).__name__, exc)
            self._answer(port, settings.ack)
            return
        self._refused = (b"", 0)
        dev = by_zone.get((event.account, event.zone)) or by_zone.get((event.account, None))
        if dev is None:
            self.metrics.inc("gateway_rejected_total", reason="unknown_device",
                             transport="serial")
            self.on_unknown(f"contact-id:{event.source}",
                            raw.decode("ascii", "replace").strip())
            self._answer(port, settings.ack)
            return
        try:
            reading = contact_id.event_reading(event, device_id=dev.device_id, ts=utc())
        except DecodeError as exc:
            self._reject(exc, dev.device_id)
            self._answer(port, settings.ack)
            return
        except Exception as exc:  # noqa: BLE001 - a bug of ours: fault, counted, acknowledged
            self._undecodable(dev, exc, f"account {event.account} zone {event.zone} "
                              f"line {raw[:80]!r}")
            self._answer(port, settings.ack)
            return
        self.decode_watch.ok(dev.device_id)
        self.metrics.inc("gateway_ingest_messages_total", transport="serial")
        ack = None
        if settings.ack:
            seq = self._rx_seq

            def ack() -> None:
                if seq == self._rx_seq:      # else a newer line (or a resend) is pending
                    self._answer(port, settings.ack)

        self._offer(dev, [reading], ack, durable=True)

    def _answer(self, port: _Port, data: bytes) -> None:
        """Send an ACK/NAK to the receiver; a lost line only costs the receiver a resend."""
        if not data:
            return
        try:
            port.write(data)
        except LineLost as exc:
            self._rlog.warning(("answer", self.line_id), "line %s: could not answer the "
                               "receiver (%s); it will send the event again", self.line_id, exc)

