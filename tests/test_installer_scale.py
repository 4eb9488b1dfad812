"""Issue 13.7: the installer at community scale, without a browser.

- the device list: server-side search, filters and paging (GET /api/config/devices);
- an edit of a few devices takes the fast path (devices.yaml's blocks, gateway.devices_doc)
  and rejects what the whole-file path rejects, with the same messages;
- after random incremental edits (modes, names, moves, additions, removals) applied to the
  running state through the site bus's change, that state equals a fresh build from the
  same files: the site, the rule engine (its snapshot, site index and what it does with the
  same readings), the intake's bindings and device health's rows;
- a file edited by hand ends the fast path (the next edit reads the whole file).
"""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from types import SimpleNamespace
from pathlib import Path

import pytest

from gateway.installer import InstallerError, SiteEditor
from gateway.kernel.model import Kind, Quality, Reading
from gateway.model import utc
from gateway.service import bindings_for, build_engine, swap_engine
from gateway.site import load_site
from rules.actions import RaiseFault
from simulators.bench.installer import Rig, _equal_to_reload
from simulators.community import Community
from simulators.site_gen import write_site
from tests.api_fixtures import api_env  # noqa: F401 - fixture


def _auth(env, role: str = "installer") -> dict:
    return {"Authorization": f"Bearer {env.tokens[role]}"}


def test_device_list_search_filters_and_paging(api_env):  # noqa: F811
    from fastapi.testclient import TestClient

    with TestClient(api_env.app) as c:
        every = c.get("/api/config/devices", headers=_auth(api_env)).json()
        n = len(every["devices"])
        assert n == every["total"] >= 4 and every["offset"] == 0 and every["limit"] is None
        page = c.get("/api/config/devices?offset=1&limit=2", headers=_auth(api_env)).json()
        assert page["total"] == n and [d["id"] for d in page["devices"]] == [
            d["id"] for d in every["devices"][1:3]]
        one = every["devices"][0]
        # search: the id, the name, the household, the household's address
        hits = c.get(f"/api/config/devices?q={one['id'].upper()}", headers=_auth(api_env)).json()
        assert one["id"] in [d["id"] for d in hits["devices"]]
        site = api_env.ctx.site
        with_hh = next(d for d in site.devices.devices if d.household)
        address = site.household(with_hh.household).address
        hits = c.get("/api/config/devices", params={"q": address[-6:]},
                     headers=_auth(api_env)).json()
        assert with_hh.id in [d["id"] for d in hits["devices"]]
        assert all(d["household"] == with_hh.household or address[-6:] in (d["name"] or "")
                   for d in hits["devices"])
        hits = c.get("/api/config/devices", params={"household": with_hh.household},
                     headers=_auth(api_env)).json()
        assert hits["total"] == sum(d.household == with_hh.household
                                    for d in site.devices.devices)
        hits = c.get("/api/config/devices", params={"type": with_hh.type},
                     headers=_auth(api_env)).json()
        assert {d["type"] for d in hits["devices"]} == {with_hh.type}
        assert c.get("/api/config/devices?q=no-such-thing-anywhere",
                     headers=_auth(api_env)).json()["total"] == 0
        # state: a mode, or a health state
        r = c.put(f"/api/devices/{with_hh.id}/mode", json={"mode": "test"},
                  headers=_auth(api_env))
        assert r.status_code == 200, r.text
        hits = c.get("/api/config/devices?state=test", headers=_auth(api_env)).json()
        assert [d["id"] for d in hits["devices"]] == [with_hh.id]
        normal = c.get("/api/config/devices?state=normal", headers=_auth(api_env)).json()
        assert normal["total"] == n - 1
        unknown = c.get("/api/config/devices?state=unknown", headers=_auth(api_env)).json()
        assert unknown["total"] == n            # nothing reported yet
        # a device the supervision rule found silent is offline here as on the devices page
        silent = every["devices"][-1]["id"]
        asyncio.run(api_env.ctx.book.apply([RaiseFault(
            f"device_health:{silent}:silent", "silent", silent, None, None, "长时间未上报",
            "no report for too long", utc(), "device_health")]))
        offline = c.get("/api/config/devices?state=offline", headers=_auth(api_env)).json()
        assert [d["id"] for d in offline["devices"]] == [silent]
        shown = {d["device_id"]: d["state"] for d in c.get(
            "/api/devices", headers=_auth(api_env)).json()["devices"]}
        assert shown[silent] == "offline"
        assert c.get("/api/config/devices?state=bogus",
                     headers=_auth(api_env)).status_code == 422
        assert c.get("/api/config/devices?limit=0", headers=_auth(api_env)).status_code == 422
        assert c.get("/api/config/devices", headers=_auth(api_env, "duty")).status_code == 403


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("scale")
    site = write_site(base / "site", Community(40, 3))
    (site / "uplinks.yaml").write_text("{}\n")
    return site


def _copy(generated: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(generated, tmp_path / "site"))


def _readings(site, rng: random.Random, t0, n: int) -> list[Reading]:
    devices = list(site.devices.devices)
    out = []
    for i in range(n):
        d = rng.choice(devices)
        kind, value = rng.choice([(Kind.SOS, True), (Kind.SOS, False), (Kind.MOTION, True),
                                  (Kind.SMOKE, True), (Kind.BATTERY, rng.uniform(5, 90)),
                                  (Kind.DOOR_OPEN, True)])
        hh = site.household(d.household) if d.household else None
        out.append(Reading(d.id, kind, value, t0 + timedelta(seconds=i),
                           quality=Quality.GOOD, device_type=d.type, household_id=d.household,
                           grid_cell=d.grid_cell or (hh.grid_cell if hh else None)))
    return out


def test_incremental_edits_equal_a_fresh_build(generated, tmp_path):
    rig = Rig(_copy(generated, tmp_path))
    # beside it, the same edits applied whole (a new engine each time, as before 13.7)
    whole = SimpleNamespace(engine=build_engine(rig.bus.current))
    rig.bus.subscribe(lambda new: swap_engine(whole, new))  # type: ignore[arg-type]
    rng = random.Random(7)
    t0 = utc()
    engine_feed = 0

    def feed(n: int) -> None:
        nonlocal engine_feed
        for r in _readings(rig.bus.current, rng, t0 + timedelta(seconds=engine_feed), n):
            assert rig.pipeline.engine.feed(r, r.ts) == whole.engine.feed(r, r.ts)
        engine_feed += n

    async def edits() -> None:
        ed = rig.editor
        households = [h.id for h in rig.bus.current.site.households]
        added = 0
        for step in range(24):
            feed(20)
            site = rig.bus.current
            devices = [d for d in site.devices.devices if d.mqtt is not None]
            d = rng.choice(devices)
            op = step % 6
            if op == 0:
                new = await ed.set_mode(d.id, "test", actor="t",
                                        until=utc() + timedelta(hours=1))
            elif op == 1:
                moded = [x for x in devices if x.mode != "normal"] or [d]
                new = await ed.set_mode(moded[0].id, "normal", actor="t")
            elif op in (2, 3):
                entry = {"id": d.id, "type": d.type, "name": f"{d.name}·{step}",
                         "household": rng.choice(households) if op == 3 else d.household,
                         "grid_cell": d.grid_cell, "profile": d.profile,
                         "mqtt": d.mqtt.model_dump(exclude_none=True)}
                new = await ed.upsert_device(entry, create=False, actor="t")
            elif op == 4:
                added += 1
                new = await ed.upsert_device(
                    {"id": f"caller-new-{added}", "type": "emergency_caller",
                     "household": rng.choice(households), "name": "新呼叫器",
                     "profile": "json-emergency-caller",
                     "mqtt": {"topic": f"devices/caller-new-{added}"}}, create=True, actor="t")
            else:
                new = await ed.remove_device(d.id, actor="t")
            assert ed.last_path == "fast", step
            assert ed.change_of(new) is not None
            rig.take(new)
        feed(50)

    asyncio.run(edits())
    equal = _equal_to_reload(rig)
    assert equal == {"site": True, "engine": True, "intake": True, "health": True}
    # the engine kept through the changes does with new readings and time what the one
    # rebuilt at every edit does (their snapshots differ only where a restore normalizes
    # state, e.g. the due time of households no inactivity rule covers)
    later = _readings(rig.bus.current, random.Random(9), t0 + timedelta(seconds=2_000), 300)
    for r in later:
        assert rig.pipeline.engine.feed(r, r.ts) == whole.engine.feed(r, r.ts)
        assert rig.pipeline.engine.tick(r.ts) == whole.engine.tick(r.ts)


@pytest.mark.parametrize("change", [
    {"household": "h-nope"},                                   # unknown household
    {"profile": "json-door-access"},                           # profile of another type
    {"grid_cell": "310104-012-99", "household": None},         # unknown grid cell
    {"mqtt": {"topic": "devices/water-01-102"}},               # topic of another device
    {"type": "no_such_type"},                                  # schema
])
def test_fast_path_rejects_what_the_whole_file_path_rejects(generated, tmp_path, change):
    directory = _copy(generated, tmp_path)
    site = load_site(directory)
    d = next(x for x in site.devices.devices if x.id == "caller-01-101") if any(
        x.id == "caller-01-101" for x in site.devices.devices) else next(
        x for x in site.devices.devices if x.type == "emergency_caller")
    entry = {"id": d.id, "type": d.type, "household": d.household, "name": d.name,
             "profile": d.profile, "mqtt": d.mqtt.model_dump(exclude_none=True), **change}

    def attempt(prime: bool) -> tuple[int, list, str]:
        ed = SiteEditor(directory, check=bindings_for)
        if prime:
            assert ed.prime(site)
        before = (directory / "devices.yaml").read_bytes()
        with pytest.raises(InstallerError) as err:
            asyncio.run(ed.upsert_device(entry, create=False, actor="t"))
        assert (directory / "devices.yaml").read_bytes() == before     # nothing written
        return err.value.status, err.value.errors, ed.last_path

    fast, whole = attempt(True), attempt(False)
    assert fast[:2] == whole[:2]


def test_a_file_edited_by_hand_ends_the_fast_path(generated, tmp_path):
    directory = _copy(generated, tmp_path)
    site = load_site(directory)
    ed = SiteEditor(directory, check=bindings_for)
    assert ed.prime(site)
    d = site.devices.devices[0]
    asyncio.run(ed.set_mode(d.id, "test", actor="t", until=utc() + timedelta(hours=1)))
    assert ed.last_path == "fast"
    path = directory / "devices.yaml"
    path.write_text(path.read_text().replace(f"name: {site.devices.devices[1].name}",
                                             "name: 手改的名字", 1))
    new = asyncio.run(ed.set_mode(d.id, "normal", actor="t"))
    assert ed.last_path == "whole file" and ed.change_of(new) is None
    assert new.devices.devices[1].name == "手改的名字"
    asyncio.run(ed.set_mode(d.id, "test", actor="t", until=utc() + timedelta(hours=1)))
    assert ed.last_path == "fast"                   # primed again by the whole-file edit
    assert load_site(directory).devices == ed._base[1].devices   # noqa: SLF001
