"""Shared pieces of the two "68 ... CS 16" meter protocols (DL/T 645, CJ/T 188).

Both protocols frame a message as ``[FE...] 68 <header> L DATA CS 16``: optional 0xFE
wake-up bytes, a 0x68 start byte, a fixed header whose last byte is L (the length of
DATA), then a checksum (sum mod 256 of every byte from the first 0x68 through DATA) and
a 0x16 end byte. They differ only in the header, described by :class:`FrameLayout`.

This module holds:

* BCD helpers (values are sent lowest byte first in both protocols);
* :func:`check_frame`, which validates one complete frame and raises a located
  :class:`~drivers.DecodeError`;
* :class:`FrameSplitter`, which turns arbitrary serial chunks into complete frames,
  reporting junk, corrupt and truncated frames as :class:`~drivers.DecodeError` values
  (returned, not raised, so that one bad frame never stops the stream).

Error reasons: ``bad_start``, ``truncated``, ``bad_length``, ``bad_checksum``,
``bad_end``, ``bad_bcd``, ``junk_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers import DecodeError

__all__ = [
    "CJT188_LAYOUT",
    "DLT645_LAYOUT",
    "END",
    "PREAMBLE",
    "START",
    "FrameLayout",
    "FrameSplitter",
    "address_from_bytes",
    "address_to_bytes",
    "bcd_to_int",
    "check_frame",
    "checksum",
    "int_to_bcd",
]

START = 0x68
END = 0x16
PREAMBLE = 0xFE


@dataclass(frozen=True, slots=True)
class FrameLayout:
    """Where a protocol keeps its length byte, and how long DATA may be.

    ``header_len`` counts the bytes from the first 0x68 through L. ``second_start`` is the
    offset of a second 0x68 inside the header (DL/T 645 has one at 7), or ``None``.
    ``max_data_len`` is the largest L accepted: a larger one is ``bad_length`` at once,
    so that a stray 0x68 in line noise does not make the splitter wait for 255 bytes.
    """

    name: str
    header_len: int
    second_start: int | None
    max_data_len: int
    max_preamble: int = 4

    def __post_init__(self) -> None:
        if self.header_len < 2:
            raise ValueError("header_len must include the start byte and L")
        if self.second_start is not None and not 0 < self.second_start < self.header_len - 1:
            raise ValueError("second_start must lie inside the header, before L")
        if not 0 <= self.max_data_len <= 255:
            raise ValueError("max_data_len must fit the one-byte L")

    @property
    def length_offset(self) -> int:
        return self.header_len - 1

    @property
    def max_frame_len(self) -> int:
        return self.header_len + self.max_data_len + 2


#: ``68 A0..A5 68 C L``. The 2007 edition limits DATA of a read to 200 bytes.
DLT645_LAYOUT = FrameLayout("DL/T 645", header_len=10, second_start=7, max_data_len=200)
#: ``68 T A0..A6 C L``. 128 is our bound (the 0x901F reply is 22 bytes), not the standard's.
CJT188_LAYOUT = FrameLayout("CJ/T 188", header_len=11, second_start=None, max_data_len=128,
                            max_preamble=4)


def checksum(data: bytes | bytearray) -> int:
    """Sum mod 256 (give it the bytes from the first 0x68 through DATA)."""
    return sum(data) & 0xFF


def bcd_to_int(data: bytes, *, at: int = 0, field: str = "value") -> int:
    """Decode packed BCD sent lowest byte first; a nibble above 9 is ``bad_bcd``.

    ``at`` is the offset of ``data`` in the frame, so the error names the exact byte.
    """
    value = 0
    for pos in range(len(data) - 1, -1, -1):
        byte = data[pos]
        hi, lo = byte >> 4, byte & 0x0F
        if hi > 9 or lo > 9:
            raise DecodeError("bad_bcd", f"byte 0x{byte:02X} is not BCD",
                              where=f"byte {at + pos} ({field})")
        value = value * 100 + hi * 10 + lo
    return value


def int_to_bcd(value: int, size: int) -> bytes:
    """Encode a non-negative integer as ``size`` bytes of BCD, lowest byte first.

    Raises ``ValueError`` when it does not fit (encoders are for our own simulators:
    a value that does not fit is a programming error, not bad input).
    """
    if value < 0 or value >= 100 ** size:
        raise ValueError(f"{value} does not fit {size} BCD bytes")
    out = bytearray()
    for _ in range(size):
        value, two = divmod(value, 100)
        out.append((two // 10) << 4 | two % 10)
    return bytes(out)


def address_to_bytes(address: str, size: int) -> bytes:
    """A nameplate address (``2 * size`` characters) as sent: lowest byte first.

    Each pair of characters is two decimal digits or ``AA`` (the wildcard byte).
    ``ValueError`` otherwise.
    """
    if not isinstance(address, str) or len(address) != 2 * size:
        raise ValueError(f"address {address!r}: {2 * size} characters expected")
    out = bytearray()
    for i in range(2 * size - 2, -1, -2):
        pair = address[i:i + 2].upper()
        if pair == "AA":
            out.append(0xAA)
        elif pair.isdigit() and pair.isascii():
            out.append(int(pair[0]) << 4 | int(pair[1]))
        else:
            raise ValueError(f"address {address!r}: {pair!r} is neither BCD nor AA")
    return bytes(out)


def address_from_bytes(raw: bytes, *, at: int) -> str:
    """The nameplate string of an address sent lowest byte first (``AA`` bytes kept).

    A byte that is neither BCD nor 0xAA raises ``bad_bcd`` located at ``at + i``.
    """
    pairs = []
    for i, byte in enumerate(raw):
        if byte != 0xAA and (byte >> 4 > 9 or byte & 0x0F > 9):
            raise DecodeError("bad_bcd", f"address byte 0x{byte:02X} is not BCD",
                              where=f"byte {at + i} (address)")
        pairs.append(f"{byte:02X}")
    return "".join(reversed(pairs))


def _skip_preamble(raw: bytes, layout: FrameLayout) -> int:
    i = 0
    while i < len(raw) and raw[i] == PREAMBLE:
        i += 1
    if i > layout.max_preamble:
        raise DecodeError("bad_start", f"{i} wake-up bytes, at most {layout.max_preamble}",
                          where=f"byte {layout.max_preamble}")
    return i


def check_frame(raw: bytes, layout: FrameLayout) -> tuple[int, bytes]:
    """Validate one complete frame; return ``(offset of the first 0x68, DATA as sent)``.

    Wake-up bytes (up to ``layout.max_preamble``) are skipped. Every failure raises
    :class:`~drivers.DecodeError` whose ``where`` is the byte offset in ``raw``:
    ``bad_start`` (no 0x68 where one must be), ``truncated`` (fewer bytes than the header
    or L promise), ``bad_length`` (L above the layout's bound, or bytes after the end),
    ``bad_checksum``, ``bad_end``.
    """
    raw = bytes(raw)
    s = _skip_preamble(raw, layout)
    if s >= len(raw):
        raise DecodeError("truncated", f"no {layout.name} frame: only wake-up bytes",
                          where=f"byte {s}")
    if raw[s] != START:
        raise DecodeError("bad_start", f"expected 0x68, got 0x{raw[s]:02X}", where=f"byte {s}")
    if len(raw) < s + layout.header_len:
        raise DecodeError("truncated", f"{len(raw) - s} bytes, the header needs "
                          f"{layout.header_len}", where=f"byte {len(raw)}")
    if layout.second_start is not None and raw[s + layout.second_start] != START:
        pos = s + layout.second_start
        raise DecodeError("bad_start", f"expected the second 0x68, got 0x{raw[pos]:02X}",
                          where=f"byte {pos}")
    length = raw[s + layout.length_offset]
    if length > layout.max_data_len:
        raise DecodeError("bad_length", f"L={length} exceeds {layout.max_data_len}",
                          where=f"byte {s + layout.length_offset} (L)")
    data_at = s + layout.header_len
    cs_at = data_at + length
    if len(raw) < cs_at + 2:
        raise DecodeError("truncated", f"L={length} needs {cs_at + 2 - s} bytes from 0x68, "
                          f"got {len(raw) - s}", where=f"byte {len(raw)}")
    if len(raw) > cs_at + 2:
        raise DecodeError("bad_length", f"{len(raw) - cs_at - 2} bytes after the end byte",
                          where=f"byte {cs_at + 2}")
    want = checksum(raw[s:cs_at])
    if raw[cs_at] != want:
        raise DecodeError("bad_checksum", f"CS is 0x{raw[cs_at]:02X}, computed 0x{want:02X}",
                          where=f"byte {cs_at} (CS)")
    if raw[cs_at + 1] != END:
        raise DecodeError("bad_end", f"expected 0x16, got 0x{raw[cs_at + 1]:02X}",
                          where=f"byte {cs_at + 1}")
    return s, raw[data_at:cs_at]


class FrameSplitter:
    """Cut a serial byte stream into complete frames of one :class:`FrameLayout`.

    ``feed(chunk)`` returns, in stream order, each complete frame (``bytes`` from the
    first 0x68 through 0x16, wake-up bytes removed) and each problem as a
    :class:`~drivers.DecodeError` *value*: ``junk_bytes`` (bytes that belong to no frame;
    one error per run, reported when the next frame starts or on ``flush()``, so the
    report does not depend on how the stream was chunked), ``bad_length``, ``bad_checksum``, ``bad_end``. After a bad
    candidate the splitter resynchronises one byte after its 0x68, so a good frame hidden
    behind a stray 0x68 is still found; the bytes of a rejected candidate are not
    reported again as junk. ``flush()`` (call it on an inter-frame timeout) reports a
    partial frame as ``truncated`` and empties the buffer. ``where`` is
    ``"stream offset N"``, counted from the first byte fed.

    The buffer never holds more than one frame's worth of bytes
    (``layout.max_frame_len`` plus wake-up bytes), whatever is fed.
    """

    __slots__ = ("layout", "_buf", "_base", "_quiet_until", "_junk_at", "_junk_len")

    def __init__(self, layout: FrameLayout) -> None:
        self.layout = layout
        self._buf = bytearray()
        self._base = 0            # stream offset of _buf[0]
        self._quiet_until = 0     # bytes before this offset were already reported
        self._junk_at = -1        # start of the current junk run, -1 if none
        self._junk_len = 0

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[bytes | DecodeError]:
        out: list[bytes | DecodeError] = []
        self._buf += chunk
        self._scan(out)
        return out

    def flush(self) -> list[bytes | DecodeError]:
        """End of a burst: whatever is buffered can no longer become a frame."""
        out: list[bytes | DecodeError] = []
        start = self._buf.find(START)
        self._consume(start if start >= 0 else len(self._buf), out)
        self._end_junk(out)
        if start >= 0:
            out.append(DecodeError("truncated", f"{len(self._buf)} bytes of an unfinished "
                                   f"{self.layout.name} frame", where=self._where(0)))
        self._drop(len(self._buf))
        return out

    # -- internals -------------------------------------------------------------------
    def _where(self, i: int) -> str:
        return f"stream offset {self._base + i}"

    def _drop(self, n: int) -> None:
        del self._buf[:n]
        self._base += n

    def _consume(self, n: int, out: list[bytes | DecodeError]) -> None:
        """Drop ``n`` leading bytes; non-FE bytes not yet reported are counted as junk."""
        for i in range(n):
            pos = self._base + i
            # wake-up bytes are line idle, not junk; a rejected candidate was reported
            if self._buf[i] == PREAMBLE or pos < self._quiet_until:
                continue
            if self._junk_at < 0:
                self._junk_at = pos
            self._junk_len += 1
        self._drop(n)

    def _end_junk(self, out: list[bytes | DecodeError]) -> None:
        if self._junk_at >= 0:
            out.append(DecodeError("junk_bytes", f"{self._junk_len} bytes outside any frame",
                                   where=f"stream offset {self._junk_at}"))
            self._junk_at, self._junk_len = -1, 0

    def _reject(self, out: list[bytes | DecodeError], reason: str, detail: str, at: int,
                end: int) -> None:
        """Report the candidate starting at buffer index 0 and resync after its 0x68."""
        self._end_junk(out)
        out.append(DecodeError(reason, detail, where=self._where(at)))
        self._quiet_until = max(self._quiet_until, self._base + end)
        self._drop(1)

    def _scan(self, out: list[bytes | DecodeError]) -> None:
        lay = self.layout
        while True:
            start = self._buf.find(START)
            if start < 0:
                # keep a short run of trailing FE: they may precede the next frame
                keep = 0
                while keep < len(self._buf) and self._buf[-1 - keep] == PREAMBLE:
                    keep += 1
                keep = min(keep, lay.max_preamble)
                self._consume(len(self._buf) - keep, out)
                return
            self._consume(start, out)
            buf = self._buf
            if len(buf) < lay.header_len:
                return
            if lay.second_start is not None and buf[lay.second_start] != START:
                # a 0x68 inside noise or an address, not a frame start: part of the junk run
                self._consume(1, out)
                continue
            self._end_junk(out)
            length = buf[lay.length_offset]
            if length > lay.max_data_len:
                self._reject(out, "bad_length", f"L={length} exceeds {lay.max_data_len}",
                             lay.length_offset, lay.header_len)
                continue
            total = lay.header_len + length + 2
            if len(buf) < total:
                return
            cs_at = total - 2
            want = checksum(buf[:cs_at])
            if buf[cs_at] != want:
                self._reject(out, "bad_checksum",
                             f"CS is 0x{buf[cs_at]:02X}, computed 0x{want:02X}",
                             cs_at, total)
                continue
            if buf[cs_at + 1] != END:
                self._reject(out, "bad_end", f"expected 0x16, got 0x{buf[cs_at + 1]:02X}",
                             cs_at + 1, total)
                continue
            out.append(bytes(buf[:total]))
            self._quiet_until = max(self._quiet_until, self._base + total)
            self._drop(total)
