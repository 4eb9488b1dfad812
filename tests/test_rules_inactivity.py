"""Inactivity of residents living alone, and device supervision faults."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from rules.actions import ClearAlarm, ClearFault, RaiseAlarm, RaiseFault
from rules.engine import Engine
from rules.site import DeviceInfo, HouseholdInfo, SiteIndex
from rules.testing import T0, config, reading, small_site

SH = ZoneInfo("Asia/Shanghai")
MSG = {"zh": "{household_id}：{explanation}", "en": "{household_id}: {explanation}"}
FIXED = {"id": "alone", "kind": "inactivity", "threshold": "4h", "category": "inactivity",
         "quiet_hours": {"start": "22:00", "end": "07:00"}, "message": MSG}


def local(day: int, hh: int, mm: int = 0) -> datetime:
    """Local Shanghai time on 2024-01-(day) (1 = Monday)."""
    return datetime(2024, 1, day, hh, mm, tzinfo=SH)


class Sim:
    """Drives an engine like the gateway does: ticks every ``step`` seconds."""

    def __init__(self, eng: Engine, site: SiteIndex, start: datetime, step: float = 60.0):
        self.eng, self.site, self.now, self.step = eng, site, start, timedelta(seconds=step)
        self.out: list = []

    def until(self, end: datetime, heartbeat: float | None = 1800.0) -> list:
        got = []
        while self.now < end:
            self.now += self.step
            if heartbeat and int(self.now.timestamp()) % int(heartbeat) == 0:
                for d in self.site.devices:
                    got += self.eng.feed(self._r(d, "battery", 90.0), self.now)
            got += self.eng.tick(self.now)
        self.out += got
        return got

    def feed(self, device: str, kind: str, value) -> list:
        got = self.eng.feed(self._r(device, kind, value), self.now)
        self.out += got
        return got

    def _r(self, device: str, kind: str, value):
        s = (self.now - T0).total_seconds()
        return reading(device, kind, value, s, self.site)


def alarms(actions: list) -> list:
    return [a for a in actions if isinstance(a, (RaiseAlarm, ClearAlarm, RaiseFault,
                                                 ClearFault))]


def test_quiet_hours_over_midnight_are_not_counted() -> None:
    site = small_site(1)
    sim = Sim(Engine(config(FIXED), site), site, local(1, 20, 0))
    sim.until(local(1, 21, 0))
    sim.feed("motion-1", "motion", True)                 # last activity Mon 21:00
    assert alarms(sim.until(local(2, 9, 59))) == []      # 1 h before 22:00 + 3 h after 07:00
    [a] = alarms(sim.until(local(2, 10, 1)))
    assert isinstance(a, RaiseAlarm) and a.key == "alone:h1" and a.device_id is None
    assert a.ts == local(2, 10, 0)
    assert a.message_en == ("h1: no activity for 13 h (since Mon 21:00); limit 4 h not "
                            "counting quiet hours 22:00–07:00")
    assert "13小时" in a.message_zh
    # activity ends it; a new gap starts
    [c] = alarms([*sim.feed("door-1", "door_open", True)])
    assert isinstance(c, ClearAlarm) and c.reason == "activity resumed"


def test_meter_increments_are_activity_but_a_steady_meter_is_not() -> None:
    site = small_site(1)
    sim = Sim(Engine(config({**FIXED, "quiet_hours": None}), site), site, local(1, 8))
    sim.feed("water-1", "water_volume", 10.0)
    sim.until(local(1, 10))
    sim.feed("water-1", "water_volume", 10.0)            # no increase: not activity
    sim.until(local(1, 11))
    sim.feed("water-1", "water_volume", 10.2)            # tap used at 11:00
    assert alarms(sim.until(local(1, 14, 59))) == []
    [a] = alarms(sim.until(local(1, 15, 1)))
    assert "since Mon 11:00" in a.message_en


def test_only_households_living_alone_are_watched() -> None:
    hs = [HouseholdInfo("h1", "g1", lives_alone=False)]
    ds = [DeviceInfo("motion-1", "motion_sensor", "h1", "g1")]
    site = SiteIndex.build(ds, hs)
    sim = Sim(Engine(config(FIXED), site), site, local(1, 8))
    assert alarms(sim.until(local(3, 8))) == []


def test_offline_sources_give_a_fault_not_an_inactivity_alarm() -> None:
    site = small_site(1)
    rule = {**FIXED, "sources_offline_after": "2h", "quiet_hours": None}
    sim = Sim(Engine(config(rule), site), site, local(1, 8))
    got = alarms(sim.until(local(1, 14), heartbeat=None))   # nothing at all reports
    [f] = got
    assert isinstance(f, RaiseFault) and f.fault == "sources_offline"
    assert f.key == "alone:h1:sources_offline" and "silent for 2 h" in f.message_en
    # a heartbeat brings them back: fault cleared at the next scan, the gap restarts there
    assert alarms(sim.feed("motion-1", "battery", 80.0)) == []
    [c] = alarms(sim.until(local(1, 14, 1), heartbeat=None))
    assert isinstance(c, ClearFault) and c.key == f.key
    assert alarms(sim.until(local(1, 17, 59), heartbeat=900)) == []
    [a] = alarms(sim.until(local(1, 18, 1), heartbeat=900))
    assert isinstance(a, RaiseAlarm)


def test_wall_clock_jump_does_not_fire_inactivity() -> None:
    site = small_site(1)
    eng = Engine(config({**FIXED, "quiet_hours": None}), site)
    sim = Sim(eng, site, local(1, 8))
    sim.feed("motion-1", "motion", True)
    sim.until(local(1, 9))
    # NTP steps the clock forward by 6 hours, then it runs normally
    sim.now += timedelta(hours=6)
    assert alarms(sim.until(local(1, 17, 59))) == []     # only 3 h of real time since 08:00
    [a] = alarms(sim.until(local(1, 18, 2)))
    assert isinstance(a, RaiseAlarm)
    assert eng.clock.steps == 1
    # and a backwards step neither fires nor freezes the timers for good
    sim.feed("motion-1", "motion", True)
    assert eng.resolved("alone:h1", sim.now)      # staff close it: the next gap is a new alarm
    sim.now -= timedelta(hours=6)
    assert alarms(sim.until(local(1, 16, 2))) == []    # 4 h after 12:02, the step absorbed
    assert [type(a) for a in alarms(sim.until(local(1, 16, 5)))] == [RaiseAlarm]


def test_restart_mid_gap_keeps_the_last_activity() -> None:
    site = small_site(1)
    cfg = config({**FIXED, "quiet_hours": None})
    eng = Engine(cfg, site)
    sim = Sim(eng, site, local(1, 8))
    sim.feed("motion-1", "motion", True)
    sim.until(local(1, 10))
    snap = json.loads(json.dumps(eng.snapshot()))
    eng2 = Engine.restore(cfg, site, snap)
    sim2 = Sim(eng2, site, local(1, 11))                  # down for an hour
    assert alarms(sim2.until(local(1, 11, 59))) == []
    [a] = alarms(sim2.until(local(1, 12, 1)))
    assert a.ts <= local(1, 12, 1) and "since Mon 08:00" in a.message_en


def test_learned_baseline_alarms_earlier_and_explains_itself() -> None:
    site = small_site(1)
    rule = {**FIXED, "quiet_hours": {"start": "23:00", "end": "05:00"}, "threshold": "16h",
            "baseline": {"floor": "4h", "ceiling": "20h", "grace": "1h", "min_weeks": 2}}
    eng = Engine(config(rule), site)
    sim = Sim(eng, site, local(1, 0), step=300.0)
    # two weeks of a regular life: up at 07:xx, active every hour until 21:xx
    for day in range(1, 15):
        for hh in range(7, 22):
            sim.until(local(day, hh, 10))
            sim.feed("motion-1", "motion", True)
    sim.until(local(15, 7))
    assert eng.evaluators[0].baseline.learned(0, 2)
    assert alarms(sim.out) == []
    # Monday 15th: last activity 21:10 Sunday... nothing Monday morning
    got = alarms(sim.until(local(15, 12)))
    [a] = got
    assert isinstance(a, RaiseAlarm)
    assert a.ts == local(15, 9, 0)       # usually active by 08:00, + 1 h grace
    assert a.message_en == ("h1: no activity for 11 h 50 min (since Sun 21:10); usually "
                            "active by 08:00 on Mondays")
    assert "平时周一 08:00 前会有活动" in a.message_zh


def test_supervision_faults_are_kept_apart_from_alarms() -> None:
    site = small_site(1)
    sup = {"id": "health", "kind": "supervision", "devices": ["smoke-1"], "silence": "1h",
           "message": {"zh": "{device_id} {fault}", "en": "{device_id}: {fault} {value}"}}
    eng = Engine(config(sup), site)
    sim = Sim(eng, site, local(1, 8))
    sim.until(local(1, 8, 30), heartbeat=None)
    [b] = sim.feed("smoke-1", "battery", 15.0)
    assert isinstance(b, RaiseFault) and b.fault == "battery_low" and b.rule_id == "health"
    assert sim.feed("smoke-1", "battery", 22.0) == []           # inside the 5 % hysteresis
    assert [type(a) for a in sim.feed("smoke-1", "battery", 26.0)] == [ClearFault]
    [t] = sim.feed("smoke-1", "tamper", True)
    assert t.fault == "tamper" and t.key == "health:smoke-1:tamper"
    got = alarms(sim.until(local(1, 10), heartbeat=None))
    assert [(type(a), a.key) for a in got] == [(RaiseFault, "health:smoke-1:silent")]
    assert got[0].ts == local(1, 9, 31)                          # 1 h after its last reading
    sim.feed("smoke-1", "smoke", False)                          # it reports again
    assert [(type(a), a.key) for a in sim.until(local(1, 10, 1), heartbeat=None)] == [
        (ClearFault, "health:smoke-1:silent")]
    assert [f.fault for f in sim.feed("smoke-1", "availability", False)] == ["offline"]
    # nothing here is an alarm
    assert not any(isinstance(a, RaiseAlarm) for a in sim.out)
    eng.set_device_mode("smoke-1", "maintenance")
    assert [type(a).__name__ for a in sim.feed("smoke-1", "fault", True)] == ["TestRecord"]
