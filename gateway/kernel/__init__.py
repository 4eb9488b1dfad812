"""The kernel: the bottom layer every other part of the project stands on.

It imports nothing else of the project (only the standard library), so drivers/, rules/ and
edge_config/ can depend on it without depending on the gateway service, and the gateway
itself uses the same vocabulary. Import its modules directly:

- :mod:`gateway.kernel.model` — the normalized :class:`~gateway.kernel.model.Reading`, its
  kinds, units, qualities and severities;
- :mod:`gateway.kernel.errors` — :class:`~gateway.kernel.errors.GatewayError` and the errors
  shared across layers (every project error derives from it);
- :mod:`gateway.kernel.metrics` — :class:`~gateway.kernel.metrics.MetricsSink`, the metrics
  interface (the implementation is ``gateway.metrics.Metrics``);
- :mod:`gateway.kernel.resilience` — the one backoff, circuit breaker and rate limiter;
- :mod:`gateway.kernel.clock` — ``utc()``, ``utc_iso()``;
- :mod:`gateway.kernel.heap` — ``settle()``, keeping the collector off long-lived state.

Why inside ``gateway/``: the top-level folders are fixed, and the kernel is the gateway's
vocabulary; ``gateway/__init__.py`` imports nothing but the kernel's errors, so importing
``gateway.kernel.model`` loads the kernel only. The layers and this rule are import-linter
contracts in pyproject.toml (docs/architecture.md, "Layers").
"""
