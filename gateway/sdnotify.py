"""systemd notification: READY=1 once serving, WATCHDOG=1 pings from the event loop.

The service unit (deploy/systemd/community-gateway.service) is ``Type=notify`` with
``WatchdogSec``: systemd starts counting the gateway as up only after READY=1, and restarts it
when the pings stop — a wedged event loop or a stalled rule engine then heals itself instead of
silently dropping alarms. Outside systemd (no ``NOTIFY_SOCKET``) everything here is a no-op.

The protocol is one datagram per message on the AF_UNIX socket named by ``NOTIFY_SOCKET``
(``@name`` = abstract namespace); see sd_notify(3). It is small enough that a dependency would
add more than it saves.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable

__all__ = ["Notifier", "watchdog_interval", "notify_task"]

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages; silently does nothing when not run by systemd."""

    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        self.address = addr or None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` lines as one datagram; False if systemd could not be told."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(self.address)
                s.sendall("\n".join(fields).encode("utf-8"))
            return True
        except OSError as exc:
            # systemd went away or the socket is not ours: nothing to do but say so once.
            log.warning("sd_notify to %r failed: %s", self.address, exc)
            return False


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None without a watchdog."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


async def notify_task(ready: asyncio.Event, alive: Callable[[], bool],
                      notifier: Notifier | None = None) -> None:
    """Tell systemd READY=1 when ``ready`` is set, then ping the watchdog while ``alive()``.

    When ``alive()`` is false the ping is skipped (and the reason logged once), so systemd
    restarts the gateway after WatchdogSec if the condition persists. Runs until cancelled;
    says STOPPING=1 on the way out.
    """
    notifier = notifier or Notifier()
    if not notifier.enabled:
        return
    interval = watchdog_interval()
    await ready.wait()
    notifier.send("READY=1", "STATUS=serving")
    if interval is None:
        return
    healthy = True
    try:
        while True:
            now_ok = alive()
            if now_ok:
                notifier.send("WATCHDOG=1")
            if now_ok != healthy:
                log.log(logging.INFO if now_ok else logging.ERROR,
                        "watchdog: %s", "healthy again, pinging systemd" if now_ok else
                        "rule engine stalled, withholding the systemd watchdog ping")
                healthy = now_ok
            await asyncio.sleep(interval)
    finally:
        notifier.send("STOPPING=1")
