"""The simulated community on the wire: its devices publish over MQTT, in accelerated time.

Contract:
- :func:`payload_for` turns a :class:`~simulators.household_sim.Report` into the JSON object
  the device would publish: Zigbee2MQTT shapes (``occupancy``, ``contact`` — true when
  *closed* —, ``smoke``, ``action: emergency``, ``battery``; only the changed attributes, as
  Zigbee2MQTT does with ``cache_state: false``) or the vendor JSON of the site's profiles
  (``{"event": "sos"}``, ``{"volume_m3": ...}``, ``{"energy_kwh": ..., "power_w": ...}``,
  ``{"result": "granted"}``; the demo's extras: a help key's ``action``, ``gas``,
  ``linkquality``, a valve's ``state``, a caller's 报平安 ``{"key": "ok"}``, a door lock's
  ``{"result": "granted", "card": ...}``). Decoding it with the device's profile gives back
  the report's readings (tested).
- :func:`run_community` publishes the community's reports on a virtual clock running
  ``speed`` simulated seconds per real second, starting at the community's origin, until
  cancelled or ``max_reports`` were sent; every ``press_every`` real seconds (on average) a
  random emergency caller is pressed as well (some presses cancelled), so that the console
  shows calls within seconds. The community's gas valves are simulated Zigbee2MQTT valves
  (:mod:`simulators.z2m_actuators`: they obey ``<name>/set`` and report their state); the
  valves' own reports in the stream (their heartbeat, a reopening by hand) go through them.
  Returns the number of messages sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time

import aiomqtt

from gateway.model import Kind
from simulators.community import DAY, Community, DeviceSpec
from simulators.devices import publish_on
from simulators.household_sim import Report
from simulators.z2m_actuators import Actuator, Actuators

__all__ = ["payload_for", "run_community"]

log = logging.getLogger(__name__)

_Z2M_FIELDS = {Kind.MOTION: "occupancy", Kind.SMOKE: "smoke", Kind.BATTERY: "battery",
               Kind.TEST: "test", Kind.GAS: "gas", Kind.SIGNAL: "linkquality",
               Kind.BUTTON: "action"}
_JSON_FIELDS = {Kind.WATER_VOLUME: "volume_m3", Kind.ENERGY: "energy_kwh",
                Kind.POWER: "power_w", Kind.ACCESS: "result", Kind.SMOKE: "smoke",
                Kind.BATTERY: "battery", Kind.TEST: "test"}
#: a JSON device's key: the 报平安 key of a caller, the card read by a door lock
_JSON_KEY = {"emergency_caller": "key", "door_access": "card"}


def payload_for(device: DeviceSpec, report: Report) -> dict:
    """The JSON object ``device`` publishes for ``report`` (see module contract)."""
    out: dict = {}
    for kind, value in report.values:
        if device.shape == "z2m":
            if kind is Kind.DOOR_OPEN:
                out["contact"] = not value
            elif kind is Kind.SOS:
                out.update({"action": "emergency"} if value else {"sos": False})
            elif kind is Kind.VALVE_OPEN:
                out["state"] = "ON" if value else "OFF"
            else:
                out[_Z2M_FIELDS[kind]] = value
        elif kind is Kind.SOS:
            out["event"] = "sos" if value else "cancel"
        elif kind is Kind.BUTTON:
            out[_JSON_KEY[device.type]] = value
        else:
            out[_JSON_FIELDS[kind]] = value
        if kind is Kind.BATTERY:
            out["battery"] = int(value)  # type: ignore[arg-type]
    return out


async def run_community(host: str, port: int, community: Community, *, speed: float = 60.0,
                        press_every: float | None = 20.0, max_reports: int | None = None,
                        seed: int = 0) -> int:
    """Publish the community's traffic (see module contract)."""
    if speed <= 0:
        raise ValueError("speed must be positive (simulated seconds per real second)")
    devices = {d.id: d for d in community.devices}
    callers = [d for d in community.devices if d.type == "emergency_caller"]
    rng = random.Random(seed)
    start = community.origin
    real0 = time.monotonic()
    sent = 0
    stream = community.reports(start, start + 365 * DAY, step=max(60.0, 10 * speed))
    valves = await asyncio.to_thread(_valves, host, port, community)
    async with contextlib.AsyncExitStack() as stack:
        if valves is not None:
            stack.push_async_callback(asyncio.to_thread, valves.stop)
        client = await stack.enter_async_context(aiomqtt.Client(
            host, port, identifier=f"sim-community-{rng.getrandbits(32):08x}",
            clean_session=True))
        next_press = _next_press(rng, press_every)
        while max_reports is None or sent < max_reports:
            batch = await asyncio.to_thread(next, stream, None)
            if batch is None:
                break
            for r in batch:
                due = real0 + (r.ts - start) / speed
                while True:   # presses due before this report go first
                    wait = min(due, next_press) - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    if next_press <= due and callers:
                        sent += await _press(client, rng.choice(callers), rng)
                        next_press = _next_press(rng, press_every)
                        continue
                    break
                d = devices[r.device_id]
                if valves is not None and d.type == "gas_valve":
                    _valve(valves, d, r)     # the simulated valve reports its own state
                else:
                    await publish_on(client, d.topic, json.dumps(payload_for(d, r)),
                                     qos=1 if any(k in _ALARM for k, _ in r.values) else 0)
                sent += 1
                if max_reports is not None and sent >= max_reports:
                    break
    return sent


_ALARM = frozenset({Kind.SOS, Kind.SMOKE, Kind.GAS, Kind.BUTTON})


def _valves(host: str, port: int, community: Community) -> Actuators | None:
    """The community's gas valves (Zigbee2MQTT, obeying ``<name>/set``), started; None
    without any."""
    names = [d.zigbee for d in community.devices if d.type == "gas_valve" and d.zigbee]
    if not names:
        return None
    return Actuators(port, [Actuator("valve", name) for name in names], host=host).start()


def _valve(valves: Actuators, d: DeviceSpec, r: Report) -> None:
    """A valve's report: opened by hand (``valve_open`` true) or its periodic state."""
    opened = next((v for k, v in r.values if k is Kind.VALVE_OPEN), None)
    assert d.zigbee is not None
    if opened is not None:
        valves.operate(d.zigbee, bool(opened))
    else:
        valves.report(valves.devices[d.zigbee])


def _next_press(rng: random.Random, press_every: float | None) -> float:
    if not press_every:
        return float("inf")
    return time.monotonic() + rng.expovariate(1.0 / press_every)


async def _press(client: aiomqtt.Client, caller: DeviceSpec, rng: random.Random) -> int:
    """One press of ``caller``'s button; three in ten are cancelled a moment later."""
    down = Report(0.0, caller.id, ((Kind.SOS, True),))
    await publish_on(client, caller.topic, json.dumps(payload_for(caller, down)), qos=1)
    log.info("demo: %s pressed SOS", caller.id)
    if rng.random() < 0.3:
        await asyncio.sleep(rng.uniform(2, 8))
        up = Report(0.0, caller.id, ((Kind.SOS, False),))
        await publish_on(client, caller.topic, json.dumps(payload_for(caller, up)), qos=1)
        return 2
    return 1
