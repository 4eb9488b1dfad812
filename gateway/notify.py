"""Notifications to on-duty staff per escalation tier, through apprise.

apprise speaks DingTalk (``dingtalk://``), WeCom (``wecombot://``), Feishu (``feishu://``),
email (``mailto://``), SMS gateways and plain webhooks (``json://``, ``form://``). The site's
``uplinks.yaml`` maps each escalation target named in rules.yaml (``grid_member``,
``duty_officer``, ...) to apprise URLs; URLs carry tokens, so each is a secret reference.

Source: every ``escalated`` row of ``alarm_events`` (a tier with ``after: 0s`` escalates
together with the raise), read after the notifier's own cursor (``meta.notify_cursor``), so
a restart neither loses nor repeats a notification. Escalations older than ``max_age_s``
(the gateway was down) are skipped and counted: the console and the case system carry them.

Rate limit per household (and target): at most ``per_household`` notifications in
``window_s`` to the same people about the same household; an alarm
storm in one home (a resident pressing the button again and again, a faulty smoke detector)
does not flood phones. Suppressed ones are counted
(``gateway_notifications_total{result="suppressed"}``) and the next notification that goes
out says how many were held back. Notifications are a convenience channel on top of the
durable ones: a target that keeps failing is retried a few times, then counted as failed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime

import apprise

from gateway import StoreError
from gateway.kernel.resilience import Backoff, RateLimit
from gateway.kernel.component import StateTracker
from gateway.metrics import Metrics
from gateway.model import utc
from gateway.store import Store, cursors, events

__all__ = ["HouseholdRateLimit", "Notifier"]

log = logging.getLogger(__name__)
_CURSOR = cursors.NOTIFY
_SEVERITY_ZH = {"critical": "紧急", "major": "重要", "minor": "一般", "info": "提示"}


#: At most ``limit`` sends per household (and target) in any ``window_s``: the kernel's
#: sliding window, :class:`gateway.kernel.resilience.RateLimit`.
HouseholdRateLimit = RateLimit

#: A send apprise reports as failed is tried again after 0.2 s, 0.4 s, ... (at most 5 s).
_SEND_RETRY = Backoff(base_s=0.2, cap_s=5.0, jitter="none")


class Notifier:
    """Sends escalation notifications. ``run()`` until cancelled."""

    def __init__(self, store: Store, site, metrics: Metrics, targets: dict[str, list[str]], *,
                 per_household: int = 3, window_s: float = 600.0, max_age_s: float = 900.0,
                 console_url: str | None = None, attempts: int = 3):
        self.store = store
        self.site = site
        self.metrics = metrics
        self.targets = targets
        self.limit = HouseholdRateLimit(per_household, window_s)
        self.max_age_s = max_age_s
        self.console_url = console_url
        self.attempts = attempts
        self._wake = asyncio.Event()
        self.status = StateTracker("notifications:", "ok", logger=log)
        unknown = sorted({t for tier in site.rules.escalation.tiers for t in tier.notify}
                         - set(targets)) if getattr(site.rules, "escalation", None) else []
        if unknown:
            log.warning("notifications: escalation targets without URLs: %s", ", ".join(unknown))

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                while await self.step():
                    pass
            except StoreError as exc:
                log.error("notifications: cannot record progress: %s", exc)
            try:
                async with asyncio.timeout(1.0):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    async def step(self, batch: int = 50) -> int:
        """Handle the escalations after the cursor; returns how many were looked at."""
        cursor = cursors.event_cursor(self.store, _CURSOR)
        rows = events.escalations_after(self.store, cursor, batch)
        if not rows:
            last = events.last_event_id(self.store)
            if last > cursor:
                await cursors.save_cursor(self.store, _CURSOR, last)
            return 0
        for row in rows:
            await self._one(row)
            await cursors.save_cursor(self.store, _CURSOR, row["ev_id"])
        return len(rows)

    async def _one(self, row: dict) -> None:
        detail = json.loads(row["detail"])
        age = (utc() - datetime.fromisoformat(row["ts"])).total_seconds()
        if age > self.max_age_s:
            self.metrics.inc("gateway_notifications_total", result="stale")
            return
        if row["test"]:
            self.metrics.inc("gateway_notifications_total", result="test_alarm")
            return
        household = row["household_id"] or f"{row['grid_cell']}:{row['device_id']}"
        for target in detail.get("targets", []):
            urls = self.targets.get(target)
            if not urls:
                self.metrics.inc("gateway_notifications_total", result="no_target")
                continue
            key = f"{household}|{target}"   # a higher tier reaches its own people
            if not self.limit.allow(key):
                self.metrics.inc("gateway_notifications_total", result="suppressed")
                continue
            title, body = self._message(row, detail, self.limit.take_held(key))
            ok = await self._send(urls, title, body)
            self.metrics.inc("gateway_notifications_total", result="sent" if ok else "failed",
                             tier=str(detail.get("tier_name", "")))
            self.status.set("ok" if ok else f"failing: {target}")

    def _message(self, row: dict, detail: dict, held: int) -> tuple[str, str]:
        hh = self.site.household(row["household_id"])
        cell = self.site.grid_cell(row["grid_cell"])
        where = hh.address if hh else (cell.name if cell else row["grid_cell"] or "")
        sev = _SEVERITY_ZH.get(row["severity"], row["severity"])
        title = f"[{sev}] {row['message_zh']}"[:120]
        lines = [f"地点: {where}", f"网格: {cell.name if cell else row['grid_cell']}",
                 f"级别: {detail.get('tier_name', '')} (第{detail.get('tier', '?')}级)",
                 f"时间: {row['raised_at']}", f"告警编号: {row['id']}"]
        if held:
            lines.append(f"另有 {held} 条同户告警未单独通知 ({held} more held back)")
        if self.console_url:
            lines.append(f"{self.console_url.rstrip('/')}/#alarm-{row['id']}")
        return title, "\n".join(lines)

    async def _send(self, urls: list[str], title: str, body: str) -> bool:
        ap = apprise.Apprise()
        for url in urls:
            ap.add(url)
        for attempt in range(self.attempts):
            if await ap.async_notify(body=body, title=title):
                return True
            await asyncio.sleep(_SEND_RETRY.delay(attempt))
        log.warning("notification not delivered after %d attempts (%d URL(s))",
                    self.attempts, len(urls))
        return False

    @property
    def state(self) -> str:
        """``ok`` or ``failing: <target>`` (the health endpoint shows it)."""
        return self.status.value
