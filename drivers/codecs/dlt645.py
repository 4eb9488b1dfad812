"""DL/T 645-2007 electricity meters: request builders, reply decoders, reply encoders.

Frame: ``[FE×0..4] 68 A0..A5 68 C L DATA CS 16`` (see :mod:`drivers.codecs.framing`).
Addresses are 12-character strings written as on the meter's nameplate
(``"210987654321"``, sent ``21 43 65 87 09 21``); a byte may be ``AA`` (wildcard), so
``"AAAAAAAAAAAA"`` reads an unknown meter's address and ``"999999999999"`` is broadcast.
Every DATA byte travels with 0x33 added; the functions here take and return DATA with the
offset removed. Data identifiers are ints written DI3..DI0 (``0x02010100`` = voltage A)
and travel DI0 first.

Decoded values use the units of :class:`gateway.kernel.model.Kind`: kWh, V, A and **W** (the
meter sends kW; :data:`DATA_ITEMS` scales it). Current and power carry a sign in the top
bit of their highest byte (a negative power is export).

Every rejection of received bytes raises :class:`drivers.DecodeError`; reasons:
``bad_start``, ``truncated``, ``bad_length``, ``bad_checksum``, ``bad_end``, ``bad_bcd``
(from the framing), ``bad_control`` (not the reply this function decodes),
``abnormal_reply`` (C=0xD1: the meter refused; detail names its error bits),
``unknown_di``, ``unexpected_reply`` (another meter or identifier than expected).
Encoders raise ``ValueError`` on arguments they cannot encode.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from drivers import DecodeError
from drivers.codecs.framing import (
    DLT645_LAYOUT, END, PREAMBLE, START, address_from_bytes, address_to_bytes, bcd_to_int,
    check_frame, checksum, int_to_bcd,
)
from gateway.kernel.model import Kind, Reading

__all__ = [
    "BROADCAST_ADDRESS",
    "C_ABNORMAL_REPLY",
    "C_READ",
    "C_READ_ADDRESS",
    "C_READ_ADDRESS_REPLY",
    "C_READ_REPLY",
    "C_READ_REPLY_MORE",
    "DATA_ITEMS",
    "WILDCARD_ADDRESS",
    "DataItem",
    "Dlt645Frame",
    "Dlt645Reply",
    "build_read_address_request",
    "build_read_request",
    "decode_address_reply",
    "decode_frame",
    "decode_read_reply",
    "encode_abnormal_reply",
    "encode_address_reply",
    "encode_frame",
    "encode_read_reply",
]

C_READ = 0x11
C_READ_REPLY = 0x91
C_READ_REPLY_MORE = 0xB1      # normal reply, more frames follow (read them with C=0x12)
C_ABNORMAL_REPLY = 0xD1
C_READ_ADDRESS = 0x13
C_READ_ADDRESS_REPLY = 0x93

WILDCARD_ADDRESS = "AA" * 6
BROADCAST_ADDRESS = "99" * 6

_OFFSET = 0x33
_SIGN = 0x80

#: Bits of the error byte of an abnormal reply (DL/T 645-2007, error information word).
_ERROR_BITS = (
    "other error",
    "no requested data (identifier not supported)",
    "password error or unauthorised",
    "baud rate cannot be changed",
    "too many annual time zones",
    "too many daily time periods",
    "too many tariffs",
    "reserved bit 7",
)


@dataclass(frozen=True, slots=True)
class DataItem:
    """How one data identifier's value is sent and what reading it becomes.

    The value is ``size`` BCD bytes with ``decimals`` implied decimals; ``signed`` puts
    the sign in the top bit of the highest byte; ``scale`` converts the meter's unit to
    the kind's unit (kW -> W is 1000).
    """

    di: int
    metric: str
    kind: Kind
    size: int
    decimals: int
    signed: bool = False
    scale: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.di <= 0xFFFFFFFF:
            raise ValueError(f"DI {self.di:#x} is not 32 bits")
        if not 1 <= self.size <= 8 or not 0 <= self.decimals <= 2 * self.size:
            raise ValueError(f"DI {self.di:08X}: bad size/decimals")

    @property
    def max_raw(self) -> int:
        """Largest magnitude of the raw integer (the sign bit steals the top digit's 8)."""
        digits: int = 100 ** self.size     # int ** int is typed Any (a negative power is a float)
        return (8 if self.signed else 10) * digits // 10 - 1


def _item(di: int, metric: str, kind: Kind, size: int, decimals: int,
          signed: bool = False, scale: int = 1) -> tuple[int, DataItem]:
    return di, DataItem(di, metric, kind, size, decimals, signed, scale)


#: The identifiers this codec decodes. Formats: energy XXXXXX.XX kWh, voltage XXX.X V,
#: current XXX.XXX A (signed), total active power XX.XXXX kW (signed, reported in W).
DATA_ITEMS: Mapping[int, DataItem] = MappingProxyType(dict([
    _item(0x00000000, "energy_combined", Kind.ENERGY, 4, 2),
    _item(0x00010000, "energy_import", Kind.ENERGY, 4, 2),
    _item(0x00020000, "energy_export", Kind.ENERGY_EXPORT, 4, 2),
    _item(0x02010100, "voltage_a", Kind.VOLTAGE, 2, 1),
    _item(0x02010200, "voltage_b", Kind.VOLTAGE, 2, 1),
    _item(0x02010300, "voltage_c", Kind.VOLTAGE, 2, 1),
    _item(0x02020100, "current_a", Kind.CURRENT, 3, 3, signed=True),
    _item(0x02020200, "current_b", Kind.CURRENT, 3, 3, signed=True),
    _item(0x02020300, "current_c", Kind.CURRENT, 3, 3, signed=True),
    _item(0x02030000, "power_total", Kind.POWER, 3, 4, signed=True, scale=1000),
]))


@dataclass(frozen=True, slots=True)
class Dlt645Frame:
    """One checked frame: address string, control code, DATA with 0x33 removed."""

    address: str
    control: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Dlt645Reply:
    """A decoded read reply: ``value`` is in the unit of ``item.kind`` (kWh, V, A, W)."""

    address: str
    item: DataItem
    value: float
    more: bool = False        # C=0xB1: the meter has follow-up frames

    @property
    def di(self) -> int:
        return self.item.di

    def reading(self, device_id: str, ts: datetime) -> Reading:
        """The normalized reading (``ts`` is the time the reply was received, UTC)."""
        return Reading(device_id, self.item.kind, self.value, ts, metric=self.item.metric)


# -- frames ------------------------------------------------------------------------------
def encode_frame(address: str, control: int, data: bytes = b"", *, preamble: int = 4) -> bytes:
    """Build a frame; ``data`` is given without the 0x33 offset (added here)."""
    if not 0 <= control <= 0xFF:
        raise ValueError(f"control {control!r} is not a byte")
    if len(data) > DLT645_LAYOUT.max_data_len:
        raise ValueError(f"{len(data)} DATA bytes, at most {DLT645_LAYOUT.max_data_len}")
    if not 0 <= preamble <= DLT645_LAYOUT.max_preamble:
        raise ValueError("0 to 4 wake-up bytes")
    body = bytearray([START, *address_to_bytes(address, 6), START, control, len(data)])
    body += bytes((b + _OFFSET) & 0xFF for b in data)
    body += bytes([checksum(body), END])
    return bytes([PREAMBLE] * preamble) + bytes(body)


def _split(raw: bytes) -> tuple[int, Dlt645Frame]:
    s, data = check_frame(raw, DLT645_LAYOUT)
    address = address_from_bytes(raw[s + 1:s + 7], at=s + 1)
    return s, Dlt645Frame(address, raw[s + 8], bytes((b - _OFFSET) & 0xFF for b in data))


def decode_frame(raw: bytes) -> Dlt645Frame:
    """Check one complete frame (wake-up bytes allowed) and take it apart."""
    return _split(raw)[1]


def build_read_request(address: str, di: int, *, preamble: int = 4) -> bytes:
    """Read data (C=0x11) of identifier ``di`` from the meter at ``address``."""
    if not 0 <= di <= 0xFFFFFFFF:
        raise ValueError(f"DI {di!r} is not 32 bits")
    return encode_frame(address, C_READ, di.to_bytes(4, "little"), preamble=preamble)


def build_read_address_request(*, preamble: int = 4) -> bytes:
    """Read the address (C=0x13) of the one meter on the bus, using the AA wildcard."""
    return encode_frame(WILDCARD_ADDRESS, C_READ_ADDRESS, preamble=preamble)


def _abnormal(frame: Dlt645Frame, where: str) -> DecodeError:
    if len(frame.data) != 1:
        return DecodeError("bad_length", f"abnormal reply with {len(frame.data)} DATA bytes, "
                           "1 expected", where=where)
    err = frame.data[0]
    bits = [text for bit, text in enumerate(_ERROR_BITS) if err >> bit & 1] or ["no bit set"]
    return DecodeError("abnormal_reply", f"meter {frame.address} refused (error 0x{err:02X}: "
                       f"{'; '.join(bits)})", where=where)


def decode_read_reply(raw: bytes, *, expect_address: str | None = None,
                      expect_di: int | None = None) -> Dlt645Reply:
    """Decode a read reply (C=0x91 or 0xB1) into a value in the kind's unit.

    C=0xD1 raises ``abnormal_reply``. With ``expect_address``/``expect_di`` a reply from
    another meter or for another identifier raises ``unexpected_reply`` (a late answer
    to an earlier request must not be booked under the wrong register).
    """
    s, frame = _split(raw)
    if frame.control == C_ABNORMAL_REPLY:
        raise _abnormal(frame, f"byte {s + 8} (C)")
    if frame.control not in (C_READ_REPLY, C_READ_REPLY_MORE):
        raise DecodeError("bad_control", f"C=0x{frame.control:02X} is not a read reply",
                          where=f"byte {s + 8} (C)")
    if len(frame.data) < 4:
        raise DecodeError("bad_length", f"L={len(frame.data)}, a reply needs the 4-byte DI",
                          where=f"byte {s + 9} (L)")
    di = int.from_bytes(frame.data[:4], "little")
    item = DATA_ITEMS.get(di)
    if item is None:
        raise DecodeError("unknown_di", f"data identifier {di:08X} is not decoded here",
                          where=f"byte {s + 10} (DI)")
    if len(frame.data) != 4 + item.size:
        raise DecodeError("bad_length", f"DI {di:08X} carries {item.size} value bytes, got "
                          f"{len(frame.data) - 4}", where=f"byte {s + 9} (L)")
    if expect_address is not None and frame.address != expect_address.upper():
        raise DecodeError("unexpected_reply", f"reply from meter {frame.address}, asked "
                          f"{expect_address}", where=f"byte {s + 1} (address)")
    if expect_di is not None and di != expect_di:
        raise DecodeError("unexpected_reply", f"reply for DI {di:08X}, asked {expect_di:08X}",
                          where=f"byte {s + 10} (DI)")
    value = bytearray(frame.data[4:])
    negative = item.signed and bool(value[-1] & _SIGN)
    if item.signed:
        value[-1] &= ~_SIGN & 0xFF
    magnitude = bcd_to_int(bytes(value), at=s + 14, field=f"DI {di:08X} value")
    number = magnitude * item.scale / 10 ** item.decimals
    return Dlt645Reply(frame.address, item, -number if negative else number,
                       frame.control == C_READ_REPLY_MORE)


def decode_address_reply(raw: bytes) -> str:
    """Decode the reply to a read-address request (C=0x93): the meter's address."""
    s, frame = _split(raw)
    if frame.control != C_READ_ADDRESS_REPLY:
        raise DecodeError("bad_control", f"C=0x{frame.control:02X} is not an address reply",
                          where=f"byte {s + 8} (C)")
    if len(frame.data) != 6:
        raise DecodeError("bad_length", f"L={len(frame.data)}, an address reply carries 6",
                          where=f"byte {s + 9} (L)")
    address = address_from_bytes(frame.data, at=s + 10)
    if "AA" in (address[i:i + 2] for i in range(0, 12, 2)):
        raise DecodeError("bad_bcd", f"a meter's own address cannot hold a wildcard: "
                          f"{address}", where=f"byte {s + 10} (DATA)")
    return address


# -- encoders for simulators and tests ------------------------------------------------------
def encode_read_reply(address: str, di: int, value: float, *, more: bool = False,
                      preamble: int = 0) -> bytes:
    """The meter's normal reply carrying ``value`` (in the kind's unit: kWh, V, A, W).

    ``value`` is rounded to the identifier's resolution. ``ValueError`` for an identifier
    outside :data:`DATA_ITEMS`, a negative value of an unsigned item, or a value too large.
    """
    item = DATA_ITEMS.get(di)
    if item is None:
        raise ValueError(f"DI {di:08X} has no known format")
    raw = round(abs(value) * 10 ** item.decimals / item.scale)
    if value < 0 and not item.signed:
        raise ValueError(f"DI {di:08X} cannot be negative")
    if raw > item.max_raw:
        raise ValueError(f"{value} does not fit DI {di:08X}")
    payload = bytearray(int_to_bcd(raw, item.size))
    if value < 0 and raw:
        payload[-1] |= _SIGN
    control = C_READ_REPLY_MORE if more else C_READ_REPLY
    return encode_frame(address, control, di.to_bytes(4, "little") + payload,
                        preamble=preamble)


def encode_abnormal_reply(address: str, error: int = 0x02, *, preamble: int = 0) -> bytes:
    """The meter's refusal (C=0xD1) with one error byte (0x02: no such data)."""
    if not 0 <= error <= 0xFF:
        raise ValueError(f"error {error!r} is not a byte")
    return encode_frame(address, C_ABNORMAL_REPLY, bytes([error]), preamble=preamble)


def encode_address_reply(address: str, *, preamble: int = 0) -> bytes:
    """The meter's answer to a read-address request (C=0x93)."""
    if "AA" in address.upper():
        raise ValueError("a meter's own address holds no wildcard")
    raw = address_to_bytes(address, 6)
    return encode_frame(address, C_READ_ADDRESS_REPLY, raw, preamble=preamble)
