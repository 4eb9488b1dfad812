"""The path benchmark's load publisher (simulators.bench._paced) against Mosquitto.

It writes pre-encoded MQTT 3.1.1 QoS 1 PUBLISH packets on a plain socket instead of using
paho (whose Python took a core of the two the gateway is measured on). A benchmark is only
as honest as its load: a subscriber must get exactly the messages it says it sent, at QoS 1,
in order, at the rate asked for.
"""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as paho

from simulators.bench._paced import _remaining_length, paced


def test_remaining_length_is_the_mqtt_variable_length_encoding():
    assert _remaining_length(0) == b"\x00"
    assert _remaining_length(127) == b"\x7f"
    assert _remaining_length(128) == b"\x80\x01"
    assert _remaining_length(16_383) == b"\xff\x7f"
    assert _remaining_length(16_384) == b"\x80\x80\x01"


def test_a_subscriber_gets_every_message_in_order_at_qos_1(mosquitto):
    got: list[tuple[str, bytes, int]] = []
    subscribed = threading.Event()
    sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="paced-check")
    sub.on_message = lambda _c, _u, m: got.append((m.topic, bytes(m.payload), m.qos))
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.connect("127.0.0.1", mosquitto.port)
    sub.loop_start()
    try:
        sub.subscribe("devices/#", qos=1)
        assert subscribed.wait(5)
        # a long payload too: its remaining length takes two bytes
        messages = [(f"devices/m-{i}/state", b'{"n": %d}' % i) for i in range(50)]
        messages.append(("devices/big/state", b"x" * 300))
        t0 = time.perf_counter()
        achieved = paced(mosquitto.port, messages, [(200.0, 1.0)])   # 200 in one second
        took = time.perf_counter() - t0
        deadline = time.monotonic() + 5
        while len(got) < 200 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert len(got) == 200
    expected = [messages[i % len(messages)] for i in range(200)]
    assert [(t, p) for t, p, _q in got] == expected          # every one, in order, cycled
    assert {q for _t, _p, q in got} == {1}
    assert 180 <= achieved[0] <= 220 and 0.9 <= took < 3.0   # paced, not all at once
