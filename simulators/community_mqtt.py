"""The simulated community on the wire: its devices publish over MQTT, in accelerated time.

Contract:
- :func:`payload_for` turns a :class:`~simulators.household_sim.Report` into the JSON object
  the device would publish: Zigbee2MQTT shapes (``occupancy``, ``contact`` — true when
  *closed* —, ``smoke``, ``action: emergency``, ``battery``; only the changed attributes, as
  Zigbee2MQTT does with ``cache_state: false``) or the vendor JSON of the site's profiles
  (``{"event": "sos"}``, ``{"volume_m3": ...}``, ``{"energy_kwh": ..., "power_w": ...}``,
  ``{"result": "granted"}``). Decoding it with the device's profile gives back the report's
  readings (tested).
- :func:`run_community` publishes the community's reports on a virtual clock running
  ``speed`` simulated seconds per real second, starting at the community's origin, until
  cancelled or ``max_reports`` were sent; every ``press_every`` real seconds (on average) a
  random emergency caller is pressed as well (some presses cancelled), so that the console
  shows calls within seconds. Returns the number of messages sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time

import aiomqtt

from gateway.model import Kind
from simulators.community import DAY, Community, DeviceSpec
from simulators.devices import publish_on
from simulators.household_sim import Report

__all__ = ["payload_for", "run_community"]

log = logging.getLogger(__name__)

_Z2M_FIELDS = {Kind.MOTION: "occupancy", Kind.SMOKE: "smoke", Kind.BATTERY: "battery",
               Kind.TEST: "test"}
_JSON_FIELDS = {Kind.WATER_VOLUME: "volume_m3", Kind.ENERGY: "energy_kwh",
                Kind.POWER: "power_w", Kind.ACCESS: "result", Kind.SMOKE: "smoke",
                Kind.BATTERY: "battery", Kind.TEST: "test"}


def payload_for(device: DeviceSpec, report: Report) -> dict:
    """The JSON object ``device`` publishes for ``report`` (see module contract)."""
    out: dict = {}
    for kind, value in report.values:
        if device.shape == "z2m":
            if kind is Kind.DOOR_OPEN:
                out["contact"] = not value
            elif kind is Kind.SOS:
                out.update({"action": "emergency"} if value else {"sos": False})
            else:
                out[_Z2M_FIELDS[kind]] = value
        elif kind is Kind.SOS:
            out["event"] = "sos" if value else "cancel"
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
    async with aiomqtt.Client(host, port, identifier=f"sim-community-{rng.getrandbits(32):08x}",
                              clean_session=True) as client:
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
                await publish_on(client, d.topic, json.dumps(payload_for(d, r)),
                                 qos=1 if any(k in _ALARM for k, _ in r.values) else 0)
                sent += 1
                if max_reports is not None and sent >= max_reports:
                    break
    return sent


_ALARM = frozenset({Kind.SOS, Kind.SMOKE})


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
