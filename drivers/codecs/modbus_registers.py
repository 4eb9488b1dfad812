"""Modbus register maps: decode register values, plan block reads, encode for simulators.

A :class:`RegisterEntry` says where one value lives (function code 3 holding or 4 input
registers, or, for a boolean kind, 1 coil or 2 discrete input; 0-based PDU address), how it is laid out (data type, byte order inside each
16-bit register, word order across registers) and what it becomes
(``value = raw * scale + offset`` in the unit of ``kind``). Entries validate in
``__post_init__`` (``ValueError``); the YAML profile model wraps them elsewhere.

Orders: ``byte_order="big"`` is the Modbus norm (high byte of each register first);
``word_order="big"`` puts the most significant register first (Eastron SDM: big/big);
``word_order="little"`` is the common "CDAB" swap.

Decoding never invents a number: a NaN or infinite float (meters send NaN for a value
they do not have) becomes a ``Quality.BAD`` reading with value ``None``.

Errors (:class:`drivers.DecodeError`): ``bad_length`` (not as many registers as the
entry or block needs), ``bad_register`` (a value that is not a 16-bit unsigned int).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from drivers import DecodeError
from gateway.kernel.model import UNITS, Kind, Quality, Reading

__all__ = [
    "BIT_FUNCTIONS",
    "DATA_TYPES",
    "FUNCTIONS",
    "MAX_GAP",
    "MAX_REGISTERS",
    "ReadRequest",
    "RegisterEntry",
    "WriteRequest",
    "decode_block",
    "decode_reading",
    "decode_value",
    "encode_value",
    "plan_reads",
    "split_block",
]

#: data type -> (struct code, registers)
DATA_TYPES: dict[str, tuple[str, int]] = {
    "int16": ("h", 1), "uint16": ("H", 1), "int32": ("i", 2), "uint32": ("I", 2),
    "float32": ("f", 2), "float64": ("d", 4),
}
_FLOATS = frozenset({"float32", "float64"})
_ORDERS = frozenset({"big", "little"})
_TEXT_KINDS = frozenset({Kind.ACCESS, Kind.BUTTON})
#: Function codes a register map reads: 3 holding, 4 input registers; 1 coils, 2 discrete
#: inputs (one bit each, read as 0/1 "registers" of type uint16, for boolean kinds only).
FUNCTIONS = (1, 2, 3, 4)
BIT_FUNCTIONS = frozenset({1, 2})
#: The protocol's limit for one read of holding/input registers.
MAX_REGISTERS = 125
#: Unused registers we read rather than start another request (a round trip on RS-485 at
#: 9600 baud costs far more than 8 extra registers = 16 bytes).
MAX_GAP = 8


@dataclass(frozen=True, slots=True)
class RegisterEntry:
    """One value in a device's register map. See the module docstring for the fields.

    Numeric kinds (those with a unit in :data:`gateway.kernel.model.UNITS`) decode to floats; a
    ``unit``, if given, must be that kind's unit (convert with ``scale``). Boolean kinds
    (``smoke``, ``valve_open`` ...) need an integer type and read True when the raw
    value is non-zero; scale and offset do not apply to them.
    """

    metric: str
    kind: Kind
    address: int
    data_type: str = "uint16"
    function: int = 3
    byte_order: str = "big"
    word_order: str = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""

    def __post_init__(self) -> None:
        if not self.metric:
            raise ValueError("register entry without metric")
        try:
            object.__setattr__(self, "kind", Kind(self.kind))
        except ValueError:
            raise ValueError(f"{self.metric}: unknown kind {self.kind!r}") from None
        if self.kind in _TEXT_KINDS:
            raise ValueError(f"{self.metric}: kind {self.kind} is text, not a register value")
        if self.data_type not in DATA_TYPES:
            raise ValueError(f"{self.metric}: data type {self.data_type!r}, one of "
                             f"{', '.join(DATA_TYPES)}")
        if self.function not in FUNCTIONS:
            raise ValueError(f"{self.metric}: function {self.function!r}, 3 (holding) or 4 "
                             f"(input registers), 1 (coil) or 2 (discrete input)")
        if isinstance(self.address, bool) or not isinstance(self.address, int) \
                or not 0 <= self.address <= 0xFFFF - self.count + 1:
            raise ValueError(f"{self.metric}: address {self.address!r} outside 0..65535")
        if self.byte_order not in _ORDERS or self.word_order not in _ORDERS:
            raise ValueError(f"{self.metric}: byte and word order are 'big' or 'little'")
        if not (math.isfinite(self.scale) and math.isfinite(self.offset)) or self.scale == 0:
            raise ValueError(f"{self.metric}: scale must be finite and non-zero, offset finite")
        if self.function in BIT_FUNCTIONS and not (self.is_bool and self.data_type == "uint16"):
            raise ValueError(f"{self.metric}: a coil or discrete input (function "
                             f"{self.function}) is one bit: a boolean kind, data type uint16")
        if self.is_bool:
            if self.data_type in _FLOATS:
                raise ValueError(f"{self.metric}: boolean kind {self.kind} needs an integer type")
        elif self.unit and self.unit != UNITS[self.kind]:
            raise ValueError(f"{self.metric}: {self.kind} is in {UNITS[self.kind]}, not "
                             f"{self.unit}; convert with scale")

    @property
    def count(self) -> int:
        """Registers the value spans (a coil or discrete input: one bit)."""
        return DATA_TYPES[self.data_type][1]

    @property
    def is_bool(self) -> bool:
        return self.kind not in UNITS


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read: ``count`` registers from ``address`` with ``function``, serving ``entries``."""

    function: int
    address: int
    count: int
    entries: tuple[RegisterEntry, ...]


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """One write a command makes: function 5 (one coil, ``values`` ``(0,)`` or ``(1,)``),
    6 (one holding register) or 16 (``values`` into consecutive holding registers from
    ``address``); 0-based PDU address, registers as 16-bit unsigned ints."""

    function: int
    address: int
    values: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.function not in (5, 6, 16):
            raise ValueError(f"write function {self.function!r}: 5 (coil), 6 (register) or "
                             f"16 (registers)")
        limit = 1 if self.function in (5, 6) else 123
        if not 1 <= len(self.values) <= limit:
            raise ValueError(f"function {self.function} writes 1..{limit} values, "
                             f"not {len(self.values)}")
        top = 1 if self.function == 5 else 0xFFFF
        for v in self.values:
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= top:
                raise ValueError(f"function {self.function}: value {v!r} outside 0..{top}")
        if not 0 <= self.address <= 0x10000 - len(self.values):
            raise ValueError(f"address {self.address!r} outside 0..65535")

    def describe(self) -> str:
        what = {5: "coil", 6: "register", 16: "registers"}[self.function]
        shown = self.values[0] if len(self.values) == 1 else list(self.values)
        return f"fc{self.function} {what} @{self.address} = {shown}"


def _raw(entry: RegisterEntry, registers: Sequence[int]) -> int | float:
    if len(registers) != entry.count:
        raise DecodeError("bad_length", f"{entry.data_type} needs {entry.count} registers, "
                          f"got {len(registers)}", where=f"{entry.metric} @ {entry.address}")
    words = []
    for i, reg in enumerate(registers):
        if isinstance(reg, bool) or not isinstance(reg, int) or not 0 <= reg <= 0xFFFF:
            raise DecodeError("bad_register", f"{reg!r} is not a 16-bit register value",
                              where=f"{entry.metric} register {entry.address + i}")
        word = reg.to_bytes(2, "big")
        words.append(word[::-1] if entry.byte_order == "little" else word)
    if entry.word_order == "little":
        words.reverse()
    value: int | float = struct.unpack(">" + DATA_TYPES[entry.data_type][0], b"".join(words))[0]
    return value


def decode_value(entry: RegisterEntry, registers: Sequence[int]) -> float | bool | None:
    """The entry's value in its kind's unit; ``None`` when the device sent NaN/inf."""
    raw = _raw(entry, registers)
    if entry.is_bool:
        return raw != 0
    if not math.isfinite(raw):
        return None
    if entry.data_type == "float32":
        # the shortest decimal that is the same float32: the meter's 217.7, not the double
        # 217.6999969482422 (numpy prints float32 that way)
        raw = float(str(np.float32(raw)))
    value = raw * entry.scale + entry.offset
    if not math.isfinite(value):
        return None
    if entry.scale != 1.0 or entry.offset:
        value = float(f"{value:.12g}")     # 1234 l * 0.001 is 1.234 m3, without binary noise
    return value


def decode_reading(entry: RegisterEntry, registers: Sequence[int], *, device_id: str,
                   ts: datetime) -> Reading:
    """:func:`decode_value` as a :class:`~gateway.kernel.model.Reading` (BAD when ``None``)."""
    value = decode_value(entry, registers)
    if value is None:
        # Reading fills the unit only for good values; a BAD one keeps it for display
        return Reading(device_id, entry.kind, None, ts, entry.unit or UNITS.get(entry.kind, ""),
                       Quality.BAD, metric=entry.metric)
    return Reading(device_id, entry.kind, value, ts, entry.unit, metric=entry.metric)


def encode_value(entry: RegisterEntry, value: float | bool) -> list[int]:
    """Registers a device would hold for ``value`` (the inverse of :func:`decode_value`).

    ``float("nan")`` encodes as NaN for float types. ``ValueError`` when the value does
    not fit the data type after removing scale and offset.
    """
    code = DATA_TYPES[entry.data_type][0]
    if entry.is_bool:
        raw: int | float = 1 if value else 0
    else:
        raw = (value - entry.offset) / entry.scale if math.isfinite(value) else value
        if entry.data_type not in _FLOATS:
            if not math.isfinite(raw):
                raise ValueError(f"{entry.metric}: {value} has no integer encoding")
            raw = round(raw)
    try:
        packed = struct.pack(">" + code, raw)
    except (struct.error, OverflowError):
        raise ValueError(f"{entry.metric}: {value} does not fit {entry.data_type}") from None
    words = [packed[i:i + 2] for i in range(0, len(packed), 2)]
    if entry.word_order == "little":
        words.reverse()
    if entry.byte_order == "little":
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def plan_reads(entries: Iterable[RegisterEntry], max_registers: int = MAX_REGISTERS,
               max_gap: int = MAX_GAP) -> list[ReadRequest]:
    """Merge entries into as few reads as possible, per function code.

    Entries are taken in address order; one joins the current read while the unused
    registers before it number at most ``max_gap`` and the read stays within
    ``max_registers``. Overlapping and duplicate entries share a read. The result is
    ordered by function, then address. ``ValueError`` for limits outside 1..125 / >= 0.
    """
    if not 1 <= max_registers <= MAX_REGISTERS or max_gap < 0:
        raise ValueError("max_registers in 1..125 and max_gap >= 0")
    ordered = sorted(entries, key=lambda e: (e.function, e.address, e.count))
    requests: list[ReadRequest] = []
    block: list[RegisterEntry] = []
    start = end = 0
    for entry in ordered:
        if entry.count > max_registers:
            raise ValueError(f"{entry.metric} spans {entry.count} registers, more than "
                             f"max_registers={max_registers}")
        new_end = max(end, entry.address + entry.count)
        if block and entry.function == block[0].function \
                and entry.address - end <= max_gap and new_end - start <= max_registers:
            block.append(entry)
            end = new_end
            continue
        if block:
            requests.append(ReadRequest(block[0].function, start, end - start, tuple(block)))
        block, start, end = [entry], entry.address, entry.address + entry.count
    if block:
        requests.append(ReadRequest(block[0].function, start, end - start, tuple(block)))
    return requests


def split_block(request: ReadRequest,
                registers: Sequence[int]) -> list[tuple[RegisterEntry, list[int]]]:
    """Cut a read's registers back into each entry's own registers, in entry order."""
    if len(registers) != request.count:
        raise DecodeError("bad_length", f"read of {request.count} registers returned "
                          f"{len(registers)}", where=f"function {request.function} "
                          f"@ {request.address}")
    return [(e, list(registers[e.address - request.address:
                               e.address - request.address + e.count]))
            for e in request.entries]


def decode_block(request: ReadRequest, registers: Sequence[int], *, device_id: str,
                 ts: datetime) -> list[Reading]:
    """Every entry of a read as a reading (see :func:`decode_reading`)."""
    return [decode_reading(e, regs, device_id=device_id, ts=ts)
            for e, regs in split_block(request, registers)]
