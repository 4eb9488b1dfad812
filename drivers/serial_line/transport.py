"""The serial line's transport: its settings and devices, the port read through the event
loop, and what the meter poller and the alarm receiver need of the line (:class:`LineContext`).

pyserial opens and configures the port; reads go through the event loop
(``loop.add_reader`` on the port's file descriptor), so a quiet line costs nothing. A port
that fails raises :class:`LineLost`; :class:`drivers.serial_line.SerialLine` then reopens it
with backoff.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
import enum
from dataclasses import dataclass
from typing import Final, Protocol

import serial

from drivers import DecodeError, DecodeWatch, DriverError
from drivers.command_queue import CommandQueue
from drivers.profiles import AnyProfile
from gateway.kernel.metrics import MetricsSink
from gateway.kernel.model import Reading
from gateway.kernel.resilience import RateLimitedLog

__all__ = ["PROTOCOLS", "UNDECODABLE", "LineContext", "LineLost", "LineSettings", "Port",
           "SerialDevice", "Undecodable", "open_port"]

PROTOCOLS = ("dlt645", "cjt188", "contact_id")


class Undecodable(enum.Enum):
    """The one value of :data:`UNDECODABLE` (an enum, so that ``is UNDECODABLE`` narrows)."""
    UNDECODABLE = "undecodable"


#: a reply our decoding raised on (counted and reported already)
UNDECODABLE: Final = Undecodable.UNDECODABLE


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


class Port:
    """A pyserial port read through the event loop."""

    def __init__(self, ser: serial.Serial):
        self.ser = ser
        self.fd = ser.fileno()
        self.closed = False
        self._loop = asyncio.get_running_loop()

    async def read(self, timeout: float) -> bytes:
        """Bytes available within ``timeout`` (b"" if none); ``LineLost`` if the port died."""
        ready = self._loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        self._loop.add_reader(self.fd, wake)
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


def open_port(s: LineSettings) -> Port:
    """Open and configure the line's port (``OSError``/``SerialException`` if it cannot)."""
    ser = serial.Serial(s.device, baudrate=s.baudrate, bytesize=s.bytesize, parity=s.parity,
                        stopbits=s.stopbits, timeout=0, exclusive=True)
    return Port(ser)


class LineContext(Protocol):
    """What the meter poller and the alarm receiver use of their line (the
    :class:`drivers.serial_line.SerialLine`): its settings and devices, the intake, the
    counts, one rate-limited log, the devices' availability, and the commands waiting for
    the line (valve commands to CJ/T 188 meters)."""

    line_id: str
    settings: LineSettings
    devices: list[SerialDevice]
    commands: CommandQueue[SerialDevice]
    metrics: MetricsSink
    decode_watch: DecodeWatch
    on_unknown: Callable[[str, str], None]
    rlog: RateLimitedLog

    def is_unavailable(self, device_id: str) -> bool: ...

    def set_available(self, dev: SerialDevice, available: bool) -> None: ...

    def offer(self, dev: SerialDevice, readings: list[Reading],
              ack: Callable[[], None] | None = None, durable: bool = False) -> None: ...

    def reject(self, exc: DecodeError, device_id: str | None) -> None: ...

    def undecodable(self, dev: SerialDevice, exc: Exception, where: str) -> Undecodable: ...
