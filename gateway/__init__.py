"""The gateway service: pipeline, alarm lifecycle, store and outbox, uplinks, API, CLI.

Exceptions (all derive from :class:`GatewayError`):

- :class:`ConfigError` — the site configuration is invalid (carries FILE:LINE issues).
- :class:`StoreError` — the SQLite store failed (disk full, corrupt); alarms are not accepted
  and the device is not acknowledged, so it retries.
- :class:`UplinkError` — an uplink (grid case system, upstream MQTT) failed; see
  ``gateway.uplink`` for retryable vs permanent.
"""

__all__ = ["GatewayError", "ConfigError", "StoreError", "UplinkError", "__version__"]

__version__ = "0.1.0"


class GatewayError(Exception):
    """Base of the gateway's own errors."""


class ConfigError(GatewayError):
    """Invalid site configuration; ``issues`` holds ``FILE:LINE: field: message`` strings."""

    def __init__(self, issues: list[str]):
        self.issues = list(issues)
        super().__init__("\n".join(self.issues) or "invalid configuration")


class StoreError(GatewayError):
    """The durable store could not commit."""


class UplinkError(GatewayError):
    """An uplink failed."""
