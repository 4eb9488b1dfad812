"""Commands to devices (linkage): the vocabulary shared by the rules, the drivers and the gateway.

A :class:`Command` says what to make a device do (close its valve, sound its siren, cut its
socket) in the gateway's words; each transport's writer turns it into bytes on its wire
(Zigbee2MQTT ``<name>/set``, a Modbus coil or register write, a CJ/T 188 valve frame, a JSON
MQTT device's command topic). Whether the device *did* it is not the writer's business: the
device's next reported state (a reading of kind ``valve_open``/``siren``/``switch``, see
:data:`CONFIRMING_KIND`; ``siren`` and ``switch`` are added to ``Kind`` by the linkage work) confirms it, and the gateway's linkage waits for that within a
timeout.

Part of the kernel: imports nothing else of the project.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from gateway.kernel.errors import GatewayError

__all__ = [
    "Action",
    "CONFIRMING_KIND",
    "EXPECTED_STATE",
    "ListsDevices",
    "SAFE_ACTIONS",
    "INVERSE",
    "Command",
    "CommandError",
    "CommandWriter",
]


class Action(StrEnum):
    """What a command asks of a device."""

    CLOSE_VALVE = "close_valve"
    OPEN_VALVE = "open_valve"
    SIREN_ON = "siren_on"
    SIREN_OFF = "siren_off"
    SWITCH_OFF = "switch_off"
    SWITCH_ON = "switch_on"


#: Actions that only make things safe: the only ones a rule may send on its own.
SAFE_ACTIONS: frozenset[Action] = frozenset({Action.CLOSE_VALVE, Action.SIREN_ON, Action.SWITCH_OFF})

#: Each safe action's inverse (staff only, with the permission and a confirmation).
INVERSE: dict[Action, Action] = {
    Action.CLOSE_VALVE: Action.OPEN_VALVE,
    Action.SIREN_ON: Action.SIREN_OFF,
    Action.SWITCH_OFF: Action.SWITCH_ON,
}

#: The reading kind whose value confirms an action (the ``Kind`` values, as strings, so the
#: kernel's model and this module stay independent).
CONFIRMING_KIND: dict[Action, str] = {
    Action.CLOSE_VALVE: "valve_open",
    Action.OPEN_VALVE: "valve_open",
    Action.SIREN_ON: "siren",
    Action.SIREN_OFF: "siren",
    Action.SWITCH_OFF: "switch",
    Action.SWITCH_ON: "switch",
}

#: The reported value that confirms an action: ``valve_open`` False / True, siren and switch
#: ``True`` (sounding / on) or ``False``.
EXPECTED_STATE: dict[Action, bool] = {
    Action.CLOSE_VALVE: False,
    Action.OPEN_VALVE: True,
    Action.SIREN_ON: True,
    Action.SIREN_OFF: False,
    Action.SWITCH_OFF: False,
    Action.SWITCH_ON: True,
}


@dataclass(frozen=True)
class Command:
    """One command to one device.

    ``params`` carries action details a transport may use (a siren's ``mode``, ``level`` and
    ``duration`` in seconds). ``command_id`` is unique per command (the linkage's id; a writer
    may log it, never needs it on the wire).
    """

    command_id: str
    device_id: str
    action: Action
    params: dict[str, Any] = field(default_factory=dict)


class CommandError(GatewayError):
    """A command could not be put on the wire (the device or its transport named in the text)."""


@runtime_checkable
class ListsDevices(Protocol):
    """A :class:`CommandWriter` that can say at once which devices it reaches (any action)."""

    def reachable(self) -> set[str]: ...


class CommandWriter(Protocol):
    """What each transport offers the linkage: put one command on the wire, or raise.

    ``supports`` says whether this writer can reach the device with that action (its
    binding and profile define a way to); ``send`` returns once the bytes are written (an MQTT
    publish handed to the client, a Modbus write answered, a serial frame answered) and
    raises :class:`CommandError` naming the device when it cannot.
    """

    def supports(self, device_id: str, action: Action) -> bool: ...

    async def send(self, command: Command) -> None: ...
