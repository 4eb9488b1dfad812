"""The MQTT intake's alarm lane (drivers/mqtt.py): callers and detectors are read on a
connection of their own, so an SOS does not queue behind telemetry; nothing depends on that
connection being up, and no press is read twice."""

from __future__ import annotations

import asyncio

import pytest

import drivers.mqtt as mqtt_mod
from drivers.mqtt import DeviceBinding, MqttIntake
from drivers.profiles import Profile, load_profiles
from gateway.metrics import Metrics
from gateway.model import Kind
from tests.support import AckingSink, mqtt_publish, running, until

pytestmark = pytest.mark.integration

PROFILES = load_profiles()
CALLER = "zigbee2mqtt/caller-1"
MOTIONS = [f"zigbee2mqtt/motion-{i}" for i in range(20)]


def _profile(pid: str) -> Profile:
    p = PROFILES.by_id[pid]
    assert isinstance(p, Profile)
    return p


def _bindings(with_caller: bool = True) -> dict[str, DeviceBinding]:
    motion = _profile("zigbee2mqtt-motion-sensor")
    out = {t: DeviceBinding(t.rpartition("/")[2], "motion_sensor", "h-1", "cell-1", motion)
           for t in MOTIONS}
    if with_caller:
        out[CALLER] = DeviceBinding("caller-1", "emergency_caller", "h-1", "cell-1",
                                    _profile("zigbee2mqtt-emergency-caller"))
    return out


def _intake(port: int, sink: AckingSink, client_id: str, **kw) -> MqttIntake:
    return MqttIntake(host="127.0.0.1", port=port, client_id=client_id, sink=sink,
                      metrics=Metrics(), bindings=_bindings(**kw))


def _sos(sink: AckingSink) -> list:
    return [r for r in sink.readings if r.kind is Kind.SOS]


def test_which_devices_ride_the_alarm_lane():
    b = _bindings()
    # a motion sensor reports tamper (alarm-class) but is an ordinary sensor: main lane
    assert any(f.kind is Kind.TAMPER for f in b[MOTIONS[0]].profile.fields.values())
    assert not b[MOTIONS[0]].urgent
    assert b[CALLER].urgent
    for pid in ("zigbee2mqtt-smoke-detector", "zigbee2mqtt-gas-detector",
                "zigbee2mqtt-water-leak-detector"):
        assert DeviceBinding("d", "x", None, None, _profile(pid)).urgent, pid


async def test_an_sos_overtakes_a_backlog_of_telemetry(mosquitto):
    """While the gateway was down, 3,000 motion reports and then one SOS queued up: after the
    restart the SOS is read before the backlog (on one connection it came last)."""
    first = AckingSink()
    async with running(_intake(mosquitto.port, first, "gw-lane-backlog")) as intake:
        await until(lambda: intake.connected.is_set() and intake.alarm_lane_state == "online",
                    10, "both lanes online")
    # the sessions persist: what is published now waits in the broker
    backlog = [(MOTIONS[i % len(MOTIONS)], {"occupancy": i % 2 == 0, "battery": 90})
               for i in range(3000)]
    mqtt_publish(mosquitto.port, [*backlog, (CALLER, {"action": "emergency"})])
    sink = AckingSink()
    async with running(_intake(mosquitto.port, sink, "gw-lane-backlog")):
        await until(lambda: len(sink.readings) >= 2 * 3000 + 1, 30, "the backlog and the SOS")
        await asyncio.sleep(0.3)
    kinds = [r.kind for r in sink.readings]
    assert kinds.count(Kind.SOS) == 1
    # before the main lane even connected (it waits for the alarm lane)
    assert kinds.index(Kind.SOS) < 100, kinds.index(Kind.SOS)


async def test_the_main_lane_reads_alarms_while_the_alarm_lane_is_down(mosquitto, monkeypatch):
    monkeypatch.setattr(mqtt_mod, "ALARM_LANE_FIRST_S", 0.2)
    sink = AckingSink()
    intake = _intake(mosquitto.port, sink, "gw-lane-down")
    connect = intake._keep_connected

    async def alarm_lane_never_connects(lane):
        if lane is intake._alarm:
            await asyncio.Event().wait()
        await connect(lane)

    intake._keep_connected = alarm_lane_never_connects     # type: ignore[method-assign]
    async with running(intake):
        await until(intake.connected.is_set, 10, "main lane online")
        assert intake.alarm_lane_state == "starting"
        mqtt_publish(mosquitto.port, [(CALLER, {"action": "emergency"})])
        await until(lambda: _sos(sink), 10, "the SOS on the main lane")
        await asyncio.sleep(0.3)
    assert len(_sos(sink)) == 1


async def test_a_caller_added_by_the_installer_is_read_once_on_the_alarm_lane(mosquitto):
    sink = AckingSink()
    intake = _intake(mosquitto.port, sink, "gw-lane-rebind", with_caller=False)
    async with running(intake):
        await until(lambda: intake.connected.is_set() and intake.alarm_lane_state == "online",
                    10, "both lanes online")
        assert intake.alarm_topics() == []
        intake.rebind(_bindings())       # the installer added a caller
        assert intake.alarm_topics() == [CALLER]
        await until(lambda: CALLER in intake._alarm.subscribed, 10, "alarm lane subscribed")
        mqtt_publish(mosquitto.port, [(CALLER, {"action": "emergency"}),
                                      (MOTIONS[0], {"occupancy": True})])
        await until(lambda: _sos(sink) and any(r.kind is Kind.MOTION for r in sink.readings),
                    10, "the SOS and the motion")
        await asyncio.sleep(0.5)        # a second copy (the main lane's) would come by now
        assert len(_sos(sink)) == 1
        # the caller removed again: the alarm lane lets its topic go
        intake.rebind(_bindings(with_caller=False))
        await until(lambda: not intake._alarm.subscribed, 10, "alarm lane unsubscribed")


@pytest.mark.parametrize("persistence", [True, False])
async def test_after_a_broker_restart_each_press_is_read_once(tmp_path, persistence):
    """The broker restarts under a running intake (keeping its sessions, or forgetting them as
    one without persistence does): both lanes come back and a press is read exactly once."""
    from gateway.broker import Mosquitto

    broker = Mosquitto(workdir=tmp_path / "broker", persistence=persistence).start()
    sink = AckingSink()
    intake = _intake(broker.port, sink, f"gw-lane-restart-{persistence}")
    try:
        async with running(intake):
            await until(lambda: intake.connected.is_set()
                        and intake.alarm_lane_state == "online", 10, "both lanes online")
            mqtt_publish(broker.port, [(CALLER, {"action": "emergency"})])
            await until(lambda: len(_sos(sink)) == 1, 10, "the first press")
            broker.stop()
            await until(lambda: intake.alarm_lane_state == "offline", 10, "alarm lane lost")
            broker.start()
            await until(lambda: intake.connected.is_set()
                        and intake.alarm_lane_state == "online", 20, "both lanes back")
            mqtt_publish(broker.port, [(CALLER, {"action": "emergency"}),
                                       (MOTIONS[1], {"occupancy": True})])
            await until(lambda: len(_sos(sink)) >= 2
                        and sum(r.kind is Kind.MOTION for r in sink.readings) >= 1,
                        10, "the second press")
            await asyncio.sleep(0.5)
        assert len(_sos(sink)) == 2
    finally:
        broker.stop()
