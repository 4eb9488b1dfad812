"""The normalized Reading validates what it is given."""

from __future__ import annotations

from datetime import datetime

import pytest

from gateway.model import Kind, Quality, Reading, utc


def test_kinds_check_value_types():
    Reading("d", Kind.SOS, True, utc())
    with pytest.raises(TypeError):
        Reading("d", Kind.SOS, 1, utc())
    with pytest.raises(TypeError):
        Reading("d", Kind.VOLTAGE, True, utc())
    with pytest.raises(ValueError):
        Reading("d", Kind.VOLTAGE, float("nan"), utc())
    with pytest.raises(ValueError):
        Reading("d", Kind.VOLTAGE, 230.0, datetime(2026, 1, 1))


def test_units_and_bad_quality():
    r = Reading("d", Kind.ENERGY, 12, utc())
    assert r.value == 12.0 and r.unit == "kWh" and r.metric == "energy"
    with pytest.raises(ValueError):
        Reading("d", Kind.ENERGY, 0.0, utc(), quality=Quality.BAD)
    assert Reading("d", Kind.ENERGY, None, utc(), quality=Quality.BAD).value is None


def test_json_round_trip_and_site_binding():
    r = Reading("d", Kind.SMOKE, True, utc()).with_site(household_id="h1", grid_cell="g1",
                                                         device_type="smoke_detector")
    assert Reading.from_json(r.to_json()) == r
    assert r.is_alarm_class and not Reading("d", Kind.MOTION, True, utc()).is_alarm_class
