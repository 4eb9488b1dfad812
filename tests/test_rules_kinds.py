"""Threshold (hysteresis, for), count in window, held state, compound rules."""

from __future__ import annotations

import json

from rules.actions import ClearAlarm, RaiseAlarm, TestRecord, UpdateAlarm
from rules.engine import Engine
from rules.testing import at, config, reading, small_site

SITE = small_site(2)
GAS = {"id": "gas_high", "kind": "threshold", "metric": "gas_concentration", "above": 20,
       "hysteresis": 5, "for": "30s", "severity": "critical", "category": "gas",
       "message": {"zh": "{device_id} 燃气浓度 {value}{unit}，持续 {duration}",
                   "en": "{device_id}: gas {value} {unit} for {duration}"}}


def run(eng: Engine, events: list[tuple[float, str, str, object]]) -> list:
    """Feed (seconds, device, kind, value) in order, ticking every 5 s in between."""
    out, now = [], 0.0
    for s, dev, kind, value in events:
        while now + 5 < s:
            now += 5
            out += eng.tick(at(now))
        now = s
        out += eng.feed(reading(dev, kind, value, s, SITE), at(s))
        out += eng.tick(at(s))
    return out


def test_threshold_needs_the_for_duration_and_clears_past_hysteresis() -> None:
    eng = Engine(config(GAS), SITE)
    out = run(eng, [(0, "gas-1", "gas_concentration", 25.0),
                    (20, "gas-1", "gas_concentration", 26.0),
                    (40, "gas-1", "gas_concentration", 27.0)])
    [a] = out
    assert isinstance(a, RaiseAlarm) and a.ts == at(30) and a.value == 26.0
    assert a.message_en == "gas-1: gas 26.0 %LEL for 30 s"
    assert a.message_zh == "gas-1 燃气浓度 26.0%LEL，持续 30秒"
    # inside the hysteresis band (15..20]: still active
    assert run(eng, [(50, "gas-1", "gas_concentration", 16.0)]) == []
    [c] = run(eng, [(60, "gas-1", "gas_concentration", 15.0)])
    assert isinstance(c, ClearAlarm) and c.auto_resolve


def test_threshold_dip_below_limit_restarts_the_for_duration() -> None:
    eng = Engine(config(GAS), SITE)
    out = run(eng, [(0, "gas-1", "gas_concentration", 25.0),
                    (20, "gas-1", "gas_concentration", 19.0),
                    (25, "gas-1", "gas_concentration", 25.0),
                    (50, "gas-1", "gas_concentration", 25.0)])
    assert out == []
    [a] = run(eng, [(56, "gas-1", "gas_concentration", 25.0)])
    assert a.ts == at(55)


def test_threshold_below_with_zero_for_fires_at_once() -> None:
    cold = {"id": "cold", "kind": "threshold", "metric": "temperature", "below": 5,
            "message": {"zh": "低温", "en": "cold {value}"}, "category": "freeze"}
    eng = Engine(config(cold), SITE)
    [a] = run(eng, [(0, "heat-1", "temperature", 4.5)])
    assert a.message_en == "cold 4.5"


def test_restart_mid_for_duration_keeps_the_timer() -> None:
    cfg = config(GAS)
    eng = Engine(cfg, SITE)
    run(eng, [(0, "gas-1", "gas_concentration", 25.0)])
    eng2 = Engine.restore(cfg, SITE, json.loads(json.dumps(eng.snapshot())))
    assert eng2.tick(at(29)) == []
    [a] = eng2.tick(at(31))
    assert isinstance(a, RaiseAlarm) and a.ts == at(30)   # when the duration was met


def test_count_in_window_per_device() -> None:
    denied = {"id": "denied", "kind": "count", "when": {"kind": "access", "value": "denied"},
              "count": 5, "window": "2m", "category": "intrusion",
              "message": {"zh": "{device_id} {duration} 内 {count} 次拒绝",
                          "en": "{count} denials in {duration} at {device_id}"}}
    eng = Engine(config(denied), SITE)
    ev = [(s, "door-1", "access", "denied") for s in (0, 30, 60, 90)]
    ev += [(100, "door-1", "access", "granted"), (130, "door-1", "access", "denied")]
    assert run(eng, ev) == []          # the first denial (t=0) fell out of the window at 130
    [a] = run(eng, [(140, "door-1", "access", "denied")])
    assert a.message_en == "5 denials in 2 min at door-1"
    assert a.message_zh == "door-1 2分钟 内 5 次拒绝"


def test_count_sos_per_household_and_test_presses_do_not_count() -> None:
    triple = {"id": "sos3", "kind": "count", "when": {"kind": "sos", "value": True},
              "count": 3, "window": "1m", "per": "household", "category": "emergency_call",
              "message": {"zh": "{household_id} 连按", "en": "{household_id} pressed {count}x"}}
    eng = Engine(config(triple), SITE)
    eng.set_device_mode("caller-1", "test")
    out = run(eng, [(0, "caller-1", "sos", True), (5, "caller-1", "sos", False),
                    (10, "caller-1", "sos", True), (15, "caller-1", "sos", False),
                    (20, "caller-1", "sos", True)])
    assert [type(a) for a in out] == [TestRecord] * 3
    eng.set_device_mode("caller-1", "normal")
    out = run(eng, [(30, "caller-1", "sos", True), (35, "caller-1", "sos", False),
                    (40, "caller-1", "sos", True), (45, "caller-1", "sos", False),
                    (50, "caller-1", "sos", True)])
    [a] = out
    assert a.key == "sos3:h1" and a.device_id is None and a.household_id == "h1"


HELD_DOOR = {"id": "door_held", "kind": "held", "when": {"kind": "door_open", "value": True},
             "for": "5m", "category": "intrusion",
             "message": {"zh": "{device_id} 门未关 {duration}",
                         "en": "{device_id} held open for {duration}"}}


def test_held_door_open_longer_than_five_minutes() -> None:
    eng = Engine(config(HELD_DOOR), SITE)
    assert run(eng, [(0, "door-1", "door_open", True), (200, "door-1", "door_open", False),
                     (210, "door-1", "door_open", True)]) == []
    [a] = run(eng, [(515, "door-1", "door_open", True)])   # duplicate state, ticks to 510
    assert a.ts == at(510) and a.message_en == "door-1 held open for 5 min"
    [c] = run(eng, [(600, "door-1", "door_open", False)])
    assert isinstance(c, ClearAlarm)


def test_held_water_flowing_at_night_is_a_leak() -> None:
    leak = {"id": "leak", "kind": "held", "when": {"kind": "water_volume"},
            "increasing": True, "for": "2h", "hours": {"start": "23:00", "end": "06:00"},
            "category": "water_leak", "message": {"zh": "疑似漏水", "en": "water flowing "
                                                  "for {duration} at night"}}
    eng = Engine(config(leak), SITE)
    # T0 is 08:00 local; 23:00 local is 15 h later. Daytime flow for 3 h: no alarm.
    day = [(s, "water-1", "water_volume", 1.0 + s / 1000) for s in range(0, 3 * 3600, 600)]
    assert run(eng, day) == []
    night0 = 15 * 3600
    night = [(night0 + s, "water-1", "water_volume", 20.0 + s / 1000)
             for s in range(0, int(2.5 * 3600), 600)]
    [a] = run(eng, night)
    assert a.message_en == "water flowing for 2 h at night"
    # a reading without increase is a pause: the leak alarm clears
    last = night[-1]
    [c] = run(eng, [(last[0] + 600, "water-1", "water_volume", last[3])])
    assert isinstance(c, ClearAlarm)


FIRE = {"id": "fire", "kind": "compound", "window": "2m", "per": "household",
        "severity": "critical", "category": "fire",
        "all": [{"when": {"kind": "smoke", "value": True}},
                {"when": {"kind": "heat", "value": True}}],
        "message": {"zh": "{household_id} 火警", "en": "fire confirmed in {household_id}"}}


def test_compound_smoke_and_heat_in_one_household() -> None:
    eng = Engine(config(FIRE), SITE)
    assert run(eng, [(0, "smoke-1", "smoke", True), (10, "heat-2", "heat", True)]) == []
    [a] = run(eng, [(60, "heat-1", "heat", True)])
    assert (a.key, a.severity, a.household_id) == ("fire:h1", "critical", "h1")
    # heat long after smoke does not combine
    assert run(eng, [(300, "smoke-2", "smoke", True), (500, "heat-2", "heat", True)]) == []


def test_compound_any_and_repeat_updates() -> None:
    anyrule = {**FIRE, "id": "any_fire", "all": None,
               "any": [{"when": {"kind": "smoke", "value": True}}]}
    eng = Engine(config(anyrule), SITE)
    [a] = run(eng, [(0, "smoke-1", "smoke", True)])
    assert isinstance(a, RaiseAlarm)
    [u] = run(eng, [(10, "smoke-1", "smoke", False), (20, "smoke-1", "smoke", True)])
    assert isinstance(u, UpdateAlarm)
