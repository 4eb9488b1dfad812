"""Notifications through apprise to a local webhook receiver (json:// URLs): one message per
escalation tier target, rate-limited per household, nothing repeated after a restart."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gateway.alarms import AlarmBook
from gateway.metrics import Metrics
from gateway.model import utc
from gateway.notify import HouseholdRateLimit, Notifier
from gateway.site import load_site
from gateway.store import Store
from rules.actions import Escalate
from simulators.bench._backlog import raise_actions
from tests.support import EXAMPLE

pytestmark = pytest.mark.integration


class Receiver:
    """A webhook endpoint on loopback that records each POST by path."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.posts.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def to(self, path: str) -> list[dict]:
        return [b for p, b in self.posts if p == path]

    def close(self) -> None:
        self.server.shutdown()


def test_household_rate_limit_window() -> None:
    now = [0.0]
    rl = HouseholdRateLimit(2, 60.0, clock=lambda: now[0])
    assert [rl.allow("h1") for _ in range(4)] == [True, True, False, False]
    assert rl.allow("h2") and rl.held == {"h1": 2}
    now[0] = 60.0
    assert rl.allow("h1")


async def test_tiers_reach_their_targets_and_a_storm_is_rate_limited(tmp_path):
    rx = Receiver()
    store = Store(tmp_path / "gateway.db")
    store.open()
    site = load_site(EXAMPLE)
    book = AlarmBook(store, site)
    targets = {"grid_member": [f"json://127.0.0.1:{rx.port}/grid"],
               "duty_officer": [f"json://127.0.0.1:{rx.port}/duty"]}
    metrics = Metrics()
    notifier = Notifier(store, site, metrics, targets, per_household=3, window_s=600)
    try:
        # a storm: 12 alarms, each escalated to tier 1 at once; 4 per household
        # (raise_actions rotates three callers in three households)
        actions = raise_actions(12, tag="storm")
        await book.apply(actions)
        await book.apply([Escalate(a.key, 1, "grid_member", ("grid_member",), utc())
                          for a in actions])
        # tier 2 for the first alarm only
        await book.apply([Escalate(actions[0].key, 2, "duty_officer", ("duty_officer",),
                                   utc())])
        while await notifier.step():
            pass
        grid, duty = rx.to("/grid"), rx.to("/duty")
        counts = {"escalations": 13, "grid_member": len(grid), "duty_officer": len(duty),
                  "suppressed": metrics.get("gateway_notifications_total",
                                            result="suppressed")}
        print("notifications:", counts)
        assert len(grid) == 9             # 3 per household, 3 households
        assert counts["suppressed"] == 3  # the 4th of each household
        assert len(duty) == 1             # tier 2 reaches other people: its own limit
        first = grid[0]
        assert first["title"].startswith("[紧急]") and "田林路200弄7号101室" in first["message"]
        assert "grid_member" in first["message"]
        # a restart does not repeat anything (cursor in the store)
        again = Notifier(store, site, metrics, targets)
        assert await again.step() == 0 and len(rx.to("/grid")) == 9
        # a stale escalation (gateway was down for an hour) is not sent
        old = raise_actions(1, start=100, tag="old")
        await book.apply(old)
        await book.apply([Escalate(old[0].key, 1, "grid_member", ("grid_member",),
                                   utc() - timedelta(hours=1))])
        store.write_sync(lambda c: c.execute(
            "UPDATE alarm_events SET ts=? WHERE action='escalated' AND id=(SELECT max(id) "
            "FROM alarm_events)", ((utc() - timedelta(hours=1)).isoformat(),)))
        while await again.step():
            pass
        assert metrics.get("gateway_notifications_total", result="stale") == 1
        assert len(rx.to("/grid")) == 9
    finally:
        rx.close()
        store.close()
