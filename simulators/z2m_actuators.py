"""Simulated Zigbee2MQTT actuators: a valve controller, a siren and a smart plug that obey
``zigbee2mqtt/<friendly_name>/set`` and report their state on ``zigbee2mqtt/<friendly_name>``
the way Zigbee2MQTT publishes it (a whole state object after each change).

- valve (Tuya ZN231392-like): ``{"state": "ON"|"OFF"}`` sets it; reports ``state`` (ON =
  open), ``battery``, ``linkquality``.
- siren (an IAS WD siren that reports ``alarm``): ``{"warning": {"mode": ..., "duration":
  s}}`` sounds it (``mode: stop`` silences it), ``{"alarm": true|false}`` too; reports
  ``alarm`` (true / false). A sounding siren stops by itself after ``duration`` seconds.
- plug: ``{"state": "ON"|"OFF"}``; reports ``state``, ``power``.

``answer=False`` makes a device that takes commands and never reports (a dead or jammed
one: the gateway's "command not confirmed"). Every command received is kept in ``received``
(topic, payload) so tests can count what went on the wire.

``python -m simulators.z2m_actuators --port 1883 valve:h7-101/gas-valve siren:cell-4/siren``
runs them against a broker until interrupted.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho

__all__ = ["Actuator", "Actuators"]

BASE = "zigbee2mqtt"


@dataclass
class Actuator:
    """One simulated device: ``kind`` valve, siren or plug; ``name`` its friendly name."""

    kind: str
    name: str
    answer: bool = True
    on: bool = True            # valve open / plug on; a siren starts silent (set in init)
    received: list[dict[str, Any]] = field(default_factory=list)
    _siren_until: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("valve", "siren", "plug"):
            raise ValueError(f"unknown actuator kind {self.kind!r}")
        if self.kind == "siren":
            self.on = False

    def state(self) -> dict[str, Any]:
        if self.kind == "siren":
            return {"alarm": self.on, "battery": 100, "linkquality": 120}
        if self.kind == "plug":
            return {"state": "ON" if self.on else "OFF", "power": 812.0 if self.on else 0.0,
                    "linkquality": 140}
        return {"state": "ON" if self.on else "OFF", "battery": 90, "linkquality": 110}

    def apply(self, payload: dict[str, Any]) -> bool:
        """Take one /set payload; True when it changed or re-asserted the state."""
        self.received.append(payload)
        if self.kind == "siren":
            if "warning" in payload and isinstance(payload["warning"], dict):
                w = payload["warning"]
                self.on = w.get("mode", "emergency") != "stop" and int(w.get("duration", 10)) > 0
                self._siren_until = time.monotonic() + int(w.get("duration", 10))
                return True
            if "alarm" in payload:
                self.on = bool(payload["alarm"])
                self._siren_until = time.monotonic() + 180
                return True
            return False
        if "state" in payload and payload["state"] in ("ON", "OFF"):
            self.on = payload["state"] == "ON"
            return True
        return False


class Actuators:
    """The devices on one broker connection (paho's own thread)."""

    def __init__(self, port: int, devices: list[Actuator], host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self.devices = {d.name: d for d in devices}
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                                   client_id=f"z2m-actuators-{id(self):x}")
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._subscribed = threading.Event()
        self._lock = threading.Lock()

    def __enter__(self) -> Actuators:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> Actuators:
        self._client.connect(self.host, self.port)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise TimeoutError(f"actuators: no subscription on {self.host}:{self.port}")
        for d in self.devices.values():       # the state Zigbee2MQTT has retained
            self.report(d)
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def report(self, d: Actuator) -> None:
        if d.answer:
            self._client.publish(f"{BASE}/{d.name}", json.dumps(d.state()), qos=1)

    def operate(self, name: str, on: bool) -> None:
        """A change made at the device itself (a valve reopened by hand), reported like a
        commanded one."""
        d = self.devices[name]
        with self._lock:
            d.on = on
            self.report(d)

    def tick(self) -> None:
        """End sirens whose duration has passed (and report it)."""
        now = time.monotonic()
        for d in self.devices.values():
            if d.kind == "siren" and d.on and now >= d._siren_until:
                d.on = False
                self.report(d)

    def _on_connect(self, client: paho.Client, _u: object, _f: object, rc: Any,
                    _p: object = None) -> None:
        client.subscribe([(f"{BASE}/{name}/set", 1) for name in self.devices])
        self._subscribed.set()

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        name = msg.topic[len(BASE) + 1:-len("/set")]
        d = self.devices.get(name)
        if d is None:
            return
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            return
        with self._lock:
            if isinstance(payload, dict) and d.apply(payload):
                self.report(d)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("devices", nargs="+", help="kind:friendly_name (kind valve, siren, plug)")
    args = ap.parse_args(argv)
    devices = [Actuator(*spec.split(":", 1)) for spec in args.devices]
    with Actuators(args.port, devices, host=args.host) as acts:
        print(f"{len(devices)} Zigbee2MQTT actuators on {args.host}:{args.port}; Ctrl-C ends")
        try:
            while True:
                time.sleep(1)
                acts.tick()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
