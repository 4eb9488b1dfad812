"""Device drivers: transports (MQTT, Modbus TCP/RTU, serial) and pure frame codecs.

Codecs are pure functions from bytes/JSON to :class:`gateway.model.Reading` objects.
Every rejection raises :class:`DecodeError` with a short machine ``reason`` (counted by the
pipeline under that name) and a human ``detail`` naming the field or byte offset.
"""

from __future__ import annotations

__all__ = ["DriverError", "DecodeError", "FIELD_ERROR_PREFIX"]

#: Prefix of an ``on_error(device_id, reason)`` reason about one field of a message whose
#: other readings were delivered (``"field:bad_value"``): the device sent something wrong,
#: but no message was lost (see :meth:`gateway.health.HealthBook.error`).
FIELD_ERROR_PREFIX = "field:"


class DriverError(Exception):
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
