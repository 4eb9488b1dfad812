"""Modbus register decoding, encoding and read planning."""

from __future__ import annotations

import math
import struct
from datetime import datetime, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import DecodeError
from drivers.codecs.modbus_registers import (
    DATA_TYPES, ReadRequest, RegisterEntry, decode_block, decode_reading, decode_value,
    encode_value, plan_reads, split_block,
)
from gateway.model import Kind, Quality

TS = datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc)


def sdm(metric, kind, address):
    """An Eastron SDM input register: float32, high word first, big-endian bytes."""
    return RegisterEntry(metric, kind, address, "float32", function=4)


# 230.0 V as IEEE-754 float32 is 0x43660000
@pytest.mark.parametrize("byte_order,word_order,registers", [
    ("big", "big", [0x4366, 0x0000]),
    ("big", "little", [0x0000, 0x4366]),
    ("little", "big", [0x6643, 0x0000]),
    ("little", "little", [0x0000, 0x6643]),
])
def test_float32_in_every_order(byte_order, word_order, registers):
    entry = RegisterEntry("voltage_l1", Kind.VOLTAGE, 0, "float32", 4, byte_order, word_order)
    assert decode_value(entry, registers) == 230.0
    assert encode_value(entry, 230.0) == registers


@pytest.mark.parametrize("data_type,word_order,registers,value", [
    ("int16", "big", [0xFFFF], -1),
    ("uint16", "big", [0xFFFF], 65535),
    ("int32", "big", [0xFFFF, 0xFFFE], -2),
    ("uint32", "big", [0x1234, 0x5678], 0x12345678),
    ("uint32", "little", [0x5678, 0x1234], 0x12345678),
    ("float64", "big", [0x3FF0, 0, 0, 0], 1.0),
    ("float64", "little", [0, 0, 0, 0x3FF0], 1.0),
])
def test_integer_and_double_layouts(data_type, word_order, registers, value):
    entry = RegisterEntry("e", Kind.ENERGY, 10, data_type, word_order=word_order)
    assert decode_value(entry, registers) == value
    assert encode_value(entry, value) == registers


def test_scale_and_offset():
    entry = RegisterEntry("temp", Kind.TEMPERATURE, 0, "int16", scale=0.1, offset=-40.0)
    assert decode_value(entry, [215]) == pytest.approx(-18.5)
    assert encode_value(entry, -18.5) == [215]
    kw = RegisterEntry("power", Kind.POWER, 0, "int32", scale=1000.0)   # device sends kW
    assert decode_value(kw, [0, 3]) == 3000.0


@pytest.mark.parametrize("registers", [[0x7FC0, 0x0000], [0x7F80, 0x0000], [0xFF80, 0x0000]])
def test_nan_and_infinity_are_bad_never_zero(registers):
    reading = decode_reading(sdm("voltage_l1", Kind.VOLTAGE, 0), registers, device_id="sdm",
                             ts=TS)
    assert (reading.quality, reading.value, reading.unit) == (Quality.BAD, None, "V")


def test_overflowing_scale_is_bad():
    entry = RegisterEntry("e", Kind.ENERGY, 0, "float64", scale=1e300)
    assert decode_value(entry, encode_value(RegisterEntry("e", Kind.ENERGY, 0, "float64"),
                                            1e300)) is None


def test_boolean_kind_reads_non_zero_as_true():
    entry = RegisterEntry("smoke", Kind.SMOKE, 5)
    assert decode_value(entry, [0]) is False and decode_value(entry, [0x0100]) is True
    assert encode_value(entry, True) == [1]
    reading = decode_reading(entry, [2], device_id="d", ts=TS)
    assert reading.value is True and reading.kind is Kind.SMOKE


def test_good_reading_carries_unit_and_metric():
    reading = decode_reading(sdm("energy_import", Kind.ENERGY, 0x48), [0x4366, 0],
                             device_id="sdm", ts=TS)
    assert (reading.metric, reading.unit, reading.value, reading.quality) == (
        "energy_import", "kWh", 230.0, Quality.GOOD)


@pytest.mark.parametrize("kw", [
    dict(metric=""), dict(kind="nonsense"), dict(kind=Kind.ACCESS), dict(data_type="int8"),
    dict(function=1), dict(address=-1), dict(address=65535, data_type="float32"),
    dict(address=True), dict(byte_order="middle"), dict(word_order="BIG"), dict(scale=0.0),
    dict(scale=math.nan), dict(offset=math.inf), dict(unit="kW"),
    dict(kind=Kind.SMOKE, data_type="float32"),
])
def test_entry_validation(kw):
    args = dict(metric="p", kind=Kind.POWER, address=0, data_type="uint16") | kw
    with pytest.raises(ValueError):
        RegisterEntry(**args)


def test_entry_accepts_kind_names_and_matching_unit():
    entry = RegisterEntry("p", "power", 0xFFFE, "float32", unit="W")
    assert entry.kind is Kind.POWER and entry.count == 2


def test_decode_errors_are_named():
    entry = sdm("v", Kind.VOLTAGE, 0)
    for registers, reason in [([1], "bad_length"), ([1, 2, 3], "bad_length"),
                              ([70000, 0], "bad_register"), ([-1, 0], "bad_register"),
                              ([1.5, 0], "bad_register"), ([True, 0], "bad_register")]:
        with pytest.raises(DecodeError) as info:
            decode_value(entry, registers)
        assert info.value.reason == reason


def test_encode_refuses_values_that_do_not_fit():
    with pytest.raises(ValueError):
        encode_value(RegisterEntry("e", Kind.ENERGY, 0, "uint16"), 70000)
    with pytest.raises(ValueError):
        encode_value(RegisterEntry("e", Kind.ENERGY, 0, "uint16"), -1)
    with pytest.raises(ValueError):
        encode_value(RegisterEntry("e", Kind.ENERGY, 0, "int32"), math.nan)
    f32 = RegisterEntry("e", Kind.ENERGY, 0, "float32")
    assert decode_value(f32, encode_value(f32, math.nan)) is None    # simulators can send NaN


# -- planning -------------------------------------------------------------------------------
SDM630 = [sdm("voltage_l1", Kind.VOLTAGE, 0x00), sdm("voltage_l2", Kind.VOLTAGE, 0x02),
          sdm("voltage_l3", Kind.VOLTAGE, 0x04), sdm("current_l1", Kind.CURRENT, 0x06),
          sdm("power_total", Kind.POWER, 0x34), sdm("frequency", Kind.FREQUENCY, 0x46),
          sdm("energy_import", Kind.ENERGY, 0x48), sdm("energy_export", Kind.ENERGY_EXPORT, 0x4A),
          sdm("energy_total", Kind.ENERGY, 0x156)]


def test_plan_for_an_sdm630():
    plan = [(r.function, r.address, r.count, [e.metric for e in r.entries])
            for r in plan_reads(reversed(SDM630))]
    assert plan == [
        (4, 0x00, 8, ["voltage_l1", "voltage_l2", "voltage_l3", "current_l1"]),
        (4, 0x34, 2, ["power_total"]),
        (4, 0x46, 6, ["frequency", "energy_import", "energy_export"]),
        (4, 0x156, 2, ["energy_total"]),
    ]
    assert len(plan_reads(SDM630, max_gap=100)) == 2      # 0..0x4B in one read


def test_gap_limit_is_inclusive_and_functions_stay_apart():
    a = RegisterEntry("a", Kind.ENERGY, 0, "float32")
    assert len(plan_reads([a, RegisterEntry("b", Kind.ENERGY, 10)])) == 1     # 8 unused
    assert len(plan_reads([a, RegisterEntry("b", Kind.ENERGY, 11)])) == 2     # 9 unused
    assert len(plan_reads([a, RegisterEntry("b", Kind.ENERGY, 2, function=4)])) == 2
    assert len(plan_reads([a, a, RegisterEntry("c", Kind.ENERGY, 1)])) == 1  # overlap
    assert plan_reads([]) == []


def test_reads_never_exceed_the_register_limit():
    entries = [RegisterEntry(f"m{i}", Kind.ENERGY, 2 * i, "float32") for i in range(70)]
    plan = plan_reads(entries)
    assert [r.count for r in plan] == [124, 16]
    assert [r.count for r in plan_reads(entries, max_registers=10)] == [10] * 14
    with pytest.raises(ValueError):
        plan_reads(entries, max_registers=126)
    with pytest.raises(ValueError):
        plan_reads([RegisterEntry("d", Kind.ENERGY, 0, "float64")], max_registers=3)


def test_split_and_decode_a_block():
    request = plan_reads(SDM630)[2]                     # 0x46..0x4B
    registers = encode_value(SDM630[5], 50.0) + encode_value(SDM630[6], 1234.5) + \
        encode_value(SDM630[7], 0.25)
    parts = split_block(request, registers)
    assert [e.metric for e, _ in parts] == ["frequency", "energy_import", "energy_export"]
    readings = decode_block(request, registers, device_id="sdm", ts=TS)
    assert [(r.kind, r.value) for r in readings] == [
        (Kind.FREQUENCY, 50.0), (Kind.ENERGY, 1234.5), (Kind.ENERGY_EXPORT, 0.25)]
    with pytest.raises(DecodeError) as info:
        split_block(request, registers[:-1])
    assert info.value.reason == "bad_length" and info.value.where == "function 4 @ 70"


# -- properties -----------------------------------------------------------------------------
entries = st.builds(
    RegisterEntry, st.just("m"), st.sampled_from([Kind.ENERGY, Kind.POWER, Kind.TEMPERATURE]),
    st.integers(0, 500), st.sampled_from(sorted(DATA_TYPES)), st.sampled_from([3, 4]),
    st.sampled_from(["big", "little"]), st.sampled_from(["big", "little"]))


def _in_range(entry: RegisterEntry, data) -> float:
    code = DATA_TYPES[entry.data_type][0]
    if code in "fd":
        value = data.draw(st.floats(allow_nan=False, allow_infinity=False,
                                    width=32 if code == "f" else 64))
        return value
    bits = 16 * entry.count
    lo, hi = (-(1 << bits - 1), (1 << bits - 1) - 1) if code.islower() else (0, (1 << bits) - 1)
    return data.draw(st.integers(lo, hi))


@settings(max_examples=300, deadline=None)
@given(entries, st.data())
def test_round_trip(entry, data):
    value = _in_range(entry, data)
    registers = encode_value(entry, value)
    assert len(registers) == entry.count and all(0 <= r <= 0xFFFF for r in registers)
    decoded = decode_value(entry, registers)
    if entry.data_type == "float32" and not entry.is_bool:
        # decoded as the shortest decimal of the same float32 (229.8, not 229.8000030517578)
        assert np.float32((decoded - entry.offset) / entry.scale) == \
            np.float32((value - entry.offset) / entry.scale)
    else:
        assert decoded == value


def test_float32_decodes_as_the_meter_shows_it():
    entry = RegisterEntry("voltage_l1", Kind.VOLTAGE, 0, "float32", function=4)
    assert decode_value(entry, encode_value(entry, 229.8)) == 229.8
    assert decode_value(entry, encode_value(entry, 0.1)) == 0.1


@settings(max_examples=300, deadline=None)
@given(entries, st.lists(st.integers(-5, 70000) | st.floats() | st.booleans(), max_size=5))
def test_decode_raises_only_decode_error(entry, registers):
    try:
        value = decode_value(entry, registers)
    except DecodeError:
        return
    assert value is None or math.isfinite(value)
    reading = decode_reading(entry, registers, device_id="d", ts=TS)
    assert (reading.quality is Quality.BAD) == (value is None)


@settings(max_examples=200, deadline=None)
@given(st.lists(entries, max_size=40), st.integers(4, 125), st.integers(0, 20))
def test_plan_covers_every_entry_once_within_limits(batch, max_registers, max_gap):
    plan = plan_reads(batch, max_registers, max_gap)
    assert sorted(map(id, (e for r in plan for e in r.entries))) == sorted(map(id, batch))
    for r in plan:
        assert isinstance(r, ReadRequest) and 1 <= r.count <= max_registers
        for e in r.entries:
            assert e.function == r.function
            assert r.address <= e.address and e.address + e.count <= r.address + r.count
    # adjacent reads of one function could not have been merged within the limits
    for a, b in zip(plan, plan[1:]):
        if a.function == b.function:
            assert b.address - (a.address + a.count) > max_gap or \
                max(a.address + a.count, b.entries[0].address + b.entries[0].count) \
                - a.address > max_registers


def test_struct_codes_cover_every_type():
    for code, count in DATA_TYPES.values():
        assert struct.calcsize(">" + code) == 2 * count
