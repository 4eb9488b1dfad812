"""JSON device profiles: decoding, located errors, and no crash on any input."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import DecodeError
from drivers.profiles import decode_json, load_profiles
from gateway.model import Kind, Quality, utc

PROFILES = load_profiles()
CALLER = PROFILES.for_device("emergency_caller")
SMOKE = PROFILES.for_device("smoke_detector")
NOW = utc()


def test_caller_event_and_battery():
    rs = decode_json(CALLER, "c1", b'{"event": "SOS", "battery": 81}', NOW)
    assert [(r.kind, r.value) for r in rs] == [(Kind.SOS, True), (Kind.BATTERY, 81.0)]
    assert rs[1].unit == "%"
    assert decode_json(CALLER, "c1", b'{"event": "cancel"}', NOW)[0].value is False


def test_device_timestamp_used_unless_in_the_future():
    past = (NOW - timedelta(minutes=3)).isoformat()
    assert decode_json(SMOKE, "s1", f'{{"smoke": true, "ts": "{past}"}}', NOW)[0].ts \
        == NOW - timedelta(minutes=3)
    future = (NOW + timedelta(days=2)).isoformat()
    assert decode_json(SMOKE, "s1", f'{{"smoke": true, "ts": "{future}"}}', NOW)[0].ts == NOW


def test_null_value_is_bad_quality_never_zero():
    r = decode_json(SMOKE, "s1", b'{"battery": null}', NOW)[0]
    assert r.quality is Quality.BAD and r.value is None


@pytest.mark.parametrize("payload, reason, field", [
    (b"{oops", "malformed_json", None),
    (b"[1]", "not_an_object", None),
    (b'{"sos": "yes"}', "wrong_type", "'sos'"),
    (b'{"battery": true}', "wrong_type", "'battery'"),
    (b'{"ts": "yesterday"}', "bad_timestamp", "'ts'"),
    (b'{"battery": NaN}', "bad_value", "'battery'"),
    (b'{"ts": "2026-01-01T00:00:00"}', "bad_timestamp", "'ts'"),
    (b'{"colour": "red"}', "no_known_fields", None),
    (b"\xff\xfe", "malformed_json", None),
])
def test_errors_name_reason_and_field(payload, reason, field):
    with pytest.raises(DecodeError) as exc:
        decode_json(CALLER, "caller-1", payload, NOW, where="devices/caller-1")
    assert exc.value.reason == reason
    assert "devices/caller-1" in str(exc.value)
    if field:
        assert field in exc.value.where


def test_an_unknown_enumeration_value_alone_is_a_field_problem_not_an_error():
    problems: list[DecodeError] = []
    assert decode_json(CALLER, "caller-1", b'{"event": "dance"}', NOW,
                       where="devices/caller-1", problems=problems) == []
    assert [(p.reason, p.field) for p in problems] == [("unknown_value", "event")]
    assert "devices/caller-1 field 'event'" in str(problems[0]) and "'dance'" in str(problems[0])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4), max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_decode_error(data):
    try:
        decode_json(CALLER, "c1", data, NOW)
    except DecodeError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["sos", "event", "battery", "battery_low", "tamper",
                                        "test", "ts", "other"]), json_values, max_size=5))
def test_random_objects_only_decode_error(obj):
    import json

    problems: list[DecodeError] = []
    try:
        readings = decode_json(CALLER, "c1", json.dumps(obj), NOW, problems=problems)
    except DecodeError:
        return
    # no reading without an error only when all there was were unknown enumeration values
    assert readings or (problems and all(p.reason == "unknown_value" for p in problems))
    assert all(r.device_id == "c1" for r in readings)


@pytest.mark.parametrize("payload", [
    b"[" * 5000,                                   # nested past the parser's recursion limit
    b'{"sos": ' + b"9" * 5000 + b"}",              # an integer past Python's digit limit
    b'{"battery": 1e999}',                         # inf
])
def test_pathological_json_is_a_decode_error(payload):
    with pytest.raises(DecodeError) as exc:
        decode_json(CALLER, "c1", payload, NOW)
    assert exc.value.reason in ("malformed_json", "wrong_type", "bad_value")
