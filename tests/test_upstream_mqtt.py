"""Upstream MQTT for fleets against a real Mosquitto acting as the city's central broker:
every alarm event arrives (QoS 1, persistent session) even when the broker is down for a
while; topics follow docs/upstream-mqtt.md; summaries and status are retained."""

from __future__ import annotations

import asyncio
import json
import threading

import paho.mqtt.client as paho
import pytest

from gateway.alarms import AlarmBook
from gateway.broker import Mosquitto
from gateway.metrics import Metrics
from gateway.site import load_site
from gateway.store import Store
from gateway.upstream import UpstreamPublisher
from simulators.bench._backlog import fill_backlog
from tests.support import EXAMPLE, until

pytestmark = pytest.mark.integration


class CentralSubscriber:
    """A fleet application: persistent session, QoS 1, collects messages by topic."""

    def __init__(self, port: int):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="city-fleet-view",
                             clean_session=False)
        self.c.on_message = self._on_message
        self.subscribed = 0
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe("sites/#", qos=1)
        self.c.on_subscribe = lambda *a: setattr(self, "subscribed", self.subscribed + 1)
        self.c.reconnect_delay_set(0.1, 0.5)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_message(self, _c, _u, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def events(self) -> list[dict]:
        with self.lock:
            return [json.loads(p) for t, p, _r in self.messages if t.endswith("/events")]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()





def _last_summary(sub) -> dict:
    """The last site summary the fleet subscriber received ({} open alarms before any)."""
    got = [json.loads(p) for t, p, _r in sub.messages if t.endswith("/summary")]
    return got[-1] if got else {"open_alarms": {}}


async def test_alarm_events_survive_central_broker_outage(tmp_path):
    broker = Mosquitto(workdir=tmp_path / "central").start()
    sub = CentralSubscriber(broker.port)
    store = Store(tmp_path / "gateway.db")
    store.open()
    metrics = Metrics()
    pub = UpstreamPublisher(store, metrics, site_id="tianlin-07", host="127.0.0.1",
                            port=broker.port, client_id="gateway-tianlin-07-up", summary_s=0.5,
                            summary=lambda: {"devices": {"online": 5}}, reconnect_cap_s=1.0)
    book = AlarmBook(store, load_site(EXAMPLE), on_change=lambda ch: pub.wake())
    task = asyncio.create_task(pub.run(), name="upstream-mqtt")
    try:
        await fill_backlog(book, 20, tag="up")
        await until(lambda: len(sub.events()) >= 20, 10, "first 20 events upstream")
        broker.stop()                                   # the central broker goes away
        await until(lambda: pub.state == "offline", 10, "publisher notices")
        await fill_backlog(book, 30, start=20, tag="up")
        first = store.query_one("SELECT id FROM alarms ORDER BY id")["id"]
        await book.acknowledge(first, "duty-1", "电话已联系 resident name here")
        await book.resolve(first, "duty-1", "handled")
        assert pub.backlog() >= 32        # 30 raised + acknowledged + resolved
        # the gateway restarts too while the broker is away: the cursor is in the store
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        broker.start()                                  # back (same port, persistent store)
        # the fleet subscriber's persistent session survives the restart; wait for it so
        # the count below is about the publisher's cursor, not the subscriber's reconnect
        await until(lambda: sub.subscribed >= 2, 15, "fleet subscriber back")
        pub = UpstreamPublisher(store, Metrics(), site_id="tianlin-07", host="127.0.0.1",
                                port=broker.port, client_id="gateway-tianlin-07-up",
                                summary_s=0.5, summary=lambda: {"devices": {"online": 5}},
                                reconnect_cap_s=1.0)
        task = asyncio.create_task(pub.run(), name="upstream-mqtt")
        total = store.query_one("SELECT count(*) AS n FROM alarm_events")["n"]
        try:
            await until(lambda: len({e["event_id"] for e in sub.events()}) >= total, 30,
                        "every alarm event upstream after the outage")
        finally:
            print(f"events {total}, received {len({e['event_id'] for e in sub.events()})}, "
                  f"publisher {pub.state} backlog {pub.backlog()}, subscriber connected "
                  f"{sub.c.is_connected()}")
        await until(lambda: pub.backlog() == 0, 5, "cursor caught up")
        # the summary (every 0.5 s) after the outage: until the first one comes, the last
        # one the subscriber holds may be the retained summary from before the outage
        await until(lambda: _last_summary(sub)["open_alarms"].get("critical") == 49, 5,
                    "a summary of the 49 open alarms")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sub.close()
        broker.cleanup()
        store.close()
    events = sub.events()
    ids = {e["event_id"] for e in events}
    print(f"upstream: {total} alarm events, {len(events)} received ({len(events) - len(ids)} "
          f"redelivered), 0 lost")
    assert len(ids) == total
    topics = {t for t, _p, _r in sub.messages}
    assert f"sites/tianlin-07/alarms/{first}/events" in topics
    assert "sites/tianlin-07/summary" in topics and "sites/tianlin-07/status" in topics
    ack = next(e for e in events if e["action"] == "acknowledged")
    assert "note" not in ack["detail"] and ack["alarm"]["state"] in ("acknowledged", "resolved")
    summary = _last_summary(sub)
    assert summary["devices"] == {"online": 5} and summary["open_alarms"]["critical"] == 49
    # the resolved alarm's retained state is cleared (empty payload)
    states = [p for t, p, _r in sub.messages if t == f"sites/tianlin-07/alarms/{first}/state"]
    assert states[-1] == b""
