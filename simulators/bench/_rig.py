"""What the whole-path benchmarks share (``path``, ``day``, ``ready``): a generated
community site for the real gateway process, a community-shaped MQTT workload, queued
QoS 1 sessions, and a process's memory, CPU and disk writes read from ``/proc``.

Everything runs on loopback; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from simulators.community import Community, DeviceSpec
from simulators.site_gen import write_site

__all__ = ["ProcStats", "Rig", "SITE_ID", "TOPICS", "Workload", "community_rig",
           "community_site", "forget", "metric", "prepare_session", "publish_all", "uptime"]

SITE_ID = "sim-community"
#: what the gateway (and the peers) subscribe to for a generated community
TOPICS = ("zigbee2mqtt/#", "devices/#")


def uptime() -> str:
    """The load average, as ``uptime`` prints it (every figure is stated with it)."""
    with open("/proc/loadavg", encoding="ascii") as fh:
        return " ".join(fh.read().split()[:3])


def wait_alarm_split(url: str, timeout_s: float = 60.0) -> None:
    """Until no alarm device of the gateway at ``url`` is still moving to its alarm session
    (none: one session). A move is once per new alarm device: a benchmark of the steady
    state waits for it."""
    import httpx

    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5.0) as c:
        while True:
            mqtt = c.get(f"{url}/healthz").json()["components"]["mqtt"]
            if not mqtt.get("alarm_session", {}).get("in_transition"):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"alarm devices still moving after {timeout_s:g} s: {mqtt}")
            time.sleep(0.2)


def community_site(dest: Path, households: int, mqtt_port: int, case_url: str, *,
                   seed: int = 0, telemetry: dict | None = None) -> Community:
    """Write the site of a simulated community of ``households`` (about 5.7 devices each:
    motion, door, smoke, water and electricity meters, emergency callers) to ``dest``;
    ``telemetry``: uplinks.yaml's ``telemetry`` section (default: the embedded one)."""
    community = Community(households, seed)
    write_site(dest, community, site_id=SITE_ID, mqtt_port=mqtt_port, case_url=case_url,
               fast=True)
    if telemetry is not None:
        with open(dest / "uplinks.yaml", "a", encoding="utf-8") as fh:
            fh.write("telemetry: " + json.dumps(telemetry) + "\n")
    return community


@dataclass(frozen=True, slots=True)
class Rig:
    """A benchmark's loopback world: its folder, Mosquitto, the simulated case system (its
    own process) and the community whose site is written to ``work / "site"``."""

    work: Path
    broker: Any
    case: Any
    community: Community

    def gateway(self, env: dict | None = None) -> Any:
        """``gateway run`` on the community's site (``simulators.bench.crash.GatewayProc``)."""
        from simulators.bench.crash import GatewayProc

        return GatewayProc(self.work / "site", self.work / "data",
                           {"CASE_SYSTEM_SECRET": self.case.secret, **(env or {})})


@contextlib.contextmanager
def community_rig(prefix: str, households: int, workdir: Path | None = None, *,
                  telemetry: dict | None = None, alarm_session: bool = True) -> Iterator[Rig]:
    """A :class:`Rig` for the ``with`` block; everything stopped and removed after it
    (``workdir``: kept there instead of a temporary folder). ``alarm_session=False``: the
    gateway with one MQTT session (gateway.yaml ``mqtt.alarm_session: false``)."""
    from gateway.broker import Mosquitto
    from simulators.bench._backlog import start_case_system

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        work = workdir or Path(tmp)
        broker = Mosquitto(workdir=work / "broker", persistence=False).start()
        case = None
        try:
            case = start_case_system(work / "case", key_id=SITE_ID)
            community = community_site(work / "site", households, broker.port, case.url,
                                       telemetry=telemetry)
            if not alarm_session:
                import yaml

                doc = yaml.safe_load((work / "site" / "gateway.yaml").read_text("utf-8"))
                doc["mqtt"]["alarm_session"] = False
                (work / "site" / "gateway.yaml").write_text(json.dumps(doc) + "\n", "utf-8")
            yield Rig(work, broker, case, community)
        finally:
            if case is not None:
                case.stop()
            broker.cleanup()


@dataclass(frozen=True, slots=True)
class Workload:
    """A community's traffic as ``(topic, payload)`` messages (see :meth:`messages`)."""

    community: Community

    def by_type(self, device_type: str, shape: str | None = None) -> list[DeviceSpec]:
        return [d for d in self.community.devices
                if d.type == device_type and (shape is None or d.shape == shape)]

    def messages(self, n: int, *, seed: int = 0, alarm_every: int = 1000, ias: bool = False
                 ) -> list[tuple[str, bytes]]:
        """``n`` messages: motion 35 %, doors 20 %, water meters 15 %, electricity meters
        15 % (energy and power), battery heartbeats 15 % (motion sensors, door contacts and
        smoke detectors); one in ``alarm_every`` is an emergency call (an SOS press on an
        emergency caller: alarm-class, through the inbox). ``ias``: a Zigbee2MQTT motion or
        door report also carries ``tamper: false`` and ``battery_low: false``, as
        zigbee-herdsman-converters' IAS zone converters (most PIR and door sensors) send
        them: an alarm-class restore in every such report."""
        rng = random.Random(seed)
        motion, doors = self.by_type("motion_sensor"), self.by_type("door_contact")
        water, power = self.by_type("water_meter"), self.by_type("electricity_meter")
        beats = motion + doors + self.by_type("smoke_detector", "z2m")
        callers = self.by_type("emergency_caller")
        out: list[tuple[str, bytes]] = []
        for i in range(n):
            if alarm_every and i % alarm_every == alarm_every // 2:
                d = rng.choice(callers)
                body: dict = ({"action": "emergency"} if d.shape == "z2m"
                              else {"event": "sos"})
            else:
                x = rng.random()
                if x < 0.55:
                    if x < 0.35:
                        d, body = rng.choice(motion), {"occupancy": rng.random() < 0.5}
                    else:
                        d, body = rng.choice(doors), {"contact": rng.random() < 0.6}
                    if ias and d.shape == "z2m":
                        body.update(tamper=False, battery_low=False)
                elif x < 0.70:
                    d, body = rng.choice(water), {"volume_m3": round(100 + i * 1e-4, 4)}
                elif x < 0.85:
                    d = rng.choice(power)
                    body = {"energy_kwh": round(1000 + i * 1e-3, 3),
                            "power_w": round(rng.uniform(50, 3000), 1)}
                else:
                    d, body = rng.choice(beats), {"battery": rng.randint(20, 100)}
            out.append((d.topic, json.dumps(body).encode()))
        return out


# ----------------------------------------------------------------------------- MQTT

def _client(client_id: str, clean: bool) -> paho.Client:
    return paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                       clean_session=clean)


def prepare_session(port: int, client_id: str, topics=TOPICS) -> None:
    """A persistent session subscribed at QoS 1, left at once: messages queue up for it."""
    subscribed = threading.Event()
    c = _client(client_id, False)
    c.on_subscribe = lambda *_a: subscribed.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.subscribe([(t, 1) for t in topics])
        if not subscribed.wait(10):
            raise RuntimeError(f"no SUBACK for {client_id} within 10 s")
    finally:
        c.disconnect()
        c.loop_stop()


def forget(port: int, client_id: str) -> None:
    """Drop a persistent session (later messages no longer queue for it)."""
    c = _client(client_id, True)
    c.connect("127.0.0.1", port)
    c.disconnect()


def publish_all(port: int, messages: list[tuple[str, bytes]], *, client_id: str = "bench-pub",
                timeout: float = 120.0) -> float:
    """Publish at QoS 1 as fast as the broker takes them; returns messages per second."""
    c = _client(client_id, True)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    t0 = time.perf_counter()
    try:
        for lo in range(0, len(messages), 1000):     # in chunks: paho's queue is unbounded
            infos = [c.publish(t, p, qos=1) for t, p in messages[lo:lo + 1000]]
            for info in infos:
                info.wait_for_publish(timeout=timeout)
                if not info.is_published():
                    raise RuntimeError("the broker did not take a message in time")
        return len(messages) / (time.perf_counter() - t0)
    finally:
        c.disconnect()
        c.loop_stop()


# ----------------------------------------------------------------------------- /proc

class ProcStats:
    """A process's resident memory, CPU time and bytes written, from ``/proc/PID``."""

    def __init__(self, pid: int):
        self.pid = pid
        self._tick = os.sysconf("SC_CLK_TCK")

    def _status(self, key: str) -> int:
        text = Path(f"/proc/{self.pid}/status").read_text()
        m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
        return int(m.group(1)) if m else 0

    def rss_mb(self) -> float:
        return self._status("VmRSS") / 1024

    def peak_rss_mb(self) -> float:
        return self._status("VmHWM") / 1024

    def cpu_s(self) -> float:
        """User + system CPU seconds of the process (all its threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._tick

    def io(self) -> dict[str, int]:
        """``/proc/PID/io``: ``write_bytes`` is what reached the block layer (page cache
        write-back included); ``wchar`` what the process asked to write."""
        out = {}
        for line in Path(f"/proc/{self.pid}/io").read_text().splitlines():
            k, v = line.split(":")
            out[k] = int(v)
        return out


def metric(text: str, name: str) -> float:
    """Sum of a metric's samples (every label set) in Prometheus text; 0 when absent."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name):len(name) + 1] in (" ", "{")):
            total += float(line.rsplit(" ", 1)[1])
    return total
