"""Run a local Mosquitto with a generated config (demo and tests).

Production gateways use the broker configured by deploy/ (per-device credentials, ACLs, TLS);
this one listens on loopback only, which is why it may allow anonymous clients.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["Mosquitto", "free_port", "stop_process", "wait_port"]


def stop_process(proc: subprocess.Popen | None, grace_s: float = 10.0) -> None:
    """SIGTERM, wait up to ``grace_s``, then SIGKILL: a child never outlives its owner."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout} s") from None
            time.sleep(0.05)


class Mosquitto:
    """A mosquitto process on 127.0.0.1:``port``; ``start()``/``stop()`` or a context manager.

    ``persistence`` keeps sessions and queued QoS 1 messages across broker restarts (in
    ``workdir``), as a production broker does. ``accounts`` (user -> password) and ``acl``
    (the accounts' ACL lines, e.g. ``gateway.broker_acl.gateway_acl``) make it check those
    accounts as the installed broker does; clients without a user name (the simulated
    devices) may still publish and read anything. ``max_queued`` bounds each offline or
    slow session's queue (the installed broker: 10,000).
    """

    def __init__(self, port: int | None = None, workdir: Path | None = None, *,
                 persistence: bool = True, accounts: dict[str, str] | None = None,
                 acl: list[str] | None = None, max_queued: int = 200000):
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = port or free_port()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mosquitto-")
            workdir = Path(self._tmp.name)
        self.workdir = Path(workdir)
        self.persistence = persistence
        self.accounts = dict(accounts or {})
        self.acl = list(acl or [])
        self.max_queued = max_queued
        self.proc: subprocess.Popen | None = None

    def config_text(self) -> str:
        # Started as root, mosquitto switches to the user named here (default "mosquitto"),
        # which cannot write the persistence file into our work directory: every restart
        # would then silently lose all persistent sessions and their queued messages. So it
        # stays the user that starts it (for a normal user the option is ignored).
        return "\n".join([
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
            f"max_queued_messages {self.max_queued}",
            "max_inflight_messages 1000",
            # as deploy/mosquitto/community-gateway.conf: a 500-device bridge/devices list
            "message_size_limit 4194304",
            f"log_dest file {self.workdir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            *([f"password_file {self.workdir / 'passwd'}", f"acl_file {self.workdir / 'acl'}"]
              if self.accounts else []),
            "",
        ])

    def _write_accounts(self) -> None:
        """passwd (hashed by mosquitto_passwd) and acl for ``accounts``."""
        passwd = self.workdir / "passwd"
        fd = os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("".join(f"{u}:{pw}\n" for u, pw in self.accounts.items()))
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        subprocess.run([tool, "-U", str(passwd)], check=True, capture_output=True, timeout=60)
        # lines before the first "user" are the anonymous clients' (the simulated devices)
        (self.workdir / "acl").write_text("\n".join(["topic readwrite #", "", *self.acl, ""]),
                                          encoding="utf-8")

    def reload(self, acl: list[str] | None = None) -> None:
        """Write ``acl`` (if given) and the accounts again, and make the broker re-read them
        (SIGHUP, as ``systemctl reload mosquitto``)."""
        if acl is not None:
            self.acl = list(acl)
        self._write_accounts()
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)

    def start(self) -> Mosquitto:
        if not Path(self.binary).exists():
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        if self.accounts:
            self._write_accounts()
        self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
