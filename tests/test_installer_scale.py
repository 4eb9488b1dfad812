"""Issue 13.7: the installer at community scale, without a browser.

- the device list: server-side search, filters and paging (GET /api/config/devices);
- an edit of a few devices takes the fast path (devices.yaml's blocks, gateway.devices_doc)
  and rejects what the whole-file path rejects, with the same messages;
- after random incremental edits (modes, names, moves, type changes, additions, removals)
  applied to the running state through the site bus's change (the running engine is never
  replaced), that state equals a fresh build from the same files: the site, the rule
  engine (its snapshot, site index and what it does with the same readings), the intake's
  bindings and device health's rows; the engine, told of random device changes directly,
  does what one rebuilt at each change does;
- the quick revalidation of an edit returns what the whole check returns;
- a file edited by hand ends the fast path (the next edit reads the whole file).
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import replace
from datetime import timedelta
from types import SimpleNamespace
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from edge_config.fast_yaml import TreeCache, load_plain
from gateway.installer import InstallerError, SiteEditor, files_state
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
    running = rig.pipeline.engine           # takes every change: never replaced

    def feed(n: int) -> None:
        nonlocal engine_feed
        for r in _readings(rig.bus.current, rng, t0 + timedelta(seconds=engine_feed), n):
            assert rig.pipeline.engine.feed(r, r.ts) == whole.engine.feed(r, r.ts)
        engine_feed += n

    async def edits() -> None:
        ed = rig.editor
        households = [h.id for h in rig.bus.current.site.households]
        added = 0
        for step in range(28):
            feed(20)
            site = rig.bus.current
            devices = [d for d in site.devices.devices if d.mqtt is not None]
            d = rng.choice(devices)
            op = step % 7
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
            elif op == 5:
                new = await ed.remove_device(d.id, actor="t")
            else:               # a Zigbee motion sensor becomes a door contact, or back
                z = rng.choice([x for x in devices if x.type in ("motion_sensor",
                                                                 "door_contact")
                                and x.mqtt is not None and x.mqtt.zigbee2mqtt])
                kind = "door_contact" if z.type == "motion_sensor" else "motion_sensor"
                new = await ed.upsert_device(
                    {"id": z.id, "type": kind, "household": z.household, "name": z.name,
                     "profile": f"zigbee2mqtt-{kind.replace('_', '-')}",
                     "mqtt": z.mqtt.model_dump(exclude_none=True)}, create=False, actor="t")
            assert ed.last_path == "fast", step
            assert ed.change_of(new) is not None
            rig.take(new)
        feed(50)

    asyncio.run(edits())
    assert rig.pipeline.engine is running
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


#: rules of every event-driven kind beside the generated site's (match, supervision and
#: inactivity), so that each evaluator's per-device state meets additions, removals, moves
#: and type changes
_MORE_RULES = [
    {"id": "cold", "kind": "threshold", "metric": "battery", "below": 10, "hysteresis": 5,
     "for": 120, "category": "device_fault", "message": {"zh": "电量低", "en": "low"}},
    {"id": "door_held", "kind": "held", "when": {"kind": "door_open", "value": True},
     "for": 900, "category": "security", "message": {"zh": "门未关", "en": "door open"}},
    {"id": "presses", "kind": "count", "when": {"kind": "sos", "value": True}, "count": 2,
     "window": 600, "per": "household", "category": "emergency_call",
     "message": {"zh": "多次呼叫", "en": "presses"}},
    {"id": "smoke_motion", "kind": "compound", "all": [
        {"when": {"kind": "smoke", "value": True}}, {"when": {"kind": "motion", "value": True}}],
     "window": 900, "per": "household", "category": "fire",
     "message": {"zh": "烟与动", "en": "smoke and motion"}},
    {"id": "one_motion", "kind": "match", "devices": ["motion-01-102"],
     "when": {"kind": "motion", "value": True}, "category": "security",
     "message": {"zh": "动", "en": "motion"}},
    {"id": "watch_fast", "kind": "supervision", "silence": 1800, "households": ["h-01-101",
     "h-01-102", "h-02-101"], "message": {"zh": "{device_name} 故障", "en": "{device_name}"}},
    {"id": "idle", "kind": "inactivity", "lives_alone_only": False, "threshold": 3600,
     "sources_offline_after": 7200, "repeat_after": 3600,
     "message": {"zh": "{household_address} 无活动", "en": "idle"}},
]


def _difference(a, b, path: str = "") -> str | None:
    """Where two snapshots first differ (None: equal), for the assertion's message."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in dict.fromkeys([*a, *b]):
            if k not in a or k not in b:
                return f"{path}.{k}: only in {'kept' if k in a else 'rebuilt'}"
            got = _difference(a[k], b[k], f"{path}.{k}")
            if got:
                return got
        return None
    return None if a == b else f"{path}: {str(a)[:300]} != {str(b)[:300]}"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_engine_takes_device_edits_like_a_rebuilt_one(generated, seed):
    """Random additions, removals, moves (to another household, to a grid cell alone),
    type and name changes, one at a time and several at once, taken by the running engine
    (Engine.update_devices and its add/remove/update_device) do with readings and time
    what an engine rebuilt for each new site from the previous one's snapshot does: the
    same actions, in the same order; and the same snapshot."""
    from rules.engine import Engine
    from rules.site import DeviceInfo
    from rules.spec import RulesConfig

    site = load_site(generated)
    base = build_engine(site)
    spec = YAML(typ="safe").load((generated / "rules.yaml").read_text(encoding="utf-8"))
    spec["rules"] += _MORE_RULES
    config = RulesConfig.model_validate(spec)
    kept = Engine(config, base.site)
    rebuilt = Engine(config, base.site)
    rng = random.Random(seed)
    households = list(base.site.households)
    cells = list(base.site.grid_cell_names)
    types = sorted({d.device_type for d in base.site.devices.values()} | {"gas_detector"})
    now = utc()
    added = 0
    gone: list[str] = []          # removed devices: their readings still arrive

    def rebuild(new_site) -> Engine:
        e = Engine(config, new_site)
        e.load_snapshot(rebuilt.snapshot())
        return e

    def place(info: DeviceInfo) -> DeviceInfo:
        if rng.random() < 0.15:                                     # a cell, no household
            return replace(info, household_id=None, grid_cell=rng.choice(cells))
        h = rng.choice(households)
        return replace(info, household_id=h, grid_cell=kept.site.households[h].grid_cell)

    def readings(n: int) -> None:
        nonlocal now
        devices = list(kept.site.devices)
        for _ in range(n):
            now += timedelta(seconds=rng.uniform(1, 240))
            d = rng.choice(gone) if gone and rng.random() < 0.1 else rng.choice(devices)
            kind, value = rng.choice([
                (Kind.SOS, True), (Kind.SOS, False), (Kind.MOTION, True), (Kind.SMOKE, True),
                (Kind.SMOKE, False), (Kind.DOOR_OPEN, True), (Kind.DOOR_OPEN, False),
                (Kind.BATTERY, rng.uniform(2, 90)), (Kind.TAMPER, rng.random() < 0.5),
                (Kind.WATER_VOLUME, rng.uniform(0, 100)), (Kind.AVAILABILITY, True)])
            info = kept.site.devices.get(d) or DeviceInfo(d, "emergency_caller", None, None)
            r = Reading(d, kind, value, now, quality=Quality.GOOD,
                        device_type=info.device_type, household_id=info.household_id,
                        grid_cell=info.grid_cell)
            assert kept.feed(r, now) == rebuilt.feed(r, now)
            if rng.random() < 0.3:
                assert kept.tick(now) == rebuilt.tick(now)

    readings(200)
    for step in range(60):
        devices = kept.site.devices
        d = rng.choice(list(devices))
        op = rng.choice(["add", "add_unknown", "remove", "move", "type", "name", "batch"])
        if op in ("add", "add_unknown"):
            added += 1
            info = place(DeviceInfo(f"new-{seed}-{added}", rng.choice(types), name="新"))
            if op == "add_unknown":     # it reported before it was configured
                r = Reading(info.device_id, Kind.MOTION, True, now, quality=Quality.GOOD,
                            device_type=info.device_type)
                assert kept.feed(r, now) == rebuilt.feed(r, now)
            kept.add_device(info)
            new_site = kept.site
        elif op == "remove":
            kept.remove_device(d)
            gone.append(d)
            new_site = kept.site
        elif op in ("move", "type", "name"):
            info = devices[d]
            info = (place(info) if op == "move" else
                    replace(info, device_type=rng.choice(types)) if op == "type" else
                    replace(info, name=f"{info.name}·{step}"))
            kept.update_device(info)
            new_site = kept.site
        else:                       # several at once, found by comparison
            edited = dict(devices)
            for x in rng.sample(list(edited), 3):
                edited[x] = place(edited[x])
            for x in rng.sample(list(edited), 2):
                del edited[x]
                gone.append(x)
            added += 1
            edited[f"new-{seed}-{added}"] = place(DeviceInfo(f"new-{seed}-{added}",
                                                             rng.choice(types)))
            new_site = replace(kept.site, devices=edited)
            kept.update_devices(new_site)
        if rng.random() < 0.3:
            mode = rng.choice(["test", "normal", "maintenance"])
            kept.set_device_mode(d, mode)
            rebuilt.set_device_mode(d, mode)
        rebuilt = rebuild(new_site)
        assert dict(kept.site.devices) == dict(rebuilt.site.devices)
        assert list(kept.site.device_index.items()) == list(rebuilt.site.device_index.items())
        readings(rng.randint(5, 40))
        now += timedelta(minutes=rng.uniform(1, 40))        # silence, inactivity, timers
        assert kept.tick(now) == rebuilt.tick(now), step
        assert _difference(kept.snapshot(), rebuilt.snapshot()) is None, step
    readings(300)
    for _ in range(30):
        now += timedelta(minutes=20)
        assert kept.tick(now) == rebuilt.tick(now)
    assert _difference(kept.snapshot(), rebuilt.snapshot()) is None


def test_quick_revalidation_is_the_whole_check(generated):
    """``revalidate_devices``'s quick checks (the edited entries, the ids that are gone)
    return what the whole check returns, and a site the whole check rejects is never
    taken by them: it gets the whole check's errors."""
    from edge_config.loader import _quick_devices, plain, revalidate_devices
    from gateway.kernel.errors import ConfigError
    from gateway.site import VALIDATORS

    site = load_site(generated)
    tree = plain(site.trees["devices.yaml"])
    devices = list(site.devices.devices)
    homes = [h.id for h in site.site.households]
    rng = random.Random(5)
    callers = [i for i, d in enumerate(devices) if d.type == "emergency_caller"]

    def caller(**over) -> dict:
        return {"id": "caller-x", "type": "emergency_caller", "household": homes[0],
                "name": "新", "profile": "json-emergency-caller",
                "mqtt": {"topic": "devices/caller-x"}, **over}

    cases: list[tuple[str, list, list]] = []     # (what, entries, known)
    for _ in range(6):
        i = rng.choice(callers)
        entries, known = list(tree["devices"]), list(devices)
        entries[i] = {**entries[i], "name": "改名", "household": rng.choice(homes)}
        known[i] = None
        cases.append(("edit", entries, known))
    cases.append(("add", [*tree["devices"], caller()], [*devices, None]))
    k = rng.choice(callers)
    cases.append(("remove", tree["devices"][:k] + tree["devices"][k + 1:],
                  devices[:k] + devices[k + 1:]))
    bad = {"taken id": caller(id=devices[3].id), "taken topic": caller(
        mqtt={"topic": devices[callers[0]].topic}), "unknown household": caller(
        household="h-nope"), "unknown cell": caller(household=None, grid_cell="x-9"),
        "schema": caller(type="no_such_type"), "misfit": caller(profile="json-door-access"),
        "no place": caller(household=None), "field bus": caller(
        mqtt=None, modbus={"bus": "rs485-1", "unit": 7})}
    for what, entry in bad.items():
        cases.append((what, [*tree["devices"], entry], [*devices, None]))
    taken_by_the_quick_checks = 0
    for what, entries, known in cases:
        new_tree = {"devices": entries}
        changed = {str(e.get("id")) for e, k in zip(entries, known) if k is None}
        got = []
        for quick in (True, False):
            try:
                got.append(revalidate_devices(site, new_tree, known, VALIDATORS,
                                              changed=changed, quick=quick).devices)
            except ConfigError as exc:
                got.append(exc.issues)
        assert got[0] == got[1], what
        quick_ok = _quick_devices(site, new_tree, known, VALIDATORS, changed,
                                  site.trees) is not None
        assert quick_ok == (what in ("edit", "add", "remove")), what
        taken_by_the_quick_checks += quick_ok
    assert taken_by_the_quick_checks == 8


def test_the_service_reads_the_fast_path_at_the_first_edit_and_lets_it_go_when_idle(
        generated, tmp_path):
    """The service keeps its site without the files' trees and without devices.yaml's lines
    (``SiteEditor.defer``: ~11 MB for 5,000 devices, docs/benchmarks.md "day"): the first
    edit reads them again and takes the fast path, with the site a reload gives; ``release``
    lets them go once no edit used them for ``idle_s``, brings the tree cache up to date
    (the next start reads the edited file from it) and the next edit is fast again; a
    file edited by hand after the site was loaded ends the fast path, as before."""
    directory = _copy(generated, tmp_path)
    cache = tmp_path / "site-cache.json"
    keys = files_state(directory)
    site = replace(load_site(directory, cache=cache), trees={})
    d = site.devices.devices[0]
    until = utc() + timedelta(hours=1)

    async def main() -> None:
        ed = SiteEditor(directory, check=bindings_for, cache=cache, idle_s=3600)
        ed.defer(site, keys)
        assert ed._base is None                                 # noqa: SLF001 - nothing read
        first = await ed.set_mode(d.id, "test", actor="t", until=until)
        assert ed.last_path == "fast" and ed.change_of(first) is not None
        assert first.trees == {}                      # held by the editor, not by the site
        assert first.devices == load_site(directory).devices
        assert not await ed.release()                          # used just now: kept
        ed.idle_s = 0.0
        assert await ed.release() and ed._base is None         # noqa: SLF001
        raw = (directory / "devices.yaml").read_bytes()
        assert TreeCache(cache).get("devices.yaml", raw) == load_plain(raw.decode())
        second = await ed.set_mode(d.id, "normal", actor="t")
        assert ed.last_path == "fast"
        assert second.devices == load_site(directory).devices
        assert second.devices.devices[0].mode == "normal"

    asyncio.run(main())

    async def by_hand() -> str:
        loaded_keys = files_state(directory)
        loaded = replace(load_site(directory), trees={})
        path = directory / "devices.yaml"
        path.write_text(path.read_text().replace(
            f"name: {loaded.devices.devices[1].name}", "name: 手改的名字", 1))
        ed = SiteEditor(directory, check=bindings_for)
        ed.defer(loaded, loaded_keys)
        new = await ed.set_mode(d.id, "test", actor="t", until=until)
        assert new.devices.devices[1].name == "手改的名字"
        return ed.last_path

    assert asyncio.run(by_hand()) == "whole file"


def test_a_hand_edit_right_after_the_editors_write_is_kept(generated, tmp_path, monkeypatch):
    """A file saved by hand just after the editor wrote devices.yaml is not taken for the
    editor's own: the next edit takes the whole-file path and keeps the hand edit (the
    editor's state of the files is that of the file it wrote, not read again after)."""
    import gateway.installer as installer

    directory = _copy(generated, tmp_path)
    site = load_site(directory)
    d, other = site.devices.devices[0], site.devices.devices[1]
    ed = SiteEditor(directory, check=bindings_for)
    ed.defer(replace(site, trees={}), files_state(directory))
    real = installer._atomic_write                                  # noqa: SLF001

    def write_then_hand_edit(path, text):
        st = real(path, text)
        path.write_text(path.read_text().replace(f"name: {other.name}", "name: 手改的名字", 1))
        return st

    monkeypatch.setattr(installer, "_atomic_write", write_then_hand_edit)
    asyncio.run(ed.set_mode(d.id, "test", actor="t", until=utc() + timedelta(hours=1)))
    assert ed.last_path == "fast"
    monkeypatch.setattr(installer, "_atomic_write", real)
    new = asyncio.run(ed.set_mode(d.id, "normal", actor="t"))
    assert ed.last_path == "whole file"
    assert next(x for x in new.devices.devices if x.id == other.id).name == "手改的名字"
    assert "手改的名字" in (directory / "devices.yaml").read_text()


def test_modes_end_on_the_fast_path_made_at_that_moment(generated, tmp_path):
    """The device-mode keeper's settle (every minute in the service) reads nothing while no
    device is in a mode, and ends an expired test mode on the fast path made from the
    service's site (``SiteEditor.defer``)."""
    import zoneinfo

    directory = _copy(generated, tmp_path)
    d = load_site(directory).devices.devices[0]
    zone = zoneinfo.ZoneInfo("Asia/Shanghai")

    async def settle(later: timedelta):
        ed = SiteEditor(directory, check=bindings_for)
        ed.defer(replace(load_site(directory), trees={}), files_state(directory))
        got = await ed.settle_modes(utc() + later, default_s=3600, max_s=86400, zone=zone)
        return ed, got

    ed, (new, changes) = asyncio.run(settle(timedelta(minutes=1)))
    assert new is None and changes == [] and ed._base is None      # noqa: SLF001
    asyncio.run(SiteEditor(directory, check=bindings_for).set_mode(
        d.id, "test", actor="t", until=utc() + timedelta(minutes=5)))
    ed, (new, changes) = asyncio.run(settle(timedelta(minutes=1)))
    assert new is None and changes == []                            # not yet
    ed, (new, changes) = asyncio.run(settle(timedelta(minutes=10)))
    assert [(c["device_id"], c["action"]) for c in changes] == [(d.id, "expired")]
    assert ed.last_path == "fast"
    assert new.devices == load_site(directory).devices
    assert next(x for x in new.devices.devices if x.id == d.id).mode == "normal"


def test_the_service_holds_its_site_without_the_trees_unless_the_cache_cannot(
        generated, tmp_path):
    """``gateway run`` keeps the site without its files' trees (read again by the installer
    at its first edit); a tree the cache cannot hold (a date) keeps them all."""
    from datetime import date

    from gateway.installer import lean_site
    from gateway.service import Gateway

    directory = _copy(generated, tmp_path)
    (tmp_path / "data").mkdir()
    gw = Gateway(directory, tmp_path / "data")
    assert gw.site.trees == {} and (tmp_path / "data" / "site-cache.json").exists()
    site = load_site(directory)
    assert lean_site(site).trees == {}
    dated = replace(site, trees={**site.trees, "site.yaml": {"since": date(2026, 1, 1)}})
    assert lean_site(dated) is dated
    # read through the tree cache (the service's start): the trees it holds are known as
    # such, not walked again; a tree put in their place is walked (and a date keeps them)
    cache = tmp_path / "data" / "site-cache.json"
    cache.unlink()
    for _ in range(2):          # a start that fills the cache, then one that reads it
        cached = load_site(directory, cache=cache)
        assert set(cached.cached_trees) == set(cached.trees) and cached.trees
        assert all(cached.cached_trees[n] is t for n, t in cached.trees.items())
        assert lean_site(cached).trees == {} and lean_site(cached).cached_trees == {}
    swapped = replace(cached, trees={**cached.trees, "site.yaml": {"since": date(2026, 1, 1)}})
    assert lean_site(swapped) is swapped
    assert "site.yaml" not in swapped.cached_trees and "devices.yaml" in swapped.cached_trees
    assert replace(cached, trees={}).cached_trees == {}     # holds no old tree alive
    # a cache file written by hand or by another program: an entry without its tree is
    # a miss, never a failed start
    doc = json.loads(cache.read_text(encoding="utf-8"))
    doc["files"]["uplinks.yaml"] = {"sha256": "0" * 64}      # (and the file is gone)
    doc["files"]["gateway.yaml"] = "not an entry"
    cache.write_text(json.dumps(doc), encoding="utf-8")
    (directory / "uplinks.yaml").unlink()
    assert load_site(directory, cache=cache).devices == cached.devices
