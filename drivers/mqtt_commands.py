"""Commands to MQTT devices (linkage): Zigbee2MQTT ``<base>/<friendly_name>/set`` and the command
topics JSON profiles define (``commands:``, drivers/command_maps.py).

:class:`MqttCommandWriter` is a ``gateway.kernel.commands.CommandWriter``: its own connection to
the device broker (client id ``<intake id>-commands``, clean session: a command is never queued
for later — a valve closed an hour late is a surprise, not a safety), one task (``run()``)
that reconnects with backoff, and ``send()`` that publishes one command at QoS 1 and returns
once the broker has it (PUBACK). Whether the device obeyed is told by its state topic, which
the intake reads as always.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiomqtt

from drivers.command_maps import CommandMap, render_payload, render_topic
from gateway.kernel.commands import Action, Command, CommandError
from gateway.kernel.component import StateTracker
from gateway.kernel.metrics import MetricsSink
from gateway.kernel.resilience import Backoff

__all__ = ["CommandBinding", "MqttCommandWriter"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CommandBinding:
    """An MQTT device that takes commands: its state topic and its profile's command map."""

    device_id: str
    topic: str
    commands: CommandMap


class MqttCommandWriter:
    """Publishes commands to MQTT devices; ``run()`` keeps the connection until cancelled."""

    def __init__(self, *, host: str, port: int, client_id: str,
                 bindings: dict[str, CommandBinding], metrics: MetricsSink,
                 username: str | None = None, password: str | None = None,
                 keepalive: int = 30, publish_timeout_s: float = 5.0) -> None:
        self.host, self.port, self.client_id = host, port, client_id
        self.bindings = bindings
        self.metrics = metrics
        self.username, self._password = username, password
        self.keepalive = keepalive
        self.publish_timeout_s = publish_timeout_s
        self.status = StateTracker(f"mqtt commands {host}:{port}", "starting", logger=log)
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._reconnect = Backoff(base_s=0.5, cap_s=30.0)

    @property
    def state(self) -> str:
        return self.status.value

    def rebind(self, bindings: dict[str, CommandBinding]) -> None:
        """Swap the device table (an edited site); takes effect at once."""
        self.bindings = bindings

    def reachable(self) -> set[str]:
        """The devices this writer can command (one action at least)."""
        return {d for d, b in self.bindings.items() if b.commands.actions}

    def supports(self, device_id: str, action: Action) -> bool:
        b = self.bindings.get(device_id)
        return b is not None and action in b.commands.actions

    async def send(self, command: Command) -> None:
        b = self.bindings.get(command.device_id)
        if b is None or command.action not in b.commands.actions:
            raise CommandError(f"{command.device_id}: takes no {command.action.value} over MQTT")
        topic = render_topic(b.commands, b.topic, b.device_id)
        payload = render_payload(b.commands, command.action, command.params)
        try:
            async with asyncio.timeout(self.publish_timeout_s):
                await self._connected.wait()
                client = self._client
                if client is None:    # pragma: no cover - set before _connected
                    raise CommandError(f"{command.device_id}: no connection to the broker")
                await client.publish(topic, payload, qos=b.commands.qos)
        except TimeoutError:
            self.metrics.inc("gateway_commands_failed_total", transport="mqtt")
            raise CommandError(f"{command.device_id}: the broker {self.host}:{self.port} did "
                               f"not take the command within {self.publish_timeout_s:g} s "
                               f"({self.state})") from None
        except aiomqtt.MqttError as exc:
            self.metrics.inc("gateway_commands_failed_total", transport="mqtt")
            raise CommandError(f"{command.device_id}: publish to {topic} failed: {exc}") from None
        log.info("command %s %s -> %s %s", command.command_id, command.action.value, topic,
                 payload.decode())

    async def run(self) -> None:
        delays = self._reconnect.delays()
        while True:
            try:
                client = aiomqtt.Client(
                    self.host, self.port, identifier=self.client_id, clean_session=True,
                    keepalive=self.keepalive, username=self.username, password=self._password,
                    protocol=aiomqtt.ProtocolVersion.V311, timeout=10)
                async with client:
                    self._client = client
                    self._connected.set()
                    self.status.set("online")
                    delays = self._reconnect.delays()
                    # aiomqtt resolves this future (with an error) when the connection drops
                    await asyncio.shield(client._disconnected)  # noqa: SLF001
            except aiomqtt.MqttError as exc:
                self.status.set("offline", str(exc))
            finally:
                self._connected.clear()
                self._client = None
            self.metrics.inc("gateway_driver_reconnects_total", driver="mqtt-commands")
            await asyncio.sleep(next(delays))
