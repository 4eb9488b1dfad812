"""docs/deploy.md on a real systemd (issue 19): a Debian 12 root booted with systemd-nspawn.

An operator's install, as the docs say it, in a booted bookworm system with systemd as PID 1:
``deploy/install.sh`` from a copy of this checkout (no ``--root``, no ``--no-systemd``; apt and
PyPI as a real box uses them), then the service, the broker with its accounts and TLS, the
first-admin token, the grid case system (the simulator, on the host's loopback), the watchdog
(SIGSTOP), ``Restart=on-failure`` (kill -9), ``systemd-analyze security``, a power-off and boot,
an upgrade to a newer build and a rollback. Figures are written to
``/var/cache/community-gateway-nspawn/last-figures.json`` and printed at the end.

Run (root; 3.5-6.5 minutes with a warm cache, plus 1.5-2 for the first debootstrap)::

    .venv/bin/pytest -m nspawn tests/test_deploy_nspawn.py

Deselected by the default test command (``deploy/quickstart.sh test``: too slow for CI).
The container shares the host's network (nspawn's default): the broker's and the console's
default ports (1883, 8883, 8080) must be free on the host, and apt and PyPI are reached as a
real box reaches them. The built root is cached (keyed by a hash of its recipe) under
/var/cache/community-gateway-nspawn, never in the repository; each run boots an overlay of it,
so the cache stays clean. Every wait is bounded; the container is stopped, the overlay
unmounted and both checked gone from the host at the end.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support import CaseSystemProcess
from tests.test_deploy_install import _connect, _credentials, read_env

pytestmark = [pytest.mark.nspawn, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("GATEWAY_NSPAWN_CACHE", "/var/cache/community-gateway-nspawn"))
SUITE = "bookworm"
# what a freshly installed Debian 12 / Raspberry Pi OS Lite has that minbase lacks; the
# gateway's own packages (mosquitto, python3-venv, openssl, sqlite3) are left to install.sh
INCLUDE = ["systemd", "systemd-sysv", "dbus", "ca-certificates", "curl", "procps",
           "iproute2"]
RECIPE = 1        # bump when the build steps below change
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PORTS = {"mqtt": 1883, "tls": 8883, "api": 8080}     # the documented defaults
API = f"http://127.0.0.1:{PORTS['api']}"
SVC = "community-gateway.service"
FIGURES: dict[str, object] = {}


# ---------------------------------------------------------------------------- host tooling
def _host_can_nspawn() -> str | None:
    """Why this host cannot run systemd-nspawn at all, or None."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, mount, systemd-nspawn)"
    probe = subprocess.run(["unshare", "--mount", "--pid", "--uts", "--ipc", "--fork", "true"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"cannot create namespaces here: {probe.stderr.strip()}"
    return None


def _ensure_tools() -> None:
    """debootstrap and systemd-container from Debian (idempotent)."""
    if shutil.which("debootstrap") and shutil.which("systemd-nspawn"):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600, env=env,
                   capture_output=True)
    res = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                          "debootstrap", "systemd-container"], timeout=600, env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def _host_mirror() -> str | None:
    """The host's Debian mirror for SUITE (its apt sources), else debootstrap's default."""
    texts = [p.read_text() for p in [Path("/etc/apt/sources.list"),
                                     *Path("/etc/apt/sources.list.d").glob("*")]
             if p.is_file() and p.suffix in (".list", ".sources")]
    for text in texts:
        m = re.search(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", text, re.M)
        if m:
            return m.group(1)
        for stanza in text.split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.*)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split() and "security" \
                    not in uris.group(1):
                return uris.group(1)
    return None


def _extra_cas() -> list[Path]:
    """The host's own CA certificates (e.g. a TLS-inspecting proxy between it and PyPI):
    the box must trust the same network path to install its dependencies."""
    return sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))


def _recipe() -> tuple[str, dict]:
    recipe = {"suite": SUITE, "variant": "minbase", "include": INCLUDE, "recipe": RECIPE,
              "mirror": _host_mirror(),
              "cas": [hashlib.sha256(p.read_bytes()).hexdigest() for p in _extra_cas()]}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12], recipe


@contextlib.contextmanager
def _cache_lock(timeout: float = 1200):
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, f"{CACHE}/.lock held for {timeout} s"
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached_root() -> Path:
    """The bookworm root for this recipe: built once with debootstrap, then reused."""
    key, recipe = _recipe()
    home = CACHE / key
    with _cache_lock():
        if (home / "root" / ".complete").exists():
            FIGURES["root_cached"] = True
            return home / "root"
        for old in CACHE.iterdir():        # one root at a time: another recipe's is stale
            if old.is_dir() and re.fullmatch(r"[0-9a-f]{12}", old.name):
                shutil.rmtree(old)
        tmp = home / "root.tmp"
        home.mkdir(parents=True)
        t0 = time.monotonic()
        cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}", SUITE,
               str(tmp)] + ([recipe["mirror"]] if recipe["mirror"] else [])
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
        assert res.returncode == 0, f"debootstrap failed:\n{res.stdout[-3000:]}{res.stderr}"
        for ca in _extra_cas():
            shutil.copy(ca, tmp / "usr/local/share/ca-certificates" / ca.name)
        subprocess.run(["chroot", str(tmp), "update-ca-certificates"], check=True,
                       capture_output=True, timeout=120)
        (tmp / "etc/machine-id").write_text("")      # a new id at first boot, as on a Pi
        (tmp / ".complete").write_text(json.dumps(recipe) + "\n")
        tmp.rename(home / "root")
        FIGURES["root_cached"] = False
        FIGURES["debootstrap_s"] = round(time.monotonic() - t0, 1)
        return home / "root"


# ---------------------------------------------------------------------------- the container
class Container:
    """One booted bookworm: an overlay of the cached root, systemd-nspawn -b, nsenter."""

    def __init__(self, lower: Path, work: Path) -> None:
        self.lower, self.work = lower, work
        self.name = f"cgw-nspawn-{os.getpid()}"
        self.upper, self.ovwork, self.dir = work / "upper", work / "ovwork", work / "merged"
        self.console = work / "console.log"
        self.proc: subprocess.Popen | None = None
        self.init_pid = 0
        self.mounted = False
        self.install_log = ""
        self.pid_namespaces: set[str] = set()     # every boot's, to look for survivors
        self.problems: list[str] = []              # what cleanup had to force
        self.sim: CaseSystemProcess | None = None
        self.snapshot = Path()

    def mount(self) -> None:
        for d in (self.upper, self.ovwork, self.dir):
            d.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={self.lower},upperdir={self.upper},workdir={self.ovwork}",
                        str(self.dir)], check=True, capture_output=True, timeout=30)
        self.mounted = True

    def boot(self) -> float:
        """Boot; return the seconds until `systemctl is-system-running` says running."""
        assert self.proc is None
        binds = []
        # apt's downloaded packages and pip's cache survive between runs (as on a box
        # that installs, upgrades and reinstalls); everything else is the overlay's
        for host, inside in ((CACHE / "apt-archives", "/var/cache/apt/archives"),
                             (CACHE / "pip-cache", "/root/.cache/pip")):
            (host / "partial" if "apt" in host.name else host).mkdir(parents=True,
                                                                     exist_ok=True)
            binds.append(f"--bind={host}:{inside}")
        t0 = time.monotonic()
        with open(self.console, "ab") as log:
            self.proc = subprocess.Popen(
                ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "--boot",
                 f"--machine={self.name}", f"--directory={self.dir}", *binds],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + 30
        while not self.init_pid:
            assert self.proc.poll() is None, f"nspawn exited: {self.console_tail()}"
            assert time.monotonic() < deadline, "no init process after 30 s"
            # nspawn's first child sets the namespaces up, then execs systemd: wait for that
            for kid in subprocess.run(["pgrep", "-P", str(self.proc.pid)],
                                      capture_output=True, text=True,
                                      timeout=10).stdout.split():
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{kid}/comm").read_text().strip() == "systemd":
                        self.init_pid = int(kid)
            time.sleep(0.1)
        self.pid_namespaces.add(os.readlink(f"/proc/{self.init_pid}/ns/pid"))
        deadline = time.monotonic() + 120
        while True:     # the system bus is up only some way into boot: retry until it is
            res = self.sh("timeout 60 systemctl is-system-running --wait", check=False,
                          timeout=70)
            state = res.stdout.strip()
            if state in ("running", "degraded") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        failed = self.sh("systemctl --failed --no-legend --plain", check=False).stdout
        assert state == "running", (f"system {state!r} ({res.stderr.strip()}); failed units:\n"
                                    f"{failed}\nconsole:\n{self.console_tail()}")
        return time.monotonic() - t0

    def sh(self, script: str, timeout: float = 60, check: bool = True,
           input: str | None = None) -> subprocess.CompletedProcess:
        """A root shell inside, with a clean environment (nothing of the host's)."""
        assert self.init_pid
        res = subprocess.run(["nsenter", "-t", str(self.init_pid), "-a", "env", "-i",
                              f"PATH={PATH}", "HOME=/root", "LANG=C.UTF-8", "TERM=dumb",
                              "bash", "-c", script], capture_output=True, text=True,
                             timeout=timeout, input=input)
        if check:
            assert res.returncode == 0, \
                f"inside the container: {script}\n-> {res.returncode}\n{res.stdout}{res.stderr}"
        return res

    def console_tail(self, n: int = 4000) -> str:
        return self.console.read_text(errors="replace")[-n:] if self.console.exists() else ""

    def poweroff(self, timeout: float = 60) -> float:
        """`systemctl poweroff` inside; returns the seconds until nspawn exited."""
        assert self.proc is not None
        t0 = time.monotonic()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.sh("systemctl poweroff", check=False, timeout=20)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"poweroff took over {timeout} s") from None
        took = time.monotonic() - t0
        self.proc, self.init_pid = None, 0
        return took

    def kill(self) -> None:
        """Last resort: SIGKILL to the container's init ends its whole PID namespace. Its
        init is looked up again (nspawn's child), never only remembered: a SIGKILL to nspawn
        alone would leave the container running, orphaned."""
        if self.proc is None:
            return
        self.problems.append("the container had to be killed")
        kids = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                              text=True, timeout=10).stdout.split()
        for pid in {*map(int, kids), self.init_pid} - {0}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc, self.init_pid = None, 0

    def cleanup(self) -> None:
        try:
            if self.proc is not None:
                try:
                    self.poweroff(timeout=30)
                except AssertionError:
                    pass                      # kill() already ran
        finally:
            self.kill()
            if self.mounted:
                res = subprocess.run(["umount", str(self.dir)], capture_output=True,
                                     timeout=30)
                if res.returncode != 0:       # something still holds it: detach it, and say so
                    self.problems.append(f"umount {self.dir}: {res.stderr.decode().strip()}")
                    subprocess.run(["umount", "-l", str(self.dir)], timeout=30)
                self.mounted = False
            if self.console.exists():       # kept for a post-mortem
                shutil.copy(self.console, CACHE / "last-console.log")
            shutil.rmtree(self.work, ignore_errors=True)
            with contextlib.suppress(OSError):
                shutil.rmtree(f"/run/systemd/nspawn/propagate/{self.name}")

    def journal(self, n: int = 40) -> str:
        return self.sh(f"systemctl status --no-pager {SVC}; journalctl -u {SVC} --no-pager "
                       f"-o short-precise -n {n}", check=False, timeout=30).stdout

    # -- the service
    def show(self, *props: str) -> dict[str, str]:
        return self.show_unit(SVC, *props)

    def show_unit(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _ready(timeout: float = 5) -> bool:
    try:
        return httpx.get(f"{API}/readyz", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(cond, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(interval)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _snapshot(dest: Path) -> Path:
    """A copy of this checkout, taken once: others may edit the shared tree during the run,
    and the install and the upgrade must differ by the version only."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, dest)
    for d in ("gateway", "drivers", "rules", "edge_config", "simulators", "deploy", "docs"):
        shutil.copytree(REPO / d, dest / d, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _checkout(snapshot: Path, dest: Path, version: str | None = None) -> Path:
    """What `git clone` gives the operator; with ``version``, what a later `git pull`
    gives: a newer build (the version bumped, as a release would)."""
    shutil.copytree(snapshot, dest)
    if version:
        for rel, pattern in (("pyproject.toml", r'^version = "[^"]+"'),
                             ("gateway/__init__.py", r'^__version__ = "[^"]+"')):
            text = (dest / rel).read_text()
            new, n = re.subn(pattern, pattern.split(" = ")[0].lstrip("^")
                             + f' = "{version}"', text, count=1, flags=re.M)
            assert n == 1, rel
            (dest / rel).write_text(new)
    return dest


def _host_leftovers(c: Container) -> list[str]:
    found = [ln for ln in subprocess.run(["findmnt", "-rn", "-o", "TARGET"],
                                         capture_output=True, text=True,
                                         timeout=30).stdout.splitlines()
             if ln.startswith(str(c.work))]
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True,
                        timeout=30).stdout.splitlines()
    found += [ln for ln in ps if c.name in ln or str(c.work) in ln]
    for proc in Path("/proc").iterdir():        # anything still in one of its PID namespaces
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and os.readlink(proc / "ns/pid") in c.pid_namespaces:
                state = (proc / "stat").read_text().split(") ")[-1][:1]
                if state != "Z":                 # a zombie holds nothing; its parent reaps it
                    found.append(f"pid {proc.name}: {(proc / 'cmdline').read_bytes()!r}")
    return found + c.problems


def _report(config) -> None:
    (CACHE / "last-figures.json").write_text(json.dumps(FIGURES, indent=2) + "\n")
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(f"\nnspawn deployment figures ({CACHE / 'last-figures.json'}):")
        for k, v in FIGURES.items():
            tr.write_line(f"  {k}: {v}")


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def box(request, tmp_path_factory):
    """A booted bookworm with the gateway installed as docs/deploy.md says."""
    if "nspawn" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("boots a Debian container for minutes: run with -m nspawn")
    why = _host_can_nspawn()
    if why:
        pytest.skip(f"this host cannot run systemd-nspawn: {why}")
    busy = [f"{k}={p}" for k, p in PORTS.items() if not _port_free(p)]
    if busy:
        pytest.skip(f"the container shares the host's network and these ports are in use "
                    f"on the host: {', '.join(busy)}")
    _ensure_tools()
    t0 = time.monotonic()
    lower = cached_root()
    FIGURES["root_ready_s"] = round(time.monotonic() - t0, 1)
    work = Path(f"/var/tmp/community-gateway-nspawn-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    c = Container(lower, work)
    sim = CaseSystemProcess("nspawn-case-secret", tmp_path_factory.mktemp("cases"),
                            dispatch_after=3600, on_site_after=3600, close_after=3600)
    try:
        c.mount()
        FIGURES["first_boot_s"] = round(c.boot(), 1)
        # the operator's checkout (docs/deploy.md, 2. Install: git clone ... && cd)
        c.snapshot = _snapshot(tmp_path_factory.mktemp("checkout") / "src")
        _checkout(c.snapshot, c.dir / "root/community-gateway")
        t1 = time.monotonic()
        # the one option: the devices' TLS listener on loopback only, since this
        # container shares the host's network (docs: --mqtt-tls-bind)
        res = c.sh("cd /root/community-gateway && deploy/install.sh --mqtt-tls-bind 127.0.0.1",
                   timeout=1200, check=False)
        assert res.returncode == 0, f"install.sh failed:\n{res.stdout}\n{res.stderr[-6000:]}"
        FIGURES["install_s"] = round(time.monotonic() - t1, 1)
        c.install_log = res.stderr
        c.sim = sim.start()
        yield c
    finally:
        sim.stop()
        c.cleanup()
        left = _host_leftovers(c)
        FIGURES["host_leftovers"] = left
        _report(request.config)
    assert not left, f"left on the host: {left}"


@pytest.fixture(scope="module")
def duty(box) -> httpx.Client:
    token = box.sh("runuser -u gateway -- gateway token create --role duty --name nspawn "
                   "--data /var/lib/community-gateway").stdout.strip()
    with httpx.Client(base_url=API, headers={"Authorization": f"Bearer {token}"},
                      timeout=10) as client:
        yield client


# ---------------------------------------------------------------------------- the checks
def test_service_active_and_ready(box):
    assert box.sh(f"systemctl is-active {SVC}").stdout.strip() == "active"
    _wait(_ready, 60, "/readyz 200")
    for unit in ("mosquitto.service", "community-gateway-accounts.path",
                 "community-gateway-backup.timer"):
        assert box.sh(f"systemctl is-active {unit}", check=False).stdout.strip() == "active", \
            unit
    assert box.sh("systemctl --failed --no-legend --plain").stdout.strip() == ""
    # systemd said nothing about our unit files while loading them (unknown keys, bad values)
    complaints = [ln for ln in box.sh("journalctl -b --no-pager -o cat").stdout.splitlines()
                  if ln.startswith(("/etc/systemd/system/community-gateway",
                                    "/etc/systemd/journald.conf.d/community-gateway"))]
    assert not complaints, complaints
    health = httpx.get(f"{API}/healthz", timeout=5).json()
    assert health["components"]["mqtt"]["state"] == "online", health
    # the installed copy runs, not the checkout, as the service user
    cmd = box.sh(f"ps -o user=,args= -p $(systemctl show -p MainPID --value {SVC})").stdout
    assert cmd.split()[0] == "gateway" and "/opt/community-gateway/current/venv" in cmd, cmd


def test_first_admin_token_file_is_0600_and_makes_the_admin(box):
    path = "/var/lib/community-gateway/first-admin-setup-token"
    mode = box.sh(f"stat -c '%a %U' {path}").stdout.split()
    assert mode == ["600", "gateway"]
    journal = box.sh(f"journalctl -u {SVC} --no-pager -o cat").stdout
    token = box.sh(f"cat {path}").stdout.strip()
    assert token and token not in journal and path in journal
    res = httpx.post(f"{API}/api/setup", json={"setup_token": token, "username": "admin",
                                               "password": "a long nspawn password 1"},
                     timeout=10)
    assert res.status_code == 200, res.text
    assert box.sh(f"test -e {path}", check=False).returncode != 0   # deleted once used


def test_case_system_connected(box):
    """docs/deploy.md, 5: uplinks.yaml and the secret in gateway.env, then a restart."""
    box.sh("cat > /etc/community-gateway/site/uplinks.yaml", input=(
        f"case_system:\n  url: {box.sim.url}\n  key_id: tianlin-07\n"
        f"  secret_env: CASE_SYSTEM_SECRET\n  callback_url: {API}/api/case-callback\n"))
    box.sh("sed -i 's/^#CASE_SYSTEM_SECRET=.*/CASE_SYSTEM_SECRET=nspawn-case-secret/' "
           "/etc/community-gateway/gateway.env && grep -q ^CASE_SYSTEM_SECRET= "
           "/etc/community-gateway/gateway.env")
    box.sh(f"systemctl restart {SVC}", timeout=150)
    _wait(_ready, 60, "/readyz after the restart")

    def case_online():
        comp = httpx.get(f"{API}/healthz", timeout=5).json()["components"]
        return comp.get("case_system", {}).get("state") not in (None, "offline")

    _wait(case_online, 30, "the case system in /healthz")


def test_sos_over_tls_reaches_board_and_case_system(box, duty):
    creds = _credentials(box.dir)
    ca = box.dir / "etc/mosquitto/community-gateway/tls/ca.crt"
    dev = creds["caller-7-101"]
    c, rc = _connect(PORTS["tls"], dev["username"], dev["password"], ca)
    assert rc == 0
    c.publish(dev["topic"], '{"event": "sos"}', qos=1).wait_for_publish(10)
    c.disconnect()
    c.loop_stop()
    alarms = _wait(lambda: duty.get("/api/alarms", params={"state": "open"}).json()["alarms"],
                   20, "the SOS on the board")
    assert [a["device_id"] for a in alarms] == ["caller-7-101"]
    try:
        _wait(lambda: box.sim.cases()["count"] >= 1, 30, "the case in the case system")
    except AssertionError as exc:
        journal = box.sh(f"journalctl -u {SVC} --no-pager -o cat -n 30").stdout
        raise AssertionError(f"{exc}\n{journal}") from None
    case_id = box.sim.cases()["cases"][0]["case_id"]
    # the case system's answer came back to the alarm on the board
    _wait(lambda: case_id in json.dumps(duty.get(f"/api/alarms/{alarms[0]['id']}").json()), 20,
          f"case {case_id} on the alarm")
    duty.post(f"/api/alarms/{alarms[0]['id']}/ack", json={"note": "on my way"}
              ).raise_for_status()


def test_anonymous_and_foreign_publishes_refused(box):
    creds = _credentials(box.dir)
    ca = box.dir / "etc/mosquitto/community-gateway/tls/ca.crt"
    assert _connect(PORTS["mqtt"], None, None)[1] != 0
    assert _connect(PORTS["tls"], None, None, ca)[1] != 0
    gw_password = read_env(box.dir / "etc/community-gateway/gateway.env")["MQTT_PASSWORD"]
    got: list[tuple[str, bytes]] = []
    sub, rc = _connect(PORTS["mqtt"], "gateway", gw_password, client_id="nspawn-observer")
    assert rc == 0
    sub.on_message = lambda _c, _u, m: got.append((m.topic, m.payload))
    subscribed: list[int] = []
    sub.on_subscribe = lambda *a: subscribed.append(1)
    sub.subscribe("devices/#", qos=1)
    _wait(lambda: subscribed, 5, "SUBACK")
    dev = creds["caller-7-302"]
    c, rc = _connect(PORTS["tls"], dev["username"], dev["password"], ca)
    assert rc == 0
    c.publish("devices/caller-7-101", b"forged", qos=1).wait_for_publish(10)
    c.publish(dev["topic"], b"{}", qos=1).wait_for_publish(10)
    _wait(lambda: got, 5, "the device's own message")
    c.disconnect()
    c.loop_stop()
    sub.disconnect()
    sub.loop_stop()
    assert got == [("devices/caller-7-302", b"{}")]


def test_new_device_gets_an_account_and_the_nightly_backup_runs(box):
    """The two helper units under their own hardening: community-gateway-accounts.path when
    devices.yaml changes (docs, 4), community-gateway-backup.service (what the timer starts)."""
    box.sh("cat >> /etc/community-gateway/site/devices.yaml", input=(
        "  - id: caller-9-202\n    type: emergency_caller\n    household: h-9-201\n"
        "    mqtt: {topic: devices/caller-9-202}\n"))
    _wait(lambda: "caller-9-202" in _credentials(box.dir), 30,
          "an account for the new device (community-gateway-accounts.path)")
    result = box.show_unit("community-gateway-accounts.service", "Result")["Result"]
    assert result == "success", box.sh("journalctl -u community-gateway-accounts --no-pager "
                                       "-n 30", check=False).stdout
    dev = _credentials(box.dir)["caller-9-202"]
    ca = box.dir / "etc/mosquitto/community-gateway/tls/ca.crt"
    # the broker re-read its files (ExecStartPost): the new account logs in
    c, rc = _wait(lambda: (r := _connect(PORTS["tls"], dev["username"], dev["password"], ca))[1]
                  == 0 and r, 20, "the new device's login")
    c.disconnect()
    c.loop_stop()

    before = box.sh("ls /var/backups/community-gateway").stdout.split()
    res = box.sh("systemctl start community-gateway-backup.service", check=False, timeout=120)
    assert res.returncode == 0, box.sh("journalctl -u community-gateway-backup --no-pager "
                                       "-n 30", check=False).stdout
    after = box.sh("ls -l /var/backups/community-gateway").stdout
    new = [ln for ln in after.splitlines() if ln.split()[-1] not in before and ".tar.gz" in ln]
    assert len(new) == 1 and new[0].startswith("-rw------- 1 gateway gateway"), after


def test_kill_9_is_restarted_by_restart_on_failure(box):
    before = box.show("MainPID", "NRestarts")
    t0 = time.monotonic()
    box.sh(f"kill -9 {before['MainPID']}")

    def back():
        now = box.show("MainPID", "NRestarts", "ActiveState")
        return (now["ActiveState"] == "active" and now["MainPID"] not in ("0", before["MainPID"])
                and _ready(1) and now)

    now = _wait(back, 90, "the gateway back after kill -9", interval=0.25)
    FIGURES["kill9_to_ready_s"] = round(time.monotonic() - t0, 1)
    assert int(now["NRestarts"]) == int(before["NRestarts"]) + 1
    journal = box.sh(f"journalctl -u {SVC} --no-pager -o cat -n 40").stdout
    assert "status=9/KILL" in journal, journal


def test_sigstop_is_restarted_by_the_watchdog(box):
    unit = box.sh(f"systemctl cat {SVC}").stdout
    watchdog_s = int(re.search(r"^WatchdogSec=(\d+)", unit, re.M).group(1))
    before = box.show("MainPID", "NRestarts")
    t0 = time.monotonic()
    box.sh(f"kill -STOP {before['MainPID']}")
    first_change = None

    def back():
        nonlocal first_change
        now = box.show("MainPID", "NRestarts", "ActiveState", "SubState")
        if first_change is None and (now["SubState"] != "running"
                                     or now["MainPID"] != before["MainPID"]):
            first_change = time.monotonic() - t0
        return (now["ActiveState"] == "active" and now["MainPID"] not in ("0", before["MainPID"])
                and _ready(1) and now)

    now = _wait(back, watchdog_s + 120, "the gateway back after SIGSTOP", interval=0.5)
    FIGURES["sigstop_to_watchdog_kill_s"] = round(first_change or 0, 1)
    FIGURES["sigstop_to_ready_s"] = round(time.monotonic() - t0, 1)
    FIGURES["watchdog_sec"] = watchdog_s
    journal = box.sh(f"journalctl -u {SVC} --no-pager -o cat -n 60").stdout
    assert "Watchdog timeout" in journal, journal
    assert int(now["NRestarts"]) == int(before["NRestarts"]) + 1
    # systemd notices within WatchdogSec of the last ping (pings every WatchdogSec/2)
    assert first_change is not None and first_change <= watchdog_s + 3, FIGURES


def test_systemd_analyze_security_exposure(box):
    out = box.sh(f"systemd-analyze security --no-pager {SVC}", check=False).stdout
    m = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", out)
    assert m, out[-2000:]
    FIGURES["security_exposure"] = f"{m.group(1)} {m.group(2)}"
    assert float(m.group(1)) <= 3.0, out


def test_poweroff_and_boot_brings_everything_back(box, duty):
    before = duty.get("/api/alarms").json()["alarms"]
    history = [duty.get(f"/api/alarms/{a['id']}").json() for a in before]
    assert before, "an alarm from the SOS test"
    FIGURES["poweroff_s"] = round(box.poweroff(), 1)
    assert not _ready(1)
    t0 = time.monotonic()
    box.boot()
    _wait(_ready, 120, "/readyz after boot")
    FIGURES["boot_to_ready_s"] = round(time.monotonic() - t0, 1)
    assert box.sh(f"systemctl is-active {SVC} mosquitto").stdout.split() == ["active"] * 2
    after = duty.get("/api/alarms").json()["alarms"]
    assert [(a["id"], a["state"]) for a in after] == [(a["id"], a["state"]) for a in before]
    again = [duty.get(f"/api/alarms/{a['id']}").json() for a in before]
    assert [h.get("events") for h in again] == [h.get("events") for h in history]
    # the broker's accounts and TLS came back too
    creds = _credentials(box.dir)
    dev = creds["caller-7-101"]
    c, rc = _connect(PORTS["tls"], dev["username"], dev["password"],
                     box.dir / "etc/mosquitto/community-gateway/tls/ca.crt")
    assert rc == 0
    c.disconnect()
    c.loop_stop()


def test_upgrade_to_a_newer_build_then_rollback(box, duty):
    alarms = duty.get("/api/alarms").json()["alarms"]
    old_version = box.sh("gateway --version").stdout.split()[-1]
    old = box.sh("readlink /opt/community-gateway/current").stdout.strip()
    new_version = f"{old_version}.post1"
    # git pull: the checkout now holds a newer build
    shutil.rmtree(box.dir / "root/community-gateway")
    _checkout(box.snapshot, box.dir / "root/community-gateway", version=new_version)
    t0 = time.monotonic()
    res = box.sh("cd /root/community-gateway && deploy/install.sh --mqtt-tls-bind 127.0.0.1",
                 timeout=1200, check=False)
    assert res.returncode == 0, \
        f"upgrade failed:\n{res.stdout}\n{res.stderr[-6000:]}\n{box.journal()}"
    _wait(_ready, 90, "/readyz after the upgrade")
    FIGURES["upgrade_s"] = round(time.monotonic() - t0, 1)
    assert box.sh("gateway --version").stdout.split()[-1] == new_version
    assert httpx.get(f"{API}/healthz", timeout=5).json()["version"] == new_version
    assert box.sh("readlink /opt/community-gateway/previous").stdout.strip() == old
    assert box.sh("ls /var/backups/community-gateway/gateway-backup-*.tar.gz").stdout.strip()
    assert box.sh(f"systemctl is-active {SVC}").stdout.strip() == "active"
    assert [a["id"] for a in duty.get("/api/alarms").json()["alarms"]] == \
        [a["id"] for a in alarms]

    t0 = time.monotonic()
    res = box.sh("cd /root/community-gateway && deploy/install.sh --rollback", timeout=300,
                 check=False)
    assert res.returncode == 0, f"{res.stderr}\n{box.journal()}"
    _wait(_ready, 90, "/readyz after the rollback")
    FIGURES["rollback_s"] = round(time.monotonic() - t0, 1)
    assert box.sh("readlink /opt/community-gateway/current").stdout.strip() == old
    assert box.sh("gateway --version").stdout.split()[-1] == old_version
    assert httpx.get(f"{API}/healthz", timeout=5).json()["version"] == old_version
    after = duty.get("/api/alarms").json()["alarms"]
    assert [(a["id"], a["state"]) for a in after] == [(a["id"], a["state"]) for a in alarms]
