"""Pydantic models of the installer-facing site configuration.

A site directory holds one YAML file per concern; each file has its own model here:

- ``site.yaml``     -> :class:`SiteFile`     (the site, grid cells, households)
- ``devices.yaml``  -> :class:`DevicesFile`  (devices, bound to households)
- ``rules.yaml``    -> ``rules.spec.RulesConfig`` (alarm rules and escalation)
- ``uplinks.yaml``  -> :class:`UplinksFile`  (grid case system, upstream MQTT, telemetry)
- ``gateway.yaml``  -> :class:`GatewayFile`  (device brokers and buses the gateway reads)

Secrets are never written in these files: they name an environment variable
(``secret_env``) or a file (``secret_file``) that holds them.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime, BaseModel, ConfigDict, Field, ValidationInfo, field_validator,
    model_validator,
)

from gateway.kernel.model import DEVICE_TYPES

__all__ = [
    "CALL_OUTCOMES", "CALL_STEPS", "STANDARD_CATEGORIES", "Contact", "Dc09Account", "Dc09Receiver", "Dc09Transport", "Device", "DevicesFile",
    "GatewayFile", "GridCell", "Household", "LinkageConfig", "MqttBroker",
    "MqttTransport", "ModbusBusConfig", "ModbusTcp", "ModbusTransport", "SerialLineConfig",
    "SerialPort", "SerialTransport", "CaseSystemUplink", "EmbeddedTelemetry", "InfluxDbTelemetry",
    "Guidance", "Notifications", "OnCall", "Resident", "AlarmResponse", "SecretRef", "Site",
    "SiteFile", "TelemetryConfig", "UplinksFile",
    "UpstreamMqtt",
]

ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
GRID_CODE_RE = r"^[0-9A-Za-z][0-9A-Za-z-]{1,31}$"
SOS_ACTION_RE = re.compile(r"^[a-z0-9_*-]{1,40}$")
PHONE_RE = r"^\+?[0-9 -]{5,20}$"
CATEGORY_RE = r"^[a-z][a-z0-9_]*$"
#: call plan steps every site knows (besides the ids of its ``on_call`` entries):
#: the household's residents, its emergency contacts (in their order), the grid member
CALL_STEPS = ("resident", "contacts", "grid_member")
#: the alarm categories every site may name in ``response`` (the grid case system's, docs/
#: case-system.md 4.1), besides any other category a rule of its rules.yaml raises
STANDARD_CATEGORIES = ("emergency_call", "fire", "gas", "water_leak", "inactivity", "intrusion",
                       "panic", "tamper", "device_fault", "other")
#: what staff record for one call of a plan (the console's one-tap buttons)
CALL_OUTCOMES = ("connected", "no_answer", "on_site", "notified")
Phone = Annotated[str, Field(pattern=PHONE_RE, description="digits, spaces, '-', a leading "
                             "'+': 138-0000-0001")]
CallPlan = Annotated[list[Annotated[str, Field(pattern=ID_RE)]],
                     Field(min_length=1, max_length=12)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Site(_Strict):
    id: Annotated[str, Field(pattern=ID_RE)]
    name: Annotated[str, Field(min_length=1, max_length=100)]
    timezone: str = "Asia/Shanghai"
    language: Literal["zh-CN", "en"] = "zh-CN"

    @field_validator("timezone")
    @classmethod
    def _tz_known(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v


class GridCell(_Strict):
    code: Annotated[str, Field(pattern=GRID_CODE_RE)]
    name: Annotated[str, Field(min_length=1, max_length=100)]
    grid_member: str | None = Field(default=None, max_length=50,
                                    description="Name of the grid member (网格员) on duty here")
    grid_member_phone: Phone | None = Field(default=None, description="the grid member's "
                                            "phone (call plan step grid_member)")


class Contact(_Strict):
    """An emergency contact: personal data, masked for roles that do not need it."""

    name: Annotated[str, Field(min_length=1, max_length=50)]
    relation: str = Field(default="", max_length=20)
    phone: Phone


class Resident(_Strict):
    """A resident of a household: personal data, masked for roles that do not need it."""

    name: Annotated[str, Field(min_length=1, max_length=50)]
    phone: Phone | None = None


class OnCall(_Strict):
    """A number staff call for the whole site: the duty officer (值班主任), the street office
    (街道办), the property management, the fire brigade... (``on_call.<id>`` in site.yaml)."""

    name: Annotated[str, Field(min_length=1, max_length=50)]
    phone: Phone


class Guidance(_Strict):
    """What to do, step by step, in both languages of the console."""

    zh: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(min_length=1,
                                                                         max_length=12)
    en: list[Annotated[str, Field(min_length=1, max_length=300)]] = Field(min_length=1,
                                                                         max_length=12)


class AlarmResponse(_Strict):
    """How staff respond to one category of alarm (``response.<category>`` in site.yaml):
    whom to call in which order, what to do, and how high its cards stand on the board."""

    priority: int = Field(default=5, ge=1, le=9, description="board order among alarms of "
                          "the same state: 1 first (docs/api.md, the board's order)")
    call_plan: CallPlan | None = Field(default=None, description="steps in order: resident, "
                                       "contacts, grid_member or an on_call id")
    guidance: Guidance | None = None


class HelpCategory(_Strict):
    """A category of help request (求助 / 生活服务: 助餐, 家政, 维修, ...) in both languages of
    the console (``help_categories.<id>`` in site.yaml; a device's ``help_actions`` name it)."""

    zh: Annotated[str, Field(min_length=1, max_length=20)]
    en: Annotated[str, Field(min_length=1, max_length=40)]


class Household(_Strict):
    id: Annotated[str, Field(pattern=ID_RE)]
    address: Annotated[str, Field(min_length=1, max_length=200)]
    building: str = Field(default="", max_length=20)
    grid_cell: str
    lives_alone: bool = False
    #: 特殊困难老年人: a grid member or volunteer visits at least once per calendar month
    special_difficulty: bool = False
    residents: list[Resident] = Field(default_factory=list, max_length=6)
    contacts: list[Contact] = Field(default_factory=list, max_length=5)
    #: this household's own call plans by alarm category (override the site's ``response``)
    call_plans: dict[Annotated[str, Field(pattern=CATEGORY_RE)], CallPlan] = Field(
        default_factory=dict)


class SiteFile(_Strict):
    site: Site
    #: site-wide numbers by id (duty_officer, street_office, ...): call plan steps
    on_call: dict[Annotated[str, Field(pattern=ID_RE)], OnCall] = Field(default_factory=dict)
    #: per alarm category (``default``: every category without its own entry)
    response: dict[Annotated[str, Field(pattern=CATEGORY_RE)], AlarmResponse] = Field(
        default_factory=dict)
    grid_cells: list[GridCell] = Field(min_length=1)
    households: list[Household] = Field(default_factory=list)
    #: help request categories by id (助餐, 家政, 维修, ...): caller keys and staff raise them
    help_categories: dict[Annotated[str, Field(pattern=CATEGORY_RE)], HelpCategory] = Field(
        default_factory=dict)


class MqttTransport(_Strict):
    """A device that publishes JSON on its own topic (``topic``) or via Zigbee2MQTT."""

    topic: str | None = Field(default=None, description="default: devices/<device id>")
    zigbee2mqtt: str | None = Field(default=None, description="Zigbee2MQTT friendly name")

    @field_validator("topic")
    @classmethod
    def _no_wildcards(cls, v: str | None) -> str | None:
        if v is not None and (not v or "#" in v or "+" in v or len(v) > 200):
            raise ValueError("a device topic must be non-empty, without + or # wildcards")
        return v


class ModbusTransport(_Strict):
    """A device on a Modbus bus defined in gateway.yaml (``modbus_buses``)."""

    bus: Annotated[str, Field(pattern=ID_RE)]
    unit: int = Field(ge=1, le=247, description="Modbus unit (slave) id")


class SerialTransport(_Strict):
    """A device on a serial line defined in gateway.yaml (``serial_lines``): a meter's
    address as on its nameplate, or a Contact ID account (with ``zone`` for one zone)."""

    line: Annotated[str, Field(pattern=ID_RE)]
    address: Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{4,14}$")]
    zone: int | None = Field(default=None, ge=0, le=999)


DC09_ACCOUNT_RE = r"^[0-9A-Fa-f]{3,16}$"


class Dc09Transport(_Strict):
    """A device behind an account of a SIA DC-09 receiver defined in gateway.yaml
    (``dc09_receivers``): the panel itself (no ``zone``), or one zone of it."""

    receiver: Annotated[str, Field(pattern=ID_RE)]
    account: Annotated[str, Field(pattern=DC09_ACCOUNT_RE,
                                  description="the panel's account, 3-16 hex digits")]
    zone: int | None = Field(default=None, ge=0, le=9999)


class Device(_Strict):
    id: Annotated[str, Field(pattern=ID_RE)]
    type: str
    household: str | None = Field(default=None, description="None for shared devices "
                                  "(entrances, micro fire stations): then grid_cell is required")
    grid_cell: str | None = None
    name: str = Field(default="", max_length=100)
    profile: str | None = Field(default=None, description="default: the type's shipped profile")
    mqtt: MqttTransport | None = None
    modbus: ModbusTransport | None = None
    serial: SerialTransport | None = None
    dc09: Dc09Transport | None = None
    #: which values of a Zigbee2MQTT button's ``action`` mean SOS for this device (a
    #: multi-key remote whose one key is the emergency key); overrides the profile's action
    #: map: its other actions are then ignored (docs/profiles.md)
    sos_actions: list[str] | None = Field(default=None, description="action values that "
                                          "raise SOS (emergency callers over Zigbee2MQTT/MQTT)")
    #: which values of a button's ``action`` raise a help request of which category
    #: (``help_categories`` of site.yaml), e.g. ``{2_single: meal}``: configured like
    #: ``sos_actions``; those keys never raise SOS (docs/site-config.md)
    help_actions: dict[str, Annotated[str, Field(pattern=CATEGORY_RE)]] | None = Field(
        default=None, description="action value -> help category id (emergency callers over "
        "Zigbee2MQTT/MQTT)")
    #: which values of a button's ``action`` set the household's care state (外出 away,
    #: 住院 hospital, 有人陪护 carer; ``home``: ends it), e.g. ``{4_double: away}``
    care_actions: dict[str, Literal["away", "hospital", "carer", "home"]] | None = Field(
        default=None, description="action value -> care state (emergency callers over "
        "Zigbee2MQTT/MQTT)")
    #: a household's door reader: the cards of grid members and volunteers (card id ->
    #: visitor), whose read records a visit (探访) of the household (docs/site-config.md)
    visit_cards: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")],
                      Annotated[str, Field(min_length=1, max_length=50)]] | None = Field(
        default=None, description="card id -> visitor (a household's door_access reader over "
        "MQTT)")
    mode: Literal["normal", "test", "maintenance"] = "normal"
    #: when a test/maintenance mode ends by itself (written by the installer pages; the
    #: service returns the device to normal then, or at start when it has passed)
    mode_until: AwareDatetime | None = Field(default=None, description="end of the test or "
                                             "maintenance mode (ISO 8601 with offset)")

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        if v not in DEVICE_TYPES:
            raise ValueError(f"unknown device type {v!r}; known: {', '.join(DEVICE_TYPES)}")
        return v

    @field_validator("sos_actions")
    @classmethod
    def _sos_actions(cls, v: list[str] | None, info: ValidationInfo) -> list[str] | None:
        where = f"devices.{info.data.get('id', '?')}.sos_actions"
        if v is None:
            return v
        if not 1 <= len(v) <= 64:
            raise ValueError(f"{where}: list 1 to 64 action values, e.g. [emergency, 4_single]")
        for a in v:
            if not isinstance(a, str) or not SOS_ACTION_RE.match(a):
                raise ValueError(f"{where}: {a!r} is not an action value (lower case letters, "
                                 "digits, '_', '-' and '*', as Zigbee2MQTT sends them)")
        if len(set(v)) != len(v):
            raise ValueError(f"{where}: an action is listed twice")
        return v

    @model_validator(mode="after")
    def _placed(self) -> Device:
        if self.household is None and self.grid_cell is None:
            raise ValueError("a device needs a household or, for shared devices, a grid_cell")
        if ((self.mqtt is not None) + (self.modbus is not None) + (self.serial is not None)
                + (self.dc09 is not None)) != 1:      # (57,000 devices: checked cheaply)
            given = [t for t in ("mqtt", "modbus", "serial", "dc09")
                     if getattr(self, t) is not None]
            raise ValueError("a device needs exactly one transport (mqtt, modbus, serial or "
                             "dc09), "
                             f"got {', '.join(given) or 'none'}")
        if self.mode_until is not None and self.mode == "normal":
            raise ValueError("mode_until is only for mode test or maintenance")
        if self.help_actions is not None or self.care_actions is not None:
            self._action_keys()
        if self.visit_cards is not None and (self.type != "door_access" or self.mqtt is None
                                             or self.household is None
                                             or not 1 <= len(self.visit_cards) <= 200):
            raise ValueError(f"devices.{self.id}.visit_cards: 1 to 200 cards, only for a "
                             "household's door_access reader over MQTT")
        if self.sos_actions is not None and (self.type != "emergency_caller"
                                             or self.mqtt is None):
            raise ValueError(f"devices.{self.id}.sos_actions: only for an emergency_caller "
                             f"over MQTT/Zigbee2MQTT (this is a {self.type} over "
                             f"{self.transport})")
        return self

    def _action_keys(self) -> None:
        """help_actions and care_actions: an emergency caller's, action values, none of
        them also a SOS key (or, for care, a help key)."""
        for name, keys, others in (
                ("help_actions", self.help_actions, set(self.sos_actions or ())),
                ("care_actions", self.care_actions,
                 set(self.sos_actions or ()) | set(self.help_actions or ()))):
            if keys is None:
                continue
            where = f"devices.{self.id}.{name}"
            if self.type != "emergency_caller" or self.mqtt is None:
                raise ValueError(f"{where}: only for an emergency_caller over MQTT/Zigbee2MQTT")
            if not 1 <= len(keys) <= 32:
                raise ValueError(f"{where}: map 1 to 32 action values")
            for a in keys:
                if not SOS_ACTION_RE.match(a) or "*" in a:
                    raise ValueError(f"{where}: {a!r} is not an action value (lower case "
                                     "letters, digits, '_' and '-', as Zigbee2MQTT sends them)")
            both = sorted(set(keys) & others)
            if both:
                raise ValueError(f"{where}: {', '.join(both)} also in sos_actions"
                                 f"{' or help_actions' if name == 'care_actions' else ''}")

    @property
    def transport(self) -> str:
        return ("mqtt" if self.mqtt else "modbus" if self.modbus else
                "serial" if self.serial else "dc09")

    @property
    def topic(self) -> str:
        """The MQTT topic of an MQTT device ("" for devices on other transports)."""
        if self.mqtt is None:
            return ""
        if self.mqtt.zigbee2mqtt:
            return f"zigbee2mqtt/{self.mqtt.zigbee2mqtt}"
        return self.mqtt.topic or f"devices/{self.id}"


class DevicesFile(_Strict):
    devices: list[Device] = Field(default_factory=list)


class SecretRef(_Strict):
    """Where a secret lives. Exactly one of env / file."""

    secret_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    secret_file: str | None = None

    @model_validator(mode="after")
    def _one(self) -> SecretRef:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError("give exactly one of secret_env or secret_file (never the secret)")
        return self


class CaseSystemUplink(SecretRef):
    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$")]
    key_id: Annotated[str, Field(pattern=ID_RE)]
    ca_file: str | None = None
    timeout_s: float = Field(default=5.0, gt=0, le=120)
    callback_url: str | None = None
    poll_s: float = Field(default=60.0, gt=0, le=3600,
                          description="case status polling interval (fallback to callbacks)")
    window: int = Field(default=32, ge=1, le=256,
                        description="outbox rows of different alarms in flight at once")
    stop_escalation_at: Literal["accepted", "dispatched", "on_site", "never"] = Field(
        default="dispatched", description="escalation beyond the first tier (the grid member) "
        "stops once the case reaches this status or a later one")
    on_case_closed: Literal["resolve", "confirm"] = Field(
        default="resolve", description="a closed case resolves its alarm (actor "
        "case_system:<handler>), or leaves it open marked for staff to confirm")


class InfluxDbTelemetry(_Strict):
    """An InfluxDB 2/3 (or anything speaking its /api/v2/write, e.g. VictoriaMetrics)."""

    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$")]
    org: str = Field(default="community", min_length=1, max_length=100)
    bucket: str = Field(default="telemetry", min_length=1, max_length=100)
    token: SecretRef | None = Field(default=None, description="API token (env var or file)")
    ca_file: str | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=120)


class EmbeddedTelemetry(_Strict):
    """The default when no InfluxDB is configured: recent telemetry in DATA_DIR/telemetry.db."""

    raw_retention_h: float = Field(default=48.0, gt=0, le=24 * 90)
    rollup_s: int = Field(default=300, ge=10, le=86400, description="downsampling bucket")
    rollup_retention_d: float = Field(default=90.0, gt=0, le=3650)
    max_raw_rows: int = Field(default=2_000_000, ge=1000, le=100_000_000,
                              description="disk bound: oldest raw rows go first")
    flush_s: float = Field(default=30.0, gt=0, le=300,
                           description="how often the file is written (the SD card's budget: "
                                       "each write rewrites the tables' last pages)")
    raw_repeat_s: float = Field(default=600.0, ge=0, le=86400,
                                description="a raw point equal to its series' last stored "
                                            "one is stored again only after this long (0: "
                                            "every reading); rollups count every reading")


class TelemetryConfig(_Strict):
    enabled: bool = True
    influxdb: InfluxDbTelemetry | None = None
    embedded: EmbeddedTelemetry = Field(default_factory=EmbeddedTelemetry)
    buffer_lines: int = Field(default=100_000, ge=1000, le=10_000_000,
                              description="bounded buffer; beyond it readings are shed, counted")
    batch_lines: int = Field(default=5000, ge=1, le=5000)
    flush_s: float = Field(default=1.0, gt=0, le=60)


class UpstreamMqtt(_Strict):
    """The city's central broker (fleet view): alarms and summaries, see docs/upstream-mqtt.md."""

    host: str = Field(min_length=1)
    port: int = Field(default=1883, ge=1, le=65535)
    tls: bool = False
    ca_file: str | None = None
    client_id: str | None = Field(default=None, description="default: gateway-<site id>-up")
    username: str | None = None
    password: SecretRef | None = None
    topic_prefix: str = Field(default="sites", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
    summary_s: float = Field(default=60.0, gt=0, le=3600)
    keepalive_s: int = Field(default=30, ge=5, le=600)


class Notifications(_Strict):
    """Notifications to on-duty staff through apprise URLs, per escalation tier target.

    ``targets`` maps a name used in rules.yaml ``escalation.tiers[].notify`` (``grid_member``,
    ``duty_officer`` ...) to apprise URLs. URLs carry tokens, so each is a secret reference.
    """

    targets: dict[str, list[SecretRef]] = Field(default_factory=dict)
    per_household: int = Field(default=3, ge=1, le=1000,
                               description="notifications per household per window")
    window_s: float = Field(default=600.0, gt=0, le=86400)
    max_age_s: float = Field(default=900.0, gt=0, le=86400,
                             description="older escalations (after downtime) are not sent")


class UplinksFile(_Strict):
    case_system: CaseSystemUplink | None = None
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    upstream_mqtt: UpstreamMqtt | None = None
    notifications: Notifications | None = None


class MqttBroker(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str | None = Field(default=None, description="default: gateway-<site id>")
    username: str | None = None
    password_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    keepalive_s: int = Field(default=30, ge=5, le=600)
    max_payload_bytes: int = Field(default=8192, ge=256, le=262144)
    alarm_session: bool = Field(default=True, description=(
        "the alarm devices' own persistent session (client id <client_id>-alarm): an SOS "
        "keeps a broker queue and a connection of its own (docs/architecture.md)"))
    alarm_fence_delay_s: float = Field(default=150.0, ge=0, le=3600, description=(
        "how old the alarm session's subscription must be before alarm devices move to it: "
        "at least the broker's autosave_interval (installed: 60 s)"))


class ModbusTcp(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=502, ge=1, le=65535)


class SerialPort(_Strict):
    device: Annotated[str, Field(min_length=1, description="e.g. /dev/serial/by-id/...")]
    baudrate: int = Field(default=9600, ge=300, le=921600)
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1


class ModbusBusConfig(_Strict):
    """One Modbus bus: an RS-485 line (``rtu``) or a TCP endpoint (``tcp``), polled by one
    task; see docs/profiles.md for the timing fields."""

    id: Annotated[str, Field(pattern=ID_RE)]
    tcp: ModbusTcp | None = None
    rtu: SerialPort | None = None
    period_s: float = Field(default=10.0, gt=0, le=3600)
    timeout_s: float = Field(default=0.5, gt=0, le=30)
    retries: int = Field(default=1, ge=0, le=5)
    quarantine_after: int = Field(default=3, ge=1, le=100)
    quarantine_max_s: float = Field(default=300.0, ge=1, le=86400)

    @model_validator(mode="after")
    def _one_endpoint(self) -> ModbusBusConfig:
        if (self.tcp is None) == (self.rtu is None):
            raise ValueError("give exactly one of tcp or rtu")
        return self


class SerialLineConfig(SerialPort):
    """One serial line with meters (polled) or an alarm receiver (read)."""

    id: Annotated[str, Field(pattern=ID_RE)]
    protocol: Literal["dlt645", "cjt188", "contact_id"]
    baudrate: int = Field(default=2400, ge=300, le=921600)
    parity: Literal["N", "E", "O"] = "E"
    period_s: float = Field(default=60.0, gt=0, le=86400)
    timeout_s: float = Field(default=1.0, gt=0, le=30)
    ack_hex: str | None = Field(
        default=None, pattern=r"^(?:[0-9A-Fa-f]{2}){1,8}$",
        description="contact_id: bytes (hex) sent to the receiver once an event is safe, "
                    "e.g. '06' (ASCII ACK) for receivers that resend unacknowledged events")
    nak_hex: str | None = Field(
        default=None, pattern=r"^(?:[0-9A-Fa-f]{2}){1,8}$",
        description="contact_id: bytes (hex) sent for an event line with a bad checksum, "
                    "e.g. '15' (ASCII NAK)")

    @field_validator("ack_hex", "nak_hex", mode="before")
    @classmethod
    def _digits_read_as_a_number(cls, v: object) -> object:
        """``ack_hex: 06`` unquoted is the number 6 in YAML: take its digits back."""
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            digits = str(v)
            return digits if len(digits) % 2 == 0 else "0" + digits
        return v

    @model_validator(mode="after")
    def _answers_need_a_receiver(self) -> SerialLineConfig:
        if (self.ack_hex or self.nak_hex) and self.protocol != "contact_id":
            raise ValueError("ack_hex/nak_hex are for protocol contact_id (a receiver line)")
        return self


class Dc09Account(_Strict):
    """One panel account of a DC-09 receiver: its AES key (never in the file: an environment
    variable or a file) and how long it may stay silent."""

    account: Annotated[str, Field(pattern=DC09_ACCOUNT_RE,
                                  description="the panel's account, 3-16 hex digits")]
    key: SecretRef | None = Field(default=None, description="AES key (env var or file); "
                                  "none: the panel sends unencrypted")
    key_format: Literal["text", "hex"] = Field(
        default="text", description="text: the 16, 24 or 32 characters typed into the panel "
        "(AES-128/192/256); hex: 32, 48 or 64 hex digits")
    supervision_s: float | None = Field(
        default=300.0, gt=0, le=86400, description="silent longer than this (no event, no "
        "null message) -> its devices offline; null: not supervised")


class Dc09Receiver(_Strict):
    """A SIA DC-09 receiver: alarm panels reporting over IP to ``host``:``port``."""

    id: Annotated[str, Field(pattern=ID_RE)]
    host: str = Field(default="0.0.0.0", min_length=1, description="address to listen on")
    port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp", "both"] = "both"
    accounts: list[Dc09Account] = Field(default_factory=list)

    @model_validator(mode="after")
    def _accounts_unique(self) -> Dc09Receiver:
        seen: set[str] = set()
        for a in self.accounts:
            if a.account.upper() in seen:
                raise ValueError(f"account {a.account!r} is listed twice")
            seen.add(a.account.upper())
        return self


class LinkageConfig(_Strict):
    """Commands to devices (linkage, docs/rules.md "then"): how long a device has to report
    the commanded state, how many times a command is sent, at most how many commands a
    device takes in a window."""

    confirm_timeout_s: float = Field(default=15.0, gt=0, le=600)
    attempts: int = Field(default=3, ge=1, le=10)
    rate_limit: int = Field(default=6, ge=1, le=100)
    rate_window_s: float = Field(default=60.0, gt=0, le=3600)


class GatewayFile(_Strict):
    mqtt: MqttBroker = Field(default_factory=MqttBroker)
    linkage: LinkageConfig = Field(default_factory=LinkageConfig)
    modbus_buses: list[ModbusBusConfig] = Field(default_factory=list)
    serial_lines: list[SerialLineConfig] = Field(default_factory=list)
    dc09_receivers: list[Dc09Receiver] = Field(default_factory=list)

