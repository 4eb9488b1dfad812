"""Gas alarm -> valve command on the wire, idle and under telemetry at half the ingest capacity
(issue 16). Bar: p99 <= 100 ms under the load.

The real gateway (``gateway run``, a process of its own) on a local Mosquitto, the example
site grown by ``--households`` households, each with a Zigbee2MQTT gas detector and one gas
valve: every other household's valve is a Zigbee2MQTT valve (simulators/z2m_actuators.py,
it obeys ``/set`` and reports its state), the others' a Modbus valve controller
(``modbus-gas-valve``, coil 0) on one Modbus TCP bus served by a pymodbus server in a
process of its own (``python -m simulators.modbus_meters --log-writes``: it prints each
write with its ``time.monotonic()``, one clock for every process on Linux). The site's gas
rule closes the household's valve.

One sample: the detector publishes ``{"gas": true}`` (QoS 1); the time until the valve
command is on the wire: the ``zigbee2mqtt/<valve>/set`` message reaches a subscriber of this
process, or the coil write reaches the Modbus server. Each household gives one sample (a new
alarm each time), one sample in flight at a time.

1. idle: half of the households, no other traffic (the baseline);
2. capacity: the gateway's ingest rate, measured in this run: a burst of ``--burst``
   Zigbee2MQTT temperature messages (QoS 1, from ``PUBLISHERS`` ``mosquitto_pub -l``
   processes, faster than the gateway takes them) and the time until the gateway counted
   them all (``gateway_ingest_messages_total{transport="mqtt"}``);
3. load: the other half while temperature sensors publish at ``--load-share`` (0.5) of the
   capacity.

Where the time goes (``breakdown``, medians and p99 per phase, from the steps' wall-clock
times the gateway keeps in ``alarm_events``): ``to_raised`` (publish -> the alarm's raise
transaction: broker, intake, durable inbox, rules, alarm book), ``to_requested`` (-> the
linkage's ``command_requested``, its resolve transaction), ``to_wire`` (-> the command on the
wire, as above); ``requested_to_wire_<transport>`` is the writer's own share (the
Zigbee2MQTT writer's publish and the broker; the Modbus bus's queue, the poll in progress
and the write).

Figures: p50/p95/p99/max per phase and per transport, ``p99_load_vs_idle`` (the ratio to the
baseline of this run), the load actually offered and ingested, ``meets_bar``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import paho.mqtt.client as paho
from ruamel.yaml import YAML

from gateway.broker import Mosquitto, free_port
from simulators.bench.crash import GatewayProc
from simulators.modbus_meters import MeterProcess
from simulators.z2m_actuators import Actuator, Actuators

__all__ = ["add_args", "run"]

EXAMPLE = Path(__file__).resolve().parents[2] / "edge_config" / "examples" / "tianlin"
SENSORS = 50                     # temperature sensors carrying the background load
PUBLISHERS = 4                   # mosquitto_pub processes carrying it (one sensor each)
BAR_P99_MS = 100.0


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--households", type=int, default=200,
                   help="households with a detector and a valve: half idle, half under load")
    p.add_argument("--burst", type=int, default=20_000, help="messages of the capacity burst")
    p.add_argument("--load-share", type=float, default=0.5,
                   help="the background load as a share of the measured ingest capacity")
    p.add_argument("--gap", type=float, default=0.25, help="seconds between two samples")


# ------------------------------------------------------------------------------- the site
def _name(i: int) -> str:
    return f"hb-{i:03d}"


def _site(dest: Path, households: int, mqtt_port: int, modbus_port: int) -> None:
    shutil.copytree(EXAMPLE, dest)
    yaml = YAML()
    site = yaml.load((dest / "site.yaml").read_text(encoding="utf-8"))
    for i in range(households):
        site["households"].append({"id": f"h-b-{i:03d}", "address": f"田林路300弄{i}号101室",
                                   "grid_cell": "310104-012-03",
                                   "residents": [{"name": "测试"}]})
    with open(dest / "site.yaml", "w", encoding="utf-8") as fh:
        yaml.dump(site, fh)
    devices = []
    for i in range(households):
        n = _name(i)
        devices.append(f"  - id: gas-{n}\n    type: gas_detector\n    household: h-b-{i:03d}\n"
                       f"    mqtt: {{zigbee2mqtt: \"{n}/gas\"}}\n")
        if i % 2 == 0:
            devices.append(f"  - id: valve-{n}\n    type: gas_valve\n    household: h-b-{i:03d}"
                           f"\n    mqtt: {{zigbee2mqtt: \"{n}/gas-valve\"}}\n")
        else:
            devices.append(f"  - id: valve-{n}\n    type: gas_valve\n    household: h-b-{i:03d}"
                           f"\n    modbus: {{bus: valves, unit: {_unit(i)}}}\n")
    for s in range(SENSORS):
        devices.append(f"  - id: temp-{s:02d}\n    type: temperature_sensor\n"
                       f"    household: h-b-000\n    mqtt: {{zigbee2mqtt: \"tmp-{s:02d}\"}}\n")
    with open(dest / "devices.yaml", "a", encoding="utf-8") as fh:
        fh.write("".join(devices))
    (dest / "gateway.yaml").write_text(
        f"mqtt:\n  host: 127.0.0.1\n  port: {mqtt_port}\n  max_payload_bytes: 4096\n"
        f"modbus_buses:\n  - {{id: valves, tcp: {{host: 127.0.0.1, port: {modbus_port}}}, "
        f"period_s: 1.0, timeout_s: 0.3}}\n"
        f"linkage:\n  confirm_timeout_s: 5\n  attempts: 1\n  rate_limit: 100\n")
    (dest / "uplinks.yaml").write_text("{}\n")


def _unit(i: int) -> int:
    return i // 2 + 1            # the odd households' valves: units 1, 2, ...


# --------------------------------------------------------------------------- the peers
class _Wire:
    """A subscriber to every Zigbee2MQTT valve's ``/set``: first arrival time per valve."""

    def __init__(self, port: int):
        self.seen: dict[str, float] = {}
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-wire")
        subscribed = threading.Event()

        def on_connect(c: paho.Client, *_: object) -> None:
            c.subscribe("zigbee2mqtt/+/gas-valve/set", qos=0)
            subscribed.set()

        def on_message(c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
            self.seen.setdefault(m.topic.split("/")[1], time.monotonic())

        self.c.on_connect = on_connect
        self.c.on_message = on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("the /set subscriber did not connect")

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


class _Devices:
    """The detectors and temperature sensors: one publishing client (QoS 1)."""

    def __init__(self, port: int):
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-devices")
        self.c.max_inflight_messages_set(1000)
        self.c.max_queued_messages_set(0)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.lock = threading.Lock()

    def publish(self, topic: str, payload: dict) -> paho.MQTTMessageInfo:
        with self.lock:
            return self.c.publish(topic, json.dumps(payload), qos=1)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


# ------------------------------------------------------------------------------ phases
def _ingested(gw: GatewayProc) -> float:
    text = httpx.get(f"{gw.url}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("gateway_ingest_messages_total{") and 'transport="mqtt"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _line(i: int) -> bytes:
    return json.dumps({"temperature": 20 + (i % 50) / 10, "linkquality": 100}).encode() + b"\n"


def _publishers(port: int) -> list[subprocess.Popen]:
    """``mosquitto_pub -l`` per sensor 0..PUBLISHERS-1: a line on its stdin is a message."""
    return [subprocess.Popen(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1",
                              "-M", "1000", "-i", f"bench-load-{k}", "-t",
                              f"zigbee2mqtt/tmp-{k:02d}", "-l"],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
            for k in range(PUBLISHERS)]


def _close(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.stdin is not None and not p.stdin.closed:
            p.stdin.close()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def _capacity(gw: GatewayProc, port: int, burst: int) -> dict:
    """Messages per second the gateway ingests of a burst published faster than it takes
    them (the broker queues the rest for its session)."""
    before = _ingested(gw)
    procs = _publishers(port)
    t0 = time.monotonic()
    for k, p in enumerate(procs):
        assert p.stdin is not None
        p.stdin.write(b"".join(_line(i) for i in range(k, burst, PUBLISHERS)))
    _close(procs)
    published = time.monotonic() - t0
    deadline = time.monotonic() + 120
    while (got := _ingested(gw) - before) < burst and time.monotonic() < deadline:
        time.sleep(0.02)
    took = time.monotonic() - t0
    return {"burst": burst, "ingested": int(got), "per_s": round(got / took),
            "publishers_per_s": round(burst / published)}


class _Load(threading.Thread):
    """Temperature messages at ``rate`` per second over the publishers, paced per 10 ms,
    until stopped."""

    def __init__(self, port: int, rate: float):
        super().__init__(name="bench-load", daemon=True)
        self.procs = _publishers(port)
        self.rate = rate
        self.stopped = threading.Event()
        self.sent = 0
        self.seconds = 0.0

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stopped.is_set():
            due = int((time.monotonic() - t0) * self.rate)
            chunks: list[list[bytes]] = [[] for _ in self.procs]
            for i in range(self.sent, due):
                chunks[i % len(self.procs)].append(_line(i))
            for p, lines in zip(self.procs, chunks):
                if lines:
                    assert p.stdin is not None
                    p.stdin.write(b"".join(lines))
                    p.stdin.flush()
            self.sent = max(self.sent, due)
            self.stopped.wait(0.01)
        self.seconds = time.monotonic() - t0
        _close(self.procs)


def _samples(households: range, devices: _Devices, wire: _Wire, valves: MeterProcess,
             gap: float, sent_at: dict[int, tuple[float, float]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"zigbee2mqtt": [], "modbus": [], "missed": []}
    for i in households:
        n = _name(i)
        t0 = time.monotonic()
        sent_at[i] = (time.time(), t0)
        devices.publish(f"zigbee2mqtt/{n}/gas", {"gas": True, "battery": 90})
        deadline = t0 + 5.0
        z2m = i % 2 == 0
        while time.monotonic() < deadline:
            t1 = wire.seen.get(n) if z2m else valves.first_write(_unit(i))
            if t1 is not None:
                out["zigbee2mqtt" if z2m else "modbus"].append((t1 - t0) * 1000)
                break
            time.sleep(0.001)
        else:
            out["missed"].append(float(i))
        time.sleep(gap)
    return out


def _breakdown(db: Path, households: range, sent_at: dict[int, tuple[float, float]],
               wire: _Wire, valves: MeterProcess) -> dict:
    """Medians and p99 (ms) of the path's segments, from the gateway's alarm_events."""
    steps: dict[str, list[float]] = {"to_raised": [], "to_requested": [], "to_wire": [],
                                     "requested_to_wire_zigbee2mqtt": [],
                                     "requested_to_wire_modbus": []}
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        for i in households:
            if i not in sent_at:
                continue
            wall0, mono0 = sent_at[i]
            rows = conn.execute(
                "SELECT e.action, e.ts FROM alarm_events e JOIN alarms a ON a.id = e.alarm_id "
                "WHERE a.device_id = ? AND e.action IN ('raised', 'command_requested') "
                "ORDER BY e.id", (f"gas-{_name(i)}",)).fetchall()
            at = {action: datetime.fromisoformat(ts).timestamp() for action, ts in rows}
            wired = wire.seen.get(_name(i)) if i % 2 == 0 else valves.first_write(_unit(i))
            if "raised" not in at or "command_requested" not in at or wired is None:
                continue
            steps["to_raised"].append((at["raised"] - wall0) * 1000)
            steps["to_requested"].append((at["command_requested"] - wall0) * 1000)
            steps["to_wire"].append((wired - mono0) * 1000)
            writer = "requested_to_wire_" + ("zigbee2mqtt" if i % 2 == 0 else "modbus")
            steps[writer].append((wired - mono0) * 1000 - steps["to_requested"][-1])
    return {k: {"p50_ms": round(statistics.median(v), 1), "p99_ms": _stats(v).get("p99_ms")}
            for k, v in steps.items() if v}


def _stats(ms: list[float]) -> dict:
    if not ms:
        return {"n": 0}
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 1), "p95_ms": round(q[94], 1),
            "p99_ms": round(q[98], 1), "max_ms": round(max(ms), 1)}


def _phase(s: dict[str, list[float]]) -> dict:
    both = s["zigbee2mqtt"] + s["modbus"]
    return {"all": _stats(both), "zigbee2mqtt": _stats(s["zigbee2mqtt"]),
            "modbus": _stats(s["modbus"]), "missed": len(s["missed"])}


def run(args: argparse.Namespace) -> dict:
    households = 40 if args.quick else args.households
    burst = 10_000 if args.quick else args.burst
    half = households // 2
    with tempfile.TemporaryDirectory(prefix="bench-linkage-") as tmp, \
            contextlib.ExitStack() as stack:
        work = Path(tmp)
        broker = Mosquitto(workdir=work / "broker", persistence=False).start()
        stack.callback(broker.cleanup)
        modbus_port = free_port()
        valves = MeterProcess(modbus_port, [_unit(i) for i in range(1, households, 2)],
                              "modbus-gas-valve")
        stack.callback(valves.stop)
        _site(work / "site", households, broker.port, modbus_port)
        gw = GatewayProc(work / "site", work / "data", {})
        stack.callback(gw.stop)
        actuators = Actuators(broker.port, [Actuator("valve", f"{_name(i)}/gas-valve")
                                            for i in range(0, households, 2)]).start()
        stack.callback(actuators.stop)
        wire = _Wire(broker.port)
        stack.callback(wire.close)
        devices = _Devices(broker.port)
        stack.callback(devices.close)
        gw.start()
        gw.wait_ready(60)
        time.sleep(2.0)                   # the Modbus bus connects, every valve polled once
        sent_at: dict[int, tuple[float, float]] = {}
        idle = _samples(range(0, half), devices, wire, valves, args.gap, sent_at)
        capacity = _capacity(gw, broker.port, burst)
        time.sleep(2.0)                   # the gateway's queues behind the burst drain
        rate = capacity["per_s"] * args.load_share
        load = _Load(broker.port, rate)
        stack.callback(load.stopped.set)
        before = _ingested(gw)
        load.start()
        time.sleep(1.0)                   # the load settles before the first sample
        loaded = _samples(range(half, households), devices, wire, valves, args.gap, sent_at)
        load.stopped.set()
        load.join(30)
        ingested = _ingested(gw) - before
        db = work / "data" / "gateway.db"
        breakdown = {"idle": _breakdown(db, range(0, half), sent_at, wire, valves),
                     "under_load": _breakdown(db, range(half, households), sent_at, wire,
                                              valves)}
    res_idle, res_load = _phase(idle), _phase(loaded)
    p99_idle, p99_load = res_idle["all"].get("p99_ms"), res_load["all"].get("p99_ms")
    return {
        "households": households, "samples_per_phase": half,
        "capacity": capacity,
        "load": {"share": args.load_share, "target_per_s": round(rate),
                 "offered_per_s": round(load.sent / load.seconds) if load.seconds else 0,
                 "ingested_per_s": round(ingested / load.seconds) if load.seconds else 0},
        "idle": res_idle, "under_load": res_load, "breakdown": breakdown,
        "p99_load_vs_idle": round(p99_load / p99_idle, 2) if p99_idle and p99_load else None,
        "bar_p99_ms": BAR_P99_MS,
        "meets_bar": bool(p99_load is not None and p99_load <= BAR_P99_MS
                          and not res_load["missed"]),
    }
