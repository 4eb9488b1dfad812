"""Test helpers: real processes (gateway, case system simulator) on free loopback ports."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest

from gateway.broker import free_port, wait_port

EXAMPLE = Path(__file__).resolve().parent.parent / "edge_config" / "examples" / "tianlin"
VENV_BIN = Path(sys.executable).parent


@asynccontextmanager
async def running(driver):
    """``driver.run()`` as a task for the ``async with`` block; cancelled after it (a driver
    runs until cancelled, so it must end by cancellation, not by an error)."""
    task = asyncio.create_task(driver.run(), name=f"{type(driver).__name__} under test")
    try:
        yield driver
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def wait_for(cond, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``cond()`` until it returns a truthy value or ``timeout`` passes (then fail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


async def until(cond, timeout: float, what: str = "condition", interval: float = 0.02):
    """Await ``cond()`` truthy within ``timeout`` seconds (the async twin of wait_for)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


class CollectingSink:
    """A pipeline stand-in for driver tests: keeps every offered reading."""

    def __init__(self, *, expect_ack: bool | None = None) -> None:
        self.readings: list = []
        self.expect_ack = expect_ack

    def offer(self, readings, ack, durable: bool = False) -> None:
        if self.expect_ack is False:
            assert ack is None
        self.readings.extend(readings)

    def of(self, device: str, metric: str) -> list:
        return [r for r in self.readings if r.device_id == device and r.metric == metric]


def site_copy(dest: Path, *, mqtt_port: int, case_url: str | None = None,
              callback_url: str | None = None) -> Path:
    """A copy of the example site bound to the given broker and case system."""
    shutil.copytree(EXAMPLE, dest)
    (dest / "gateway.yaml").write_text(
        f"mqtt:\n  host: 127.0.0.1\n  port: {mqtt_port}\n  max_payload_bytes: 4096\n")
    if case_url:
        text = (f"case_system:\n  url: {case_url}\n  key_id: tianlin-07\n"
                f"  secret_env: CASE_SYSTEM_SECRET\n  timeout_s: 2\n")
        if callback_url:
            text += f"  callback_url: {callback_url}\n"
        (dest / "uplinks.yaml").write_text(text)
    else:
        (dest / "uplinks.yaml").write_text("{}\n")
    return dest


class CaseSystemProcess:
    def __init__(self, secret: str, workdir: Path, **delays: float):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.secret = secret
        self.workdir = workdir
        self.delays = delays
        self.proc: subprocess.Popen | None = None

    def start(self) -> CaseSystemProcess:
        args = [sys.executable, "-m", "simulators.case_system", "--port", str(self.port),
                "--key-id", "tianlin-07", "--journal", str(self.workdir / "cases.jsonl")]
        for name, value in self.delays.items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        self.proc = subprocess.Popen(args, env=dict(os.environ, CASE_SYSTEM_SECRET=self.secret),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, timeout=20)
        return self

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

    def cases(self) -> dict:
        return httpx.get(f"{self.url}/_sim/cases", timeout=5).json()


class GatewayProcess:
    """``gateway run`` as a real process; ``stop()`` = SIGTERM, ``kill()`` = SIGKILL."""

    def __init__(self, config: Path, data: Path, *, env: dict | None = None,
                 port: int | None = None):
        self.config, self.data = config, data
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, **(env or {}))
        self.proc: subprocess.Popen | None = None
        self.log = data.parent / f"gateway-{self.port}.log"

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "gateway"), *args], input=input, text=True,
                              capture_output=True, env=self.env, timeout=60)

    def add_users(self, *roles: str) -> dict[str, str]:
        """One user per role, named after it, with a random password (kept in
        ``self.passwords``, returned)."""
        import secrets

        self.passwords: dict[str, str] = getattr(self, "passwords", {})
        for role in roles:
            self.passwords[role] = secrets.token_urlsafe(12)
            res = self.cli("user", "add", "--username", role, "--role", role,
                           "--password-stdin", "--data", str(self.data),
                           input=self.passwords[role] + "\n")
            assert res.returncode == 0, res.stderr
        return self.passwords

    def token(self, role: str, name: str) -> str:
        self.data.mkdir(parents=True, exist_ok=True)
        res = self.cli("token", "create", "--role", role, "--name", name, "--data",
                       str(self.data))
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    def start(self, wait_ready: bool = True) -> GatewayProcess:
        self.data.mkdir(parents=True, exist_ok=True)
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "gateway"), "run", "--config", str(self.config), "--data",
             str(self.data), "--port", str(self.port)], env=self.env,
            stdout=logf, stderr=logf)
        logf.close()
        if wait_ready:
            wait_for(self.ready, timeout=30, interval=0.05, what="gateway /readyz")
        return self

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"gateway exited {self.proc.returncode}:\n{self.log_text()}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> int | None:
        code = _stop(self.proc)
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def api(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=5,
                            headers={"Authorization": f"Bearer {token}"})

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text


def _stop(proc: subprocess.Popen | None) -> int | None:
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise AssertionError("process did not stop within 15 s of SIGTERM") from None


def browser_login(browser, gw: GatewayProcess, role: str):
    """A Chromium context logged in to ``gw``'s console as ``role`` (zh-CN, Shanghai time),
    its live stream open: ``(context, page)``."""
    context = browser.new_context(locale="zh-CN", timezone_id="Asia/Shanghai")
    page = context.new_page()
    page.goto(gw.url + "/")
    page.fill("#login input[name=username]", role)
    page.fill("#login input[name=password]", gw.passwords[role])
    page.click("#login button[type=submit]")
    page.wait_for_selector("#app:not([hidden])", timeout=10_000)
    page.wait_for_selector("#conn.live", timeout=10_000)
    return context, page


def mqtt_publish(port: int, messages: list[tuple[str, bytes | str | dict]], qos: int = 1,
                 client_id: str | None = None) -> None:
    """Publish with a real paho client and wait until the broker acknowledged each message."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id or "")
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        infos = []
        for topic, payload in messages:
            body = json.dumps(payload) if isinstance(payload, dict) else payload
            infos.append(c.publish(topic, body, qos=qos))
        for info in infos:
            info.wait_for_publish(timeout=10)
            assert info.is_published()
    finally:
        c.disconnect()
        c.loop_stop()


def metric_value(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class AckingSink:
    """A pipeline stand-in for intake tests: keeps the readings, acknowledges at once."""

    def __init__(self) -> None:
        self.readings: list = []

    def offer(self, readings, ack, durable: bool = False) -> None:
        self.readings.extend(readings)
        if ack is not None:
            ack()


class HoldingSink(AckingSink):
    """Holds the acknowledgements, as a commit still in flight does (``pending``)."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list = []

    def offer(self, readings, ack, durable: bool = False) -> None:
        self.readings.extend(readings)
        if ack is not None:
            self.pending.append(ack)


def stock_profile(pid: str):
    """A JSON profile shipped in drivers/profiles (for intake tests)."""
    from drivers.profiles import Profile, load_profiles

    p = load_profiles().by_id[pid]
    assert isinstance(p, Profile)
    return p


def mqtt_intake(port: int, sink, client_id: str, bindings: dict):
    """An MQTT intake on the loopback broker at ``port`` (for intake tests)."""
    from drivers.mqtt import MqttIntake
    from gateway.metrics import Metrics

    return MqttIntake(host="127.0.0.1", port=port, client_id=client_id, sink=sink,
                      metrics=Metrics(), bindings=bindings)
