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

Other formats (``format:``) describe devices that are polled or framed rather than
publishing JSON: ``modbus`` (a register map, see :class:`ModbusProfile`), ``dlt645`` and
``cjt188`` (serial meters, the data identifiers to read), ``contact_id`` (alarm receiver
lines). docs/profiles.md documents every field.

Decoding is pure: :func:`decode_json` takes bytes and the receive time and returns readings.
A field it cannot read (wrong type, unknown enumeration value, a number no float holds) costs
that field only: it is reported as a :class:`drivers.DecodeError` naming the field and the
other fields still give readings, so a bad battery value never loses the SOS next to it. The
message is rejected (``DecodeError``) only when it gives no reading at all.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)
from ruamel.yaml import YAML

from drivers import DECODE_ERROR, DecodeError, DriverError
from drivers.command_maps import CommandMap
from drivers.codecs.dlt645 import DATA_ITEMS
from drivers.codecs.modbus_registers import BIT_FUNCTIONS, RegisterEntry, WriteRequest
from gateway.kernel.commands import CONFIRMING_KIND, Action
from gateway.kernel.model import BOOL_KINDS, STR_KINDS, Kind, Quality, Reading, utc

__all__ = [
    "AnyProfile", "Cjt188Profile", "ContactIdProfile", "Dlt645Profile", "FieldMap",
    "ModbusProfile", "ModbusWrite", "Profile", "ProfileMisfit", "ProfileSet", "RegisterMap",
    "decode_json", "fit_profile", "load_profiles", "parse_json", "with_care_actions", "with_help_actions",
    "with_sos_actions", "with_visit_cards",
]

#: The reason of a field whose value a ``map`` does not know: that field is skipped and
#: counted, never the message (docs/profiles.md).
UNKNOWN_VALUE = "unknown_value"
#: The field of a Zigbee2MQTT button's action; ``sos_actions`` of a device re-maps it.
ACTION_FIELD = "action"
#: the derived field of a device with ``help_actions`` and its readings' metric
HELP_FIELD = "action#help"
HELP_METRIC = "help_key"
#: a door reader's card field, the derived field of a device with ``visit_cards`` and its
#: readings' metric
CARD_FIELD = "card"
VISIT_FIELD = "card#visit"
VISIT_METRIC = "visit_card"
#: the same for ``care_actions`` (keys that set a household care state: 外出, 住院, ...)
CARE_FIELD = "action#care"
CARE_METRIC = "care_key"

#: A device clock this far ahead of ours is not trusted; the receive time is used instead.
MAX_CLOCK_AHEAD = timedelta(minutes=5)


class FieldMap(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Kind
    map: dict[str, bool | float | str] | None = None
    ignore: list[str] = Field(default_factory=list,
                              description="raw values that carry no reading (skipped)")
    scale: float = 1.0
    offset: float = 0.0
    metric: str | None = None
    #: the JSON key read (default: the field's own name); a second reading of one key, e.g.
    #: a button's ``action`` as ``button`` for its help keys beside ``sos`` (with_help_actions).
    #: Such a field is silent on a value its ``map`` does not know (the key's own field says it)
    source: str | None = None


class _ProfileBase(BaseModel):
    """What every profile has: a unique id, the device type it serves, a line for humans."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{1,63}$")
    device_type: str
    description: str = ""


class Profile(_ProfileBase):
    """A device publishing JSON objects (MQTT): top-level keys mapped to readings."""

    format: Literal["json"] = "json"
    timestamp: str | None = None
    fields: dict[str, FieldMap] = Field(min_length=1)
    #: how the device takes commands (linkage; drivers/command_maps.py), if it does
    commands: CommandMap | None = None

    @model_validator(mode="after")
    def _reports_commanded_state(self) -> Profile:
        # a command is confirmed by the state the device reports: the profile must read it
        kinds = {f.kind.value for f in self.fields.values()}
        for action in (self.commands.actions if self.commands else ()):
            want = CONFIRMING_KIND[action]
            if want not in kinds:
                raise ValueError(f"commands.actions.{action.value}: the device's state is "
                                 f"confirmed by a {want!r} reading, and no field gives one")
        return self


class RegisterMap(BaseModel):
    """One value of a Modbus register map (the YAML form of ``RegisterEntry``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    metric: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    kind: Kind
    address: int = Field(ge=0, le=0xFFFF)
    data_type: Literal["int16", "uint16", "int32", "uint32", "float32", "float64"] | None = None
    function: Literal[1, 2, 3, 4] | None = None
    byte_order: Literal["big", "little"] | None = None
    word_order: Literal["big", "little"] | None = None
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""


class ModbusWrite(BaseModel):
    """One command of a Modbus device (the YAML form of ``WriteRequest``): a coil write
    (``function: 5``, ``value`` true/false or 1/0) or a holding-register write (``6``: one
    register, ``value`` 0..65535; ``16``: ``value`` a list of registers from ``address``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    function: Literal[5, 6, 16]
    address: int = Field(ge=0, le=0xFFFF)
    value: bool | int | list[int]

    @model_validator(mode="after")
    def _valid(self) -> ModbusWrite:
        self.request()
        return self

    def request(self) -> WriteRequest:
        v = self.value
        values = tuple(v) if isinstance(v, list) else (int(v),)
        return WriteRequest(self.function, self.address, values)


class ModbusProfile(_ProfileBase):
    """A Modbus device: its register map. Entry fields left out take ``defaults``.
    ``commands`` (optional): what each linkage action writes (``close_valve: {function: 5,
    address: 0, value: false}``); the reading that confirms it must be in the map."""

    format: Literal["modbus"]
    defaults: dict[Literal["data_type", "function", "byte_order", "word_order"], str | int] = \
        Field(default_factory=dict)
    max_gap: int = Field(default=8, ge=0, le=124)
    registers: list[RegisterMap] = Field(min_length=1)
    commands: dict[Action, ModbusWrite] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _entries_valid(self) -> ModbusProfile:
        seen: set[str] = set()
        for i, r in enumerate(self.registers):
            if r.metric in seen:
                raise ValueError(f"registers[{i}]: duplicate metric {r.metric!r}")
            seen.add(r.metric)
        entries = self.entries()    # RegisterEntry validation (units, bool kinds, addresses)
        kinds = {e.kind.value for e in entries}
        for action in self.commands:
            confirming = CONFIRMING_KIND[action]
            if confirming not in kinds:
                raise ValueError(f"commands.{action}: no register gives the {confirming} "
                                 f"reading that confirms it")
        return self

    def writes(self) -> tuple[tuple[Action, WriteRequest], ...]:
        """The commands as (action, write) pairs, in the profile's order."""
        return tuple((a, w.request()) for a, w in self.commands.items())

    def entries(self) -> list[RegisterEntry]:
        d = self.defaults
        out = []
        for i, r in enumerate(self.registers):
            function = r.function or int(d.get("function", 3))
            try:
                out.append(RegisterEntry(
                    r.metric, r.kind, r.address,
                    data_type=r.data_type or ("uint16" if function in BIT_FUNCTIONS
                                              else str(d.get("data_type", "uint16"))),
                    function=function,
                    byte_order=r.byte_order or str(d.get("byte_order", "big")),
                    word_order=r.word_order or str(d.get("word_order", "big")),
                    scale=r.scale, offset=r.offset, unit=r.unit))
            except ValueError as exc:
                raise ValueError(f"registers[{i}]: {exc}") from None
        return out


class Dlt645Profile(_ProfileBase):
    """A DL/T 645-2007 meter on a serial line: which data identifiers to read each poll."""

    format: Literal["dlt645"]
    read: list[str] = Field(min_length=1, description="metric names of dlt645.DATA_ITEMS")

    @field_validator("read")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        known = {item.metric for item in DATA_ITEMS.values()}
        for name in v:
            if name not in known:
                raise ValueError(f"unknown DL/T 645 item {name!r}; known: {sorted(known)}")
        return v

    def identifiers(self) -> list[int]:
        by_metric = {item.metric: di for di, item in DATA_ITEMS.items()}
        return [by_metric[name] for name in self.read]


class Cjt188Profile(_ProfileBase):
    """A CJ/T 188 water or gas meter: meter type byte and whether it has a valve."""

    format: Literal["cjt188"]
    meter_type: int = Field(default=0x10, ge=0, le=0xFF)
    has_valve: bool = False
    clock_high_first: bool = False


class ContactIdProfile(_ProfileBase):
    """Contact ID lines printed by an alarm receiver (events mapped by code)."""

    format: Literal["contact_id"]


AnyProfile = Profile | ModbusProfile | Dlt645Profile | Cjt188Profile | ContactIdProfile
_MODELS: dict[str, type[BaseModel]] = {
    "json": Profile, "modbus": ModbusProfile, "dlt645": Dlt645Profile,
    "cjt188": Cjt188Profile, "contact_id": ContactIdProfile,
}


@dataclass(frozen=True)
class ProfileSet:
    """Profiles by id, plus the default profile of each (device type, format)."""

    by_id: dict[str, AnyProfile]
    by_type: dict[str, AnyProfile]
    sources: dict[str, str] = field(default_factory=dict)   # id -> file it came from

    def for_device(self, device_type: str, profile_id: str | None = None,
                   fmt: str | None = None) -> AnyProfile | None:
        """The named profile, else the first of ``device_type`` (of format ``fmt``)."""
        if profile_id:
            return self.by_id.get(profile_id)
        if fmt is None:
            return self.by_type.get(device_type)
        return next((p for p in self.by_id.values()
                     if p.device_type == device_type and p.format == fmt), None)


#: What each profile format is read over (in messages about a profile that does not fit).
FORMAT_OVER = {"json": "MQTT (JSON)", "modbus": "Modbus", "dlt645": "serial (DL/T 645)",
               "cjt188": "serial (CJ/T 188)", "contact_id": "serial (Contact ID receiver)"}
#: Formats whose profiles serve every device type: a receiver's account or zone can be a
#: caller, a smoke detector or a panel; the event code, not the profile, says what it is.
ANY_TYPE_FORMATS = frozenset({"contact_id"})


class ProfileMisfit(DriverError, ValueError):
    """A device's profile is unknown, missing, or does not fit its type and transport; the
    message names the device, the profile and what would fit. (Still a ``ValueError``, as
    it was before it joined the project's error family.)"""


def fit_profile(profiles: ProfileSet, device_id: str, device_type: str,
                profile_id: str | None, fmt: str, *, transport: str = "",
                zigbee2mqtt: bool = False) -> AnyProfile:
    """The profile device ``device_id`` of ``device_type`` decodes with, on a transport whose
    input is in format ``fmt`` (MQTT: ``json``; Modbus: ``modbus``; a serial line: its
    protocol). ``transport`` names it for messages ("MQTT", "Modbus bus 'b1'", ...).

    The named profile, else the type's default (for Zigbee2MQTT devices
    ``zigbee2mqtt-<type>``, else the first profile of the type in ``fmt``). It fits when its
    format is ``fmt`` and it is a profile of ``device_type`` (``contact_id`` profiles serve
    every type). Raises :class:`ProfileMisfit` otherwise.
    """
    transport = transport or FORMAT_OVER.get(fmt, fmt)
    if profile_id:
        profile = profiles.by_id.get(profile_id)
    else:
        profile = None
        if zigbee2mqtt:
            profile = profiles.by_id.get(f"zigbee2mqtt-{device_type.replace('_', '-')}")
        profile = profile or profiles.for_device(device_type, None, fmt=fmt)
    if profile is not None and profile.format == fmt and (
            fmt in ANY_TYPE_FORMATS or profile.device_type == device_type):
        return profile
    fits = sorted((p.id for p in profiles.by_id.values() if p.format == fmt and (
        fmt in ANY_TYPE_FORMATS or p.device_type == device_type)),
        key=lambda pid: (pid.startswith("zigbee2mqtt-") != zigbee2mqtt, pid))
    needs = f"{device_type} {device_id!r} over {transport} needs a {fmt} profile"
    needs += (f" such as {', '.join(fits[:3])}" if fits else
              f" of device_type {device_type}: none is shipped or in the site's profiles/ "
              f"(add one: docs/profiles.md)")
    if profile is None and profile_id:
        raise ProfileMisfit(f"unknown profile {profile_id!r}; {needs}")
    if profile is None:
        raise ProfileMisfit(f"no {fmt} profile for type {device_type!r}; {needs}")
    serves = "any device type" if profile.format in ANY_TYPE_FORMATS else profile.device_type
    raise ProfileMisfit(f"profile {profile.id!r} is for {serves} over "
                        f"{FORMAT_OVER.get(profile.format, profile.format)}; {needs}")


def with_sos_actions(profile: Profile, actions: list[str] | tuple[str, ...] | None) -> Profile:
    """``profile`` for one device whose ``sos_actions`` (devices.yaml) say which values of the
    ``action`` field mean SOS: those map to ``sos`` true; every other value the profile
    mapped or ignored is ignored (a multi-key remote's other keys, the arm/disarm keys of a
    security remote); a value neither knows is still ``unknown_value``. No actions: the
    profile as it is. ``ProfileMisfit`` when the profile has no ``action`` field of kind
    ``sos`` (it is not a button's)."""
    if not actions:
        return profile
    fm = _sos_action(profile, "sos_actions")
    sos = {a.lower() for a in actions}
    known = set(fm.ignore) | set(fm.map or {})
    action = fm.model_copy(update={"map": dict.fromkeys(sorted(sos), True),
                                   "ignore": sorted(known - sos)})
    return profile.model_copy(update={"fields": {**profile.fields, ACTION_FIELD: action}})


def with_help_actions(profile: Profile, actions: Mapping[str, str] | None) -> Profile:
    """``profile`` for one device whose ``help_actions`` (devices.yaml) say which values of
    the ``action`` field are help keys: those give a ``button`` reading (metric
    ``help_key``, the action as value) and no longer SOS; the rest of the profile as it is.
    No actions: the profile as it is. ``ProfileMisfit`` as :func:`with_sos_actions`."""
    return _with_keys(profile, actions, "help_actions", HELP_FIELD, HELP_METRIC)


def with_care_actions(profile: Profile, actions: Mapping[str, str] | None) -> Profile:
    """As :func:`with_help_actions` for ``care_actions`` (keys that set a household care
    state): ``button`` readings of metric ``care_key``."""
    return _with_keys(profile, actions, "care_actions", CARE_FIELD, CARE_METRIC)


def with_visit_cards(profile: Profile, cards: Mapping[str, str] | None) -> Profile:
    """``profile`` for a door reader whose ``visit_cards`` (devices.yaml) name the cards of
    grid members and volunteers: a message whose ``card`` is one of them also gives a
    ``button`` reading (metric ``visit_card``, the card id as value), which records a visit
    (gateway.visits); any other card gives nothing more. No cards: the profile as it is."""
    if not cards:
        return profile
    key = FieldMap(kind=Kind.BUTTON, map={c.lower(): c for c in sorted(cards)},
                   metric=VISIT_METRIC, source=CARD_FIELD)
    return profile.model_copy(update={"fields": {**profile.fields, VISIT_FIELD: key}})


def _sos_action(profile: Profile, what: str) -> FieldMap:
    """The button's ``action`` field that gives sos readings, which ``what`` (a devices.yaml
    key: sos_actions, help_actions, care_actions) remaps; ``ProfileMisfit`` without one."""
    fm = profile.fields.get(ACTION_FIELD)
    if fm is None or fm.kind is not Kind.SOS:
        raise ProfileMisfit(f"{what} need a profile whose {ACTION_FIELD!r} field gives "
                            f"sos readings; {profile.id!r} has none")
    return fm


def _with_keys(profile: Profile, actions: Mapping[str, str] | None, what: str, field: str,
               metric: str) -> Profile:
    if not actions:
        return profile
    fm = _sos_action(profile, what)
    keys = {a.lower() for a in actions}
    sos = fm.model_copy(update={
        "map": {k: v for k, v in (fm.map or {}).items() if k not in keys},
        "ignore": sorted(set(fm.ignore) | keys)})
    key = FieldMap(kind=Kind.BUTTON, map={k: k for k in sorted(keys)},
                   metric=metric, source=ACTION_FIELD)
    return profile.model_copy(update={"fields": {**profile.fields, ACTION_FIELD: sos,
                                                 field: key}})


def parse_profile(data: Any, name: str) -> AnyProfile:
    """Validate one profile document; ``ValueError`` naming the file and field."""
    fmt = data.get("format", "json") if isinstance(data, dict) else "json"
    model = _MODELS.get(fmt)
    if model is None:
        raise ValueError(f"profile {name}: format {fmt!r}, one of {', '.join(_MODELS)}")
    try:
        return model.model_validate(data)  # type: ignore[return-value]
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: "
                             f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise ValueError(f"profile {name}: {problems}") from None


def load_profiles(extra_dir: Path | None = None) -> ProfileSet:
    """The shipped profiles, plus a site's own from ``extra_dir`` (which may override)."""
    yaml = YAML(typ="safe")
    by_id: dict[str, AnyProfile] = {}
    by_type: dict[str, AnyProfile] = {}
    sources_of: dict[str, str] = {}
    sources = [p for p in resources.files("drivers").joinpath("profiles").iterdir()
               if p.name.endswith(".yaml")]
    if extra_dir is not None and extra_dir.is_dir():
        sources += sorted(extra_dir.glob("*.yaml"))
    # shipped files first; within them json-* before others so a type's default stays JSON
    for src in sorted(sources, key=lambda p: (isinstance(p, Path), p.name)):
        profile = parse_profile(yaml.load(src.read_text(encoding="utf-8")), src.name)
        by_id[profile.id] = profile
        sources_of[profile.id] = src.name if not isinstance(src, Path) else str(src)
        by_type.setdefault(profile.device_type, profile)
    return ProfileSet(by_id, by_type, sources_of)


class _Overlong:
    """An integer with more digits than Python converts (``sys.get_int_max_str_digits()``):
    valid JSON, but no value any field can take."""

    __slots__ = ("digits",)

    def __init__(self, text: str):
        self.digits = len(text.lstrip("-"))

    def __repr__(self) -> str:
        return f"<a {self.digits}-digit integer>"


def _int_or_overlong(text: str) -> int | _Overlong:
    try:
        return int(text)
    except ValueError:
        return _Overlong(text)


def parse_json(payload: bytes | str) -> Any:
    """``json.loads``, except that an integer too long to convert becomes a value no field
    accepts instead of failing the whole document (so it costs only its own field).

    Raises ``ValueError`` (``JSONDecodeError``, ``UnicodeDecodeError``) for text that is not
    JSON and ``RecursionError`` for nesting deeper than the parser goes.
    """
    try:
        return json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise
    except ValueError:      # the int digit limit: parse again, such integers as markers
        return json.loads(payload, parse_int=_int_or_overlong)


def _show(raw: Any) -> str:
    """A raw value for a log line or a problem: its repr, shortened."""
    if isinstance(raw, int) and not isinstance(raw, bool) and abs(raw) >= 10 ** 30:
        return f"<a {len(str(abs(raw)))}-digit integer>"
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."


def _typed(kind: Kind, raw: Any, fm: FieldMap) -> bool | float | str:
    """The value of one raw field for ``kind``; ``DecodeError`` ``unknown_value`` (not in
    ``map``), ``wrong_type`` (not the kind's type) or ``bad_value`` (a number no finite
    float holds, before or after ``scale``/``offset``: 10**400, 1e400, NaN, Infinity)."""
    if fm.map is not None:
        key = str(raw).lower()
        if key not in fm.map:
            known = sorted(fm.map)
            shown = ", ".join(known[:8]) + (f", ... ({len(known) - 8} more)"
                                            if len(known) > 8 else "")
            raise DecodeError(UNKNOWN_VALUE, f"value {_show(raw)} not one of {shown}")
        raw = fm.map[key]
    if kind in BOOL_KINDS:
        if not isinstance(raw, bool):
            raise DecodeError("wrong_type", f"expected true/false, got {_show(raw)}")
        return raw
    if kind in STR_KINDS:
        if not isinstance(raw, str):
            raise DecodeError("wrong_type", f"expected a string, got {_show(raw)}")
        return raw
    if isinstance(raw, _Overlong):
        raise DecodeError("bad_value", f"number out of range: {raw!r}")
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise DecodeError("wrong_type", f"expected a number, got {_show(raw)}")
    try:
        value = float(raw) * fm.scale + fm.offset
    except OverflowError:
        raise DecodeError("bad_value", f"number out of range: {_show(raw)}") from None
    if not math.isfinite(value):
        raise DecodeError("bad_value", f"not a finite number: {_show(raw)}"
                          + (" after scale/offset" if math.isfinite(raw) else ""))
    if fm.scale != 1.0 or fm.offset:
        value = float(f"{value:.12g}")     # 3010 mV * 0.001 is 3.01 V, not 3.0100000000000002
    return value


def _timestamp(raw: Any, received_at: datetime) -> datetime:
    """The device's time from ``raw`` (ISO 8601 with offset, or epoch s/ms); the receive time
    when the device clock is ahead; ``DecodeError`` ``bad_timestamp`` when unreadable."""
    try:
        if isinstance(raw, bool):
            raise TypeError
        if isinstance(raw, (int, float)):
            ts = utc(float(raw) / 1000 if raw > 1e11 else float(raw))
        else:
            ts = datetime.fromisoformat(str(raw))
            if ts.tzinfo is None:
                raise DecodeError("bad_timestamp", f"timestamp {_show(raw)} has no UTC offset")
            ts = utc(ts)
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise DecodeError("bad_timestamp", f"cannot read timestamp {_show(raw)}") from exc
    if ts - received_at > MAX_CLOCK_AHEAD:
        return received_at  # device clock ahead: trust ours (documented in docs/profiles.md)
    return ts


def _field_problem(exc: Exception, where: str, key: str) -> DecodeError:
    """``exc`` raised while reading field ``key``, as that field's problem. An exception that
    is not a DecodeError is a bug of ours (``decode_error``, the exception kept as its
    ``__cause__``): it still costs only the field."""
    if isinstance(exc, DecodeError):
        return DecodeError(exc.reason, exc.detail, where=f"{where} field {key!r}", field=key)
    problem = DecodeError(DECODE_ERROR, f"{type(exc).__name__}: {str(exc)[:200]}",
                          where=f"{where} field {key!r}", field=key)
    problem.__cause__ = exc
    return problem


def _parse_object(payload: bytes | str | dict[str, Any], where: str) -> dict[str, Any]:
    if isinstance(payload, dict):
        return payload
    try:
        obj = parse_json(payload)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and UnicodeDecodeError; RecursionError a payload
        # nested too deeply to parse. Over-long integers are not errors here (parse_json).
        detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise DecodeError("malformed_json", f"not JSON: {detail}", where=where) from None
    if not isinstance(obj, dict):
        raise DecodeError("not_an_object", "payload must be a JSON object", where=where)
    return obj


def decode_json(profile: Profile, device_id: str, payload: bytes | str | dict[str, Any],
                received_at: datetime, *, where: str = "", device_type: str = "",
                household_id: str | None = None, grid_cell: str | None = None,
                problems: list[DecodeError] | None = None) -> list[Reading]:
    """Decode one JSON payload (or an already parsed object) into readings. Unknown keys are
    ignored; known keys are checked. ``device_type``/``household_id``/``grid_cell`` are put
    on the readings (the intake's hot path builds each reading once).

    A field that cannot be read costs that field only: a ``DecodeError`` naming it (``field``
    set; reason ``wrong_type``, ``unknown_value``, ``bad_value`` or ``bad_timestamp``) is
    appended to ``problems`` (dropped when None) and the other fields still give readings;
    an unreadable timestamp field means the receive time is used. So a message with a
    readable alarm-class field always gives that reading.

    A value a ``map`` does not know (``unknown_value``: an action of a newer firmware) is such
    a field problem too, never more: when it and values listed in ``ignore`` are all the
    message has, the message gives no reading and is not an error (``[]`` is returned).

    Raises DecodeError only when the message gives no reading: ``malformed_json``,
    ``not_an_object``, ``no_known_fields`` (no mapped key present), or else the first field
    problem other than ``unknown_value`` (all of them are in ``problems``).
    """
    where = where or device_id
    obj = _parse_object(payload, where)
    found: list[DecodeError] = [] if problems is None else problems
    first = len(found)
    ts = received_at
    if profile.timestamp and profile.timestamp in obj:
        try:
            ts = _timestamp(obj[profile.timestamp], received_at)
        except DecodeError as exc:
            found.append(_field_problem(exc, where, profile.timestamp))
    readings: list[Reading] = []
    skipped = False
    for key, fm in profile.fields.items():
        src = fm.source or key
        if src not in obj:
            continue
        raw = obj[src]
        if fm.ignore and isinstance(raw, str) and raw.lower() in fm.ignore:
            skipped = True
            continue
        if fm.source and fm.map is not None and not (isinstance(raw, str)
                                                     and raw.lower() in fm.map):
            skipped = True
            continue
        try:
            if raw is None:
                readings.append(Reading(device_id, fm.kind, None, ts, "", Quality.BAD,
                                        device_type, household_id, grid_cell, fm.metric or key))
                continue
            value = _typed(fm.kind, raw, fm)
            readings.append(Reading(device_id, fm.kind, value, ts, "", Quality.GOOD,
                                    device_type, household_id, grid_cell,
                                    fm.metric or fm.kind.value))
        except Exception as exc:  # noqa: BLE001 - one field's failure must not cost the others
            found.append(_field_problem(exc, where, key))
    if not readings:
        mine = found[first:]
        lost = next((p for p in mine if p.reason != UNKNOWN_VALUE), None)
        if lost is not None:
            raise lost
        if not mine and not skipped:
            raise DecodeError("no_known_fields",
                              f"none of the fields {sorted(profile.fields)} present", where=where)
        # only ignored values and enumeration values the profile does not know (an action of
        # a new firmware): nothing of the message is lost to an error, nothing to deliver
    return readings
