"""Builds the optional uplinks of ``uplinks.yaml`` for the service (telemetry, upstream MQTT,
notifications) and the store/outbox part of health, so gateway/service.py wires them in a
few lines: ``extra.tasks`` (named coroutines for the TaskGroup), ``extra.wakers`` (called
on every alarm change), ``extra.on_reading`` and ``extra.health``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.metrics import Metrics
from gateway.store import Store

if TYPE_CHECKING:   # imported for real in build_uplinks, lazily (aiomqtt, apprise)
    from gateway.notify import Notifier
    from gateway.telemetry import TelemetrySink
    from gateway.upstream import UpstreamPublisher

__all__ = ["Uplinks", "build_uplinks", "LOW_DISK_BYTES"]

log = logging.getLogger(__name__)

#: Below this many free bytes on the store's filesystem, health warns (before it is full).
LOW_DISK_BYTES = 64 * 1024 * 1024
#: An undelivered case older than this is a warning in health.
OUTBOX_STALE_S = 300.0


@dataclass
class Uplinks:
    store: Store
    telemetry: TelemetrySink | None = None
    upstream: UpstreamPublisher | None = None
    notifier: Notifier | None = None
    tasks: list[tuple[str, Callable]] = field(default_factory=list)
    wakers: list[Callable[[], None]] = field(default_factory=list)

    def on_reading(self, health_seen: Callable) -> Callable:
        sink = self.telemetry
        if sink is None:
            return health_seen

        def both(reading) -> None:
            health_seen(reading)
            sink.offer(reading)
        return both

    def health(self, forwarder) -> dict:
        """Store disk state and outbox warnings (for /healthz and /readyz), uplink states."""
        store = self.store
        free = store.free_bytes()
        warnings = []
        if store.disk_full:
            warnings.append("disk full: new alarm-class messages are not acknowledged "
                            "(the broker keeps them) until space is freed")
        elif 0 <= free < LOW_DISK_BYTES:
            warnings.append(f"disk almost full: {free // (1024 * 1024)} MiB free")
        out: dict = {"store": {"state": "disk_full" if store.disk_full else
                               ("error" if store.last_error else "ok"),
                               "error": store.last_error, "ready": store.last_error is None,
                               "free_bytes": free, "disk_full": store.disk_full,
                               "warnings": warnings}}
        if forwarder is not None:
            age = forwarder.oldest_pending_age_s()
            failed = forwarder.failed_count()
            ow = []
            if age > OUTBOX_STALE_S:
                ow.append(f"oldest undelivered case waits {age:.0f} s")
            if failed:
                ow.append(f"{failed} case message(s) refused by the case system (see alarms)")
            out["outbox"] = {"state": "warning" if ow else "ok", "pending":
                             forwarder.pending_count(), "failed": failed,
                             "oldest_pending_age_s": round(age, 1), "warnings": ow}
        if self.telemetry is not None:
            out["telemetry"] = {"state": self.telemetry.state, "sink": self.telemetry.name}
        if self.upstream is not None:
            out["upstream_mqtt"] = {"state": self.upstream.state,
                                    "backlog": self.upstream.backlog()}
        if self.notifier is not None:
            out["notifications"] = {"state": self.notifier.state}
        return out


def build_uplinks(site, store: Store, metrics: Metrics, data_dir: Path,
                  secret: Callable[[object, str], str], health_book, api_host: str,
                  api_port: int) -> Uplinks:
    cfg = site.uplinks
    site_id = site.site.site.id
    up = Uplinks(store)
    metrics.gauge("gateway_store_disk_full", lambda: float(store.disk_full),
                  "1 while the store cannot commit because the disk is full")
    metrics.gauge("gateway_store_free_bytes", store.free_bytes,
                  "free bytes on the store's filesystem")
    metrics.gauge("gateway_store_commit_failures", lambda: store.commit_failures,
                  "store transactions that failed to commit since start")

    from gateway.telemetry import build_sink

    up.telemetry = build_sink(cfg.telemetry, data_dir, metrics, site_id, secret)
    if up.telemetry is not None:
        up.tasks.append((f"telemetry[{up.telemetry.name}]", up.telemetry.run))

    if cfg.upstream_mqtt is not None:
        from gateway.upstream import UpstreamPublisher

        u = cfg.upstream_mqtt
        up.upstream = UpstreamPublisher(
            store, metrics, site_id=site_id, host=u.host, port=u.port,
            client_id=u.client_id or f"gateway-{site_id}-up", topic_prefix=u.topic_prefix,
            username=u.username,
            password=secret(u.password, "upstream_mqtt.password") if u.password else None,
            tls=u.tls, ca_file=u.ca_file, summary_s=u.summary_s, keepalive=u.keepalive_s,
            summary=lambda: {"devices": health_book.summary()})
        up.tasks.append(("upstream-mqtt", up.upstream.run))
        up.wakers.append(up.upstream.wake)

    if cfg.notifications is not None:
        from gateway.notify import Notifier

        n = cfg.notifications
        targets = {name: [secret(ref, f"notifications.targets.{name}") for ref in refs]
                   for name, refs in n.targets.items()}
        up.notifier = Notifier(store, site, metrics, targets, per_household=n.per_household,
                               window_s=n.window_s, max_age_s=n.max_age_s,
                               console_url=f"http://{api_host}:{api_port}")
        up.tasks.append(("notifications", up.notifier.run))
        up.wakers.append(up.notifier.wake)
    return up
