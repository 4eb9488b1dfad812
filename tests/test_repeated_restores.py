"""A restore that changes nothing (Zigbee2MQTT sends ``tamper: false``, ``smoke: false``,
``gas: false`` in every report of a sensor, and nothing of the sensor is open) goes with the
telemetry, acknowledged at once, instead of through the inbox's commit: there is nothing in
it to lose.

- The engine says when a reading changes nothing (``Engine.repeats_nothing``): its rules are
  idle on it, and hold nothing for the device it could end (an active alarm, a held state,
  an open fault) unless it repeats a value they were given. Feeding one then makes no action
  and changes no rule's state (checked against random sequences, also with rules that do act
  on every such reading: a count of every tamper report, a match on false).
- The pipeline takes that way only while nothing of the device is on the durable way and
  the telemetry queue has room (never shed). A reading of the device offered after it and
  fed first (alarms go first) stamped the same second makes it stale (a device stamping
  whole seconds); one stamped earlier does not: the restore, the device's last word, ends it.
- After a restart, the clear of an alarm the snapshot missed (the store's word) is durable.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from hypothesis import given, settings, strategies as st

from gateway.alarms import AlarmBook
from gateway.metrics import Metrics
from gateway.model import Kind, Reading, utc
from gateway.pipeline import Pipeline
from gateway.service import adopt_store, build_engine
from gateway.site import load_site
from gateway.store import Store
from rules.engine import Engine
from rules.testing import at, config, reading, small_site
from tests.support import EXAMPLE, until

SITE = load_site(EXAMPLE)
SMOKE = "smoke-7-101"
SMALL = small_site(2)
#: rules that act on some repeats, beside the kinds' usual match rules
ODD_RULES = config(
    {"id": "tamper_reports", "kind": "count", "when": {"kind": "tamper"}, "count": 3,
     "window": "10m"},
    {"id": "leak_false", "kind": "match", "when": {"kind": "water_leak", "value": False}},
    {"id": "smoke", "kind": "match", "when": {"kind": "smoke", "value": True},
     "clear_when": {"kind": "smoke", "value": False}},
    {"id": "gas_held", "kind": "held", "when": {"kind": "gas", "value": True}, "for": "1m"},
    {"id": "sos", "kind": "match", "when": {"kind": "sos", "value": True},
     "clear_when": {"kind": "sos", "value": False}},
    {"id": "supervision", "kind": "supervision", "tamper": True, "fault": True},
)


def _state(eng: Engine) -> dict:
    """What a repeat must not change: alarms, faults, every rule's state."""
    snap = eng.snapshot()
    return json.loads(json.dumps({k: snap[k] for k in ("alarms", "faults", "rules")}))


events = st.lists(st.tuples(st.integers(1, 90), st.sampled_from(["smoke-1", "gas-1", "caller-2",
                                                                  "water-1", "motion-2"]),
                            st.sampled_from(["smoke", "gas", "sos", "tamper", "water_leak",
                                             "fault"]),
                            st.booleans()), min_size=1, max_size=80)


@settings(max_examples=120, deadline=None)
@given(events)
def test_feeding_a_repeat_makes_no_action_and_changes_no_rule(evs) -> None:
    eng = Engine(ODD_RULES, SMALL)
    t = 0
    for dt, device, kind, value in evs:
        t += dt
        r = reading(device, kind, value, t, SMALL)
        if eng.repeats_nothing(r):
            # their rules act on every such reading: never a repeat
            assert kind != "tamper" and (kind, value) != ("water_leak", False)
            before = _state(eng)
            assert eng.feed(r, at(t)) == []
            assert _state(eng) == before
        else:
            eng.feed(r, at(t))
        eng.tick(at(t + 1))


def test_a_restore_changes_nothing_only_while_nothing_is_held_for_its_device() -> None:
    eng = Engine(ODD_RULES, SMALL)

    def idle(device: str, kind: str, value: bool, t: float, engine: Engine = eng) -> bool:
        return engine.repeats_nothing(reading(device, kind, value, t, SMALL))

    def feed(device: str, kind: str, value: bool, t: float) -> None:
        eng.feed(reading(device, kind, value, t, SMALL), at(t))

    assert idle("smoke-1", "smoke", False, 1)            # a new stream, nothing held
    assert not idle("smoke-1", "smoke", True, 1)
    feed("smoke-1", "smoke", True, 2)
    assert not idle("smoke-1", "smoke", False, 3)        # the clear of an active alarm
    restored = Engine(ODD_RULES, SMALL)
    restored.load_snapshot(json.loads(json.dumps(eng.snapshot())))
    assert not idle("smoke-1", "smoke", False, 3, restored)   # not given, but held
    feed("smoke-1", "smoke", False, 3)
    assert idle("smoke-1", "smoke", False, 4)            # cleared: a repeat

    assert not idle("smoke-1", "tamper", False, 5)       # every tamper report is counted
    feed("gas-1", "gas", True, 6)
    assert not idle("gas-1", "gas", False, 7)            # a held state it would end
    feed("gas-1", "gas", False, 7)
    assert idle("gas-1", "gas", False, 8)
    feed("gas-1", "fault", True, 9)
    assert not idle("gas-1", "fault", False, 10)         # an open fault
    feed("gas-1", "fault", False, 10)
    assert idle("gas-1", "fault", False, 11)

    eng.set_device_mode("smoke-1", "test")
    assert not idle("smoke-1", "smoke", False, 12)       # a test, recorded as one


def test_a_flow_held_by_increasing_readings_ends_on_an_unchanged_one() -> None:
    """``increasing``: water flowing without pause; the same volume again ends it."""
    eng = Engine(config({"id": "flow", "kind": "held", "when": {"kind": "water_volume"},
                         "increasing": True, "for": "1h"}), SMALL)
    for t, v in ((1, 5.0), (2, 6.0)):
        eng.feed(reading("water-1", "water_volume", v, t, SMALL), at(t))
    assert not eng.repeats_nothing(reading("water-1", "water_volume", 6.0, 3, SMALL))


class _Rig:
    """Store, engine, alarm book and the pipeline's tasks on one data directory."""

    def __init__(self, path, snapshot: dict | None = None) -> None:
        self.store = Store(path)
        self.store.open()
        self.engine = build_engine(SITE)
        if snapshot is not None:
            self.engine.load_snapshot(json.loads(json.dumps(snapshot)))
        self.book = AlarmBook(self.store, SITE, metrics=Metrics())
        adopt_store(self.engine, self.book)
        self.pipe = Pipeline(self.store, self.engine, self.book, Metrics())
        self.tasks = [asyncio.create_task(self.pipe._committer()),
                      asyncio.create_task(self.pipe._processor())]
        self.acked: list[str] = []

    def offer(self, value: bool, ts, name: str) -> None:
        r = Reading(SMOKE, Kind.SMOKE, value, ts)
        self.pipe.offer([r], lambda: self.acked.append(name))

    def inbox(self) -> int:
        return self.store.query_one("SELECT count(*) AS n FROM inbox")["n"]

    def alarms(self) -> list[dict]:
        return self.store.query("SELECT * FROM alarms WHERE device_id=? ORDER BY id", (SMOKE,))

    async def settled(self) -> None:
        await until(lambda: not self.pipe.alarm_work() and self.pipe._telemetry_q.empty(), 5,
                    "pipeline idle")
        await asyncio.sleep(0.05)

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.store.close()


async def test_a_restore_with_nothing_to_clear_is_acked_at_once_and_never_stored(tmp_path):
    rig = _Rig(tmp_path / "gateway.db")
    t0 = utc()
    try:
        for i in range(6):
            rig.offer(False, t0 + timedelta(seconds=i), f"restore-{i}")
            assert rig.acked[-1] == f"restore-{i}"       # at once: no alarm to clear
        await rig.settled()
        assert rig.inbox() == 0

        rig.offer(True, t0 + timedelta(seconds=10), "smoke")
        rig.offer(False, t0 + timedelta(seconds=11), "clear")   # its smoke is on its way
        assert rig.acked[-1] == "restore-5"
        await rig.settled()
        assert rig.acked[-2:] == ["smoke", "clear"] and rig.inbox() == 2
        [alarm] = rig.alarms()
        assert alarm["cleared_at"] is not None
    finally:
        await rig.close()


async def test_smoke_offered_after_a_repeat_in_the_same_second_stays_raised(tmp_path):
    """The repeat waits in the telemetry queue; the smoke offered after it goes first. Fed
    behind it, the repeat must not clear it, though both carry the same second."""
    rig = _Rig(tmp_path / "gateway.db")
    t0 = utc().replace(microsecond=0)
    try:
        rig.offer(False, t0, "first")
        await rig.settled()
        processor = rig.tasks.pop()
        processor.cancel()                    # the rules busy elsewhere meanwhile
        await asyncio.gather(processor, return_exceptions=True)
        second = t0 + timedelta(seconds=1)
        rig.offer(False, second, "repeat")
        rig.offer(True, second, "smoke")
        await until(lambda: rig.acked[-1] == "smoke", 5, "smoke committed")
        rig.tasks.append(asyncio.create_task(rig.pipe._processor()))
        await rig.settled()
        [alarm] = rig.alarms()
        assert alarm["state"] == "raised" and alarm["cleared_at"] is None
        assert rig.engine.stats["stale"] == 1
    finally:
        await rig.close()


async def test_a_restore_stamped_after_a_smoke_that_came_later_still_clears_it(tmp_path):
    """A device stamping its own time, its messages on two sessions: the restore (stamped
    later) arrives first and waits with the telemetry; the smoke (stamped earlier) arrives
    after it and is fed first. The device's last word, the restore, ends the alarm."""
    rig = _Rig(tmp_path / "gateway.db")
    t0 = utc()
    try:
        processor = rig.tasks.pop()
        processor.cancel()
        await asyncio.gather(processor, return_exceptions=True)
        rig.offer(False, t0 + timedelta(seconds=10), "restore")
        assert rig.acked == ["restore"]
        rig.offer(True, t0 + timedelta(seconds=9), "smoke")
        await until(lambda: rig.acked[-1] == "smoke", 5, "smoke committed")
        rig.tasks.append(asyncio.create_task(rig.pipe._processor()))
        await rig.settled()
        [alarm] = rig.alarms()
        assert alarm["cleared_at"] is not None
        assert rig.engine.stats["stale"] == 0
    finally:
        await rig.close()


async def test_a_restore_is_never_shed_by_a_full_queue(tmp_path):
    """With the telemetry queue full a restore goes the durable way: an alarm-class reading
    always gets through (it keeps its device alive for supervision)."""
    store = Store(tmp_path / "gateway.db")
    store.open()
    try:
        metrics = Metrics()
        engine = build_engine(SITE)
        pipe = Pipeline(store, engine, AlarmBook(store, SITE, metrics=metrics), metrics,
                        telemetry_queue=2)
        committer = asyncio.create_task(pipe._committer())
        acked: list[str] = []
        pipe.offer([Reading("motion-7-101", Kind.MOTION, True, utc())] * 2, None)
        pipe.offer([Reading(SMOKE, Kind.SMOKE, False, utc())], lambda: acked.append("restore"))
        assert acked == []
        await until(lambda: acked, 5, "restore committed")
        assert store.query_one("SELECT count(*) AS n FROM inbox")["n"] == 1
        assert metrics.get("gateway_shed_total", reason="telemetry_queue_full") == 0
        committer.cancel()
        await asyncio.gather(committer, return_exceptions=True)
    finally:
        store.close()


async def test_after_a_restart_the_clear_of_an_alarm_the_snapshot_missed_is_durable(tmp_path):
    rig = _Rig(tmp_path / "gateway.db")
    t0 = utc()
    try:
        rig.offer(False, t0, "first")
        assert rig.acked == ["first"]
        await rig.settled()
        snap = rig.engine.snapshot()          # smoke false; then smoke, committed, no snapshot
        rig.offer(True, t0 + timedelta(seconds=1), "smoke")
        await rig.settled()
    finally:
        await rig.close()
    rig = _Rig(tmp_path / "gateway.db", snap)     # a kill -9: the engine's memory is the snapshot
    try:
        rig.offer(False, t0 + timedelta(seconds=2), "clear")
        assert rig.acked == []          # the snapshot says false; the store, smoke active
        await rig.settled()
        assert rig.acked == ["clear"] and rig.inbox() == 2
        [alarm] = rig.alarms()
        assert alarm["cleared_at"] is not None
    finally:
        await rig.close()
