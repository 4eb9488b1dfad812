"""A device's last readings in device health (``GET /api/devices/{id}/readings``) are kept
compact (issue 18, "day": 20 ``Reading`` objects a device were 23 MB of a 5,000-device site)
and given back exactly: the same readings, oldest first, the newest 20."""

from __future__ import annotations

import tracemalloc
from datetime import datetime, timedelta, timezone

from gateway.health import RECENT_READINGS, HealthBook
from gateway.model import Kind, Quality, Reading

T0 = datetime(2026, 12, 6, 8, 0, 0, 123457, tzinfo=timezone.utc)


def _readings(n: int, device: str = "power-1") -> list[Reading]:
    out = []
    for i in range(n):
        ts = T0 + timedelta(seconds=60 * i, microseconds=i)
        if i % 3 == 0:
            out.append(Reading(device, Kind.POWER, 100.5 + i, ts, "W",
                               device_type="electricity_meter", household_id="h-1",
                               grid_cell="g-1", metric="power_w"))
        elif i % 3 == 1:
            out.append(Reading(device, Kind.ENERGY, None, ts, "kWh", Quality.BAD,
                               "electricity_meter", "h-1", "g-1", "energy_kwh"))
        else:
            out.append(Reading(device, Kind.TAMPER, i % 2 == 0, ts,
                               device_type="electricity_meter", household_id="h-1",
                               grid_cell="g-1", metric="tamper"))
    return out


def test_the_last_readings_come_back_as_they_were_newest_20() -> None:
    book = HealthBook([("power-1", "electricity_meter", "h-1", "g-1"),
                       ("door-1", "door_contact", "h-1", "g-1")])
    assert book.devices["power-1"].readings() == []
    sent = _readings(47)
    for r in sent:
        book.seen(r)
    assert book.devices["power-1"].readings() == sent[-RECENT_READINGS:]
    assert book.devices["door-1"].readings() == []
    # a time with another offset comes back as the same instant, in UTC
    shanghai = timezone(timedelta(hours=8))
    r = Reading("door-1", Kind.DOOR_OPEN, True, datetime(2026, 12, 6, 16, 1, tzinfo=shanghai),
                device_type="door_contact", household_id="h-1", grid_cell="g-1",
                metric="contact")
    book.seen(r)
    [back] = book.devices["door-1"].readings()
    assert back.ts == r.ts and back.ts.utcoffset() == timedelta(0)
    assert back.to_json()["ts"] == "2026-12-06T08:01:00+00:00"
    assert {k: v for k, v in back.to_json().items() if k != "ts"} == \
        {k: v for k, v in r.to_json().items() if k != "ts"}


def test_a_devices_last_readings_take_under_a_kilobyte() -> None:
    devices = [(f"power-{i}", "electricity_meter", "h-1", "g-1") for i in range(500)]
    book = HealthBook(devices)
    batches = [_readings(RECENT_READINGS, device=d) for d, *_ in devices]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for batch in batches:
            for r in batch:
                book.seen(r)
        del batch, r
        per_device = (tracemalloc.get_traced_memory()[0] - before) / len(devices)
    finally:
        tracemalloc.stop()
    # (the readings were made before: what is counted is what health makes to keep them)
    print(f"{per_device:.0f} bytes a device")
    assert per_device < 1024
