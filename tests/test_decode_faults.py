"""No silent decode failures (issue 12.4): an exception our own decoding raises on a bound
device's input (MQTT, Modbus, serial) puts the device in fault ``decode_error`` — in its
health (GET /api/devices) and the faults list (GET /api/faults) — is counted
(gateway_decode_errors_total{transport, cause}, gateway_rejected_total{reason="decode_error"})
and logged once per device and cause, never once per message; the input is acknowledged and
the driver goes on. The fault clears at the device's first cleanly decoded message once none
has failed for the hold time (at once after a restart or a site edit).

The running-gateway test uses the test-only fault injection GATEWAY_TEST_DECODE_FAULT (an MQTT
payload containing its bytes makes decoding raise), because a misfit profile, the real way this
happened, is now refused when the site is loaded."""

from __future__ import annotations

import asyncio
import json
import logging
from types import SimpleNamespace

import httpx
import pytest

import drivers.modbus
import drivers.mqtt
import drivers.profiles
from drivers.codecs import contact_id, dlt645
from drivers.codecs.contact_id import ContactIdEvent, encode_line
from drivers.codecs.modbus_registers import plan_reads
from drivers.modbus import BusEndpoint, ModbusBus, ModbusDevice, PollPolicy
from drivers.mqtt import DeviceBinding, MqttIntake
from drivers.profiles import load_profiles
from drivers.serial_line import LineSettings, SerialDevice, SerialLine
from gateway.alarms import AlarmBook
from gateway.broker import free_port
from gateway.health import DecodeFaults, HealthBook
from gateway.metrics import Metrics
from gateway.model import Kind
from gateway.site import load_site
from gateway.store import Store
from simulators.modbus_meters import MeterStore, serve_meters
from simulators.serial_meters import MeterBus, PtyAdapter
from tests.support import (EXAMPLE, CollectingSink, GatewayProcess, metric_value, mqtt_publish,
                           running, site_copy, until, wait_for)

PROFILES = load_profiles()
SITE = load_site(EXAMPLE)
ROWS = [("caller-1", "emergency_caller", "h-7-101", "cell-1"),
        ("smoke-1", "smoke_detector", "h-7-101", "cell-1"),
        ("em-1", "electricity_meter", None, "cell-1"),
        ("panel-1", "alarm_panel", "h-7-101", "cell-1"),
        ("caller-z1", "emergency_caller", "h-7-101", "cell-1")]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _faults(store: Store) -> list[dict]:
    """What GET /api/faults?include_cleared=true lists (the alarm book made the table)."""
    return AlarmBook(store, SITE).faults(open_only=False)


def _raising(exc_type=ZeroDivisionError):
    """An exception with a traceback, as a decoder bug raises it."""
    try:
        raise exc_type("boom")
    except exc_type as exc:
        return exc


# -- DecodeFaults: the fault, its count, its log line, its end ---------------------------------

async def test_fault_counted_logged_once_per_cause_held_and_cleared(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="gateway.health")
    clock, metrics = Clock(), Metrics()
    async with Store(tmp_path / "gateway.db") as store:
        AlarmBook(store, SITE)                 # the schema, as the service makes it
        health = HealthBook(ROWS)
        faults = DecodeFaults(health, metrics, store, hold_s=600, clock=clock)
        for _ in range(50):
            faults.failed("smoke-1", "mqtt", _raising(), "devices/smoke-1")
        for _ in range(3):
            faults.failed("smoke-1", "mqtt", _raising(KeyError), "devices/smoke-1")
        await until(lambda: _faults(store), 5, "the fault stored")
        assert metrics.get("gateway_decode_errors_total", transport="mqtt",
                           cause="ZeroDivisionError") == 50
        assert metrics.get("gateway_decode_errors_total", transport="mqtt", cause="KeyError") == 3
        logged = [r for r in caplog.records if "decode error: device smoke-1" in r.message]
        assert len(logged) == 2 and all(r.levelno == logging.ERROR for r in logged)
        assert "ZeroDivisionError: boom" in logged[0].message
        dev = health.devices["smoke-1"].to_json()
        assert (dev["state"], dev["fault"]) == ("degraded", "decode_error")
        (row,) = _faults(store)
        assert (row["key"], row["fault"], row["device_id"], row["household_id"],
                row["grid_cell"], row["severity"], row["cleared_at"]) == (
            "driver:smoke-1:decode_error", "decode_error", "smoke-1", "h-7-101", "cell-1",
            "major", None)
        assert "无法解码" in row["message_zh"] and "cannot be decoded" in row["message_en"]
        # a clean message within the hold time: the fault stays (input that fails sometimes)
        clock.t += 599
        faults.ok("smoke-1")
        assert health.devices["smoke-1"].fault == "decode_error"
        # one after it: cleared, in the health and in the faults list
        clock.t += 2
        faults.ok("smoke-1")
        assert health.devices["smoke-1"].fault is None
        await until(lambda: _faults(store)[0]["cleared_at"], 5, "the fault cleared")
        assert any("smoke-1: its messages decode again" in r.message for r in caplog.records)
        # the same cause again later: a fault again, but not a log line again
        faults.failed("smoke-1", "mqtt", _raising(), "devices/smoke-1")
        await until(lambda: not _faults(store)[0]["cleared_at"], 5, "raised again")
        assert len([r for r in caplog.records if "decode error: device smoke-1" in r.message]) == 2
        # ok() for a device without a fault costs nothing and changes nothing
        faults.ok("caller-1")
        assert health.devices["caller-1"].fault is None


async def test_fault_survives_a_restart_and_ends_with_its_device(tmp_path):
    async with Store(tmp_path / "gateway.db") as store:
        AlarmBook(store, SITE)                 # the schema, as the service makes it
        first = DecodeFaults(HealthBook(ROWS), Metrics(), store, clock=Clock())
        first.failed("smoke-1", "mqtt", _raising(), "devices/smoke-1")
        first.failed("em-1", "modbus", _raising(), "bus b1")
        await until(lambda: len(_faults(store)) == 2, 5, "two faults stored")
        # a restart: the faults are taken from the store, shown, and the next clean message
        # clears at once (no failure in this run)
        health = HealthBook(ROWS)
        again = DecodeFaults(health, Metrics(), store, clock=Clock())
        again.load()
        assert health.devices["smoke-1"].fault == "decode_error"
        assert health.devices["smoke-1"].state == "degraded"
        again.ok("smoke-1")
        assert health.devices["smoke-1"].fault is None
        # the site edited, em-1 removed: its fault ends
        health.rebind([r for r in ROWS if r[0] != "em-1"])
        again.rebind()
        await until(lambda: all(f["cleared_at"] for f in _faults(store)), 5, "both cleared")


# -- MQTT intake: a field or a whole message our decoding raises on ----------------------------

def _message(topic: str, payload: dict | str) -> SimpleNamespace:
    body = payload if isinstance(payload, str) else json.dumps(payload)
    return SimpleNamespace(topic=topic, payload=body.encode(), mid=1, qos=0)


async def test_mqtt_field_and_message_exceptions(monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    real_typed, real_decode = drivers.profiles._typed, drivers.mqtt.decode_json

    def typed(kind, raw, fm):                  # a bug reading battery values
        if kind is Kind.BATTERY:
            return {}[raw]
        return real_typed(kind, raw, fm)

    def decode_json(profile, device_id, *args, **kw):    # a bug decoding smoke-1 entirely
        if device_id == "smoke-1":
            raise AttributeError("'Dlt645Profile' object has no attribute 'timestamp'")
        return real_decode(profile, device_id, *args, **kw)

    monkeypatch.setattr(drivers.profiles, "_typed", typed)
    monkeypatch.setattr(drivers.mqtt, "decode_json", decode_json)
    sink, metrics, health = CollectingSink(), Metrics(), HealthBook(ROWS)
    faults = DecodeFaults(health, metrics)
    caller = PROFILES.by_id["json-emergency-caller"]
    smoke = PROFILES.by_id["json-smoke-detector"]
    intake = MqttIntake(host="127.0.0.1", port=1, client_id="t", sink=sink, metrics=metrics,
                        on_error=health.error, decode_watch=faults, bindings={
                            "devices/caller-1": DeviceBinding("caller-1", "emergency_caller",
                                                              "h-7-101", "cell-1", caller),
                            "devices/smoke-1": DeviceBinding("smoke-1", "smoke_detector",
                                                             "h-7-101", "cell-1", smoke)})
    for _ in range(10):
        intake._on_message(intake._main, _message("devices/caller-1", {"sos": True,
                                                                      "battery": 50}))
        intake._on_message(intake._main, _message("devices/smoke-1", {"smoke": True}))
    intake._on_message(intake._main, _message("devices/caller-1", {"battery": 50}))
    # the SOS next to the bad battery field still arrives, every time
    assert [r.kind for r in sink.readings] == [Kind.SOS] * 10
    assert metrics.get("gateway_bad_fields_total", reason="decode_error", field="battery",
                       transport="mqtt") == 10
    # smoke-1's messages and the message with only the bad field are lost: counted
    assert metrics.get("gateway_rejected_total", reason="decode_error", transport="mqtt") == 11
    assert metrics.get("gateway_decode_errors_total", transport="mqtt", cause="KeyError") == 11
    assert metrics.get("gateway_decode_errors_total", transport="mqtt",
                       cause="AttributeError") == 10
    for device in ("caller-1", "smoke-1"):
        assert health.devices[device].to_json()["fault"] == "decode_error"
        assert len([r for r in caplog.records
                    if f"decode error: device {device}" in r.message]) == 1, device
    assert health.devices["smoke-1"].errors == {"decode_error": 10}
    assert "no attribute 'timestamp'" in caplog.text
    assert "Traceback" not in caplog.text
    # fixed (a new release): the device's next clean message clears its fault
    monkeypatch.setattr(drivers.mqtt, "decode_json", real_decode)
    faults.rebind()
    intake._on_message(intake._main, _message("devices/smoke-1", {"smoke": False}))
    assert health.devices["smoke-1"].fault is None
    assert health.devices["caller-1"].fault == "decode_error"     # still failing


# -- Modbus: a block our decoding raises on costs that block, not the device -------------------

@pytest.mark.integration
async def test_modbus_block_exception_is_a_fault_not_a_dead_meter(monkeypatch, caplog):
    caplog.set_level(logging.ERROR, logger="gateway.health")
    sdm630 = PROFILES.by_id["eastron-sdm630"]
    reads = tuple(plan_reads(sdm630.entries(), max_gap=sdm630.max_gap))
    real = drivers.modbus.decode_block

    def decode_block(req, registers, **kw):
        if req.address == 342:               # energy_total's block: a bug of ours
            raise IndexError("list index out of range")
        return real(req, registers, **kw)

    monkeypatch.setattr(drivers.modbus, "decode_block", decode_block)
    store = MeterStore(sdm630.entries(), [1])
    store.set_values(1, {"voltage_l1": 229.8, "energy_total": 12.5})
    port = free_port()
    server = await serve_meters(store, port)
    sink, metrics, health = CollectingSink(expect_ack=False), Metrics(), HealthBook(ROWS)
    bus = ModbusBus("b1", BusEndpoint("tcp", port=port), [ModbusDevice(
        "em-1", 1, reads, "electricity_meter", None, "cell-1")], sink, metrics,
        policy=PollPolicy(period_s=0.1, timeout_s=0.5, quarantine_after=2),
        on_error=health.error, decode_watch=DecodeFaults(health, metrics))
    try:
        async with running(bus):
            await until(lambda: len(sink.of("em-1", "voltage_l1")) >= 5, 10, "five polls")
    finally:
        await server.shutdown()
    assert not sink.of("em-1", "energy_total")
    assert not bus.stats["em-1"].quarantined                    # the meter answers
    assert not [r for r in sink.readings if r.kind is Kind.AVAILABILITY]
    polls = len(sink.of("em-1", "voltage_l1"))
    assert metrics.get("gateway_rejected_total", reason="decode_error",
                       transport="modbus") >= polls
    assert metrics.get("gateway_decode_errors_total", transport="modbus",
                       cause="IndexError") >= polls
    assert health.devices["em-1"].fault == "decode_error"
    assert len([r for r in caplog.records if "decode error: device em-1" in r.message]) == 1


# -- serial: a meter item and a receiver event our decoding raises on --------------------------

@pytest.fixture
def adapter(tmp_path):
    a = PtyAdapter(tmp_path / "ttyUSB-decode")
    yield a
    a.unplug()


@pytest.mark.integration
async def test_dlt645_item_exception_costs_that_item(adapter, monkeypatch, caplog):
    caplog.set_level(logging.ERROR, logger="gateway.health")
    meter = "210987654321"
    real = dlt645.Dlt645Reply.reading

    def reading(self, device_id, ts):          # a bug converting voltage items
        if self.item.metric == "voltage_a":
            raise TypeError("unsupported operand")
        return real(self, device_id, ts)

    monkeypatch.setattr(dlt645.Dlt645Reply, "reading", reading)
    bus = MeterBus(adapter, protocol="dlt645", dlt645_meters={meter: {
        0x00010000: 4521.37, 0x00020000: 12.5, 0x02010100: 229.8, 0x02020100: 3.2,
        0x02030000: 739.2}}).start()
    sink, metrics, health = CollectingSink(), Metrics(), HealthBook(ROWS)
    line = SerialLine("rs485-1", LineSettings(str(adapter.path), "dlt645", period_s=0.2,
                                              timeout_s=0.3),
                      [SerialDevice("em-1", meter, PROFILES.by_id["dlt645-meter"],
                                    "electricity_meter", None, "cell-1")], sink, metrics,
                      on_error=health.error, decode_watch=DecodeFaults(health, metrics))
    try:
        async with running(line):
            await until(lambda: len(sink.of("em-1", "energy_import")) >= 3, 10, "three polls")
    finally:
        bus.stop()
    assert not sink.of("em-1", "voltage_a") and sink.of("em-1", "power_total")
    assert line.polls_ok["em-1"] >= 3 and "em-1" not in line._unavailable
    assert metrics.get("gateway_decode_errors_total", transport="serial",
                       cause="TypeError") >= 3
    assert health.devices["em-1"].fault == "decode_error"
    assert len([r for r in caplog.records if "decode error: device em-1" in r.message]) == 1


@pytest.mark.integration
async def test_receiver_event_exception_is_acknowledged_and_a_fault(adapter, monkeypatch,
                                                                    caplog):
    caplog.set_level(logging.ERROR, logger="gateway.health")
    real = contact_id.event_reading

    def event_reading(event, **kw):
        if event.code == 151:                  # gas events: a bug of ours
            raise ValueError("bad table entry")
        return real(event, **kw)

    monkeypatch.setattr(contact_id, "event_reading", event_reading)
    prof = PROFILES.by_id["contact-id-receiver"]
    sink, metrics, health = CollectingSink(), Metrics(), HealthBook(ROWS)
    line = SerialLine("receiver", LineSettings(str(adapter.path), "contact_id", baudrate=9600,
                                               parity="N", ack=b"\x06", nak=b"\x15"),
                      [SerialDevice("caller-z1", "1234", prof, "emergency_caller", zone=1),
                       SerialDevice("panel-1", "1234", prof, "alarm_panel")], sink, metrics,
                      on_error=health.error, decode_watch=DecodeFaults(health, metrics))
    gas = encode_line(ContactIdEvent("1234", 1, 151, 1, 4)).encode() + b"\r\n"
    sos = encode_line(ContactIdEvent("1234", 1, 101, 1, 1)).encode() + b"\r\n"
    async with running(line):
        await until(lambda: line.state == "online", 5, "port open")
        for _ in range(3):
            adapter.write(gas)
            # acknowledged: the receiver goes on (read while the line's task runs)
            assert await asyncio.to_thread(adapter.read, 2.0) == b"\x06"
        adapter.write(sos)
        await until(lambda: sink.readings, 5, "the SOS after them")
    assert [(r.device_id, r.kind) for r in sink.readings] == [("caller-z1", Kind.SOS)]
    assert health.devices["panel-1"].fault == "decode_error"
    assert health.devices["caller-z1"].fault is None
    assert metrics.get("gateway_rejected_total", reason="decode_error", transport="serial") == 3
    assert len([r for r in caplog.records if "decode error: device panel-1" in r.message]) == 1


# -- the running gateway: what staff and the installer see ------------------------------------

MARK = "TEST-DECODE-FAULT-7f3a"


def _device(api: httpx.Client, device_id: str) -> dict:
    r = api.get("/api/devices")
    assert r.status_code == 200, r.text
    return next(d for d in r.json()["devices"] if d["device_id"] == device_id)


def _faults_of(api: httpx.Client, device_id: str, **params) -> list[dict]:
    r = api.get("/api/faults", params=params)
    assert r.status_code == 200, r.text
    return [f for f in r.json()["faults"] if f["device_id"] == device_id]


def _alarms_of(api: httpx.Client, device_id: str) -> int:
    r = api.get("/api/history", params={"device_id": device_id, "include_tests": True})
    assert r.status_code == 200, r.text
    return r.json()["total"]


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_running_gateway_shows_decode_error_counts_it_and_logs_it_once(tmp_path, mosquitto):
    site = site_copy(tmp_path / "site", mqtt_port=mosquitto.port)
    gw = GatewayProcess(site, tmp_path / "data", env={"GATEWAY_TEST_DECODE_FAULT": MARK})
    token = gw.token("duty", "decode-duty")
    gw.start()
    try:
        api = gw.api(token)
        bad = ("devices/smoke-7-101", json.dumps({"smoke": True, "probe": MARK}))
        mqtt_publish(mosquitto.port, [bad] * 30 + [("devices/caller-7-101", {"event": "sos"})])
        # the intake goes on: the SOS published after the 30 bad messages is an alarm
        wait_for(lambda: _alarms_of(api, "caller-7-101"), 20, what="the SOS alarm")
        wait_for(lambda: metric_value(gw.metrics(), "gateway_decode_errors_total",
                                      transport="mqtt", cause="RuntimeError") == 30, 10,
                 what="30 decode errors counted")
        assert metric_value(gw.metrics(), "gateway_rejected_total", reason="decode_error",
                            transport="mqtt") == 30
        dev = _device(api, "smoke-7-101")
        assert (dev["state"], dev["fault"]) == ("degraded", "decode_error"), dev
        assert dev["errors"] == {"decode_error": 30}
        (fault,) = _faults_of(api, "smoke-7-101")
        assert (fault["fault"], fault["severity"], fault["household_id"],
                fault["cleared_at"]) == ("decode_error", "major", "h-7-101", None)
        assert "无法解码" in fault["message_zh"]
        log = gw.log_text()
        assert log.count("decode error: device smoke-7-101") == 1, log
        assert log.count(MARK) <= 2             # the logged line (and the injection warning)
        assert _alarms_of(api, "smoke-7-101") == 0
        assert _device(api, "caller-7-101")["fault"] is None

        # a restart without the injection (a fixed release): the fault is still shown, and
        # nothing is redelivered (the 30 messages were acknowledged: else a fire alarm now)
        gw.stop()
        del gw.env["GATEWAY_TEST_DECODE_FAULT"]
        gw.start()
        api = gw.api(token)
        assert _device(api, "smoke-7-101")["fault"] == "decode_error"
        assert len(_faults_of(api, "smoke-7-101")) == 1
        mqtt_publish(mosquitto.port, [("devices/smoke-7-101", {"smoke": False, "battery": 88}),
                                      ("devices/caller-7-302", {"event": "sos"})])
        wait_for(lambda: _device(api, "smoke-7-101")["state"] == "online", 20,
                 what="the device decodes again")
        wait_for(lambda: _alarms_of(api, "caller-7-302"), 20, what="a later alarm")
        assert _device(api, "smoke-7-101")["fault"] is None
        assert _faults_of(api, "smoke-7-101") == []
        (cleared,) = _faults_of(api, "smoke-7-101", include_cleared=True)
        assert cleared["fault"] == "decode_error" and cleared["cleared_at"]
        assert _alarms_of(api, "smoke-7-101") == 0
        assert "smoke-7-101: its messages decode again" in gw.log_text()
    finally:
        gw.stop()


@pytest.mark.integration
@pytest.mark.browser
@pytest.mark.timeout(180)
def test_console_shows_the_decode_fault_in_chinese_and_english(tmp_path, mosquitto):
    """The devices page: the device row carries the tag 解码失败 and the faults list names the
    fault 解码失败 (English: "decode error"); the raw code is nowhere on the page."""
    import os
    import secrets

    chromium = "/usr/bin/chromium"
    if not os.path.exists(chromium):
        pytest.fail("Chromium is not installed: run `bash deploy/quickstart.sh test` "
                    "(it installs the distribution's chromium package)")
    from playwright.sync_api import sync_playwright

    site = site_copy(tmp_path / "site", mqtt_port=mosquitto.port)
    gw = GatewayProcess(site, tmp_path / "data", env={"GATEWAY_TEST_DECODE_FAULT": MARK})
    password = secrets.token_urlsafe(12)
    res = gw.cli("user", "add", "--username", "duty", "--role", "duty", "--password-stdin",
                 "--data", str(gw.data), input=password + "\n")
    assert res.returncode == 0, res.stderr
    token = gw.token("duty", "decode-console")
    gw.start()
    try:
        mqtt_publish(mosquitto.port, [("devices/smoke-7-302", json.dumps({"probe": MARK}))] * 3)
        api = gw.api(token)
        wait_for(lambda: _faults_of(api, "smoke-7-302"), 20, what="the decode fault")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            try:
                for lang, label in (("zh", "解码失败"), ("en", "decode error")):
                    context = browser.new_context(locale="zh-CN")
                    context.add_init_script(f"localStorage.setItem('lang', '{lang}')")
                    page = context.new_page()
                    page.goto(gw.url + "/")
                    page.fill("#login input[name=username]", "duty")
                    page.fill("#login input[name=password]", password)
                    page.click("#login button[type=submit]")
                    page.wait_for_selector("#app:not([hidden])", timeout=10_000)
                    page.click("[data-view=devices]")
                    tag = page.wait_for_selector(
                        "tr.dev[data-device='smoke-7-302'] .tag.fault", timeout=5000)
                    assert tag.inner_text() == label
                    assert label in page.inner_text("#faults")
                    assert "decode_error" not in page.inner_text("body")
                    # the other devices carry no fault tag
                    assert page.locator(".tag.fault").count() == 1
                    context.close()
            finally:
                browser.close()
    finally:
        gw.stop()
