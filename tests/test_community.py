"""The simulated community: deterministic, incidents stop all activity, a valid site, and
payloads that the gateway's own profiles decode back into the same readings."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from drivers.profiles import decode_json
from gateway.model import Kind
from gateway.service import bindings_for
from gateway.site import load_site
from simulators.community import DAY, Community
from simulators.community_mqtt import payload_for

ACTIVITY = {Kind.MOTION, Kind.DOOR_OPEN, Kind.SOS}


def _all(c: Community, days: float, **kw) -> list:
    return [r for batch in c.reports(c.origin, c.origin + days * DAY, **kw) for r in batch]


def test_same_seed_same_community_and_reports_in_time_order():
    a, b = Community(12, seed=3), Community(12, seed=3)
    ra, rb = _all(a, 2), _all(b, 2)
    assert ra == rb and len(ra) > 1000
    assert all(x.ts <= y.ts for x, y in zip(ra, ra[1:]))
    assert _all(Community(12, seed=4), 2) != ra
    kinds = {k for r in ra for k, _ in r.values}
    assert {Kind.MOTION, Kind.DOOR_OPEN, Kind.WATER_VOLUME, Kind.ENERGY, Kind.BATTERY,
            Kind.ACCESS} <= kinds
    assert {h.kind for h in a.households} <= {"elderly_alone", "couple", "family"}


def test_a_planted_incident_stops_all_activity_but_not_the_devices(tmp_path):
    c = Community(30, seed=1)
    [inc, *_] = c.plant(c.origin + 1 * DAY, c.origin + 2 * DAY, share=0.2)
    assert inc.usual_activity_at > inc.at
    mine = {d.id for d in c.devices if d.household == inc.household}
    after = [r for r in _all(c, 4) if r.device_id in mine and r.ts >= inc.at]
    water = [v for r in after for k, v in r.values if k is Kind.WATER_VOLUME]
    assert not [r for r in after for k, v in r.values if k in ACTIVITY and v is True]
    assert len(set(water)) == 1, "no water drawn after the incident"
    assert any(k is Kind.BATTERY for r in after for k, _ in r.values), "heartbeats go on"
    before = [r for r in _all(c, 1) if r.device_id in mine]
    assert any(k is Kind.MOTION and v for r in before for k, v in r.values)
    c.write_truth(tmp_path / "truth.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines()]
    [row] = [r for r in rows if r["kind"] == "incident" and r["household"] == inc.household]
    assert datetime.fromisoformat(row["at"]) == datetime.fromtimestamp(inc.at, timezone.utc)


def test_generated_site_is_valid_and_every_payload_decodes_to_its_readings(tmp_path):
    from simulators.site_gen import write_site

    c = Community(30, seed=2)
    site = load_site(write_site(tmp_path / "site", c))
    assert len(site.site.households) == 30 and len(site.devices.devices) == len(c.devices)
    rule_ids = {r.id for r in site.rules.rules}
    assert {"inactivity", "inactivity_fixed", "sos", "smoke"} <= rule_ids
    learned = next(r for r in site.rules.rules if r.id == "inactivity")
    assert learned.baseline is not None and Kind.ENERGY not in learned.sources
    bindings = {b.device_id: b for b in bindings_for(site).values()}
    specs = {d.id: d for d in c.devices}
    seen: set[tuple[str, str]] = set()
    now = datetime.fromtimestamp(c.origin, timezone.utc)
    for r in _all(c, 1):
        d = specs[r.device_id]
        payload = json.dumps(payload_for(d, r))
        got = decode_json(bindings[d.id].profile, d.id, payload, now)
        assert [(x.kind, x.value) for x in got] == list(r.values), (d.id, payload)
        seen.add((d.type, d.shape))
    assert ("motion_sensor", "z2m") in seen and ("water_meter", "json") in seen
    assert ("door_access", "json") in seen


def test_a_trip_always_starts_with_the_resident_at_home():
    """A stay away starts from home: a resident out on an outing at the planned departure
    comes home first (door), is active, then leaves (door); nothing until the return."""
    c = Community(40, seed=0)
    alone = [h for h in c.households if h.lives_alone]
    trips = [(h, s, e) for h in alone for s, e in c.trips(h)]
    assert len(trips) > 20
    for h, s, e in trips:
        key, persona = h.residents[0]
        assert c._plan_at(key, persona, s).at_home(s), (h.id, s)
        assert c._plan_at(key, persona, e).at_home(e), (h.id, e)
    hours = [datetime.fromtimestamp(s, c.zone).hour for _, s, _ in trips]
    assert any(x >= 11 for x in hours), "some departures waited for the resident to come home"
    moved = [(h, s, e) for h, s, e in trips if datetime.fromtimestamp(s, c.zone).hour >= 11]
    for h, s, _e in moved[:4]:     # the devices tell the same story
        mine = {d.id: d.type for d in c.devices if d.household == h.id}
        seen = [(r.ts, mine[r.device_id], v) for batch in c.reports(s - 6 * 3600, s + 3600,
                                                                    households=[h.id],
                                                                    shared=False)
                for r in batch for k, v in r.values if k in (Kind.MOTION, Kind.DOOR_OPEN)]
        doors = [ts for ts, t, v in seen if t == "door_contact" and v is True]
        assert s in doors, "the door opens when the resident leaves"
        came_home = max(ts for ts in doors if ts < s)
        assert any(t == "motion_sensor" and v is True and came_home < ts < s
                   for ts, t, v in seen), "active at home between coming home and leaving"
        assert not [ts for ts, t, v in seen if v is True and s < ts], "nothing while away"
