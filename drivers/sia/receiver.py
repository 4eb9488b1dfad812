"""The SIA DC-09 receiver: alarm panels reporting over IP (TCP and/or UDP), each frame
answered, events committed before their ACK, panels supervised by their null messages.

One :class:`SiaReceiver` listens on one address (``host``/``port``, TCP, UDP or both) for
the accounts of one ``sia_receivers`` entry of gateway.yaml and runs until cancelled.

- A frame is judged by :func:`drivers.sia.dc09.parse_frame` (pysiaalarm underneath). An
  event of a configured account is offered to the pipeline with ``durable=True`` and
  **acknowledged only once the pipeline has committed it** (every event, not only alarm-class
  ones: the panel deletes what was acknowledged). A panel that gets no ACK sends the event
  again (DC-09); a resend of an event already committed is one more reading of the same
  condition, and the open alarm is not raised twice (the engine's dedup).
- Refusals answer at once and are counted by reason, ``gateway_rejected_total{reason,
  transport="sia"}`` and ``gateway_dc09_answers_total{answer, reason}``, and logged naming the
  account and the reason: NAK for ``bad_crc``, ``bad_timestamp`` and an unreadable frame
  (``bad_format`` without a header) - the panel resends, with its clock corrected by the
  NAK's timestamp; DUH for ``unknown_account`` (shown to installers among the unknown
  devices as ``dc09:<account>``), ``unencrypted`` (a plain frame for an account with a
  key), ``not_encrypted_account`` and ``bad_format``.
- An event of a known account that cannot become a reading (a code the Contact ID table does
  not map: ``unknown_event_code``; no device for its zone: ``unknown_device``) is
  acknowledged and counted: sending it again would not make it usable.
- Supervision: every accepted frame (events and null messages alike) says the panel is
  there: its devices get an ``availability`` True reading (so the device's last report and
  the supervision rule's silence watch follow the panel's heartbeats). An account silent
  longer than its ``supervision_s`` (counted from the receiver's start, so a panel that never
  reports is caught too) has its devices reported unavailable once - the supervision rule
  raises its ``offline`` fault - until the panel's next frame.
- Binding fails (address in use, no such address): state ``offline``, retried with capped
  backoff. A TCP connection is closed after ``idle_s`` without data; at its end the ACKs still
  waiting for the commit are awaited (bounded) before the socket is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, cast

from drivers import DECODE_ERROR, DecodeError, DecodeWatch, IntakeSink
from drivers.sia.dc09 import ANSWER_FOR, Dc09Frame, event_reading, heartbeat_reading, parse_frame
from gateway.kernel.clock import utc
from gateway.kernel.component import StateTracker
from gateway.kernel.metrics import MetricsSink
from gateway.kernel.model import Kind, Reading
from gateway.kernel.resilience import Backoff, RateLimitedLog

__all__ = ["Dc09Account", "Dc09Device", "ReceiverSettings", "SiaReceiver"]

log = logging.getLogger(__name__)

MAX_FRAME = 2048          # bytes without a CR: not a DC-09 sender
TRANSPORT = "sia"


@dataclass(frozen=True, slots=True)
class ReceiverSettings:
    host: str
    port: int
    protocol: Literal["tcp", "udp", "both"] = "both"
    idle_s: float = 300.0          # a TCP connection without data this long is closed
    ack_wait_s: float = 10.0       # at a connection's end, how long pending ACKs are awaited


@dataclass(frozen=True, slots=True)
class Dc09Account:
    """A panel's account: its AES key (None: unencrypted) and its supervision interval
    (None: not supervised)."""

    account: str
    key: bytes | None = field(default=None, repr=False)
    supervision_s: float | None = 300.0


@dataclass(frozen=True, slots=True)
class Dc09Device:
    """A device behind an account: the panel (``zone`` None) or one zone of it."""

    device_id: str
    account: str
    zone: int | None = None
    device_type: str = ""
    household_id: str | None = None
    grid_cell: str | None = None


class SiaReceiver:
    """Listens for DC-09 frames on one address until cancelled."""

    def __init__(self, receiver_id: str, settings: ReceiverSettings,
                 accounts: list[Dc09Account], devices: list[Dc09Device], sink: IntakeSink,
                 metrics: MetricsSink, *, on_error: Callable[[str, str], None] | None = None,
                 on_unknown: Callable[[str, str], None] | None = None,
                 decode_watch: DecodeWatch | None = None,
                 clock: Callable[[], float] = time.monotonic, tick_s: float = 1.0):
        self.receiver_id = receiver_id
        self.settings = settings
        self.accounts = {a.account.upper(): a for a in accounts}
        self.devices = list(devices)
        self.sink = sink
        self.metrics = metrics
        self.on_error = on_error or (lambda device_id, reason: None)
        self.on_unknown = on_unknown or (lambda key, sample: None)
        self.decode_watch = decode_watch or DecodeWatch()
        self.status = StateTracker(f"SIA DC-09 receiver {receiver_id} "
                                   f"({settings.protocol} {settings.host}:{settings.port})",
                                   "starting", logger=log)
        self.rlog = RateLimitedLog(log)
        self.clock = clock
        self.tick_s = tick_s
        self.bound: dict[str, tuple[str, int]] = {}     # "tcp"/"udp" -> the bound address
        self._keys = {acct: a.key for acct, a in self.accounts.items()}
        self._by_zone = {(d.account.upper(), d.zone): d for d in self.devices}
        self._of_account: dict[str, list[Dc09Device]] = {}
        for d in self.devices:
            self._of_account.setdefault(d.account.upper(), []).append(d)
        self._last: dict[str, float] = {}
        self._silent: set[str] = set()
        self._rebind = Backoff(base_s=0.5, cap_s=30.0)

    @property
    def state(self) -> str:
        """``starting``, ``online`` (listening) or ``offline`` (cannot bind)."""
        return self.status.value

    # -- listening ------------------------------------------------------------------------
    async def run(self) -> None:
        delays = self._rebind.delays()
        while True:
            try:
                servers = await self._listen()
            except OSError as exc:
                self.status.set("offline", f"cannot listen on {self.settings.host}:"
                                f"{self.settings.port}: {exc.strerror or exc}")
                await asyncio.sleep(next(delays))
                continue
            break
        self.status.set("online")
        start = self.clock()
        for acct in self.accounts:
            self._last.setdefault(acct, start)
        try:
            while True:
                await asyncio.sleep(self.tick_s)
                self.supervise()
        finally:
            for close in servers:
                close()

    async def _listen(self) -> list[Callable[[], None]]:
        s = self.settings
        closers: list[Callable[[], None]] = []
        loop = asyncio.get_running_loop()
        try:
            if s.protocol in ("tcp", "both"):
                server = await asyncio.start_server(self._connection, s.host, s.port)
                closers.append(server.close)
                self.bound["tcp"] = server.sockets[0].getsockname()[:2]
            if s.protocol in ("udp", "both"):
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Datagrams(self), local_addr=(s.host, s.port))
                closers.append(transport.close)
                self.bound["udp"] = transport.get_extra_info("sockname")[:2]
        except BaseException:
            for close in closers:
                close()
            raise
        return closers

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        pending: set[int] = set()
        settled = asyncio.Event()
        serial = 0
        peer = writer.get_extra_info("peername")

        def sender(n: int) -> Callable[[bytes], None]:
            def send(data: bytes) -> None:
                pending.discard(n)
                if not pending:
                    settled.set()
                if not writer.is_closing():
                    writer.write(data)
            return send

        buf = bytearray()
        try:
            while True:
                try:
                    async with asyncio.timeout(self.settings.idle_s):
                        chunk = await reader.read(4096)
                except TimeoutError:
                    break
                if not chunk:
                    break
                buf += chunk
                for raw in self._frames(buf, f"tcp {peer}"):
                    serial += 1
                    pending.add(serial)
                    settled.clear()
                    self.handle(raw, sender(serial))
                await writer.drain()
            if pending:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.ack_wait_s):
                        await settled.wait()
        except (ConnectionError, OSError) as exc:
            log.debug("receiver %s: connection %s lost: %s", self.receiver_id, peer, exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    def _frames(self, buf: bytearray, where: str) -> list[bytes]:
        """Whole frames (``...<CR>``) taken out of ``buf``; junk over ``MAX_FRAME`` dropped."""
        *frames, rest = bytes(buf).split(b"\r")
        buf[:] = rest
        if len(buf) > MAX_FRAME:
            self._count("oversize", None)
            self.rlog.warning(("oversize", where), "receiver %s: %s sent %d bytes without a "
                              "frame end; dropped", self.receiver_id, where, len(buf))
            buf.clear()
        return [f for f in (fr.strip(b"\n\x00 ") for fr in frames) if f]

    # -- one frame ------------------------------------------------------------------------
    def handle(self, raw: bytes, send: Callable[[bytes], None]) -> None:
        """Judge one frame and answer it through ``send`` (an event: once committed)."""
        try:
            f = parse_frame(raw, self._keys)
        except Exception as exc:  # noqa: BLE001 - a bug of ours: counted, logged, unanswered
            self._count(DECODE_ERROR, None)
            self.rlog.error((DECODE_ERROR, self.receiver_id), "receiver %s: cannot judge frame "
                            "%r: %s: %s (not answered)", self.receiver_id, raw[:80],
                            type(exc).__name__, exc)
            return
        if not f.ok:
            self._refuse(f, raw)
            send(f.answer)
            return
        self._heard(f.account)
        if f.verdict == "null" or f.event is None:
            self.metrics.inc("gateway_dc09_answers_total", answer="ACK", reason="null")
            send(f.answer)
            return
        ack = self._event(f, raw)
        if ack is None:                       # not usable: acknowledged at once (counted)
            self.metrics.inc("gateway_dc09_answers_total", answer="ACK", reason="unusable")
            send(f.answer)
            return
        dev, reading = ack
        answer = f.answer

        def on_commit() -> None:
            self.metrics.inc("gateway_dc09_answers_total", answer="ACK", reason="committed")
            send(answer)

        self.metrics.inc("gateway_ingest_messages_total", transport=TRANSPORT)
        self._offer(dev, [reading], on_commit, durable=True)

    def _event(self, f: Dc09Frame, raw: bytes) -> tuple[Dc09Device, Reading] | None:
        assert f.event is not None
        ev = f.event
        dev = self._by_zone.get((f.account, ev.zone)) or self._by_zone.get((f.account, None))
        if dev is None:
            self._count("unknown_device", None)
            self.on_unknown(f"dc09:{f.account}", f"{f.message_type} {ev.label}")
            self.rlog.warning(("unknown_device", f.account), "receiver %s: account %s event "
                              "%s: no device for this account/zone in devices.yaml "
                              "(acknowledged) [unknown_device]", self.receiver_id, f.account,
                              ev.label)
            return None
        try:
            reading = event_reading(ev, device_id=dev.device_id, ts=utc())
        except DecodeError as exc:
            self._count(exc.reason, dev.device_id)
            self.rlog.warning((exc.reason, f.account), "receiver %s: account %s (device %s): "
                              "%s (acknowledged) [%s]", self.receiver_id, f.account,
                              dev.device_id, exc.detail, exc.reason)
            return None
        except Exception as exc:  # noqa: BLE001 - a bug of ours: fault, counted, acknowledged
            self._count(DECODE_ERROR, dev.device_id)
            self.decode_watch.failed(dev.device_id, TRANSPORT, exc,
                                     f"receiver {self.receiver_id} frame {raw[:80]!r}")
            return None
        self.decode_watch.ok(dev.device_id)
        return dev, reading

    def _refuse(self, f: Dc09Frame, raw: bytes) -> None:
        answer = ANSWER_FOR[f.verdict]
        self.metrics.inc("gateway_dc09_answers_total", answer=answer, reason=f.reason)
        self._count(f.reason, None)
        if f.reason == "unknown_account":
            self.on_unknown(f"dc09:{f.account}", raw.decode("ascii", "replace")[:120])
        self.rlog.warning((f.reason, f.account), "receiver %s: account %s: %s frame "
                          "refused with %s: %s [%s]", self.receiver_id, f.account or "?",
                          f.message_type or "unreadable", answer, f.detail, f.reason)

    def _count(self, reason: str, device_id: str | None) -> None:
        self.metrics.inc("gateway_rejected_total", reason=reason, transport=TRANSPORT)
        if device_id:
            self.on_error(device_id, reason)

    # -- supervision ----------------------------------------------------------------------
    def _heard(self, account: str) -> None:
        self._last[account] = self.clock()
        back = account in self._silent
        self._silent.discard(account)
        if back:
            log.info("receiver %s: account %s reports again: online", self.receiver_id, account)
        ts = utc()
        for dev in self._of_account.get(account, []):
            if dev.zone is None or back:
                self._offer(dev, [heartbeat_reading(dev.device_id, ts)])

    def supervise(self) -> None:
        """Report the devices of accounts silent beyond their ``supervision_s`` unavailable
        (once per silence); called every ``tick_s`` by :meth:`run`."""
        now = self.clock()
        for acct, a in self.accounts.items():
            if a.supervision_s is None or acct in self._silent:
                continue
            quiet = now - self._last.get(acct, now)
            if quiet <= a.supervision_s:
                continue
            self._silent.add(acct)
            self.metrics.inc("gateway_dc09_supervision_lost_total", receiver=self.receiver_id)
            log.warning("receiver %s: account %s silent for %.0f s (supervision %.0f s): its "
                        "devices are offline", self.receiver_id, acct, quiet, a.supervision_s)
            ts = utc()
            for dev in self._of_account.get(acct, []):
                self._offer(dev, [Reading(dev.device_id, Kind.AVAILABILITY, False, ts,
                                          metric="availability")])

    def _offer(self, dev: Dc09Device, readings: list[Reading],
               ack: Callable[[], None] | None = None, durable: bool = False) -> None:
        self.sink.offer([r.with_site(household_id=dev.household_id, grid_cell=dev.grid_cell,
                                     device_type=dev.device_type) for r in readings], ack,
                        durable=durable)


class _Datagrams(asyncio.DatagramProtocol):
    """UDP: each datagram holds one frame (or several, each ended by CR)."""

    def __init__(self, receiver: SiaReceiver):
        self.receiver = receiver
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (the selector loop's datagram transport does not derive from DatagramTransport)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        buf = bytearray(data if data.endswith(b"\r") else data + b"\r")
        for raw in self.receiver._frames(buf, f"udp {addr}"):  # noqa: SLF001 - its own helper

            def send(answer: bytes, addr: tuple[str | int, int] = addr) -> None:
                if self.transport is not None and not self.transport.is_closing():
                    self.transport.sendto(answer, addr)

            self.receiver.handle(raw, send)
