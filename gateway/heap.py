"""``settle()``, re-exported for the gateway layer: it lives in :mod:`gateway.kernel.heap`."""

from gateway.kernel.heap import settle

__all__ = ["settle"]
