"""The MQTT intake across restarts of the gateway and of the broker: a press is read exactly
once — including one made while the gateway was down by a caller the installer added then,
and one made after a broker restart that kept or forgot the sessions.

(These came from a review of an "alarm lane", a second connection for callers and detectors
that was withdrawn: acknowledging a message unread on one connection because the other is
subscribed loses what the broker routed before that subscription. docs/benchmarks.md, "path".)"""

from __future__ import annotations

import asyncio

import pytest

from drivers.mqtt import DeviceBinding, MqttIntake
from gateway.broker import Mosquitto
from gateway.model import Kind
from tests.support import (AckingSink, HoldingSink, mqtt_intake, mqtt_publish, running,
                           stock_profile, until)

pytestmark = pytest.mark.integration

CALLER = "zigbee2mqtt/caller-1"
SMOKE = "zigbee2mqtt/smoke-1"
MOTIONS = [f"zigbee2mqtt/motion-{i}" for i in range(20)]


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


async def _after_a_marker(port: int, sink: AckingSink, battery: int) -> None:
    """Publish a marker (a battery report) and wait until it is read: one connection reads
    in order, so a redelivered or second copy of anything before it has been read by then."""
    mqtt_publish(port, [(MOTIONS[2], {"battery": battery})])
    await until(lambda: any(r.kind is Kind.BATTERY and r.value == battery
                            for r in sink.readings), 10, f"marker {battery}")


async def test_a_caller_added_while_the_gateway_was_down_keeps_its_queued_sos(mosquitto):
    """The gateway ran without the caller; it stops, the installer adds the caller, the caller
    presses while the gateway is down; after the start the press is read, once, behind the
    telemetry queued before it."""
    cid = "gw-intake-added"
    async with running(_intake(mosquitto.port, AckingSink(), cid, with_caller=False)) as i:
        await until(i.connected.is_set, 10, "intake online")
    backlog = [(MOTIONS[n % len(MOTIONS)], {"occupancy": n % 2 == 0}) for n in range(500)]
    mqtt_publish(mosquitto.port, [*backlog, (CALLER, {"action": "emergency"})])
    sink = AckingSink()
    async with running(_intake(mosquitto.port, sink, cid, with_caller=True)):
        await until(lambda: _sos(sink), 10, "the SOS pressed while the gateway was down")
        await _after_a_marker(mosquitto.port, sink, 41)
    assert len(_sos(sink)) == 1
    again = AckingSink()            # acknowledged once read: the broker no longer has it
    async with running(_intake(mosquitto.port, again, cid, with_caller=True)) as i:
        await until(i.connected.is_set, 10, "intake online")
        await _after_a_marker(mosquitto.port, again, 42)
    assert _sos(again) == []


async def test_a_detectors_states_reach_the_rules_in_the_order_published(mosquitto):
    """While the gateway was down a detector went into smoke and out again, behind telemetry;
    after the start it goes into smoke anew. The rules get true, false, true: a newer state
    never overtaken by an older one (the withdrawn alarm lanes fed the new fire first and
    then the old 'false', which cleared it: docs/benchmarks.md "path", fifth round)."""
    cid = "gw-intake-order"
    async with running(_intake(mosquitto.port, AckingSink(), cid)) as i:
        await until(i.connected.is_set, 10, "intake online")
    backlog = [(MOTIONS[n % len(MOTIONS)], {"occupancy": n % 2 == 0}) for n in range(500)]
    mqtt_publish(mosquitto.port, [(SMOKE, {"smoke": True}), *backlog, (SMOKE, {"smoke": False})])
    sink = AckingSink()
    async with running(_intake(mosquitto.port, sink, cid)) as i:
        await until(i.connected.is_set, 10, "intake online")
        await asyncio.to_thread(mqtt_publish, mosquitto.port,
                                [(SMOKE, {"smoke": True, "battery": 90})])
        await until(lambda: sum(r.kind is Kind.SMOKE for r in sink.readings) == 3, 10,
                    "three smoke states")
    assert [r.value for r in sink.readings if r.kind is Kind.SMOKE] == [True, False, True]


@pytest.mark.parametrize("persistence", [True, False])
async def test_after_a_broker_restart_each_press_is_read_once(tmp_path, persistence):
    """The broker restarts under a running intake (keeping its sessions, or forgetting them as
    one without persistence does): the intake comes back and a press is read exactly once."""
    broker = Mosquitto(workdir=tmp_path / "broker", persistence=persistence).start()
    sink = AckingSink()
    intake = _intake(broker.port, sink, f"gw-intake-restart-{persistence}")
    try:
        async with running(intake):
            await until(intake.connected.is_set, 10, "intake online")
            mqtt_publish(broker.port, [(CALLER, {"action": "emergency"})])
            await until(lambda: len(_sos(sink)) == 1, 10, "the first press")
            broker.stop()
            await until(lambda: intake.state == "offline", 10, "intake offline")
            broker.start()
            await until(lambda: intake.state == "online", 20, "intake back")
            mqtt_publish(broker.port, [(CALLER, {"action": "emergency"}),
                                       (MOTIONS[1], {"occupancy": True})])
            await until(lambda: len(_sos(sink)) >= 2
                        and any(r.kind is Kind.MOTION for r in sink.readings),
                        10, "the second press")
            await _after_a_marker(broker.port, sink, 43)
        assert len(_sos(sink)) == 2
    finally:
        broker.stop()


async def test_a_commit_that_ends_after_a_reconnect_acknowledges_nothing_on_the_new_one(
        tmp_path):
    """Press A's commit is slow; the broker restarts forgetting sessions; on the new
    connection press B comes with the same packet id. A's acknowledgement must not go out on
    the new connection: it would acknowledge B, not yet committed, and a power cut then would
    lose B (a fresh-eyes review reproduced it: B was not delivered again)."""
    broker = Mosquitto(workdir=tmp_path / "broker", persistence=False).start()
    try:
        sink = HoldingSink()
        intake = _intake(broker.port, sink, "gw-stale-ack")
        async with running(intake):
            await until(intake.connected.is_set, 10, "intake online")
            mqtt_publish(broker.port, [(CALLER, {"action": "emergency"})])
            await until(lambda: len(_sos(sink)) == 1, 10, "press A")
            ack_a = sink.pending.pop()                  # A's commit still in flight
            broker.stop()
            await until(lambda: intake.state == "offline", 10, "intake offline")
            broker.start()                              # no persistence: sessions forgotten
            await until(lambda: intake.state == "online", 20, "intake back")
            mqtt_publish(broker.port, [(CALLER, {"action": "emergency", "n": 2})])
            await until(lambda: len(_sos(sink)) == 2, 10, "press B")
            ack_a()                                     # A committed; B's commit never ends
            await _after_a_marker(broker.port, sink, 44)
        again = AckingSink()                            # the gateway starts again
        async with running(_intake(broker.port, again, "gw-stale-ack")):
            await _after_a_marker(broker.port, again, 45)
        assert len(_sos(again)) == 1                    # B, delivered again: not lost
    finally:
        broker.stop()
