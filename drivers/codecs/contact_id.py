"""Ademco Contact ID (SIA DC-05) events as printed by alarm receivers, one per line.

A line holds 16 hex digits ``ACCT(4) MT(2) Q(1) EEE(3) GG(2) CCC(3) S(1)``:

* ``ACCT`` account, hex digits, kept as printed (upper case);
* ``MT`` message type, 18 or 98; ``Q`` qualifier: 1 new event, 3 restore,
  6 previously reported condition still present;
* ``EEE`` event code, ``GG`` group/partition, ``CCC`` zone or user: decimal digits (an
  event code with hex letters is reported as ``unknown_event_code``);
* ``S`` checksum: the sum of all 16 digit values is a multiple of 15, where the digit 0
  counts as 10 and A-F as 10-15; a needed 15 is sent as F and a needed 10 as 0.

Accepted line formats, exactly: the 16 digits, upper or lower case, optionally with
spaces or tabs anywhere between digits (receivers print ``1234 18 1 110 01 003 5``),
optionally enclosed in one pair of square brackets, with any surrounding whitespace
(including the line's CR/LF). Nothing else: no receiver/line prefixes, no 15-digit lines
without the checksum, no DC-09 framing.

Errors (:class:`drivers.DecodeError`): ``bad_format`` (a character, field or value that
is not allowed; ``where`` names the field and digit), ``bad_length`` (not 16 digits),
``bad_checksum``, and ``unknown_event_code`` from :func:`event_reading` for codes outside
:data:`EVENT_KINDS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from drivers import DecodeError
from gateway.kernel.model import Kind, Reading

__all__ = [
    "EVENT_KINDS",
    "ContactIdEvent",
    "EventKind",
    "checksum_digit",
    "decode_line",
    "encode_line",
    "event_reading",
    "parse_line",
]

_HEX = "0123456789ABCDEF"
_HEX_SET = frozenset(_HEX)
#: (name, first digit index, length) of the fields after the account
_FIELDS = (("MT", 4, 2), ("Q", 6, 1), ("EEE", 7, 3), ("GG", 10, 2), ("CCC", 12, 3))


def _digit_value(ch: str) -> int:
    value = _HEX.index(ch)
    return 10 if value == 0 else value


def checksum_digit(first15: str) -> str:
    """The checksum digit that makes the 16 digit values sum to a multiple of 15."""
    need = 15 - sum(_digit_value(c) for c in first15.upper()) % 15
    return "0" if need == 10 else _HEX[need]


@dataclass(frozen=True, slots=True)
class ContactIdEvent:
    """One Contact ID event. ``ValueError`` from the constructor on impossible fields."""

    account: str
    qualifier: int
    code: int
    group: int = 0
    zone: int = 0
    message_type: int = 18

    def __post_init__(self) -> None:
        acct = self.account.upper() if isinstance(self.account, str) else ""
        if len(acct) != 4 or any(c not in _HEX_SET for c in acct):
            raise ValueError(f"account {self.account!r}: 4 hex digits")
        object.__setattr__(self, "account", acct)
        if self.message_type not in (18, 98):
            raise ValueError(f"message type {self.message_type!r}: 18 or 98")
        if self.qualifier not in (1, 3, 6):
            raise ValueError(f"qualifier {self.qualifier!r}: 1, 3 or 6")
        for name, value, top in (("code", self.code, 999), ("group", self.group, 99),
                                 ("zone", self.zone, 999)):
            if not isinstance(value, int) or not 0 <= value <= top:
                raise ValueError(f"{name} {value!r}: 0..{top}")

    @property
    def is_restore(self) -> bool:
        return self.qualifier == 3

    @property
    def source(self) -> str:
        """``ACCT/GG/CCC``: a stable key for the sensor or user behind the event."""
        return f"{self.account}/{self.group:02d}/{self.zone:03d}"


@dataclass(frozen=True, slots=True)
class EventKind:
    """What a code becomes: ``inverted`` kinds are False while the event is present
    (a supervision loss means *not* available)."""

    kind: Kind
    metric: str
    inverted: bool = False


def _ek(code: int, kind: Kind, metric: str, inverted: bool = False) -> tuple[int, EventKind]:
    return code, EventKind(kind, metric, inverted)


#: Event codes mapped to readings. 130-134 are a panel's burglary zones (133, a 24-hour
#: zone, is not mapped: what it guards is site-specific). 301 (mains lost) is a FAULT: the panel still runs on
#: its battery; 302/384 are the panel's and a sensor's low battery; 381/102 are lost
#: supervision / missed check-in, hence AVAILABILITY False until restored.
EVENT_KINDS: Mapping[int, EventKind] = MappingProxyType(dict([
    _ek(100, Kind.SOS, "medical"),
    _ek(101, Kind.SOS, "personal_emergency"),
    _ek(102, Kind.AVAILABILITY, "check_in", inverted=True),
    _ek(110, Kind.FIRE, "fire"),
    _ek(111, Kind.SMOKE, "smoke"),
    _ek(114, Kind.HEAT, "heat"),
    _ek(120, Kind.PANIC, "panic"),
    _ek(122, Kind.PANIC, "silent_panic"),
    _ek(130, Kind.INTRUSION, "burglary"),
    _ek(131, Kind.INTRUSION, "perimeter"),
    _ek(132, Kind.INTRUSION, "interior"),
    _ek(134, Kind.INTRUSION, "entry_exit"),
    _ek(137, Kind.TAMPER, "tamper"),
    _ek(144, Kind.TAMPER, "sensor_tamper"),
    _ek(151, Kind.GAS, "gas"),
    _ek(154, Kind.WATER_LEAK, "water_leak"),
    _ek(158, Kind.HEAT, "high_temperature"),
    _ek(162, Kind.CARBON_MONOXIDE, "carbon_monoxide"),
    _ek(301, Kind.FAULT, "ac_power_loss"),
    _ek(302, Kind.BATTERY_LOW, "system_battery_low"),
    _ek(381, Kind.AVAILABILITY, "rf_supervision", inverted=True),
    _ek(384, Kind.BATTERY_LOW, "sensor_battery_low"),
    _ek(601, Kind.TEST, "manual_test"),
    _ek(602, Kind.TEST, "periodic_test"),
]))


def _digits(line: str | bytes) -> str:
    if isinstance(line, (bytes, bytearray)):
        try:
            line = bytes(line).decode("ascii")
        except UnicodeDecodeError as exc:
            raise DecodeError("bad_format", "line is not ASCII",
                              where=f"char {exc.start}") from None
    if not isinstance(line, str):
        raise DecodeError("bad_format", f"expected text, got {type(line).__name__}")
    text = line.strip()
    if text.startswith("[") and text.endswith("]") and len(text) >= 2:
        text = text[1:-1]
    out = []
    for pos, ch in enumerate(text):
        if ch in " \t":
            continue
        up = ch.upper() if ch.isascii() else ch
        if up not in _HEX_SET:
            raise DecodeError("bad_format", f"character {ch!r} is not a hex digit",
                              where=f"char {pos}")
        out.append(up)
    return "".join(out)


def parse_line(line: str | bytes) -> ContactIdEvent:
    """Parse one receiver line (see the module docstring for the accepted formats)."""
    digits = _digits(line)
    if len(digits) != 16:
        raise DecodeError("bad_length", f"{len(digits)} digits, Contact ID has 16",
                          where="line")
    if sum(_digit_value(c) for c in digits) % 15:
        raise DecodeError("bad_checksum", f"digit sum is not a multiple of 15 (S should be "
                          f"{checksum_digit(digits[:15])}, got {digits[15]})",
                          where="digit 16 (S)")
    values = {}
    for name, at, size in _FIELDS:
        field = digits[at:at + size]
        if not field.isdigit():
            # a hex event code is a well-formed line with a code nobody here defined
            reason = "unknown_event_code" if name == "EEE" else "bad_format"
            raise DecodeError(reason, f"{name}={field} is not decimal",
                              where=f"digit {at + 1} ({name})")
        values[name] = int(field)
    if values["MT"] not in (18, 98):
        raise DecodeError("bad_format", f"message type {values['MT']}, expected 18 or 98",
                          where="digit 5 (MT)")
    if values["Q"] not in (1, 3, 6):
        raise DecodeError("bad_format", f"qualifier {values['Q']}, expected 1, 3 or 6",
                          where="digit 7 (Q)")
    return ContactIdEvent(digits[:4], values["Q"], values["EEE"], values["GG"],
                          values["CCC"], values["MT"])


def event_reading(event: ContactIdEvent, *, device_id: str, ts: datetime) -> Reading:
    """The reading an event means: True on a new event or a condition still present
    (Q=1/6), False on a restore (Q=3), the other way round for ``inverted`` kinds.

    ``unknown_event_code`` for codes outside :data:`EVENT_KINDS` (they are counted,
    not guessed at). ``device_id`` is the caller's: usually one per :attr:`~ContactIdEvent.source`.
    """
    mapping = EVENT_KINDS.get(event.code)
    if mapping is None:
        raise DecodeError("unknown_event_code", f"Contact ID event {event.code:03d} is not "
                          "mapped", where=f"{event.source} EEE")
    present = not event.is_restore
    return Reading(device_id, mapping.kind, present != mapping.inverted, ts,
                   metric=mapping.metric)


def decode_line(line: str | bytes, *, device_id: str,
                ts: datetime) -> tuple[ContactIdEvent, Reading]:
    """:func:`parse_line` then :func:`event_reading`."""
    event = parse_line(line)
    return event, event_reading(event, device_id=device_id, ts=ts)


def encode_line(event: ContactIdEvent, *, spaced: bool = False) -> str:
    """The 16-digit line of ``event`` with its checksum; ``spaced`` separates the fields
    as receivers print them (``1234 18 1 110 01 003 5``)."""
    fields = [event.account, f"{event.message_type:02d}", str(event.qualifier),
              f"{event.code:03d}", f"{event.group:02d}", f"{event.zone:03d}"]
    fields.append(checksum_digit("".join(fields)))
    return " ".join(fields) if spaced else "".join(fields)
