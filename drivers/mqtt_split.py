"""Which of the intake's two MQTT sessions feeds an alarm device's message.

The main session subscribes the wildcards (every device, and devices nobody bound yet, for
the installer's inbox); the alarm session subscribes the exact topics of the alarm devices
(``DeviceBinding.alarm``). So the broker queues an alarm device's message for both sessions,
each queue of its own: an SOS is not dropped when the telemetry of a stopped gateway fills
the main session's queue, and it does not wait behind a burst of telemetry on the main
connection. Exactly one session must feed each message to the pipeline:

* an *established* topic (the alarm session has held its subscription since before a fence
  both sessions passed): the alarm session feeds it, the main session acknowledges and
  drops its copy. Two exceptions feed the main session's copy instead: a QoS 0 copy while
  the alarm session is offline (the broker keeps no QoS 0 message for an offline session),
  and every copy on a main connection made while the alarm session could not connect
  (``unverified``: a double is better than a loss);
* a topic *in transition* (an alarm device new since the last start, every one at the first
  start, every one again when the broker has lost the alarm session): the alarm session
  subscribes it; once that subscription is older than the broker's autosave (``delay_s``:
  a power cut cannot take it back then) the gateway publishes *fence copies* (the epoch's
  nonce and a sequence number, QoS 1) on a topic both sessions subscribe, again every few
  seconds until the move is done: a copy may be dropped from a full queue. The broker sends
  each session its QoS 1 messages in the order it routed them, so a copy splits both
  streams at the same message. The main session's *cut* is the first copy it sees: it feeds
  what is before it, drops what is after, and passes it only once every alarm message it
  fed before is committed (after a kill -9 the copy comes again after anything not
  acknowledged). The alarm session holds the topic's messages from the first copy's
  publication on, and once the main session has passed copy K drops what is before K in
  its stream and feeds what is after (so a device's states stay in order). It records its
  own passage only after a QoS 1 round trip on its connection (the broker has then taken
  every PUBACK it sent before). QoS 0 copies of a topic in transition are fed by the main
  session only (a QoS 0 message may overtake a QoS 1 fence).

The epoch (nonce, topics, copies published, each session's passage) is written to the
gateway's data directory (fsync, rename, fsync of the directory) before a copy is published
and before a passage is acknowledged; a restart continues it. An established topic stays on
the alarm session for as long as a device is bound to it. An alarm device bound at run time
(installer) stays on the main session until the next start. docs/architecture.md "The alarm
session".
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["FENCE_TOPIC", "AlarmSplit", "parse_copy"]

log = logging.getLogger(__name__)

#: the fence's topic (``{client_id}``: the main session's; the alarm session's round trip
#: uses its own client id there). The gateway's broker account writes ``gateway/+/fence``
#: (gateway.broker_acl)
FENCE_TOPIC = "gateway/{client_id}/fence"


def parse_copy(payload: bytes) -> tuple[str, int] | None:
    """A fence copy's (nonce, sequence number), or None for anything else."""
    try:
        nonce, seq = payload.decode("ascii").split(" ")
        return nonce, int(seq)
    except (UnicodeDecodeError, ValueError):
        return None


class AlarmSplit:
    """The split's state: established topics and the epoch in progress, persisted in
    ``path`` (None: in memory only, for tests of the intake)."""

    def __init__(self, path: Path | None, alarm_topics: Iterable[str], bound: Iterable[str],
                 fence_topic: str) -> None:
        self.path = path
        self.fence_topic = fence_topic
        bound_set = set(bound)
        saved, readable = self._load()
        #: the file could not be read: what the alarm session holds before the cut is fed
        #: too (a double is better than a loss), for this epoch
        self.ambiguous = not readable
        #: topics the alarm session feeds and the main session drops
        self.established: set[str] = set(saved.get("established", ())) & bound_set
        epoch = saved.get("epoch")
        if epoch:
            self.nonce: str = str(epoch["nonce"])
            self.pending: set[str] = set(epoch["topics"]) & bound_set
            self.copies = int(epoch["copies"])
            self.main_passed: int | None = epoch["main_passed"]
            self.alarm_passed = bool(epoch["alarm_passed"])
            self.ambiguous = self.ambiguous or bool(epoch.get("ambiguous"))
        else:
            self._new_epoch(set(alarm_topics) - self.established)
        #: the alarm session's subscriptions of the last start that it no longer needs
        self.stale = sorted(set(saved.get("subscribed", ())) - self.established - self.pending)
        self._save()
        if self.pending:
            log.info("alarm session: %d alarm device topic(s) move to it (%d already there)",
                     len(self.pending), len(self.established))

    def _new_epoch(self, topics: set[str]) -> None:
        self.nonce = secrets.token_hex(8)
        self.pending = topics
        self.copies = 0
        self.main_passed = None
        self.alarm_passed = False

    @property
    def in_transition(self) -> bool:
        """An epoch is in progress: some topics wait for both sessions to pass a fence."""
        return bool(self.pending)

    def subscriptions(self) -> list[str]:
        """The alarm session's exact subscriptions (the fence's topic last)."""
        return sorted(self.established | self.pending) + [self.fence_topic]

    def next_copy(self) -> bytes:
        """The payload of the next fence copy, its number recorded first."""
        self.copies += 1
        self._save()
        return f"{self.nonce} {self.copies}".encode("ascii")

    def pass_main(self, seq: int) -> None:
        """The main session passed copy ``seq`` (every message it fed before is committed).
        Recorded before anything is set (OSError: nothing changed)."""
        self._save(main_passed=seq)
        self.main_passed = seq

    def pass_alarm(self) -> None:
        """The alarm session passed the main session's copy: the topics are established."""
        self._save(done=True)
        log.info("alarm session: %d topic(s) moved to it; the main session drops their copies "
                 "from now on", len(self.pending))
        self.established |= self.pending
        self.alarm_passed = True
        self.pending = set()
        self.ambiguous = False

    def demote(self) -> None:
        """The broker has lost the alarm session (it connected without its session): every
        alarm topic moves again, in a new epoch; the main session feeds them meanwhile."""
        topics = self.established | self.pending
        log.warning("alarm session: the broker had lost it; its %d topic(s) are fed by the main "
                    "session until they move again", len(topics))
        self.established = set()
        self._new_epoch(topics)
        self._save()

    def to_json(self) -> dict[str, Any]:
        """For the health endpoint: how many topics are on the alarm session, how many are
        moving to it (and which session has passed the fence)."""
        out: dict[str, Any] = {"established": len(self.established),
                               "in_transition": len(self.pending)}
        if self.pending:
            out.update(fence_copies=self.copies, main_passed=self.main_passed is not None)
        return out

    # -- persistence ---------------------------------------------------------------------
    def _load(self) -> tuple[dict[str, Any], bool]:
        if self.path is None:
            return {}, True
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            return doc, True
        except FileNotFoundError:
            return {}, True
        except (OSError, ValueError, KeyError) as exc:
            # every alarm topic moves again; what the alarm session holds from before the
            # cut is fed as well (the main session may have dropped its copies)
            log.error("%s: %s; every alarm topic moves to the alarm session again",
                      self.path, exc)
            return {}, False

    def _save(self, *, main_passed: int | None = None, done: bool = False) -> None:
        if self.path is None:
            return
        pending = set() if done else self.pending
        established = self.established | self.pending if done else self.established
        doc = {"established": sorted(established),
               "subscribed": sorted(established | pending),
               "epoch": {"nonce": self.nonce, "topics": sorted(pending), "copies": self.copies,
                         "main_passed": main_passed if main_passed is not None
                         else self.main_passed,
                         "alarm_passed": False, "ambiguous": self.ambiguous}
               if pending else None}
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(doc, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
