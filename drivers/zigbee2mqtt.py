"""Zigbee2MQTT conventions, as pure functions (the MQTT intake calls them).

* ``zigbee2mqtt/<friendly_name>``: the device's state, a JSON object with keys such as
  ``contact``, ``occupancy``, ``smoke``, ``water_leak``, ``gas``, ``tamper``, ``battery``,
  ``battery_low``, ``action``; decoded with the shipped ``zigbee2mqtt-<device type>`` JSON
  profiles (drivers/profiles/), so off-the-shelf sensors need no profile of their own.
* ``zigbee2mqtt/<friendly_name>/availability``: ``{"state": "online"|"offline"}`` (or the bare
  word, older versions) -> an ``availability`` reading (:func:`availability_reading`).
* ``zigbee2mqtt/bridge/devices`` (retained): the coordinator's device list -> entries for the
  installer's inbox of unknown devices (:func:`bridge_devices`).
"""

from __future__ import annotations

import json
from typing import Any
from datetime import datetime

from drivers import DecodeError
from gateway.kernel.model import Kind, Reading

__all__ = ["AVAILABILITY_SUFFIX", "BASE", "BRIDGE_DEVICES", "availability_reading",
           "bridge_devices"]

BASE = "zigbee2mqtt"
AVAILABILITY_SUFFIX = "/availability"
BRIDGE_DEVICES = f"{BASE}/bridge/devices"
#: The device list of a large network is big; accepted up to this size (broker limits apply).
MAX_BRIDGE_BYTES = 2 * 1024 * 1024
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


def bridge_devices(payload: bytes) -> list[dict[str, Any]]:
    """The end devices of a ``bridge/devices`` message: ``{topic, ieee_address,
    friendly_name, model, vendor, type}`` each (the coordinator itself is left out).

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
    for entry in data:
        if not isinstance(entry, dict) or entry.get("type") == "Coordinator":
            continue
        name = entry.get("friendly_name")
        if not isinstance(name, str) or not name:
            continue
        found = entry.get("definition")
        definition = found if isinstance(found, dict) else {}
        out.append({
            "topic": f"{BASE}/{name}",
            "ieee_address": str(entry.get("ieee_address", "")),
            "friendly_name": name,
            "model": str(definition.get("model") or entry.get("model")
                         or entry.get("model_id") or ""),
            "vendor": str(definition.get("vendor") or entry.get("vendor")
                          or entry.get("manufacturer") or ""),
            "type": str(entry.get("type", "")),
        })
    return out
