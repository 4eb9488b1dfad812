"""Today's check-ins for the console (issue 15.3): ``rules.checkin.checkins_today`` (the
engine's window and last check-in of each opted-in household, on the local day of a wall
time) through a simulated day, and a snapshot keeps it."""

from __future__ import annotations

from rules.checkin import checkins_today
from rules.engine import Engine
from tests.test_rules_checkin import CHECKIN, config, made
from tests.test_rules_inactivity import local


def _day(eng: Engine, at) -> dict:
    [row] = checkins_today(eng, at.timestamp())
    return row


def test_the_day_so_far_of_an_opted_in_household():
    sim, eng = made(dict(CHECKIN, opens="06:00"))
    sim.until(local(1, 7))
    row = _day(eng, local(1, 7))
    assert (row["household_id"], row["rule_id"], row["alarm_key"]) == ("h1", "ok_key",
                                                                       "ok_key:h1")
    assert row["opens"] == local(1, 6).timestamp() and row["by"] == local(1, 10).timestamp()
    assert row["last"] is None and row["checked_in"] is False       # due by 10:00
    sim.until(local(1, 8, 30))
    sim.feed("caller-1", "button", "single")
    row = _day(eng, local(1, 8, 31))
    assert row["checked_in"] and abs(row["last"] - local(1, 8, 30).timestamp()) < 61
    # the next day, before and after its own window: yesterday's press does not count
    sim.until(local(2, 5))
    row = _day(eng, local(2, 5))
    assert row["opens"] == local(2, 6).timestamp() and not row["checked_in"]
    assert row["last"] is not None                                  # (the last: Monday's)
    # a restart: the snapshot keeps the last check-in
    again = Engine(config(dict(CHECKIN, opens="06:00")), eng.site)
    again.load_snapshot(eng.snapshot())
    assert _day(again, local(1, 9))["checked_in"]


def test_no_check_in_rule_no_rows():
    _, eng = made({"id": "alone", "kind": "inactivity", "threshold": "12h",
                   "category": "inactivity", "message": {"zh": "z", "en": "e"}})
    assert checkins_today(eng, local(1, 9).timestamp()) == []
