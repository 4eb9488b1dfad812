"""Upstream MQTT for fleets: alarm events and summaries to the city's central broker.

Topic scheme (docs/upstream-mqtt.md), ``P`` = ``topic_prefix`` (default ``sites``):

- ``P/<site>/status`` (retained, QoS 1): ``{"online": true, ...}``; the broker publishes the
  will ``{"online": false}`` when the gateway vanishes.
- ``P/<site>/alarms/<alarm_id>/events`` (QoS 1): every alarm transition (raised, retriggered,
  acknowledged, escalated, case_created, case_status, resolved ...), with the alarm's state.
- ``P/<site>/alarms/<alarm_id>/state`` (retained, QoS 1): the alarm's current state; an
  empty retained message removes it once the alarm is resolved.
- ``P/<site>/summary`` (retained, QoS 1): open alarms by severity, devices by health,
  outbox backlog, every ``summary_s``.

Nothing is lost while the central broker is down: the source is the store's
``alarm_events`` table (written in the same transaction as the alarm change) and the
publisher keeps its OWN cursor (``meta.upstream_cursor``, the last event id the broker
acknowledged). After a reconnect it resumes from the cursor; an event published but not
yet recorded as acknowledged is published again (at least once: receivers deduplicate on
``event_id``). Session: MQTT 3.1.1, fixed client id, ``clean_session=False``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable

import aiomqtt

from gateway import StoreError
from gateway.kernel.resilience import Backoff
from gateway.kernel.component import StateTracker
from gateway.metrics import Metrics
from gateway.model import utc
from gateway.store import Store, cursors, events
from gateway.store import alarms as alarm_rows

__all__ = ["UpstreamPublisher", "alarm_state"]

log = logging.getLogger(__name__)
_CURSOR = cursors.UPSTREAM
_STATE_FIELDS = ("id", "key", "rule_id", "category", "severity", "state", "device_id",
                 "household_id", "grid_cell", "count", "test", "occurred_at", "raised_at",
                 "updated_at", "cleared_at", "escalation_tier", "escalation_tier_name",
                 "ack_at", "resolved_at", "resolve_reason", "case_id", "case_status",
                 "case_error")


def alarm_state(row: dict) -> dict:
    """The alarm as published upstream: no messages with names, no notes, no contacts."""
    out = {k: row.get(k) for k in _STATE_FIELDS}
    out["test"] = bool(out["test"])
    return out


class UpstreamPublisher:
    """Publishes alarm events and summaries to one broker. ``run()`` until cancelled."""

    def __init__(self, store: Store, metrics: Metrics, *, site_id: str, host: str, port: int,
                 client_id: str, topic_prefix: str = "sites", username: str | None = None,
                 password: str | None = None, tls: bool = False, ca_file: str | None = None,
                 summary_s: float = 60.0, keepalive: int = 30, batch: int = 200,
                 summary: Callable[[], dict] | None = None, reconnect_cap_s: float = 30.0):
        self.store = store
        self.reconnect_cap_s = reconnect_cap_s
        self._reconnect = Backoff(base_s=min(0.5, reconnect_cap_s), cap_s=reconnect_cap_s)
        self.metrics = metrics
        self.site_id = site_id
        self.host, self.port, self.client_id = host, port, client_id
        self.base = f"{topic_prefix}/{site_id}"
        self.username, self._password = username, password
        self._tls = ssl.create_default_context(cafile=ca_file) if tls else None
        self.summary_s = summary_s
        self.keepalive = keepalive
        self.batch = batch
        self.summary = summary or (lambda: {})
        self.status = StateTracker(f"upstream mqtt {host}:{port}", "starting", logger=log)
        self.published = 0
        self._wake = asyncio.Event()
        self._instance = store.instance_id
        metrics.gauge("gateway_upstream_backlog", self.backlog,
                      "alarm events not yet acknowledged by the upstream broker")

    def wake(self) -> None:
        self._wake.set()

    def cursor(self) -> int:
        return cursors.event_cursor(self.store, _CURSOR)

    def backlog(self) -> int:
        return events.count_after(self.store, self.cursor())

    async def run(self) -> None:
        delays = self._reconnect.delays()
        will = aiomqtt.Will(f"{self.base}/status", json.dumps({"online": False}), qos=1,
                            retain=True)
        while True:
            try:
                async with aiomqtt.Client(
                        self.host, self.port, identifier=self.client_id, clean_session=False,
                        keepalive=self.keepalive, username=self.username,
                        password=self._password, will=will, tls_context=self._tls,
                        protocol=aiomqtt.ProtocolVersion.V311, timeout=10,
                        max_inflight_messages=100) as client:
                    # a batch is published pipelined on purpose: no warning per extra call
                    client.pending_calls_threshold = 2 * self.batch + 10
                    self.status.set("online")
                    delays = self._reconnect.delays()
                    await client.publish(f"{self.base}/status", json.dumps(
                        {"online": True, "since": utc().isoformat()}), qos=1, retain=True)
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                self.status.set("offline", str(exc))
                self.metrics.inc("gateway_upstream_reconnects_total")
                await asyncio.sleep(next(delays))

    async def _serve(self, client: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        next_summary = 0.0
        while True:
            while await self._publish_events(client):
                pass
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Python 3.11: asyncio.wait_for inside aiomqtt's publish can swallow a cancel
                # that arrives with the PUBACK; the stop must not be lost (a hung shutdown)
                raise asyncio.CancelledError
            if loop.time() >= next_summary:
                await client.publish(f"{self.base}/summary",
                                     json.dumps(self._summary(), ensure_ascii=False),
                                     qos=1, retain=True)
                next_summary = loop.time() + self.summary_s
            try:
                async with asyncio.timeout(min(1.0, self.summary_s)):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    async def _publish_events(self, client: aiomqtt.Client) -> int:
        """Publish the next batch after the cursor; advance it once all were acknowledged."""
        cursor = self.cursor()
        batch = events.events_after(self.store, cursor, self.batch)
        if not batch:
            return 0
        pubs = []
        for ev in batch:
            alarm = alarm_state(dict(ev, id=ev["alarm_id"]))
            detail = json.loads(ev["detail"])
            detail.pop("note", None)          # free text may name residents: not upstream
            if ev["action"] == "call":        # whom staff called: the kind and outcome only
                detail.pop("name", None)
                detail.pop("request_id", None)
            body = {"event_id": f"{self._instance}-{ev['ev_id']}", "site_id": self.site_id,
                    "alarm_id": ev["alarm_id"], "action": ev["action"], "ts": ev["ts"],
                    "actor": ev["actor"], "detail": detail, "alarm": alarm}
            topic = f"{self.base}/alarms/{ev['alarm_id']}"
            pubs.append(client.publish(f"{topic}/events", json.dumps(body, ensure_ascii=False),
                                       qos=1))
            state = b"" if alarm["state"] == "resolved" else json.dumps(alarm)
            pubs.append(client.publish(f"{topic}/state", state, qos=1, retain=True))
        await asyncio.gather(*pubs)
        last = batch[-1]["ev_id"]
        try:
            await cursors.save_cursor(self.store, _CURSOR, last)
        except StoreError as exc:   # not recorded: those events go out again (at least once)
            log.error("upstream: cannot record the cursor: %s", exc)
            await asyncio.sleep(1.0)
            return 0
        self.published += len(batch)
        self.metrics.inc("gateway_upstream_published_total", len(batch))
        return len(batch)

    def _summary(self) -> dict:
        return {"site_id": self.site_id, "at": utc().isoformat(),
                "open_alarms": alarm_rows.open_by_severity(self.store),
                "upstream_backlog": self.backlog(), **self.summary()}

    @property
    def state(self) -> str:
        """``starting``, ``online`` or ``offline`` (the health endpoint shows it)."""
        return self.status.value
