"""The project's error family: every error the gateway, its drivers, the rule engine's
callers and the site loader raise on purpose derives from :class:`GatewayError`.

Part of the kernel (:mod:`gateway.kernel`): imports nothing else of the project. The four
classes here are the ones shared across layers; the others derive from them where they are
raised:

- :class:`ConfigError` — the site configuration is invalid (carries FILE:LINE issues);
  raised by ``edge_config`` and ``gateway.site``, the installer, the service.
- :class:`StoreError` — the SQLite store failed (disk full, corrupt); alarms are not accepted
  and the device is not acknowledged, so it retries.
- :class:`UplinkError` — an uplink (grid case system, upstream MQTT) failed; see
  ``gateway.uplink`` for retryable vs permanent.
- ``drivers.DriverError`` (``DecodeError``, ``ProfileMisfit``, the serial line's ``LineLost``),
  ``gateway.alarms.AlarmError``, ``gateway.auth.AuthError``,
  ``gateway.installer.InstallerError``, ``gateway.backup.BackupError``,
  ``gateway.telemetry.TelemetryError``, ``gateway.uplink.signing.SignatureError`` derive
  from :class:`GatewayError` directly. (tests/test_layers.py checks that none is left out.)

The rule engine raises no error class of its own: bad rule files raise
``pydantic.ValidationError``, bad calls ``ValueError`` (see :mod:`rules`).
"""

from __future__ import annotations

__all__ = ["ConfigError", "GatewayError", "StoreError", "UplinkError"]


class GatewayError(Exception):
    """Base of the project's own errors."""


class ConfigError(GatewayError):
    """Invalid site configuration; ``issues`` holds ``FILE:LINE: field: message`` strings."""

    def __init__(self, issues: list[str]):
        self.issues = list(issues)
        super().__init__("\n".join(self.issues) or "invalid configuration")


class StoreError(GatewayError):
    """The durable store could not commit."""


class UplinkError(GatewayError):
    """An uplink failed."""
