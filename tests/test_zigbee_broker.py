"""The broker side of Zigbee zero-config (issue 14.5), against a real Mosquitto configured
like deploy/mosquitto/community-gateway.conf (accounts, ACLs, no anonymous access, its
``message_size_limit``): on a fresh site without any Zigbee device, ``mqtt-accounts.py``
makes the ``zigbee2mqtt`` account; Zigbee2MQTT logs in with it and publishes the device
list of a 500-device network, which reaches the gateway's account whole.
"""

from __future__ import annotations

import csv
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from ruamel.yaml import YAML

from gateway.broker import free_port, stop_process, wait_port
from tests.support import EXAMPLE

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
ACCOUNTS = ROOT / "deploy" / "mosquitto" / "mqtt-accounts.py"
BRIDGE = ROOT / "tests" / "data" / "z2m" / "bridge_devices.json"


def _accounts(site: Path, env: Path, out: Path, *extra: str) -> dict[str, dict]:
    res = subprocess.run([sys.executable, str(ACCOUNTS), "--config", str(site), "--env",
                          str(env), "--out", str(out), "--group", "root", *extra],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    with open(out / "credentials.csv", newline="", encoding="utf-8") as fh:
        return {row["device"]: row for row in csv.DictReader(fh)}


def _network(n: int) -> bytes:
    """A bridge/devices message of ``n`` devices: the fixture's models over and over, each
    with its own IEEE address (compact JSON, as Zigbee2MQTT sends it)."""
    models = [e for e in json.loads(BRIDGE.read_text(encoding="utf-8"))
              if e["type"] != "Coordinator"]
    out = []
    for i in range(n):
        e = dict(models[i % len(models)])
        e["ieee_address"] = e["friendly_name"] = f"0x00158d00{i:08x}"
        out.append(e)
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.fixture
def broker(tmp_path):
    if not shutil.which("mosquitto_passwd") or not (shutil.which("mosquitto")
                                                    or os.path.exists("/usr/sbin/mosquitto")):
        pytest.fail("mosquitto is not installed (apt-get install mosquitto)")
    site = tmp_path / "site"
    shutil.copytree(EXAMPLE, site)                     # no Zigbee device in it
    assert not any("zigbee2mqtt" in str(d.get("mqtt")) for d in YAML(typ="safe").load(
        (site / "devices.yaml").read_text())["devices"])
    env = tmp_path / "gateway.env"
    env.write_text("MQTT_PASSWORD=gw-secret-for-test\n")
    out = tmp_path / "accounts"
    creds = _accounts(site, env, out)
    limit = re.search(r"^message_size_limit (\d+)$",
                      (ROOT / "deploy/mosquitto/community-gateway.conf").read_text(), re.M)
    assert limit
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text("\n".join([
        f"user {pwd.getpwuid(os.getuid()).pw_name}", "per_listener_settings false",
        "allow_anonymous false", f"password_file {out / 'passwd'}", f"acl_file {out / 'acl'}",
        f"listener {port} 127.0.0.1", f"message_size_limit {limit[1]}", "persistence false",
        ""]))
    proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c",
                             str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield {"port": port, "creds": creds, "site": site, "env": env, "out": out}
    finally:
        stop_process(proc)


def _client(port: int, user: str, password: str) -> tuple[paho.Client, int]:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"{user}-test")
    c.username_pw_set(user, password)
    done = threading.Event()
    result: list[int] = []

    def on_connect(client, userdata, flags, reason, props):
        result.append(reason.value)
        done.set()

    c.on_connect = on_connect
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert done.wait(10)
    return c, result[0]


def test_the_zigbee2mqtt_account_exists_on_a_fresh_site_and_a_500_device_list_passes(broker):
    z = broker["creds"]["zigbee2mqtt"]
    assert z["username"] == "zigbee2mqtt" and z["topic"] == "zigbee2mqtt/#"
    assert len(z["password"]) >= 20                     # generated, no default
    assert "user zigbee2mqtt\ntopic readwrite zigbee2mqtt/#" in (broker["out"] / "acl").read_text()
    # the password stays on a re-run, and changes only when rotated
    again = _accounts(broker["site"], broker["env"], broker["out"])
    assert again["zigbee2mqtt"]["password"] == z["password"]
    rotated = _accounts(broker["site"], broker["env"], broker["out"], "--rotate", "zigbee2mqtt")
    assert rotated["zigbee2mqtt"]["password"] != z["password"]

    port = broker["port"]                  # (the broker still has the files it started with)
    got: list[bytes] = []
    arrived = threading.Event()
    gw, rc = _client(port, "gateway", "gw-secret-for-test")
    assert rc == 0

    def on_message(client, userdata, msg):
        got.append(msg.payload)
        arrived.set()

    gw.on_message = on_message
    gw.subscribe("zigbee2mqtt/bridge/devices", qos=1)
    bridge, rc = _client(port, "zigbee2mqtt", z["password"])
    assert rc == 0                                     # Zigbee2MQTT logs in
    payload = _network(500)
    assert len(payload) > 256 * 1024                   # the old limit would have dropped it
    try:
        bridge.publish("zigbee2mqtt/bridge/devices", payload, qos=1,
                       retain=True).wait_for_publish(10)
        assert arrived.wait(15), "the 500-device list did not pass the broker"
        assert got[0] == payload
        assert len(json.loads(got[0])) == 500
    finally:
        for c in (bridge, gw):
            c.disconnect()
            c.loop_stop()
