"""`gateway profile list` and `gateway profile test`: the installer's commissioning tool decodes
a captured payload, register read or frame and prints readings as JSON lines; every problem
names the byte offset, line or field."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import DecodeError
from drivers.codecs import cjt188, dlt645
from drivers.codecs.contact_id import ContactIdEvent, encode_line
from drivers.codecs.modbus_registers import encode_value
from drivers.commissioning import decode_capture, parse_hex
from drivers.profiles import load_profiles
from gateway.cli import main

PROFILES = load_profiles()
METER = "210987654321"


def run(capsys, *argv: str) -> tuple[int, list[dict], str]:
    code = main(["profile", *argv])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def hexdump(frame: bytes) -> str:
    return " ".join(f"{b:02X}" for b in frame) + "\n"


def test_list_shows_every_shipped_profile():
    res = subprocess.run([sys.executable, "-m", "gateway.cli", "profile", "list", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    rows = {r["id"]: r for r in map(json.loads, res.stdout.splitlines())}
    for pid, fmt in [("eastron-sdm120", "modbus"), ("eastron-sdm630", "modbus"),
                     ("modbus-water-meter", "modbus"), ("dlt645-meter", "dlt645"),
                     ("cjt188-water-meter", "cjt188"), ("cjt188-gas-meter", "cjt188"),
                     ("contact-id-receiver", "contact_id"), ("json-emergency-caller", "json"),
                     ("zigbee2mqtt-door-contact", "json"),
                     ("zigbee2mqtt-water-leak-detector", "json")]:
        assert rows[pid]["format"] == fmt and rows[pid]["description"], pid


def test_mqtt_capture(tmp_path, capsys):
    cap = tmp_path / "door.json"
    cap.write_text(json.dumps({"topic": "zigbee2mqtt/hall_door",
                               "payload": {"contact": True, "battery": 88, "voltage": 3010}}))
    code, lines, err = run(capsys, "test", "zigbee2mqtt-door-contact", str(cap))
    assert code == 0, err
    assert {(x["metric"], x["value"], x["unit"]) for x in lines} == {
        ("door_open", False, ""), ("battery", 88.0, "%"), ("battery_voltage", 3.01, "V")}
    cap.write_text(json.dumps({"topic": "zigbee2mqtt/hall_door", "payload": '{"contact": 1}'}))
    code, lines, err = run(capsys, "test", "zigbee2mqtt-door-contact", str(cap))
    assert code == 1 and lines == []
    assert "zigbee2mqtt/hall_door (profile zigbee2mqtt-door-contact) field 'contact'" in err
    assert "[unknown_value]" in err


def test_bad_fields_are_lines_naming_the_field_never_a_traceback(tmp_path):
    """The capture of an SOS whose battery no float holds: the SOS line, one problem line per
    bad field (exit 1: something could not be decoded), and no traceback - also for numbers
    in the capture file itself, and for a payload given as text with NaN/Infinity tokens."""
    def profile_test(capture: str, pid: str = "json-emergency-caller"):
        cap = tmp_path / "capture.json"
        cap.write_text(capture)
        res = subprocess.run([sys.executable, "-m", "gateway.cli", "profile", "test", pid,
                              str(cap)], capture_output=True, text=True, timeout=60)
        assert "Traceback" not in res.stderr + res.stdout
        return res.returncode, [json.loads(x) for x in res.stdout.splitlines()], res.stderr

    code, lines, err = profile_test(json.dumps({"topic": "devices/caller-1",
                                                "payload": {"sos": True, "battery": 10 ** 400}}))
    assert code == 1 and [(x["metric"], x["value"]) for x in lines] == [("sos", True)]
    assert err.splitlines() == [
        f"{tmp_path / 'capture.json'}: devices/caller-1 (profile json-emergency-caller) "
        "field 'battery': number out of range: <a 401-digit integer> [bad_value]"]
    payload = '{"event": "sos", "battery": NaN, "tamper": Infinity, "ts": 1e400, "test": "x"}'
    code, lines, err = profile_test(json.dumps({"topic": "devices/caller-1",
                                                "payload": payload}))
    assert code == 1 and [(x["metric"], x["value"]) for x in lines] == [("sos", True)]
    for field, reason in [("battery", "bad_value"), ("tamper", "wrong_type"),
                          ("ts", "bad_timestamp"), ("test", "wrong_type")]:
        assert f"field '{field}'" in err and f"[{reason}]" in err
    assert len(err.splitlines()) == 4
    code, lines, err = profile_test('{"topic": "zigbee2mqtt/kitchen_leak", "payload": '
                                    '{"water_leak": true, "battery": ' + "9" * 5000 + "}}",
                                    "zigbee2mqtt-water-leak-detector")
    assert code == 1 and [(x["metric"], x["value"]) for x in lines] == [("water_leak", True)]
    assert "field 'battery': number out of range: <a 5000-digit integer> [bad_value]" in err
    # nothing readable: every field's problem is listed, still no traceback
    code, lines, err = profile_test('{"payload": {"sos": 1e400, "battery": "full"}}')
    assert code == 1 and lines == []
    assert "field 'sos'" in err and "field 'battery'" in err


def test_a_decoder_failure_is_one_error_line(tmp_path, capsys, monkeypatch):
    import drivers.commissioning

    def broken(*_args):
        raise RuntimeError("decoder bug\nsecond line")

    monkeypatch.setattr(drivers.commissioning, "decode_capture", broken)
    cap = tmp_path / "capture.json"
    cap.write_text('{"payload": {"sos": true}}')
    assert main(["profile", "test", "json-emergency-caller", str(cap)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == (f"error: {cap}: cannot decode with json-emergency-caller: "
                                 "RuntimeError: decoder bug second line\n")


def test_modbus_capture_of_coils_and_discrete_inputs(tmp_path, capsys):
    cap = tmp_path / "coils.json"
    cap.write_text(json.dumps({"function": 1, "address": 0, "registers": [False]}))
    code, lines, err = run(capsys, "test", "modbus-gas-valve", str(cap))
    assert code == 0, err
    assert [(x["metric"], x["value"]) for x in lines] == [("valve_open", False)]
    cap.write_text(json.dumps({"function": 2, "address": 0, "registers": [1]}))
    code, lines, err = run(capsys, "test", "modbus-gas-valve", str(cap))
    assert code == 0 and [(x["metric"], x["value"]) for x in lines] == [("fault", True)], err


def test_modbus_capture_sdm630(tmp_path, capsys):
    entries = {e.metric: e for e in PROFILES.by_id["eastron-sdm630"].entries()}
    registers = [0] * 76
    for metric, value in [("voltage_l1", 229.8), ("current_l1", 5.25), ("frequency", 50.01),
                          ("energy_import", 8123.5)]:
        e = entries[metric]
        registers[e.address:e.address + 2] = encode_value(e, value)
    cap = tmp_path / "read.json"
    cap.write_text(json.dumps({"function": 4, "address": 0, "registers": registers}))
    code, lines, err = run(capsys, "test", "eastron-sdm630", str(cap))
    assert code == 0, err
    got = {x["metric"]: (x["value"], x["unit"]) for x in lines}
    assert got["voltage_l1"] == (229.8, "V") and got["current_l1"] == (5.25, "A")
    assert got["frequency"] == (50.01, "Hz") and got["energy_import"] == (8123.5, "kWh")
    assert "energy_total" not in got            # register 342 is not in this read
    # a read that cuts a float32 in half names the value and the registers it needs
    cap.write_text(json.dumps({"function": 4, "address": 0, "registers": registers[:7]}))
    code, lines, err = run(capsys, "test", "eastron-sdm630", str(cap))
    assert code == 1 and {x["metric"] for x in lines} == {"voltage_l1", "voltage_l2",
                                                          "voltage_l3"}
    assert "current_l1 @ 6: float32 needs registers 6..7, the read has 0..6 [bad_length]" in err
    cap.write_text(json.dumps({"function": 3, "address": 0, "registers": [1, 2]}))
    code, _, err = run(capsys, "test", "eastron-sdm630", str(cap))
    assert code == 1 and "maps no register of function 3" in err


def test_dlt645_capture_with_offsets(tmp_path, capsys):
    good = dlt645.encode_read_reply(METER, 0x02010100, 229.8, preamble=4)
    power = dlt645.encode_read_reply(METER, 0x02030000, -1.5, preamble=0)
    cap = tmp_path / "frames.hex"
    cap.write_text("# captured on rs485-1\n" + hexdump(good) + "0x" + hexdump(power).replace(
        " ", " 0x"))
    code, lines, err = run(capsys, "test", "dlt645-meter", str(cap))
    assert code == 0, err
    assert [(x["metric"], x["value"], x["unit"]) for x in lines] == [
        ("voltage_a", 229.8, "V"), ("power_total", -1.5, "W")]
    bad = bytearray(good)
    bad[-2] ^= 0xFF                                       # spoil CS
    cap.write_text(hexdump(bytes(bad)))
    code, lines, err = run(capsys, "test", "dlt645-meter", str(cap))
    assert code == 1 and lines == []
    assert f"stream offset {len(bad) - 2}" in err and "[bad_checksum]" in err
    cap.write_text("68 21 43 6G\n")
    code, _, err = run(capsys, "test", "dlt645-meter", str(cap))
    assert code == 1 and "line 1 column 10: '6G' is not hex bytes [bad_hex]" in err


def test_dlt645_broadcast_address_reply(tmp_path, capsys):
    cap = tmp_path / "addr.hex"
    cap.write_text(hexdump(dlt645.encode_address_reply(METER, preamble=2)))
    code, lines, err = run(capsys, "test", "dlt645-meter", str(cap))
    assert code == 0, err
    assert lines == [{"metric": "meter_address", "value": METER, "unit": "", "kind": "address",
                      "quality": "good"}]


def test_cjt188_capture(tmp_path, capsys):
    cap = tmp_path / "water.hex"
    cap.write_text(hexdump(cjt188.encode_read_reply("12345678901234", volume=321.09,
                                                    valve="closed")))
    code, lines, err = run(capsys, "test", "cjt188-water-meter-valve", str(cap))
    assert code == 0, err
    got = {x["metric"]: x["value"] for x in lines}
    assert got == {"volume": 321.09, "battery_low": False, "valve_open": False,
                   "valve_fault": False}


def test_contact_id_capture(tmp_path, capsys):
    cap = tmp_path / "receiver.txt"
    sos = encode_line(ContactIdEvent("1234", 1, 101, 1, 3), spaced=True)
    wrong = sos[:-1] + ("1" if sos[-1] != "1" else "2")      # same event, wrong checksum
    cap.write_text(f"{sos}\n{wrong}\n")
    code, lines, err = run(capsys, "test", "contact-id-receiver", str(cap))
    assert code == 1
    assert [(x["metric"], x["value"]) for x in lines] == [("personal_emergency", True)]
    assert "line 2 digit 16 (S)" in err and "[bad_checksum]" in err


def test_unknown_profile_and_missing_file(tmp_path, capsys):
    assert main(["profile", "test", "no-such-profile", str(tmp_path / "x")]) == 2
    assert "no profile 'no-such-profile'" in capsys.readouterr().err
    assert main(["profile", "test", "dlt645-meter", str(tmp_path / "missing.hex")]) == 2


@settings(max_examples=150, deadline=None)
@given(pid=st.sampled_from(sorted(PROFILES.by_id)), raw=st.binary(max_size=300))
def test_random_captures_give_only_decode_errors(pid, raw):
    try:
        lines, problems = decode_capture(PROFILES.by_id[pid], raw)
    except DecodeError:
        return
    assert all(isinstance(p, DecodeError) for p in problems)
    assert all({"metric", "value", "unit"} <= set(x) for x in lines)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_parse_hex_rejects_or_returns_bytes(text):
    try:
        assert isinstance(parse_hex(text), bytes)
    except DecodeError as exc:
        assert exc.reason in ("bad_hex", "truncated")


if __name__ == "__main__":
    pytest.main([__file__])
