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
