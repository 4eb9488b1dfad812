"""Daily check-in 报平安 (issue 15.3): residents who opted in press any caller key once a day
before the agreed local time; a missed check-in raises a follow-up of its own category,
escalated like an alarm; a later check-in clears it; away or in hospital: not expected."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from rules.actions import ClearAlarm, Escalate, RaiseAlarm, UpdateAlarm
from rules.engine import Engine
from rules.inactivity import set_care
from rules.spec import RulesConfig
from rules.testing import small_site
from tests.test_rules_inactivity import MSG, Sim, local

CHECKIN = {"id": "ok_key", "kind": "checkin", "households": ["h1"], "by": "10:00"}
ALONE = {"id": "alone", "kind": "inactivity", "threshold": "12h", "category": "inactivity",
         "message": MSG}
ESCALATION = {"tiers": [{"name": "grid_member", "after": "0s", "notify": ["grid_member"]}]}


def config(*rules: dict) -> RulesConfig:
    return RulesConfig.model_validate({"rules": list(rules), "escalation": ESCALATION})


def made(*rules: dict) -> tuple[Sim, Engine]:
    site = small_site(2)
    eng = Engine(config(*(rules or (CHECKIN,))), site)
    return Sim(eng, site, local(1, 6)), eng


def picked(actions: list) -> list:
    return [a for a in actions if isinstance(a, (RaiseAlarm, UpdateAlarm, ClearAlarm,
                                                  Escalate))]


def test_a_press_before_the_time_is_the_day_s_check_in():
    sim, _ = made()
    sim.until(local(1, 8))
    assert picked(sim.feed("caller-1", "button", "single")) == []
    assert picked(sim.until(local(2, 9, 0))) == []          # Monday: checked in


def test_a_missed_check_in_is_a_follow_up_escalated_like_an_alarm_and_cleared_by_a_press():
    sim, eng = made()
    sim.until(local(1, 8))
    sim.feed("caller-1", "button", "single")                 # Monday's
    assert picked(sim.until(local(2, 9, 59))) == []
    got = picked(sim.until(local(2, 10, 1)))                 # Tuesday: none by 10:00
    raised = [a for a in got if isinstance(a, RaiseAlarm)]
    assert [(a.key, a.category, a.severity.value, a.household_id, a.ts) for a in raised] == [
        ("ok_key:h1", "checkin_missed", "major", "h1", local(2, 10))]
    assert raised[0].message_en == ("No check-in from h1: no check-in before 10:00 today "
                                    "(last: 01-01 08:00); call the resident")
    assert "未报平安" in raised[0].message_zh
    assert [e.tier_name for e in got if isinstance(e, Escalate)] == ["grid_member"]
    [c] = picked(sim.feed("caller-1", "sos", True))          # any key counts, late
    assert isinstance(c, ClearAlarm) and c.key == "ok_key:h1"
    assert picked(sim.until(local(3, 9))) == []
    # households that did not opt in are never asked (h2 has a caller too)
    assert all(a.household_id == "h1" for a in sim.out if isinstance(a, RaiseAlarm))
    del eng


def test_away_or_in_hospital_no_check_in_is_expected():
    sim, eng = made(CHECKIN, ALONE)
    sim.until(local(1, 8))
    set_care(eng, "h1", "hospital", sim.now)
    assert [a for a in picked(sim.until(local(3, 11))) if a.key.startswith("ok_key")] == []
    set_care(eng, "h1", None, sim.now)
    got = picked(sim.until(local(4, 10, 1)))
    assert [a.key for a in got if isinstance(a, RaiseAlarm) and a.rule_id == "ok_key"] == [
        "ok_key:h1"]


def test_away_without_an_inactivity_rule_no_check_in_is_expected_either():
    """The care state counts for the check-in also where no inactivity rule watches the
    household (the console's 报平安 page says "not asked" then: the rule must agree)."""
    sim, eng = made(CHECKIN)
    sim.until(local(1, 8))
    set_care(eng, "h1", "away", sim.now)
    assert picked(sim.until(local(3, 11))) == []
    set_care(eng, "h1", None, sim.now)
    assert [a.key for a in picked(sim.until(local(4, 10, 1)))
            if isinstance(a, RaiseAlarm)] == ["ok_key:h1"]


def test_the_day_s_state_survives_a_snapshot():
    sim, eng = made()
    sim.until(local(1, 8))
    sim.feed("caller-1", "button", "single")
    again = Engine.restore(eng.config, eng.site, json.loads(json.dumps(eng.snapshot())))
    sim.eng = again
    assert picked(sim.until(local(2, 9, 59))) == []
    assert [a.key for a in picked(sim.until(local(2, 10, 1)))
            if isinstance(a, RaiseAlarm)] == ["ok_key:h1"]


def test_the_rule_needs_households_and_opens_before_by():
    with pytest.raises(ValidationError, match="households"):
        config({**CHECKIN, "households": []})
    with pytest.raises(ValidationError, match="'opens' must come before 'by'"):
        config({**CHECKIN, "opens": "11:00"})
