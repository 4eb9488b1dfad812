"""Restart mid-run: a snapshot restored into a new engine continues exactly like the engine
that never stopped — the same actions in the same order, also when timers come due together."""

from __future__ import annotations

import json

import pytest

from rules.bench import _readings, bench_rules, bench_site
from rules.engine import Engine
from rules.replay import replay
from rules.testing import at, config, reading, small_site

SITE = small_site(2)
# Two held rules whose timers come due at the same instant: "long" (10 min) is armed first
# (t=0), "short" (5 min) later (t=300); both are due at t=600.
SIMULTANEOUS = config(
    {"id": "short", "kind": "held", "when": {"kind": "door_open", "value": True}, "for": "5m",
     "devices": ["door-1"]},
    {"id": "long", "kind": "held", "when": {"kind": "door_open", "value": True}, "for": "10m",
     "devices": ["door-2"]})


def _restored(eng: Engine, cfg, site) -> Engine:
    return Engine.restore(cfg, site, json.loads(json.dumps(eng.snapshot())))


def test_timers_due_together_fire_in_the_same_order_after_a_restore() -> None:
    rs = [reading("door-2", "door_open", True, 0, SITE),
          reading("door-1", "door_open", True, 300, SITE),
          reading("motion-1", "motion", True, 400, SITE)]
    end = at(900)
    straight = list(replay(Engine(SIMULTANEOUS, SITE), rs, until=end))
    raised = [a["rule_id"] for a in straight if a["action"] == "raise_alarm"]
    assert sorted(raised) == ["long", "short"]
    assert {a["ts"] for a in straight if a["action"] == "raise_alarm"} == {at(600).isoformat()}

    eng = Engine(SIMULTANEOUS, SITE)
    head = list(replay(eng, rs[:2]))
    tail = list(replay(_restored(eng, SIMULTANEOUS, SITE), rs[1:], until=end))
    assert head + tail == straight


def _stream(eng: Engine, readings, cfg, site, restore_every: int | None) -> list[str]:
    """Feed like the benchmark (a tick before each simulated second), restarting from a
    JSON round-tripped snapshot every ``restore_every`` readings."""
    out: list[str] = []
    second = None
    for i, r in enumerate(readings):
        if restore_every and i and i % restore_every == 0:
            eng = _restored(eng, cfg, site)
        if second is None or (r.ts - second).total_seconds() >= 1.0:
            second = r.ts
            out += [json.dumps(a.to_json(), sort_keys=True) for a in eng.tick(r.ts)]
        out += [json.dumps(a.to_json(), sort_keys=True) for a in eng.feed(r, r.ts)]
    return out


def test_benchmark_workload_is_identical_with_restarts() -> None:
    site = bench_site(300)
    cfg = bench_rules(300, 300, seed=0)
    readings = _readings(300, 12_000, 0, "noise")
    straight = _stream(Engine(cfg, site), readings, cfg, site, None)
    restarted = _stream(Engine(cfg, site), readings, cfg, site, 1_000)
    assert len(straight) > 100
    assert restarted == straight


def test_timer_owners_must_have_distinct_ranks() -> None:
    from rules.clock import TimerQueue

    class Owner:
        def __init__(self, order: int) -> None:
            self.order = order
            self.fired: list[str] = []

        def on_timer(self, key: str, due: float, t: float) -> None:
            self.fired.append(key)

    q = TimerQueue()
    a, b = Owner(3), Owner(-1)
    q.register(a)
    q.schedule(b, "x", 5.0)          # an owner not registered yet is registered on first use
    q.schedule(a, "y", 5.0)
    q.run_due(5.0)
    assert (b.fired, a.fired) == (["x"], ["y"])     # same instant: lower rank first
    with pytest.raises(ValueError, match="share the rank 3"):
        q.register(Owner(3))
