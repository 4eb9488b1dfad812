"""CJ/T 188-2004 codec. Frames computed by hand (no 0x33 offset, CS from 0x68 through DATA)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import DecodeError
from drivers.codecs import cjt188
from drivers.codecs.framing import CJT188_LAYOUT, FrameSplitter
from gateway.model import Kind, Quality

TS = datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc)
METER = "12345678901234"
# cold water meter, read 901F with SER 0, two wake-up bytes
READ = bytes.fromhex("FEFE 68 10 34129078563412 01 03 1F9000 15 16")
# 1234.56 m3, settlement 1200.00 m3, clock 2024-01-15 10:30:00, valve closed + battery low
REPLY = bytes.fromhex("FEFE 68 10 34129078563412 81 16 1F9000 563412002C 000012002C"
                      " 00301015012420 0500 4D 16")


def expect(reason, fn, *args, **kw):
    with pytest.raises(DecodeError) as info:
        fn(*args, **kw)
    assert info.value.reason == reason, info.value
    return info.value


def reply(**kw):
    kw.setdefault("volume", 12.5)
    return cjt188.encode_read_reply(METER, **kw)


def test_read_request_matches_hand_computed_frame():
    assert cjt188.build_read_request(METER) == READ


def test_decode_hand_computed_reply():
    r = cjt188.decode_read_reply(REPLY)
    assert (r.meter_type, r.address, r.ser) == (0x10, METER, 0)
    assert (r.volume, r.settlement_volume) == (1234.56, 1200.0)
    assert r.meter_clock == datetime(2024, 1, 15, 10, 30)
    assert (r.valve, r.battery_low, r.status) == ("closed", True, 0x0005)
    assert cjt188.encode_read_reply(METER, volume=1234.56, settlement_volume=1200.0,
                                    clock=datetime(2024, 1, 15, 10, 30), valve="closed",
                                    battery_low=True) == REPLY


def test_readings_of_a_water_meter():
    got = {(x.kind, x.metric): x for x in cjt188.decode_read_reply(REPLY).readings("wm", TS)}
    assert got[(Kind.WATER_VOLUME, "volume")].value == 1234.56
    assert got[(Kind.WATER_VOLUME, "volume")].unit == "m3"
    assert got[(Kind.BATTERY_LOW, "battery_low")].value is True
    assert got[(Kind.VALVE_OPEN, "valve_open")].value is False
    assert got[(Kind.FAULT, "valve_fault")].value is False


def test_gas_meter_and_litres():
    r = cjt188.decode_read_reply(reply(meter_type=0x30))
    assert r.kind is Kind.GAS_VOLUME and r.readings("gm", TS)[0].kind is Kind.GAS_VOLUME
    frame = bytearray(reply(volume=1234.56, preamble=0))
    frame[18] = cjt188.UNIT_LITRE                      # current volume's unit byte
    frame[-2] = (frame[-2] + cjt188.UNIT_LITRE - cjt188.UNIT_M3) & 0xFF
    assert cjt188.decode_read_reply(bytes(frame)).volume == pytest.approx(1.23456)


def test_abnormal_valve_is_bad_quality_and_a_fault():
    readings = cjt188.decode_read_reply(reply(valve="abnormal")).readings("wm", TS)
    valve = next(x for x in readings if x.kind is Kind.VALVE_OPEN)
    assert valve.quality is Quality.BAD and valve.value is None
    assert next(x for x in readings if x.kind is Kind.FAULT).value is True
    no_valve = cjt188.decode_read_reply(reply()).readings("wm", TS, has_valve=False)
    assert {x.kind for x in no_valve} == {Kind.WATER_VOLUME, Kind.BATTERY_LOW}


def test_clock_absent_or_in_the_other_order():
    assert cjt188.decode_read_reply(reply()).meter_clock is None        # all zeros
    frame = reply(clock=datetime(2024, 1, 15, 10, 30, 5), preamble=0)
    # the same digits read high-first are no valid date: informational, so None
    assert cjt188.decode_read_reply(frame, clock_high_first=True).meter_clock is None
    data = bytearray(frame)
    data[24:31] = bytes.fromhex("20240115103005")
    data[-2] = sum(data[:-2]) & 0xFF
    assert cjt188.decode_read_reply(bytes(data), clock_high_first=True).meter_clock == \
        datetime(2024, 1, 15, 10, 30, 5)


# -- error reasons --------------------------------------------------------------------------
def test_error_reply_is_abnormal():
    err = expect("abnormal_reply", cjt188.decode_read_reply,
                 cjt188.encode_error_reply(METER, status=0x0003))
    assert err.where == "byte 11 (C)"


def test_checksum_error_is_located():
    frame = bytearray(REPLY)
    frame[20] ^= 0x01
    assert expect("bad_checksum", cjt188.decode_read_reply, bytes(frame)).where == \
        "byte 35 (CS)"


def test_request_heat_meter_and_identifier_errors():
    expect("bad_control", cjt188.decode_read_reply, READ)
    expect("unsupported_meter_type", cjt188.decode_read_reply, reply(meter_type=0x20))
    swapped = bytes.fromhex("901F00") + bytes(19)
    expect("unknown_di", cjt188.decode_read_reply,
           cjt188.encode_frame(0x10, METER, 0x81, swapped))
    expect("bad_length", cjt188.decode_read_reply,
           cjt188.encode_frame(0x10, METER, 0x81, bytes.fromhex("1F9000") + bytes(18)))
    expect("bad_length", cjt188.decode_read_reply, cjt188.encode_frame(0x10, METER, 0x81, b"\x1f"))


def test_unit_bcd_and_address_errors():
    frame = bytearray(reply(preamble=0))
    frame[18], frame[-2] = 0x99, (frame[-2] + 0x99 - 0x2C) & 0xFF
    assert expect("bad_unit", cjt188.decode_read_reply, bytes(frame)).where == \
        "byte 18 (current volume unit)"
    frame = bytearray(reply(preamble=0))
    frame[14], frame[-2] = 0xAB, (frame[-2] + 0xAB - frame[14]) & 0xFF
    assert expect("bad_bcd", cjt188.decode_read_reply, bytes(frame)).where == \
        "byte 14 (current volume)"
    expect("unexpected_reply", cjt188.decode_read_reply, REPLY, expect_address="0" * 14)


@pytest.mark.parametrize("mutate,reason", [
    (lambda f: f[:-1] + b"\x00", "bad_end"),
    (lambda f: f[:2] + b"\x00" + f[3:], "bad_start"),
    (lambda f: f[:20], "truncated"),
    (lambda f: f + b"\x16", "bad_length"),
])
def test_framing_errors(mutate, reason):
    expect(reason, cjt188.decode_read_reply, mutate(REPLY))


def test_encoders_refuse_what_cannot_be_sent():
    for kw in [dict(volume=-1), dict(volume=1e7), dict(valve="half"), dict(ser=256)]:
        with pytest.raises(ValueError):
            reply(**kw)
    with pytest.raises(ValueError):
        cjt188.build_read_request("123")


# -- properties -----------------------------------------------------------------------------
addresses = st.text("0123456789", min_size=14, max_size=14)
volumes = st.integers(0, 99_999_999).map(lambda n: n / 100)
clocks = st.none() | st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31)).map(
    lambda d: d.replace(microsecond=0))


@settings(max_examples=300, deadline=None)
@given(addresses, st.sampled_from(sorted(cjt188.METER_KINDS)), volumes, volumes, clocks,
       st.sampled_from(["open", "closed", "abnormal"]), st.booleans(), st.integers(0, 255))
def test_round_trip(address, meter_type, volume, settlement, clock, valve, battery, ser):
    r = cjt188.decode_read_reply(
        cjt188.encode_read_reply(address, meter_type=meter_type, volume=volume,
                                 settlement_volume=settlement, clock=clock, valve=valve,
                                 battery_low=battery, ser=ser), expect_address=address)
    assert (r.address, r.meter_type, r.volume, r.settlement_volume, r.meter_clock, r.valve,
            r.battery_low, r.ser) == (address, meter_type, volume, settlement, clock, valve,
                                      battery, ser)


def _mutated(pair):
    frame = bytearray(pair[0])
    for pos, byte in pair[1]:
        if pos < len(frame):
            frame[pos] = byte
    return bytes(frame)


mutations = st.tuples(st.builds(lambda a, v: reply(volume=v) if a else READ, st.booleans(),
                                volumes),
                      st.lists(st.tuples(st.integers(0, 40), st.integers(0, 255)),
                               max_size=3)).map(_mutated)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=64), mutations))
def test_decoders_raise_only_decode_error(raw):
    for decoder in (cjt188.decode_frame, cjt188.decode_read_reply, cjt188.decode_valve_reply):
        try:
            decoder(raw)
        except DecodeError as err:
            assert err.reason and " " not in err.reason


def test_splitter_cuts_cjt188_frames_from_a_stream():
    stream = b"\x00" + READ + b"\x55\x55" + REPLY
    splitter, items = FrameSplitter(CJT188_LAYOUT), []
    for byte in stream:
        items += splitter.feed(bytes([byte]))
    assert [i for i in items if isinstance(i, bytes)] == [READ[2:], REPLY[2:]]
    assert [i.reason for i in items if isinstance(i, DecodeError)] == ["junk_bytes"] * 2


# -- valve control (write data 0x04, DI A017; issue 16) -------------------------------------
# gas meter, close (99), SER 0; the meter's answer (84, ST1 01 = closed) and its refusal (C4)
CLOSE = bytes.fromhex("FEFE 68 30 34129078563412 04 04 17A0 00 99 DA 16")
CLOSED = bytes.fromhex("FEFE 68 30 34129078563412 84 05 17A0 00 0100 C3 16")
REFUSED = bytes.fromhex("FEFE 68 30 34129078563412 C4 03 00 0300 4C 16")


def test_valve_request_and_answer_match_hand_computed_frames():
    assert cjt188.build_valve_request(METER, open_valve=False, meter_type=0x30) == CLOSE
    assert cjt188.valve_request(cjt188.decode_frame(CLOSE)) is False
    opening = cjt188.build_valve_request(METER, open_valve=True, meter_type=0x30, ser=7)
    assert opening[-6:-2] == bytes.fromhex("17A0 07 55")
    assert cjt188.valve_request(cjt188.decode_frame(opening)) is True
    assert cjt188.valve_request(cjt188.decode_frame(READ)) is None      # a read, not a valve
    assert cjt188.encode_valve_reply(METER, meter_type=0x30, valve="closed") == CLOSED
    answer = cjt188.decode_valve_reply(CLOSED, expect_address=METER)
    assert (answer.address, answer.meter_type, answer.ser, answer.status) == (METER, 0x30, 0, 1)
    assert cjt188.encode_error_reply(METER, meter_type=0x30, status=3,
                                     control=cjt188.C_WRITE_ERROR) == REFUSED


def test_valve_answer_errors():
    expect("abnormal_reply", cjt188.decode_valve_reply, REFUSED)
    expect("unexpected_reply", cjt188.decode_valve_reply, CLOSED, expect_address="1" * 14)
    expect("bad_control", cjt188.decode_valve_reply, REPLY)            # a read reply
    expect("bad_length", cjt188.decode_valve_reply,
           cjt188.encode_frame(0x30, METER, cjt188.C_WRITE_REPLY, bytes.fromhex("17A000")))
    expect("unknown_di", cjt188.decode_valve_reply,
           cjt188.encode_frame(0x30, METER, cjt188.C_WRITE_REPLY, bytes.fromhex("1FA0000100")))
    with pytest.raises(ValueError):
        cjt188.build_valve_request(METER, open_valve=True, ser=256)


@settings(max_examples=200, deadline=None)
@given(addresses, st.sampled_from(sorted(cjt188.METER_KINDS)), st.booleans(),
       st.integers(0, 255))
def test_valve_round_trip(address, meter_type, open_valve, ser):
    request = cjt188.decode_frame(cjt188.build_valve_request(
        address, open_valve=open_valve, meter_type=meter_type, ser=ser))
    assert cjt188.valve_request(request) is open_valve and request.address == address
    answer = cjt188.decode_valve_reply(cjt188.encode_valve_reply(
        address, meter_type=meter_type, ser=ser, valve="open" if open_valve else "closed"),
        expect_address=address)
    assert (answer.address, answer.ser, answer.status & 0b11) == (address, ser,
                                                                  0 if open_valve else 1)
