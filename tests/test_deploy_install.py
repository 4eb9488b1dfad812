"""deploy/install.sh into a throwaway root: layout and permissions, the installed gateway
answering /healthz through the production broker config (accounts, ACLs, TLS), systemd units
that `systemd-analyze verify` accepts, idempotent re-runs, upgrade and rollback.

The releases are built from one wheel of this checkout, with the dependencies taken from the
test environment (``--deps-from``) so that no test downloads anything; a real install
downloads them (docs/deploy.md).
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest

from gateway.broker import free_port, wait_port
from tests.support import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "deploy" / "install.sh"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)
TEST_VENV = Path(sys.prefix)


def run_install(root: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    res = subprocess.run(["bash", str(INSTALL), "--root", str(root), "--no-apt",
                          "--no-systemd", "--python", BASE_PYTHON, "--deps-from",
                          str(TEST_VENV), *args], capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, f"install.sh failed:\n{res.stdout}\n{res.stderr}"
    return res


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines()
                if line and not line.startswith("#"))


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A snapshot of this checkout (others may edit the shared tree while tests run)."""
    src = tmp_path_factory.mktemp("checkout")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src)
    for d in ("gateway", "drivers", "rules", "edge_config", "simulators", "deploy", "docs"):
        shutil.copytree(REPO / d, src / d, ignore=shutil.ignore_patterns("__pycache__"))
    return src


@pytest.fixture(scope="module")
def wheel(tmp_path_factory, checkout) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                          str(out), str(checkout)], capture_output=True, text=True,
                         timeout=180)
    assert res.returncode == 0, res.stderr
    return next(out.glob("community_edge_gateway-*.whl"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory, wheel):
    root = tmp_path_factory.mktemp("root")
    ports = {"mqtt": free_port(), "tls": free_port()}
    res = run_install(root, "--wheel", str(wheel), "--release-id", "1.0.0",
                      "--mqtt-port", str(ports["mqtt"]), "--mqtt-tls-port", str(ports["tls"]),
                      "--mqtt-tls-bind", "127.0.0.1", "--tls-host", "localhost",
                      "--tls-ip", "127.0.0.1")
    return root, ports, res


@pytest.fixture
def broker(installed, tmp_path):
    """Mosquitto started as Debian does: a main config that includes conf.d."""
    root, ports, _ = installed
    main = tmp_path / "mosquitto.conf"
    main.write_text(f"persistence false\nlog_dest stderr\nlog_type error\n"
                    f"{'user root' if os.geteuid() == 0 else ''}\n"
                    f"include_dir {root}/etc/mosquitto/conf.d\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(main)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_port(ports["mqtt"])
        wait_port(ports["tls"])
    except TimeoutError:
        proc.kill()
        raise AssertionError(f"broker did not start: {proc.communicate(timeout=5)[1]}") from None
    yield ports
    proc.terminate()
    proc.communicate(timeout=10)


def _credentials(root: Path) -> dict[str, dict]:
    import csv

    with open(root / "etc/mosquitto/community-gateway/credentials.csv", newline="") as fh:
        return {row["device"]: row for row in csv.DictReader(fh)}


def _connect(port: int, user: str | None, password: str | None, ca: Path | None = None,
             client_id: str = "") -> tuple[paho.Client, int]:
    """Connect and return (client, CONNACK reason code as int; 0 = accepted)."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
    if user is not None:
        c.username_pw_set(user, password)
    if ca is not None:
        c.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
    result: dict = {}
    c.on_connect = lambda _c, _u, _f, rc, _p: result.setdefault("rc", rc)
    c.connect("127.0.0.1", port)
    c.loop_start()
    wait_for(lambda: "rc" in result, timeout=10, what=f"CONNACK for {user}")
    return c, result["rc"].value


def test_layout_permissions_and_no_secret_in_world_readable_files(installed):
    root, ports, _ = installed
    app = root / "opt/community-gateway"
    assert os.readlink(app / "current") == "releases/1.0.0"
    gw = app / "current/venv/bin/gateway"
    out = subprocess.run([str(gw), "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("gateway ")
    # the installed copy runs, not this checkout
    where = subprocess.run([str(app / "current/venv/bin/python"), "-c",
                            "import gateway; print(gateway.__file__)"],
                           capture_output=True, text=True, timeout=60, cwd=root).stdout
    assert os.path.realpath(where.strip()).startswith(str(app / "releases/1.0.0/venv")), where
    env = root / "etc/community-gateway/gateway.env"
    assert env.stat().st_mode & 0o777 == 0o640
    secret = read_env(env)["MQTT_PASSWORD"]
    assert len(secret) >= 24
    cred = root / "etc/mosquitto/community-gateway/credentials.csv"
    assert cred.stat().st_mode & 0o777 == 0o600
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and "venv" not in path.parts \
                and path.stat().st_mode & 0o004:
            text = path.read_text(errors="replace")
            assert secret not in text, f"{path} is world-readable and holds the secret"
            for row in _credentials(root).values():
                assert row["password"] not in text, path
    assert (root / "var/lib/community-gateway").stat().st_mode & 0o007 == 0
    assert (root / "var/backups/community-gateway").stat().st_mode & 0o077 == 0
    site = root / "etc/community-gateway/site/gateway.yaml"
    assert "password_env: MQTT_PASSWORD" in site.read_text()
    assert f"port: {ports['mqtt']}" in site.read_text()


def test_systemd_analyze_verify_accepts_the_units(installed):
    if not Path("/usr/bin/systemd-analyze").exists() and not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    root, _, _ = installed
    units = root / "etc/systemd/system"
    names = ["community-gateway.service", "community-gateway-backup.service",
             "community-gateway-backup.timer", "community-gateway-accounts.service",
             "community-gateway-accounts.path"]
    res = subprocess.run(["systemd-analyze", "verify", *[str(units / n) for n in names]],
                         capture_output=True, text=True, timeout=60)
    # verify exits 0 even for unknown keys; any line about our units is a failure
    ours = [ln for ln in (res.stdout + res.stderr).splitlines()
            if "community-gateway" in ln]
    assert res.returncode == 0 and not ours, res.stdout + res.stderr
    unit = (units / names[0]).read_text()
    for line in ("Type=notify", "WatchdogSec=30", "Restart=on-failure", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                 f"ReadWritePaths={root}/var/lib/community-gateway", "CapabilityBoundingSet=\n",
                 "StartLimitBurst=10", f"EnvironmentFile={root}/etc/community-gateway/gateway.env"):
        assert line in unit, line


def test_a_broken_unit_is_caught_by_the_same_check(tmp_path, installed):
    """The verify test above can fail: a unit with a typo is reported."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    root, _, _ = installed
    bad = tmp_path / "community-gateway.service"
    bad.write_text((root / "etc/systemd/system/community-gateway.service").read_text()
                   .replace("WatchdogSec=30", "WatchdogSek=30"))
    res = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True,
                         text=True, timeout=60)
    assert "WatchdogSek" in res.stdout + res.stderr


def test_installed_gateway_answers_healthz_through_the_production_broker(installed, broker,
                                                                         tmp_path):
    root, ports, _ = installed
    creds = _credentials(root)
    ca = root / "etc/mosquitto/community-gateway/tls/ca.crt"
    env = read_env(root / "etc/community-gateway/gateway.env")
    api_port = free_port()
    env.update(GATEWAY_PORT=str(api_port))
    data = root / "var/lib/community-gateway"
    log = tmp_path / "gateway.log"
    # what the unit's ExecStart runs, with the unit's environment file
    cmd = [str(root / "opt/community-gateway/current/venv/bin/gateway"), "run", "--config",
           str(root / "etc/community-gateway/site"), "--data", str(data),
           "--host", env["GATEWAY_HOST"], "--port", env["GATEWAY_PORT"]]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env={"PATH": os.environ["PATH"], **env}, stdout=fh,
                                stderr=fh, cwd=data)   # the unit's WorkingDirectory
    url = f"http://127.0.0.1:{api_port}"
    try:
        def ready():
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=40, interval=0.1, what="installed gateway /readyz")
        health = httpx.get(f"{url}/healthz", timeout=5).json()
        assert health["status"] == "ok"
        assert health["components"]["mqtt"]["state"] == "online"   # logged in as "gateway"
        assert "First start: no admin exists" in log.read_text()    # one-time setup token

        # a device over TLS with its own account raises an alarm at the gateway
        dev = creds["caller-7-101"]
        c, rc = _connect(ports["tls"], dev["username"], dev["password"], ca)
        assert rc == 0
        c.publish(dev["topic"], '{"event": "sos"}', qos=1).wait_for_publish(10)
        c.disconnect()
        c.loop_stop()
        token = subprocess.run(
            [str(root / "opt/community-gateway/current/venv/bin/gateway"), "token", "create",
             "--role", "duty", "--name", "t", "--data", str(data)],
            capture_output=True, text=True, timeout=60).stdout.strip()
        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                           timeout=5)
        alarms = wait_for(lambda: api.get("/api/alarms", params={"state": "open"})
                          .json()["alarms"], timeout=10, what="SOS alarm")
        assert [a["device_id"] for a in alarms] == ["caller-7-101"]
    finally:
        proc.terminate()
        assert proc.wait(15) == 0, log.read_text()


def test_broker_refuses_anonymous_wrong_password_and_foreign_topics(installed, broker):
    root, ports, _ = installed
    creds = _credentials(root)
    ca = root / "etc/mosquitto/community-gateway/tls/ca.crt"
    assert _connect(ports["mqtt"], None, None)[1] != 0                      # anonymous
    assert _connect(ports["tls"], None, None, ca)[1] != 0
    assert _connect(ports["tls"], "caller-7-101", "wrong", ca)[1] != 0
    # TLS: a client that does not trust the site CA cannot connect
    with pytest.raises(ssl.SSLError):
        _connect(ports["tls"], "caller-7-101", creds["caller-7-101"]["password"],
                 Path(certifi_where()))

    # the gateway's account reads everything; each device writes only its own topic
    gw_password = read_env(root / "etc/community-gateway/gateway.env")["MQTT_PASSWORD"]
    got: list[tuple[str, bytes]] = []
    sub, rc = _connect(ports["mqtt"], "gateway", gw_password)
    assert rc == 0
    sub.on_message = lambda _c, _u, m: got.append((m.topic, m.payload))
    subscribed = []
    sub.on_subscribe = lambda *a: subscribed.append(1)
    sub.subscribe("devices/#", qos=1)
    wait_for(lambda: subscribed, timeout=5, what="SUBACK")
    dev = creds["caller-7-302"]
    c, rc = _connect(ports["tls"], dev["username"], dev["password"], ca)
    assert rc == 0
    c.publish("devices/caller-7-101", b"forged", qos=1).wait_for_publish(10)  # not its own
    c.publish(dev["topic"], b"mine", qos=1).wait_for_publish(10)
    wait_for(lambda: got, timeout=5, what="the device's own message")
    c.disconnect()
    c.loop_stop()
    # mosquitto delivers in order per client: "forged" would have arrived before "mine"
    assert got == [("devices/caller-7-302", b"mine")]
    sub.disconnect()
    sub.loop_stop()


def certifi_where() -> str:
    """A CA bundle that does not contain the site CA (the system's)."""
    return ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"


def test_rerun_is_idempotent_then_upgrade_keeps_previous_and_rollback_returns(installed,
                                                                              wheel):
    root, ports, _ = installed
    app = root / "opt/community-gateway"
    env = root / "etc/community-gateway/gateway.env"
    before_env, before_creds = env.read_text(), _credentials(root)
    ca = (root / "etc/mosquitto/community-gateway/tls/ca.crt").read_bytes()
    common = ["--wheel", str(wheel), "--mqtt-port", str(ports["mqtt"]), "--mqtt-tls-port",
              str(ports["tls"]), "--mqtt-tls-bind", "127.0.0.1"]
    res = run_install(root, *common, "--release-id", "1.0.0")
    assert "release 1.0.0 is already installed" in res.stderr
    assert os.readlink(app / "current") == "releases/1.0.0"
    assert env.read_text() == before_env and _credentials(root) == before_creds
    assert (root / "etc/mosquitto/community-gateway/tls/ca.crt").read_bytes() == ca

    # a store exists now (the healthz test ran): the upgrade backs it up first
    data = root / "var/lib/community-gateway"
    if not (data / "gateway.db").exists():
        subprocess.run([str(app / "current/venv/bin/gateway"), "token", "create", "--role",
                        "duty", "--name", "x", "--data", str(data)], check=True,
                       capture_output=True, timeout=60)
    res = run_install(root, *common, "--release-id", "1.1.0")
    assert os.readlink(app / "current") == "releases/1.1.0"
    assert os.readlink(app / "previous") == "releases/1.0.0"
    assert (app / "releases/1.0.0/.complete").exists()
    backups = list((root / "var/backups/community-gateway").glob("gateway-backup-*.tar.gz"))
    assert len(backups) == 1, res.stderr

    res = subprocess.run(["bash", str(INSTALL), "--root", str(root), "--no-systemd",
                          "--rollback"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert os.readlink(app / "current") == "releases/1.0.0"
    assert os.readlink(app / "previous") == "releases/1.1.0"
    assert str(backups[0]) in res.stderr           # told where the pre-upgrade backup is
    out = subprocess.run([str(root / "usr/local/bin/gateway"), "--version"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert Path(os.path.realpath(root / "usr/local/bin/gateway")).is_relative_to(
        app / "releases/1.0.0")


def test_invalid_site_is_refused_and_nothing_changes(installed, tmp_path, wheel):
    root, ports, _ = installed
    bad = tmp_path / "bad-site"
    shutil.copytree(root / "etc/community-gateway/site", bad)
    (bad / "devices.yaml").write_text((bad / "devices.yaml").read_text()
                                      .replace("type: smoke_detector", "type: toaster", 1))
    before = (root / "etc/community-gateway/site/devices.yaml").read_text()
    res = subprocess.run(["bash", str(INSTALL), "--root", str(root), "--no-apt",
                          "--no-systemd", "--python", BASE_PYTHON, "--deps-from",
                          str(TEST_VENV), "--wheel", str(wheel), "--release-id",
                          os.readlink(root / "opt/community-gateway/current").split("/")[-1],
                          "--site", str(bad)], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert "devices.yaml:" in res.stderr and "toaster" in res.stderr
    assert (root / "etc/community-gateway/site/devices.yaml").read_text() == before


def test_accounts_unit_gives_a_new_device_an_account_and_keeps_the_others(installed):
    """What community-gateway-accounts.service runs when devices.yaml changes."""
    root, _, _ = installed
    unit = (root / "etc/systemd/system/community-gateway-accounts.service").read_text()
    cmd = next(ln.split("=", 1)[1] for ln in unit.splitlines() if ln.startswith("ExecStart="))
    site = root / "etc/community-gateway/site"
    devices = site / "devices.yaml"
    original = devices.read_text()
    before = _credentials(root)
    try:
        devices.write_text(original + "  - id: caller-9-202\n    type: emergency_caller\n"
                           "    household: h-9-201\n    mqtt: {topic: devices/caller-9-202}\n")
        res = subprocess.run(cmd.split(), capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        after = _credentials(root)
        assert after["caller-9-202"]["topic"] == "devices/caller-9-202"
        assert {k: after[k] for k in before} == before         # nobody else re-keyed
        acl = (root / "etc/mosquitto/community-gateway/acl").read_text()
        assert "user caller-9-202\ntopic write devices/caller-9-202\n" in acl
    finally:
        devices.write_text(original)
        subprocess.run(cmd.split(), capture_output=True, text=True, timeout=60, check=True)
    assert "caller-9-202" not in _credentials(root)            # removed device: no account


def test_install_from_a_checkout_names_releases_by_content(checkout, tmp_path):
    """The default path: no --wheel, no --release-id. The same code is the same release (a
    re-run builds nothing); a changed file is a new release; the checkout stays clean."""
    root = tmp_path / "root"
    before = sorted(p.name for p in checkout.iterdir())

    def install() -> subprocess.CompletedProcess:
        res = subprocess.run(["bash", str(checkout / "deploy/install.sh"), "--root", str(root),
                              "--no-apt", "--no-systemd", "--no-broker", "--python",
                              BASE_PYTHON, "--deps-from", str(TEST_VENV)],
                             capture_output=True, text=True, timeout=180)
        assert res.returncode == 0, res.stderr
        return res

    install()
    first = os.readlink(root / "opt/community-gateway/current")
    assert first.startswith("releases/0.") or first.startswith("releases/1.")
    assert "is already installed" in install().stderr
    assert os.readlink(root / "opt/community-gateway/current") == first
    with open(checkout / "gateway/__init__.py", "a") as fh:
        fh.write("# a local patch\n")
    try:
        install()
    finally:
        text = (checkout / "gateway/__init__.py").read_text()
        (checkout / "gateway/__init__.py").write_text(text.replace("# a local patch\n", ""))
    assert os.readlink(root / "opt/community-gateway/current") != first
    assert os.readlink(root / "opt/community-gateway/previous") == first
    assert sorted(p.name for p in checkout.iterdir()) == before   # no build/ or egg-info
