"""rules/index.py: a device's route is what asking every rule gives (docs/benchmarks.md,
"ready": the route of each set of accepting rules is made once and shared)."""

from __future__ import annotations

from rules.engine import Engine
from rules.site import DeviceInfo
from rules.testing import config, small_site

MSG = {"zh": "{device_id}", "en": "{device_id}"}
RULES = [
    {"id": "sos", "kind": "match", "when": {"kind": "sos", "value": True}},
    {"id": "smoke", "kind": "match", "when": {"kind": "smoke", "value": True},
     "clear_when": {"kind": "smoke", "value": False}},
    {"id": "one", "kind": "match", "devices": ["gas-2"], "when": {"kind": "gas", "value": True}},
    {"id": "home", "kind": "match", "households": ["h3"],
     "when": {"kind": "water_leak", "value": True}},
    {"id": "cell", "kind": "match", "grid_cells": ["g2"],
     "when": {"kind": "door_open", "value": True}},
    {"id": "types", "kind": "match", "device_types": ["motion_sensor", "door_contact"],
     "when": {"kind": "tamper", "value": True}},
    {"id": "hot", "kind": "threshold", "metric": "temperature", "above": 60,
     "hysteresis": 5},
    {"id": "health", "kind": "supervision", "category": "device_fault", "message": MSG},
    {"id": "alone", "kind": "inactivity", "threshold": "4h", "category": "inactivity",
     "households": ["h1", "h2", "h4"], "message": MSG},
    {"id": "ok_key", "kind": "checkin", "households": ["h1"], "by": "10:00"},
]


def _asked_all(engine: Engine, d: DeviceInfo) -> dict:
    """The route as asking every evaluator gives it, in rule order."""
    accepted = [ev for ev in engine.evaluators if ev.accepts(d)]
    every = tuple(ev for ev in accepted if ev.kinds is None)
    out: dict = {}
    for ev in accepted:
        for k in ev.kinds or ():
            out.setdefault(k, tuple(e for e in accepted if e.kinds is None or k in e.kinds))
    out[None] = every
    return out


def test_every_device_gets_the_route_of_asking_every_rule_and_equal_routes_are_shared():
    site = small_site(4)
    engine = Engine(config(*RULES), site)
    index = engine._index                                   # noqa: SLF001
    devices = [*site.devices.values(), DeviceInfo("stranger", "smoke_detector"),
               DeviceInfo("gas-2", "gas_detector"), DeviceInfo("x", "motion_sensor", "h9", "g2")]
    seen: dict = {}
    for d in devices:
        route = index.routes_for(d)
        assert route == _asked_all(engine, d), d
        assert list(route) == list(_asked_all(engine, d)), d      # the kinds' order too
        key = tuple((k, v) for k, v in route.items())
        assert seen.setdefault(key, route) is route               # one object per route
    assert len(seen) < len(devices)


def test_only_rules_without_filter_and_with_the_plain_accepts_are_not_asked():
    engine = Engine(config(*RULES), small_site(4))
    never_asked = {ev.rule.id for ev in engine.evaluators if ev.accepts_every_device()}
    assert never_asked == {"sos", "smoke", "hot", "health"}
