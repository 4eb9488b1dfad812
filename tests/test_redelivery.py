"""An SOS received but not yet committed is not lost when the gateway is killed: no PUBACK
went out, so the broker redelivers it to the restarted gateway (persistent session). And the
converse: once the alarm is visible, a kill and restart does not make a second one.

The window between receipt and commit is widened with the documented fault-injection
setting GATEWAY_TEST_COMMIT_DELAY_S (off unless set; the gateway logs it loudly)."""

from __future__ import annotations

import subprocess

import pytest

from tests.support import GatewayProcess, metric_value, site_copy, wait_for

pytestmark = pytest.mark.integration

SOS_TOPIC = "devices/caller-7-101"


def _pub(port: int, topic: str, payload: str) -> None:
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1",
                    "-t", topic, "-m", payload], check=True, timeout=10)


def _open_alarms(api) -> list[dict]:
    r = api.get("/api/alarms", params={"state": "open"})
    assert r.status_code == 200, r.text
    return r.json()["alarms"]


def _marker_seen(api, device: str, battery: float) -> bool:
    r = api.get(f"/api/devices/{device}/readings")
    return r.status_code == 200 and any(
        x["kind"] == "battery" and x["value"] == battery for x in r.json()["readings"])


@pytest.fixture
def site(tmp_path, mosquitto):
    return site_copy(tmp_path / "site", mqtt_port=mosquitto.port)


def test_sos_killed_between_receipt_and_commit_is_redelivered(tmp_path, site, mosquitto):
    slow = GatewayProcess(site, tmp_path / "data", env={"GATEWAY_TEST_COMMIT_DELAY_S": "30"})
    token = slow.token("duty", "redelivery")
    slow.start()
    assert "TEST FAULT INJECTION" in slow.log_text()
    api = slow.api(token)
    _pub(mosquitto.port, SOS_TOPIC, '{"event": "sos"}')
    wait_for(lambda: metric_value(slow.metrics(), "gateway_ingest_messages_total",
                                  transport="mqtt") >= 1, timeout=10, what="SOS received")
    assert _open_alarms(api) == []          # received, not committed: inside the window
    slow.kill()                              # SIGKILL: no PUBACK was sent

    normal = GatewayProcess(site, tmp_path / "data", port=slow.port)
    normal.start()
    try:
        api = normal.api(token)
        alarms = wait_for(lambda: _open_alarms(api), timeout=15,
                          what="redelivered SOS becomes an alarm")
        assert [(a["device_id"], a["category"], a["count"]) for a in alarms] == \
            [("caller-7-101", "emergency_call", 1)]
    finally:
        normal.stop()


def test_committed_sos_is_not_duplicated_by_a_restart(tmp_path, site, mosquitto):
    gw = GatewayProcess(site, tmp_path / "data")
    token = gw.token("duty", "no-duplicate")
    gw.start()
    api = gw.api(token)
    _pub(mosquitto.port, SOS_TOPIC, '{"event": "sos"}')
    alarm = wait_for(lambda: _open_alarms(api), timeout=10, what="SOS alarm")[0]
    gw.kill()                                # committed and acknowledged: nothing to redeliver
    gw.start()
    try:
        api = gw.api(token)
        # a marker published after the restart arrives after anything the broker still had
        _pub(mosquitto.port, "devices/smoke-7-101", '{"battery": 77}')
        wait_for(lambda: _marker_seen(api, "smoke-7-101", 77.0), timeout=10,
                 what="marker reading after restart")
        alarms = _open_alarms(api)
        assert [(a["id"], a["count"]) for a in alarms] == [(alarm["id"], 1)]
    finally:
        gw.stop()
