"""Write a complete, valid site directory for a simulated community.

Contract: :func:`write_site` writes ``site.yaml``, ``devices.yaml``, ``rules.yaml``,
``uplinks.yaml``, ``gateway.yaml`` and ``profiles/`` (JSON profiles of the meters and entrance
access controllers, which publish JSON through their vendor's MQTT bridge) for a
:class:`~simulators.community.Community`; the directory passes ``gateway config validate``.
Residents, contacts and grid members are fictional (名字 and 138-000x-xxxx numbers); the
site's ``on_call`` numbers and ``response`` plans (call plans, guidance, board priority) are
the example site's (:func:`shipped_response`). Rules: emergency calls, smoke, device
supervision, and two inactivity rules for residents living alone — ``inactivity`` (the
learned rhythm, :data:`LEARNED`) and ``inactivity_fixed`` (a fixed timeout with quiet
hours, :data:`FIXED`; written disabled: it is the comparison the detection benchmark makes).
The fixed one keeps the quiet hours :data:`QUIET`; the learned one learns the night.

``time_scale`` > 1 (the accelerated demo) divides the inactivity and supervision durations
by it and drops quiet hours, because the gateway timestamps readings with the real clock.

A community with ``extras`` (``gateway demo``; simulators/community_extras.py) also gets the
help categories (:data:`~simulators.community_extras.HELP_CATEGORIES`), help keys on its help
callers (``help_actions``), its special-difficulty households (``special_difficulty``) with
a door lock that knows the grid member's and a volunteer's card (``visit_cards``), a
``checkin`` rule (报平安) for the households that opted in, with the window the community
chose (real time) and a response to its 未报平安 follow-up (call the resident, the contacts,
the grid member), the site profiles :data:`EXTRA_PROFILES`, and gas and carbon monoxide
rules that close the household's gas valve (``then: close_valve``) and leave their alarm open
for staff after the all-clear (``auto_resolve_on_clear: false``). Without extras nothing
of this is written (the benchmarks' sites are unchanged).

    python -m simulators.site_gen OUT_DIR [--households 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import random
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from simulators.community import Community, DeviceSpec
from simulators.community_extras import (CHECKIN_KEY, HELP_CATEGORIES, ExtraLife,
                                         grid_member_card, volunteer_card)

__all__ = ["FIXED", "LEARNED", "SOURCES", "inactivity_rules", "shipped_response", "write_site"]

#: activity that counts: not electricity (fridges draw power whether anybody moves or not)
SOURCES = ["motion", "door_open", "water_volume", "sos", "button", "access"]
#: night: no inactivity alarm before 08:00 (a gap from the evening is judged in the morning)
QUIET = {"start": "22:00", "end": "08:00"}
#: the learned baseline (rules/baseline.py): alarm once the gap passes the time by which the
#: household is usually active again after an hour like that of its last activity (+ grace),
#: never sooner than ``floor``; while the resident is out, after ``away_limit``. It learns the
#: night, so it needs no quiet hours. Chosen with the detection benchmark on seeds 1 and 0
#: (docs/benchmarks.md; grace 1 h -> 45 min with the boundary chain of issue 15.6), scored
#: on seeds 2 to 5
LEARNED = {"floor": "1.5h", "ceiling": "20h", "grace": "45m", "away_limit": "24h",
           "min_weeks": 2}
#: raise again while a gap goes on: not in the simulated community, whose residents go away
#: for days without an "away" switch (each stay away would alarm every day)
REPEAT = None
#: the fixed timeout the benchmark compares against (same quiet hours)
FIXED = {"threshold": "3h", "quiet_hours": QUIET}

_MSG_INACTIVE = {"zh": "独居老人无活动：{household_address}，{explanation}",
                 "en": "No activity of the resident living alone in {household_address}: "
                       "{explanation}"}
_SURNAMES = "王李张刘陈杨黄赵周吴徐孙马朱胡郭何高林罗"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂"
_RELATIONS = ("儿子", "女儿", "侄子", "外甥女", "邻居")


def _scaled(seconds: float, scale: float) -> str:
    return f"{max(30, round(seconds / scale))}s"


def inactivity_rules(time_scale: float = 1.0, learned: dict | None = None,
                     fixed: dict | None = None) -> list[dict]:
    """The two inactivity rules (learned baseline enabled, fixed timeout disabled)."""
    learned = {**LEARNED, **(learned or {})}
    fixed = {**FIXED, **(fixed or {})}
    base = {"kind": "inactivity", "lives_alone_only": True, "sources": SOURCES,
            "severity": "major", "message": _MSG_INACTIVE}
    if time_scale == 1.0:
        return [
            {"id": "inactivity", **base, "threshold": "12h", "baseline": learned,
             "sources_offline_after": "6h", "repeat_after": REPEAT},
            {"id": "inactivity_fixed", **base, "enabled": False, **fixed,
             "sources_offline_after": "6h", "repeat_after": REPEAT},
        ]
    # accelerated: the baseline cannot learn (it runs on the real clock); 12 h unscaled
    return [{"id": "inactivity", **base, "threshold": _scaled(12 * 3600, time_scale),
             "sources_offline_after": _scaled(6 * 3600, time_scale)}]


#: The other alarm kinds a community's detectors and panels send (the same rules as the
#: example site's rules.yaml): kind, severity, case category, message zh/en.
_HAZARDS = (
    ("gas", "critical", "gas", "燃气泄漏报警", "Gas leak detected"),
    ("carbon_monoxide", "critical", "gas", "一氧化碳报警", "Carbon monoxide detected"),
    ("heat", "critical", "fire", "温感报警（高温）", "Heat alarm (high temperature)"),
    ("fire", "critical", "fire", "火警：报警主机报告火情", "Fire reported by the alarm panel"),
    ("panic", "critical", "panic", "紧急求救（报警主机）", "Panic alarm (alarm panel)"),
    ("intrusion", "critical", "intrusion", "入侵报警（报警主机）", "Intrusion alarm (alarm panel)"),
    ("water_leak", "major", "water_leak", "水浸报警", "Water leak detected"),
)


def _rules(time_scale: float, extras: ExtraLife | None = None) -> dict:
    sos = {"id": "sos", "kind": "match", "device_types": ["emergency_caller", "alarm_panel"],
           "when": {"kind": "sos", "value": True}, "clear_when": {"kind": "sos", "value": False},
           "auto_resolve_on_clear": False, "severity": "critical", "category": "emergency_call",
           "message": {"zh": "一键呼叫：{household_address}住户按下了紧急按钮",
                       "en": "Emergency call: the resident of {household_address} pressed "
                             "the button"}}
    smoke = {"id": "smoke", "kind": "match", "when": {"kind": "smoke", "value": True},
             "clear_when": {"kind": "smoke", "value": False}, "severity": "critical",
             "category": "fire", "message": {"zh": "烟感报警：{household_address}{device_name}",
                                             "en": "Smoke detected: {device_name}, "
                                                   "{household_address}"}}
    hazards = [{"id": kind, "kind": "match", "when": {"kind": kind, "value": True},
                "clear_when": {"kind": kind, "value": False}, "severity": severity,
                "category": category, "message": {"zh": zh, "en": en},
                **({"auto_resolve_on_clear": False} if kind in ("panic", "intrusion") else {})}
               for kind, severity, category, zh, en in _HAZARDS]
    checkin = []
    if extras is not None:      # the demo: gas valves close themselves; the daily check-in
        for rule in hazards:
            if rule["category"] == "gas":
                rule["then"] = [{"action": "close_valve",
                                 "target": {"household": "same", "type": "gas_valve"}}]
                # a closed valve is for staff to see (and reopen): the card stays after the
                # all-clear, which comes within seconds at the demo's speed
                rule["auto_resolve_on_clear"] = False
        if extras.checkin:
            checkin = [{"id": "checkin", "kind": "checkin", "households": sorted(extras.checkin),
                        "opens": _hhmm(extras.checkin_opens), "by": _hhmm(extras.checkin_by),
                        "severity": "major"}]
    health = {"id": "device_health", "kind": "supervision", "battery_below": 20,
              "message": {"zh": "设备故障：{household_address}{device_name}（{fault}）",
                          "en": "Device fault: {device_name} {household_address} ({fault})"}}
    if time_scale != 1.0:
        health["silence"] = _scaled(6 * 3600, time_scale)
    return {"rules": [sos, smoke, *hazards, health, *inactivity_rules(time_scale), *checkin],
            "escalation": {"tiers": [
                {"name": "grid_member", "after": "0s", "notify": ["grid_member"]},
                {"name": "duty_officer", "after": "3m", "notify": ["duty_officer"]},
                {"name": "street_office", "after": "10m", "notify": ["street_office"]}]}}


#: the demo's response to a missed check-in (未报平安)
_CHECKIN_MISSED = {
    "priority": 3,
    "call_plan": ["resident", "contacts", "grid_member"],
    "guidance": {
        "zh": ["电话联系住户，确认平安", "无人接听：打紧急联系人", "仍联系不上：请网格员上门查看"],
        "en": ["Call the resident to make sure they are well",
               "No answer: call the emergency contacts",
               "Still no answer: send the grid member to the home"]}}


def _hhmm(minute: int) -> str:
    """A time of day, quoted (a YAML 1.1 reader takes a bare 10:09 for a number)."""
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    return DoubleQuotedScalarString(f"{minute // 60:02d}:{minute % 60:02d}")


def shipped_response() -> tuple[dict, dict]:
    """The example site's ``on_call`` numbers and ``response`` plans (site.yaml): the
    simulated community responds to its alarms as the example site does."""
    from importlib import resources

    path = resources.files("edge_config").joinpath("examples/tianlin/site.yaml")
    tree = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    return tree["on_call"], tree["response"]


def _person(rng: random.Random) -> str:
    return rng.choice(_SURNAMES) + rng.choice(_GIVEN) + rng.choice(_GIVEN)


def _cells(c: Community, rng: random.Random) -> list[dict]:
    return [{"code": code, "name": f"{c.name}第{k + 1}网格",
             "grid_member": rng.choice(_SURNAMES) + rng.choice(_GIVEN),
             "grid_member_phone": f"138-0002-{k:04d}"}
            for k, code in enumerate(c.grid_cells)]


def _site(c: Community, site_id: str) -> dict:
    rng = random.Random(f"{c.seed}:contacts")
    cells = _cells(c, rng)
    special = c.extras.special if c.extras is not None else {}
    households = []
    for k, h in enumerate(c.households):
        # every resident has a name; the phone of their own is missing now and then
        residents = [{"name": _person(rng)} for _ in range(1 if h.lives_alone else 2)]
        for i, r in enumerate(residents):
            if rng.random() < 0.85:
                r["phone"] = f"138-{1 + 2 * i:04d}-{k:04d}"
        contacts = [{"name": _person(rng), "relation": rng.choice(_RELATIONS),
                     "phone": f"1380000{k:04d}"}] if h.lives_alone else []
        households.append({"id": h.id, "address": f"模拟路100弄{h.building}号{h.room}室",
                           "building": str(h.building), "grid_cell": h.grid_cell,
                           "lives_alone": h.lives_alone,
                           **({"special_difficulty": True} if h.id in special else {}),
                           "residents": residents, "contacts": contacts})
    on_call, response = shipped_response()
    help_categories = {}
    if c.extras is not None:
        help_categories = {"help_categories": {k: {"zh": zh, "en": en}
                                               for k, (zh, en) in HELP_CATEGORIES.items()}}
        if c.extras.checkin:
            response = {**response, "checkin_missed": _CHECKIN_MISSED}
    return {"site": {"id": site_id, "name": c.name, "timezone": c.tz, "language": "zh-CN"},
            "on_call": on_call, "response": response, **help_categories,
            "grid_cells": cells, "households": households}


def _devices(c: Community) -> dict:
    extras = c.extras
    out = []
    for d in c.devices:
        row: dict[str, Any] = {"id": d.id, "type": d.type}
        if d.household:
            row["household"] = d.household
        else:
            row["grid_cell"] = d.grid_cell
        row["name"] = d.name
        if d.shape == "z2m":
            row["profile"] = f"zigbee2mqtt-{d.type.replace('_', '-')}"
            row["mqtt"] = {"zigbee2mqtt": d.zigbee}
        else:
            row["profile"] = _JSON_PROFILE.get(d.type, f"json-{d.type.replace('_', '-')}")
            row["mqtt"] = {"topic": d.topic}
        if extras is not None:
            _extra_keys(c, extras, d, row)
        out.append(row)
    return {"devices": out}


def _extra_keys(c: Community, extras: ExtraLife, d: DeviceSpec, row: dict[str, Any]) -> None:
    """The demo's help keys, 报平安 key and visit cards of device ``d`` (its ``row``)."""
    if d.id in extras.help_keys:
        row["help_actions"] = dict(extras.help_keys[d.id])
    elif d.household in extras.checkin and extras.checkin[d.household] == d.id:
        row["profile"] = "json-emergency-caller-ok"
    elif d.household in extras.special and extras.special[d.household] == d.id:
        cells = _cells(c, random.Random(f"{c.seed}:contacts"))
        k = c.grid_cells.index(d.grid_cell)
        volunteer = _person(random.Random(f"{c.seed}:volunteer:{k}"))
        row["profile"] = "json-door-reader"
        row["visit_cards"] = {grid_member_card(k): cells[k]["grid_member"],
                              volunteer_card(k): f"志愿者 {volunteer}"}


_JSON_PROFILE = {"emergency_caller": "json-emergency-caller",
                 "smoke_detector": "json-smoke-detector"}
#: JSON profiles the community's meters and access controllers need (site-local)
PROFILES = {
    "json-water-meter": {
        "id": "json-water-meter", "device_type": "water_meter", "format": "json",
        "description": "Water meter read by its vendor's bridge, JSON {volume_m3, battery}",
        "timestamp": "ts",
        "fields": {"volume_m3": {"kind": "water_volume"}, "battery": {"kind": "battery"},
                   "leak": {"kind": "water_leak"}}},
    "json-electricity-meter": {
        "id": "json-electricity-meter", "device_type": "electricity_meter", "format": "json",
        "description": "Electricity meter read by its vendor's bridge, JSON {energy_kwh, "
                       "power_w}",
        "timestamp": "ts",
        "fields": {"energy_kwh": {"kind": "energy"}, "power_w": {"kind": "power"}}},
    "json-door-access": {
        "id": "json-door-access", "device_type": "door_access", "format": "json",
        "description": "Entrance access controller, JSON {result: granted|denied, method}",
        "timestamp": "ts",
        "fields": {"result": {"kind": "access"}, "tamper": {"kind": "tamper"}}},
}
#: the demo's (``Community(extras=...)``): a caller with a 报平安 key, a household's door lock
EXTRA_PROFILES = {
    "json-emergency-caller-ok": {
        "id": "json-emergency-caller-ok", "device_type": "emergency_caller", "format": "json",
        "description": "JSON emergency caller with a check-in key (报平安): {event: sos|cancel} "
                       f"or {{key: {CHECKIN_KEY}}}, battery",
        "timestamp": "ts",
        "fields": {"sos": {"kind": "sos"},
                   "event": {"kind": "sos", "map": {"sos": True, "press": True, "pressed": True,
                                                    "alarm": True, "cancel": False,
                                                    "clear": False, "restore": False}},
                   "key": {"kind": "button", "map": {CHECKIN_KEY: CHECKIN_KEY}},
                   "battery": {"kind": "battery"}, "battery_low": {"kind": "battery_low"},
                   "tamper": {"kind": "tamper"}, "test": {"kind": "test"}}},
    "json-door-reader": {
        "id": "json-door-reader", "device_type": "door_access", "format": "json",
        "description": "A household's smart door lock and card reader, JSON {result: "
                       "granted|denied, card, battery}",
        "timestamp": "ts",
        "fields": {"result": {"kind": "access"}, "battery": {"kind": "battery"},
                   "tamper": {"kind": "tamper"}}},
}


def _dump(path: Path, data: Any, header: str, fast: bool = False) -> None:
    if fast:   # libyaml's C emitter: a site of 10,000 households in seconds, not minutes
        import yaml as pyyaml

        text = pyyaml.dump(data, Dumper=getattr(pyyaml, "CSafeDumper", pyyaml.SafeDumper),
                           allow_unicode=True, sort_keys=False, width=100,
                           default_flow_style=False)
        path.write_text(header + text, encoding="utf-8")
        return
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 100
    buf = io.StringIO()
    yaml.dump(data, buf)
    path.write_text(header + buf.getvalue(), encoding="utf-8")


def write_site(out: str | Path, community: Community, *, site_id: str = "sim-community",
               mqtt_port: int = 1883, case_url: str = "http://127.0.0.1:8700",
               time_scale: float = 1.0, fast: bool = False) -> Path:
    """Write the site directory of ``community`` to ``out`` (created); returns it.
    ``fast``: site.yaml and devices.yaml written by libyaml (same content, plainer layout;
    the benchmarks' large communities)."""
    out = Path(out)
    (out / "profiles").mkdir(parents=True, exist_ok=True)
    gen = f"# Generated by simulators/site_gen.py (seed {community.seed}); fictional people.\n"
    _dump(out / "site.yaml", _site(community, site_id), gen, fast)
    _dump(out / "devices.yaml", _devices(community), gen, fast)
    _dump(out / "rules.yaml", _rules(time_scale, community.extras),
          gen + "# Format: docs/rules.md. inactivity_fixed is the benchmark's comparison "
          "(docs/benchmarks.md).\n")
    _dump(out / "uplinks.yaml", {"case_system": {
        "url": case_url, "key_id": site_id, "secret_env": "CASE_SYSTEM_SECRET",
        "timeout_s": 5}}, gen)
    # the local broker (gateway.broker) saves every second: the alarm devices move to the
    # alarm session soon after its subscription (installed broker: 60 s, the default 150 s)
    _dump(out / "gateway.yaml", {"mqtt": {"host": "127.0.0.1", "port": mqtt_port,
                                          "keepalive_s": 30, "max_payload_bytes": 8192,
                                          "alarm_fence_delay_s": 5}}, gen)
    extra = EXTRA_PROFILES if community.extras is not None else {}
    for pid, profile in {**PROFILES, **extra}.items():
        _dump(out / "profiles" / f"{pid}.yaml", profile, gen)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulators.site_gen", description=__doc__)
    p.add_argument("out")
    p.add_argument("--households", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    path = write_site(args.out, Community(args.households, args.seed))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
