"""Dead-sensor incidents of the simulated community (issue 15.6): every device of the home
stops reporting for good at the planted time, never on a trip, only in households living
alone without an inactivity incident; the resident's other households are untouched."""

from __future__ import annotations

from simulators.community import DAY, Community


def test_dead_sensors_stop_every_report_of_their_home():
    c = Community(48, seed=3)
    start = c.origin + 2 * DAY
    c.plant(start, start + 2 * DAY, 0.3)
    dead = c.plant_dead(start, start + 2 * DAY, 0.5)
    assert dead and all(d.household not in c.incidents for d in dead)
    assert all(c.by_id[d.household].lives_alone for d in dead)
    assert not any(c._on_trip(d.household, d.at) for d in dead)
    homes = {d.id: d.household for d in c.devices}
    at = {d.household: d.at for d in dead}
    seen_after: set[str] = set()
    seen_before: set[str] = set()
    for batch in c.reports(c.origin, start + 3 * DAY, step=6 * 3600.0):
        for r in batch:
            h = homes.get(r.device_id)
            if h in at:
                (seen_after if r.ts >= at[h] else seen_before).add(h)
    assert seen_after == set() and seen_before == set(at)
