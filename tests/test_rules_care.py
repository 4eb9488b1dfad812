"""Household care states (issue 15.1): 外出 away, 住院 hospital, 有人陪护 carer present.

The inactivity rule raises no inactivity alarm while a resident is away or in hospital, an
"overdue return" alarm only when the expected end passes by ``overdue_after`` with no sign
of return, and activity at home ends an away state early (``CareEnded``)."""

from __future__ import annotations

import json

import pytest

from rules.actions import CareEnded, ClearAlarm, RaiseAlarm
from rules.engine import Engine
from rules.inactivity import care_states, set_care
from rules.testing import config, small_site
from tests.test_rules_inactivity import FIXED, Sim, local

RULE = {**FIXED, "quiet_hours": None}          # 4 h, no quiet hours


def made(rule: dict | None = None) -> tuple[Sim, Engine]:
    site = small_site(1)
    eng = Engine(config(rule or RULE), site)
    sim = Sim(eng, site, local(1, 8))
    sim.until(local(1, 9))
    sim.feed("motion-1", "motion", True)                    # Mon 09:00
    return sim, eng


def kinds(actions: list) -> list:
    return [a for a in actions if isinstance(a, (RaiseAlarm, ClearAlarm, CareEnded))]


def test_away_no_alarm_during_the_trip_then_overdue_return():
    sim, eng = made()
    set_care(eng, "h1", "away", sim.now, expected_end=local(3, 18))   # back Wed 18:00
    sim.until(local(1, 9, 20))
    sim.feed("door-1", "door_open", True)                   # leaves at 09:20 (packing: stays away)
    assert care_states(eng) == {"h1": "away"}
    assert kinds(sim.until(local(3, 19, 59))) == []          # three days, no inactivity alarm
    [a] = kinds(sim.until(local(3, 20, 1)))                  # Wed 18:00 + 2 h, no sign of return
    assert isinstance(a, RaiseAlarm) and a.key == "alone:h1" and a.category == "inactivity"
    assert a.ts == local(3, 20)
    assert ("away since 01-01 09:00, expected back by 01-03 18:00: 2 h overdue, no sign of "
            "return at home") in a.message_en
    assert "外出（01-01 09:00 起，预计 01-03 18:00 返回）已超时 2小时" in a.message_zh
    # coming home clears it and ends the away state
    got = kinds(sim.feed("door-1", "door_open", True))
    assert [type(x) for x in got] == [CareEnded, ClearAlarm]
    assert got[0] == CareEnded("h1", "away", "returned", sim.now, "alone")
    assert care_states(eng) == {}


def test_activity_at_home_ends_an_away_state_early_and_the_gap_starts_there():
    sim, eng = made()
    set_care(eng, "h1", "away", sim.now, expected_end=local(5, 18))
    sim.until(local(2, 10))
    [e] = kinds(sim.feed("door-1", "door_open", True))       # back a few days early
    assert isinstance(e, CareEnded) and e.reason == "returned"
    assert kinds(sim.until(local(2, 13, 59))) == []
    [a] = kinds(sim.until(local(2, 14, 1)))                  # 4 h after the return
    assert a.ts == local(2, 14) and "no activity for 4 h (since Tue 10:00)" in a.message_en


def test_hospital_without_an_expected_end_never_alarms_until_ended_by_staff():
    sim, eng = made()
    set_care(eng, "h1", "hospital", sim.now)
    assert kinds(sim.until(local(6, 9))) == []               # five days
    set_care(eng, "h1", None, sim.now)                        # staff: discharged, home
    assert kinds(sim.until(local(6, 12, 59))) == []
    [a] = kinds(sim.until(local(6, 13, 1)))                  # watched from the end
    assert isinstance(a, RaiseAlarm) and a.ts == local(6, 13)


def test_a_carer_holds_alarms_until_the_expected_end_and_activity_does_not_end_it():
    sim, eng = made()
    set_care(eng, "h1", "carer", sim.now, expected_end=local(1, 20))
    sim.until(local(1, 12))
    assert kinds(sim.feed("motion-1", "motion", True)) == []   # the carer's, maybe
    assert care_states(eng) == {"h1": "carer"}
    [e] = kinds(sim.until(local(1, 20, 1)))
    assert e == CareEnded("h1", "carer", "expected_end", local(1, 20), "alone")
    assert kinds(sim.until(local(1, 23, 59))) == []
    [a] = kinds(sim.until(local(2, 0, 1)))                   # 4 h after the carer left
    assert isinstance(a, RaiseAlarm) and a.ts == local(2, 0)


def test_a_planned_trip_starts_at_its_start():
    sim, eng = made()
    set_care(eng, "h1", "away", sim.now, start=local(1, 15), expected_end=local(1, 20))
    [a] = kinds(sim.until(local(1, 13, 1)))                  # not away yet: alarmed as usual
    assert isinstance(a, RaiseAlarm) and a.ts == local(1, 13)
    eng.resolved(a.key, sim.now)                             # staff called: fine
    sim.until(local(1, 13, 30))
    sim.feed("motion-1", "motion", True)
    sim.until(local(1, 14, 30))
    sim.feed("door-1", "door_open", True)                   # leaves 14:30
    assert kinds(sim.until(local(1, 21, 59))) == []          # away from 15:00 (deadline 18:30)
    [b] = kinds(sim.until(local(1, 22, 1)))
    assert isinstance(b, RaiseAlarm) and "overdue" in b.message_en


def test_the_care_state_survives_a_snapshot_and_unknown_states_are_refused():
    sim, eng = made()
    set_care(eng, "h1", "away", sim.now, expected_end=local(2, 18))
    snap = json.loads(json.dumps(eng.snapshot()))
    again = Engine.restore(eng.config, eng.site, snap)
    assert care_states(again) == {"h1": "away"}
    sim.eng = again
    assert kinds(sim.until(local(2, 19, 59))) == []
    [a] = kinds(sim.until(local(2, 20, 1)))
    assert "overdue" in a.message_en
    with pytest.raises(ValueError, match="unknown care state"):
        set_care(eng, "h1", "holiday", sim.now)
