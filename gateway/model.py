"""The reading model, re-exported for the gateway layer: it lives in
:mod:`gateway.kernel.model` (with ``utc`` from :mod:`gateway.kernel.clock`).

Below ``gateway/`` (drivers/, rules/, edge_config/) import the kernel itself; the import-linter
contracts in pyproject.toml enforce it.
"""

from gateway.kernel.model import (ACTIVITY_KINDS, ALARM_KINDS, BOOL_KINDS, DEVICE_TYPES,
                                  STR_KINDS, UNITS, Kind, Quality, Reading, Severity, Value,
                                  utc)

__all__ = ["ACTIVITY_KINDS", "ALARM_KINDS", "BOOL_KINDS", "DEVICE_TYPES", "STR_KINDS", "UNITS",
           "Kind", "Quality", "Reading", "Severity", "Value", "utc"]
