"""Which of the intake's two MQTT sessions feeds an alarm device's message.

The main session subscribes the wildcards (every device, and devices nobody bound yet, for
the installer's inbox); the alarm session subscribes the exact topics of the alarm devices
(``DeviceBinding.alarm``). So the broker queues an alarm device's message for both sessions,
each in a queue of its own: an SOS is not dropped when the telemetry of a stopped gateway
fills the main session's queue, and it does not wait behind a burst of telemetry on the main
connection.

The rules are one-sided where the streams could disagree: a session never drops a copy on
the strength of where it stands in the *other* session's stream.

* An *established* topic: the alarm session feeds every copy; the main session drops its
  copies while the alarm session is online (offline, its queue might overflow or its
  session be gone: the main session feeds, and a message may then arrive twice).
* A topic *in transition* (an alarm device new since the last start, every one at the first
  start, every one again when the broker has lost the alarm session) is moved by a *fence*.
  Once the alarm session's subscription is older than the broker's autosave (``delay_s``:
  a power cut cannot take it back afterwards), the gateway publishes *fence copies* (the
  epoch's nonce and a sequence number, QoS 1) on a topic both sessions subscribe, again
  every few seconds until the move is done (a full queue may drop a copy). Until the first
  copy is published the alarm session drops its copies: they were routed before any copy,
  so before the main session's cut, and the main session feeds them (as with one session).
  From then on the alarm session feeds every copy it gets. The main session's *cut* is the
  first copy it sees: the broker sends a session's QoS 1 messages in the order it routed
  them, so what follows the cut in its stream was routed after a copy, when the alarm
  session was subscribed: it drops those (while the alarm session is online) and feeds what
  precedes. Between the first copy and the cut both sessions feed: a message may arrive
  twice, none is lost. The main session passes its cut only when every alarm message it
  fed before it is committed (after a kill -9 the copy comes again after anything not
  acknowledged); then the topics are established. A move the main session has not made a
  minute after the first copy (a broker whose ACL refuses the fence's topic) is given up
  and tried again an hour later: a new nonce and no copy, so the main session alone feeds
  those topics again (no doubles). QoS 0 copies of a topic in transition are
  fed by the main session (a QoS 0 message may overtake a QoS 1 copy), and by the alarm
  session once a copy exists.

"Online" is *trusted* online: from the alarm session's CONNACK with its session (its
subscriptions route already), or from its subscription after one without; after a main
CONNACK without its session (the broker lost
state, and the alarm session's connection may not have noticed yet) every alarm topic moves
again and the alarm session reconnects; after a move that could not be recorded the main
session feeds every copy for the rest of the run.

So a message is lost only where one session would have lost it (before the first copy, a
topic in transition is the main session's alone), with one more window: a copy the main
session dropped and the alarm session had not yet received when the broker itself died
before saving it (the alarm session's lag, milliseconds). It may be fed twice between a fence's
first copy and the main session's cut (the time the main session takes to reach it), and
while the alarm session is offline and the main session online; in those windows one
device's states may also be fed out of order. The epoch (nonce, topics, copies published, the main session's cut) is written to
the gateway's data directory (fsync, rename, fsync of the directory) before a copy is
published and before the cut is acknowledged; a restart continues it. An established topic
stays on the alarm session while a device is bound to it, also when the rule of
:func:`drivers.mqtt.is_alarm_device` no longer counts it (a meter, since the ninth round of
the path benchmark): moving a topic back would need a fence of its own (a copy the main
session dropped while the alarm session had not yet fed it would be lost if the alarm
session then acknowledged it unread), so only topics that move *to* the alarm session
do; an alarm device bound at run time
(installer) stays on the main session until the next start. docs/architecture.md "The
alarm session".
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
        saved = self._load()
        #: topics the alarm session feeds and the main session drops
        self.established: set[str] = set(saved.get("established", ())) & bound_set
        epoch = saved.get("epoch")
        if epoch:
            self.nonce: str = str(epoch["nonce"])
            self.pending: set[str] = set(epoch["topics"]) & bound_set
            self.copies = int(epoch["copies"])
            self.main_passed: int | None = epoch["main_passed"]
        else:
            self._new_epoch(set(alarm_topics) - self.established)
        #: the alarm session's subscriptions of the last start that it no longer needs
        #: (saved until unsubscribed: a start that ends before it would otherwise leave them
        #: routed to the alarm session for good)
        before = (set(saved.get("established", ())) | set((epoch or {}).get("topics", ()))
                  | set(saved.get("stale", ())))
        self.stale = sorted(before - self.established - self.pending)
        if self._doc() != saved:
            self._save()
        if self.pending:
            log.info("alarm session: %d alarm device topic(s) move to it (%d already there)",
                     len(self.pending), len(self.established))

    def _new_epoch(self, topics: set[str]) -> None:
        self.nonce = secrets.token_hex(8)
        self.pending = topics
        self.copies = 0
        self.main_passed = None

    @property
    def in_transition(self) -> bool:
        """An epoch is in progress: some topics wait for both sessions to pass a fence."""
        return bool(self.pending)

    def subscriptions(self) -> list[str]:
        """The alarm session's exact subscriptions (the fence's topic last)."""
        return sorted(self.established | self.pending) + [self.fence_topic]

    def next_copy(self) -> bytes:
        """The payload of the next fence copy, its number recorded first (OSError: not
        counted, nothing to publish)."""
        self._save(copies=self.copies + 1)
        self.copies += 1
        return f"{self.nonce} {self.copies}".encode("ascii")

    def pass_main(self, seq: int) -> None:
        """The main session passed copy ``seq`` (every alarm message it fed before is
        committed): the topics in transition are established. Recorded before anything is
        set (OSError: nothing changed)."""
        self._save(done=True)
        log.info("alarm session: %d topic(s) moved to it at fence copy %d; the main session "
                 "drops their copies from now on", len(self.pending), seq)
        self.established |= self.pending
        self.pending = set()
        self.main_passed = seq

    def restart_epoch(self) -> None:
        """The move did not happen (no copy came back): the same topics, a new nonce, no
        copy yet (the alarm session drops their copies again, the main session feeds them;
        copies of the old nonce are ignored). OSError: not recorded, nothing changed."""
        nonce = secrets.token_hex(8)
        old = (self.nonce, self.copies)
        self.nonce, self.copies = nonce, 0
        try:
            self._save()
        except OSError:
            self.nonce, self.copies = old
            raise

    def unsubscribed(self) -> None:
        """The alarm session unsubscribed ``stale``: forgotten (OSError: still in the file,
        unsubscribed again at the next start, which is harmless)."""
        if self.stale:
            self.stale = []
            self._save()

    def demote(self) -> bool:
        """The broker has lost the alarm session (a CONNACK without it): every alarm topic
        moves again, in a new epoch, and the main session feeds them meanwhile. In memory
        whatever happens (the safe side); False when it could not be recorded."""
        topics = self.established | self.pending
        log.warning("alarm session: the broker had lost it; its %d topic(s) are fed by the main "
                    "session until they move again", len(topics))
        self.established = set()
        self._new_epoch(topics)
        try:
            self._save()
        except OSError as exc:
            log.error("%s: %s: the move is not recorded", self.path, exc)
            return False
        return True

    def to_json(self) -> dict[str, Any]:
        """For the health endpoint: how many topics are on the alarm session, how many are
        moving to it (and which session has passed the fence)."""
        out: dict[str, Any] = {"established": len(self.established),
                               "in_transition": len(self.pending)}
        if self.pending:
            out["fence_copies"] = self.copies
        return out

    # -- persistence ---------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            return doc
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # every alarm topic moves again (both sessions feed it meanwhile: no loss)
            log.error("%s: %s; every alarm topic moves to the alarm session again",
                      self.path, exc)
            return {}

    def _doc(self, *, done: bool = False, copies: int | None = None) -> dict[str, Any]:
        pending = set() if done else self.pending
        established = self.established | self.pending if done else self.established
        doc = {"established": sorted(established),
               "epoch": {"nonce": self.nonce, "topics": sorted(pending),
                         "copies": self.copies if copies is None else copies,
                         "main_passed": self.main_passed} if pending else None}
        if self.stale:
            doc["stale"] = list(self.stale)
        return doc

    def _save(self, *, done: bool = False, copies: int | None = None) -> None:
        if self.path is None:
            return
        doc = self._doc(done=done, copies=copies)
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
