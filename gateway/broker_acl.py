"""The gateway's part of the device broker's ACL (deploy/mosquitto/mqtt-accounts.py writes it;
the test broker of gateway.broker takes it as it is).

The gateway's account reads every topic (its main session subscribes the wildcards, its alarm
session the alarm devices' topics: drivers/mqtt_split.py) and writes two kinds of topic: the
command topics of the devices that take commands (linkage: ``<topic>/set`` for Zigbee2MQTT)
and the alarm session's fence (``gateway/<client id>/fence``). Nothing else: a device's own
topic stays the device's.

One line per topic on purpose, no deny list: mosquitto checks an account's ACL entry by entry
for every message it routes and delivers, so the gateway's account keeps one entry that
matches every device message (``topic read #``).
"""

from __future__ import annotations

from collections.abc import Mapping

from drivers.command_maps import render_topic
from drivers.mqtt import DeviceBinding
from drivers.mqtt_split import FENCE_TOPIC

__all__ = ["gateway_acl"]


def gateway_acl(bindings: Mapping[str, DeviceBinding], *, user: str) -> list[str]:
    """The ACL lines of the gateway's account ``user`` (mosquitto ``acl_file`` syntax)."""
    commands = sorted({render_topic(b.profile.commands, t, b.device_id)
                       for t, b in bindings.items() if b.profile.commands is not None})
    return [f"user {user}", "topic read #",
            f"topic write {FENCE_TOPIC.format(client_id='+')}",
            *[f"topic write {t}" for t in commands], ""]
