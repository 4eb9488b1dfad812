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
        self.mute: set[str] = set()     # devices that send no heartbeats (silent)

    def until(self, end: datetime, heartbeat: float | None = 1800.0) -> list:
        got = []
        while self.now < end:
            self.now += self.step
            if heartbeat and int(self.now.timestamp()) % int(heartbeat) == 0:
                for d in self.site.devices:
                    if d in self.mute:
                        continue
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
    rule = {**FIXED, "sources_offline_after": "2h", "quiet_hours": None, "cannot_watch": None}
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


LEARNED = {**FIXED, "quiet_hours": None, "threshold": "16h",
           "baseline": {"floor": "1h", "ceiling": "20h", "grace": "1h", "away_limit": "10h",
                        "min_weeks": 2}}


def regular_life(rule: dict, days: int = 14, door_at: tuple[int, ...] = ()):
    """An engine that watched ``days`` days of a regular life: up at 07:10, active at ten
    past every hour until 21:10 (the front door opens at the hours in ``door_at``, with
    movement inside right after), asleep until the next 07:10."""
    site = small_site(1)
    eng = Engine(config(rule), site)
    sim = Sim(eng, site, local(1, 0), step=300.0)
    for day in range(1, days + 1):
        for hh in range(7, 22):
            sim.until(local(day, hh, 10))
            if hh in door_at:
                sim.feed("door-1", "door_open", True)
            sim.feed("motion-1", "motion", True)
    return eng, sim


def test_learned_baseline_alarms_after_the_usual_wake_up_and_explains_itself() -> None:
    eng, sim = regular_life(LEARNED)
    sim.until(local(15, 7))
    assert eng.evaluators[0].baseline.learned(0, 2)
    assert alarms(sim.out) == []          # the nights were learned: no alarm in two weeks
    # Monday 15th: last activity 21:10 Sunday... nothing Monday morning
    got = alarms(sim.until(local(15, 12)))
    [a] = got
    assert isinstance(a, RaiseAlarm)
    assert a.ts == local(15, 8, 10)       # usually active by 07:10, + 1 h grace
    assert a.message_en == ("h1: no activity for 11 h (since Sun 21:10); usually "
                            "active by 07:10 on weekdays")
    assert "平时工作日 07:10 前会有活动" in a.message_zh


def test_the_gap_being_judged_does_not_move_its_own_deadline() -> None:
    eng, sim = regular_life(LEARNED)
    for hh in range(7, 11):
        sim.until(local(15, hh, 10))
        sim.feed("motion-1", "motion", True)
    # usually active again by 11:10 after an active 10 o'clock: limit 11:10 + 1 h grace,
    # although the inactive hours of this gap pass (and are counted) meanwhile
    assert alarms(sim.until(local(15, 12, 5))) == []
    [a] = alarms(sim.until(local(15, 12, 15)))
    assert a.ts == local(15, 12, 10)
    assert a.message_en.endswith("usually active by 11:10 on weekdays")


def test_an_early_night_is_judged_by_the_usual_wake_up() -> None:
    eng, sim = regular_life(LEARNED)
    for hh in range(7, 20):                # Monday: to bed two hours early, after 19:10
        sim.until(local(15, hh, 10))
        sim.feed("motion-1", "motion", True)
    assert alarms(sim.until(local(16, 8, 5))) == []
    [a] = alarms(sim.until(local(16, 8, 15)))
    assert "usually active by 07:10" in a.message_en


def test_out_of_home_waits_for_the_away_limit_and_coming_home_counts() -> None:
    rule = {**LEARNED, "baseline": {**LEARNED["baseline"], "away_limit": "4h"}}
    eng, sim = regular_life(rule, door_at=(9, 15))
    for hh in range(7, 9):
        sim.until(local(15, hh, 10))
        sim.feed("motion-1", "motion", True)
    sim.until(local(15, 9, 10))
    sim.feed("door-1", "door_open", True)  # leaves; nothing moves inside afterwards
    assert alarms(sim.until(local(15, 13, 5))) == []
    [a] = alarms(sim.until(local(15, 13, 15)))   # away_limit 4 h after the door
    assert a.ts == local(15, 13, 10)
    assert a.message_en == ("h1: no activity at home for 4 h since the door opened "
                            "(Mon 09:10); out longer than 4 h")
    assert eng.resolved(a.key, sim.now)
    # the next door opening is coming home: a fall right after it is judged as at home
    sim.until(local(15, 14, 10))
    assert alarms(sim.feed("door-1", "door_open", True)) == []    # (alarm resolved)
    assert alarms(sim.until(local(15, 16, 5))) == []
    [b] = alarms(sim.until(local(15, 16, 15)))
    assert b.ts == local(15, 16, 10)     # usually active by 15:10, + 1 h grace
    assert b.message_en.endswith("(since Mon 14:10); usually active by 15:10 on weekdays")


def test_an_alarm_resolved_while_the_gap_goes_on_is_raised_again() -> None:
    site = small_site(1)
    rule = {**FIXED, "quiet_hours": None, "repeat_after": "6h"}
    eng = Engine(config(rule), site)
    sim = Sim(eng, site, local(1, 8))
    sim.feed("motion-1", "motion", True)
    [a] = alarms(sim.until(local(1, 12, 1)))
    assert eng.resolved(a.key, sim.now)          # staff called; nobody moved since
    assert alarms(sim.until(local(1, 17, 59))) == []
    [b] = alarms(sim.until(local(1, 18, 2)))
    assert isinstance(b, RaiseAlarm) and "no activity for 10 h" in b.message_en
    # while open it is updated, not duplicated
    [c] = [x for x in sim.until(local(2, 0, 2)) if x.key == a.key]
    assert type(c).__name__ == "UpdateAlarm"


def test_learned_state_survives_a_restart_mid_gap() -> None:
    eng, sim = regular_life(LEARNED)
    sim.until(local(15, 1, 0))
    snap = json.loads(json.dumps(eng.snapshot()))
    eng2 = Engine.restore(eng.config, sim.site, snap)
    sim2 = Sim(eng2, sim.site, local(15, 1, 0), step=300.0)
    assert alarms(sim2.until(local(15, 8, 5))) == []
    [a] = alarms(sim2.until(local(15, 8, 15)))
    assert "usually active by 07:10" in a.message_en


def test_supervision_faults_are_kept_apart_from_alarms() -> None:
    site = small_site(1)
    sup = {"id": "health", "kind": "supervision", "devices": ["smoke-1"], "silence": "1h",
           "message": {"zh": "{device_id} {fault}", "en": "{device_id}: {fault} {value}"}}
    eng = Engine(config(sup), site)
    sim = Sim(eng, site, local(1, 8))
    sim.until(local(1, 8, 30), heartbeat=None)
    [b] = sim.feed("smoke-1", "battery", 15.0)
    assert isinstance(b, RaiseFault) and b.fault == "battery_low" and b.rule_id == "health"
    # the message says the fault in words, never its code (the console shows the message)
    assert b.message_zh == "smoke-1 电量低" and b.message_en.startswith("smoke-1: low battery")
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


def test_water_read_just_after_leaving_is_not_coming_home() -> None:
    """Meters report what was used since their last reading: water drawn just before the
    door shows up after it and does not end "out"; nor does water used later while the
    home's motion sensor sees nobody (a washing machine); it does when no motion sensor can
    tell (it is silent) and the water came well after the door."""
    rule = {**LEARNED, "baseline": {**LEARNED["baseline"], "away_limit": "4h"}}
    eng, sim = regular_life(rule, door_at=(9, 15))
    sim.feed("water-1", "water_volume", 10.0)
    for hh in range(7, 9):
        sim.until(local(15, hh, 10))
        sim.feed("motion-1", "motion", True)
    sim.until(local(15, 9, 10))
    sim.feed("door-1", "door_open", True)       # leaves
    sim.until(local(15, 9, 20))
    sim.feed("water-1", "water_volume", 10.2)   # the flush before leaving, read now
    assert alarms(sim.until(local(15, 13, 5))) == []    # not "at home and still" at 11:10
    [a] = alarms(sim.until(local(15, 13, 15)))
    assert "since the door opened (Mon 09:10); out longer than 4 h" in a.message_en

    def monday(motion_alive: bool) -> tuple[Engine, Sim]:
        r = {**rule, "sources_offline_after": "1h"}
        eng, sim = regular_life(r, door_at=(9, 15))     # the same Monday again
        sim.feed("water-1", "water_volume", 10.0)
        for hh in range(7, 10):
            sim.until(local(15, hh, 10))
            sim.feed("motion-1", "motion", True)
        sim.until(local(15, 10, 10))
        sim.feed("door-1", "door_open", True)
        sim.mute = set() if motion_alive else {"motion-1"}
        sim.until(local(15, 11, 45))
        sim.feed("water-1", "water_volume", 10.2)   # 95 min after the door
        return eng, sim

    eng, sim = monday(motion_alive=True)
    [b] = alarms(sim.until(local(15, 14, 15)))      # still out: an appliance drew it
    assert "since the door opened (Mon 10:10); out longer than 4 h" in b.message_en
    eng, sim = monday(motion_alive=False)
    assert alarms(sim.until(local(15, 14, 15))) == []   # came home, judged from 11:45
    [c] = alarms(sim.until(local(16, 4)))
    assert c.ts == local(16, 3, 45)     # 16 h: the rhythm was learned with the motion sensor
    assert c.message_en == ("h1: no activity for 16 h (since Mon 11:45); motion-1 silent: "
                            "the usual rhythm cannot be judged, fixed limit 16 h")
    assert "motion-1 已无数据，作息规律无法判断，按固定时限 16小时" in c.message_zh


def test_a_night_up_at_changing_hours_is_judged_by_the_usual_wake_up() -> None:
    """A resident who gets up once a night, at a different hour each night (so no hour of
    the night has a gap of its own often enough to be learned): a toilet visit at 02:30 is
    judged by the waking learned at every hour of the night, not by the evening's gaps."""
    site = small_site(1)
    eng = Engine(config(LEARNED), site)
    sim = Sim(eng, site, local(1, 0), step=300.0)
    for day in range(1, 15):
        for hh in range(7, 22):
            sim.until(local(day, hh, 10))
            sim.feed("motion-1", "motion", True)
        up = (22, 23, 0, 1, 2, 3, 4)[day % 7]
        sim.until(local(day + (up < 12), up, 30))
        sim.feed("motion-1", "motion", True)
    sim.until(local(15, 2, 30))
    sim.feed("motion-1", "motion", True)
    assert alarms(sim.out) == []
    assert alarms(sim.until(local(15, 8, 5))) == []     # usually up at 07:10
    [a] = alarms(sim.until(local(15, 8, 15)))
    assert a.ts == local(15, 8, 10) and "usually active by 07:10" in a.message_en
