"""One source of truth for alarm state: the store. The rule engine restarts from a snapshot up
to 30 s old, and its alarm bookkeeping is made again from the store (``Engine.adopt_store``),
so that after a crash every trigger gets the outcome it would have had without it.

Each test lives two "lives" of a gateway on one data directory, as the service wires them
(``gateway.service``: snapshot loaded, then the store adopted): the first ends like a kill -9
(no shutdown snapshot, nothing told to the engine after the last commit)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from gateway.alarms import AlarmBook
from gateway.metrics import Metrics
from gateway.model import Kind, Reading, utc
from gateway.pipeline import Pipeline
from gateway.service import adopt_store, build_engine
from gateway.site import load_site
from gateway.store import Store
from tests.support import EXAMPLE

SITE = load_site(EXAMPLE)
CALLER, SMOKE = "caller-7-101", "smoke-7-101"


class Life:
    """Store, alarm book, engine and pipeline of one run of the gateway."""

    def __init__(self, path, snapshot: dict | None = None, adopt: bool = True) -> None:
        self.store = Store(path)
        self.store.open()
        self.metrics = Metrics()
        self.engine = build_engine(SITE)
        if snapshot is not None:
            self.engine.load_snapshot(json.loads(json.dumps(snapshot)))
        self.book = AlarmBook(self.store, SITE, metrics=self.metrics)
        if adopt:
            adopt_store(self.engine, self.book)
        self.pipe = Pipeline(self.store, self.engine, self.book, self.metrics)

    async def feed(self, device: str, kind: Kind, value, now: datetime) -> None:
        reading = Reading(device, kind, value, now)
        await self.pipe._apply(self.engine.feed(reading, now), [])

    async def tick(self, now: datetime) -> None:
        await self.pipe._apply(self.engine.tick(now), [])

    def snapshot(self) -> dict:
        return self.engine.snapshot()

    def alarms(self, device: str) -> list[dict]:
        return self.store.query("SELECT * FROM alarms WHERE device_id=? ORDER BY id", (device,))

    def outbox(self, alarm_id: int) -> list[str]:
        return [json.loads(r["payload"]).get("event", r["topic"]) for r in self.store.query(
            "SELECT topic, payload FROM outbox WHERE alarm_id=? ORDER BY seq", (alarm_id,))]

    def crash(self) -> None:
        self.store.close()   # kill -9: no shutdown snapshot, the engine's memory is gone


async def test_press_after_staff_resolve_and_crash_is_a_new_alarm(tmp_path):
    t0 = utc()
    life = Life(tmp_path / "gateway.db")
    await life.feed(CALLER, Kind.SOS, True, t0)
    [first] = life.alarms(CALLER)
    snap = life.snapshot()                       # the engine's last snapshot: alarm open
    await life.book.resolve(first["id"], "duty", "handled")
    life.crash()                                 # before the engine heard of the resolve

    life = Life(tmp_path / "gateway.db", snap)
    await life.feed(CALLER, Kind.SOS, True, t0 + timedelta(seconds=5))
    first_again, second = life.alarms(CALLER)
    assert first_again["state"] == "resolved" and first_again["count"] == 1
    assert second["state"] == "raised" and second["count"] == 1
    assert life.outbox(second["id"]) == ["case.create"]    # its own case
    assert second["escalation_tier"] == 1                   # tier after 0 s: grid member
    life.crash()


async def test_stale_engine_trigger_raises_anew_and_restarts_its_escalation(tmp_path):
    """Without the store adopted (the in-process race: staff resolved, the engine not yet
    told), the engine sends an update: the gateway raises a new alarm and the engine's
    bookkeeping of it starts afresh (acknowledged before does not hold for it)."""
    t0 = utc()
    life = Life(tmp_path / "gateway.db")
    await life.feed(CALLER, Kind.SOS, True, t0)
    [first] = life.alarms(CALLER)
    await life.book.acknowledge(first["id"], "duty")
    life.engine.acknowledged(first["key"], t0)
    snap = life.snapshot()
    await life.book.resolve(first["id"], "duty", "handled")
    life.crash()

    life = Life(tmp_path / "gateway.db", snap, adopt=False)
    await life.feed(CALLER, Kind.SOS, True, t0 + timedelta(seconds=5))
    _, second = life.alarms(CALLER)
    assert second["state"] == "raised" and life.outbox(second["id"]) == ["case.create"]
    assert second["escalation_tier"] == 1
    await life.tick(t0 + timedelta(minutes=4))              # tier 2 after 3 min
    assert life.alarms(CALLER)[1]["escalation_tier"] == 2
    life.crash()


async def test_cancel_of_an_alarm_raised_after_the_snapshot_is_applied(tmp_path):
    t0 = utc()
    life = Life(tmp_path / "gateway.db")
    await life.feed(CALLER, Kind.SOS, False, t0)
    snap = life.snapshot()                      # before the press
    await life.feed(CALLER, Kind.SOS, True, t0 + timedelta(seconds=1))
    life.crash()

    life = Life(tmp_path / "gateway.db", snap)
    await life.feed(CALLER, Kind.SOS, False, t0 + timedelta(seconds=3))
    [alarm] = life.alarms(CALLER)
    assert alarm["cleared_at"] is not None and alarm["state"] == "raised"  # staff resolve it
    assert life.outbox(alarm["id"]) == ["case.create", "cleared"]
    life.crash()


async def test_smoke_clear_with_auto_resolve_after_restart(tmp_path):
    t0 = utc()
    life = Life(tmp_path / "gateway.db")
    snap = life.snapshot()
    await life.feed(SMOKE, Kind.SMOKE, True, t0)
    life.crash()

    life = Life(tmp_path / "gateway.db", snap)
    await life.feed(SMOKE, Kind.SMOKE, False, t0 + timedelta(seconds=2))
    [alarm] = life.alarms(SMOKE)
    rule = next(r for r in SITE.rules.rules if r.id == "smoke")
    expected = "resolved" if rule.auto_resolve_on_clear else "raised"
    assert alarm["cleared_at"] is not None and alarm["state"] == expected
    life.crash()


async def test_escalations_due_while_down_fire_on_the_first_tick(tmp_path):
    t0 = utc()
    for journal in (True, False):     # False: a store of the previous release (no journal)
        db = tmp_path / f"gateway-{journal}.db"
        life = Life(db)
        snap = life.snapshot()
        await life.feed(CALLER, Kind.SOS, True, t0)
        [alarm] = life.alarms(CALLER)
        assert alarm["escalation_tier"] == 1
        if not journal:
            await life.store.write(lambda c: c.execute("DELETE FROM alarm_book"))
        life.crash()

        life = Life(db, snap)
        await life.tick(t0 + timedelta(minutes=11))     # tiers 3 min and 10 min passed
        [alarm] = life.alarms(CALLER)
        assert alarm["escalation_tier"] == 3, journal
        await life.tick(t0 + timedelta(minutes=30))
        events = life.store.query("SELECT action FROM alarm_events WHERE alarm_id=? AND "
                                  "action='escalated'", (alarm["id"],))
        assert len(events) == 3, journal                 # once each, never again
        life.crash()


async def test_acknowledged_before_the_crash_does_not_escalate_after(tmp_path):
    t0 = utc()
    life = Life(tmp_path / "gateway.db")
    await life.feed(CALLER, Kind.SOS, True, t0)
    snap = life.snapshot()
    [alarm] = life.alarms(CALLER)
    await life.book.acknowledge(alarm["id"], "duty")
    life.crash()                                  # the engine never heard of the ack

    life = Life(tmp_path / "gateway.db", snap)
    await life.tick(t0 + timedelta(minutes=11))
    [alarm] = life.alarms(CALLER)
    assert alarm["state"] == "acknowledged" and alarm["escalation_tier"] == 1
    await life.feed(CALLER, Kind.SOS, True, t0 + timedelta(minutes=12))   # pressed again
    [alarm] = life.alarms(CALLER)
    assert alarm["count"] == 2                   # an update of the open alarm
    life.crash()


async def test_a_clear_for_a_resolved_alarm_is_recorded_and_counted(tmp_path):
    t0 = utc()
    life = Life(tmp_path / "gateway.db")
    await life.feed(CALLER, Kind.SOS, True, t0)
    [alarm] = life.alarms(CALLER)
    await life.book.resolve(alarm["id"], "duty", "handled")    # the engine not told
    await life.feed(CALLER, Kind.SOS, False, t0 + timedelta(seconds=1))
    assert life.metrics.get("gateway_orphan_actions_total", action="clear") == 1
    [alarm] = life.alarms(CALLER)
    assert alarm["cleared_at"] is not None
    events = life.store.query("SELECT action, detail FROM alarm_events WHERE alarm_id=? "
                              "ORDER BY id", (alarm["id"],))
    assert events[-1]["action"] == "cleared"
    assert json.loads(events[-1]["detail"])["after_resolved"] is True
    life.crash()


async def test_a_start_reads_ended_keys_only_for_the_alarms_its_rules_hold(tmp_path):
    """``AlarmBook.engine_state(fired)``: the store's word on the keys the restored rules
    hold as fired, the same as the whole history's for them (a start reads no more)."""
    t0 = utc()
    life = Life(tmp_path / "gateway.db")
    await life.feed(SMOKE, Kind.SMOKE, True, t0)
    await life.feed(SMOKE, Kind.SMOKE, False, t0 + timedelta(seconds=1))     # cleared
    [smoke_alarm] = life.alarms(SMOKE)
    await life.book.resolve(smoke_alarm["id"], "duty", "handled")            # and closed
    await life.feed(CALLER, Kind.SOS, True, t0 + timedelta(seconds=2))      # still open
    smoke, caller = f"smoke:{SMOKE}", f"sos:{CALLER}"
    every = life.book.engine_state().ended
    assert smoke in every and caller not in every
    assert life.book.engine_state({smoke, caller, "heat:nobody"}).ended == {smoke}
    assert life.book.engine_state({caller}).ended == set()
    assert life.book.engine_state(set()).ended == set()
    many = {smoke, caller} | {f"heat:nobody-{i}" for i in range(1200)}   # one pass instead
    assert life.book.engine_state(many).ended == {smoke}
    life.crash()
