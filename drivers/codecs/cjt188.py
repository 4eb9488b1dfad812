"""CJ/T 188-2004 water and gas meters: read request, reply decoder, reply encoders.

Frame: ``[FE×0..4] 68 T A0..A6 C L DATA CS 16`` (see :mod:`drivers.codecs.framing`); no
0x33 offset. ``T`` is the meter type, the address is 14 BCD digits written as on the
nameplate and sent lowest byte first (``"AAAAAAAAAAAAAA"`` is the wildcard).

Reading the current data sends DATA ``1F 90 SER`` (identifier 0x901F, low byte first,
then a sequence byte). The reply (C=0x81, L=22) carries::

    1F 90 SER | current volume 4 BCD XXXXXX.XX + unit | settlement-day volume 4 + unit
    | clock 7 BCD | ST1 ST2

* units: 0x2C m³, 0x29 litres (converted to m³);
* clock: YYYYMMDDhhmmss as a 14-digit BCD number sent lowest byte first (seconds first,
  century last). Meters disagree on this; ``clock_high_first=True`` reads the other
  order. An invalid, all-zero (meters without a clock) or out-of-century (not
  2000-2099) clock gives ``None``, never an error: it is informational and the reading time is the gateway's ``ts``;
* ST1 bits 0-1: valve 00 open, 01 closed, 11 (or 10) abnormal; bit 2: battery low.
  ST2 is vendor-defined and kept raw in :attr:`Cjt188Reply.status`.

Valve control (write data, C=0x04): DATA ``17 A0 SER V`` (identifier 0xA017, low byte
first, a sequence byte, then V = 0x55 open or 0x99 close). The meter answers C=0x84 with
DATA ``17 A0 SER ST1 ST2`` (L=5), or C=0xC4 with ``SER ST1 ST2`` when it refuses. The reply
says the meter took the command; the valve's position is read back with 0x901F (a motor
takes seconds). Sources: ../shared/PROTOCOLS.md (frame), the CJ/T 188-2004 control and
identifier tables as implemented by an open meter firmware (write data 04/84/C4, DI A017,
55H open / 99H close; see docs/codecs.md).

Meter types decoded: 0x10-0x13 water (cold, hot, drinking, reclaimed) -> ``water_volume``,
0x30 gas -> ``gas_volume``. Heat meters (0x20/0x21) use another layout and are refused.

Errors (:class:`drivers.DecodeError`): the framing's ``bad_start``, ``truncated``,
``bad_length``, ``bad_checksum``, ``bad_end``, ``bad_bcd``; ``bad_control`` (not a read
reply), ``abnormal_reply`` (C=0xC1), ``unknown_di``, ``bad_unit``,
``unsupported_meter_type``, ``unexpected_reply`` (another meter than expected); for a
valve reply ``abnormal_reply`` is the meter's refusal (C=0xC4).
Encoders raise ``ValueError`` on arguments they cannot encode.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from drivers import DecodeError
from drivers.codecs.framing import (
    CJT188_LAYOUT, END, PREAMBLE, START, address_from_bytes, address_to_bytes, bcd_to_int,
    check_frame, checksum, int_to_bcd,
)
from gateway.kernel.model import Kind, Quality, Reading

__all__ = [
    "C_ERROR_REPLY",
    "C_READ",
    "C_READ_REPLY",
    "C_WRITE",
    "C_WRITE_ERROR",
    "C_WRITE_REPLY",
    "DI_READ_DATA",
    "DI_VALVE_CONTROL",
    "VALVE_CLOSE",
    "VALVE_OPEN",
    "METER_KINDS",
    "UNIT_LITRE",
    "UNIT_M3",
    "WILDCARD_ADDRESS",
    "Cjt188Frame",
    "Cjt188Reply",
    "Cjt188ValveReply",
    "build_read_request",
    "build_valve_request",
    "decode_frame",
    "decode_read_reply",
    "decode_valve_reply",
    "encode_error_reply",
    "encode_frame",
    "encode_read_reply",
    "encode_valve_reply",
    "valve_request",
]

C_READ = 0x01
C_READ_REPLY = 0x81
C_ERROR_REPLY = 0xC1
DI_READ_DATA = 0x901F
C_WRITE = 0x04
C_WRITE_REPLY = 0x84
C_WRITE_ERROR = 0xC4
DI_VALVE_CONTROL = 0xA017
VALVE_OPEN = 0x55
VALVE_CLOSE = 0x99
WILDCARD_ADDRESS = "AA" * 7
UNIT_M3 = 0x2C
UNIT_LITRE = 0x29

#: Meter type byte -> the kind of its cumulative volume.
METER_KINDS: dict[int, Kind] = {
    0x10: Kind.WATER_VOLUME, 0x11: Kind.WATER_VOLUME, 0x12: Kind.WATER_VOLUME,
    0x13: Kind.WATER_VOLUME, 0x30: Kind.GAS_VOLUME,
}
_UNIT_TO_M3 = {UNIT_M3: 1, UNIT_LITRE: 1000}     # divisor to m³
_VALVE = {0b00: "open", 0b01: "closed", 0b10: "abnormal", 0b11: "abnormal"}
_VALVE_BITS = {"open": 0b00, "closed": 0b01, "abnormal": 0b11}
_BATTERY_LOW = 0x04
_REPLY_LEN = 22


@dataclass(frozen=True, slots=True)
class Cjt188Frame:
    """One checked frame: meter type, address string, control code, DATA."""

    meter_type: int
    address: str
    control: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Cjt188Reply:
    """A decoded 0x901F reply. Volumes in m³; ``meter_clock`` is the meter's own local
    time (naive), ``None`` when it sent no valid time."""

    meter_type: int
    address: str
    ser: int
    volume: float
    settlement_volume: float
    meter_clock: datetime | None
    valve: str                 # "open" | "closed" | "abnormal"
    battery_low: bool
    status: int                # ST1 | ST2 << 8, as sent

    @property
    def kind(self) -> Kind:
        return METER_KINDS[self.meter_type]

    def readings(self, device_id: str, ts: datetime, *, has_valve: bool = True) -> list[Reading]:
        """Volume, battery-low and (for meters with a valve) valve readings.

        An abnormal valve gives ``valve_open`` of BAD quality (its position is unknown)
        and ``fault`` True with metric ``valve_fault``; a meter without a valve reports
        00 (open) in its status, so pass ``has_valve=False`` to leave the valve out.
        """
        out = [
            Reading(device_id, self.kind, self.volume, ts, metric="volume"),
            Reading(device_id, Kind.BATTERY_LOW, self.battery_low, ts, metric="battery_low"),
        ]
        if has_valve:
            if self.valve == "abnormal":
                out.append(Reading(device_id, Kind.VALVE_OPEN, None, ts,
                                   quality=Quality.BAD, metric="valve_open"))
            else:
                out.append(Reading(device_id, Kind.VALVE_OPEN, self.valve == "open", ts,
                                   metric="valve_open"))
            out.append(Reading(device_id, Kind.FAULT, self.valve == "abnormal", ts,
                               metric="valve_fault"))
        return out


@dataclass(frozen=True, slots=True)
class Cjt188ValveReply:
    """A meter's answer to a valve command: it took it (ST1 | ST2 << 8 as sent)."""

    meter_type: int
    address: str
    ser: int
    status: int


# -- frames ------------------------------------------------------------------------------
def encode_frame(meter_type: int, address: str, control: int, data: bytes = b"", *,
                 preamble: int = 2) -> bytes:
    """Build a frame (two FE wake-up bytes by default, as most meters expect)."""
    if not (0 <= meter_type <= 0xFF and 0 <= control <= 0xFF):
        raise ValueError("meter type and control are bytes")
    if len(data) > CJT188_LAYOUT.max_data_len:
        raise ValueError(f"{len(data)} DATA bytes, at most {CJT188_LAYOUT.max_data_len}")
    if not 0 <= preamble <= CJT188_LAYOUT.max_preamble:
        raise ValueError("0 to 4 wake-up bytes")
    body = bytearray([START, meter_type, *address_to_bytes(address, 7), control, len(data)])
    body += data
    body += bytes([checksum(body), END])
    return bytes([PREAMBLE] * preamble) + bytes(body)


def _split(raw: bytes) -> tuple[int, Cjt188Frame]:
    s, data = check_frame(raw, CJT188_LAYOUT)
    address = address_from_bytes(raw[s + 2:s + 9], at=s + 2)
    return s, Cjt188Frame(raw[s + 1], address, raw[s + 9], data)


def decode_frame(raw: bytes) -> Cjt188Frame:
    """Check one complete frame (wake-up bytes allowed) and take it apart."""
    return _split(raw)[1]


def build_read_request(address: str, *, meter_type: int = 0x10, ser: int = 0,
                       preamble: int = 2) -> bytes:
    """Read current data (C=0x01, DATA ``1F 90 SER``) from the meter at ``address``."""
    if not 0 <= ser <= 0xFF:
        raise ValueError(f"SER {ser!r} is not a byte")
    return encode_frame(meter_type, address, C_READ,
                        DI_READ_DATA.to_bytes(2, "little") + bytes([ser]), preamble=preamble)


def build_valve_request(address: str, *, open_valve: bool, meter_type: int = 0x10,
                        ser: int = 0, preamble: int = 2) -> bytes:
    """Valve control (C=0x04, DATA ``17 A0 SER 55|99``) to the meter at ``address``."""
    if not 0 <= ser <= 0xFF:
        raise ValueError(f"SER {ser!r} is not a byte")
    data = DI_VALVE_CONTROL.to_bytes(2, "little") + bytes(
        [ser, VALVE_OPEN if open_valve else VALVE_CLOSE])
    return encode_frame(meter_type, address, C_WRITE, data, preamble=preamble)


# -- decoding ---------------------------------------------------------------------------
def _volume(data: bytes, at: int, field: str) -> float:
    unit = data[4]
    divisor = _UNIT_TO_M3.get(unit)
    if divisor is None:
        raise DecodeError("bad_unit", f"volume unit 0x{unit:02X} is neither m³ (0x2C) nor "
                          "litre (0x29)", where=f"byte {at + 4} ({field} unit)")
    return bcd_to_int(data[:4], at=at, field=field) / 100 / divisor


def _clock(data: bytes, high_first: bool) -> datetime | None:
    if not high_first:
        data = data[::-1]
    digits = "".join(f"{b:02X}" for b in data)       # YYYYMMDDhhmmss when valid
    if not digits.isdigit():
        return None
    try:
        when = datetime.strptime(digits, "%Y%m%d%H%M%S")
    except ValueError:
        return None
    # a year outside this century is a clock read in the wrong order, or never set
    return when if 2000 <= when.year <= 2099 else None


def _refused(s: int, frame: Cjt188Frame) -> None:
    if frame.control & 0x40 and frame.control & 0x80:
        raise DecodeError("abnormal_reply", f"meter {frame.address} answered C=0x"
                          f"{frame.control:02X} with {frame.data.hex(' ') or 'no data'}",
                          where=f"byte {s + 9} (C)")


def _expected(s: int, frame: Cjt188Frame, expect_address: str | None) -> None:
    if expect_address is not None and frame.address != expect_address.upper():
        raise DecodeError("unexpected_reply", f"reply from meter {frame.address}, asked "
                          f"{expect_address}", where=f"byte {s + 2} (address)")


def decode_valve_reply(raw: bytes, *, expect_address: str | None = None) -> Cjt188ValveReply:
    """Decode the answer to a valve command (C=0x84, DATA ``17 A0 SER ST1 ST2``).

    ``abnormal_reply`` when the meter refused it (C=0xC4); ``unexpected_reply`` from another
    meter than ``expect_address`` (checked first: another meter's late answer is waited past);
    ``bad_control``, ``unknown_di``, ``bad_length`` for other frames."""
    s, frame = _split(raw)
    _expected(s, frame, expect_address)
    _refused(s, frame)
    if frame.control != C_WRITE_REPLY:
        raise DecodeError("bad_control", f"C=0x{frame.control:02X} is not a write reply",
                          where=f"byte {s + 9} (C)")
    data = frame.data
    if len(data) != 5:
        raise DecodeError("bad_length", f"L={len(data)}, the A017 reply has 5",
                          where=f"byte {s + 10} (L)")
    di = int.from_bytes(data[:2], "little")
    if di != DI_VALVE_CONTROL:
        raise DecodeError("unknown_di", f"identifier {di:04X} is not A017",
                          where=f"byte {s + 11} (DI)")
    return Cjt188ValveReply(frame.meter_type, frame.address, data[2], data[3] | data[4] << 8)


def valve_request(frame: Cjt188Frame) -> bool | None:
    """For a meter (simulator): True (open) / False (close) when ``frame`` is a valve
    command, None for any other frame."""
    data = frame.data
    if frame.control != C_WRITE or len(data) != 4 \
            or int.from_bytes(data[:2], "little") != DI_VALVE_CONTROL:
        return None
    return {VALVE_OPEN: True, VALVE_CLOSE: False}.get(data[3])


def decode_read_reply(raw: bytes, *, expect_address: str | None = None,
                      clock_high_first: bool = False) -> Cjt188Reply:
    """Decode the reply to a 0x901F read. See the module docstring for the layout."""
    s, frame = _split(raw)
    _refused(s, frame)
    if frame.control != C_READ_REPLY:
        raise DecodeError("bad_control", f"C=0x{frame.control:02X} is not a read reply",
                          where=f"byte {s + 9} (C)")
    if frame.meter_type not in METER_KINDS:
        raise DecodeError("unsupported_meter_type", f"meter type 0x{frame.meter_type:02X} "
                          "is not a water or gas meter", where=f"byte {s + 1} (T)")
    data, d = frame.data, s + 11
    if len(data) < 3:
        raise DecodeError("bad_length", f"L={len(data)}, a reply needs DI and SER",
                          where=f"byte {s + 10} (L)")
    di = int.from_bytes(data[:2], "little")
    if di != DI_READ_DATA:
        raise DecodeError("unknown_di", f"identifier {di:04X} is not 901F", where=f"byte {d} (DI)")
    if len(data) != _REPLY_LEN:
        raise DecodeError("bad_length", f"L={len(data)}, the 901F reply has {_REPLY_LEN}",
                          where=f"byte {s + 10} (L)")
    _expected(s, frame, expect_address)
    st1, st2 = data[20], data[21]
    return Cjt188Reply(
        meter_type=frame.meter_type,
        address=frame.address,
        ser=data[2],
        volume=_volume(data[3:8], d + 3, "current volume"),
        settlement_volume=_volume(data[8:13], d + 8, "settlement volume"),
        meter_clock=_clock(data[13:20], clock_high_first),
        valve=_VALVE[st1 & 0b11],
        battery_low=bool(st1 & _BATTERY_LOW),
        status=st1 | st2 << 8,
    )


# -- encoders for simulators and tests --------------------------------------------------
def _volume_bytes(volume: float) -> bytes:
    if volume < 0:
        raise ValueError("a cumulative volume is not negative")
    return int_to_bcd(round(volume * 100), 4) + bytes([UNIT_M3])


def encode_read_reply(address: str, *, volume: float, settlement_volume: float = 0.0,
                      meter_type: int = 0x10, clock: datetime | None = None,
                      valve: str = "open", battery_low: bool = False, ser: int = 0,
                      status_high: int = 0, preamble: int = 2) -> bytes:
    """A meter's 0x901F reply; volumes in m³ (rounded to 0.01), clock all zeros if None."""
    if valve not in _VALVE_BITS:
        raise ValueError(f"valve {valve!r}: open, closed or abnormal")
    if not (0 <= ser <= 0xFF and 0 <= status_high <= 0xFF):
        raise ValueError("SER and status are bytes")
    if clock is None:
        when = bytes(7)
    else:
        when = int_to_bcd(int(clock.strftime("%Y%m%d%H%M%S")), 7)
    st1 = _VALVE_BITS[valve] | (_BATTERY_LOW if battery_low else 0)
    data = (DI_READ_DATA.to_bytes(2, "little") + bytes([ser]) + _volume_bytes(volume)
            + _volume_bytes(settlement_volume) + when + bytes([st1, status_high]))
    return encode_frame(meter_type, address, C_READ_REPLY, data, preamble=preamble)


def encode_error_reply(address: str, *, meter_type: int = 0x10, ser: int = 0,
                       status: int = 0, preamble: int = 2,
                       control: int = C_ERROR_REPLY) -> bytes:
    """A meter's error reply (C=0xC1 to a read, ``control=C_WRITE_ERROR`` 0xC4 to a
    write): SER and the two status bytes."""
    return encode_frame(meter_type, address, control,
                        bytes([ser]) + status.to_bytes(2, "little"), preamble=preamble)


def encode_valve_reply(address: str, *, meter_type: int = 0x10, ser: int = 0,
                       valve: str = "closed", preamble: int = 2) -> bytes:
    """A meter's answer to a valve command (C=0x84): identifier, SER, ST1 ST2 with the
    valve bits of ``valve`` (the position it is moving to)."""
    if valve not in _VALVE_BITS:
        raise ValueError(f"valve {valve!r}: open, closed or abnormal")
    if not 0 <= ser <= 0xFF:
        raise ValueError("SER is a byte")
    data = DI_VALVE_CONTROL.to_bytes(2, "little") + bytes([ser, _VALVE_BITS[valve], 0])
    return encode_frame(meter_type, address, C_WRITE_REPLY, data, preamble=preamble)
