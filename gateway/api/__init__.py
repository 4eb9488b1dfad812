"""HTTP API and the duty console (FastAPI), one router per area.

Every ``/api`` endpoint needs a principal (session cookie + CSRF header for changes, or a
Bearer token) holding the endpoint's permission (``gateway.auth.PERMISSIONS``), given by the
dependencies of :mod:`gateway.api.deps`. The live stream ``/api/stream`` is Server-Sent
Events: one ``alarm`` event per alarm change.

Modules: ``app`` (``create_app``), ``context`` (``ApiContext``, ``Broadcaster``), ``deps``
(context, principal, permissions), ``views`` (alarm and household JSON), and the routers:
``operations`` (/healthz /readyz /metrics), ``session`` (login, logout, me, setup),
``alarms`` (board, ack, resolve, stream), ``devices`` (health, inbox, readings, faults,
modes), ``case_callback``, ``history`` (history, CSV, households), ``admin`` (users, audit),
``installer`` (device configuration, modes, tests, checklist), ``console`` (the page).

Handlers are ``async`` and run on the event loop; their blocking work (Argon2, SQLite, file
I/O) goes through :func:`gateway.blocking.blocking`.
"""

from gateway.api.app import create_app
from gateway.api.context import ApiContext, Broadcaster, change_events
from gateway.api.views import grid_json, household_json

__all__ = ["ApiContext", "Broadcaster", "change_events", "create_app", "grid_json",
           "household_json"]
