"""Zigbee2MQTT conventions, as pure functions (the MQTT intake and the installer pages call them).

* ``zigbee2mqtt/<friendly_name>``: the device's state, a JSON object with keys such as
  ``contact``, ``occupancy``, ``smoke``, ``water_leak``, ``gas``, ``tamper``, ``battery``,
  ``battery_low``, ``action``; decoded with the shipped ``zigbee2mqtt-<device type>`` JSON
  profiles (drivers/profiles/), so off-the-shelf sensors need no profile of their own.
* ``zigbee2mqtt/<friendly_name>/availability``: ``{"state": "online"|"offline"}`` (or the bare
  word, older versions) -> an ``availability`` reading (:func:`availability_reading`).
* ``zigbee2mqtt/bridge/devices`` (retained): the coordinator's device list -> entries for the
  installer's inbox of unknown devices (:func:`bridge_devices`), each with its definition
  (model, vendor, description, exposes), from which :func:`propose` proposes a device type
  and profile (zero-config).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drivers import DecodeError
from drivers.profiles import Profile, ProfileMisfit, ProfileSet, fit_profile
from gateway.kernel.model import DEVICE_TYPES, Kind, Reading

__all__ = ["AVAILABILITY_SUFFIX", "BASE", "BRIDGE_DEVICES", "MAX_BRIDGE_BYTES", "RULES",
           "Proposal", "Rule", "availability_reading", "bridge_devices", "device_entry",
           "inbox_entry", "propose", "suggest_id"]

BASE = "zigbee2mqtt"
AVAILABILITY_SUFFIX = "/availability"
BRIDGE_DEVICES = f"{BASE}/bridge/devices"
#: The device list of a large network is big: measured 2.8 KB per device on average and 5.5 KB
#: for the largest model (the converters' exposes of 64 real models,
#: tests/data/z2m/bridge_devices.json, plus a real network's endpoints and bindings), so 500
#: devices are about 1.4 MB, 2.8 MB if every one were the largest. Accepted up to this size,
#: the broker's message_size_limit (deploy/mosquitto/community-gateway.conf): what the broker
#: passes, the gateway reads (tests/test_zigbee_zero_config.py checks both).
MAX_BRIDGE_BYTES = 4 * 1024 * 1024
#: Marks an inbox sample that is a bridge/devices entry (see :func:`inbox_entry`).
SOURCE = "bridge/devices"
_STATES = {"online": True, "offline": False}


def availability_reading(device_id: str, payload: bytes, ts: datetime, *,
                         where: str = "") -> Reading:
    """``availability`` True/False from an availability message; ``DecodeError``
    ``unknown_value`` for anything but online/offline (JSON or bare word)."""
    text = payload.decode("utf-8", "replace").strip()
    state: object = text
    if text.startswith("{"):
        try:
            state = json.loads(text).get("state")
        except (ValueError, RecursionError, AttributeError):
            raise DecodeError("malformed_json", "availability is not a JSON object",
                              where=where) from None
    if not isinstance(state, str) or state.lower() not in _STATES:
        raise DecodeError("unknown_value", f"availability {text[:40]!r}, expected online or "
                          "offline", where=f"{where} field 'state'")
    return Reading(device_id, Kind.AVAILABILITY, _STATES[state.lower()], ts,
                   metric="availability")


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def device_entry(raw: object) -> dict[str, Any] | None:
    """One device of a ``bridge/devices`` list as the inbox keeps it: ``{topic,
    ieee_address, friendly_name, network_role, power_source, model, vendor, description,
    exposes, supported, interview_completed, source}``. ``network_role`` is Zigbee's
    (Coordinator, Router, EndDevice), not a device type. None without a friendly name."""
    if not isinstance(raw, dict):
        return None
    name = raw.get("friendly_name")
    if not isinstance(name, str) or not name:
        return None
    found = raw.get("definition")
    definition: dict[str, Any] = found if isinstance(found, dict) else {}
    exposes = definition.get("exposes")
    return {
        "topic": f"{BASE}/{name}",
        "ieee_address": str(raw.get("ieee_address", "")),
        "friendly_name": name,
        "network_role": _text(raw.get("type")),
        "power_source": _text(raw.get("power_source")),
        "model": str(definition.get("model") or raw.get("model")
                     or raw.get("model_id") or ""),
        "vendor": str(definition.get("vendor") or raw.get("vendor")
                      or raw.get("manufacturer") or ""),
        "description": _text(definition.get("description")),
        "exposes": [e for e in exposes if isinstance(e, dict)]
        if isinstance(exposes, list) else [],
        "supported": bool(raw.get("supported", bool(definition))) and bool(definition),
        "interview_completed": bool(raw.get("interview_completed", True)),
        "source": SOURCE,
    }


def bridge_devices(payload: bytes) -> list[dict[str, Any]]:
    """The devices of a ``bridge/devices`` message (:func:`device_entry` each; the
    coordinator itself is left out: it is the bridge, nothing to register).

    ``DecodeError`` ``malformed_json`` / ``not_a_list``; entries without a friendly name
    are skipped.
    """
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:   # see decode_json: depth and digit limits
        raise DecodeError("malformed_json", f"not JSON: {str(exc)[:200]}",
                          where=BRIDGE_DEVICES) from None
    if not isinstance(data, list):
        raise DecodeError("not_a_list", "bridge/devices must be a JSON list",
                          where=BRIDGE_DEVICES)
    out = []
    for raw in data:
        entry = device_entry(raw)
        if entry is not None and entry["network_role"] != "Coordinator":
            out.append(entry)
    return out


def inbox_entry(sample: str) -> dict[str, Any] | None:
    """The :func:`device_entry` an inbox sample holds (the MQTT intake hands each unbound
    device of ``bridge/devices`` on as its JSON), else None (a device's own message)."""
    if not sample.startswith("{"):
        return None
    try:
        data = json.loads(sample)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("source") != SOURCE:
        return None
    return data


# -- zero-config: a device type and profile from the exposes ---------------------------------

#: Action values that say "emergency" (an SOS button, the SOS key of a remote).
SOS_VALUES = re.compile(r"^(?:\d+_)?(?:emergency|sos|panic)$")
#: Action values of a press (a plain button, each key of a multi-key one: ``2_single``).
PRESS_VALUES = re.compile(r"^(?:\d+_|button_\d+_)?(?:single|double|triple|quadruple|many|"
                          r"hold|long|long_press|click|press|pressed|shake)$")


@dataclass(frozen=True, slots=True)
class Rule:
    """Exposes that make a device one kind: any of ``properties`` (an ``action`` only with a
    value matching ``values``), proposed as the first of ``types`` that exists whose
    ``zigbee2mqtt-<type>`` profile reads it."""

    why: str
    properties: tuple[str, ...]
    types: tuple[str, ...]
    values: re.Pattern[str] | None = None


#: In priority order, first match wins: life safety first, then activity, then comfort; a
#: plain button last (a device with sensors and an action is the sensor). Types that do
#: not exist (yet) are skipped, so a CO detector type added to the kernel is used at once.
RULES: tuple[Rule, ...] = (
    Rule("smoke", ("smoke",), ("smoke_detector",)),
    # a CO detector type when there is one; else the gas detector, whose profile reads CO
    Rule("carbon_monoxide", ("carbon_monoxide",),
         ("co_detector", "carbon_monoxide_detector", "gas_detector")),
    Rule("gas", ("gas",), ("gas_detector",)),
    Rule("water_leak", ("water_leak",), ("water_leak_detector",)),
    Rule("sos", ("sos", "emergency", "action"), ("emergency_caller",), SOS_VALUES),
    Rule("contact", ("contact",), ("door_contact",)),
    Rule("presence", ("presence",), ("presence_sensor", "motion_sensor")),
    Rule("occupancy", ("occupancy",), ("motion_sensor", "presence_sensor")),
    Rule("temperature", ("temperature", "humidity"), ("temperature_sensor",)),
    Rule("button", ("action",), ("emergency_caller",), PRESS_VALUES),
)
#: Exposes whose loss would lose an alarm: shown apart when the proposed profile ignores one.
ALARM_PROPERTIES = frozenset({"smoke", "carbon_monoxide", "gas", "water_leak", "sos",
                              "emergency", "tamper", "fault", "device_fault", "fault_alarm",
                              "fire", "heat", "panic"})
#: Short id prefixes of the device types (``smoke-7-101``); others use the type.
ID_PREFIX = {"emergency_caller": "caller", "smoke_detector": "smoke", "gas_detector": "gas",
             "co_detector": "co", "water_leak_detector": "leak", "door_contact": "door",
             "motion_sensor": "motion", "presence_sensor": "presence",
             "temperature_sensor": "temp", "heat_detector": "heat"}


@dataclass(frozen=True, slots=True)
class Proposal:
    """What zero-config proposes for one Zigbee device.

    ``device_type``/``profile`` are None when nothing is proposed; ``why`` then says why:
    ``coordinator`` (the bridge itself), ``not_interviewed`` (no definition: unsupported or
    pairing not finished), ``no_sensors`` (no expose the gateway reads: a plug, a light, a
    repeater) or ``unread`` (``trigger`` is what makes it a device type, but no profile of
    that type reads it yet). When proposed, ``why`` is the :class:`Rule` that decided and
    ``trigger`` the expose. ``unmapped``: published exposes the profile ignores (property,
    label); ``unread_alarms``: those of them that are alarms; ``unmapped_values``: action
    values the profile neither maps nor ignores.
    """

    device_type: str | None
    profile: str | None
    why: str
    trigger: str = ""
    unmapped: tuple[tuple[str, str], ...] = ()
    unread_alarms: tuple[str, ...] = ()
    unmapped_values: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"device_type": self.device_type, "profile": self.profile, "why": self.why,
                "trigger": self.trigger,
                "unmapped": [{"property": p, "label": label} for p, label in self.unmapped],
                "unread_alarms": list(self.unread_alarms),
                "unmapped_values": list(self.unmapped_values),
                "id_prefix": ID_PREFIX.get(self.device_type or "",
                                           (self.device_type or "").replace("_", "-"))}


def _flat(exposes: Iterable[object]) -> Iterator[dict[str, Any]]:
    """Every expose with a property, composites' and specific types' features included."""
    for e in exposes:
        if not isinstance(e, dict):
            continue
        if isinstance(e.get("property"), str):
            yield e
        features = e.get("features")
        if isinstance(features, list):
            yield from _flat(features)


def _published(e: dict[str, Any]) -> bool:
    """The device publishes it (access bit 1); write-only settings and commands are not data."""
    access = e.get("access", 1)
    return not isinstance(access, int) or bool(access & 1)


def _values(e: dict[str, Any]) -> list[str]:
    vals = e.get("values")
    return [v for v in vals if isinstance(v, str)] if isinstance(vals, list) else []


def _matches(rule: Rule, exposes: dict[str, dict[str, Any]]) -> str | None:
    """The property of ``exposes`` that ``rule`` matches, or None."""
    for prop in rule.properties:
        e = exposes.get(prop)
        if e is None:
            continue
        if rule.values is not None and e.get("type") == "enum":
            if not any(rule.values.match(v) for v in _values(e)):
                continue
        elif rule.values is not None and prop == "action":
            continue        # an action that is not an enum says nothing about its values
        return prop
    return None


def _profile_of(profiles: ProfileSet, device_type: str) -> Profile | None:
    try:
        profile = fit_profile(profiles, "zero-config", device_type, None, "json",
                              zigbee2mqtt=True)
    except ProfileMisfit:
        return None
    return profile if isinstance(profile, Profile) else None


def _read_values(profile: Profile, prop: str, e: dict[str, Any],
                 pattern: re.Pattern[str] | None) -> tuple[list[str], list[str]]:
    """Of an enum expose's values (those matching ``pattern``): which the profile's field
    maps, and which it neither maps nor ignores."""
    fm = profile.fields.get(prop)
    mapped = {str(k).lower() for k in (fm.map or {})} if fm is not None else set()
    ignored = {v.lower() for v in fm.ignore} if fm is not None else set()
    vals = _values(e)
    hits = [v for v in vals if (pattern is None or pattern.match(v)) and v.lower() in mapped]
    rest = [v for v in vals if v.lower() not in mapped and v.lower() not in ignored]
    return hits, rest


def propose(entry: dict[str, Any], profiles: ProfileSet,
            device_types: Iterable[str] = DEVICE_TYPES) -> Proposal:
    """The device type and profile zero-config proposes for a :func:`device_entry`: by
    :data:`RULES` over its exposes (never by its friendly name: Zigbee2MQTT's default is
    the IEEE address). A type is proposed only with a profile that reads the expose that
    decided, so no device is registered whose alarm would be ignored."""
    if entry.get("network_role") == "Coordinator":
        return Proposal(None, None, "coordinator")
    raw = entry.get("exposes")
    exposes = {e["property"]: e for e in _flat(raw if isinstance(raw, list) else [])
               if _published(e)}
    if not exposes:
        return Proposal(None, None, "not_interviewed" if not entry.get("model")
                        or not entry.get("supported", True) else "no_sensors")
    known = set(device_types)
    unread = ""
    for rule in RULES:
        prop = _matches(rule, exposes)
        if prop is None:
            continue
        for device_type in (t for t in rule.types if t in known):
            profile = _profile_of(profiles, device_type)
            if profile is None or prop not in profile.fields:
                continue
            if exposes[prop].get("type") == "enum" and rule.values is not None:
                hits, _ = _read_values(profile, prop, exposes[prop], rule.values)
                if not hits:
                    continue       # e.g. a multi-key button whose 1_single the profile lacks
            return _proposal(rule, prop, device_type, profile, exposes)
        unread = unread or prop
    if unread:
        return Proposal(None, None, "unread", trigger=unread)
    return Proposal(None, None, "no_sensors")


def _proposal(rule: Rule, prop: str, device_type: str, profile: Profile,
              exposes: dict[str, dict[str, Any]]) -> Proposal:
    unmapped = tuple((p, _text(e.get("label")) or p) for p, e in exposes.items()
                     if p not in profile.fields)
    values: list[str] = []
    for p, e in exposes.items():
        if p in profile.fields and e.get("type") == "enum" and profile.fields[p].map:
            values += _read_values(profile, p, e, None)[1]
    return Proposal(device_type, profile.id, rule.why, trigger=prop, unmapped=unmapped,
                    unread_alarms=tuple(p for p, _ in unmapped if p in ALARM_PROPERTIES),
                    unmapped_values=tuple(values))


def suggest_id(device_type: str, household: str | None, ieee_address: str,
               taken: Iterable[str]) -> str:
    """A device id for a registered Zigbee device: ``<type prefix>-<household>`` (the
    household's id without its ``h-``: ``smoke-7-101``), or for a shared device the last
    six hex digits of the IEEE address (``smoke-a1b2c3``); ``-2``, ``-3``... when taken."""
    prefix = ID_PREFIX.get(device_type, device_type.replace("_", "-"))
    tail = (household.removeprefix("h-") if household
            else re.sub(r"[^0-9a-f]", "", ieee_address.lower())[-6:] or "zigbee")
    base = re.sub(r"[^A-Za-z0-9_.-]", "-", f"{prefix}-{tail}")[:60]
    used = set(taken)
    if base not in used:
        return base
    n = 2
    while f"{base}-{n}" in used:
        n += 1
    return f"{base}-{n}"
