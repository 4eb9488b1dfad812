"""``Engine.adopt_store``: the engine's alarm bookkeeping made from the store after a restore
from an older snapshot (the gateway side is tests/test_alarm_truth.py)."""

from __future__ import annotations

import json

from gateway.model import Severity
from rules.actions import ClearAlarm, Escalate, RaiseAlarm
from rules.alarms import StoredAlarm
from rules.engine import Engine
from rules.testing import at, config, reading, small_site

SITE = small_site(1)
HEAT = config({"id": "hot", "kind": "threshold", "metric": "temperature", "above": 60,
               "hysteresis": 5, "severity": "major"},
              escalation={"tiers": [{"name": "grid", "after": "0s", "notify": ["grid"]},
                                    {"name": "duty", "after": "60s", "notify": ["duty"]}]})


def _feed(engine: Engine, value: float, s: float) -> list:
    return engine.feed(reading("heat-1", "temperature", value, s, SITE), at(s))


def test_a_condition_that_ended_after_the_snapshot_raises_again_when_met_again() -> None:
    engine = Engine(HEAT, SITE)
    assert any(isinstance(a, RaiseAlarm) for a in _feed(engine, 70, 0))
    snap = json.loads(json.dumps(engine.snapshot()))    # the rule holds the alarm active
    assert any(isinstance(a, ClearAlarm) for a in _feed(engine, 40, 10))   # auto-resolved
    # restart: the store has no open alarm, and the last one of the key was cleared
    restored = Engine.restore(HEAT, SITE, snap)
    restored.adopt_store({}, [], 0, [], {"hot:heat-1"})
    assert any(isinstance(a, RaiseAlarm) for a in _feed(restored, 70, 20))
    # control: staff resolved it while still hot (not cleared): no new alarm until it cools,
    # as without the restart
    restored = Engine.restore(HEAT, SITE, snap)
    restored.adopt_store({}, [], 0, [], set())
    assert not any(isinstance(a, RaiseAlarm) for a in _feed(restored, 70, 20))


def test_journal_entries_carry_escalation_due_times_across_a_restart() -> None:
    engine = Engine(HEAT, SITE)
    snap = json.loads(json.dumps(engine.snapshot()))
    actions = _feed(engine, 70, 0)
    assert [type(a) for a in actions] == [RaiseAlarm, Escalate]
    [(key, entry, version)] = engine.book.journal()
    assert entry["due"] == {"e": at(60).timestamp()} and entry["open"][4] == 1
    assert engine.book.journal() == []           # handed out once
    restored = Engine.restore(HEAT, SITE, snap)
    stored = StoredAlarm(key, "hot", Severity.MAJOR, False, 1, 1, at(0).timestamp(), False,
                         ("", ""), True)
    restored.adopt_store({key: entry}, [stored], version, [], set())
    assert restored.tick(at(59)) == []
    [esc] = restored.tick(at(61))
    assert isinstance(esc, Escalate) and esc.tier == 2
    # acknowledged in the store: no escalation
    restored = Engine.restore(HEAT, SITE, snap)
    acked = StoredAlarm(key, "hot", Severity.MAJOR, True, 1, 1, at(0).timestamp(), False,
                        ("", ""), True)
    restored.adopt_store({key: entry}, [acked], version, [], set())
    assert restored.tick(at(61)) == []
    # the alarm is still open for the rule: hotter readings update it, cooling clears it
    assert [type(a) for a in _feed(restored, 40, 70)] == [ClearAlarm]


DOOR = config({"id": "door_held", "kind": "held", "when": {"kind": "door_open", "value": True},
               "for": "5m", "category": "intrusion",
               "message": {"zh": "{device_id} 门未关 {duration}",
                           "en": "{device_id} held open for {duration}"}})


def test_a_restore_names_the_alarms_its_rules_hold_as_fired() -> None:
    """A start reads the store's ended keys only for these (``Engine.fired_keys``): a rule
    holding a fired alarm not among them would never forget it."""
    heat = Engine(HEAT, SITE)
    _feed(heat, 70, 0)                          # fired
    assert Engine.restore(HEAT, SITE, json.loads(json.dumps(heat.snapshot()))
                          ).fired_keys() == {"hot:heat-1"}
    cool = Engine(HEAT, SITE)
    _feed(cool, 50, 0)                          # under the limit: nothing held
    assert Engine.restore(HEAT, SITE, cool.snapshot()).fired_keys() == set()
    door = Engine(DOOR, SITE)
    door.feed(reading("door-1", "door_open", True, 0, SITE), at(0))     # pending, not fired
    assert door.fired_keys() == set()
    fired = [a for s in range(5, 405, 5) for a in door.tick(at(s))]     # held 5 min
    assert [type(a) for a in fired] == [RaiseAlarm]
    restored = Engine.restore(DOOR, SITE, json.loads(json.dumps(door.snapshot())))
    assert restored.fired_keys() == {"door_held:door-1"}
    # the door was closed and the alarm ended after the snapshot: the store says so
    restored.adopt_store({}, [], 0, [], {"door_held:door-1"})
    assert restored.fired_keys() == set()
    # open again for 5 min: a new alarm (the rule forgot the old one)
    again = restored.feed(reading("door-1", "door_open", True, 1000, SITE), at(1000))
    again += [a for s in range(1005, 1405, 5) for a in restored.tick(at(s))]
    assert [type(a) for a in again] == [RaiseAlarm]
