"""Help requests (issue 15.4): help keys of a caller decode as ``button`` readings (not SOS),
a key press or a phone call becomes a request, its lifecycle through the API (roles,
masking, CSRF, wrong state), its service case on the wire (contract 1.3, checked against
the contract file), exactly once per request across resends, and the case's status back on
the request."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone

import httpx
import pytest

from drivers.profiles import decode_json, load_profiles, with_help_actions, with_sos_actions
from gateway.forwarder import CaseForwarder
from gateway.help_requests import HelpDesk, apply_case_status
from gateway.metrics import Metrics
from gateway.model import Kind, Quality, Reading
from gateway.site import load_site
from gateway.store import Store
from gateway.store import help as help_rows
from gateway.store import outbox
from gateway.uplink.case_system import CaseSystemClient
from simulators.contract import Contract
from tests.api_fixtures import api_env  # noqa: F401  (fixture)
from tests.support import EXAMPLE

SECRET = "test-secret-0123456789abcdef"
NOW = datetime(2026, 12, 6, 9, 0, tzinfo=timezone.utc)


def _site_with_help_keys(tmp_path):
    site_dir = tmp_path / "site"
    shutil.copytree(EXAMPLE, site_dir)
    text = (site_dir / "devices.yaml").read_text("utf-8")
    text += ("  - id: caller-z-7-101\n    type: emergency_caller\n    household: h-7-101\n"
             "    name: 客厅呼叫器\n    mqtt: {zigbee2mqtt: caller-z-7-101}\n"
             "    help_actions: {2_single: meal, 3_single: repair}\n")
    (site_dir / "devices.yaml").write_text(text, "utf-8")
    return site_dir


def test_help_keys_decode_as_button_readings_and_never_as_sos():
    base = load_profiles().by_id["zigbee2mqtt-emergency-caller"]
    prof = with_help_actions(base, {"2_single": "meal", "3_single": "repair"})

    def read(action: str) -> list[tuple[Kind, object, str]]:
        return [(r.kind, r.value, r.metric) for r in
                decode_json(prof, "c1", {"action": action}, NOW)]

    assert read("2_single") == [(Kind.BUTTON, "2_single", "help_key")]
    assert read("3_single") == [(Kind.BUTTON, "3_single", "help_key")]
    assert read("single") == [(Kind.SOS, True, "sos")]       # the SOS key still is SOS
    assert read("release") == []
    # with sos_actions too: only the listed key is SOS, help keys are help keys
    both = with_help_actions(with_sos_actions(base, ["1_single"]), {"2_single": "meal"})
    assert [r.kind for r in decode_json(both, "c1", {"action": "2_single"}, NOW)] == [
        Kind.BUTTON]
    assert [r.kind for r in decode_json(both, "c1", {"action": "1_single"}, NOW)] == [Kind.SOS]
    assert decode_json(both, "c1", {"action": "single"}, NOW) == []


def test_a_help_key_of_an_unknown_category_or_on_sos_is_refused(tmp_path):
    from gateway import ConfigError

    site_dir = _site_with_help_keys(tmp_path)
    text = (site_dir / "devices.yaml").read_text("utf-8")
    (site_dir / "devices.yaml").write_text(text.replace("3_single: repair", "3_single: taxi"))
    with pytest.raises(ConfigError, match="unknown help category 'taxi'"):
        load_site(site_dir)
    (site_dir / "devices.yaml").write_text(
        text.replace("help_actions:", "sos_actions: [2_single]\n    help_actions:"))
    with pytest.raises(ConfigError, match="also in sos_actions"):
        load_site(site_dir)


class Wire:
    """The case system's side: every body checked against the contract file."""

    def __init__(self) -> None:
        self.contract = Contract.load()
        self.bodies: list[tuple[str, dict]] = []
        self.problems: list[str] = []
        self.fail_next = 0
        self.cases: dict[str, str] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.fail_next:
            self.fail_next -= 1
            return httpx.Response(503, json={"error": "unavailable"})
        body = json.loads(request.content)
        update = request.url.path.endswith("/updates")
        schema = "CaseUpdate" if update else "CaseCreate"
        self.bodies.append((schema, body))
        self.problems += [p for _, p in self.contract.problems(schema, body)]
        if not update:
            case = self.cases.setdefault(body["idempotency_key"], f"GC-{len(self.cases) + 1}")
            return httpx.Response(201, json={"case_id": case, "status": "accepted"})
        return httpx.Response(201, json={"case_id": request.url.path.split("/")[4],
                                         "update_id": "u", "sequence": body["sequence"],
                                         "applied": True, "status": "dispatched"})


async def _drain(fwd: CaseForwarder, store: Store) -> None:
    for _ in range(30):
        if outbox.pending_count(store, outbox.SERVICE) == 0:
            return
        await fwd.step()
    raise AssertionError("help outbox not drained")


async def test_a_key_press_becomes_one_service_case_and_its_status_comes_back(tmp_path):
    site = load_site(_site_with_help_keys(tmp_path))
    store = Store(tmp_path / "gateway.db")
    store.open()
    wire = Wire()
    try:
        desk = HelpDesk(store, lambda: site, callback_url="http://127.0.0.1:9/api/case-callback")
        press = Reading("caller-z-7-101", Kind.BUTTON, "2_single", datetime.now(timezone.utc),
                        "", Quality.GOOD, "emergency_caller", "h-7-101", "310104-012-03",
                        "help_key")
        first = await desk.key_pressed(press)
        assert await desk.key_pressed(press) == first      # pressed twice: one request
        phone = await desk.create(category="escort", household_id="h-7-302", note="周三体检",
                                  actor="duty", request_id="abcdefgh-1")
        assert await desk.create(category="escort", household_id="h-7-302", note="周三体检",
                                 actor="duty", request_id="abcdefgh-1") == phone
        client = CaseSystemClient("http://cases.test", "gw", SECRET,
                                  transport=httpx.MockTransport(wire))
        fwd = CaseForwarder(store, client, Metrics())
        wire.fail_next = 2                                  # the case system down a while
        async with client:
            await _drain(fwd, store)
            await desk.assign(first, "王芳", "duty")
            await desk.done(first, "duty", "送餐到家")
            await desk.feedback(first, "satisfied", "duty")
            await _drain(fwd, store)
        assert wire.problems == []
        creates = [b for s, b in wire.bodies if s == "CaseCreate"]
        assert len({b["idempotency_key"] for b in creates}) == 2
        key = next(b for b in creates if b["household"]["id"] == "h-7-101")
        assert key["category"] == "service" and key["severity"] == "info"
        assert key["service"] == {"category": "meal", "name": "助餐", "channel": "caller_key"}
        assert key["device"] == {"id": "caller-z-7-101", "type": "emergency_caller"}
        call = next(b for b in creates if b["household"]["id"] == "h-7-302")
        assert call["service"]["channel"] == "phone" and "device" not in call
        updates = [b for s, b in wire.bodies if s == "CaseUpdate"]
        assert [u["kind"] for u in updates] == ["note", "resolved", "note"]
        assert updates[1]["reason"] == "handled" and "满意" in updates[2]["note"]
        row = help_rows.get(store, first)
        assert row["state"] == "closed" and row["case_id"] and row["feedback"] == "satisfied"
        # the case system dispatches and closes the phone request: the request follows
        case_id = help_rows.get(store, phone)["case_id"]
        await store.write(lambda c: apply_case_status(c, case_id=case_id, status="dispatched",
                                                      handler="李强", note=""))
        assert help_rows.get(store, phone)["state"] == "assigned"
        assert help_rows.get(store, phone)["assigned_to"] == "李强"
        await store.write(lambda c: apply_case_status(c, case_id=case_id, status="closed",
                                                      handler="李强", note="已陪同就医"))
        row = help_rows.get(store, phone)
        assert row["state"] == "done" and row["case_status"] == "closed"
        # never backwards
        await store.write(lambda c: apply_case_status(c, case_id=case_id, status="on_site",
                                                      handler="李强", note=""))
        assert help_rows.get(store, phone)["case_status"] == "closed"
    finally:
        store.close()


def test_the_api_lifecycle_roles_and_masking(api_env):  # noqa: F811
    duty, installer = api_env.client("duty"), api_env.client("installer")
    r = duty.get("/api/help-requests")
    assert r.status_code == 200
    assert {c["id"] for c in r.json()["categories"]} >= {"meal", "repair", "escort"}
    r = duty.post("/api/help-requests", json={"category": "repair", "household_id": "h-7-101",
                                              "note": "水龙头漏水", "channel": "phone"})
    assert r.status_code == 201, r.text
    req = r.json()
    assert req["state"] == "received" and req["channel"] == "phone"
    assert req["address"] == "田林路200弄7号101室" and req["note"] == "水龙头漏水"
    hid = req["id"]
    assert installer.get("/api/help-requests").status_code == 403
    assert duty.post(f"/api/help-requests/{hid}/feedback",
                     json={"rating": "satisfied"}).json()["code"] == "help_wrong_state"
    assert duty.post(f"/api/help-requests/{hid}/assign", json={"to": "物业 老刘"}
                     ).json()["state"] == "assigned"
    assert duty.post(f"/api/help-requests/{hid}/done", json={}).json()["state"] == "done"
    done = duty.post(f"/api/help-requests/{hid}/feedback", json={"rating": "neutral"}).json()
    assert done["state"] == "closed" and done["feedback"] == "neutral"
    assert [e["action"] for e in done["events"]] == ["received", "assigned", "done", "closed"]
    assert duty.get("/api/help-requests?state=open").json()["requests"] == []
    # errors with their codes
    assert duty.post("/api/help-requests", json={"category": "taxi", "household_id": "h-7-101"}
                     ).json()["code"] == "help_category_unknown"
    assert duty.post("/api/help-requests", json={"category": "meal", "household_id": "h-x"}
                     ).json()["code"] == "household_not_found"
    assert duty.get("/api/help-requests/999").json()["code"] == "help_not_found"
    # no CSRF header: refused
    bare = api_env.client("duty")
    del bare.headers["X-CSRF-Token"]
    assert bare.post("/api/help-requests", json={"category": "meal",
                                                  "household_id": "h-7-101"}).status_code == 403
    # audited; queued for the case system (4 rows: create, assign, done, feedback)
    acts = [a["action"] for a in api_env.client("admin").get("/api/audit").json()["audit"]]
    assert {"help.create", "help.assigned", "help.done", "help.closed"} <= set(acts)
    assert api_env.store.query_one("SELECT count(*) AS n FROM outbox WHERE kind='service'"
                                   )["n"] == 4


def test_a_desk_only_takes_help_key_readings():
    desk = HelpDesk(None, lambda: None)   # type: ignore[arg-type]
    assert not desk.takes(Reading("c", Kind.SOS, True, NOW, "", Quality.GOOD,
                                  "emergency_caller", "h", "g", "sos"))
    assert not desk.takes(Reading("c", Kind.BUTTON, "single", NOW, "", Quality.GOOD, "x",
                                  "h", "g", "button"))
    assert desk.takes(Reading("c", Kind.BUTTON, "2_single", NOW, "", Quality.GOOD, "x", "h",
                              "g", "help_key"))


async def test_a_refused_service_case_shows_on_the_request_and_can_be_queued_again(tmp_path):
    site = load_site(EXAMPLE)
    store = Store(tmp_path / "gateway.db")
    store.open()
    refuse = {"on": True}

    def wire(request: httpx.Request) -> httpx.Response:
        if refuse["on"]:   # a 1.2.0 case system: no such category
            return httpx.Response(422, json={"error": "validation_error", "field": "category"})
        return httpx.Response(201, json={"case_id": "GC-1", "status": "accepted"})

    try:
        desk = HelpDesk(store, lambda: site)
        hid = await desk.create(category="meal", household_id="h-7-101", note="", actor="duty")
        client = CaseSystemClient("http://cases.test", "gw", SECRET,
                                  transport=httpx.MockTransport(wire))
        fwd = CaseForwarder(store, client, Metrics())
        async with client:
            await fwd.step()
            row = help_rows.get(store, hid)
            assert row["case_error"] == "validation_error" and row["case_id"] is None
            assert [r["help_id"] for r in outbox.failed(store)] == [hid]
            assert await store.write(outbox.requeue_failed) == 1    # gateway outbox --retry-failed
            assert help_rows.get(store, hid)["case_error"] is None
            refuse["on"] = False
            await _drain(fwd, store)
        assert help_rows.get(store, hid)["case_id"] == "GC-1"
    finally:
        store.close()
