"""The quiet band: threshold rules are skipped for values where they would do nothing, and
the engine's actions are exactly those of an engine that calls them for every reading."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
from hypothesis import given, settings, strategies as st

from rules.bench import _readings, bench_rules, bench_site
from rules.engine import Engine
from rules.evaluators import ThresholdEval
from rules.replay import replay
from rules.testing import at, config, reading, small_site

SITE = small_site(2)


@contextmanager
def _no_band():
    """Thresholds without a quiet band (every reading reaches them). Engines built *and fed*
    inside: the route of a device the site does not know is made at its first reading."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(ThresholdEval, "quiet_band", lambda self: None)
        yield


def test_readings_in_the_band_do_not_reach_the_threshold_rule(monkeypatch) -> None:
    seen: list[float] = []
    original = ThresholdEval.on_reading

    def spy(self, st, r, prev, t):
        seen.append(r.value)
        return original(self, st, r, prev, t)

    monkeypatch.setattr(ThresholdEval, "on_reading", spy)
    eng = Engine(config({"id": "hot", "kind": "threshold", "metric": "temperature",
                         "above": 50, "hysteresis": 5, "for": "1m"}), SITE)
    out = []
    for i, v in enumerate([20.0, 21.0, 22.0, 60.0, 48.0, 44.0, 30.0, 31.0]):
        out += eng.feed(reading("smoke-1", "temperature", v, 10 * i, SITE), at(10 * i))
        out += eng.tick(at(10 * i + 5))
    # 20 is the stream's first reading; 21 and 22 are skipped; 60 (over), 48 (inside the
    # hysteresis) and 44 (back in the band: cancels the pending alarm) reach it; 30 and 31
    # are skipped again
    assert seen == [20.0, 60.0, 48.0, 44.0]
    assert out == []      # 60 lasted 20 s of the 1 min ``for``: no alarm


def test_benchmark_noise_workload_gives_the_same_actions_with_and_without_band() -> None:
    site = bench_site(300)
    cfg = bench_rules(300, 300, seed=0)
    rs = _readings(300, 20_000, 0, "noise")
    end = rs[-1].ts
    with _no_band():
        plain = list(replay(Engine(cfg, site), rs, until=end))
    banded = list(replay(Engine(cfg, site), rs, until=end))
    assert sum(a["action"] == "clear_alarm" and "temp_h" in a["key"] for a in plain) > 20
    assert banded == plain


limits = st.tuples(st.sampled_from(["above", "below"]), st.integers(10, 70),
                   st.integers(0, 8), st.sampled_from([0, 30, 120]))
# smoke-9 is not in the site: its route is made at its first reading
events = st.lists(st.tuples(st.integers(1, 200),
                            st.sampled_from(["smoke-1", "smoke-2", "smoke-9"]),
                            st.integers(0, 80)), min_size=1, max_size=60)


def _cfg(rules, shift: int = 0):
    return config(*[{"id": f"t{i}", "kind": "threshold", "metric": "temperature",
                     side: float(limit + shift if side == "above" else limit - shift),
                     "hysteresis": float(h), "for": f"{f}s"}
                    for i, (side, limit, h, f) in enumerate(rules)])


@settings(max_examples=150, deadline=None)
@given(st.lists(limits, min_size=1, max_size=3), events, st.integers(0, 60), st.booleans())
def test_actions_equal_an_engine_without_the_band(rules, evs, cut, edit) -> None:
    cfg = _cfg(rules)
    t, rs = 0, []
    for gap, dev, v in evs:
        t += gap
        rs.append(reading(dev, "temperature", float(v), t, SITE))
    end = at(t + 600)
    with _no_band():
        expected = list(replay(Engine(cfg, SITE), rs, until=end))
    assert list(replay(Engine(cfg, SITE), rs, until=end)) == expected
    # a restart anywhere (a restored stream starts outside the band), possibly into a config
    # whose limits an installer has moved
    cut = min(cut, len(rs))
    cfg2 = _cfg(rules, 7) if edit else cfg

    def restarted() -> list[dict]:
        eng = Engine(cfg, SITE)
        head = list(replay(eng, rs[:cut]))
        eng2 = Engine.restore(cfg2, SITE, json.loads(json.dumps(eng.snapshot())))
        return head + list(replay(eng2, rs[max(cut - 1, 0):], until=end))

    with _no_band():
        plain = restarted()
    assert restarted() == plain
