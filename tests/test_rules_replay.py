"""Reading order policy, the replay function, and replay determinism (property test)."""

from __future__ import annotations

import json
from datetime import timedelta

from hypothesis import given, settings, strategies as st

from rules.actions import RaiseAlarm
from rules.engine import Engine
from rules.replay import readings_from_jsonl, replay
from rules.testing import at, config, reading, small_site

SITE = small_site(2)
RULES = config(
    {"id": "sos", "kind": "match", "when": {"kind": "sos", "value": True},
     "clear_when": {"kind": "sos", "value": False}, "auto_resolve_on_clear": True},
    {"id": "door", "kind": "held", "when": {"kind": "door_open", "value": True}, "for": "3m"},
    {"id": "hot", "kind": "threshold", "metric": "temperature", "above": 50, "hysteresis": 5,
     "for": "1m"},
    {"id": "alone", "kind": "inactivity", "threshold": "2h",
     "message": {"zh": "{explanation}", "en": "{explanation}"}},
    {"id": "sup", "kind": "supervision", "silence": "30m"},
    escalation={"tiers": [{"name": "duty", "after": "1m", "notify": ["duty"]}]})


def test_stale_duplicate_and_future_readings_change_nothing() -> None:
    eng = Engine(RULES, SITE)
    assert isinstance(eng.feed(reading("caller-1", "sos", True, 100, SITE), at(100))[0],
                      RaiseAlarm)
    before = json.dumps(eng.snapshot(), sort_keys=True)
    assert eng.feed(reading("caller-1", "sos", True, 100, SITE), at(101)) == []   # duplicate
    assert eng.feed(reading("caller-1", "sos", False, 50, SITE), at(102)) == []   # stale
    assert eng.feed(reading("caller-1", "sos", False, 9999, SITE), at(103)) == []  # future
    after = eng.snapshot()
    assert (after["stats"]["duplicate"], after["stats"]["stale"],
            after["stats"]["future"]) == (1, 1, 1)
    strip = json.loads(before)
    for snap in (strip, after):
        snap.pop("stats"), snap.pop("clock")
    assert json.dumps(after, sort_keys=True) == json.dumps(strip, sort_keys=True)


def test_replay_prints_actions_and_reports_bad_lines() -> None:
    lines = [json.dumps(reading("caller-1", "sos", True, 0, SITE).to_json()),
             "{not json",
             json.dumps({"device_id": "caller-1", "kind": "sos", "value": 3,
                         "ts": at(5).isoformat()}),
             "",
             json.dumps(reading("caller-1", "sos", False, 90, SITE).to_json())]
    errors: list = []
    out = list(replay(Engine(RULES, SITE), readings_from_jsonl(lines, errors)))
    assert [a["action"] for a in out] == ["raise_alarm", "escalate", "clear_alarm"]
    assert out[1]["ts"] == at(60).isoformat()      # T0 is a whole minute: ticks align
    assert [n for n, _ in errors] == [2, 3]
    json.dumps(out)


events = st.lists(
    st.tuples(st.integers(0, 40_000),
              st.sampled_from([("caller-1", "sos"), ("door-2", "door_open"),
                               ("motion-1", "motion"), ("smoke-2", "temperature"),
                               ("caller-2", "sos")]),
              st.integers(0, 80)),
    max_size=40)


def _readings(evs):
    out = []
    for s, (dev, kind), v in sorted(evs, key=lambda e: e[0]):
        value = float(v) if kind == "temperature" else v % 2 == 0
        out.append(reading(dev, kind, value, s, SITE))
    return out


@settings(max_examples=40, deadline=None)
@given(events, st.integers(0, 39))
def test_replay_is_deterministic_and_survives_a_restart_anywhere(evs, cut) -> None:
    rs = _readings(evs)
    end = at(45_000)
    first = list(replay(Engine(RULES, SITE), rs, until=end))
    assert first == list(replay(Engine(RULES, SITE), rs, until=end))
    # snapshot after ``cut`` readings, restore into a fresh engine, continue
    cut = min(cut, len(rs))
    eng = Engine(RULES, SITE)
    head = list(replay(eng, rs[:cut]))
    eng2 = Engine.restore(RULES, SITE, json.loads(json.dumps(eng.snapshot())))
    # the gateway resumes with the next reading (re-feeding the last one is a no-op duplicate)
    tail = list(replay(eng2, rs[max(cut - 1, 0):], until=end))
    assert head + tail == first


def test_inactivity_fires_in_replay_from_recorded_time() -> None:
    rs = [reading("motion-1", "motion", True, 0, SITE),
          reading("motion-2", "motion", True, 0, SITE)]
    rs += [reading(d, "battery", 90.0, s, SITE) for s in range(600, 3 * 3600, 600)
           for d in SITE.devices]
    out = list(replay(Engine(RULES, SITE), rs, until=at(3 * 3600)))
    raised = [a for a in out if a["action"] == "raise_alarm"]
    assert {a["household_id"] for a in raised} == {"h1", "h2"}
    assert all(a["ts"] <= (at(0) + timedelta(hours=2, minutes=1)).isoformat() for a in raised)
