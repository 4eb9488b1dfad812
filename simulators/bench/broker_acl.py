"""What a per-topic ACL costs the broker (issue 18, the alarm session's design).

``python -m simulators.bench broker_acl [--quick] [--alarm-topics N ...]``

Why the alarm session is split off by subscriptions and not by the broker's ACL
(docs/architecture.md "The alarm session"): an ACL that lets one account alone read the
alarm devices' topics needs a ``topic deny`` line per alarm device for the main account, and
mosquitto checks an account's lines one by one for every message it routes and delivers.

Each run: a Mosquitto (gateway.broker) whose ``gw`` account reads ``#`` after N deny lines
(topics nobody publishes) and whose ``gwa`` account reads those N topics (its session
subscribed to the same wildcard, as the ACL design had it); a persistent session of ``gw``
subscribed, then offline while an anonymous publisher sends ``--messages`` QoS 1 telemetry
messages (the broker routes each, checking both accounts); then ``gw`` connects and drains
them (the broker delivers each, checking again). Rates in messages/s; the ratio is against
N = 0 measured in the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho

__all__ = ["add_args", "run"]


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alarm-topics", type=int, nargs="+", default=[0, 2000, 20000],
                   help="deny lines of the main account (the first is the baseline)")
    p.add_argument("--messages", type=int, default=40_000)


def run(args: argparse.Namespace) -> dict:
    sizes = [0, 2000] if args.quick else list(args.alarm_topics)
    n = 10_000 if args.quick else args.messages
    runs = [_one(k, n) for k in sizes]
    base = runs[0]
    for r in runs:
        r["drain_ratio"] = round(r["drain_per_s"] / base["drain_per_s"], 3)
        r["route_ratio"] = round(r["route_per_s"] / base["route_per_s"], 3)
    return {"messages": n, "runs": runs}


def _client(port: int, cid: str, user: str | None = None) -> paho.Client:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=False)
    if user:
        c.username_pw_set(user, "pw-" + user)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def _subscribe_once(port: int, cid: str, user: str) -> None:
    done = threading.Event()
    c = _client(port, cid, user)
    c.on_subscribe = lambda *a: done.set()
    c.subscribe("devices/#", qos=1)
    if not done.wait(10):
        raise RuntimeError(f"{cid}: no SUBACK")
    c.disconnect()
    c.loop_stop()


def _one(deny: int, n: int) -> dict:
    from gateway.broker import Mosquitto

    topics = [f"devices/alarm-{i}" for i in range(deny)]
    acl = (["user gw", *[f"topic deny {t}" for t in topics], "topic read #", "",
            "user gwa", *[f"topic read {t}" for t in topics], ""])
    with tempfile.TemporaryDirectory(prefix="bench-acl-") as tmp:
        broker = Mosquitto(workdir=Path(tmp), persistence=False, max_queued=10 * n,
                           accounts={"gw": "pw-gw", "gwa": "pw-gwa"}, acl=acl).start()
        try:
            _subscribe_once(broker.port, "main", "gw")
            _subscribe_once(broker.port, "alarm", "gwa")
            pub = _client(broker.port, "publisher")
            t0 = time.perf_counter()
            infos = [pub.publish(f"devices/meter-{i % 5000}", b'{"energy": 1.5}', qos=1)
                     for i in range(n)]
            for info in infos:
                info.wait_for_publish(60)
            route_s = time.perf_counter() - t0
            pub.disconnect()
            pub.loop_stop()
            got, done = [0], threading.Event()

            def on_message(_c: paho.Client, _u: object, _m: paho.MQTTMessage) -> None:
                got[0] += 1
                if got[0] >= n:
                    done.set()

            t0 = time.perf_counter()
            c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="main",
                            clean_session=False)
            c.username_pw_set("gw", "pw-gw")
            c.on_message = on_message
            c.connect("127.0.0.1", broker.port)
            c.loop_start()
            done.wait(300)
            drain_s = time.perf_counter() - t0
            c.disconnect()
            c.loop_stop()
        finally:
            broker.cleanup()
    return {"deny_lines": deny, "route_per_s": round(n / route_s),
            "drain_per_s": round(got[0] / drain_s), "received": got[0]}
