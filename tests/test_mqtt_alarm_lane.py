"""The MQTT intake's alarm lane (drivers/mqtt.py): callers and detectors are read ahead on a
clean QoS 0 connection of their own, so an SOS does not wait behind telemetry; the main
session still reads every message and pairs its copy with the one read ahead, so no press is
lost and none is read twice — whatever the lane does."""

from __future__ import annotations

import asyncio
import time

import pytest

from drivers.mqtt import DeviceBinding, MqttIntake, _Twins
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
                and CALLER in intake._twins.subscribed, 10, "main connection and alarm lane")


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


def _up(*topics: str) -> _Twins:
    twins = _Twins(wait_s=60, keep=8)
    twins.lane_up()
    twins.subscribed.update(topics)
    return twins


def test_a_copy_read_ahead_pairs_with_its_twin_once():
    twins = _up(CALLER)
    copy = twins.from_lane(CALLER, PRESS, 0.0)
    assert copy is not None
    assert twins.from_main(CALLER, PRESS, 1.0) is copy
    # the next press is not that twin: it is read
    assert twins.from_main(CALLER, PRESS, 2.0) is None


def test_the_main_connection_reads_every_press_the_lane_missed():
    """Three identical presses; the lane misses the middle one. Every main copy is either
    paired with a distinct copy that was read, or read itself: three presses read."""
    twins = _up(CALLER)
    read = [twins.from_lane(CALLER, PRESS, 0.0), twins.from_lane(CALLER, PRESS, 0.2)]
    paired = [twins.from_main(CALLER, PRESS, t) for t in (0.3, 0.4, 0.5)]
    assert sum(c is None for c in paired) == 1          # one main copy read
    assert len({id(c) for c in paired if c is not None}) == 2
    assert len(read) + sum(c is None for c in paired) == 3


def test_a_lane_copy_after_its_main_twin_is_dropped():
    twins = _up(SMOKE)
    assert twins.from_main(SMOKE, b'{"smoke":true}', 0.0) is None   # read on the main
    assert twins.from_lane(SMOKE, b'{"smoke":true}', 0.1) is None   # the lane's: dropped
    assert twins.from_lane(SMOKE, b'{"smoke":true}', 0.2) is not None   # a new one: ahead


def test_copies_differ_by_their_bytes():
    twins = _up(SMOKE)
    twins.from_lane(SMOKE, b'{"smoke":true,"battery":90}', 0.0)
    assert twins.from_main(SMOKE, b'{"smoke":true,"battery":80}', 0.1) is None
    assert twins.from_main(SMOKE, b'{"smoke":true,"battery":90}', 0.2) is not None


def test_a_lost_lane_connection_pairs_nothing_it_read():
    """What was published while the lane was away has no copy: a main copy must not be taken
    for an older press's twin (that press's alarm may be resolved already). The older
    press's own main copy is then read again: a repeat, not a loss."""
    twins = _up(CALLER)
    assert twins.from_lane(CALLER, PRESS, 0.0) is not None
    twins.lane_down()
    assert twins.from_main(CALLER, PRESS, 0.5) is None
    assert twins.from_lane(CALLER, PRESS, 0.6) is None     # nothing read while down
    twins.lane_up()
    assert twins.from_main(CALLER, PRESS, 0.7) is None


def test_a_forgotten_main_session_pairs_nothing_read_before():
    twins = _up(CALLER)
    twins.from_lane(CALLER, PRESS, 0.0)
    twins.main_forgotten()          # the broker lost the main session: no twin will come
    assert twins.from_main(CALLER, PRESS, 1.0) is None


def test_copies_wait_for_their_twins_a_bounded_time_and_number():
    twins = _up(CALLER)
    twins.from_lane(CALLER, PRESS, 0.0)
    assert twins.from_main(CALLER, PRESS, 61.0) is None     # too late: read again
    for n in range(20):
        twins.from_lane(CALLER, b'{"n": %d}' % n, 100.0)
    assert len(twins.ahead[CALLER]) == 8
    assert twins.from_main(CALLER, b'{"n": 0}', 100.5) is None    # forgotten
    assert twins.from_main(CALLER, b'{"n": 19}', 100.5) is not None


def test_the_twins_acknowledgement_waits_for_the_copys_commit():
    twins = _up(CALLER)
    copy = twins.from_lane(CALLER, PRESS, 0.0)
    assert copy is not None
    twin = twins.from_main(CALLER, PRESS, 0.1)
    assert twin is copy
    acked: list[int] = []
    twin.after_commit(lambda: acked.append(1))
    assert acked == []
    copy.commit_done()
    assert acked == [1]
    twin.after_commit(lambda: acked.append(2))      # committed: at once
    assert acked == [1, 2]


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
        await until(lambda: intake.lane_state == "online" and SMOKE in intake._twins.subscribed,
                    10, "alarm lane online")
        intake.rebind(_bindings())
        await _both_online(intake)
        mqtt_publish(mosquitto.port, [(CALLER, {"action": "emergency"})])
        await until(lambda: _sos(sink), 10, "the SOS")
        await _after_a_marker(mosquitto.port, sink, 47)
        assert len(_sos(sink)) == 1
        intake.rebind(_bindings(with_caller=False))       # removed again
        await until(lambda: CALLER not in intake._twins.subscribed, 10, "topic let go")
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
        assert _lane(intake, "ahead") + _lane(intake, "late") == 2     # the lane read both
    finally:
        broker.stop()
