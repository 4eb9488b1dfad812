"""Shared by the drain benchmark and the outbox fault tests: a queued backlog of alarms.

``fill_backlog`` raises ``n`` alarms through the real alarm book (alarm + history + outbox
row per alarm, in transactions of ``per_tx``), as the pipeline would during an uplink outage.
``start_case_system`` runs the simulated case system as its own process (its own core).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from gateway.broker import free_port, stop_process, wait_port
from gateway.model import Severity, utc
from rules.actions import RaiseAlarm

__all__ = ["CaseSim", "fill_backlog", "raise_actions", "start_case_system"]

_PLACES = (("caller-7-101", "h-7-101", "310104-012-03"),
           ("caller-7-302", "h-7-302", "310104-012-03"),
           ("caller-9-201", "h-9-201", "310104-012-04"))


def raise_actions(n: int, start: int = 0, tag: str = "bench") -> list[RaiseAlarm]:
    """``n`` distinct SOS alarms (keys ``{tag}:{i}``) on the example site's callers."""
    t0 = utc() - timedelta(hours=1)
    out = []
    for i in range(start, start + n):
        device, household, cell = _PLACES[i % len(_PLACES)]
        ts = t0 + timedelta(milliseconds=2 * i)
        out.append(RaiseAlarm(f"{tag}:{i}", "sos", "emergency_call", Severity.CRITICAL, device,
                              household, cell, f"一键呼叫 #{i}", f"Emergency call #{i}", ts,
                              True, event_ts=ts))
    return out


async def fill_backlog(book, n: int, *, start: int = 0, per_tx: int = 500,
                       tag: str = "bench") -> None:
    """Raise ``n`` alarms through ``book`` (gateway.alarms.AlarmBook), ``per_tx`` per commit."""
    for lo in range(start, start + n, per_tx):
        await book.apply(raise_actions(min(per_tx, start + n - lo), lo, tag))


@dataclass
class CaseSim:
    proc: subprocess.Popen
    url: str
    secret: str
    key_id: str

    def stop(self) -> None:
        stop_process(self.proc)


def start_case_system(workdir: Path, key_id: str = "tianlin-07", *,
                      dispatch_after: float = 3600.0) -> CaseSim:
    """The simulator as a subprocess on a free loopback port (no journal: in memory)."""
    secret = secrets.token_urlsafe(32)
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators.case_system", "--port", str(port), "--key-id",
         key_id, "--dispatch-after", str(dispatch_after), "--on-site-after", "3600",
         "--close-after", "3600"],
        env=dict(os.environ, CASE_SYSTEM_SECRET=secret), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    wait_port(port, timeout=20)
    return CaseSim(proc, f"http://127.0.0.1:{port}", secret, key_id)
