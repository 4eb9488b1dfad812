"""The demo community's extras (simulators/community_extras.py): help keys, the daily
check-in, special-difficulty households with visits, kitchens with a gas valve — a valid
site with all of them, payloads that decode back into their readings, a plain community
left exactly as it was (the benchmarks'), and a short accelerated run against a real
gateway: help requests, check-ins and a gas leak whose valve the gateway closes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from drivers.profiles import decode_json
from gateway.model import Kind
from gateway.service import bindings_for
from gateway.site import load_site
from simulators.community import DAY, Community
from simulators.community_extras import CHECKIN_KEY, HELP_CATEGORIES, HELP_KEYS, Extras
from simulators.community_mqtt import payload_for
from simulators.site_gen import write_site
from tests.support import VENV_BIN, GatewayProcess, wait_for

SPEED = 600.0


def _all(c: Community, days: float) -> list:
    return [r for batch in c.reports(c.origin, c.origin + days * DAY) for r in batch]


def test_the_demo_site_validates_with_help_keys_checkin_visits_and_valves(tmp_path):
    c = Community(60, seed=2, extras=Extras(speed=SPEED))
    x = c.extras
    assert x is not None and x.help_keys and x.checkin and x.special and x.gas
    path = write_site(tmp_path / "site", c, time_scale=SPEED)
    res = subprocess.run([str(VENV_BIN / "gateway"), "config", "validate", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    site = load_site(path)
    assert {k: (v.zh, v.en) for k, v in site.site.help_categories.items()} == HELP_CATEGORIES
    devices = {d.id: d for d in site.devices.devices}
    for caller in x.help_keys:
        assert devices[caller].help_actions == HELP_KEYS
    [checkin] = [r for r in site.rules.rules if r.kind == "checkin"]
    assert checkin.households == sorted(x.checkin)
    assert (checkin.opens, checkin.by) == (x.checkin_opens, x.checkin_by)
    assert site.site.response["checkin_missed"].call_plan[0] == "resident"
    special = {h.id for h in site.site.households if h.special_difficulty}
    assert special == set(x.special)
    for hid, lock in x.special.items():
        cards = devices[lock].visit_cards or {}
        assert devices[lock].household == hid and len(cards) == 2
        assert any(v.startswith("志愿者") for v in cards.values())
    for hid, (detector, valve) in x.gas.items():
        assert (devices[detector].type, devices[valve].type) == ("gas_detector", "gas_valve")
        assert devices[valve].household == devices[detector].household == hid
    gas = next(r for r in site.rules.rules if r.id == "gas")
    assert [(t.action, t.target.household, t.target.type) for t in gas.then] == [
        ("close_valve", "same", "gas_valve")]
    assert gas.auto_resolve_on_clear is False      # the card (已自动关阀) stays for staff
    # every report of the extras' devices decodes back into its readings
    bindings = {b.device_id: b for b in bindings_for(site).values()}
    specs = {d.id: d for d in c.devices}
    now = datetime.fromtimestamp(c.origin, timezone.utc)
    extra_ids = ({*x.help_keys, *x.checkin.values(), *x.special.values()}
                 | {d for pair in x.gas.values() for d in pair})
    seen = set()
    for r in _all(c, 8):
        if r.device_id in extra_ids:
            d = specs[r.device_id]
            got = decode_json(bindings[d.id].profile, d.id, json.dumps(payload_for(d, r)), now)
            assert [(g.kind, g.value) for g in got] == list(r.values), (d.id, r)
            seen |= {(d.type, k) for k, _ in r.values}
    assert {("emergency_caller", Kind.BUTTON), ("door_access", Kind.BUTTON),
            ("gas_detector", Kind.GAS), ("gas_valve", Kind.VALVE_OPEN)} <= seen


def test_a_community_without_extras_is_exactly_as_it_was(tmp_path):
    """The benchmarks' community: the extras only add (devices and key presses)."""
    plain = Community(30, seed=1)
    extra = Community(30, seed=1, extras=Extras(speed=SPEED))
    assert plain.extras is None
    assert [(d.id, d.type, d.zigbee) for d in extra.devices[:len(plain.devices)]] == [
        (d.id, d.type, d.zigbee) for d in plain.devices]     # (help callers renamed)
    new = {d.id for d in extra.devices[len(plain.devices):]}
    assert new
    added = [r for r in _all(extra, 2) if r.device_id in new
             or any(k is Kind.BUTTON for k, _ in r.values)]
    assert [r for r in _all(extra, 2) if r not in added] == _all(plain, 2)
    site = load_site(write_site(tmp_path / "plain", plain, time_scale=SPEED))
    assert not site.site.help_categories
    assert not any(h.special_difficulty for h in site.site.households)
    assert not [r for r in site.rules.rules if r.kind == "checkin" or r.then]
    assert not (tmp_path / "plain" / "profiles" / "json-door-reader.yaml").exists()


def test_help_presses_checkins_visits_and_leaks_over_simulated_days():
    c = Community(120, seed=0, extras=Extras(speed=SPEED))
    x = c.extras
    assert x is not None and x.forgets_first_day in x.checkin
    days = 6
    reports = _all(c, days)
    helps = [r for r in reports if r.device_id in x.help_keys
             and any(k is Kind.BUTTON for k, _ in r.values)]
    assert 1 <= len(helps) / days <= 6, "a few help requests a simulated day"
    # presses by day (the resident awake), never at night
    hours = {datetime.fromtimestamp(r.ts, c.zone).hour for r in helps}
    assert not hours & {1, 2, 3}
    # check-ins: the first real day's window maps to simulated time; one forgets it
    to_sim = lambda real: c.origin + (real - c.origin) * SPEED  # noqa: E731
    local = datetime.fromtimestamp(c.origin, c.zone).replace(hour=0, minute=0, second=0)
    by = to_sim(local.timestamp() + x.checkin_by * 60)
    presses = {}
    for r in reports:
        if r.values == ((Kind.BUTTON, CHECKIN_KEY),):
            presses.setdefault(r.device_id, []).append(r.ts)
    forgetful = x.checkin[x.forgets_first_day]
    on_time = {d for d, ts in presses.items() if min(ts) < by}
    assert forgetful not in on_time and len(on_time) >= len(x.checkin) - 2
    # visits: the visited households within the first simulated week, the others never
    visits = {r.device_id for r in reports if r.device_id in x.special.values()
              and any(k is Kind.BUTTON for k, _ in r.values)}
    assert visits == {x.special[h] for h in x.visited}
    assert 0 < len(x.visited) < len(x.special)
    # the planted leak: gas, then the all-clear, then the valve reopened by hand
    hid, at = x.planted_leak
    detector, valve = x.gas[hid]
    mine = [(r.ts, r.values) for r in reports if r.device_id in (detector, valve)
            and r.values[0][0] in (Kind.GAS, Kind.VALVE_OPEN)]
    assert mine[0] == (at, ((Kind.GAS, True),))
    assert [v for _, v in mine[1:3]] == [((Kind.GAS, False),), ((Kind.VALVE_OPEN, True),)]


@pytest.mark.integration
def test_a_short_accelerated_run_makes_help_requests_checkins_and_closes_a_valve(
        tmp_path, mosquitto, case_system):
    from simulators.community_mqtt import run_community

    now = datetime.now(ZoneInfo("Asia/Shanghai"))
    # the one-minute check-in window opens at the start's minute: started late in a minute,
    # what is left of it may hold no moment the resident is up and at home (no check-in
    # that day: a failed CI run at hh:26:47); at 23:59 it would be tomorrow's
    if now.second > 30 or (now.hour, now.minute) == (23, 59):
        time.sleep(61 - now.second)
    origin = float(int(time.time()))
    short = {"checkin_minutes": 1, "help_every_days": 0.05, "leak_after_s": 3.0}
    probe = Community(12, seed=0, origin=origin, extras=Extras(speed=SPEED, **short))
    x = probe.extras
    assert x is not None and x.help_keys and x.checkin and x.gas
    # fast enough that the first help press comes within seconds, whatever the time of day
    # (its time does not depend on the speed)
    first_help = next(r.ts for r in _all(probe, 1) if r.device_id in x.help_keys
                      and r.values[0][0] is Kind.BUTTON)
    speed = max(SPEED, (first_help - origin) / 4)
    c = Community(12, seed=0, origin=origin, extras=Extras(speed=speed, **short))
    site = write_site(tmp_path / "site", c, mqtt_port=mosquitto.port, case_url=case_system.url,
                      time_scale=speed)
    gw = GatewayProcess(site, tmp_path / "data", env={"CASE_SYSTEM_SECRET": case_system.secret})
    token = gw.token("admin", "test")
    gw.start()
    loop = asyncio.new_event_loop()
    task = loop.create_task(run_community("127.0.0.1", mosquitto.port, c, speed=speed,
                                          press_every=None))

    def run() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)
        loop.close()

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    try:
        api = gw.api(token)
        wait_for(lambda: api.get("/api/help-requests").json()["requests"], timeout=15,
                 interval=0.2, what="a help request from a help key")
        wait_for(lambda: [r for r in api.get("/api/checkins").json()["checkins"]
                          if r["last"]], timeout=15, interval=0.2, what="a check-in")
        gas = wait_for(lambda: [a for a in api.get("/api/alarms").json()["alarms"]
                                if a["category"] == "gas"], timeout=15, interval=0.2,
                       what="the planted gas leak's alarm")
        commands = wait_for(lambda: [cmd for cmd in api.get(f"/api/alarms/{gas[0]['id']}")
                                     .json()["commands"] if cmd["status"] == "confirmed"],
                            timeout=15, interval=0.2, what="the valve closed and confirmed")
        assert commands[0]["action"] == "close_valve"
    finally:
        loop.call_soon_threadsafe(task.cancel)
        runner.join(10)
        gw.stop()
    assert "Traceback" not in gw.log_text()
