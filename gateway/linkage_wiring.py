"""Wiring of the linkage (gateway/linkage.py): the writer registry with the MQTT command writer,
the settings from gateway.yaml ``linkage:``, and the site bus's rebind of the writers.

Other transports' writers (Modbus, CJ/T 188 over RS-485) are added to the same registry by
their builders (``Linkage.registry.add``); the first writer that supports a device and action
takes the command.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from drivers.mqtt import DeviceBinding
from drivers.mqtt_commands import CommandBinding, MqttCommandWriter
from gateway.alarms import Change
from gateway.linkage import CaseNote, Linkage, LinkageSettings, WriterRegistry
from gateway.metrics import Metrics
from gateway.store import Store

__all__ = ["build_linkage", "mqtt_command_bindings"]


def mqtt_command_bindings(bindings: dict[str, DeviceBinding]) -> dict[str, CommandBinding]:
    """The MQTT devices whose profile has ``commands:``: device id -> topic and command map
    (from the intake's topic -> device table)."""
    return {b.device_id: CommandBinding(b.device_id, topic, b.profile.commands)
            for topic, b in bindings.items() if b.profile.commands is not None}


def build_linkage(site: Any, current_site: Callable[[], Any], store: Store, metrics: Metrics,
                  bindings: dict[str, DeviceBinding], on_change: Callable[[list[Change]], None],
                  *, mqtt_host: str, mqtt_port: int,
                  case_note: CaseNote | None = None) -> tuple[Linkage, MqttCommandWriter]:
    """The linkage and its MQTT command writer (a task of its own: ``writer.run()``)."""
    mq = site.gateway.mqtt
    lk = site.gateway.linkage
    writer = MqttCommandWriter(
        host=mqtt_host, port=mqtt_port,
        client_id=f"{mq.client_id or 'gateway-' + site.site.site.id}-commands",
        bindings=mqtt_command_bindings(bindings), metrics=metrics, username=mq.username,
        password=os.environ.get(mq.password_env) if mq.password_env else None,
        keepalive=mq.keepalive_s)
    registry = WriterRegistry()
    registry.add(writer)
    settings = LinkageSettings(confirm_timeout_s=lk.confirm_timeout_s, attempts=lk.attempts,
                               rate_limit=lk.rate_limit, rate_window_s=lk.rate_window_s)
    linkage = Linkage(store, current_site, registry, on_change=on_change, metrics=metrics,
                      settings=settings, case_note=case_note)
    return linkage, writer
