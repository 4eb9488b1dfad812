"""The one way the API's blocking work leaves the event loop: ``await blocking(fn, *args)``.

(The background components — case forwarder, status poller, notifier, upstream publisher,
decode faults — read the store on the loop by design: short indexed reads of a few rows;
their writes go through the store's writer thread.)

The gateway's event loop runs the drivers, the pipeline and the API's handlers (all
``async``). Work that blocks a thread — Argon2 hashing and verification (``gateway.auth``),
SQLite reads of the store and waits for its writer (``Store.query``, ``Store.write_sync``),
file I/O (the installer's ``devices.yaml`` edits, profiles, the console page) — is handed to
:func:`blocking`, which runs it on a small dedicated thread pool and awaits the result.

Why one dedicated pool, not ``asyncio.to_thread``:

- **bounded memory**: an Argon2id check takes 64 MiB; at most ``WORKERS`` run at once (FastAPI's
  thread pool for sync handlers allowed 40, i.e. 2.5 GiB under a burst of logins);
- **isolation**: the loop's default executor also serves other waits (the telemetry sink's
  close, the demo broker); the API's work does not queue behind them, nor they behind it;
- **one place** to see, size and name (``gateway-blocking_N`` in a thread dump) the threads
  that run the API's blocking work.

Rules for what runs here: a function given to :func:`blocking` may read the store and the
site configuration (immutable, replaced as a whole on reload) but must not touch state the
event loop owns and changes in place (``HealthBook``, ``Broadcaster``, the pipeline): the
handler reads that on the loop, before or after the call. The one reader of ``HealthBook``
off the loop is ``/metrics``'s device gauges (``HealthBook.summary``), which iterate a copy
of a dict the loop only ever replaces whole. ``Metrics`` and ``Auth`` are safe
from any thread (each guards its maps with a lock).

The context (``contextvars``) is copied into the worker, as ``asyncio.to_thread`` does. A
cancelled caller does not stop the work already running (threads cannot be interrupted); its
result is dropped.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["WORKERS", "blocking"]

P = ParamSpec("P")
T = TypeVar("T")

#: threads of the pool: like asyncio's default (CPUs + 4) but at most 8 (Argon2's memory)
WORKERS = min(8, (os.cpu_count() or 1) + 4)
_pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="gateway-blocking")


async def blocking(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn(*args, **kwargs)`` on the blocking-work pool; return (or raise) its result."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await loop.run_in_executor(_pool, call)
