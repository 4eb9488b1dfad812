"""The gateway service: pipeline, alarm lifecycle, store and outbox, uplinks, API, CLI.

This package is the top layer (composition root, service, API, store) and also holds the
bottom one, :mod:`gateway.kernel` (reading model, errors, metrics interface, resilience,
clock). Importing ``gateway`` imports the kernel's errors and nothing else, so that drivers/,
rules/ and edge_config/ can use the kernel without loading the service (docs/architecture.md,
"Layers").

Exceptions (all derive from :class:`GatewayError`, see :mod:`gateway.kernel.errors`):

- :class:`ConfigError` — the site configuration is invalid (carries FILE:LINE issues).
- :class:`StoreError` — the SQLite store failed (disk full, corrupt); alarms are not accepted
  and the device is not acknowledged, so it retries.
- :class:`UplinkError` — an uplink (grid case system, upstream MQTT) failed; see
  ``gateway.uplink`` for retryable vs permanent.
- and, where they are raised: ``drivers.DriverError`` (``DecodeError``, ``ProfileMisfit``),
  ``gateway.alarms.AlarmError``, ``gateway.auth.AuthError``,
  ``gateway.installer.InstallerError``, ``gateway.backup.BackupError``,
  ``gateway.telemetry.TelemetryError``, ``gateway.uplink.signing.SignatureError``.
"""

from gateway.kernel.errors import ConfigError, GatewayError, StoreError, UplinkError

__all__ = ["GatewayError", "ConfigError", "StoreError", "UplinkError", "__version__"]

__version__ = "0.1.0"
