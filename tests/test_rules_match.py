"""Match rules, alarm dedup, clear/auto-resolve, test mode, escalation, snapshot/restore."""

from __future__ import annotations

import json

import pytest

from rules.actions import (
    ClearAlarm, Escalate, RaiseAlarm, TestRecord, UpdateAlarm,
)
from rules.engine import Engine
from rules.testing import at, config, reading, small_site

SITE = small_site(2)

SOS = {"id": "sos", "kind": "match", "severity": "critical", "category": "emergency_call",
       "device_types": ["emergency_caller"],
       "message": {"zh": "{household_id} 紧急呼叫（{device_id}）",
                   "en": "SOS from {device_id} in {household_id}, cell {grid_cell}"},
       "when": {"kind": "sos", "value": True}, "clear_when": {"kind": "sos", "value": False}}

ESCALATION = {"tiers": [
    {"name": "grid_member", "after": "0s", "notify": ["grid:{cell}"]},
    {"name": "duty_officer", "after": "2m", "notify": ["duty"]},
    {"name": "street_office", "after": "10m", "notify": ["street", "emergency_contact"]}]}


def sos(device: str, value: bool, s: float):
    return reading(device, "sos", value, s, SITE)


def test_sos_raises_one_alarm_with_rendered_messages() -> None:
    eng = Engine(config(SOS), SITE)
    [a] = eng.feed(sos("caller-1", True, 10), at(10))
    assert isinstance(a, RaiseAlarm)
    assert (a.key, a.rule_id, a.category, a.severity) == ("sos:caller-1", "sos",
                                                          "emergency_call", "critical")
    assert (a.household_id, a.grid_cell) == ("h1", "g1")
    assert a.message_en == "SOS from caller-1 in h1, cell g1"
    assert a.message_zh == "h1 紧急呼叫（caller-1）"
    assert a.ts == at(10) and a.value is True
    json.dumps(a.to_json())


def test_repeated_trigger_updates_the_open_alarm() -> None:
    eng = Engine(config(SOS), SITE)
    eng.feed(sos("caller-1", True, 10), at(10))
    [u] = eng.feed(sos("caller-1", True, 20), at(20))
    assert isinstance(u, UpdateAlarm) and u.key == "sos:caller-1" and u.count == 2
    # another household's caller is a different alarm
    [b] = eng.feed(sos("caller-2", True, 21), at(21))
    assert isinstance(b, RaiseAlarm) and b.household_id == "h2"


def test_clear_without_auto_resolve_keeps_alarm_open_for_staff() -> None:
    eng = Engine(config(SOS), SITE)
    eng.feed(sos("caller-1", True, 10), at(10))
    [c] = eng.feed(sos("caller-1", False, 30), at(30))
    assert c == ClearAlarm("sos:caller-1", at(30), "sos=False", False)
    # still open: a new press updates the same alarm
    [u] = eng.feed(sos("caller-1", True, 40), at(40))
    assert isinstance(u, UpdateAlarm) and u.count == 2
    # once staff resolve it, the next press is a new alarm
    assert eng.resolved("sos:caller-1", at(50))
    eng.feed(sos("caller-1", False, 55), at(55))
    [r] = eng.feed(sos("caller-1", True, 60), at(60))
    assert isinstance(r, RaiseAlarm)


def test_auto_resolve_on_clear_closes_the_alarm() -> None:
    eng = Engine(config({**SOS, "auto_resolve_on_clear": True}), SITE)
    eng.feed(sos("caller-1", True, 10), at(10))
    [c] = eng.feed(sos("caller-1", False, 30), at(30))
    assert c.auto_resolve is True
    [r] = eng.feed(sos("caller-1", True, 40), at(40))
    assert isinstance(r, RaiseAlarm)


def test_clear_for_a_device_without_alarm_says_nothing() -> None:
    eng = Engine(config(SOS), SITE)
    assert eng.feed(sos("caller-1", False, 10), at(10)) == []


def test_filters_select_devices() -> None:
    rule = {**SOS, "id": "sos_g2", "grid_cells": ["g2"]}
    eng = Engine(config(rule), SITE)
    assert eng.feed(sos("caller-1", True, 10), at(10)) == []        # h1 is in g1
    assert len(eng.feed(sos("caller-2", True, 10), at(10))) == 1
    eng = Engine(config({**SOS, "devices": ["caller-2"], "device_types": []}), SITE)
    assert eng.feed(sos("caller-1", True, 10), at(10)) == []


def test_device_in_test_mode_gives_test_records_never_alarms() -> None:
    eng = Engine(config(SOS, escalation=ESCALATION), SITE)
    eng.set_device_mode("caller-1", "test")
    out = eng.feed(sos("caller-1", True, 10), at(10))
    assert out == [TestRecord("caller-1", "sos", at(10), True)]
    assert eng.tick(at(3600)) == []
    eng.set_device_mode("caller-1", "normal")
    assert isinstance(eng.feed(sos("caller-1", True, 3700), at(3700))[0], RaiseAlarm)
    with pytest.raises(ValueError):
        eng.set_device_mode("caller-1", "party")


def test_escalation_tiers_follow_the_clock_until_acknowledged() -> None:
    eng = Engine(config(SOS, escalation=ESCALATION), SITE)
    out = eng.feed(sos("caller-1", True, 0), at(0))
    assert [type(a) for a in out] == [RaiseAlarm, Escalate]
    assert out[1].tier == 1 and out[1].tier_name == "grid_member"
    assert eng.tick(at(119)) == []
    [e2] = eng.tick(at(120))
    assert (e2.tier, e2.tier_name, e2.targets) == (2, "duty_officer", ("duty",))
    assert eng.acknowledged("sos:caller-1", at(130))
    for s in range(130, 3600, 30):
        assert eng.tick(at(s)) == []


def test_escalation_runs_to_the_last_tier_then_stops() -> None:
    eng = Engine(config(SOS, escalation=ESCALATION), SITE)
    eng.feed(sos("caller-1", True, 0), at(0))
    seen = [a for s in range(0, 3600, 5) for a in eng.tick(at(s))]
    assert [(e.tier, e.ts) for e in seen] == [(2, at(120)), (3, at(600))]


def test_escalation_respects_min_severity_and_rule_opt_out() -> None:
    minor = {**SOS, "severity": "minor"}
    eng = Engine(config(minor, escalation={**ESCALATION, "min_severity": "major"}), SITE)
    assert [type(a) for a in eng.feed(sos("caller-1", True, 0), at(0))] == [RaiseAlarm]
    eng = Engine(config({**SOS, "escalate": False}, escalation=ESCALATION), SITE)
    assert [type(a) for a in eng.feed(sos("caller-1", True, 0), at(0))] == [RaiseAlarm]
    assert eng.tick(at(1000)) == []


def test_snapshot_restore_keeps_open_alarm_and_escalation_clock() -> None:
    cfg = config(SOS, escalation=ESCALATION)
    eng = Engine(cfg, SITE)
    eng.feed(sos("caller-1", True, 0), at(0))
    snap = json.loads(json.dumps(eng.snapshot()))
    eng2 = Engine.restore(cfg, SITE, snap)
    assert eng2.tick(at(60)) == []
    [e] = eng2.tick(at(121))
    assert e.tier == 2
    [u] = eng2.feed(sos("caller-1", True, 130), at(130))
    assert isinstance(u, UpdateAlarm) and u.count == 2
    # the duplicate of the last reading before the snapshot is still recognised
    assert eng2.feed(sos("caller-1", True, 130), at(131)) == []


def test_restart_after_downtime_fires_the_overdue_tier() -> None:
    cfg = config(SOS, escalation=ESCALATION)
    eng = Engine(cfg, SITE)
    eng.feed(sos("caller-1", True, 0), at(0))
    eng2 = Engine.restore(cfg, SITE, eng.snapshot())
    out = eng2.tick(at(900))    # down for 15 minutes: the downtime counts
    assert [e.tier for e in out] == [2, 3]


def test_flapping_is_suppressed_then_cleared_once() -> None:
    rule = {**SOS, "auto_resolve_on_clear": True,
            "flapping": {"changes": 4, "window": "10m"}}
    eng = Engine(config(rule), SITE)
    out = []
    for i in range(10):
        out += eng.feed(sos("caller-1", i % 2 == 0, 10 * i), at(10 * i))
    raises = [a for a in out if isinstance(a, RaiseAlarm)]
    clears = [a for a in out if isinstance(a, ClearAlarm)]
    flaps = [a for a in out if isinstance(a, UpdateAlarm) and a.flapping]
    assert len(raises) == 3 and len(clears) == 2 and len(flaps) == 1
    assert out.index(flaps[0]) == out.index(raises[-1]) + 1   # the third raise starts it
    assert "flapping" in flaps[0].message_en
    # quiet (clear) for a whole window: one final clear
    quiet = [a for s in range(100, 690, 10) for a in eng.tick(at(s))]
    assert quiet == []
    [c] = eng.tick(at(90 + 600))
    assert isinstance(c, ClearAlarm) and c.auto_resolve and "flapping" in c.reason
    [r] = eng.feed(sos("caller-1", True, 2000), at(2000))
    assert isinstance(r, RaiseAlarm)
