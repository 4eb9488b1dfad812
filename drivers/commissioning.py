"""The installer's commissioning tool behind ``gateway profile list`` and ``gateway profile test``.

``test`` decodes one captured input with a profile, exactly as the running drivers do, and
returns output lines (JSON objects with ``metric``, ``value``, ``unit``, ``kind``,
``quality``: one per reading, and the meter's address for a DL/T 645 address reply) and the
problems (each naming the byte offset, line or field). Inputs:

* ``json`` profiles: a JSON file ``{"topic": ..., "payload": ...}`` (payload an object or a
  string, as captured with ``mosquitto_sub -v``);
* ``modbus`` profiles: a JSON file ``{"function": 3|4, "address": N, "registers": [...]}``
  (what a Modbus tool shows for one read; function 1|2 for coils or discrete inputs, the
  bits as 0/1 or true/false);
* ``dlt645`` / ``cjt188`` profiles: a text file of hex bytes as captured on the line
  (``FE FE 68 21 43 ...``; spaces, newlines, ``0x`` prefixes and ``#`` comments allowed);
  several frames may follow each other;
* ``contact_id`` profiles: a text file of receiver lines.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from drivers import DecodeError
from drivers.codecs import cjt188, contact_id, dlt645
from drivers.codecs.framing import CJT188_LAYOUT, DLT645_LAYOUT, FrameSplitter
from drivers.codecs.modbus_registers import BIT_FUNCTIONS, FUNCTIONS, decode_reading
from drivers.profiles import (AnyProfile, Cjt188Profile, ModbusProfile, Profile, ProfileSet,
                              decode_json, parse_json)
from gateway.kernel.model import Reading, utc

__all__ = ["decode_capture", "describe_profiles", "parse_hex", "reading_line"]

_HEX_TOKEN = re.compile(r"(?:0[xX])?([0-9A-Fa-f]{2})")


def describe_profiles(profiles: ProfileSet) -> list[dict[str, str]]:
    """One row per profile: id, format, device type, description, file."""
    return [{"id": p.id, "format": p.format, "device_type": p.device_type,
             "description": p.description, "file": profiles.sources.get(p.id, "")}
            for p in sorted(profiles.by_id.values(), key=lambda p: (p.format, p.id))]


def reading_line(r: Reading) -> dict[str, Any]:
    return {"metric": r.metric, "value": r.value, "unit": r.unit, "kind": r.kind.value,
            "quality": r.quality.value}


def parse_hex(text: str) -> bytes:
    """Hex bytes from a capture; ``DecodeError`` ``bad_hex`` naming line and column."""
    out = bytearray()
    for lineno, line in enumerate(text.splitlines(), 1):
        body = line.split("#", 1)[0]
        pos = 0
        for token in body.replace(",", " ").split():
            col = body.index(token, pos) + 1
            pos = col - 1 + len(token)
            matches = _HEX_TOKEN.fullmatch(token) or (
                re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", token))
            if not matches:
                raise DecodeError("bad_hex", f"{token!r} is not hex bytes",
                                  where=f"line {lineno} column {col}")
            out += bytes.fromhex(token[2:] if token[:2] in ("0x", "0X") else token)
    if not out:
        raise DecodeError("truncated", "no bytes in the capture", where="input")
    return bytes(out)


def decode_capture(profile: AnyProfile, raw: bytes, device_id: str = "test-device"
                   ) -> tuple[list[dict[str, Any]], list[DecodeError]]:
    """Output lines and problems for one captured input (see the module docstring).
    Input that cannot be taken apart at all raises ``DecodeError``."""
    readings, problems = _decode(profile, raw, device_id)
    return [r if isinstance(r, dict) else reading_line(r) for r in readings], problems


#: what a capture decodes to: readings, and (DL/T 645's address reply) output lines as they are
_Item = Reading | dict[str, Any]
_Decoded = tuple[Sequence[_Item], list[DecodeError]]


def _decode(profile: AnyProfile, raw: bytes, device_id: str) -> _Decoded:
    ts = utc()
    fmt = profile.format
    if fmt == "json":
        assert isinstance(profile, Profile)
        return _json_payload(profile, _json_doc(raw), device_id, ts)
    if fmt == "modbus":
        assert isinstance(profile, ModbusProfile)
        return _modbus(profile, _json_doc(raw), device_id, ts)
    if fmt == "contact_id":
        return _contact_id(raw, device_id, ts)
    return _frames(profile, parse_hex(raw.decode("utf-8", "replace")), device_id, ts)


def _json_payload(profile: Profile, doc: dict[str, Any], device_id: str,
                  ts: datetime) -> _Decoded:
    """Readings and field problems of a captured MQTT message, as the intake decodes it: a
    bad field is one problem and the other fields still give readings; when no field gives
    one, every field's problem is listed (not just the one the intake counts)."""
    payload = doc.get("payload")
    where = f"{doc.get('topic', '(no topic)')} (profile {profile.id})"
    if not isinstance(payload, (str, dict)):
        raise DecodeError("not_an_object", "payload must be a JSON object", where=where)
    problems: list[DecodeError] = []
    try:
        readings = decode_json(profile, device_id, payload, ts, where=where, problems=problems)
    except DecodeError:
        if not problems:
            raise
        return [], problems
    return readings, problems


def _json_doc(raw: bytes) -> dict[str, Any]:
    try:
        doc = parse_json(raw)
    except (ValueError, RecursionError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise DecodeError("malformed_json", f"input is not JSON: {detail}",
                          where="input") from None
    if not isinstance(doc, dict):
        raise DecodeError("not_an_object", "input must be a JSON object", where="input")
    return doc


def _modbus(profile: ModbusProfile, doc: dict[str, Any], device_id: str,
            ts: datetime) -> _Decoded:
    function, address, registers = doc.get("function"), doc.get("address"), doc.get("registers")
    if function not in FUNCTIONS:
        raise DecodeError("wrong_type", f"function {function!r}, 3 or 4 (registers), 1 or 2 "
                          f"(coils, discrete inputs)", where="field 'function'")
    if isinstance(address, bool) or not isinstance(address, int) or not 0 <= address <= 0xFFFF:
        raise DecodeError("wrong_type", f"address {address!r}, 0..65535", where="field 'address'")
    if not isinstance(registers, list) or not registers:
        raise DecodeError("wrong_type", "registers must be a non-empty list",
                          where="field 'registers'")
    if function in BIT_FUNCTIONS:       # bits as a Modbus tool shows them: 0/1 or true/false
        registers = [int(b) if isinstance(b, bool) else b for b in registers]
    end = address + len(registers)
    readings: list[_Item] = []
    problems: list[DecodeError] = []
    for e in profile.entries():
        if e.function != function or e.address + e.count <= address or e.address >= end:
            continue
        where = f"{e.metric} @ {e.address}"
        if e.address < address or e.address + e.count > end:
            problems.append(DecodeError("bad_length", f"{e.data_type} needs registers "
                                        f"{e.address}..{e.address + e.count - 1}, the read has "
                                        f"{address}..{end - 1}", where=where))
            continue
        try:
            readings.append(decode_reading(e, registers[e.address - address:
                                                        e.address - address + e.count],
                                           device_id=device_id, ts=ts))
        except DecodeError as exc:
            problems.append(exc)
    if not readings and not problems:
        raise DecodeError("no_known_fields", f"profile {profile.id} maps no register of "
                          f"function {function} in {address}..{end - 1}", where="input")
    return readings, problems


def _contact_id(raw: bytes, device_id: str, ts: datetime) -> _Decoded:
    readings: list[_Item] = []
    problems: list[DecodeError] = []
    for lineno, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            readings.append(contact_id.decode_line(line, device_id=device_id, ts=ts)[1])
        except DecodeError as exc:
            problems.append(DecodeError(exc.reason, exc.detail, where=f"line {lineno} {exc.where}"))
    return readings, problems


def _frames(profile: AnyProfile, data: bytes, device_id: str, ts: datetime) -> _Decoded:
    layout = DLT645_LAYOUT if profile.format == "dlt645" else CJT188_LAYOUT
    splitter = FrameSplitter(layout)
    items = splitter.feed(data) + splitter.flush()
    readings: list[_Item] = []
    problems: list[DecodeError] = []
    search = 0
    for item in items:
        if isinstance(item, DecodeError):
            problems.append(item)
            continue
        offset = data.find(item, search)
        search = offset + len(item)
        try:
            readings += _decode_frame(profile, item, device_id, ts)
        except DecodeError as exc:
            # the codec names bytes of the frame; add where the frame starts in the input
            problems.append(DecodeError(exc.reason, exc.detail,
                                        where=f"frame at byte {offset}: {exc.where}"))
    if not readings and not problems:
        raise DecodeError("truncated", "no frame in the capture", where="input")
    return readings, problems


def _decode_frame(profile: AnyProfile, frame: bytes, device_id: str,
                  ts: datetime) -> list[_Item]:
    if profile.format == "dlt645":
        if dlt645.decode_frame(frame).control == dlt645.C_READ_ADDRESS_REPLY:
            # the answer to the broadcast address read: what goes into devices.yaml
            return [{"metric": "meter_address", "value": dlt645.decode_address_reply(frame),
                     "unit": "", "kind": "address", "quality": "good"}]
        return [dlt645.decode_read_reply(frame).reading(device_id, ts)]
    assert isinstance(profile, Cjt188Profile)
    reply = cjt188.decode_read_reply(frame, clock_high_first=profile.clock_high_first)
    return list(reply.readings(device_id, ts, has_valve=profile.has_valve))
