"""`gateway demo` as a new user runs it: broker, case system, devices, gateway, console;
Ctrl-C stops everything and leaves nothing running."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import httpx
import pytest

from gateway.broker import free_port
from tests.support import VENV_BIN, wait_for

pytestmark = pytest.mark.integration


def _mosquitto_pids(under=None) -> set[int]:
    """Running mosquitto processes; with ``under``, only those whose command line names that
    folder (the demo's own broker: other tests' brokers may run at the same time)."""
    out = subprocess.run(["pgrep", "-a", "-x", "mosquitto"], capture_output=True, text=True)
    return {int(line.split()[0]) for line in out.stdout.splitlines()
            if under is None or str(under) in line}


def test_demo_runs_and_stops_cleanly(tmp_path):
    port = free_port()
    log = tmp_path / "demo.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(VENV_BIN / "gateway"), "demo", "--port", str(port),
                                 "--press-every", "0.5", "--data", str(tmp_path / "demo")],
                                stdout=fh, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONFAULTHANDLER="1"))
    try:
        text = wait_for(lambda: "password:" in log.read_text() and log.read_text(), timeout=60,
                        interval=0.1, what="demo banner")
        password = re.search(r"password: (\S+)", text).group(1)
        # the logins are kept in a file only the user can read, and the planted incident
        # says when its alarm is expected
        logins = tmp_path / "demo" / "demo-logins.txt"
        assert oct(logins.stat().st_mode & 0o777) == "0o600"
        assert f"duty: {password}" in logins.read_text()
        assert re.search(r"inactivity alarm is expected by \d\d:\d\d:\d\d", text), text
        started = _mosquitto_pids(tmp_path)
        assert started, "the demo runs its own mosquitto"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as web:
            assert "社区值班台" in web.get("/").text
            me = web.post("/api/login", json={"username": "duty", "password": password}).json()
            assert me["role"] == "duty"
            alarms = wait_for(lambda: web.get("/api/alarms").json()["alarms"], timeout=30,
                              interval=0.2, what="a simulated press to raise an alarm")
            assert alarms[0]["household"] or alarms[0]["grid"]
    finally:
        proc.send_signal(signal.SIGINT)
        t_stop = time.monotonic()
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise AssertionError(f"the demo did not stop within 30 s of SIGINT:\n"
                                 f"{log.read_text()[-6000:]}") from None
    print(f"demo stopped {time.monotonic() - t_stop:.1f} s after SIGINT")
    assert code == 0, log.read_text()
    assert "Traceback" not in log.read_text()
    wait_for(lambda: not (_mosquitto_pids() & started), timeout=10, interval=0.1,
             what="the demo's mosquitto to be gone (it must not outlive the demo)")
    assert not os.path.exists(tmp_path / "demo" / "mosquitto" / "mosquitto.pid")


def test_demo_on_a_port_in_use_says_so_and_leaves_nothing_running(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = subprocess.run([str(VENV_BIN / "gateway"), "demo", "--port", str(port), "--data",
                              str(tmp_path / "demo")], capture_output=True, text=True,
                             timeout=60)
    assert res.returncode != 0
    assert f"port {port} is in use" in res.stderr
    assert not _mosquitto_pids(tmp_path), "a broker was left running"
