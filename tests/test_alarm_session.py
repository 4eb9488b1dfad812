"""The alarm session: an SOS or a gas alarm pressed while the gateway is stopped reaches staff
and the case system even when the telemetry of that stop has filled the broker's queue for
the gateway (issue 18; docs/architecture.md "The alarm session").

A real Mosquitto with the installed broker's accounts and ACL (``gateway_acl``, as
deploy/mosquitto/mqtt-accounts.py writes it) and a small queue bound standing in for the
installed 10,000 messages; ``gateway run`` as a process; the simulated case system.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets

import httpx
import pytest

from drivers.mqtt import AlarmSession, DeviceBinding, MqttIntake, is_alarm_device
from gateway.broker import Mosquitto, free_port
from gateway.broker_acl import PARTITION_FILE, gateway_acl, read_partition, record_partition
from gateway.metrics import Metrics
from gateway.kernel.model import Kind
from gateway.service import bindings_for
from gateway.site import load_site
from tests.support import (
    CaseSystemProcess,
    AckingSink,
    GatewayProcess,
    metric_value,
    mqtt_publish,
    site_copy,
    stock_profile,
    until,
    wait_for,
)

pytestmark = pytest.mark.integration

#: the broker's queue for a session that is not reading (the installed broker: 10,000)
QUEUE = 60
EXTRA_DEVICES = """
  - id: motion-7-101
    type: motion_sensor
    household: h-7-101
    mqtt: {zigbee2mqtt: "h7-101/motion"}
  - id: gas-7-101
    type: gas_detector
    household: h-7-101
    mqtt: {zigbee2mqtt: "h7-101/gas"}
"""


def _site(tmp_path, port: int, case_url: str, *, alarm_session: bool,
          callback_url: str | None = None):
    site = site_copy(tmp_path / "site", mqtt_port=port, case_url=case_url,
                     callback_url=callback_url)
    with open(site / "devices.yaml", "a", encoding="utf-8") as fh:
        fh.write(EXTRA_DEVICES)
    text = (f"mqtt:\n  host: 127.0.0.1\n  port: {port}\n  max_payload_bytes: 4096\n"
            "  username: gateway\n  password_env: MQTT_PASSWORD\n")
    if alarm_session:
        text += "  alarm_session:\n    username: gateway-alarm\n" \
                "    password_env: MQTT_ALARM_PASSWORD\n"
    (site / "gateway.yaml").write_text(text)
    return site


@pytest.fixture
def rig(tmp_path, request):
    """Broker (accounts, ACL, small queue), case system, a site with a motion sensor and a
    gas detector on Zigbee2MQTT beside the example's callers and smoke detectors."""
    alarm_session = request.param
    secret = secrets.token_urlsafe(32)
    passwords = {"gateway": secrets.token_urlsafe(16), "gateway-alarm": secrets.token_urlsafe(16)}
    cases = CaseSystemProcess(secret, tmp_path, dispatch_after=0.5, on_site_after=1.0,
                              close_after=1.5).start()
    broker = Mosquitto(workdir=tmp_path / "mosquitto", accounts=passwords, max_queued=QUEUE)
    api_port = free_port()
    site = _site(tmp_path, broker.port, cases.url, alarm_session=alarm_session,
                 callback_url=f"http://127.0.0.1:{api_port}/api/case-callback")
    bindings = bindings_for(load_site(site))
    broker.acl = gateway_acl(bindings, user="gateway",
                             alarm_user="gateway-alarm" if alarm_session else None,
                             partition=alarm_session)
    broker.start()
    gw = GatewayProcess(site, tmp_path / "data", port=api_port, env={
        "CASE_SYSTEM_SECRET": secret, "MQTT_PASSWORD": passwords["gateway"],
        "MQTT_ALARM_PASSWORD": passwords["gateway-alarm"]})
    try:
        yield {"broker": broker, "cases": cases, "gw": gw, "site": site, "bindings": bindings}
    finally:
        gw.stop()
        cases.stop()
        broker.cleanup()


def _alarms(api) -> list[dict]:
    r = api.get("/api/alarms", params={"limit": 500})
    assert r.status_code == 200, r.text
    return r.json()["alarms"]


def _stop_and_fill(rig, n: int = 5 * QUEUE) -> None:
    """The gateway killed; the motion sensor reports ``n`` times (far past the queue's
    bound); then a resident presses SOS and the gas detector alarms."""
    rig["gw"].kill()
    port = rig["broker"].port
    mqtt_publish(port, [("zigbee2mqtt/h7-101/motion",
                         {"occupancy": i % 2 == 0, "battery": 90, "linkquality": 80})
                        for i in range(n)])
    mqtt_publish(port, [("devices/caller-7-101", {"event": "sos"}),
                        ("zigbee2mqtt/h7-101/gas", {"gas": True, "battery": 95})])


@pytest.mark.parametrize("rig", [True], indirect=True)
def test_an_sos_behind_a_full_queue_of_a_stopped_gateway_reaches_staff_and_one_case(rig):
    gw = rig["gw"]
    token = gw.token("duty", "alarm-session")
    gw.start()
    # the gateway recorded its alarm session (what lets mqtt-accounts.py split the topics)
    assert read_partition(gw.data) == "gateway-alarm"
    _stop_and_fill(rig)
    gw.start()
    api = gw.api(token)
    want = {("caller-7-101", "emergency_call"), ("gas-7-101", "gas")}
    alarms = wait_for(lambda: (lambda a: a if {(x["device_id"], x["category"]) for x in a}
                               >= want else None)(_alarms(api)), timeout=20, interval=0.1,
                      what="the SOS and the gas alarm")
    assert sorted((a["device_id"], a["category"], a["count"]) for a in alarms) == \
        [("caller-7-101", "emergency_call", 1), ("gas-7-101", "gas", 1)]
    # the queue did overflow: most of the motion reports never reached the gateway
    ingested = metric_value(gw.metrics(), "gateway_ingest_messages_total", transport="mqtt")
    assert ingested <= 2 * QUEUE + 2, ingested
    # exactly one case each, and each case's status back on its card
    def dispatched(alarm_id: int) -> dict | None:
        card = api.get(f"/api/alarms/{alarm_id}").json()
        return card if card["case_status"] == "dispatched" else None

    for alarm in alarms:
        card = wait_for(lambda a=alarm["id"]: dispatched(a), timeout=20, interval=0.1,
                        what=f"case status on alarm {alarm['id']}")
        mine = re.compile(rf"-{alarm['id']}-0$")
        sent = [c for c in rig["cases"].cases()["cases"] if mine.search(c["idempotency_key"])]
        assert len(sent) == 1 and sent[0]["case_id"] == card["case_id"], sent
        assert sent[0]["create_requests"] == 1
    # the alarm session is part of the gateway's readiness and health
    health = httpx.get(f"{gw.url}/healthz", timeout=5).json()
    assert "mqtt" in json.dumps(health)


@pytest.mark.parametrize("rig", [False], indirect=True)
def test_without_the_alarm_session_the_broker_drops_that_sos(rig):
    """The hazard the alarm session removes, shown on the same broker: with one session the
    SOS pressed after the queue filled is dropped by the broker (after its PUBACK to the
    caller, so the device never sends it again)."""
    gw = rig["gw"]
    token = gw.token("duty", "one-session")
    gw.start()
    assert read_partition(gw.data) is None
    _stop_and_fill(rig)
    gw.start()
    api = gw.api(token)
    # a marker published after the restart arrives after anything the broker still had
    mqtt_publish(rig["broker"].port, [("devices/smoke-7-101", {"battery": 77})])
    wait_for(lambda: any(x["kind"] == "battery" and x["value"] == 77.0 for x in api.get(
        "/api/devices/smoke-7-101/readings").json()["readings"]), timeout=15,
        what="the marker after the backlog")
    assert _alarms(api) == []
    assert rig["cases"].cases()["cases"] == []


def test_alarm_devices_are_the_ones_a_person_must_answer():
    assert is_alarm_device(stock_profile("json-emergency-caller"))
    assert is_alarm_device(stock_profile("json-smoke-detector"))
    assert is_alarm_device(stock_profile("zigbee2mqtt-gas-detector"))
    assert is_alarm_device(stock_profile("zigbee2mqtt-water-leak-detector"))
    # tamper is alarm-class, but every battery sensor has it: stays on the main session
    assert not is_alarm_device(stock_profile("zigbee2mqtt-motion-sensor"))
    assert not is_alarm_device(stock_profile("zigbee2mqtt-door-contact"))


def test_the_acl_splits_alarm_topics_off_only_once_the_alarm_session_is_recorded(tmp_path):
    bindings = bindings_for(load_site(_site(tmp_path, 1883, "http://127.0.0.1:1",
                                            alarm_session=True)))
    before = gateway_acl(bindings, user="gateway", alarm_user="gateway-alarm")
    assert not [x for x in before if x.startswith("topic deny")]
    assert "user gateway-alarm" in before
    assert not [x for x in before if x.startswith("topic read devices/")]
    after = gateway_acl(bindings, user="gateway", alarm_user="gateway-alarm", partition=True)
    alarm = {"devices/caller-7-101", "devices/smoke-7-101", "zigbee2mqtt/h7-101/gas"}
    assert alarm <= {x.removeprefix("topic deny ") for x in after}
    assert "topic deny zigbee2mqtt/h7-101/motion" not in after
    # the deny lines are the main account's, the reads the alarm account's
    main = after[:after.index("user gateway-alarm")]
    assert {x.removeprefix("topic deny ") for x in main if x.startswith("topic deny")} == \
        {t for t, b in bindings.items() if b.alarm}
    # the record: written when it changes, read back; none when the file is absent
    data = tmp_path / "data"
    data.mkdir()
    assert read_partition(data) is None
    assert record_partition(data, None) is False and not (data / PARTITION_FILE).exists()
    assert record_partition(data, "gateway-alarm") is True
    assert record_partition(data, "gateway-alarm") is False
    assert read_partition(data) == "gateway-alarm"
    assert record_partition(data, None) is True and read_partition(data) is None


async def test_the_alarm_session_drops_what_a_wrong_acl_lets_through(tmp_path):
    """A hand-edited ACL that lets the alarm account read a motion sensor: the alarm session
    drops it (counted); the main session, which reads it too, delivers it once."""
    caller, motion = stock_profile("json-emergency-caller"), stock_profile("zigbee2mqtt-motion-sensor")
    bindings = {
        "devices/caller-1": DeviceBinding("caller-1", "emergency_caller", "h-1", None, caller,
                                          alarm=True),
        "zigbee2mqtt/motion-1": DeviceBinding("motion-1", "motion_sensor", "h-1", None,
                                              motion, alarm=False)}
    passwords = {"gw": "main-" + secrets.token_urlsafe(8), "gwa": "alarm-" + secrets.token_urlsafe(8)}
    acl = gateway_acl(bindings, user="gw", alarm_user="gwa", partition=True)
    acl += ["user gwa", "topic read zigbee2mqtt/motion-1", ""]
    broker = Mosquitto(workdir=tmp_path / "b", accounts=passwords, acl=acl,
                       persistence=False).start()
    sink, metrics = AckingSink(), Metrics()
    intake = MqttIntake(host="127.0.0.1", port=broker.port, client_id="t", sink=sink,
                        bindings=bindings, metrics=metrics, username="gw",
                        password=passwords["gw"],
                        alarm_session=AlarmSession("t-alarm", "gwa", passwords["gwa"]))
    task = asyncio.create_task(intake.run())
    try:
        await until(intake.connected.is_set, 10, "both sessions connected")
        assert intake.state == "online"
        await asyncio.to_thread(mqtt_publish, broker.port, [
            ("zigbee2mqtt/motion-1", {"occupancy": True}), ("devices/caller-1", {"event": "sos"})])
        await until(lambda: metrics.get("gateway_rejected_total", reason="not_alarm_topic",
                                        transport="mqtt") == 1, 10, "the wrong one dropped")
        await until(lambda: len(sink.readings) >= 2, 10, "both readings")
        await asyncio.sleep(0.3)
        assert sorted(r.kind for r in sink.readings) == sorted([Kind.MOTION, Kind.SOS])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        broker.cleanup()
