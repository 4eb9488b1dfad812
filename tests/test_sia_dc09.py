"""The SIA DC-09 receiver against a real DC-09 sender from PyPI (my-dc09-spt: its frames,
its encryption, its answer check) over loopback TCP and UDP: ADM-CID and SIA-DCS events,
plain and AES-encrypted, answered ACK only once committed; NAK for a bad CRC and an old
timestamp, DUH for an unknown account; null messages as heartbeats and a silent panel
offline. Then ``gateway profile test`` on DC-09 frames, the site config's errors, and a real
gateway process: a DC-09 fire alarm in the API, and a sender that retries until ACKed across
a ``kill -9`` of the gateway (one alarm, nothing lost).

The frames are built only by the sender library (``dc09_msg``/``dc05_msg``/``dc03_msg``);
a damaged frame is a sender frame with one character changed."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from my_dc09_spt.comm.transpath import TransPath
from my_dc09_spt.dc09_spt import dc09_spt
from my_dc09_spt.msg.dc03_msg import dc03_msg
from my_dc09_spt.msg.dc05_msg import dc05_msg
from my_dc09_spt.msg.dc09_msg import dc09_msg

from drivers.sia import Dc09Account, Dc09Device, ReceiverSettings, SiaReceiver, parse_frame
from drivers.sia.dc09 import frame as dc09_frame
from gateway.broker import free_port
from gateway.cli import main
from gateway.kernel.errors import ConfigError
from gateway.metrics import Metrics
from gateway.model import Kind
from tests.support import GatewayProcess, metric_value, running, site_copy, until, wait_for

pytestmark = pytest.mark.integration

KEY = b"0123456789abcdef"                 # AES-128, as typed into a panel (16 characters)
PLAIN, SECRET, STRANGER = "1234", "5678", "9999"


class HoldingSink:
    """A pipeline stand-in that keeps each offer's ``ack`` until ``commit()`` (or commits at
    once with ``auto``)."""

    def __init__(self, auto: bool = True) -> None:
        self.auto = auto
        self.offers: list[tuple[list, object, bool]] = []

    def offer(self, readings, ack, durable: bool = False) -> None:
        self.offers.append((readings, ack, durable))
        if self.auto and ack is not None:
            ack()

    def commit(self) -> None:
        for _, ack, _ in self.offers:
            if ack is not None:
                ack()

    def readings(self, device: str | None = None) -> list:
        return [r for rs, _, _ in self.offers for r in rs
                if device is None or r.device_id == device]

    def events(self) -> list[tuple[str, str, object]]:
        return [(r.device_id, r.metric, r.value) for r in self.readings()
                if r.kind is not Kind.AVAILABILITY]


def receiver(sink, metrics, *, protocol="both", supervision_s=None, tick_s=1.0) -> SiaReceiver:
    accounts = [Dc09Account(PLAIN, None, supervision_s), Dc09Account(SECRET, KEY, supervision_s)]
    devices = [Dc09Device("panel-plain", PLAIN, None, "alarm_panel", None, "g-1"),
               Dc09Device("panel-secret", SECRET, None, "alarm_panel", "h-1", "g-1"),
               Dc09Device("smoke-z3", SECRET, 3, "smoke_detector", "h-1", "g-1")]
    return SiaReceiver("dc09", ReceiverSettings("127.0.0.1", 0, protocol), accounts, devices,
                       sink, metrics, tick_s=tick_s)


def path(rx: SiaReceiver, proto: str, account: str, key: bytes | None = None) -> TransPath:
    host, port = rx.bound[proto]
    return TransPath(host, port, account, key=key, line=0, type=proto)


def send_event(p: TransPath, nr: int, mtype: str, params: dict) -> bool:
    """The sender library's own transfer: frame, send, read the answer; True = ACK."""
    spt = dc09_spt(p.get_account())
    build = dc05_msg.dc05event if mtype == "ADM-CID" else dc03_msg.dc03event
    return spt.transfer_msg(nr, mtype, build(p.get_account(), params), p)


def exchange(rx: SiaReceiver, proto: str, frame: bytes, timeout: float = 3.0) -> bytes:
    """One frame out, one answer back, on a fresh socket."""
    host, port = rx.bound[proto]
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.settimeout(timeout)
        if proto == "tcp":
            s.connect((host, port))
            s.sendall(frame)
            return s.recv(1024)
        s.sendto(frame, (host, port))
        return s.recvfrom(1024)[0]


def answered(rx: SiaReceiver, proto: str, sender: dc09_msg, nr: int) -> tuple:
    """The sender's ADM-CID fire event ``nr`` exchanged; the sender's reading of the answer."""
    frame = sender.dc09block(nr, "ADM-CID", dc05_msg.dc05event(sender.account, {"code": "110"}))
    return sender.dc09answer(nr, exchange(rx, proto, frame.encode()).decode())


async def test_adm_cid_and_sia_dcs_plain_and_encrypted_over_tcp_and_udp():
    sink, metrics = HoldingSink(), Metrics()
    async with running(receiver(sink, metrics)) as rx:
        await until(lambda: rx.state == "online", 5, "receiver listening")
        cases = [("tcp", PLAIN, None, "ADM-CID", {"code": "110", "q": "1", "zone": "1"}),
                 ("udp", PLAIN, None, "ADM-CID", {"code": "110", "q": "3", "zone": "1"}),
                 ("tcp", SECRET, KEY, "ADM-CID", {"code": "111", "q": "1", "zone": "3"}),
                 ("udp", SECRET, KEY, "SIA-DCS", {"code": "FA", "zone": "7", "area": "1"}),
                 ("tcp", SECRET, KEY, "SIA-DCS", {"code": "PA", "zone": "0"}),
                 ("udp", PLAIN, None, "SIA-DCS", {"code": "MA", "zone": "2"}),
                 ("tcp", PLAIN, None, "SIA-DCS", {"code": "GA", "zone": "4"}),
                 ("udp", SECRET, KEY, "ADM-CID", {"code": "137", "q": "1", "zone": "9"})]
        for nr, (proto, acct, key, mtype, params) in enumerate(cases, 1):
            ok = await asyncio.to_thread(send_event, path(rx, proto, acct, key), nr, mtype,
                                         params)
            assert ok, f"frame {nr} ({proto} {acct} {mtype} {params}) not acknowledged"
    assert sink.events() == [
        ("panel-plain", "fire", True), ("panel-plain", "fire", False),
        ("smoke-z3", "smoke", True),                 # zone 3 of the account: its own device
        ("panel-secret", "fire", True), ("panel-secret", "panic", True),
        ("panel-plain", "medical", True), ("panel-plain", "gas", True),
        ("panel-secret", "tamper", True)]
    assert all(durable for rs, _, durable in sink.offers if rs[0].kind is not Kind.AVAILABILITY)
    smoke = sink.readings("smoke-z3")[0]
    assert (smoke.household_id, smoke.grid_cell, smoke.device_type) == \
        ("h-1", "g-1", "smoke_detector")
    assert metric_value(metrics.render(), "gateway_dc09_answers_total", answer="ACK",
                        reason="committed") == 8


async def test_ack_waits_for_the_commit():
    sink, metrics = HoldingSink(auto=False), Metrics()
    async with running(receiver(sink, metrics, protocol="tcp")) as rx:
        await until(lambda: rx.state == "online", 5, "receiver listening")
        frame = dc09_msg(PLAIN, None, None, 0).dc09block(
            42, "ADM-CID", dc05_msg.dc05event(PLAIN, {"code": "110", "q": "1"})).encode()
        host, port = rx.bound["tcp"]
        s = socket.create_connection((host, port), timeout=3)
        try:
            s.sendall(frame)
            await until(lambda: any(durable for _, _, durable in sink.offers), 5, "offered")
            s.settimeout(0.3)
            with pytest.raises(TimeoutError):
                await asyncio.to_thread(s.recv, 1024)      # nothing while not committed
            sink.commit()
            s.settimeout(3)
            answer = await asyncio.to_thread(s.recv, 1024)
        finally:
            s.close()
    verdict, _ = dc09_msg(PLAIN, None, None, 0).dc09answer(42, answer.decode())
    assert verdict == "ACK"


async def test_bad_crc_and_old_timestamp_are_nak_unknown_account_is_duh(caplog):
    sink, metrics = HoldingSink(), Metrics()
    async with running(receiver(sink, metrics)) as rx:
        await until(lambda: rx.state == "online", 5, "receiver listening")
        sender = dc09_msg(PLAIN, None, None, 0)
        good = sender.dc09block(5, "ADM-CID", dc05_msg.dc05event(PLAIN, {"code": "110"}))
        bad_crc = good[:1] + ("0" if good[1] != "0" else "1") + good[2:]   # first CRC digit
        for proto in ("tcp", "udp"):
            answer = await asyncio.to_thread(exchange, rx, proto, bad_crc.encode())
            assert sender.dc09answer(5, answer.decode())[0] == "NAK"

        # encrypted, the panel's clock 2 minutes behind: NAK, whose timestamp gives the
        # sender its offset; the sender's resend with that offset is acknowledged
        late = dc09_msg(SECRET, KEY, None, 0, offset=-120)
        verdict, offset = await asyncio.to_thread(answered, rx, "udp", late, 6)
        assert verdict == "NAK" and offset is not None and abs(offset) < 5
        late.set_offset(offset)
        assert (await asyncio.to_thread(answered, rx, "udp", late, 6))[0] == "ACK"

        # unknown account (plain and encrypted); a plain frame for the account that has a
        # key (anyone could send it): DUH
        for proto, sender, nr in (("tcp", dc09_msg(STRANGER, None, None, 0), 7),
                                  ("udp", dc09_msg(STRANGER, KEY, None, 0), 8),
                                  ("tcp", dc09_msg(SECRET, None, None, 0), 9)):
            assert (await asyncio.to_thread(answered, rx, proto, sender, nr))[0] == "DUH"

    text = metrics.render()
    for reason, n in (("bad_crc", 2), ("bad_timestamp", 1), ("unknown_account", 2),
                      ("unencrypted", 1)):
        assert metric_value(text, "gateway_rejected_total", reason=reason,
                            transport="sia") == n, reason
    assert metric_value(text, "gateway_dc09_answers_total", answer="NAK", reason="bad_crc") == 2
    assert metric_value(text, "gateway_dc09_answers_total", answer="DUH",
                        reason="unknown_account") == 2
    assert sink.events() == [("panel-secret", "fire", True)]    # only the resend got through
    log = caplog.text
    assert "account 9999" in log and "[unknown_account]" in log
    assert "account 1234" in log and "[bad_crc]" in log
    assert "account 5678" in log and "[bad_timestamp]" in log


async def test_null_messages_are_heartbeats_and_a_silent_panel_goes_offline():
    sink, metrics = HoldingSink(), Metrics()
    rx = receiver(sink, metrics, supervision_s=0.6, tick_s=0.05)
    async with running(rx):
        await until(lambda: rx.state == "online", 5, "receiver listening")
        for _ in range(3):                                   # heartbeats keep it online
            for proto, acct, key in (("udp", PLAIN, None), ("tcp", SECRET, KEY)):
                null = dc09_msg(acct, key, None, 0).dc09poll().encode()
                answer = await asyncio.to_thread(exchange, rx, proto, null)
                assert dc09_msg(acct, key, None, 0).dc09answer(0, answer.decode())[0] == "ACK"
            await asyncio.sleep(0.2)
        assert not [r for r in sink.readings() if r.value is False]
        beats = [r for r in sink.readings("panel-secret") if r.metric == "availability"]
        assert len(beats) == 3 and all(r.value is True for r in beats)
        # silence: both panels, and the zone device behind the second, offline once
        await until(lambda: len([r for r in sink.readings() if r.value is False]) == 3, 5,
                    "silent panels offline")
        await asyncio.sleep(0.3)
        offline = [(r.device_id, r.metric) for r in sink.readings() if r.value is False]
        assert sorted(offline) == [("panel-plain", "availability"),
                                   ("panel-secret", "availability"),
                                   ("smoke-z3", "availability")]
        null = dc09_msg(SECRET, KEY, None, 0).dc09poll().encode()
        await asyncio.to_thread(exchange, rx, "udp", null)
        last = {r.device_id: r.value for r in sink.readings() if r.metric == "availability"}
        assert last["panel-secret"] is True and last["smoke-z3"] is True
        assert last["panel-plain"] is False
    assert metric_value(metrics.render(), "gateway_dc09_supervision_lost_total",
                        receiver="dc09") == 2


@settings(max_examples=300, deadline=None)
@given(body=st.text(alphabet=st.sampled_from('"*ADM-CIDSNUL#|[]_:,0123456789ABCDEFRL '),
                    max_size=80),
       key=st.sampled_from([None, KEY]), frame_it=st.booleans())
def test_any_frame_is_judged_never_raises(body, key, frame_it):
    """Random bodies, framed with a right CRC or not: always a verdict and an answer."""
    raw = dc09_frame(body) if frame_it else body.encode()
    f = parse_frame(raw, {PLAIN: key, SECRET: KEY})
    assert f.verdict in ("event", "null", "nak", "duh") and f.answer.startswith(b"\n")


def test_profile_test_decodes_dc09_frames(tmp_path, capsys, monkeypatch):
    frames = [dc09_msg(PLAIN, None, None, 0).dc09block(
                  1, "ADM-CID", dc05_msg.dc05event(PLAIN, {"code": "111", "q": "1", "zone": "3"})),
              dc09_msg(SECRET, KEY, None, 0).dc09block(
                  2, "SIA-DCS", dc03_msg.dc03event(SECRET, {"code": "FH", "zone": "7"})),
              dc09_msg(PLAIN, None, None, 0).dc09poll()]
    damaged = frames[0][:1] + ("0" if frames[0][1] != "0" else "1") + frames[0][2:]
    cap = tmp_path / "panel.txt"
    cap.write_text("".join(frames) + damaged)
    monkeypatch.setenv("PANEL_KEY", KEY.decode())
    code = main(["profile", "test", "contact-id-receiver", str(cap), "--key-env", "PANEL_KEY"])
    out, err = capsys.readouterr()
    import json
    lines = [json.loads(x) for x in out.splitlines()]
    assert code == 1                                   # the damaged frame
    assert [(x["account"], x["type"], x["metric"], x["value"]) for x in lines] == [
        (PLAIN, "ADM-CID", "smoke", True), (SECRET, "SIA-DCS", "fire", False),
        (PLAIN, "NULL", "availability", True)]
    assert lines[1]["encrypted"] is True and "zone 7" in lines[1]["event"]
    assert "frame 4 account 1234" in err and "[bad_crc]" in err
    # without the key the encrypted frame is named, not guessed at
    code = main(["profile", "test", "contact-id-receiver", str(cap)])
    assert code == 1 and "frame 2 account 5678" in capsys.readouterr().err


SITE_DEVICES = """
  - id: panel-b7
    type: alarm_panel
    grid_cell: "310104-012-03"
    name: 7号楼报警主机
    dc09: {receiver: panels, account: "%s"}
"""


def _dc09_site(tmp_path, mqtt_port: int, port: int, *, key_env: str = "PANEL_B7_KEY",
               account: str = SECRET):
    site = site_copy(tmp_path / "site", mqtt_port=mqtt_port)
    with open(site / "devices.yaml", "a", encoding="utf-8") as fh:
        fh.write(SITE_DEVICES % account)
    # the example site's own rules.yaml has the fire rule a panel's fire raises
    with open(site / "gateway.yaml", "a", encoding="utf-8") as fh:
        fh.write(f"""dc09_receivers:
  - id: panels
    host: 127.0.0.1
    port: {port}
    protocol: both
    accounts:
      - account: "{SECRET}"
        key: {{secret_env: {key_env}}}
        supervision_s: 600
""")
    return site


def test_site_config_errors_name_the_file_and_field(tmp_path, monkeypatch):
    from drivers.field import plan_field
    from drivers.profiles import load_profiles
    from gateway.site import load_site

    site = _dc09_site(tmp_path, 1883, 7001, account="4321")
    text = (site / "devices.yaml").read_text(encoding="utf-8")
    (site / "devices.yaml").write_text(text + SITE_DEVICES.replace("panel-b7", "panel-b8")
                                       .replace("panels", "nowhere") % SECRET)
    with pytest.raises(ConfigError) as exc:
        load_site(site)
    issues = "\n".join(exc.value.issues)
    assert "devices.yaml:" in issues and "devices[6].dc09.account: account '4321' is not " \
        "among the accounts of DC-09 receiver 'panels'" in issues
    assert "devices[7].dc09.receiver: unknown DC-09 receiver 'nowhere'" in issues

    site = _dc09_site(tmp_path / "2", 1883, 7001)
    monkeypatch.delenv("PANEL_B7_KEY", raising=False)
    loaded = load_site(site)
    with pytest.raises(ConfigError) as exc:
        plan_field(loaded, load_profiles())
    assert exc.value.issues == ["gateway.yaml: dc09_receivers[0].accounts[0].key.secret_env: "
                                "environment variable PANEL_B7_KEY is not set"]
    monkeypatch.setenv("PANEL_B7_KEY", "too short")
    with pytest.raises(ConfigError) as exc:
        plan_field(loaded, load_profiles())
    assert "key_format text needs 16, 24 or 32 ASCII characters, got 9" in exc.value.issues[0]
    monkeypatch.setenv("PANEL_B7_KEY", KEY.decode())
    plan = plan_field(loaded, load_profiles())["dc09:panels"]
    assert plan.accounts[0].key == KEY and KEY.decode() not in repr(plan)


def _alarms(api) -> list[dict]:
    return [a for a in api.get("/api/alarms", params={"state": "open"}).json()["alarms"]
            if a["device_id"] == "panel-b7"]


def test_gateway_fire_alarm_and_a_sender_retrying_across_kill_9(tmp_path, mosquitto):
    port = free_port()
    site = _dc09_site(tmp_path, mosquitto.port, port)
    gw = GatewayProcess(site, tmp_path / "data", env={"PANEL_B7_KEY": KEY.decode()})
    duty = gw.token("duty", "dc09-duty")
    gw.start()
    try:
        api = gw.api(duty)
        wait_for(lambda: api.get("/readyz").json()["components"].get("dc09:panels", {})
                 .get("state") == "online", timeout=10, what="DC-09 receiver listening")
        tcp = TransPath("127.0.0.1", port, SECRET, key=KEY, line=0, type="tcp")
        assert send_event(tcp, 1, "SIA-DCS", {"code": "FA", "zone": "0"})
        alarm = wait_for(lambda: _alarms(api), timeout=10, what="panel fire in /api/alarms")[0]
        assert alarm["category"] == "fire" and alarm["state"] == "raised"
        assert alarm["grid_cell"] == "310104-012-03"

        # restore, then a new fire sent while the gateway is frozen, killed and restarted
        assert send_event(tcp, 2, "SIA-DCS", {"code": "FH", "zone": "0"})
        assert api.post(f"/api/alarms/{alarm['id']}/ack", json={"note": "t"}).status_code == 200
        assert api.post(f"/api/alarms/{alarm['id']}/resolve",
                        json={"reason": "handled"}).status_code == 200
        wait_for(lambda: not _alarms(api), timeout=10, what="first alarm resolved")

        gw.proc.send_signal(signal.SIGSTOP)             # accepts (kernel), never answers
        results: list[bool] = []
        attempts = [0]

        def retrying_sender() -> None:
            udp = TransPath("127.0.0.1", port, SECRET, key=KEY, line=0, type="tcp")
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                attempts[0] += 1
                if send_event(udp, 3, "ADM-CID", {"code": "110", "q": "1", "zone": "0"}):
                    results.append(True)
                    return
                time.sleep(0.2)
            results.append(False)

        sender = threading.Thread(target=retrying_sender, daemon=True)
        sender.start()
        wait_for(lambda: attempts[0] >= 1, timeout=5, what="sender's first attempt")
        time.sleep(0.5)
        gw.kill()                                        # SIGKILL while it is stopped
        wait_for(lambda: attempts[0] >= 2, timeout=10, what="sender retrying")
        gw.start()
        sender.join(45)
        assert results == [True], "the sender never got its ACK"
        api = gw.api(duty)
        alarms = wait_for(lambda: _alarms(api), timeout=10, what="the retried fire alarm")
        time.sleep(0.5)
        assert len(_alarms(api)) == 1 and alarms[0]["category"] == "fire"
        assert metric_value(gw.metrics(), "gateway_dc09_answers_total", answer="ACK",
                            reason="committed") >= 1
    finally:
        gw.stop()


# Every alarm category an alarm panel sends, end to end: a real DC-09 sender over TCP -> the
# alarm in the API -> exactly one case at the simulated grid case system -> the case's status
# back on the card. Contact ID code, category, the rule of the example site that raises it.
PANEL_CATEGORIES = [(100, "emergency_call", "sos"), (110, "fire", "fire"), (114, "fire", "heat"), (120, "panic", "panic"),
                    (130, "intrusion", "intrusion"), (151, "gas", "gas"),
                    (162, "gas", "carbon_monoxide"), (154, "water_leak", "water_leak")]


def _dispatched(api, alarm_id: int) -> dict | None:
    """The alarm's card once its case's status "dispatched" came back, else None."""
    card = api.get(f"/api/alarms/{alarm_id}").json()
    return card if card["case_status"] == "dispatched" else None


def test_every_panel_alarm_category_becomes_one_case_and_its_status_comes_back(tmp_path,
                                                                               mosquitto):
    from tests.support import CaseSystemProcess

    secret = "dc09-case-secret-" + "x" * 24
    cases = CaseSystemProcess(secret, tmp_path, dispatch_after=0.3, on_site_after=600,
                              close_after=600).start()
    port, api_port = free_port(), free_port()
    site = _dc09_site(tmp_path, mosquitto.port, port)
    site_copy_uplinks = (f"case_system:\n  url: {cases.url}\n  key_id: tianlin-07\n"
                         f"  secret_env: CASE_SYSTEM_SECRET\n  timeout_s: 2\n  poll_s: 3600\n"
                         f"  callback_url: http://127.0.0.1:{api_port}/api/case-callback\n")
    (site / "uplinks.yaml").write_text(site_copy_uplinks, encoding="utf-8")
    gw = GatewayProcess(site, tmp_path / "data", port=api_port,
                        env={"PANEL_B7_KEY": KEY.decode(), "CASE_SYSTEM_SECRET": secret})
    duty = gw.token("duty", "dc09-duty")
    gw.start()
    try:
        api = gw.api(duty)
        wait_for(lambda: api.get("/readyz").json()["components"].get("dc09:panels", {})
                 .get("state") == "online", timeout=10, what="DC-09 receiver listening")
        tcp = TransPath("127.0.0.1", port, SECRET, key=KEY, line=0, type="tcp")
        for nr, (code, category, rule_id) in enumerate(PANEL_CATEGORIES, start=1):
            assert send_event(tcp, nr, "ADM-CID", {"code": str(code), "q": "1", "zone": str(nr)})
            alarm = wait_for(lambda rid=rule_id: [a for a in _alarms(api) if a["rule_id"] == rid],
                             timeout=10, what=f"panel {rule_id} alarm")[0]
            assert alarm["category"] == category
            assert alarm["severity"] == ("major" if rule_id == "water_leak" else "critical")
            card = wait_for(lambda a=alarm: _dispatched(api, a["id"]), timeout=15,
                            what=f"{rule_id}: its case dispatched, on the card")
            mine = [c for c in cases.cases()["cases"] if c["case_id"] == card["case_id"]]
            assert len(mine) == 1 and mine[0]["create_requests"] == 1, mine
            assert mine[0]["category"] == category
        # one alarm and one case per event, no more
        assert len(_alarms(api)) == len(PANEL_CATEGORIES)
        assert len(cases.cases()["cases"]) == len(PANEL_CATEGORIES)
    finally:
        gw.stop()
        cases.stop()
