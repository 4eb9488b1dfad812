"""Device drivers: transports (MQTT, Modbus TCP/RTU, serial) and pure frame codecs.

Codecs are pure functions from bytes/JSON to :class:`gateway.kernel.model.Reading` objects.
Every rejection raises :class:`DecodeError` with a short machine ``reason`` (counted by the
pipeline under that name) and a human ``detail`` naming the field or byte offset.

Drivers import the kernel (:mod:`gateway.kernel`) and themselves, nothing else (the
import-linter contracts in pyproject.toml); what they need of the gateway is passed in: an
:class:`IntakeSink` for readings, a :class:`DecodeWatch`, a
:class:`gateway.kernel.metrics.MetricsSink`. The transports (``mqtt``, ``modbus``,
``serial_line``) do not import each other; ``field`` runs the buses and lines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from gateway.kernel.errors import GatewayError
from gateway.kernel.model import Reading

__all__ = ["DECODE_ERROR", "DecodeWatch", "DriverError", "DecodeError", "FIELD_ERROR_PREFIX",
           "IntakeSink"]

#: Prefix of an ``on_error(device_id, reason)`` reason about one field of a message whose
#: other readings were delivered (``"field:bad_value"``): the device sent something wrong,
#: but no message was lost (see :meth:`gateway.health.HealthBook.error`).
FIELD_ERROR_PREFIX = "field:"

#: The reason (and device fault) of an exception our own decoding raised on a bound device's
#: input: not bad input but a bug or a profile that does not fit the device.
DECODE_ERROR = "decode_error"


class DriverError(GatewayError):
    """Base of driver errors."""


class DecodeError(DriverError):
    """Input that could not be decoded.

    ``reason`` is a short snake_case code used as a metric label (``bad_checksum``,
    ``malformed_json``, ``unknown_device``, ``wrong_type``, ``oversize``, ``truncated``,
    ``bad_bcd``, ...). ``where`` names the device/topic/field or byte offset; ``field`` is
    the payload key when the problem is one field's (else "").
    """

    def __init__(self, reason: str, detail: str, *, where: str = "", field: str = ""):
        self.reason = reason
        self.detail = detail
        self.where = where
        self.field = field
        super().__init__(f"{where}: {detail} [{reason}]" if where else f"{detail} [{reason}]")


class DecodeWatch:
    """Where drivers report how decoding a bound device's input went (no-op here; the
    gateway's :class:`gateway.health.DecodeFaults` puts the device in fault ``decode_error``).

    ``failed`` is called for an exception that is not a :class:`DecodeError` raised while
    decoding a message (or one field or block of it) of ``device_id``; the driver has
    acknowledged the message and counted it. ``ok`` is called for a message of the device
    that decoded without such an exception. Both run on the event loop, ``ok`` once per
    message: it must be cheap.
    """

    def failed(self, device_id: str, transport: str, exc: BaseException, where: str) -> None:
        """An exception while decoding input of ``device_id`` (``where``: topic, bus, line)."""

    def ok(self, device_id: str) -> None:
        """A message of ``device_id`` decoded without an exception."""


class IntakeSink(Protocol):
    """Where drivers hand decoded readings (the gateway's ``Pipeline``)."""

    def offer(self, readings: list[Reading], ack: Callable[[], None] | None,
              durable: bool = False) -> None:
        """Take decoded readings. Call ``ack`` once they are safe (durable for alarms, and
        for every reading when ``durable``)."""
