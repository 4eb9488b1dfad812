"""无法监护 (cannot watch) is not 无活动 (did nothing): issue 15.2.

When every activity source of a household is silent by its supervision, the inactivity rule
raises a cannot_watch alarm (its own category, the rule's severity, escalated) and no
inactivity alarm that claims the resident was inactive; a deadline that passes while the
sources may be dead is held until a source reports or they are all found silent."""

from __future__ import annotations

from datetime import datetime, timedelta

from rules.actions import ClearAlarm, Escalate, RaiseAlarm, RaiseFault
from rules.engine import Engine
from rules.inactivity import watch_warnings
from rules.site import DeviceInfo, HouseholdInfo, SiteIndex
from rules.testing import config, small_site
from tests.test_rules_inactivity import MSG, Sim, local

SOURCES = ("caller-1", "motion-1", "door-1", "water-1")
ESCALATION = {"tiers": [{"name": "grid_member", "after": "0s", "notify": ["grid_member"]},
                        {"name": "duty_officer", "after": "3m", "notify": ["duty_officer"]}]}
HEALTH = {"id": "health", "kind": "supervision", "category": "device_fault",
          "message": {"zh": "{device_id} {fault}", "en": "{device_id} {fault}"}}
ALONE = {"id": "alone", "kind": "inactivity", "threshold": "4h", "category": "inactivity",
         "message": MSG}


class Run(Sim):
    """Ticks every minute; ``beats`` devices send a battery reading every ``every`` s, those
    in ``dead`` only up to ``dead_at`` (their reports stop there: dead sensors)."""

    def until(self, end: datetime, beats=SOURCES, every: float = 1800.0,  # type: ignore[override]
              dead_at: datetime | None = None, dead: tuple[str, ...] = SOURCES) -> list:
        got = []
        while self.now < end:
            self.now += timedelta(minutes=1)
            if int(self.now.timestamp()) % int(every) == 0:
                for d in beats:
                    if dead_at is None or self.now <= dead_at or d not in dead:
                        got += self.eng.feed(self._r(d, "battery", 90.0), self.now)
            got += self.eng.tick(self.now)
        self.out += got
        return got


def raised(actions: list, category: str | None = None) -> list:
    return [a for a in actions if isinstance(a, RaiseAlarm)
            and (category is None or a.category == category)]


def test_all_sensors_silent_at_nine_give_cannot_watch_before_any_inactivity_deadline():
    """The issue's scenario: supervision flags each source silent from 10:01 (silence 1 h);
    the inactivity deadline would be 13:00 (4 h after the last activity at 09:00)."""
    site = small_site(1)
    eng = Engine(config({**HEALTH, "silence": "1h"}, ALONE, escalation=ESCALATION), site)
    run = Run(eng, site, local(1, 7))
    run.until(local(1, 9))
    run.feed("motion-1", "motion", True)                     # the last activity: 09:00
    got = run.until(local(1, 18), dead_at=local(1, 9))       # nothing reports after 09:00
    silent = [a for a in got if isinstance(a, RaiseFault) and a.fault == "silent"]
    assert {a.device_id for a in silent} >= set(SOURCES)
    assert max(a.ts for a in silent if a.device_id in SOURCES) <= local(1, 10, 1)
    [cw] = raised(got)                                       # one alarm, and it is not inactivity
    assert cw.category == "cannot_watch" and cw.key == "alone:h1:cannot_watch"
    assert cw.rule_id == "alone" and cw.severity.value == "major" and cw.device_id is None
    assert local(1, 10) <= cw.ts <= local(1, 10, 1)          # before 13:00
    assert "every activity sensor is silent" in cw.message_en and "无法监护" in cw.message_zh
    assert "h1" in cw.message_en
    tiers = [a for a in got if isinstance(a, Escalate) and a.key == cw.key]
    assert [e.tier_name for e in tiers] == ["grid_member", "duty_officer"]   # like an alarm
    assert raised(got, "inactivity") == []


def test_sensors_that_never_reported_are_not_said_to_have_reported():
    """A home whose sensors never sent anything since watching began: 无法监护 says so,
    not "the last report N ago" (the night-shift walk read 最近一次上报在 3分钟 前 for
    sensors the device page shows as 从未)."""
    site = small_site(1)
    eng = Engine(config({**HEALTH, "silence": "1h"}, ALONE, escalation=ESCALATION), site)
    run = Run(eng, site, local(1, 7))
    [cw] = raised(run.until(local(1, 9), beats=()))
    assert cw.category == "cannot_watch"
    assert "开始监护 1小时 以来从未上报" in cw.message_zh and "最近一次" not in cw.message_zh
    assert "none has reported in the 1 h since watching began" in cw.message_en


def test_sensors_back_clear_cannot_watch_and_the_gap_restarts_from_their_return():
    site = small_site(1)
    eng = Engine(config({**HEALTH, "silence": "1h"}, ALONE, escalation=ESCALATION), site)
    run = Run(eng, site, local(1, 7))
    run.until(local(1, 9))
    run.feed("motion-1", "motion", True)
    run.until(local(1, 14), dead_at=local(1, 9))
    got = run.until(local(1, 14, 30))                        # heartbeats again at 14:30
    [c] = [a for a in got if isinstance(a, ClearAlarm)]
    assert c.key == "alone:h1:cannot_watch" and not c.auto_resolve
    assert raised(run.until(local(1, 18, 29))) == []
    [a] = raised(run.until(local(1, 18, 32)))                # 4 h after the return at 14:30
    assert a.category == "inactivity" and a.key == "alone:h1"


def test_default_silences_hold_an_earlier_deadline_until_the_sources_are_silent():
    """Default silence allowances (water meter 1 h, the others 3 h) and a 2 h threshold: the
    deadline (10:55) passes while even the freshest report (09:00) is older than the
    water meter's allowance: held, and 无法监护 at 12:00; never an inactivity alarm."""
    site = small_site(1)
    eng = Engine(config(HEALTH, {**ALONE, "threshold": "2h"}), site)
    run = Run(eng, site, local(1, 7))
    run.until(local(1, 8, 55))
    run.feed("motion-1", "motion", True)
    got = run.until(local(1, 16), dead_at=local(1, 9))
    [cw] = raised(got)
    assert cw.category == "cannot_watch" and local(1, 12) <= cw.ts <= local(1, 12, 1)


def test_a_held_deadline_raises_as_soon_as_a_source_reports():
    """Only the water meter died (08:30); the resident fell at 09:50. The others report every
    2 h (10:00, 12:00): the 11:50 deadline is held (the freshest report, 10:00, is older
    than the water meter's 1 h allowance), and raised at the 12:00 report."""
    site = small_site(1)
    eng = Engine(config(HEALTH, {**ALONE, "threshold": "2h"}), site)
    run = Run(eng, site, local(1, 7))
    run.until(local(1, 9, 50), every=7200.0, dead_at=local(1, 8, 30), dead=("water-1",))
    run.feed("motion-1", "motion", True)
    got = run.until(local(1, 13), every=7200.0, dead_at=local(1, 8, 30), dead=("water-1",))
    [a] = raised(got)
    assert a.category == "inactivity" and a.ts == local(1, 12)
    assert "no activity for 2 h 10 min" in a.message_en


def test_a_fresh_source_keeps_the_deadline_on_time():
    site = small_site(1)
    eng = Engine(config(HEALTH, {**ALONE, "threshold": "2h"}), site)
    run = Run(eng, site, local(1, 7))
    run.until(local(1, 8, 55))
    run.feed("motion-1", "motion", True)
    [a] = raised(run.until(local(1, 11)))                    # heartbeats every 30 min
    assert a.category == "inactivity" and local(1, 10, 55) <= a.ts <= local(1, 10, 56)


def test_cannot_watch_null_keeps_the_minor_fault():
    site = small_site(1)
    rule = {**ALONE, "cannot_watch": None}
    eng = Engine(config({**HEALTH, "silence": "1h"}, rule), site)
    run = Run(eng, site, local(1, 7))
    run.until(local(1, 9))
    got = run.until(local(1, 18), dead_at=local(1, 9))
    assert raised(got) == []
    assert [a.key for a in got if isinstance(a, RaiseFault) and a.household_id
            and a.device_id is None] == ["alone:h1:sources_offline"]


def test_validation_warns_when_a_deadline_can_come_before_the_sources_are_found_silent():
    site = small_site(2)                                      # water meters: 1 h allowance
    assert watch_warnings(Engine(config(HEALTH, ALONE), site)) == []
    [w] = watch_warnings(Engine(config(HEALTH, {**ALONE, "threshold": "30m"}), site))
    assert "rule 'alone': in 2 household(s)" in w and "cannot_watch" in w
    # motion sensors only (3 h allowance) and a learned floor of 1.5 h
    hs = [HouseholdInfo("h1", "g1", lives_alone=True)]
    ds = [DeviceInfo("motion-1", "motion_sensor", "h1", "g1")]
    lone = SiteIndex.build(ds, hs)
    learned = {**ALONE, "threshold": "12h", "baseline": {"floor": "1.5h"}}
    [w] = watch_warnings(Engine(config(HEALTH, learned), lone))
    assert "1 h 30 min after the last activity" in w and "3 h" in w and "baseline floor" in w
    # without supervision, sources count as silent after sources_offline_after (6 h)
    [w] = watch_warnings(Engine(config(ALONE), lone))
    assert "6 h" in w
    assert watch_warnings(Engine(config({**ALONE, "sources_offline_after": "3h"}), lone)) == []


def test_config_validate_prints_the_warning(capsys):
    """`gateway config validate` on the example site (no supervision rule: its sources are
    found silent only after sources_offline_after, 6 h; the learned floor is 1.5 h)."""
    import argparse

    from gateway.cli import cmd_config_validate

    assert cmd_config_validate(argparse.Namespace(dir="edge_config/examples/tianlin")) == 0
    err = capsys.readouterr().err
    assert "warning: rules.yaml: rule 'inactivity'" in err and "无法监护" in err


def test_the_case_of_a_cannot_watch_alarm_is_a_device_fault():
    """The case contract has no 无法监护: the forwarder sends it as device_fault."""
    from gateway.forwarder import to_case_create

    payload = {"site_id": "tianlin-07", "grid_cell_code": "310104-012-03",
               "household": {"id": "h-7-101", "address": "田林路200弄7号101室"},
               "category": "cannot_watch", "severity": "major", "title": "无法监护",
               "description": "every activity sensor is silent",
               "occurred_at": "2024-05-06T02:10:00+00:00", "gateway_alarm_id": 12,
               "callback_url": None, "idempotency_key": "tianlin-07-abc-12-0", "sequence": 0}
    assert to_case_create(payload).category.value == "device_fault"
    assert to_case_create({**payload, "category": "no_such"}).category.value == "other"


def test_site_yaml_may_give_cannot_watch_its_own_call_plan(tmp_path):
    """无法监护 is a category an inactivity rule raises: site.yaml's response may name it."""
    import shutil

    from gateway.site import load_site
    from tests.support import EXAMPLE

    d = tmp_path / "site"
    shutil.copytree(EXAMPLE, d)
    text = (d / "site.yaml").read_text(encoding="utf-8")
    (d / "site.yaml").write_text(text.replace("response:\n", "response:\n  cannot_watch:\n"
                                              "    priority: 3\n"
                                              "    call_plan: [resident, grid_member]\n", 1),
                                 encoding="utf-8")
    site = load_site(d)
    assert [s for s in site.site.response["cannot_watch"].call_plan] == ["resident",
                                                                          "grid_member"]
