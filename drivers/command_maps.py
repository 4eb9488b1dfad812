"""The ``commands:`` section of a JSON (MQTT, Zigbee2MQTT) device profile: how to command it.

::

    commands:
      topic: "{topic}/set"            # default; {topic}: the device's state topic, {device_id}
      actions:
        close_valve: {state: "OFF"}
        open_valve: {state: "ON"}
        siren_on: {warning: {mode: "{mode}", level: "{level}", strobe: true,
                             duration: "{duration}"}}

Each action's payload is a JSON object published on ``topic`` (QoS 1, not retained). A string
value that is exactly ``"{duration}"``, ``"{mode}"`` or ``"{level}"`` takes the command's
parameter (a siren's seconds as a number, its mode and level as words). The device reports
its state back on its state topic the way the profile's ``fields`` read it: an action is
confirmed by the reading of ``gateway.kernel.commands.CONFIRMING_KIND`` (``valve_open``,
``siren``, ``switch``), which the profile must therefore give (checked when it is loaded).

Pure: no I/O. ``drivers/mqtt_commands.py`` publishes.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.kernel.commands import Action

__all__ = ["CommandMap", "PARAMS", "render_payload", "render_topic"]

#: the placeholders a payload may use, each standing for a whole value
PARAMS = ("duration", "mode", "level")


class CommandMap(BaseModel):
    """How a JSON device takes commands: the topic and one payload per action."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    topic: str = Field(default="{topic}/set", min_length=1)
    actions: dict[Action, dict[str, Any]] = Field(min_length=1)
    qos: Literal[0, 1, 2] = 1

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        try:
            v.format(topic="t", device_id="d")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"topic {v!r}: placeholders are {{topic}} and {{device_id}} "
                             f"({exc})") from None
        if any(c in v for c in "#+"):
            raise ValueError(f"topic {v!r}: no wildcards in a command topic")
        return v

    @field_validator("actions")
    @classmethod
    def _payloads(cls, v: dict[Action, dict[str, Any]]) -> dict[Action, dict[str, Any]]:
        for action, payload in v.items():
            try:
                json.dumps(payload)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{action.value}: the payload is not JSON ({exc})") from None
        return v


def render_topic(cmap: CommandMap, topic: str, device_id: str) -> str:
    """The command topic of a device whose state topic is ``topic``."""
    return cmap.topic.format(topic=topic, device_id=device_id)


def render_payload(cmap: CommandMap, action: Action, params: dict[str, Any]) -> bytes:
    """The JSON bytes of ``action`` with ``params`` put in (KeyError: the map has no such
    action)."""
    def fill(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: fill(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fill(x) for x in v]
        if isinstance(v, str) and v.startswith("{") and v.endswith("}") and v[1:-1] in PARAMS:
            return params.get(v[1:-1], _DEFAULTS[v[1:-1]])
        return v
    return json.dumps(fill(cmap.actions[action]), separators=(",", ":")).encode()


#: a siren command without parameters (staff's 鸣笛 from the card): 3 minutes, emergency, high
_DEFAULTS: dict[str, Any] = {"duration": 180, "mode": "emergency", "level": "high"}
