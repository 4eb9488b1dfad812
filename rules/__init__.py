"""The rule engine: a pure library turning readings and time into alarm actions.

No asyncio, no sockets, no clock, no file I/O: the gateway passes ``now`` and persists
``Engine.snapshot()``. Public surface: :class:`rules.engine.Engine`, the config models in
:mod:`rules.spec`, the site view in :mod:`rules.site`, the actions in :mod:`rules.actions`,
:func:`rules.replay.replay`. Errors: bad rule files raise ``pydantic.ValidationError``; bad
calls (unknown device mode, unsupported snapshot) raise ``ValueError``.
"""
