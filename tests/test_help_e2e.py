"""A help request becomes a service case, end to end (issue 15.4): a real gateway process,
a real Mosquitto and the simulated case system as a process. A caller's help key pressed over
MQTT (Zigbee2MQTT) -> a help request in the API (no alarm, no SOS) -> exactly one service case
at the case system (category service, 助餐, from the caller key) -> its statuses back on the
request (dispatched: assigned to the grid member; closed: done) -> the resident's feedback
recorded at the gateway reaches the case once."""

from __future__ import annotations

import pytest

from tests.help_fixtures import HELP_CALLER, HELP_TOPIC, help_gateway
from tests.support import mqtt_publish, wait_for

pytestmark = [pytest.mark.integration]


def test_a_help_key_press_becomes_exactly_one_service_case(tmp_path, mosquitto, case_system):
    gw = help_gateway(tmp_path, mosquitto, case_system).start()
    try:
        api = gw.api(gw.admin_token)
        mqtt_publish(mosquitto.port, [(HELP_TOPIC, {"action": "2_single", "battery": 90}),
                                      (HELP_TOPIC, {"action": "2_single"})])   # twice
        req = wait_for(lambda: (api.get("/api/help-requests").json()["requests"] or [None])[0],
                       timeout=10, what="the help request")
        assert (req["category"], req["channel"], req["device_id"], req["household_id"]) == (
            "meal", "caller_key", HELP_CALLER, "h-7-101")
        assert req["category_name"] == {"zh": "助餐", "en": "Meals"}
        # the case system dispatches (0.5 s) and closes (3 s): the request follows
        done = wait_for(lambda: next((r for r in api.get("/api/help-requests").json()[
            "requests"] if r["state"] == "done"), None), timeout=20, what="request done")
        assert done["id"] == req["id"] and done["case_status"] == "closed"
        assert done["assigned_to"]            # the grid member who took it
        assert len(api.get("/api/help-requests").json()["requests"]) == 1   # pressed twice: one
        assert api.get("/api/alarms").json()["alarms"] == []                 # no SOS, no siren
        cases = case_system.cases()["cases"]
        service = [c for c in cases if c["category"] == "service"]
        assert len(service) == 1 and len(cases) == 1
        assert service[0]["service"] == {"category": "meal", "name": "助餐",
                                         "channel": "caller_key"}
        assert service[0]["create_requests"] == 1 and service[0]["case_id"] == done["case_id"]
        actions = [e["action"] for e in api.get(f"/api/help-requests/{req['id']}").json()[
            "events"]]
        assert actions[:2] == ["received", "pressed_again"] and "case_created" in actions
        # the resident's feedback, recorded by staff, reaches the case exactly once
        r = api.post(f"/api/help-requests/{req['id']}/feedback", json={"rating": "satisfied"})
        assert r.status_code == 200 and r.json()["state"] == "closed"
        note = wait_for(lambda: next((u for c in case_system.cases()["cases"]
                                      for u in c["updates"] if "满意" in u["note"]), None),
                        timeout=10, what="the feedback note at the case system")
        assert note["kind"] == "note" and note["requests"] == 1
        assert case_system.cases()["create_requests_total"] == 1
    finally:
        gw.stop()
