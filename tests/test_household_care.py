"""Household care states at the gateway (issue 15.1): the store holds them (one source of
truth), the API sets and ends them (audited), the rule engine follows them, also after a
restart, and ends them itself when the resident is back (CareEnded)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from gateway.household_care import CareDesk, apply_care
from gateway.model import utc
from gateway.service import adopt_store, build_engine
from gateway.store.audit import audit_log
from gateway.store.household_care import all_care
from rules.actions import CareEnded
from rules.engine import Engine
from rules.inactivity import care_states
from tests.api_fixtures import api_env  # noqa: F401  (fixture)

H = "h-7-101"


def test_staff_set_and_end_a_care_state_audited(api_env):
    duty = api_env.client("duty")
    end = (utc() + timedelta(days=3)).isoformat()
    r = duty.put(f"/api/households/{H}/care", json={"state": "away", "expected_end": end,
                                                     "note": "去女儿家"})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "away" and r.json()["via"] == "console"
    got = duty.get("/api/care").json()
    assert got["counts"] == {"away": 1, "hospital": 0, "carer": 0}
    [row] = got["care"]
    assert row["household_id"] == H and row["note"] == "去女儿家" and row["set_by"] == "duty"
    assert row["address"] and row["grid_cell"]
    assert api_env.client("installer").get("/api/care").json()["care"][0]["note"] == ""
    # replaced by another state; refused for installers, unknown households, bad ends
    assert duty.put(f"/api/households/{H}/care", json={"state": "hospital"}).status_code == 200
    assert duty.get("/api/care").json()["counts"]["hospital"] == 1
    inst = api_env.client("installer").put(f"/api/households/{H}/care", json={"state": "away"})
    assert inst.status_code == 403
    assert duty.put("/api/households/h-nowhere/care",
                    json={"state": "away"}).status_code == 404
    past = (utc() - timedelta(hours=1)).isoformat()
    bad = duty.put(f"/api/households/{H}/care", json={"state": "away", "expected_end": past})
    assert bad.status_code == 422
    assert duty.put(f"/api/households/{H}/care",
                    json={"state": "holiday"}).status_code == 422
    assert duty.delete(f"/api/households/{H}/care").status_code == 200
    assert duty.delete(f"/api/households/{H}/care").status_code == 404
    assert duty.get("/api/care").json()["care"] == []
    log = [(e["actor"], e["action"], e["target"], json.loads(e["detail"]).get("state"))
           for e in audit_log(api_env.store) if e["action"].startswith("care.")]
    assert log == [("duty", "care.end", H, "hospital"), ("duty", "care.set", H, "hospital"),
                   ("duty", "care.set", H, "away")]


def test_the_engine_follows_the_store_also_after_a_restart(api_env):
    site = api_env.ctx.site
    engine = build_engine(site)
    desk = CareDesk(api_env.store, lambda: site, lambda: engine)
    asyncio.run(desk.set(H, "away", actor="duty", expected_end=utc() + timedelta(days=2)))
    assert care_states(engine) == {H: "away"}
    # a restart: a new engine from an old snapshot without it; the store wins
    stale = build_engine(site).snapshot()
    again = Engine.restore(engine.config, engine.site, stale)
    adopt_store(again, api_env.ctx.book)
    assert care_states(again) == {H: "away"}
    # the store ended it meanwhile: the engine's state from a newer snapshot goes too
    asyncio.run(desk.end(H, actor="duty"))
    assert care_states(engine) == {}
    newer = Engine.restore(engine.config, engine.site, json.loads(json.dumps(
        again.snapshot())))
    assert care_states(newer) == {H: "away"}
    assert apply_care(newer, api_env.store) == 0 and care_states(newer) == {}


def test_the_engine_ending_a_state_ends_it_in_the_store(api_env):
    site = api_env.ctx.site
    desk = CareDesk(api_env.store, lambda: site)
    asyncio.run(desk.set(H, "away", actor="duty"))
    ended = CareEnded(H, "away", "returned", utc(), "inactivity")
    asyncio.run(api_env.ctx.book.apply([ended]))
    assert all_care(api_env.store) == []
    e = audit_log(api_env.store)[0]
    assert (e["actor"], e["action"], e["target"]) == ("rule:inactivity", "care.end", H)
    assert json.loads(e["detail"])["reason"] == "returned"
    asyncio.run(api_env.ctx.book.apply([ended]))       # again: nothing left to end
    assert audit_log(api_env.store)[0]["id"] == e["id"]


def _site_with_care_keys(tmp_path, keys: str = "{4_single: away, 4_double: hospital, "
                                               "4_hold: home}"):
    import shutil

    from tests.support import EXAMPLE

    site_dir = tmp_path / "care-site"
    shutil.copytree(EXAMPLE, site_dir)
    text = (site_dir / "devices.yaml").read_text("utf-8")
    text += ("  - id: caller-z-7-101\n    type: emergency_caller\n    household: h-7-101\n"
             "    name: 门口呼叫器\n    mqtt: {zigbee2mqtt: caller-z-7-101}\n"
             f"    care_actions: {keys}\n")
    (site_dir / "devices.yaml").write_text(text, "utf-8")
    return site_dir


def test_a_caller_key_configured_for_it_sets_and_ends_the_care_state(tmp_path):
    """devices.yaml care_actions: those keys decode as care_key button readings (never SOS),
    and the desk sets the household's state from them (via caller, actor device)."""
    from drivers.profiles import decode_json
    from gateway.service import bindings_for
    from gateway.site import load_site
    from gateway.store import Store

    site = load_site(_site_with_care_keys(tmp_path))
    binding = next(b for b in bindings_for(site).values() if b.device_id == "caller-z-7-101")
    now = utc()

    def press(action: str):
        return decode_json(binding.profile, "caller-z-7-101", {"action": action}, now)

    [away] = press("4_single")
    assert (away.kind.value, away.value, away.metric) == ("button", "4_single", "care_key")
    assert [r.kind.value for r in press("single")] == ["sos"]     # the SOS key still is SOS
    store = Store(tmp_path / "gw.db")
    store.open()
    try:
        engine = build_engine(site)
        desk = CareDesk(store, lambda: site, lambda: engine)
        reading = away.with_site(household_id="h-7-101", grid_cell=None,
                                 device_type="emergency_caller")
        assert desk.takes(reading)          # the pipeline's durable writer: saved, then acked
        assert not desk.takes(press("single")[0])                 # not a care key
        assert asyncio.run(desk.key_pressed(reading)) == "away"
        assert asyncio.run(desk.key_pressed(reading)) == "away"   # again (a redelivery)
        assert [e["action"] for e in audit_log(store)] == ["care.set"]     # nothing new
        [row] = all_care(store)
        assert (row["state"], row["via"], row["set_by"]) == ("away", "caller", "device")
        assert care_states(engine) == {H: "away"}
        [home] = press("4_hold")
        assert asyncio.run(desk.key_pressed(home)) == "home"
        assert all_care(store) == [] and care_states(engine) == {}
        [other] = decode_json(binding.profile, "caller-z-7-101", {"action": "4_double"}, now)
        assert asyncio.run(desk.key_pressed(other)) == "hospital"
    finally:
        store.close()


def test_care_keys_are_checked_like_help_keys(tmp_path):
    import pytest

    from gateway.kernel.errors import ConfigError
    from gateway.site import load_site

    with pytest.raises(ConfigError, match="care_actions"):
        load_site(_site_with_care_keys(tmp_path, "{4_single: holiday}"))
    d = _site_with_care_keys(tmp_path / "b")
    text = (d / "devices.yaml").read_text("utf-8").replace(
        "    care_actions:", "    sos_actions: [4_single]\n    care_actions:")
    (d / "devices.yaml").write_text(text, "utf-8")
    with pytest.raises(ConfigError, match="4_single also in sos_actions"):
        load_site(d)
