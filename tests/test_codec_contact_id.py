"""Contact ID receiver lines. Checksums worked by hand: digit 0 counts 10, sum % 15 == 0."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import DecodeError
from drivers.codecs import contact_id as cid
from drivers.codecs.contact_id import ContactIdEvent
from gateway.model import Kind

TS = datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc)
# 1+2+3+4 +1+8 +1 +1+1+10 +10+1 +10+10+3 = 66; 66 % 15 = 6 -> S = 9
FIRE = "1234 18 1 110 01 003 9"
# 1+2+3+4+1+8+1+1+3+1+10+1+10+1+5 = 52; 52 % 15 = 7 -> S = 8
BURGLARY = "1234181131010158"


def expect(reason, line):
    with pytest.raises(DecodeError) as info:
        cid.parse_line(line)
    assert info.value.reason == reason, info.value
    return info.value


def test_hand_computed_lines():
    assert cid.parse_line(FIRE) == ContactIdEvent("1234", 1, 110, 1, 3)
    assert cid.parse_line(BURGLARY) == ContactIdEvent("1234", 1, 131, 1, 15)
    assert cid.encode_line(ContactIdEvent("1234", 1, 110, 1, 3), spaced=True) == FIRE
    assert cid.encode_line(ContactIdEvent("1234", 1, 131, 1, 15)) == BURGLARY


def test_checksum_special_digits():
    # 1+2+3+4+1+8+1+6+10+1+10+1+10+1+1 = 60: a needed 15 is sent as F
    assert cid.checksum_digit("123418160101011") == "F"
    # ... zone 016 instead: sum 65, 65 % 15 = 5, a needed 10 is sent as 0
    assert cid.checksum_digit("123418160101016") == "0"
    assert cid.parse_line("123418160101011F").zone == 11
    assert cid.parse_line("1234181601010160").zone == 16


@pytest.mark.parametrize("line", [
    FIRE, FIRE.replace(" ", ""), f"  {FIRE}\r\n", f"[{FIRE}]", f"\t[{FIRE.replace(' ', '')}] ",
    "abcd18111000100" + cid.checksum_digit("ABCD18111000100").lower(), FIRE.encode(),
    FIRE.replace(" ", "\t"),
])
def test_accepted_formats(line):
    assert cid.parse_line(line).code in (110, 111)


def test_account_keeps_hex_digits_upper_case():
    event = cid.parse_line("abcd18111000100" + cid.checksum_digit("ABCD18111000100"))
    assert event.account == "ABCD" and event.source == "ABCD/00/100"


@pytest.mark.parametrize("line,reason,where", [
    ("1234 18 1 110 01 003 8", "bad_checksum", "digit 16 (S)"),
    ("1234 18 1 110 01 003", "bad_length", "line"),
    ("1234 18 1 110 01 003 99", "bad_length", "line"),
    ("", "bad_length", "line"),
    ("1234-18-1-110-01-003-9", "bad_format", "char 4"),
    ("1234 18 1 110 01 003 G", "bad_format", "char 21"),
    ("#1234 18 1 110 01 003 9", "bad_format", "char 0"),
    ("1234 19 1 110 01 003 8", "bad_format", "digit 5 (MT)"),
    ("1234 18 2 110 01 003 8", "bad_format", "digit 7 (Q)"),
    ("1234 18 1 110 0B 003 " + cid.checksum_digit("12341811100B003"), "bad_format",
     "digit 11 (GG)"),
    ("1234 18 1 1B0 01 003 " + cid.checksum_digit("12341811B001003"), "unknown_event_code",
     "digit 8 (EEE)"),
    (b"1234\xff18", "bad_format", "char 4"),
    ("１２３４１８１１１０００１００３９", "bad_format", "char 0"),
])
def test_rejections_are_named_and_located(line, reason, where):
    assert expect(reason, line).where == where


def test_non_text_input():
    with pytest.raises(DecodeError) as info:
        cid.parse_line(1234)     # type: ignore[arg-type]
    assert info.value.reason == "bad_format"


def _line(code, q=1, zone=1):
    return cid.encode_line(ContactIdEvent("5011", q, code, 1, zone))


@pytest.mark.parametrize("code,kind,metric", [
    (100, Kind.SOS, "medical"), (101, Kind.SOS, "personal_emergency"),
    (120, Kind.PANIC, "panic"), (122, Kind.PANIC, "silent_panic"),
    (110, Kind.FIRE, "fire"), (111, Kind.SMOKE, "smoke"), (114, Kind.HEAT, "heat"),
    (137, Kind.TAMPER, "tamper"), (144, Kind.TAMPER, "sensor_tamper"),
    (151, Kind.GAS, "gas"), (154, Kind.WATER_LEAK, "water_leak"),
    (158, Kind.HEAT, "high_temperature"),
    (301, Kind.FAULT, "ac_power_loss"), (302, Kind.BATTERY_LOW, "system_battery_low"),
    (384, Kind.BATTERY_LOW, "sensor_battery_low"),
    (601, Kind.TEST, "manual_test"), (602, Kind.TEST, "periodic_test"),
])
def test_event_codes_map_to_readings(code, kind, metric):
    _, new = cid.decode_line(_line(code), device_id="panel-1/z001", ts=TS)
    _, restore = cid.decode_line(_line(code, q=3), device_id="panel-1/z001", ts=TS)
    _, still = cid.decode_line(_line(code, q=6), device_id="panel-1/z001", ts=TS)
    assert (new.kind, new.metric, new.value, restore.value, still.value) == (
        kind, metric, True, False, True)


@pytest.mark.parametrize("code,metric", [(381, "rf_supervision"), (102, "check_in")])
def test_supervision_loss_means_not_available(code, metric):
    lost = cid.event_reading(cid.parse_line(_line(code)), device_id="d", ts=TS)
    back = cid.event_reading(cid.parse_line(_line(code, q=3)), device_id="d", ts=TS)
    assert (lost.kind, lost.metric, lost.value, back.value) == (
        Kind.AVAILABILITY, metric, False, True)


def test_unknown_code_is_a_named_error_not_a_crash():
    event = cid.parse_line(_line(133))          # 24-hour zone: a valid line, not mapped here
    with pytest.raises(DecodeError) as info:
        cid.event_reading(event, device_id="d", ts=TS)
    assert info.value.reason == "unknown_event_code" and info.value.where == "5011/01/001 EEE"


def test_burglary_zones_are_intrusion():
    for code in (130, 131, 132, 134):
        r = cid.event_reading(cid.parse_line(_line(code)), device_id="panel", ts=TS)
        assert (r.kind, r.value) == (Kind.INTRUSION, True), code


def test_event_constructor_validates():
    for kw in [dict(account="12345"), dict(account="12G4"), dict(qualifier=2),
               dict(code=1000), dict(group=100), dict(zone=-1), dict(message_type=17)]:
        args = dict(account="1234", qualifier=1, code=110) | kw
        with pytest.raises(ValueError):
            ContactIdEvent(**args)


events = st.builds(ContactIdEvent, st.text("0123456789ABCDEF", min_size=4, max_size=4),
                   st.sampled_from([1, 3, 6]), st.integers(0, 999), st.integers(0, 99),
                   st.integers(0, 999), st.sampled_from([18, 98]))


@settings(max_examples=300, deadline=None)
@given(events, st.booleans())
def test_round_trip(event, spaced):
    line = cid.encode_line(event, spaced=spaced)
    assert cid.parse_line(line) == event
    assert sum(10 if c == "0" else int(c, 16) for c in line.replace(" ", "")) % 15 == 0


@settings(max_examples=300, deadline=None)
@given(events, st.integers(0, 15), st.sampled_from("0123456789ABCDEF"))
def test_any_single_digit_change_is_caught(event, pos, digit):
    line = cid.encode_line(event)
    changed = line[:pos] + digit + line[pos + 1:]
    # only 0 and A share a value (10); that swap changes the event or the code, except in
    # the checksum digit itself, where both mean 10 (a needed 10 is sent as 0; A is accepted)
    if line[pos] == digit or (pos == 15 and {line[pos], digit} == {"0", "A"}):
        return
    try:
        assert cid.parse_line(changed) != event
    except DecodeError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40), st.binary(max_size=40),
                 st.text("0123456789ABCDEFabcdef []\t\r\n-", max_size=30)))
def test_parser_raises_only_decode_error(line):
    try:
        event = cid.parse_line(line)
    except DecodeError as err:
        assert err.reason in {"bad_format", "bad_length", "bad_checksum", "unknown_event_code"}
        return
    try:
        cid.event_reading(event, device_id="d", ts=TS)
    except DecodeError as err:
        assert err.reason == "unknown_event_code"
