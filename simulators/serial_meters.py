"""Simulated serial devices on a pty: DL/T 645 and CJ/T 188 meters, a Contact ID receiver.

:class:`PtyAdapter` plays a USB-RS485 adapter: a pty pair whose slave is reachable through a
symlink we control (``path``), as udev gives ``/dev/serial/by-id/...``. ``unplug()`` closes
the pty and removes the symlink, as pulling the adapter does; ``replug()`` creates a new pty
(a different ``/dev/pts/N``) behind the same symlink.

:class:`MeterBus` answers requests arriving on an adapter, from a thread: DL/T 645 meters
(``dlt645_meters``: address -> {DI: value}) and CJ/T 188 meters (``cjt188_meters``: address
-> volume m³). A CJ/T 188 meter obeys the valve command (C=0x04, DI A017, 55 open / 99
close): it answers C=0x84 and its next reads report the new position (``valves``: address
-> "open" / "closed"; every meter starts open); the commands are kept in
``valve_commands``; a meter in ``refuse_valve`` answers C=0xC4. Faults for tests: ``dead`` addresses never answer; ``corrupt_next`` spoils the
checksum of the next N replies; ``split_replies`` sends replies in two chunks; ``junk`` is
written before every reply.

Every loop is bounded by a stop event and short select timeouts.
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from pathlib import Path

from drivers import DecodeError
from drivers.codecs import cjt188, dlt645
from drivers.codecs.framing import CJT188_LAYOUT, DLT645_LAYOUT, FrameSplitter

__all__ = ["MeterBus", "PtyAdapter"]


class PtyAdapter:
    """A pty pair behind a symlink; ``master`` is the device side's file descriptor."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.master: int | None = None
        self._slave: int | None = None
        self.lock = threading.Lock()
        self.replug()

    @property
    def plugged(self) -> bool:
        return self.master is not None

    def replug(self) -> None:
        with self.lock:
            self._close()
            master, slave = os.openpty()
            tty.setraw(slave)
            os.set_blocking(master, False)
            tmp = self.path.with_name(self.path.name + ".new")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(os.ttyname(slave))
            tmp.replace(self.path)          # atomic: the path is never half-made
            # keep our slave fd open so that the master side never reads EIO while the
            # gateway has the port closed (between a replug and its reopen)
            self.master, self._slave = master, slave

    def unplug(self) -> None:
        with self.lock:
            self._close()
            self.path.unlink(missing_ok=True)

    def _close(self) -> None:
        for fd in (self.master, self._slave):
            if fd is not None:
                os.close(fd)
        self.master = self._slave = None

    def write(self, data: bytes) -> None:
        with self.lock:
            if self.master is not None:
                os.write(self.master, data)

    def read(self, timeout: float) -> bytes:
        fd = self.master
        if fd is None:
            time.sleep(timeout)
            return b""
        try:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                return b""
            with self.lock:
                if self.master != fd:
                    return b""
                return os.read(fd, 4096)
        except (OSError, ValueError):
            return b""     # unplugged meanwhile (fd closed) or no reader yet


class MeterBus:
    """Meters answering on an adapter, in a background thread (``start()`` / ``stop()``)."""

    def __init__(self, adapter: PtyAdapter, *, protocol: str,
                 dlt645_meters: dict[str, dict[int, float]] | None = None,
                 cjt188_meters: dict[str, float] | None = None, cjt188_type: int = 0x10):
        self.adapter = adapter
        self.protocol = protocol
        self.dlt645_meters = dlt645_meters or {}
        self.cjt188_meters = cjt188_meters or {}
        self.cjt188_type = cjt188_type
        self.valves: dict[str, str] = dict.fromkeys(self.cjt188_meters, "open")
        self.valve_commands: list[tuple[str, bool]] = []     # (address, open)
        self.refuse_valve: set[str] = set()
        self.dead: set[str] = set()
        self.corrupt_next = 0
        self.split_replies = False
        self.junk = b""
        self.requests = 0
        self.bad_requests = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        layout = DLT645_LAYOUT if protocol == "dlt645" else CJT188_LAYOUT
        self._splitter = FrameSplitter(layout)
        self._layout = layout

    def start(self) -> MeterBus:
        self._thread = threading.Thread(target=self._run, name="sim-meter-bus", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        master = None
        while not self._stop.is_set():
            if self.adapter.master != master:          # replugged: fresh stream
                master = self.adapter.master
                self._splitter = FrameSplitter(self._layout)
            data = self.adapter.read(0.05)
            if not data:
                continue
            for item in self._splitter.feed(data):
                if isinstance(item, DecodeError):
                    self.bad_requests += 1
                    continue
                reply = self._answer(item)
                if reply is not None:
                    self._send(reply)

    def _send(self, reply: bytes) -> None:
        if self.corrupt_next > 0:
            self.corrupt_next -= 1
            reply = reply[:-2] + bytes([(reply[-2] + 1) & 0xFF]) + reply[-1:]
        if self.junk:
            self.adapter.write(self.junk)
        if self.split_replies:
            half = len(reply) // 2
            self.adapter.write(reply[:half])
            time.sleep(0.02)
            self.adapter.write(reply[half:])
        else:
            self.adapter.write(reply)

    def _answer(self, frame: bytes) -> bytes | None:
        self.requests += 1
        if self.protocol == "dlt645":
            req = dlt645.decode_frame(frame)
            if req.control == dlt645.C_READ_ADDRESS and len(self.dlt645_meters) == 1:
                (address,) = self.dlt645_meters
                return None if address in self.dead else dlt645.encode_address_reply(address)
            if req.control != dlt645.C_READ or req.address in self.dead:
                return None
            values = self.dlt645_meters.get(req.address)
            if values is None:
                return None                              # not on this bus: silence
            di = int.from_bytes(req.data[:4], "little")
            if di not in values:
                return dlt645.encode_abnormal_reply(req.address, 0x02)
            return dlt645.encode_read_reply(req.address, di, values[di], preamble=2)
        creq = cjt188.decode_frame(frame)
        if creq.address in self.dead or creq.address not in self.cjt188_meters:
            return None
        ser = creq.data[2] if len(creq.data) > 2 else 0
        open_valve = cjt188.valve_request(creq)
        if open_valve is not None:
            self.valve_commands.append((creq.address, open_valve))
            if creq.address in self.refuse_valve:
                return cjt188.encode_error_reply(creq.address, meter_type=self.cjt188_type,
                                                 ser=ser, status=0x03,
                                                 control=cjt188.C_WRITE_ERROR)
            self.valves[creq.address] = "open" if open_valve else "closed"
            return cjt188.encode_valve_reply(creq.address, meter_type=self.cjt188_type,
                                             ser=ser, valve=self.valves[creq.address])
        if creq.control != cjt188.C_READ:
            return None
        return cjt188.encode_read_reply(creq.address, volume=self.cjt188_meters[creq.address],
                                        meter_type=self.cjt188_type, ser=ser,
                                        valve=self.valves.get(creq.address, "open"))


class PtyLink:
    """Two pty adapters wired together (a null-modem cable): what one side's port writes,
    the other side's port reads. For tests of a serial master against a serial slave that
    both open ports by path (e.g. a pymodbus RTU server and the gateway's RTU bus)."""

    def __init__(self, path_a: Path, path_b: Path):
        self.a, self.b = PtyAdapter(path_a), PtyAdapter(path_b)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-pty-link", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            fds = [fd for fd in (self.a.master, self.b.master) if fd is not None]
            try:
                ready, _, _ = select.select(fds, [], [], 0.05)
            except (OSError, ValueError):
                continue
            for fd in ready:
                src, dst = (self.a, self.b) if fd == self.a.master else (self.b, self.a)
                data = src.read(0)
                if data:
                    dst.write(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.a.unplug()
        self.b.unplug()
