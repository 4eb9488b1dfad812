"""Device profiles: data (YAML) that says how a device's raw payload maps to readings.

Shipped profiles live in ``drivers/profiles/*.yaml``; a site may add its own. A JSON profile
maps top-level keys of the device's JSON object to reading kinds::

    id: json-smoke-detector
    device_type: smoke_detector
    format: json
    timestamp: ts                     # optional key holding ISO 8601 or epoch seconds
    fields:
      smoke: {kind: smoke}            # value must already have the kind's type
      event: {kind: smoke, map: {alarm: true, clear: false}}   # enumerations -> values
      battery: {kind: battery, scale: 1.0}

Decoding is pure: :func:`decode_json` takes bytes and the receive time and returns readings
or raises :class:`drivers.DecodeError` naming the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML

from drivers import DecodeError
from gateway.model import BOOL_KINDS, STR_KINDS, Kind, Quality, Reading, utc

__all__ = ["FieldMap", "Profile", "ProfileSet", "decode_json", "load_profiles"]

#: A device clock this far ahead of ours is not trusted; the receive time is used instead.
MAX_CLOCK_AHEAD = timedelta(minutes=5)


class FieldMap(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Kind
    map: dict[str, bool | float | str] | None = None
    scale: float = 1.0
    offset: float = 0.0
    metric: str | None = None


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{1,63}$")
    device_type: str
    format: Literal["json"] = "json"
    timestamp: str | None = None
    fields: dict[str, FieldMap] = Field(min_length=1)


@dataclass(frozen=True)
class ProfileSet:
    """Profiles by id, plus the default profile of each device type."""

    by_id: dict[str, Profile]
    by_type: dict[str, Profile]

    def for_device(self, device_type: str, profile_id: str | None = None) -> Profile | None:
        if profile_id:
            return self.by_id.get(profile_id)
        return self.by_type.get(device_type)


def load_profiles(extra_dir: Path | None = None) -> ProfileSet:
    """The shipped profiles, plus a site's own from ``extra_dir`` (which may override)."""
    yaml = YAML(typ="safe")
    by_id: dict[str, Profile] = {}
    by_type: dict[str, Profile] = {}
    sources = [p for p in resources.files("drivers").joinpath("profiles").iterdir()
               if p.name.endswith(".yaml")]
    if extra_dir is not None and extra_dir.is_dir():
        sources += sorted(extra_dir.glob("*.yaml"))
    for src in sorted(sources, key=lambda p: (isinstance(p, Path), p.name)):
        try:
            profile = Profile.model_validate(yaml.load(src.read_text(encoding="utf-8")))
        except ValidationError as exc:
            raise ValueError(f"profile {src.name}: {exc}") from exc
        by_id[profile.id] = profile
        by_type.setdefault(profile.device_type, profile)
    return ProfileSet(by_id, by_type)


def _typed(kind: Kind, raw: Any, fm: FieldMap, where: str) -> bool | float | str:
    if fm.map is not None:
        key = str(raw).lower()
        if key not in fm.map:
            raise DecodeError("unknown_value", f"value {raw!r} not one of {sorted(fm.map)}",
                              where=where)
        raw = fm.map[key]
    if kind in BOOL_KINDS:
        if not isinstance(raw, bool):
            raise DecodeError("wrong_type", f"expected true/false, got {raw!r}", where=where)
        return raw
    if kind in STR_KINDS:
        if not isinstance(raw, str):
            raise DecodeError("wrong_type", f"expected a string, got {raw!r}", where=where)
        return raw
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise DecodeError("wrong_type", f"expected a number, got {raw!r}", where=where)
    value = float(raw) * fm.scale + fm.offset
    if not math.isfinite(value):
        raise DecodeError("wrong_type", f"not a finite number: {raw!r}", where=where)
    return value


def _timestamp(raw: Any, received_at: datetime, where: str) -> datetime:
    try:
        if isinstance(raw, bool):
            raise TypeError
        if isinstance(raw, (int, float)):
            ts = utc(float(raw) / 1000 if raw > 1e11 else float(raw))
        else:
            ts = datetime.fromisoformat(str(raw))
            if ts.tzinfo is None:
                raise DecodeError("bad_timestamp", f"timestamp {raw!r} has no UTC offset",
                                  where=where)
            ts = utc(ts)
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise DecodeError("bad_timestamp", f"cannot read timestamp {raw!r}", where=where) from exc
    if ts - received_at > MAX_CLOCK_AHEAD:
        return received_at  # device clock ahead: trust ours (documented in docs/profiles.md)
    return ts


def decode_json(profile: Profile, device_id: str, payload: bytes | str,
                received_at: datetime, *, where: str = "") -> list[Reading]:
    """Decode one JSON payload into readings. Unknown keys are ignored; known keys are checked.

    Raises DecodeError: ``malformed_json``, ``not_an_object``, ``wrong_type``,
    ``unknown_value``, ``bad_timestamp``, ``no_known_fields``.
    """
    where = where or device_id
    try:
        obj = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DecodeError("malformed_json", f"not JSON: {exc}", where=where) from exc
    if not isinstance(obj, dict):
        raise DecodeError("not_an_object", "payload must be a JSON object", where=where)
    ts = received_at
    if profile.timestamp and profile.timestamp in obj:
        ts = _timestamp(obj[profile.timestamp], received_at, f"{where} field {profile.timestamp!r}")
    readings: list[Reading] = []
    for key, fm in profile.fields.items():
        if key not in obj:
            continue
        raw = obj[key]
        fwhere = f"{where} field {key!r}"
        if raw is None:
            readings.append(Reading(device_id, fm.kind, None, ts, quality=Quality.BAD,
                                    metric=fm.metric or key))
            continue
        value = _typed(fm.kind, raw, fm, fwhere)
        readings.append(Reading(device_id, fm.kind, value, ts, metric=fm.metric or fm.kind.value))
    if not readings:
        raise DecodeError("no_known_fields",
                          f"none of the fields {sorted(profile.fields)} present", where=where)
    return readings
