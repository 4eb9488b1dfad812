"""Care states through the case system (issue 15.1, contract 1.4): a case event may carry
``care``, a care state of the case's household its handler reports (in hospital until a
date, away, a carer present, or ended). The gateway sets or ends the household's state in
the event's transaction, audited as coming from the case system, and the rule engine
follows.

- the contract file takes ``care`` on callbacks and polled events (and refuses a state it
  does not know);
- end to end: a real gateway, Mosquitto and the simulated case system: an SOS alarm's case is
  dispatched with ``care: hospital until ...`` (a signed callback), the household shows 住院
  with its expected end, set by ``case_system:<grid member>`` via ``case_system`` in the
  audit; then ``ended`` with the case closed ends it;
- polling: an event of a service case (a help request) carrying ``care`` sets the request's
  household's state once (a second poll of the same event does nothing) and the rule
  engine follows (``CareDesk.told``).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from gateway.case_feedback import CaseStatusPoller
from gateway.help_requests import HelpDesk
from gateway.household_care import CareDesk
from gateway.metrics import Metrics
from gateway.service import build_engine
from gateway.site import load_site
from gateway.store import Store, cases
from gateway.store import help as help_rows
from gateway.store.household_care import all_care
from gateway.uplink.case_system import CaseSystemClient
from rules.inactivity import care_states
from simulators.contract import Contract
from tests.help_fixtures import help_gateway
from tests.support import CaseSystemProcess, EXAMPLE, mqtt_publish, wait_for

SECRET = "test-secret-0123456789abcdef"
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def test_the_contract_takes_a_care_report_on_callbacks_and_polled_events():
    contract = Contract.load()
    callback = {"event_id": "GC-1-e2", "case_id": "GC-1", "idempotency_key": "k-12345678",
                "status": "dispatched", "handler": "王芳", "note": "", "changed_at": NOW.isoformat(),
                "care": {"state": "hospital", "until": (NOW + timedelta(days=9)).isoformat(),
                         "note": "瑞金医院"}}
    assert contract.problems("CaseCallback", callback) == []
    assert contract.problems("CaseCallback", dict(callback, care=None)) == []
    assert contract.problems("CaseCallback", dict(callback, care={"state": "ended"})) == []
    assert contract.problems("CaseCallback", dict(callback, care={"state": "moved"})) != []
    event = {k: callback[k] for k in ("event_id", "status", "handler", "note", "changed_at",
                                      "care")}
    assert contract.problems("CaseEvent", event) == []


@pytest.mark.integration
def test_a_handler_s_care_report_sets_and_ends_the_household_s_state(tmp_path, mosquitto,
                                                                      case_secret):
    cases = CaseSystemProcess(case_secret, tmp_path, dispatch_after=600, on_site_after=600,
                              close_after=600).start()
    gw = help_gateway(tmp_path, mosquitto, cases).start()
    try:
        mqtt_publish(mosquitto.port, [("devices/caller-7-101", {"event": "sos"})])
        with gw.api(gw.admin_token) as api:
            def case_id() -> str | None:
                alarms = api.get("/api/alarms", params={"limit": 50}).json()["alarms"]
                return next((a["case_id"] for a in alarms
                             if a["device_id"] == "caller-7-101" and a["case_id"]), None)
            cid = wait_for(case_id, timeout=20, what="the alarm's case")
            until = (NOW + timedelta(days=9)).isoformat()
            r = httpx.post(f"{cases.url}/_sim/cases/{cid}/status", timeout=10, json={
                "status": "dispatched", "note": "已送医",
                "care": {"state": "hospital", "until": until, "note": "瑞金医院"}})
            assert r.status_code == 200, r.text

            def in_force() -> dict | None:
                return next((c for c in api.get("/api/care").json()["care"]
                             if c["household_id"] == "h-7-101"), None)
            care = wait_for(in_force, timeout=15, what="the reported care state")
            assert care["state"] == "hospital" and care["via"] == "case_system"
            assert care["note"] == "瑞金医院"
            assert datetime.fromisoformat(care["expected_end"]) == datetime.fromisoformat(until)
            handler = care["set_by"].removeprefix("case_system:")
            assert care["set_by"].startswith("case_system:") and handler
            audit = api.get("/api/audit").json()["audit"]
            set_ = next(a for a in audit if a["action"] == "care.set")
            assert (set_["actor"], set_["target"], set_["detail"]["via"]) == (
                f"case_system:{handler}", "h-7-101", "case_system")
            # back home, the case closed: the state ends
            r = httpx.post(f"{cases.url}/_sim/cases/{cid}/status", timeout=10, json={
                "status": "closed", "note": "已出院回家", "care": {"state": "ended"}})
            assert r.status_code == 200, r.text
            wait_for(lambda: in_force() is None, timeout=15, what="the care state ended")
            audit = api.get("/api/audit").json()["audit"]
            end = next(a for a in audit if a["action"] == "care.end")
            assert end["actor"] == f"case_system:{handler}" and end["detail"]["via"] == \
                "case_system"
    finally:
        gw.stop()
        cases.stop()


async def test_a_polled_care_report_of_a_service_case_is_applied_once(tmp_path):
    site = load_site(EXAMPLE)
    store = Store(tmp_path / "gateway.db")
    store.open()
    engine = build_engine(site)
    try:
        desk = HelpDesk(store, lambda: site)
        hid = await desk.create(category="meal", household_id="h-7-302", note="", actor="duty")
        await store.write(lambda c: cases.opened(c, "help_requests", hid, "GC-9", "accepted"))
        care = CareDesk(store, lambda: site, lambda: engine)
        until = NOW + timedelta(days=3)
        view = {"case_id": "GC-9", "idempotency_key": "k-help-12345678", "status": "on_site",
                "grid_cell_code": "310104-012-03", "handler": "李强",
                "created_at": NOW.isoformat(), "updated_at": NOW.isoformat(),
                "events": [{"event_id": "GC-9-e3", "status": "on_site", "handler": "李强",
                            "note": "", "changed_at": NOW.isoformat(),
                            "care": {"state": "away", "until": until.isoformat(),
                                     "note": "去女儿家"}}]}
        told: list[tuple[str, object]] = []

        def on_care(household: str, row) -> None:
            told.append((household, row))
            care.told(household, row)

        def wire(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, json={"cases": [view], "next_cursor": None})

        client = CaseSystemClient("http://cases.test", "tianlin-07", SECRET,
                                  transport=httpx.MockTransport(wire))
        poller = CaseStatusPoller(store, client, Metrics(), lambda ch: None, on_care=on_care)
        async with client:
            await poller.poll_once()
            await poller.poll_once()                  # the same event again: nothing more
        [row] = all_care(store)
        assert (row["household_id"], row["state"], row["via"], row["set_by"]) == (
            "h-7-302", "away", "case_system", "case_system:李强")
        assert datetime.fromisoformat(row["expected_end"]) == until
        assert [h for h, _ in told] == ["h-7-302"]
        assert care_states(engine).get("h-7-302") == "away"      # the engine follows
        assert help_rows.get(store, hid)["state"] == "assigned"  # and the status as usual
        assert json.loads(store.query_one(
            "SELECT detail FROM audit WHERE action='care.set'")["detail"])["via"] == \
            "case_system"
    finally:
        store.close()
