"""Small builders for tests, examples and the benchmark: a site, a config, readings.

Not used by the engine itself.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from gateway.kernel.model import Kind, Reading, Value
from rules.site import DeviceInfo, HouseholdInfo, SiteIndex
from rules.spec import RulesConfig

__all__ = ["T0", "at", "config", "reading", "small_site"]

#: A Monday, 00:00 UTC (08:00 in Asia/Shanghai).
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    """``T0`` plus ``seconds``."""
    return T0 + timedelta(seconds=seconds)


def small_site(households: int = 2, tz: str = "Asia/Shanghai") -> SiteIndex:
    """Households ``h1..hN`` in cells ``g1``/``g2``, each living alone, each with devices
    ``caller-i``, ``smoke-i``, ``heat-i``, ``motion-i``, ``door-i``, ``water-i``, ``gas-i``."""
    hs, ds = [], []
    types = {"caller": "emergency_caller", "smoke": "smoke_detector", "heat": "heat_detector",
             "motion": "motion_sensor", "door": "door_contact", "water": "water_meter",
             "gas": "gas_detector"}
    for i in range(1, households + 1):
        cell = f"g{1 + (i - 1) % 2}"
        hs.append(HouseholdInfo(f"h{i}", cell, lives_alone=True))
        for prefix, dtype in types.items():
            ds.append(DeviceInfo(f"{prefix}-{i}", dtype, f"h{i}", cell))
    return SiteIndex.build(ds, hs, tz)


_MSG = {"zh": "{household_id} {device_id} 告警 {value}", "en": "{device_id} at {household_id}: "
        "{value}{unit} ({count})"}


def config(*rules: dict[str, Any], escalation: dict[str, Any] | None = None,
           **extra: Any) -> RulesConfig:
    """A validated config from rule dicts; ``category`` and ``message`` get defaults."""
    full = [{"category": "test_category", "message": _MSG, **r} for r in rules]
    data: dict[str, Any] = {"rules": full, **extra}
    if escalation is not None:
        data["escalation"] = escalation
    return RulesConfig.model_validate(data)


def reading(device_id: str, kind: str | Kind, value: Value, seconds: float,
            site: SiteIndex | None = None) -> Reading:
    """A reading at ``at(seconds)``, bound to its household when ``site`` knows the device."""
    r = Reading(device_id, Kind(kind), value, at(seconds))
    if site is not None and device_id in site.devices:
        d = site.devices[device_id]
        r = r.with_site(household_id=d.household_id, grid_cell=d.grid_cell,
                        device_type=d.device_type)
    return r
