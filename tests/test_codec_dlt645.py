"""DL/T 645-2007 codec and the shared 68..16 stream splitter.

Frames below were computed by hand from the frame rules (address 210987654321 is sent
21 43 65 87 09 21, DATA +0x33, CS = sum mod 256 from the first 0x68 through DATA).
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import DecodeError
from drivers.codecs import dlt645
from drivers.codecs.framing import DLT645_LAYOUT, FrameSplitter, check_frame
from gateway.model import Kind

TS = datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc)
METER = "210987654321"
# read forward active energy (DI 00 01 00 00) with four wake-up bytes
READ_IMPORT = bytes.fromhex("FEFEFEFE 68 214365870921 68 11 04 33333433 2C 16")
# the meter answers 12345.67 kWh: BCD 67 45 23 01, +0x33 -> 9A 78 56 34
REPLY_IMPORT = bytes.fromhex("68 214365870921 68 91 08 33333433 9A785634 4C 16")
READ_ADDRESS = bytes.fromhex("FEFEFEFE 68 AAAAAAAAAAAA 68 13 00 DF 16")


def reasons(items):
    return [i.reason if isinstance(i, DecodeError) else "frame" for i in items]


def expect(reason, fn, *args, **kw):
    with pytest.raises(DecodeError) as info:
        fn(*args, **kw)
    assert info.value.reason == reason, info.value
    return info.value


# -- published / hand-computed frames --------------------------------------------------------
def test_read_request_matches_hand_computed_frame():
    assert dlt645.build_read_request(METER, 0x00010000) == READ_IMPORT
    assert dlt645.build_read_request(METER, 0x00010000, preamble=0) == READ_IMPORT[4:]


def test_read_address_request_uses_wildcard():
    assert dlt645.build_read_address_request() == READ_ADDRESS


def test_decode_hand_computed_energy_reply():
    reply = dlt645.decode_read_reply(REPLY_IMPORT)
    assert (reply.address, reply.di, reply.value, reply.more) == (METER, 0x00010000, 12345.67,
                                                                 False)
    reading = reply.reading("meter-3-502", TS)
    assert (reading.kind, reading.metric, reading.unit, reading.value) == (
        Kind.ENERGY, "energy_import", "kWh", 12345.67)
    assert dlt645.encode_read_reply(METER, 0x00010000, 12345.67) == REPLY_IMPORT


def test_reply_with_wake_up_bytes_decodes():
    assert dlt645.decode_read_reply(b"\xfe\xfe" + REPLY_IMPORT).value == 12345.67


@pytest.mark.parametrize("di,value,kind,metric,unit", [
    (0x00000000, 99.99, Kind.ENERGY, "energy_combined", "kWh"),
    (0x00020000, 0.01, Kind.ENERGY_EXPORT, "energy_export", "kWh"),
    (0x02010100, 220.1, Kind.VOLTAGE, "voltage_a", "V"),
    (0x02010300, 231.0, Kind.VOLTAGE, "voltage_c", "V"),
    (0x02020200, 5.125, Kind.CURRENT, "current_b", "A"),
    (0x02020100, -1.5, Kind.CURRENT, "current_a", "A"),
    (0x02030000, 1234.5, Kind.POWER, "power_total", "W"),
    (0x02030000, -3000.0, Kind.POWER, "power_total", "W"),
])
def test_each_identifier_round_trips_into_its_reading(di, value, kind, metric, unit):
    reading = dlt645.decode_read_reply(dlt645.encode_read_reply(METER, di, value)).reading(
        "m", TS)
    assert (reading.kind, reading.metric, reading.unit, reading.value) == (kind, metric, unit,
                                                                           value)


def test_negative_current_sets_the_sign_bit_of_the_highest_byte():
    # -1.500 A: BCD 00 15 00, sign -> 00 15 80, +0x33 -> 33 48 B3
    frame = dlt645.encode_read_reply(METER, 0x02020100, -1.5)
    assert frame[14:17] == bytes.fromhex("3348B3")


def test_power_is_reported_in_watts():
    # 1.2345 kW: BCD 45 23 01 -> +0x33 -> 78 56 34
    frame = dlt645.encode_read_reply(METER, 0x02030000, 1234.5)
    assert frame[14:17] == bytes.fromhex("785634")


def test_more_frames_flag_from_b1():
    frame = dlt645.encode_read_reply(METER, 0x02010100, 220.0, more=True)
    assert frame[8] == 0xB1 and dlt645.decode_read_reply(frame).more


def test_address_reply_round_trip_and_frame():
    frame = dlt645.encode_address_reply(METER)
    assert frame[8:10] == b"\x93\x06" and frame[10:16] == bytes(
        (b + 0x33) & 0xFF for b in bytes.fromhex("214365870921"))
    assert dlt645.decode_address_reply(frame) == METER


def test_broadcast_and_wildcard_addresses_encode():
    assert dlt645.build_read_request(dlt645.BROADCAST_ADDRESS, 0x00010000)[5:11] == b"\x99" * 6
    assert dlt645.decode_frame(dlt645.build_read_request("0000AAAAAAAA", 0)).address == \
        "0000AAAAAAAA"


# -- every error reason ---------------------------------------------------------------------
def test_abnormal_reply_names_the_error_bits():
    err = expect("abnormal_reply", dlt645.decode_read_reply,
                 dlt645.encode_abnormal_reply(METER, 0x02))
    assert "no requested data" in err.detail and err.where == "byte 8 (C)"


def test_bad_checksum_is_located_at_the_cs_byte():
    frame = bytearray(READ_IMPORT[4:])
    frame[14] ^= 0xFF
    err = expect("bad_checksum", dlt645.decode_frame, bytes(frame))
    assert err.where == "byte 14 (CS)"
    err = expect("bad_checksum", dlt645.decode_frame, b"\xfe\xfe" + bytes(frame))
    assert err.where == "byte 16 (CS)"


@pytest.mark.parametrize("mutate,reason", [
    (lambda f: f[:-1] + b"\x17", "bad_end"),
    (lambda f: b"\x69" + f[1:], "bad_start"),
    (lambda f: f[:7] + b"\x00" + f[8:], "bad_start"),
    (lambda f: b"\xfe" * 5 + f, "bad_start"),
    (lambda f: f[:-3], "truncated"),
    (lambda f: f[:5], "truncated"),
    (lambda f: b"\xfe\xfe", "truncated"),
    (lambda f: f + b"\x00", "bad_length"),
])
def test_framing_errors(mutate, reason):
    expect(reason, dlt645.decode_read_reply, mutate(REPLY_IMPORT))


def test_length_above_200_is_bad_length():
    frame = bytes.fromhex("68214365870921 68 91") + bytes([201])
    expect("bad_length", dlt645.decode_frame, frame)


def test_non_bcd_value_is_bad_bcd_with_its_byte():
    value = bytes([0x0A, 0, 0, 0])       # lowest value byte has the nibble A
    frame = dlt645.encode_frame(METER, 0x91, bytes.fromhex("00000100") + value, preamble=0)
    err = expect("bad_bcd", dlt645.decode_read_reply, frame)
    assert err.where == "byte 14 (DI 00010000 value)"


def test_non_bcd_address_is_bad_bcd():
    frame = bytearray(REPLY_IMPORT)
    frame[1] = 0x2F
    frame[-2] = (frame[-2] + 0x2F - 0x21) & 0xFF
    assert expect("bad_bcd", dlt645.decode_frame, bytes(frame)).where == "byte 1 (address)"


def test_unknown_identifier():
    frame = dlt645.encode_frame(METER, 0x91, bytes.fromhex("01020304") + b"\x00" * 4)
    expect("unknown_di", dlt645.decode_read_reply, frame)


def test_wrong_value_length_for_identifier():
    frame = dlt645.encode_frame(METER, 0x91, bytes.fromhex("00000100") + b"\x00" * 3)
    expect("bad_length", dlt645.decode_read_reply, frame)
    expect("bad_length", dlt645.decode_read_reply, dlt645.encode_frame(METER, 0x91, b"\x00"))


def test_request_is_not_a_reply():
    expect("bad_control", dlt645.decode_read_reply, READ_IMPORT)
    expect("bad_control", dlt645.decode_address_reply, REPLY_IMPORT)
    expect("bad_length", dlt645.decode_address_reply,
           dlt645.encode_frame(METER, 0x93, b"\x21\x43"))


def test_wildcard_in_an_address_reply_is_refused():
    frame = dlt645.encode_frame(METER, 0x93, b"\xaa" * 6)
    expect("bad_bcd", dlt645.decode_address_reply, frame)


def test_unexpected_meter_or_identifier():
    expect("unexpected_reply", dlt645.decode_read_reply, REPLY_IMPORT,
           expect_address="000000000001")
    expect("unexpected_reply", dlt645.decode_read_reply, REPLY_IMPORT, expect_di=0x00020000)
    assert dlt645.decode_read_reply(REPLY_IMPORT, expect_address=METER,
                                    expect_di=0x00010000).value == 12345.67


def test_encoders_refuse_what_cannot_be_sent():
    for args in [(METER, 0x01020304, 1.0), (METER, 0x00010000, -1.0),
                 (METER, 0x02010100, 10000.0), ("21098765432", 0, 1.0),
                 ("21098765432X", 0x00010000, 1.0), (METER, 0x02020100, 800.0)]:
        with pytest.raises(ValueError):
            dlt645.encode_read_reply(*args)


# -- properties -----------------------------------------------------------------------------
addresses = st.text("0123456789", min_size=12, max_size=12)
items = st.sampled_from(sorted(dlt645.DATA_ITEMS.values(), key=lambda i: i.di))


@settings(max_examples=300, deadline=None)
@given(addresses, items, st.data())
def test_round_trip_every_identifier(address, item, data):
    raw = data.draw(st.integers(0, item.max_raw))
    negative = item.signed and data.draw(st.booleans())
    value = raw * item.scale / 10 ** item.decimals * (-1 if negative else 1)
    frame = dlt645.encode_read_reply(address, item.di, value,
                                     preamble=data.draw(st.integers(0, 4)))
    reply = dlt645.decode_read_reply(frame, expect_address=address, expect_di=item.di)
    assert reply.value == value and reply.item == item


def _frame_mutations():
    base = st.builds(lambda a, i, v: dlt645.encode_read_reply(a, i.di, 0.0) if v else
                     dlt645.encode_abnormal_reply(a, 3), addresses, items, st.booleans())
    return st.tuples(base, st.lists(st.tuples(st.integers(0, 40), st.integers(0, 255)),
                                    max_size=3)).map(_apply)


def _apply(pair):
    frame, edits = bytearray(pair[0]), pair[1]
    for pos, byte in edits:
        if pos < len(frame):
            frame[pos] = byte
    return bytes(frame)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=64), _frame_mutations()))
def test_decoders_raise_only_decode_error(raw):
    for decoder in (dlt645.decode_frame, dlt645.decode_read_reply, dlt645.decode_address_reply):
        try:
            decoder(raw)
        except DecodeError as err:
            assert err.reason and " " not in err.reason


# -- second opinion: the independent PyPI implementation ----------------------------------
try:
    from dlt645.protocol.protocol import DLT645Protocol
except ImportError:      # optional: the test extra installs it
    DLT645Protocol = None


@pytest.mark.skipif(DLT645Protocol is None, reason="PyPI package dlt645 not installed")
@settings(max_examples=100, deadline=None)
@given(addresses, st.integers(0, 0xFFFFFFFF), st.integers(0, 4))
def test_framing_agrees_with_the_dlt645_package(address, di, preamble):
    proto = DLT645Protocol
    ours = dlt645.build_read_request(address, di, preamble=preamble)
    theirs = bytes(proto.build_frame(bytes.fromhex(address)[::-1], 0x11,
                                     di.to_bytes(4, "little"), preamble))
    assert ours == theirs
    parsed = proto.deserialize(dlt645.encode_read_reply(address, 0x02020100, -12.5))
    assert parsed.ctrl_code == 0x91 and parsed.addr == bytes.fromhex(address)[::-1]
    # -12.500 A: BCD 00 25 01, sign bit -> 00 25 81; their decoder removes the 0x33 too
    assert parsed.data == bytes.fromhex("00010202 002581")


# -- stream splitter ------------------------------------------------------------------------
def test_splitter_handles_chunks_of_every_size():
    stream = b"\x00\x11" + READ_IMPORT + b"junk" + b"\xfe\xfe" + REPLY_IMPORT
    for size in range(1, len(stream) + 1):
        splitter, items = FrameSplitter(DLT645_LAYOUT), []
        for i in range(0, len(stream), size):
            items += splitter.feed(stream[i:i + size])
        assert reasons(items) == ["junk_bytes", "frame", "junk_bytes", "frame"], size
        assert items[1] == READ_IMPORT[4:] and items[3] == REPLY_IMPORT
        assert items[0].where == "stream offset 0" and "2 bytes" in items[0].detail
        assert splitter.buffered == 0


def test_splitter_resyncs_after_a_corrupt_frame():
    bad = bytearray(REPLY_IMPORT)
    bad[-2] ^= 1
    items = FrameSplitter(DLT645_LAYOUT).feed(bytes(bad) + REPLY_IMPORT)
    assert reasons(items) == ["bad_checksum", "frame"]
    assert items[0].where == f"stream offset {len(bad) - 2}"


def test_splitter_finds_a_frame_behind_a_cut_one():
    # a meter reset mid-frame: the cut frame swallows the start of the next one
    items = FrameSplitter(DLT645_LAYOUT).feed(REPLY_IMPORT[:12] + REPLY_IMPORT + REPLY_IMPORT)
    assert reasons(items)[-1] == "frame" and reasons(items).count("frame") >= 1
    assert set(reasons(items)) <= {"frame", "bad_checksum", "bad_end", "junk_bytes"}


def test_splitter_stray_start_byte_in_noise_and_bad_length():
    splitter = FrameSplitter(DLT645_LAYOUT)
    items = splitter.feed(b"\x68\x01\x02\x03\x04\x05\x06\x07\x08\x09" + REPLY_IMPORT)
    assert reasons(items) == ["junk_bytes", "frame"]
    long_l = bytes.fromhex("68214365870921 68 91 FF")
    assert reasons(splitter.feed(long_l + REPLY_IMPORT)) == ["bad_length", "frame"]


def test_splitter_flush_reports_a_truncated_frame():
    splitter = FrameSplitter(DLT645_LAYOUT)
    assert splitter.feed(REPLY_IMPORT[:15]) == []
    assert reasons(splitter.flush()) == ["truncated"]
    assert splitter.buffered == 0 and splitter.flush() == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=30))
def test_splitter_is_bounded_and_emits_only_checked_frames(chunks):
    splitter = FrameSplitter(DLT645_LAYOUT)
    for chunk in chunks:
        for item in splitter.feed(chunk):
            if isinstance(item, bytes):
                check_frame(item, DLT645_LAYOUT)
            else:
                assert isinstance(item, DecodeError)
        assert splitter.buffered <= DLT645_LAYOUT.max_frame_len + 4
    splitter.flush()
    assert splitter.buffered == 0


junk = st.binary(max_size=12).map(lambda b: bytes(x for x in b if x not in (0x68, 0xFE)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(junk, addresses, items), min_size=1, max_size=5), st.data())
def test_splitter_recovers_every_frame_between_junk(parts, data):
    frames = [dlt645.encode_read_reply(a, i.di, 0.0) for _, a, i in parts]
    stream = b"".join(j + b"\xfe" * 2 + f for (j, _, _), f in zip(parts, frames))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    splitter, items = FrameSplitter(DLT645_LAYOUT), []
    for lo, hi in zip([0, *cuts], [*cuts, len(stream)]):
        items += splitter.feed(stream[lo:hi])
    assert [i for i in items if isinstance(i, bytes)] == frames
    assert {i.reason for i in items if isinstance(i, DecodeError)} <= {"junk_bytes"}


def test_splitter_flush_reports_junk_before_the_truncated_frame():
    splitter = FrameSplitter(DLT645_LAYOUT)
    assert splitter.feed(b"abc") == []          # junk is reported once its run ends
    items = splitter.feed(b"de" + REPLY_IMPORT[:12]) + splitter.flush()
    assert reasons(items) == ["junk_bytes", "truncated"]
    assert "5 bytes" in items[0].detail and items[1].where == "stream offset 5"
