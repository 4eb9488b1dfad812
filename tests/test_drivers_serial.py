"""The serial driver on real pty pairs: DL/T 645 and CJ/T 188 meters answering (with bad
checksums, junk and split replies thrown in), Contact ID receiver lines, and an adapter
unplugged and plugged back while the driver runs."""

from __future__ import annotations

import asyncio

import pytest

from drivers.codecs.contact_id import ContactIdEvent, encode_line
from drivers.profiles import load_profiles
from drivers.serial_line import LineSettings, SerialDevice, SerialLine
from gateway.metrics import Metrics
from gateway.model import Kind, Quality
from simulators.serial_meters import MeterBus, PtyAdapter
from tests.support import CollectingSink, running, until

pytestmark = pytest.mark.integration

PROFILES = load_profiles()
METER_A, METER_B = "210987654321", "000000001234"
VALUES = {0x00010000: 4521.37, 0x00020000: 12.5, 0x02010100: 229.8, 0x02020100: -3.217,
          0x02030000: -739.2}


def dlt645_line(path, devices, sink, metrics, **kw) -> SerialLine:
    settings = LineSettings(str(path), "dlt645", period_s=kw.pop("period_s", 0.2),
                            timeout_s=kw.pop("timeout_s", 0.3), **kw)
    return SerialLine("rs485-1", settings, devices, sink, metrics)


@pytest.fixture
def adapter(tmp_path):
    a = PtyAdapter(tmp_path / "ttyUSB-rs485")
    yield a
    a.unplug()


async def test_dlt645_meters_read_with_bad_frames_counted(adapter):
    bus = MeterBus(adapter, protocol="dlt645",
                   dlt645_meters={METER_A: VALUES, METER_B: {0x00010000: 7.0}}).start()
    prof = PROFILES.by_id["dlt645-meter"]
    sink, metrics = CollectingSink(), Metrics()
    errors: list[tuple[str, str]] = []
    line = dlt645_line(adapter.path, [SerialDevice("em-a", METER_A, prof, "electricity_meter",
                                                   "h-1", "g-1"),
                                      SerialDevice("em-b", METER_B, prof)], sink, metrics)
    line.on_error = lambda d, r: errors.append((d, r))
    try:
        async with running(line):
            await until(lambda: line.polls_ok["em-a"] >= 1, 5, "first poll of meter A")
            bus.corrupt_next = 1                     # one reply with a bad checksum
            bus.junk = b"\x00\x11\x22"               # line noise before every reply
            bus.split_replies = True                 # replies arrive in two pieces
            await until(lambda: metrics.get("gateway_rejected_total", reason="bad_checksum",
                                            transport="serial") >= 1, 5, "bad checksum")
            good_after = line.polls_ok["em-a"]
            await until(lambda: line.polls_ok["em-a"] >= good_after + 2, 5,
                        "good polls through junk and split replies")
    finally:
        bus.stop()
    got = {r.metric: r for r in sink.readings if r.device_id == "em-a"}
    assert got["energy_import"].value == 4521.37 and got["energy_import"].unit == "kWh"
    assert got["voltage_a"].value == 229.8 and got["current_a"].value == -3.217
    assert got["power_total"].value == -739.2 and got["power_total"].unit == "W"
    assert got["voltage_a"].household_id == "h-1"
    # meter B has no energy_export item: the abnormal reply is counted, never a made-up value
    assert ("em-b", "abnormal_reply") in errors
    assert not sink.of("em-b", "energy_export")
    assert metrics.get("gateway_rejected_total", reason="junk_bytes", transport="serial") >= 1


async def test_silent_meter_is_reported_unavailable_once_and_skipped(adapter):
    bus = MeterBus(adapter, protocol="dlt645",
                   dlt645_meters={METER_A: VALUES, METER_B: VALUES}).start()
    bus.dead = {METER_B}
    prof = PROFILES.by_id["dlt645-meter"]
    sink, metrics = CollectingSink(), Metrics()
    line = dlt645_line(adapter.path, [SerialDevice("em-a", METER_A, prof),
                                      SerialDevice("em-b", METER_B, prof)], sink, metrics,
                       timeout_s=0.1)
    try:
        async with running(line):
            await until(lambda: line.polls_ok["em-a"] >= 8, 10, "8 polls of the live meter")
    finally:
        bus.stop()
    assert [r.value for r in sink.of("em-b", "availability")] == [False]
    assert line.polls_ok["em-b"] == 0
    # skipped with backoff: far fewer attempts than polls of the live meter
    assert metrics.get("gateway_rejected_total", reason="timeout", transport="serial") < 8


async def test_cjt188_water_meter(adapter):
    bus = MeterBus(adapter, protocol="cjt188",
                   cjt188_meters={"12345678901234": 1234.56}).start()
    sink = CollectingSink()
    line = SerialLine("mbus-1", LineSettings(str(adapter.path), "cjt188", period_s=0.2,
                                             timeout_s=0.3),
                      [SerialDevice("wm-1", "12345678901234",
                                    PROFILES.by_id["cjt188-water-meter"])], sink, Metrics())
    try:
        async with running(line):
            await until(lambda: sink.of("wm-1", "volume"), 5, "a water meter reading")
    finally:
        bus.stop()
    volume = sink.of("wm-1", "volume")[0]
    assert volume.kind is Kind.WATER_VOLUME and volume.value == 1234.56 and volume.unit == "m3"
    assert sink.of("wm-1", "battery_low")[0].value is False
    assert not sink.of("wm-1", "valve_open")          # this profile has no valve


async def test_contact_id_receiver_lines(adapter):
    prof = PROFILES.by_id["contact-id-receiver"]
    sink, metrics = CollectingSink(), Metrics()
    unknown: list[tuple[str, str]] = []
    line = SerialLine("receiver", LineSettings(str(adapter.path), "contact_id", baudrate=9600,
                                               parity="N"),
                      [SerialDevice("caller-7-302", "1234", prof, "emergency_caller", zone=1),
                       SerialDevice("panel-1234", "1234", prof, "alarm_panel")], sink, metrics,
                      on_unknown=lambda key, sample: unknown.append((key, sample)))
    sos = encode_line(ContactIdEvent("1234", 1, 101, 1, 1), spaced=True)
    smoke_restore = encode_line(ContactIdEvent("1234", 3, 111, 1, 5))
    other = encode_line(ContactIdEvent("9999", 1, 154, 1, 2))
    async with running(line):
        await until(lambda: line.state == "online", 5, "port open")
        adapter.write(b"garbage that is no event\r\n" + sos.encode() + b"\r\n")
        adapter.write(smoke_restore[:7].encode())            # a line split across reads
        await asyncio.sleep(0)
        adapter.write(smoke_restore[7:].encode() + b"\r\n" + other.encode() + b"\n")
        await until(lambda: len(sink.readings) >= 2 and unknown, 5, "events decoded")
    by_device = {(r.device_id, r.kind, r.value) for r in sink.readings}
    assert ("caller-7-302", Kind.SOS, True) in by_device           # zone 1 -> the caller
    assert ("panel-1234", Kind.SMOKE, False) in by_device          # other zones -> the panel
    assert unknown[0][0] == "contact-id:9999/01/002"
    assert metrics.get("gateway_rejected_total", reason="bad_format", transport="serial") == 1
    assert all(r.quality is Quality.GOOD for r in sink.readings)


class HeldAckSink:
    """A pipeline stand-in that keeps each offer's ``ack`` until the test calls it (the
    pipeline calls it once the readings are committed to its inbox)."""

    def __init__(self) -> None:
        self.offers: list[tuple[list, object, bool]] = []

    def offer(self, readings, ack, durable: bool = False) -> None:
        self.offers.append((readings, ack, durable))


async def test_receiver_gets_its_ack_only_once_the_event_is_safe(adapter):
    prof = PROFILES.by_id["contact-id-receiver"]
    sink, metrics = HeldAckSink(), Metrics()
    line = SerialLine("receiver", LineSettings(str(adapter.path), "contact_id", baudrate=9600,
                                               parity="N", ack=b"\x06", nak=b"\x15"),
                      [SerialDevice("caller-7-302", "1234", prof, "emergency_caller", zone=1)],
                      sink, metrics)
    sos = encode_line(ContactIdEvent("1234", 1, 101, 1, 1))
    supervision = encode_line(ContactIdEvent("1234", 1, 381, 1, 1))   # RF supervision loss
    unknown = encode_line(ContactIdEvent("9999", 1, 154, 1, 2))

    def rejected(reason: str) -> float:
        return metrics.get("gateway_rejected_total", reason=reason, transport="serial")

    async with running(line):
        await until(lambda: line.state == "online", 5, "port open")
        adapter.write(sos.encode() + b"\r\n")
        await until(lambda: sink.offers, 5, "event offered")
        readings, ack, durable = sink.offers[0]
        assert [(r.device_id, r.kind, r.value) for r in readings] == [
            ("caller-7-302", Kind.SOS, True)]
        assert durable                         # through the inbox, whatever its kind
        assert adapter.read(0) == b""          # not acknowledged while not yet safe
        ack()                                  # the pipeline committed it
        assert adapter.read(2.0) == b"\x06"

        # every event of a known account is kept durable, not only alarm-class ones
        adapter.write(supervision.encode() + b"\r\n")
        await until(lambda: len(sink.offers) == 2, 5, "supervision event offered")
        assert sink.offers[1][2] and adapter.read(0) == b""
        sink.offers[1][1]()
        assert adapter.read(2.0) == b"\x06"

        # noise on the line: refused, so the receiver sends it again ...
        garbled = sos[:5] + "Z" + sos[6:]
        for n, bad in enumerate([sos[:-1] + ("1" if sos[-1] != "1" else "2"), garbled,
                                 sos[:-3]], start=1):
            adapter.write(bad.encode() + b"\r\n")
            await until(lambda: sum(rejected(r) for r in ("bad_checksum", "bad_format",
                                                          "bad_length")) == n,  # noqa: B023
                        5, "refused")
            assert adapter.read(2.0) == b"\x15", bad
        # ... but the same unreadable line is not refused forever
        for _ in range(4):                     # refused 3 times running, the 4th copy acked
            adapter.write(garbled.encode() + b"\r\n")
        await until(lambda: rejected("unreadable_gave_up") == 1, 5, "gave up")
        answers = b""
        while len(answers) < 4 and (more := adapter.read(2.0)):
            answers += more
        assert answers == b"\x15\x15\x15\x06"

        adapter.write(unknown.encode() + b"\r\n")
        await until(lambda: rejected("unknown_device") == 1, 5, "unknown account counted")
        assert adapter.read(2.0) == b"\x06"     # heard; resending would not help
        before = rejected("bad_format") + rejected("bad_length")
        adapter.write(b"1011           @    \r\n")       # a receiver's heartbeat
        await until(lambda: rejected("bad_format") + rejected("bad_length") == before + 1, 5,
                    "status line counted")
        assert adapter.read(2.0) == b"\x06"     # answered, not refused

        # the receiver timed out and resent the event before the first copy was committed:
        # the first copy's ACK would answer the resend (or the next event), so only the
        # newest copy is acknowledged
        adapter.write(sos.encode() + b"\r\n")
        await until(lambda: len(sink.offers) == 3, 5, "event offered")
        adapter.write(sos.encode() + b"\r\n")
        await until(lambda: len(sink.offers) == 4, 5, "resent copy offered")
        sink.offers[2][1]()                    # an ACK would be written by this call
        assert adapter.read(0) == b""
        sink.offers[3][1]()
        assert adapter.read(2.0) == b"\x06"

        adapter.write(sos.encode() + b"\r\n")
        await until(lambda: len(sink.offers) == 5, 5, "event offered")
        adapter.unplug()
        await until(lambda: line.state == "offline", 5, "line lost")
        sink.offers[4][1]()                    # committed after the line died: no crash
    readings, ack, _ = sink.offers[-1]         # the line's loss reported, nothing to answer
    assert [(r.metric, r.value) for r in readings] == [("availability", False)] and ack is None


async def test_unplugged_adapter_recovers_without_restart(adapter):
    """Close the pty under the running driver: offline once, backoff, back on replug."""
    bus = MeterBus(adapter, protocol="dlt645", dlt645_meters={METER_A: VALUES}).start()
    prof = PROFILES.by_id["dlt645-meter"]
    sink, metrics = CollectingSink(), Metrics()
    line = dlt645_line(adapter.path, [SerialDevice("em-a", METER_A, prof)], sink, metrics)
    try:
        async with running(line):
            await until(lambda: line.polls_ok["em-a"] >= 2, 5, "polls before unplug")
            adapter.unplug()
            await until(lambda: line.state == "offline", 5, "line offline")
            before = line.polls_ok["em-a"]
            # it keeps trying (backoff) while the adapter is away, and stays offline
            await until(lambda: metrics.get("gateway_driver_reconnects_total",
                                            driver="serial") >= 1, 5, "a reconnect attempt")
            assert line.polls_ok["em-a"] == before
            adapter.replug()                                  # a new pty behind the path
            await until(lambda: line.polls_ok["em-a"] >= before + 2, 40, "polls after replug")
            assert line.state == "online" and line.opened == 2
    finally:
        bus.stop()
    assert [r.value for r in sink.of("em-a", "availability")] == [False, True]
