"""The MQTT command writer (drivers/mqtt_commands.py) against a real Mosquitto: a JSON device's
profile-defined command topic and payload (placeholders filled), Zigbee2MQTT's ``/set``, and
a broker nobody listens on: ``CommandError`` naming the device, within the publish timeout."""

from __future__ import annotations

import asyncio
import json
import queue
import time

import paho.mqtt.client as paho
import pytest

from drivers.command_maps import CommandMap
from drivers.mqtt_commands import CommandBinding, MqttCommandWriter
from gateway.broker import free_port
from gateway.kernel.commands import Action, Command, CommandError
from gateway.metrics import Metrics
from tests.support import running, until

pytestmark = [pytest.mark.integration]

JSON_MAP = CommandMap.model_validate({
    "topic": "{topic}/command",
    "actions": {"siren_on": {"cmd": "sound", "seconds": "{duration}", "tone": "{mode}"},
                "siren_off": {"cmd": "stop"}}})
Z2M_MAP = CommandMap.model_validate({"actions": {"close_valve": {"state": "OFF"}}})


def _listener(port: int, topic: str) -> tuple[paho.Client, queue.Queue]:
    got: queue.Queue = queue.Queue()
    c = paho.Client(paho.CallbackAPIVersion.VERSION2)
    ready = queue.Queue()
    c.on_connect = lambda cl, *_: cl.subscribe(topic, qos=1)
    c.on_subscribe = lambda *_: ready.put(True)
    c.on_message = lambda _c, _u, m: got.put((m.topic, json.loads(m.payload)))
    c.connect("127.0.0.1", port)
    c.loop_start()
    ready.get(timeout=10)
    return c, got


async def test_profile_command_topics_and_payloads(mosquitto):
    writer = MqttCommandWriter(
        host="127.0.0.1", port=mosquitto.port, client_id="cmd-test", metrics=Metrics(),
        bindings={"siren-1": CommandBinding("siren-1", "devices/siren-1", JSON_MAP),
                  "valve-1": CommandBinding("valve-1", "zigbee2mqtt/kitchen/valve", Z2M_MAP)})
    assert writer.supports("siren-1", Action.SIREN_ON)
    assert not writer.supports("siren-1", Action.CLOSE_VALVE)
    assert not writer.supports("nobody", Action.SIREN_ON)
    client, got = _listener(mosquitto.port, "#")
    try:
        async with running(writer):
            await until(lambda: writer.state == "online", 10, "the writer's connection")
            await writer.send(Command("c1", "siren-1", Action.SIREN_ON,
                                      {"duration": 60, "mode": "fire", "level": "high"}))
            await writer.send(Command("c2", "siren-1", Action.SIREN_OFF))
            await writer.send(Command("c3", "valve-1", Action.CLOSE_VALVE))
            with pytest.raises(CommandError, match="valve-1: takes no open_valve"):
                await writer.send(Command("c4", "valve-1", Action.OPEN_VALVE))
            seen = []
            deadline = time.monotonic() + 10
            while len(seen) < 3 and time.monotonic() < deadline:
                try:
                    seen.append(got.get_nowait())
                except queue.Empty:
                    await asyncio.sleep(0.02)
        assert seen == [
            ("devices/siren-1/command", {"cmd": "sound", "seconds": 60, "tone": "fire"}),
            ("devices/siren-1/command", {"cmd": "stop"}),
            ("zigbee2mqtt/kitchen/valve/set", {"state": "OFF"})]
    finally:
        client.disconnect()
        client.loop_stop()


async def test_no_broker_fails_by_name_within_the_timeout():
    writer = MqttCommandWriter(
        host="127.0.0.1", port=free_port(), client_id="cmd-test-2", metrics=Metrics(),
        bindings={"valve-1": CommandBinding("valve-1", "zigbee2mqtt/v", Z2M_MAP)},
        publish_timeout_s=0.5)
    async with running(writer):
        t0 = time.monotonic()
        with pytest.raises(CommandError, match="valve-1: the broker .* did not take"):
            await writer.send(Command("c1", "valve-1", Action.CLOSE_VALVE))
        assert time.monotonic() - t0 < 2


def test_a_command_topic_takes_no_wildcards_nor_unknown_placeholders():
    import pydantic

    for topic in ("{topic}/#", "{name}/set"):
        with pytest.raises(pydantic.ValidationError):
            CommandMap.model_validate({"topic": topic, "actions": {"close_valve": {"a": 1}}})
