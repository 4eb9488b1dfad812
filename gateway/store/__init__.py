"""The store: the gateway's SQLite database and everything that reads or writes it.

The rest of the gateway holds no SQL: it calls the repositories of this package.

- :mod:`.core` — :class:`Store` (WAL, one group-commit writer thread, a reader connection),
  ``COMMIT_RETRY``, :func:`lock_data_dir`, ``meta`` (:meth:`Store.get_meta`/``set_meta``).
- :mod:`.schema` — the schema in one place: the baseline (the previous release's schema,
  version 0) and the numbered migrations (``PRAGMA user_version``), run when a store opens.
- repositories, one per concern: :mod:`.alarms` (alarms, the engine's ``alarm_book``,
  history filters), :mod:`.events` (``alarm_events``: the ONE :func:`append_event`),
  :mod:`.outbox` (case messages: alarms' cases and help requests' service cases),
  :mod:`.cursors` (the notifier's, upstream's and case poller's positions), :mod:`.inbox`,
  :mod:`.cases` (case event dedup), :mod:`.devices` (test records, device faults),
  :mod:`.accounts` (users, sessions, API tokens, setup
  token), :mod:`.help` (help requests and their history), :mod:`.visits`,
  :mod:`.audit`, :mod:`.files` (online copy and integrity check, for backups).

Writers take the transaction (:data:`Tx`, the writer's connection that ``Store.write(fn)``
hands to ``fn``: several repository calls commit together); readers take the
:class:`Store`.
"""

from gateway.kernel.errors import StoreError
from gateway.store import (
    accounts,
    alarms,
    audit,
    cases,
    cursors,
    devices,
    events,
    files,
    help,
    inbox,
    outbox,
    schema,
    visits,
)
from gateway.store.audit import record_audit
from gateway.store.core import COMMIT_RETRY, Row, Store, Tx, lock_data_dir
from gateway.store.events import append_event
from gateway.store.schema import SCHEMA_VERSION

__all__ = ["COMMIT_RETRY", "SCHEMA_VERSION", "Row", "Store", "StoreError", "Tx", "accounts",
           "alarms", "append_event", "audit", "cases", "cursors", "devices", "events", "files",
           "help", "inbox", "lock_data_dir", "outbox", "record_audit", "schema", "visits"]
