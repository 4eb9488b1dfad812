"""The metrics interface the layers below the gateway count through.

Part of the kernel (:mod:`gateway.kernel`): imports nothing else of the project. Drivers (and
anything else below ``gateway/``) take a :class:`MetricsSink` and never import the
implementation, ``gateway.metrics.Metrics`` (Prometheus text at ``/metrics``), which the
gateway passes in. tests/test_layers.py checks that the implementation satisfies it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["MetricKey", "MetricsSink"]

#: A counter's key: its name and its labels as sorted ``(name, value)`` pairs.
MetricKey = tuple[str, tuple[tuple[str, str], ...]]


@runtime_checkable
class MetricsSink(Protocol):
    """Counters and latency histograms by name and labels."""

    #: The counters themselves, for one hot path only (the MQTT intake adds to a key it made
    #: once, without the label sort of :meth:`inc`): a missing key counts from 0. Allowed on
    #: the event loop's thread only, for a key no other thread changes (see
    #: ``gateway.metrics``); everything else calls :meth:`inc`.
    counters: dict[MetricKey, float]

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` to the counter ``name{labels}`` (safe from any thread)."""

    def observe(self, name: str, seconds: float) -> None:
        """Record one latency of ``seconds`` in the histogram ``name``."""
