"""Simulated MQTT devices: emergency callers and smoke detectors that publish JSON.

``run_devices`` presses buttons now and then (and cancels some presses), sets off smoke
detectors rarely, and reports battery levels — the traffic of a few real homes, for the demo.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random

import aiomqtt

__all__ = ["publish", "publish_on", "run_devices"]

log = logging.getLogger(__name__)


async def publish_on(client: aiomqtt.Client, topic: str, body: str | bytes,
                     qos: int) -> None:
    """``client.publish`` that never swallows a cancellation: on Python 3.11 aiomqtt's
    ``asyncio.wait_for`` for the PUBACK returns the result when the ack and a cancel arrive
    together, and the cancel is lost (the demo then never stopped on Ctrl-C under load)."""
    await client.publish(topic, body, qos=qos)
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def publish(host: str, port: int, topic: str, payload: dict | str | bytes,
                  qos: int = 1) -> None:
    """Publish one message as a device would (a new connection each time)."""
    body = json.dumps(payload) if isinstance(payload, dict) else payload
    async with aiomqtt.Client(host, port, identifier=f"sim-{random.getrandbits(32):08x}") as c:
        await c.publish(topic, body, qos=qos)


async def run_devices(host: str, port: int, devices: list[tuple[str, str, str]], *,
                      press_every: float = 20.0, seed: int | None = None,
                      max_events: int | None = None) -> int:
    """Publish device traffic until cancelled (or ``max_events``); returns events sent.

    ``devices``: (device_id, device_type, topic).
    """
    rng = random.Random(seed)
    sent = 0
    callers = [d for d in devices if d[1] == "emergency_caller"]
    smokes = [d for d in devices if d[1] == "smoke_detector"]
    async with aiomqtt.Client(host, port, identifier=f"demo-devices-{rng.getrandbits(32):08x}",
                              clean_session=True) as client:
        while max_events is None or sent < max_events:
            await asyncio.sleep(rng.expovariate(1.0 / press_every))
            roll = rng.random()
            if roll < 0.6 and callers:
                dev_id, _t, topic = rng.choice(callers)
                await publish_on(client, topic, json.dumps({"event": "sos",
                                                        "battery": rng.randint(40, 100)}), qos=1)
                log.info("demo: %s pressed SOS", dev_id)
                if rng.random() < 0.3:
                    await asyncio.sleep(rng.uniform(2, 8))
                    await publish_on(client, topic, json.dumps({"event": "cancel"}), qos=1)
                    log.info("demo: %s cancelled", dev_id)
            elif roll < 0.75 and smokes:
                dev_id, _t, topic = rng.choice(smokes)
                await publish_on(client, topic, json.dumps({"smoke": True}), qos=1)
                log.info("demo: %s detected smoke", dev_id)
                await asyncio.sleep(rng.uniform(10, 30))
                await publish_on(client, topic, json.dumps({"smoke": False}), qos=1)
            else:
                dev_id, _t, topic = rng.choice(devices)
                await publish_on(client, topic,
                                 json.dumps({"battery": rng.randint(20, 100)}), qos=1)
            sent += 1
    return sent
