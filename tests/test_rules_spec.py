"""Validation of the rules section: precise error locations, durations, references."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st
from pydantic import ValidationError

from rules.durations import format_duration, parse_duration
from rules.spec import RulesConfig, check_references

MSG = {"zh": "告警 {device_id}", "en": "alarm {device_id}"}


def errors(data: dict) -> dict[tuple, str]:
    with pytest.raises(ValidationError) as exc:
        RulesConfig.model_validate(data)
    return {e["loc"]: e["msg"] for e in exc.value.errors()}


def rule(**kw) -> dict:
    return {"id": "r", "kind": "match", "category": "fire", "message": MSG,
            "when": {"kind": "smoke", "value": True}, **kw}


def test_unknown_kind_and_unknown_key_are_located() -> None:
    errs = errors({"rules": [rule(), {**rule(id="x"), "kind": "magic"},
                             rule(id="y", colour="red")]})
    assert "magic" in errs[("rules", 1)]
    assert errs[("rules", 2, "match", "colour")] == "Extra inputs are not permitted"


def test_bad_durations_are_errors_with_the_accepted_forms() -> None:
    errs = errors({"rules": [{"id": "d", "kind": "held", "category": "intrusion",
                              "message": MSG, "when": {"kind": "door_open", "value": True},
                              "for": "5 minutes"}]})
    assert "use a number with a unit" in errs[("rules", 0, "held", "for")]


def test_duplicate_ids_point_at_the_second_rule() -> None:
    errs = errors({"rules": [rule(id="a"), rule(id="b"), rule(id="a")]})
    assert list(errs) == [("rules", 2, "match", "id")]
    assert errs[("rules", 2, "match", "id")] == "duplicate rule id 'a'"


def test_impossible_thresholds() -> None:
    base = {"id": "t", "kind": "threshold", "category": "gas", "message": MSG,
            "metric": "gas_concentration"}
    assert "outside the possible range" in " ".join(errors({"rules": [{**base, "above": 150}]})
                                                    .values())
    assert "exactly one" in " ".join(errors({"rules": [{**base, "above": 5, "below": 2}]})
                                     .values())
    assert "not a numeric kind" in " ".join(errors({"rules": [{**base, "metric": "smoke",
                                                                "above": 1}]}).values())
    assert "outside" in " ".join(errors({"rules": [{**base, "above": 3, "hysteresis": 5}]})
                                 .values())


def test_value_type_must_fit_the_kind_and_templates_are_checked() -> None:
    errs = errors({"rules": [rule(when={"kind": "sos", "value": "yes"}),
                             rule(id="m", message={"zh": "{oops}", "en": "x"})]})
    assert "bool" in errs[("rules", 0, "match", "when")]
    assert "unknown placeholder" in errs[("rules", 1, "match", "message", "zh")]


def test_escalation_tiers_must_increase() -> None:
    errs = errors({"escalation": {"tiers": [{"name": "a", "after": "5m", "notify": ["x"]},
                                            {"name": "b", "after": "1m", "notify": ["y"]}]}})
    assert "must come after" in errs[("escalation", "tiers")]


def test_unknown_device_type_and_quiet_hours() -> None:
    errs = errors({"rules": [rule(device_types=["toaster"]),
                             {"id": "i", "kind": "inactivity", "message": MSG,
                              "quiet_hours": {"start": "25:00", "end": "07:00"}}]})
    assert "unknown device type" in errs[("rules", 0, "match", "device_types")]
    assert "HH:MM" in errs[("rules", 1, "inactivity", "quiet_hours", "start")]


def test_check_references_gives_yaml_paths() -> None:
    cfg = RulesConfig.model_validate({"rules": [
        rule(devices=["d1", "ghost"], households=["h9"], grid_cells=["g1"])]})
    assert check_references(cfg, {"d1"}, {"h1"}, {"g1"}) == [
        (("rules", 0, "devices", 1), "rule 'r': unknown device 'ghost'"),
        (("rules", 0, "households", 0), "rule 'r': unknown household 'h9'")]


@given(st.integers(0, 10**6))
def test_durations_round_trip_through_text(seconds: int) -> None:
    assert parse_duration(f"{seconds}s") == seconds
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    assert parse_duration(f"{h}h{m}m{s}s") == seconds
    assert format_duration(seconds)   # always renders something


@given(st.text(max_size=12))
def test_garbage_durations_raise_value_error_only(text: str) -> None:
    try:
        v = parse_duration(text)
    except ValueError:
        return
    assert v >= 0
