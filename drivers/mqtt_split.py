"""Which of the intake's two MQTT sessions feeds an alarm device's message.

The main session subscribes the wildcards (every device, and devices nobody bound yet, for
the installer's inbox); the alarm session subscribes the exact topics of the alarm devices
(``DeviceBinding.alarm``). So the broker queues an alarm device's message for both sessions,
each queue of its own: an SOS is not dropped when the telemetry of a stopped gateway fills
the main session's queue, and it does not wait behind a burst of telemetry on the main
connection. Exactly one session must feed each message to the pipeline:

* an *established* topic (the alarm session has held its subscription since before a fence
  both sessions passed): the alarm session feeds it, the main session acknowledges and
  drops its copy (a QoS 0 copy is fed by the main session while the alarm session is
  offline: the broker keeps no QoS 0 message for an offline session);
* a topic *in transition* (an alarm device new since the last start, or every one at the
  first start): the alarm session subscribes it, then the gateway publishes a *fence* (a
  nonce, QoS 1) on a topic both sessions subscribe. The broker sends each session its QoS 1
  messages in the order it routed them, so the fence splits both streams at the same
  message: the main session feeds what comes before the fence in its stream and drops what
  comes after; the alarm session drops what comes before and feeds what comes after, once
  the main session has passed the fence (a device's states stay in order). QoS 0 messages
  may overtake a QoS 1 fence, so while a topic is in transition the main session feeds all
  of its QoS 0 messages and the alarm session none;
* the main session passes the fence only once every alarm message it fed before it is
  committed (acknowledged): after a crash, the fence comes again after anything the main
  session had not acknowledged.

The split survives restarts: the epoch (its nonce and topics, each session's passage) is
written to the gateway's data directory before a passage is acknowledged, and a restart
continues it (the fence is published again with the same nonce: each stream's first copy
counts, later copies are dropped). Topics become established when both sessions have passed;
an established topic stays on the alarm session for as long as a device is bound to it. An
alarm device bound at run time (installer) stays on the main session until the next start.
docs/architecture.md "The alarm session".
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["FENCE_TOPIC", "AlarmSplit"]

log = logging.getLogger(__name__)

#: the fence's topic (``{client_id}``: the main session's); the gateway's broker account
#: writes it (gateway.broker_acl)
FENCE_TOPIC = "gateway/{client_id}/fence"


class AlarmSplit:
    """The split's state: established topics, the epoch in progress, persisted in ``path``
    (None: in memory only, for tests of the intake)."""

    def __init__(self, path: Path | None, alarm_topics: Iterable[str], bound: Iterable[str],
                 fence_topic: str) -> None:
        self.path = path
        self.fence_topic = fence_topic
        bound_set = set(bound)
        saved = self._load()
        #: topics the alarm session feeds and the main session drops
        self.established: set[str] = set(saved.get("established", ())) & bound_set
        epoch = saved.get("epoch")
        if epoch:
            self.nonce: str = str(epoch["nonce"])
            self.pending: set[str] = set(epoch["topics"]) & bound_set
            self.main_passed = bool(epoch["main_passed"])
            self.alarm_passed = bool(epoch["alarm_passed"])
        else:
            self.nonce = secrets.token_hex(8)
            self.pending = set(alarm_topics) - self.established
            self.main_passed = self.alarm_passed = False
        #: the alarm session's subscriptions of the last start that it no longer needs
        self.stale = sorted(set(saved.get("subscribed", ())) - self.established - self.pending)
        self._save()
        if self.pending:
            log.info("alarm session: %d alarm device topic(s) move to it (%d already there)",
                     len(self.pending), len(self.established))

    @property
    def in_transition(self) -> bool:
        """An epoch is in progress: some topics wait for both sessions to pass the fence."""
        return bool(self.pending)

    def subscriptions(self) -> list[str]:
        """The alarm session's exact subscriptions (the fence's topic last)."""
        return sorted(self.established | self.pending) + [self.fence_topic]

    def pass_main(self) -> None:
        """The main session passed the fence (every message it fed before is committed)."""
        self.main_passed = True
        self._done_or_save()

    def pass_alarm(self) -> None:
        self.alarm_passed = True
        self._done_or_save()

    def to_json(self) -> dict[str, Any]:
        """For the health endpoint: how many topics are on the alarm session, how many are
        moving to it (and which session has passed the fence)."""
        out: dict[str, Any] = {"established": len(self.established),
                               "in_transition": len(self.pending)}
        if self.pending:
            out.update(main_passed=self.main_passed, alarm_passed=self.alarm_passed)
        return out

    # -- persistence ---------------------------------------------------------------------
    def _done_or_save(self) -> None:
        if self.main_passed and self.alarm_passed and self.pending:
            log.info("alarm session: %d topic(s) moved to it; the main session drops their "
                     "copies from now on", len(self.pending))
            self.established |= self.pending
            self.pending = set()
        self._save()

    def _load(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # unreadable: start over (every alarm topic in transition: the main session
            # feeds them until both pass a new fence; nothing is dropped meanwhile)
            log.error("%s: %s; the alarm session starts over", self.path, exc)
            return {}
        return doc if isinstance(doc, dict) else {}

    def _save(self) -> None:
        if self.path is None:
            return
        doc = {"established": sorted(self.established),
               "subscribed": sorted(self.established | self.pending),
               "epoch": {"nonce": self.nonce, "topics": sorted(self.pending),
                         "main_passed": self.main_passed, "alarm_passed": self.alarm_passed}
               if self.pending else None}
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(doc, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
