"""The MQTT intake's alarm lane (drivers/mqtt.py): callers and detectors are read ahead on a
clean QoS 0 connection of their own, so an SOS does not wait behind telemetry; the main
session still reads every message and pairs its copy with the one read ahead, so no press is
lost and none is read twice — whatever the lane does."""

from __future__ import annotations

import asyncio
import time

import pytest

from drivers.mqtt import DeviceBinding, MqttIntake
from drivers.mqtt_lane import Copy, Held, LanePairing, parse_marker
from gateway.broker import Mosquitto
from gateway.model import Kind
from tests.support import (AckingSink, HoldingSink, mqtt_intake, mqtt_publish, running,
                           stock_profile, until)

CALLER = "zigbee2mqtt/caller-1"
SMOKE = "zigbee2mqtt/smoke-1"
MOTIONS = [f"zigbee2mqtt/motion-{i}" for i in range(20)]
PRESS = b'{"action": "emergency"}'



def _bindings(with_caller: bool = True) -> dict[str, DeviceBinding]:
    motion = stock_profile("zigbee2mqtt-motion-sensor")
    out = {t: DeviceBinding(t.rpartition("/")[2], "motion_sensor", "h-1", "cell-1", motion)
           for t in MOTIONS}
    out[SMOKE] = DeviceBinding("smoke-1", "smoke_detector", "h-1", "cell-1",
                               stock_profile("zigbee2mqtt-smoke-detector"))
    if with_caller:
        out[CALLER] = DeviceBinding("caller-1", "emergency_caller", "h-1", "cell-1",
                                    stock_profile("zigbee2mqtt-emergency-caller"))
    return out


def _intake(port: int, sink: AckingSink, client_id: str, **kw) -> MqttIntake:
    return mqtt_intake(port, sink, client_id, _bindings(**kw))


def _sos(sink: AckingSink) -> list:
    return [r for r in sink.readings if r.kind is Kind.SOS]


def _lane(intake: MqttIntake, outcome: str) -> float:
    return intake.metrics.counters.get(
        ("gateway_mqtt_alarm_lane_total", (("outcome", outcome),)), 0)


async def _both_online(intake: MqttIntake) -> None:
    await until(lambda: intake.connected.is_set() and intake.lane_state == "online"
                and CALLER in intake.lane_subscribed and intake._pairing.armed, 10,
                "main connection and alarm lane (armed)")


async def _after_a_marker(port: int, sink: AckingSink, battery: int) -> None:
    """A battery report read on the main connection: its copies of anything published
    before have been read (or paired) by then."""
    mqtt_publish(port, [(MOTIONS[2], {"battery": battery})])
    await until(lambda: any(r.kind is Kind.BATTERY and r.value == battery
                            for r in sink.readings), 10, f"marker {battery}")


# -- which devices, and the pairing rules ---------------------------------------------------

def test_callers_and_detectors_ride_the_alarm_lane_ordinary_sensors_do_not():
    intake = _intake(1, AckingSink(), "x")
    # a motion sensor reports tamper (alarm-class) in every message, but is an ordinary
    # sensor: its thousands of reports stay on the main connection only
    assert any(f.kind is Kind.TAMPER for f in stock_profile("zigbee2mqtt-motion-sensor")
               .fields.values())
    assert intake.alarm_topics() == {CALLER, SMOKE}
    for pid in ("zigbee2mqtt-gas-detector", "zigbee2mqtt-water-leak-detector"):
        intake.rebind({"t": DeviceBinding("d", "x", None, None, stock_profile(pid))})
        assert intake.alarm_topics() == {"t"}, pid


N = "n1"          # the lane connection's nonce in these tests


def _armed() -> LanePairing:
    """The lane has read marker 0, the main connection too."""
    p = LanePairing(keep=8, forget_s=60)
    p.lane_up(N)
    p.lane_marker((N, 0), 0.0)
    p.main_marker((N, 0))
    return p


def test_parse_marker():
    assert parse_marker(b"ab12:7") == ("ab12", 7)
    assert parse_marker(b"x") is None and parse_marker(b"ab:-1") is None


def test_a_copy_fed_from_the_lane_pairs_with_its_twin_of_the_same_interval_once():
    p = _armed()
    copy = p.from_lane(CALLER, PRESS, 0.1)
    assert isinstance(copy, Copy)
    assert p.from_main(CALLER, PRESS) is copy
    # another press in the interval, which the lane has not read yet: held for it
    assert p.from_main(CALLER, PRESS) == (N, 0)


def test_the_twins_acknowledgement_waits_for_the_copys_commit():
    p = _armed()
    copy = p.from_lane(CALLER, PRESS, 0.1)
    assert isinstance(copy, Copy)
    acked: list[int] = []
    copy.after_commit(lambda: acked.append(1))
    assert acked == []
    copy.commit_done()
    assert acked == [1]
    copy.after_commit(lambda: acked.append(2))      # committed: at once
    assert acked == [1, 2]


def test_a_copy_of_another_interval_is_not_a_twin():
    """A press the main session lost (its queue full): the lane's copy is stale once the
    main connection reads the next marker, and never pairs with a later press."""
    p = _armed()
    assert isinstance(p.from_lane(CALLER, PRESS, 0.1), Copy)   # its main twin: dropped
    p.lane_marker((N, 1), 0.3)
    p.main_marker((N, 1))
    assert p.ahead == {} and p._seen == {}
    # a later identical press: not paired with the stale copy, held for its own
    assert p.from_main(CALLER, PRESS) == (N, 1)


def test_the_main_connection_holds_what_the_lane_has_not_read_yet():
    fed: list[str] = []
    p = _armed()
    got = p.from_main(SMOKE, b'{"smoke":true}')
    assert got == (N, 0)
    p.hold(got, SMOKE, b'{"smoke":true}', lambda: fed.append("main"), 0.0)
    twin = p.from_lane(SMOKE, b'{"smoke":true}', 0.1)      # the lane's copy comes
    assert isinstance(twin, Held)       # the main's copy is fed, the lane's is not
    twin.feed()
    assert fed == ["main"] and not p.held


def test_what_the_lane_missed_is_fed_by_the_main_once_the_lane_passed_its_interval():
    fed: list[str] = []
    p = _armed()
    got = p.from_main(SMOKE, b'{"smoke":true}')
    assert got == (N, 0)
    p.hold(got, SMOKE, b'{"smoke":true}', lambda: fed.append("main"), 0.0)
    for held in p.lane_marker((N, 1), 0.3):
        held.feed()
    assert fed == ["main"]
    p.main_marker((N, 1))
    p.lane_marker((N, 2), 0.6)
    p.main_marker((N, 2))
    assert p.from_main(SMOKE, b'{"smoke":false}') == (N, 2)
    p.lane_marker((N, 3), 0.8)
    assert p.from_main(SMOKE, b'{"smoke":false}') is None      # (main still at 2)


def test_a_lost_lane_hands_back_what_the_main_holds_and_its_copies_still_pair():
    fed: list[str] = []
    p = _armed()
    copy = p.from_lane(CALLER, PRESS, 0.1)
    got = p.from_main(SMOKE, b'{"smoke":true}')
    assert got == (N, 0)
    p.hold(got, SMOKE, b'{"smoke":true}', lambda: fed.append("main"), 0.0)
    for held in p.lane_down():
        held.feed()
    assert fed == ["main"]
    assert p.from_main(CALLER, PRESS) is copy       # same interval: still its twin
    assert p.from_main(CALLER, PRESS) is None       # the lane is down: fed by the main


def test_nothing_is_fed_from_the_lane_until_the_main_has_caught_up():
    """After a start the main session drains what queued while the gateway was down; a
    detector's old smoke:false may be in it. The lane's new smoke:true must not be fed
    before it (it would then be cleared by the older message)."""
    p = LanePairing(keep=8, forget_s=60)
    p.lane_up(N)
    p.lane_marker((N, 0), 0.0)
    fire = b'{"smoke":true}'
    assert p.from_lane(SMOKE, fire, 0.1) is None        # left to the main connection
    assert p.from_main(SMOKE, b'{"smoke":false}') is None   # the old one, before marker 0
    p.main_marker((N, 0))
    assert p.armed
    # a second message of that detector on the lane: the first is still the main's, so
    # this one is too (fed now, it would overtake it)
    assert p.from_lane(SMOKE, b'{"smoke":true,"n":2}', 0.2) is None
    assert p.from_main(SMOKE, fire) is None             # the left copy: fed by the main
    assert p.from_main(SMOKE, b'{"smoke":true,"n":2}') is None
    # nothing of that topic is left: the lane feeds again; other topics were never held up
    assert isinstance(p.from_lane(SMOKE, b'{"smoke":true,"n":3}', 0.3), Copy)
    assert isinstance(p.from_lane(CALLER, PRESS, 0.3), Copy)


def test_a_new_lane_connection_makes_the_old_ones_copies_stale_once_the_main_passes_it():
    p = _armed()
    assert isinstance(p.from_lane(CALLER, PRESS, 0.1), Copy)
    p.lane_down()
    p.lane_up("n2")
    p.lane_marker(("n2", 0), 0.5)
    assert not p.armed                      # the main has not read the new marker 0 yet
    assert p.from_lane(CALLER, PRESS, 0.6) is None      # left to the main connection
    p.main_marker(("n2", 0))
    assert p.ahead == {}                    # the old copy's twin was not delivered
    assert p.from_main(CALLER, PRESS) is None           # the left one: fed by the main


def test_copies_are_forgotten_after_a_while_and_bounded_in_number():
    p = _armed()
    for n in range(20):
        p.from_lane(CALLER, b'{"n": %d}' % n, 1.0)
    assert len(p.ahead[(N, 0, CALLER)]) == 8
    p.lane_marker((N, 1), 100.0)            # 60 s later: forgotten
    assert p.ahead == {} and p._seen == {}


# -- against Mosquitto -----------------------------------------------------------------------

class _SlowSink(AckingSink):
    """A gateway that falls behind: each telemetry reading costs 2 ms of the event loop."""

    def offer(self, readings, ack, durable: bool = False) -> None:
        if not any(r.is_alarm_class for r in readings):
            time.sleep(0.002)
        super().offer(readings, ack, durable)


@pytest.mark.integration
async def test_an_sos_overtakes_the_telemetry_the_gateway_is_behind_on(mosquitto):
    """1,500 motion reports (3 s of the gateway's time) and then an SOS: it is read within
    the first few hundred, and once, though its main copy comes last."""
    sink = _SlowSink()
    intake = _intake(mosquitto.port, sink, "gw-lane-backlog")
    async with running(intake):
        await _both_online(intake)
        backlog = [(MOTIONS[i % len(MOTIONS)], {"occupancy": i % 2 == 0})
                   for i in range(1500)]
        mqtt_publish(mosquitto.port, [*backlog, (CALLER, {"action": "emergency"})])
        await until(lambda: _sos(sink), 10, "the SOS")
        read_before = sum(r.kind is Kind.MOTION for r in sink.readings)
        await until(lambda: sum(r.kind is Kind.MOTION for r in sink.readings) == 1500,
                    30, "the backlog")
        await _after_a_marker(mosquitto.port, sink, 44)
    assert read_before < 500, read_before
    assert len(_sos(sink)) == 1
    assert (_lane(intake, "ahead"), _lane(intake, "paired")) == (1, 1)


@pytest.mark.integration
async def test_without_the_lane_the_main_connection_reads_every_alarm(mosquitto):
    sink = AckingSink()
    intake = _intake(mosquitto.port, sink, "gw-lane-never")

    async def never() -> None:
        await asyncio.Event().wait()

    intake._run_lane = never        # type: ignore[method-assign]
    async with running(intake):
        await until(intake.connected.is_set, 10, "main connection online")
        mqtt_publish(mosquitto.port, [(CALLER, {"action": "emergency"}),
                                      (SMOKE, {"smoke": True})])
        await until(lambda: _sos(sink) and any(r.kind is Kind.SMOKE for r in sink.readings),
                    10, "the SOS and the smoke alarm")
        await _after_a_marker(mosquitto.port, sink, 45)
    assert intake.lane_state == "starting"
    assert len(_sos(sink)) == 1


class _HoldingSink(HoldingSink):
    """Holds the acknowledgements, as a commit still in flight does, and is behind: 2 ms
    of the event loop per telemetry reading."""

    def offer(self, readings, ack, durable: bool = False) -> None:
        if not any(r.is_alarm_class for r in readings):
            time.sleep(0.002)
        super().offer(readings, ack, durable)


@pytest.mark.integration
async def test_a_press_read_ahead_but_not_committed_is_still_the_brokers(mosquitto):
    """The lane's copy was handed to the pipeline, its commit still in flight, when the
    gateway stops (a crash): the main copy, paired, was not acknowledged, so the broker
    gives it again at the next start and it is read then."""
    held = _HoldingSink()
    intake = _intake(mosquitto.port, held, "gw-lane-held")
    async with running(intake):
        await _both_online(intake)
        behind = [(MOTIONS[i % len(MOTIONS)], {"occupancy": True}) for i in range(200)]
        mqtt_publish(mosquitto.port, [*behind, (CALLER, {"action": "emergency"})])
        await until(lambda: _lane(intake, "paired") == 1, 10, "the twins paired")
    assert len(_sos(held)) == 1 and held.pending       # read once, not committed
    sink = AckingSink()
    async with running(_intake(mosquitto.port, sink, "gw-lane-held")):
        await until(lambda: _sos(sink), 10, "the press again, from the main session")
        await _after_a_marker(mosquitto.port, sink, 46)
    assert len(_sos(sink)) == 1


@pytest.mark.integration
async def test_a_caller_the_installer_adds_is_read_once(mosquitto):
    sink = AckingSink()
    intake = _intake(mosquitto.port, sink, "gw-lane-rebind", with_caller=False)
    async with running(intake):
        await until(lambda: intake.lane_state == "online" and SMOKE in intake.lane_subscribed,
                    10, "alarm lane online")
        intake.rebind(_bindings())
        await _both_online(intake)
        mqtt_publish(mosquitto.port, [(CALLER, {"action": "emergency"})])
        await until(lambda: _sos(sink), 10, "the SOS")
        await _after_a_marker(mosquitto.port, sink, 47)
        assert len(_sos(sink)) == 1
        intake.rebind(_bindings(with_caller=False))       # removed again
        await until(lambda: CALLER not in intake.lane_subscribed, 10, "topic let go")
        mqtt_publish(mosquitto.port, [(CALLER, {"action": "emergency"})])
        await _after_a_marker(mosquitto.port, sink, 48)
    assert len(_sos(sink)) == 1         # an unbound topic: rejected, counted (not ours)


@pytest.mark.integration
@pytest.mark.parametrize("persistence", [True, False])
async def test_after_a_broker_restart_both_come_back_and_each_press_is_read_once(
        tmp_path, persistence):
    broker = Mosquitto(workdir=tmp_path / "broker", persistence=persistence).start()
    sink = AckingSink()
    intake = _intake(broker.port, sink, f"gw-lane-restart-{persistence}")
    try:
        async with running(intake):
            await _both_online(intake)
            mqtt_publish(broker.port, [(CALLER, {"action": "emergency"})])
            await until(lambda: len(_sos(sink)) == 1, 10, "the first press")
            # its main copy read (paired or read) too: a lane lost while the main connection
            # is behind makes the main read that copy again (test_a_lost_lane_connection...)
            await _after_a_marker(broker.port, sink, 50)
            broker.stop()
            await until(lambda: intake.lane_state == "offline", 10, "alarm lane lost")
            broker.start()
            await _both_online(intake)
            mqtt_publish(broker.port, [(CALLER, {"action": "emergency"})])
            await until(lambda: len(_sos(sink)) >= 2, 10, "the second press")
            await _after_a_marker(broker.port, sink, 49)
        assert len(_sos(sink)) == 2
        # the lane read both, fed them or let the main's copy go first
        assert _lane(intake, "ahead") + _lane(intake, "held") == 2
    finally:
        broker.stop()


@pytest.mark.integration
async def test_a_retained_alarm_is_not_news_to_the_lane_when_it_subscribes(mosquitto):
    """A press left retained at the broker by a caller nobody had bound: when the installer
    binds the caller, the lane's SUBSCRIBE gets it. It is not a press (the main connection
    saw it long ago, as an unknown device's): no alarm; the next real press is read once."""
    mqtt_publish(mosquitto.port, [(CALLER, {"action": "emergency"})], retain=True)
    sink = AckingSink()
    intake = _intake(mosquitto.port, sink, "gw-lane-retained", with_caller=False)
    try:
        async with running(intake):
            await until(lambda: intake._pairing.armed and SMOKE in intake.lane_subscribed,
                        10, "the lane armed")
            intake.rebind(_bindings())                  # the installer binds the caller
            await _both_online(intake)
            await _after_a_marker(mosquitto.port, sink, 51)
            assert _sos(sink) == []
            mqtt_publish(mosquitto.port, [(CALLER, {"action": "emergency", "n": 2})])
            await until(lambda: _sos(sink), 10, "the new press")
            await _after_a_marker(mosquitto.port, sink, 52)
        assert len(_sos(sink)) == 1
    finally:
        mqtt_publish(mosquitto.port, [(CALLER, b"")], retain=True)    # cleared
