"""The gateway's part of the device broker's ACL, and the record that lets the broker split
the alarm devices' topics off to the alarm session (docs/architecture.md "The alarm session").

The broker routes a message to every session subscribed to it whose account may read its
topic, and checks that again when it delivers a queued message. So an ACL that lets the
alarm account alone read the alarm devices' topics, and denies them to the main account,
makes the broker route each alarm device's message to exactly one of the gateway's two
sessions, at every moment, whether the gateway is connected or not, with no work of the
gateway's to split them.

One thing the gateway must do first: the alarm session must exist (subscribed, persistent)
at the broker before the ACL sends anything to it, or the broker would route the alarm
devices' messages to a session nobody has. So the gateway records, after the alarm
session's subscription, which account it subscribed with (``broker-partition.json`` in its
data directory); ``mqtt-accounts.py`` splits the topics off only for that account, and the
accounts' systemd path unit re-runs it when the record changes. The switch happens at the
broker's reload while the gateway runs (it is the gateway's own record that starts it), so
the main session has no backlog of those topics then: a message the broker had queued for
the main session on a topic that moves would be denied at its delivery.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from drivers.command_maps import render_topic
from drivers.mqtt import DeviceBinding

__all__ = ["PARTITION_FILE", "gateway_acl", "read_partition", "record_partition"]

log = logging.getLogger(__name__)

#: in the gateway's data directory: ``{"alarm_user": "<account>" | null}``
PARTITION_FILE = "broker-partition.json"


def gateway_acl(bindings: Mapping[str, DeviceBinding], *, user: str,
                alarm_user: str | None = None, partition: bool = False) -> list[str]:
    """The ACL lines of the gateway's accounts (mosquitto ``acl_file`` syntax).

    ``user`` (the main session and the command writer) reads every topic and writes the
    command topics of the devices that take commands (linkage). With ``alarm_user``, that
    account exists; with ``partition`` too, it alone reads the alarm devices' topics
    (``DeviceBinding.alarm``), which ``user`` is denied."""
    alarm = sorted(t for t, b in bindings.items() if b.alarm) if alarm_user and partition else []
    commands = sorted({render_topic(b.profile.commands, t, b.device_id)
                       for t, b in bindings.items() if b.profile.commands is not None})
    lines = [f"user {user}"]
    lines += [f"topic deny {t}" for t in alarm]
    lines += ["topic read #"] + [f"topic write {t}" for t in commands] + [""]
    if alarm_user:
        lines += [f"user {alarm_user}"]
        if not alarm:
            lines += ["# reads nothing yet: the gateway has not recorded its alarm session "
                      f"({PARTITION_FILE})"]
        lines += [f"topic read {t}" for t in alarm] + [""]
    return lines


def read_partition(data_dir: Path) -> str | None:
    """The alarm account the gateway last subscribed its alarm session with, or None."""
    try:
        doc: Any = json.loads((data_dir / PARTITION_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s: %s (taken as no alarm session)", data_dir / PARTITION_FILE, exc)
        return None
    user = doc.get("alarm_user") if isinstance(doc, dict) else None
    return user if isinstance(user, str) and user else None


def record_partition(data_dir: Path, alarm_user: str | None) -> bool:
    """Record (atomically, only when it changes) the account of the alarm session that is
    subscribed at the broker, or None when the gateway runs without one. True when the
    record changed."""
    if read_partition(data_dir) == alarm_user:
        return False
    path = data_dir / PARTITION_FILE
    if alarm_user is None and not path.exists():
        return False
    tmp = path.with_name(f".{PARTITION_FILE}.tmp")
    tmp.write_text(json.dumps({"alarm_user": alarm_user}) + "\n", encoding="utf-8")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return True
