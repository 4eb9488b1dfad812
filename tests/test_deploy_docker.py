"""Container files. There is no Docker engine on the test machine, so the image is never built
here; what can be checked without one is: the compose file's services and mounts, the
Dockerfile's sources and command (parsed by the real CLI), and the container broker config
(run by the real Mosquitto with its paths moved into a temp dir)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from gateway.broker import free_port, wait_port
from gateway.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "deploy" / "docker"


def test_compose_has_gateway_mosquitto_influxdb_and_no_secrets():
    compose = YAML(typ="safe").load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"gateway", "mosquitto", "influxdb"}
    gw = services["gateway"]
    assert (DOCKER / gw["build"]["context"] / gw["build"]["dockerfile"]).resolve() == \
        (DOCKER / "Dockerfile").resolve()
    assert "./gateway.env" in gw["env_file"]
    mounts = {v.split(":")[1] for v in gw["volumes"]}
    assert {"/etc/community-gateway/site", "/var/lib/community-gateway"} <= mounts
    assert all(p.startswith("127.0.0.1:") for p in gw["ports"])     # console not on the LAN
    mq = services["mosquitto"]
    assert "./mosquitto.conf:/mosquitto/config/mosquitto.conf:ro" in mq["volumes"]
    assert mq["ports"] == ["8883:8883"]                                # TLS only
    influx = services["influxdb"]
    assert influx["environment"]["DOCKER_INFLUXDB_INIT_RETENTION"]
    text = "\n".join(ln for ln in (DOCKER / "compose.yaml").read_text().splitlines()
                     if not ln.lstrip().startswith("#"))
    assert not re.search(r"(PASSWORD|TOKEN|SECRET)\s*[:=]\s*\S", text), "secret in compose"


def test_dockerfile_copies_existing_paths_and_runs_a_valid_command():
    text = (DOCKER / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            for src in line.split()[1:-1]:
                assert (REPO / src).exists(), f"Dockerfile: COPY {src}: not in the repository"
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M).group(1)
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1)
    assert json.loads(entry) == ["gateway"]
    args = build_parser().parse_args(json.loads(cmd))
    assert args.cmd == "run" and args.host == "0.0.0.0" and args.port == 8080
    assert "USER gateway" in text and "HEALTHCHECK" in text and "/healthz" in text


@pytest.mark.integration
def test_container_broker_config_runs_and_refuses_anonymous(tmp_path):
    """mosquitto.conf for compose, with /mosquitto/... moved into tmp_path and the listeners
    onto free loopback ports, is accepted by the real Mosquitto and enforces accounts."""
    import paho.mqtt.client as paho

    from tests.support import wait_for

    conf_dir = tmp_path / "config"
    subprocess.run(["bash", str(REPO / "deploy/mosquitto/make-ca.sh"), "--dir",
                    str(conf_dir / "tls"), "--host", "localhost", "--ip", "127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    (conf_dir / "acl").write_text("user gateway\ntopic read #\n")
    (conf_dir / "passwd").write_text("gateway:pw-for-test\n")
    passwd_tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    subprocess.run([passwd_tool, "-U", str(conf_dir / "passwd")], check=True, timeout=60)
    plain, tls = free_port(), free_port()
    text = (DOCKER / "mosquitto.conf").read_text()
    text = (text.replace("/mosquitto/config/community-gateway", str(conf_dir))
            .replace("/mosquitto/data/", f"{tmp_path}/")
            .replace("listener 1883\n", f"listener {plain} 127.0.0.1\n")
            .replace("listener 8883\n", f"listener {tls} 127.0.0.1\n")
            .replace("log_dest stdout", "log_dest stderr"))
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(text + ("user root\n" if os.geteuid() == 0 else ""))
    proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c",
                             str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        try:
            wait_port(plain)
            wait_port(tls)
        except TimeoutError:
            proc.kill()
            raise AssertionError(proc.communicate(timeout=5)[1]) from None

        def connack(user, password, port, ca=None):
            c = paho.Client(paho.CallbackAPIVersion.VERSION2)
            if user:
                c.username_pw_set(user, password)
            if ca:
                c.tls_set(ca_certs=str(ca))
            got = {}
            c.on_connect = lambda _c, _u, _f, rc, _p: got.setdefault("rc", rc.value)
            c.connect("127.0.0.1", port)
            c.loop_start()
            try:
                return wait_for(lambda: got.get("rc", -1) + 1, timeout=10, what="CONNACK") - 1
            finally:
                c.disconnect()
                c.loop_stop()

        assert connack(None, None, plain) != 0
        assert connack("gateway", "pw-for-test", plain) == 0
        assert connack("gateway", "pw-for-test", tls, conf_dir / "tls" / "ca.crt") == 0
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
