"""Decoding never costs an alarm (issue 11): a bad field of a JSON message is a problem of that
field only. Huge integers (10**400, longer than Python converts), 1e400, NaN and Infinity
tokens, strings and nested objects in any field: every good field's reading is produced, every
bad field is reported with its reason, an alarm-class reading always survives, and a message
is rejected only when no field gives a reading. Checked on decode_json (Hypothesis), through
the real MQTT intake and Mosquitto, and in the device health."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import DecodeError
from drivers.mqtt import DeviceBinding, MqttIntake
from drivers.profiles import Profile, decode_json, load_profiles
from gateway.health import HealthBook
from gateway.metrics import Metrics
from gateway.model import ALARM_KINDS, BOOL_KINDS, STR_KINDS, Kind, Quality, utc
from tests.support import AckingSink, mqtt_publish, running, until

PROFILES = load_profiles()
JSON_PROFILES = sorted((p for p in PROFILES.by_id.values() if isinstance(p, Profile)),
                       key=lambda p: p.id)
CALLER = PROFILES.by_id["json-emergency-caller"]
NOW = utc()

#: JSON number tokens no float holds, as a device might put them in its payload text
HUGE = [str(10 ** 400), str(-10 ** 400), "1e400", "-1e400", "1" * 5000, "-" + "9" * 4400,
        "NaN", "Infinity", "-Infinity"]
nested = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3), max_leaves=6)
containers = nested.filter(lambda v: isinstance(v, (list, dict))).map(json.dumps)


def _good(fm):
    """(JSON token, expected reading value) of a value the field accepts."""
    if fm.map is not None:
        keys = sorted(k for k in fm.map if k not in fm.ignore)
        return st.sampled_from(keys).map(lambda k: (json.dumps(k), fm.map[k]))
    if fm.kind in BOOL_KINDS:
        return st.booleans().map(lambda b: (json.dumps(b), b))
    if fm.kind in STR_KINDS:
        return st.text(max_size=10).map(lambda t: (json.dumps(t), t))
    numbers = st.integers(-10 ** 6, 10 ** 6) | st.floats(-1e6, 1e6, allow_nan=False)
    return numbers.map(lambda x: (json.dumps(x), pytest.approx(x * fm.scale + fm.offset,
                                                              rel=1e-9, abs=1e-12)))


def _bad(fm):
    """(JSON token, expected reason) of a value the field cannot take."""
    if fm.map is not None:
        words = st.text(max_size=10).filter(
            lambda t: t.lower() not in fm.map and t.lower() not in fm.ignore)
        tokens = st.sampled_from(HUGE) | words.map(json.dumps) | containers
        return tokens.map(lambda t: (t, "unknown_value"))
    if fm.kind in BOOL_KINDS:
        tokens = (st.sampled_from(HUGE) | st.integers().map(str)
                  | st.text(max_size=10).map(json.dumps) | containers)
        return tokens.map(lambda t: (t, "wrong_type"))
    huge = st.sampled_from(HUGE).map(lambda t: (t, "bad_value"))
    others = (st.text(max_size=10).map(json.dumps) | st.booleans().map(json.dumps)
              | containers).map(lambda t: (t, "wrong_type"))
    return huge | others


@st.composite
def messages(draw):
    """A profile and a message with each of its fields absent, good or bad (and maybe a
    good or bad timestamp), as JSON text, with what decoding it must give."""
    profile = draw(st.sampled_from(JSON_PROFILES))
    parts, good, bad = [], [], {}
    for key, fm in profile.fields.items():
        choice = draw(st.sampled_from(["absent", "good", "bad", "null"]))
        if choice == "good":
            token, value = draw(_good(fm))
            good.append((fm.kind, value))
        elif choice == "null":
            token = "null"
            good.append((fm.kind, None))
        elif choice == "bad":
            token, bad[key] = draw(_bad(fm))
        else:
            continue
        parts.append(f"{json.dumps(key)}: {token}")
    ts = NOW
    if profile.timestamp:
        choice = draw(st.sampled_from(["absent", "good", "bad"]))
        if choice == "good":
            ts = NOW - timedelta(minutes=2)
            parts.append(f'{json.dumps(profile.timestamp)}: "{ts.isoformat()}"')
        elif choice == "bad":
            token = draw(st.sampled_from(HUGE + ['"yesterday"', "true", '{"t": 1}',
                                                '"2026-01-01T00:00:00"', "1e20"]))
            parts.append(f"{json.dumps(profile.timestamp)}: {token}")
            bad[profile.timestamp] = "bad_timestamp"
    parts.append('"unmapped": [1e400, NaN]')       # keys no profile maps: ignored
    parts = draw(st.permutations(parts))
    return profile, "{" + ", ".join(parts) + "}", good, bad, ts


@settings(max_examples=600, deadline=None)
@given(messages())
def test_every_good_field_is_read_and_every_bad_field_is_reported(case):
    profile, text, good, bad, ts = case
    problems: list[DecodeError] = []
    try:
        readings = decode_json(profile, "dev-1", text, NOW, where="devices/dev-1",
                               problems=problems)
    except DecodeError as exc:
        # rejected only when no field at all gave a reading, with the first problem's reason
        # that is not unknown_value (an enumeration value never costs more than its field)
        assert not good, f"{text}: rejected ({exc}) although fields were good"
        if bad:
            assert exc is next(p for p in problems if p.reason != "unknown_value")
        else:
            assert exc.reason == "no_known_fields"
        readings = []
    else:
        if not readings:      # nothing but unknown enumeration values: not a lost message
            assert bad and set(bad.values()) == {"unknown_value"}, text
    assert [(r.kind, r.value) for r in readings] == good, text
    assert {p.field: p.reason for p in problems} == bad, text
    for p in problems:
        assert f"devices/dev-1 field {p.field!r}" in str(p) and f"[{p.reason}]" in str(p)
    assert all(r.ts == ts for r in readings), "a bad timestamp falls back to the receive time"
    assert all((r.quality is Quality.BAD) == (r.value is None) for r in readings)
    alarms = [k for k, v in good if k in ALARM_KINDS and v is not None]
    assert [r.kind for r in readings if r.is_alarm_class and r.value is not None] == alarms


@settings(max_examples=300, deadline=None)
@given(profile=st.sampled_from([p for p in JSON_PROFILES
                                if any(fm.kind in ALARM_KINDS and fm.map is None
                                       for fm in p.fields.values())]),
       alarm=st.booleans(), others=st.lists(st.sampled_from(HUGE + ['"abc"', '{"a": [1]}']),
                                            min_size=1, max_size=8))
def test_an_alarm_field_survives_any_other_field(profile, alarm, others):
    """Every other field (and the timestamp) bad at once: the alarm reading still comes."""
    key = next(k for k, fm in profile.fields.items() if fm.kind in ALARM_KINDS and fm.map is None)
    rest = [k for k in profile.fields if k != key] + [profile.timestamp or "ts"]
    body = ", ".join(f"{json.dumps(k)}: {others[i % len(others)]}" for i, k in enumerate(rest))
    problems: list[DecodeError] = []
    readings = decode_json(profile, "dev-1", f'{{{body}, "{key}": {json.dumps(alarm)}}}', NOW,
                           problems=problems)
    assert [(r.kind, r.value, r.ts) for r in readings] == [(profile.fields[key].kind, alarm,
                                                            NOW)]
    mapped = set(profile.fields) | {profile.timestamp}
    assert {p.field for p in problems} == set(rest) & mapped


def test_huge_battery_next_to_an_sos():
    for battery in (str(10 ** 400), str(-10 ** 400), "1e400", "NaN", "-Infinity", "9" * 5000):
        problems: list[DecodeError] = []
        readings = decode_json(CALLER, "c1", f'{{"sos": true, "battery": {battery}}}', NOW,
                               problems=problems)
        assert [(r.kind, r.value) for r in readings] == [(Kind.SOS, True)]
        assert [(p.field, p.reason) for p in problems] == [("battery", "bad_value")]
    # without a problems list the SOS still comes (the problem is just not reported)
    assert decode_json(CALLER, "c1", '{"event": "sos", "battery": "abc"}', NOW)[0].value is True


def test_bad_timestamp_falls_back_to_receive_time():
    problems: list[DecodeError] = []
    readings = decode_json(CALLER, "c1", b'{"sos": true, "ts": 1e400}', NOW, problems=problems)
    assert [(r.kind, r.value, r.ts) for r in readings] == [(Kind.SOS, True, NOW)]
    assert [(p.field, p.reason) for p in problems] == [("ts", "bad_timestamp")]


def test_all_fields_bad_is_rejected_with_every_problem_listed():
    problems: list[DecodeError] = []
    with pytest.raises(DecodeError) as exc:
        decode_json(CALLER, "c1", '{"sos": "yes", "battery": 1e400}', NOW, problems=problems)
    assert exc.value.reason == "wrong_type" and exc.value.field == "sos"
    assert [(p.field, p.reason) for p in problems] == [("sos", "wrong_type"),
                                                       ("battery", "bad_value")]


def test_field_problems_do_not_degrade_a_device_lost_messages_do():
    book = HealthBook([("c1", "emergency_caller", "h1", None)])
    for _ in range(5):
        book.error("c1", "field:bad_value")
    assert book.devices["c1"].state == "unknown"
    assert book.devices["c1"].errors == {"field:bad_value": 5}
    for _ in range(3):
        book.error("c1", "wrong_type")
    assert book.devices["c1"].state == "degraded"


# -- through the real intake and broker ------------------------------------------------------

def _binding(device_id: str, profile_id: str) -> DeviceBinding:
    return DeviceBinding(device_id, PROFILES.by_id[profile_id].device_type, "h-7-101",
                         "cell-1", PROFILES.by_id[profile_id])


@pytest.mark.integration
async def test_sos_with_a_huge_battery_arrives_through_mosquitto(mosquitto, caplog):
    sink, metrics, errors = AckingSink(), Metrics(), []
    intake = MqttIntake(host="127.0.0.1", port=mosquitto.port, client_id="gw-bad-fields",
                        sink=sink, metrics=metrics, on_error=lambda d, r: errors.append((d, r)),
                        bindings={"devices/caller-1": _binding("caller-1", "json-emergency-caller"),
                                  "zigbee2mqtt/kitchen_leak": _binding(
                                      "leak-1", "zigbee2mqtt-water-leak-detector")})
    caplog.set_level(logging.WARNING, logger="drivers.mqtt")
    async with running(intake):
        await until(intake.connected.is_set, 10, "intake connected")
        mqtt_publish(mosquitto.port, [
            ("devices/caller-1", json.dumps({"sos": True, "battery": 10 ** 400})),
            ("zigbee2mqtt/kitchen_leak", '{"water_leak": true, "battery": NaN, '
                                         '"voltage": "abc", "linkquality": 1e400}'),
            ("devices/caller-1", '{"battery": Infinity}'),          # nothing left: rejected
            ("devices/caller-1", '{"test": true, "battery": 55}'),  # marks the end
        ])
        await until(lambda: any(r.kind is Kind.TEST for r in sink.readings), 10,
                    "the last message")
    got = [(r.device_id, r.kind, r.value) for r in sink.readings]
    assert got == [("caller-1", Kind.SOS, True), ("leak-1", Kind.WATER_LEAK, True),
                   ("caller-1", Kind.BATTERY, 55.0), ("caller-1", Kind.TEST, True)]
    assert sink.readings[0].household_id == "h-7-101"
    assert metrics.by_label("gateway_bad_fields_total", "field") == {
        "battery": 2, "voltage": 1, "linkquality": 1}
    assert metrics.get("gateway_bad_fields_total", reason="bad_value", field="battery",
                       transport="mqtt") == 2
    assert metrics.get("gateway_bad_fields_total", reason="wrong_type", field="voltage",
                       transport="mqtt") == 1
    assert metrics.by_label("gateway_rejected_total", "reason") == {"bad_value": 1}
    assert errors == [("caller-1", "field:bad_value"), ("leak-1", "field:bad_value"),
                      ("leak-1", "field:bad_value"), ("leak-1", "field:wrong_type"),
                      ("caller-1", "bad_value")]
    assert "bad field devices/caller-1 (device caller-1) field 'battery'" in caplog.text
    assert "bad field zigbee2mqtt/kitchen_leak (device leak-1) field 'voltage'" in caplog.text
    assert "rejected devices/caller-1 (device caller-1) field 'battery'" in caplog.text
    assert "Traceback" not in caplog.text and "internal_error" not in caplog.text
