"""Linkage (issue 16) against real peers: a real gateway process, Mosquitto, Zigbee2MQTT-shaped
actuators that obey ``<name>/set`` and report their state (simulators/z2m_actuators.py) and
the simulated case system.

A gas detector's payload over MQTT raises the gas alarm; its rule's ``then`` closes the
household's valve — confirmed by the valve's reported state, in the alarm's history and the
audit log — and sounds its siren, which never answers: "command not confirmed", a device
fault. Exactly one case reaches the case system. A valve in maintenance mode is never
actuated (what would have been sent is recorded). A rule cannot open a valve (the spec says
so, FILE:LINE). Staff's inverse needs ``commands.restore``."""

from __future__ import annotations

import json

import pytest

from gateway.broker import free_port
from gateway.kernel.errors import ConfigError
from gateway.site import load_site
from simulators.z2m_actuators import Actuator, Actuators
from tests.linkage_fixtures import commands_of, linkage_site, staff_command_confirmed
from tests.support import GatewayProcess, mqtt_publish, wait_for

pytestmark = [pytest.mark.integration]


def _alarm_of(api, device: str) -> dict | None:
    return next((a for a in api.get("/api/alarms").json()["alarms"]
                 if a["device_id"] == device), None)


def _done(commands: list[dict], device: str) -> dict | None:
    c = next((c for c in commands if c.get("device_id") == device), None)
    return c if c and c["status"] in ("confirmed", "not_confirmed", "skipped") else None


def test_gas_alarm_closes_the_valve_confirmed_and_audited(tmp_path, mosquitto, case_system,
                                                          case_secret):
    port = free_port()
    config = linkage_site(tmp_path / "site", mqtt_port=mosquitto.port,
                          case_url=case_system.url,
                          callback_url=f"http://127.0.0.1:{port}/api/case-callback",
                          confirm_timeout_s=1.5, attempts=2)
    gw = GatewayProcess(config, tmp_path / "data", env={"CASE_SYSTEM_SECRET": case_secret},
                        port=port)
    admin = gw.token("admin", "linkage-test")
    valve = Actuator("valve", "h7-101/gas-valve")
    siren = Actuator("siren", "h7-101/siren", answer=False)     # takes commands, never reports
    kept = Actuator("valve", "h7-302/gas-valve")                  # in maintenance mode
    with Actuators(mosquitto.port, [valve, siren, kept]):
        gw.start()
        try:
            api = gw.api(admin)
            health = wait_for(lambda: (h := api.get("/healthz").json()) and json.dumps(
                h).find('"linkage"') >= 0 and h, timeout=10, what="the linkage in /healthz")
            assert '"linkage": {"state": "online", "in_flight": 0}' in json.dumps(health)
            mqtt_publish(mosquitto.port, [("zigbee2mqtt/h7-101/gas",
                                           {"gas": True, "battery": 100, "linkquality": 90})])
            alarm = wait_for(lambda: _alarm_of(api, "gas-7-101"), timeout=15, what="gas alarm")
            assert alarm["commandable"] is True        # the card offers 联动控制
            done = wait_for(lambda: (_done(commands_of(api, alarm["id"]), "valve-7-101")
                                     and _done(commands_of(api, alarm["id"]), "siren-7-101")
                                     and commands_of(api, alarm["id"])),
                            timeout=20, what="both commands ended")
            by_device = {c["device_id"]: c for c in done}
            assert by_device["valve-7-101"]["status"] == "confirmed"
            assert by_device["valve-7-101"]["automatic"] is True
            assert by_device["valve-7-101"]["action"] == "close_valve"
            assert valve.on is False and valve.received == [{"state": "OFF"}]
            # the siren took the command twice (two attempts) and never said it sounds
            assert by_device["siren-7-101"]["status"] == "not_confirmed"
            assert by_device["siren-7-101"]["reason"] == "no_state_reported"
            assert siren.received == [{"warning": {"mode": "emergency", "level": "high",
                                                   "strobe": True, "duration": 60}}] * 2

            # the alarm's history: planned, resolved to devices, requested, sent, confirmed
            events = api.get(f"/api/alarms/{alarm['id']}").json()["events"]
            steps = [(e["action"], e["detail"].get("device_id")) for e in events]
            valve_steps = [a for a, d in steps if d == "valve-7-101"]
            assert valve_steps == ["command_requested", "command_sent", "command_confirmed"]
            assert [a for a, _ in steps if a in ("raised", "commands_planned",
                                                 "commands_resolved")] == [
                "raised", "commands_planned", "commands_resolved"]
            assert [a for a, d in steps if d == "siren-7-101"] == [
                "command_requested", "command_sent", "command_sent", "command_not_confirmed"]
            requested = next(e for e in events if e["action"] == "command_requested"
                             and e["detail"]["device_id"] == "valve-7-101")
            assert requested["actor"] == "rule:gas"

            # the audit log has every step; the unconfirmed siren is a device fault
            entries = api.get("/api/audit", params={"limit": 200}).json()["audit"]
            acts = [e["action"] for e in entries if e.get("target") == "valve-7-101"]
            assert {"command.request", "command.sent", "command.confirmed"} <= set(acts)
            rows = api.get("/api/faults").json()["faults"]
            assert any(f["device_id"] == "siren-7-101" and f["fault"] == "command_not_confirmed"
                       for f in rows)

            # exactly one case: commands are not cases; the case hears what was done (notes)
            def cases_for_alarm():
                return [c for c in case_system.cases()["cases"] if c["device"] == "gas-7-101"]

            def notes():
                cases = cases_for_alarm()
                return cases and [u["note"] for u in cases[0]["updates"] if u["kind"] == "note"]
            got = wait_for(lambda: (n := notes()) and len(n) >= 2 and n, timeout=15,
                           what="the case's notes")
            assert len(cases_for_alarm()) == 1
            assert "联动：已自动关阀（厨房燃气阀）" in got
            assert "联动：鸣笛未确认（声光报警器）" in got

            # staff: a duty officer may not re-open (an inverse); an admin may
            duty = gw.api(gw.token("duty", "linkage-duty"))
            res = duty.post(f"/api/alarms/{alarm['id']}/commands",
                            json={"device_id": "valve-7-101", "action": "open_valve"})
            assert res.status_code == 403 and res.json()["code"] == "restore_forbidden"
            res = api.post(f"/api/alarms/{alarm['id']}/commands",
                           json={"device_id": "gas-7-101", "action": "open_valve"})
            assert res.status_code == 409 and res.json()["code"] == "not_commandable"
            mine = staff_command_confirmed(api, alarm["id"], "valve-7-101", "open_valve")
            assert valve.on is True
            assert mine["automatic"] is False and mine["by"] == "token:linkage-test"

            # a valve in maintenance mode is never actuated; what would have been sent is kept
            mqtt_publish(mosquitto.port, [("zigbee2mqtt/h7-302/gas", {"gas": True})])
            other = wait_for(lambda: _alarm_of(api, "gas-7-302"), timeout=15,
                             what="the second gas alarm")
            skipped = wait_for(lambda: _done(commands_of(api, other["id"]), "valve-7-302"),
                               timeout=15, what="the maintenance valve's command")
            assert skipped["status"] == "skipped" and skipped["reason"] == "mode_maintenance"
            ev = next(e for e in api.get(f"/api/alarms/{other['id']}").json()["events"]
                      if e["action"] == "command_skipped")
            assert ev["detail"]["would_send"] == {"action": "close_valve", "params": {}}
            assert kept.received == [] and kept.on is True
        finally:
            gw.stop()


def test_a_rule_cannot_open_a_valve(tmp_path):
    config = linkage_site(tmp_path / "site", mqtt_port=1883)
    rules = config / "rules.yaml"
    rules.write_text(rules.read_text().replace("action: close_valve", "action: open_valve"))
    with pytest.raises(ConfigError) as err:
        load_site(config)
    text = str(err.value)
    line = next(i for i, s in enumerate(rules.read_text().splitlines(), 1)
                if "open_valve" in s)
    assert f"rules.yaml:{line}" in text, text
    assert "only make things safe" in text and "open_valve" in text


def test_a_restart_never_resends_an_open_and_the_history_says_what_happened(
        tmp_path, mosquitto):
    """``kill -9`` while the rule's close and a staff open are both in flight: after the
    restart each is ``command_interrupted``; the rule's close (a safe action) is requested
    again and confirmed; the open is not sent again."""
    config = linkage_site(tmp_path / "site", mqtt_port=mosquitto.port, confirm_timeout_s=30,
                          attempts=1)
    gw = GatewayProcess(config, tmp_path / "data")
    admin = gw.token("admin", "restart-test")
    valve = Actuator("valve", "h7-101/gas-valve", answer=False)   # jammed: never reports
    siren = Actuator("siren", "h7-101/siren")
    with Actuators(mosquitto.port, [valve, siren]):
        gw.start()
        try:
            api = gw.api(admin)
            mqtt_publish(mosquitto.port, [("zigbee2mqtt/h7-101/gas", {"gas": True})])
            alarm = wait_for(lambda: _alarm_of(api, "gas-7-101"), timeout=15, what="gas alarm")
            aid = alarm["id"]
            wait_for(lambda: any(c.get("device_id") == "valve-7-101" and c["status"] == "sent"
                                 for c in commands_of(api, aid)), timeout=15, what="close sent")
            # the siren answers: its command is done before the kill (only the valve's close
            # and the staff's open are in flight then; under load it could be still open)
            wait_for(lambda: any(c.get("device_id") == "siren-7-101"
                                 and c["status"] == "confirmed"
                                 for c in commands_of(api, aid)), timeout=15,
                     what="the siren's command confirmed")
            res = api.post(f"/api/alarms/{aid}/commands",
                           json={"device_id": "valve-7-101", "action": "open_valve"})
            assert res.status_code == 200, res.text
            staff_id = res.json()["command_id"]
            wait_for(lambda: len(valve.received) == 2, timeout=10, what="the open on the wire")
            gw.kill()
            valve.answer = True            # the valve works again after the restart
            valve.received.clear()
            gw.start()
            done = wait_for(lambda: [c for c in commands_of(api, aid)
                                     if c.get("device_id") == "valve-7-101"
                                     and c["status"] == "confirmed"],
                            timeout=20, what="the re-sent close confirmed")
            assert done[0]["action"] == "close_valve" and done[0]["automatic"] is True
            events = api.get(f"/api/alarms/{aid}").json()["events"]
            interrupted = {e["detail"]["command_id"]: e["detail"] for e in events
                           if e["action"] == "command_interrupted"}
            assert interrupted[staff_id]["resent"] is False
            auto = [d for cid, d in interrupted.items() if cid != staff_id]
            assert len(auto) == 1 and auto[0]["resent"] is True
            again = next(e for e in events if e["action"] == "command_requested"
                         and e["detail"].get("retry_of"))
            assert again["detail"]["retry_of"] == auto[0]["command_id"]
            assert valve.received == [{"state": "OFF"}]      # never the open again
            statuses = {c["command_id"]: c["status"] for c in commands_of(api, aid)}
            assert statuses[staff_id] == "interrupted"
        finally:
            gw.stop()


BASE_RULE = {"id": "g", "kind": "match", "category": "gas", "when": {"kind": "gas", "value": True},
             "message": {"zh": "燃气", "en": "gas"}}


@pytest.mark.parametrize("then, message", [
    ([{"action": "siren_off", "target": {"household": "same"}}], "only make things safe"),
    ([{"action": "switch_on", "target": {"device": "p-1"}}], "only make things safe"),
    ([{"action": "close_valve", "target": {"device": "v-1", "household": "same"}}],
     "exactly one of device, household or grid"),
    ([{"action": "close_valve", "target": {}}], "exactly one of device, household or grid"),
    ([{"action": "close_valve", "target": {"household": "same", "type": "toaster"}}],
     "unknown device type"),
    ([{"action": "close_valve", "target": {"household": "same"}, "duration": "1m"}],
     "duration only for siren_on"),
    ([{"action": "siren_on", "target": {"grid": "same"}, "duration": "2h"}], "1s to 1h"),
    ([{"action": "explode", "target": {"grid": "same"}}], "close_valve"),
])
def test_then_is_validated(then, message):
    import pydantic

    from rules.spec import RulesConfig
    with pytest.raises(pydantic.ValidationError) as err:
        RulesConfig.model_validate({"rules": [dict(BASE_RULE, then=then)]})
    assert message in str(err.value)


def test_then_targets_must_exist_and_supervision_sends_nothing():
    import pydantic

    from rules.spec import RulesConfig, check_references
    config = RulesConfig.model_validate({"rules": [dict(BASE_RULE, then=[
        {"action": "close_valve", "target": {"device": "v-9"}},
        {"action": "siren_on", "target": {"grid": "cell-x", "type": "siren"}},
        {"action": "switch_off", "target": {"household": "same"}}])]})
    problems = check_references(config, ["v-1"], ["h-1"], ["cell-1"])
    assert problems == [
        (("rules", 0, "then", 0, "target", "device"), "rule 'g': command to unknown device 'v-9'"),
        (("rules", 0, "then", 1, "target", "grid"),
         "rule 'g': command to unknown grid cell 'cell-x'")]
    with pytest.raises(pydantic.ValidationError, match="send no commands"):
        RulesConfig.model_validate({"rules": [{
            "id": "s", "kind": "supervision", "message": {"zh": "故障", "en": "fault"},
            "then": [{"action": "close_valve", "target": {"household": "same"}}]}]})


def test_a_profile_that_cannot_report_the_commanded_state_is_refused():
    import pydantic

    from drivers.profiles import Profile
    with pytest.raises(pydantic.ValidationError, match="confirmed by a 'valve_open' reading"):
        Profile.model_validate({"id": "bad-valve", "device_type": "gas_valve",
                                "fields": {"battery": {"kind": "battery"}},
                                "commands": {"actions": {"close_valve": {"state": "OFF"}}}})
