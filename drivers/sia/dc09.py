"""SIA DC-09 frames on pysiaalarm: parse one frame, judge it, build its answer, map its event.

The protocol work is pysiaalarm's (``SIAEvent.from_line``): the frame's regular expressions,
CRC-16/ARC, AES-CBC decryption per account, the ADM-CID (Contact ID) and SIA-DCS bodies, the
timestamp window (``SIAAccount.allowed_timeband`` = 40 s behind, 20 s ahead: DC-09's
-40/+20 s) and the ACK/NAK frames (``SIAEvent.create_response``, ``NAKEvent``). What is
written here, and why (docs/profiles.md, "SIA DC-09 panels"):

- the verdict's *order* and reasons: pysiaalarm's servers answer before their callback runs
  and answer an unknown account with a bare ``"NAK"``; the gateway answers after the durable
  commit and an unknown account with DUH (DC-09: the receiver cannot handle the message;
  the panel does not retry it);
- the DUH frame: pysiaalarm builds none; it is framed here with pysiaalarm's own CRC;
- an account with a key refuses unencrypted frames (``unencrypted``): pysiaalarm accepts
  them, which would let anyone on the network speak for an encrypted panel;
- the key is given as bytes (``SIAAccount.key_b``), never as ``key``: pysiaalarm copies
  ``key`` into an ACK as ``[K...]`` (DC-09's "new key") when a frame has any extended data.

Events become readings through the Contact ID receiver's table,
:data:`drivers.codecs.contact_id.EVENT_KINDS`: ADM-CID carries the Contact ID code itself;
a SIA-DCS code is first turned into its Contact ID code with pysiaalarm's own Contact ID ->
SIA table (``ADM_MAPPING``) read backwards, plus the two codes that table lacks
(:data:`SIA_EXTRA`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Literal

from pysiaalarm import SIAAccount
from pysiaalarm.data.adm_mapping import ADM_MAPPING
from pysiaalarm.errors import EventFormatError, NoAccountError
from pysiaalarm.event import NAKEvent, SIAEvent
from pysiaalarm.utils import MAIN_MATCHER, MessageTypes

from drivers import DecodeError
from drivers.codecs.contact_id import EVENT_KINDS
from gateway.kernel.model import Kind, Reading

__all__ = ["ANSWER_FOR", "Dc09Event", "Dc09Frame", "SIA_EXTRA", "SIA_TO_CID", "frame",
           "parse_frame", "event_reading"]

#: DC-09 window of a frame's timestamp: seconds behind / ahead of the receiver's clock
WINDOW_BEHIND_S, WINDOW_AHEAD_S = 40, 20

#: SIA codes (DC-03) whose Contact ID code pysiaalarm's ADM_MAPPING does not list:
#: WA/WH water alarm / restore = 154 water leakage; XT/XR transmitter battery trouble /
#: restore = 384 RF transmitter low battery.
SIA_EXTRA: Mapping[str, tuple[int, int]] = MappingProxyType({
    "WA": (154, 1), "WH": (154, 3), "XT": (384, 1), "XR": (384, 3)})


def _sia_to_cid() -> dict[str, tuple[int, int]]:
    """SIA code -> (Contact ID code, qualifier) for the codes :data:`EVENT_KINDS` maps:
    pysiaalarm's ``ADM_MAPPING`` (Contact ID code -> {qualifier: SIA code}) backwards, the
    lowest Contact ID code winning (110 fire for FA, not 111 smoke); a SIA code that is both
    the event and the restore (RP, RX) is an event."""
    out: dict[str, tuple[int, int]] = {}
    for cid in sorted(EVENT_KINDS):
        for qualifier, sia in sorted(ADM_MAPPING.get(f"{cid:03d}", {}).items()):
            out.setdefault(sia, (cid, int(qualifier)))
    out.update(SIA_EXTRA)
    return out


#: SIA code -> (Contact ID code, qualifier 1 event / 3 restore)
SIA_TO_CID: Mapping[str, tuple[int, int]] = MappingProxyType(_sia_to_cid())

Verdict = Literal["event", "null", "nak", "duh"]
#: the answer each verdict gets
ANSWER_FOR: Mapping[str, str] = MappingProxyType(
    {"event": "ACK", "null": "ACK", "nak": "NAK", "duh": "DUH"})


@dataclass(frozen=True, slots=True)
class Dc09Event:
    """The event of an ADM-CID or SIA-DCS frame, as a Contact ID code (``cid`` None: a SIA
    code with no Contact ID code here)."""

    cid: int | None
    qualifier: int            # 1 new event, 3 restore, 6 still present (Contact ID's Q)
    group: int                # partition / area
    zone: int | None          # zone or user
    sia_code: str = ""        # the SIA-DCS code, or pysiaalarm's SIA name of a Contact ID code

    @property
    def label(self) -> str:
        cid = f"{self.cid:03d}" if self.cid is not None else "---"
        zone = f" zone {self.zone}" if self.zone is not None else ""
        return f"Q{self.qualifier} {cid}{f' ({self.sia_code})' if self.sia_code else ''}" \
               f" group {self.group:02d}{zone}"


@dataclass(frozen=True)
class Dc09Frame:
    """One received frame, judged. ``verdict``: ``event`` (ACK once committed), ``null`` (a
    heartbeat, ACK), ``nak`` (``reason`` bad_crc, bad_timestamp, bad_format) or ``duh``
    (``reason`` unknown_account, unencrypted, bad_format). ``answer`` is the frame to send
    back (for an event: the ACK, to be sent after the commit)."""

    verdict: Verdict
    reason: str
    account: str             # as in the frame ("" when unreadable)
    sequence: str
    message_type: str        # ADM-CID | SIA-DCS | NULL | ...
    encrypted: bool
    timestamp: datetime | None
    event: Dc09Event | None
    answer: bytes
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict in ("event", "null")


def frame(body: str) -> bytes:
    """``<LF>CRC(4)0LLL<body><CR>``: the CRC is pysiaalarm's CRC-16/ARC."""
    crc = SIAEvent._crc_calc(body)  # noqa: SLF001 - the library's CRC, not a second copy
    return f"\n{crc}{len(body):04X}{body}\r".encode("ascii")


def _duh(sequence: str, receiver: str, line: str, account: str) -> bytes:
    return frame(f'"DUH"{sequence}{receiver}{line}#{account}[]')


_NAK = NAKEvent()


def _nak() -> bytes:
    return _NAK.create_response()


def _header(text: str) -> dict[str, str]:
    m = MAIN_MATCHER.match(text)
    return {k: v or "" for k, v in m.groupdict().items()} if m else {}


_WS = re.compile(r"\s+")


def parse_frame(raw: bytes, keys: Mapping[str, bytes | None], *,
                check_time: bool = True) -> Dc09Frame:
    """Judge one frame (with or without its LF/CR) for the accounts ``keys`` (account, upper
    case -> AES key bytes, None for an account without encryption). Never raises on bad
    input: a frame that cannot be read is a ``nak`` (bad CRC: it may read on a resend) or a
    ``duh`` (intact but not understood). ``check_time`` False skips the timestamp window
    (``gateway profile test`` on an old capture)."""
    text = raw.decode("ascii", "replace").strip()
    head = _header(text)
    account = head.get("account", "").upper()
    sequence = head.get("sequence", "0000")
    msg_type = head.get("message_type", "")
    encrypted = bool(head.get("encrypted_flag"))

    def refused(verdict: Verdict, reason: str, detail: str) -> Dc09Frame:
        if verdict == "duh" and head:
            answer = _duh(sequence, head.get("receiver", ""), head.get("line", ""), account)
        else:
            answer = _nak()
        return Dc09Frame(verdict, reason, account, sequence, msg_type, encrypted, None, None,
                         answer, detail)

    if not head:
        return refused("nak", "bad_format", f"not a DC-09 frame: {text[:60]!r}")
    crc = SIAEvent._crc_calc(text[8:])  # noqa: SLF001 - the library's CRC
    if crc != text[:4].upper():
        # damaged bytes (the account among them, perhaps): a resend may read
        return refused("nak", "bad_crc", f"CRC {text[:4]}, computed {crc}")
    if account not in keys:
        return refused("duh", "unknown_account", f"account {account!r} is not configured")
    key = keys[account]
    if key is not None and not encrypted:
        return refused("duh", "unencrypted", "an unencrypted frame for an account with a key")
    sia_account = SIAAccount(account, None, allowed_timeband=(
        (WINDOW_BEHIND_S, WINDOW_AHEAD_S) if check_time else None))
    sia_account.key_b = key        # the key as bytes; never `key` (see the module docstring)
    # the header's CRC in upper case, as pysiaalarm computes it
    line = text[:4].upper() + text[4:]
    try:
        # (pysiaalarm looks the account up as written in the frame)
        ev = SIAEvent.from_line(line, {account: sia_account, head["account"]: sia_account})
    except NoAccountError:
        return refused("duh", "not_encrypted_account",
                       "an encrypted frame for an account without a key")
    except (EventFormatError, ValueError, UnicodeError, IndexError, KeyError,
            TypeError) as exc:   # what pysiaalarm raises on bodies it cannot take apart
        why = "cannot decrypt (wrong key?)" if encrypted else "body not understood"
        return refused("duh", "bad_format", f"{why}: {_WS.sub(' ', str(exc))[:120]}")
    if not ev.valid_message:
        return refused("nak", "bad_crc", f"CRC {ev.msg_crc}, computed {ev.calc_crc}")
    ts = ev.timestamp if isinstance(ev.timestamp, datetime) else None
    if not ev.valid_timestamp:
        return Dc09Frame("nak", "bad_timestamp", account, sequence, msg_type, encrypted, ts,
                         None, _nak_for(ev), f"timestamp {ts} outside -{WINDOW_BEHIND_S}/"
                         f"+{WINDOW_AHEAD_S} s of the receiver's clock")
    ev.receiver = ev.receiver or ""   # pysiaalarm would write "None" for an absent Rrcvr
    if ev.message_type == MessageTypes.NULL:
        return Dc09Frame("null", "", account, sequence, msg_type, encrypted, ts, None,
                         ev.create_response())
    try:
        event = _event(ev)
    except ValueError as exc:
        return refused("duh", "bad_format", f"event fields: {exc}")
    return Dc09Frame("event", "", account, sequence, msg_type, encrypted, ts, event,
                     ev.create_response())


def _nak_for(ev: SIAEvent) -> bytes:
    ev.receiver = ev.receiver or ""
    return ev.create_response()


def _digits(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _event(ev: SIAEvent) -> Dc09Event:
    if ev.message_type == MessageTypes.ADMCID:
        q, code = ev.event_qualifier or "", ev.event_type or ""
        return Dc09Event(int(code), int(q), _digits(ev.partition) or 0, _digits(ev.ri),
                         ev.code or "")
    code = (ev.code or "").upper()
    cid, qualifier = SIA_TO_CID.get(code, (None, 1))
    # DC-03: the number after the code is the zone (or user); "ri" is the area
    return Dc09Event(cid, qualifier, _digits(ev.ri) or 0, _digits((ev.message or "").strip()),
                     code)


def event_reading(event: Dc09Event, *, device_id: str, ts: datetime) -> Reading:
    """The reading of an event, by the Contact ID receiver's table (as
    :func:`drivers.codecs.contact_id.event_reading`: True on a new event or a condition still
    present, False on a restore, the other way round for ``inverted`` kinds);
    ``unknown_event_code`` for a code it does not map."""
    mapping = EVENT_KINDS.get(event.cid) if event.cid is not None else None
    if mapping is None:
        raise DecodeError("unknown_event_code", f"event {event.label} is not mapped",
                          where="DC-09 event")
    present = event.qualifier != 3
    return Reading(device_id, mapping.kind, present != mapping.inverted, ts,
                   metric=mapping.metric)


def heartbeat_reading(device_id: str, ts: datetime) -> Reading:
    """What a null message (or any frame) of a panel says: it is there."""
    return Reading(device_id, Kind.AVAILABILITY, True, ts, metric="availability")
