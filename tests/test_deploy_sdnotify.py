"""systemd notify protocol: READY=1 once serving, WATCHDOG=1 pings, nothing without systemd."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import httpx
import pytest

from gateway.sdnotify import Notifier, notify_task, watchdog_interval
from tests.support import GatewayProcess, site_copy, wait_for


def _receiver(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(0.2)
    return s


def _drain(s: socket.socket, into: list[str], max_s: float = 0.5) -> list[str]:
    """Append what arrives until 0.2 s of silence or ``max_s`` passed."""
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        try:
            into.extend(s.recv(4096).decode().splitlines())
        except TimeoutError:
            break
    return into


def test_without_notify_socket_nothing_is_sent():
    n = Notifier({})
    assert not n.enabled and n.send("READY=1") is False
    assert watchdog_interval({}) is None


def test_watchdog_interval_is_half_of_watchdog_sec_and_respects_pid():
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) \
        == 15.0
    # the watchdog belongs to another process (e.g. a wrapper): do not ping for it
    assert watchdog_interval({"WATCHDOG_USEC": "30000000",
                              "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "junk"}) is None


def test_abstract_namespace_socket():
    name = f"cg-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(2)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).send("READY=1", "STATUS=x")
        assert s.recv(100) == b"READY=1\nSTATUS=x"


async def test_pings_stop_while_unhealthy(tmp_path, monkeypatch):
    sock = str(tmp_path / "notify")
    rx = _receiver(sock)
    monkeypatch.setenv("NOTIFY_SOCKET", sock)
    monkeypatch.setenv("WATCHDOG_USEC", "40000")   # ping every 20 ms
    healthy = True
    ready = asyncio.Event()
    task = asyncio.create_task(notify_task(ready, lambda: healthy), name="sd-notify-test")
    ready.set()
    got: list[str] = []
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(5):
        while got.count("WATCHDOG=1") < 2:
            await loop.run_in_executor(None, _drain, rx, got)
    assert got[0] == "READY=1"
    healthy = False
    await asyncio.sleep(0.1)            # let an in-flight ping land
    await loop.run_in_executor(None, _drain, rx, [])
    quiet = await loop.run_in_executor(None, _drain, rx, [])
    assert "WATCHDOG=1" not in quiet    # stalled: systemd will restart us
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "STOPPING=1" in await loop.run_in_executor(None, _drain, rx, [])
    rx.close()


@pytest.mark.integration
def test_running_gateway_tells_systemd_ready_and_pings_watchdog(tmp_path, mosquitto):
    sock = str(tmp_path / "notify")
    rx = _receiver(sock)
    config = site_copy(tmp_path / "site", mqtt_port=mosquitto.port)
    gw = GatewayProcess(config, tmp_path / "data",
                        env={"NOTIFY_SOCKET": sock, "WATCHDOG_USEC": "500000"})
    got: list[str] = []
    try:
        gw.start(wait_ready=False)
        def pinged() -> bool:
            assert gw.proc.poll() is None, gw.log_text()
            return _drain(rx, got).count("WATCHDOG=1") >= 2

        try:
            wait_for(pinged, timeout=30, what="READY=1 and two WATCHDOG=1 datagrams")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; got {got}; log:\n{gw.log_text()}") from None
        assert got[0] == "READY=1", got
        # READY=1 is sent only once the API serves
        assert httpx.get(f"{gw.url}/healthz", timeout=5).status_code == 200
    finally:
        gw.stop()
        rx.close()
