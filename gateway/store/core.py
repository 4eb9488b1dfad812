"""The durable store: one SQLite database in WAL mode with ``synchronous=FULL``.

All writes go through one writer thread. Callers submit a function ``fn(conn) -> result``
with :meth:`Store.write`; the writer runs every function queued at that moment inside one
transaction (group commit: while one fsync is running the next batch forms), each within its
own SAVEPOINT so one failing function does not undo the others. ``write`` returns only after
the transaction is durably committed. Reads use a separate connection (WAL readers never
block the writer).

The schema and its migrations are in :mod:`gateway.store.schema` (run by :meth:`Store.open`);
what is read and written, table by table, in the repositories of this package.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import shutil
import sqlite3
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from gateway.kernel.errors import StoreError
from gateway.kernel.resilience import Backoff
from gateway.store.audit import record_audit
from gateway.store.schema import SCHEMA_VERSION, migrate

__all__ = ["COMMIT_RETRY", "Row", "Store", "SCHEMA_VERSION", "Tx", "lock_data_dir"]

log = logging.getLogger(__name__)
T = TypeVar("T")
#: What a write function gets (``Store.write(fn)``: ``fn(tx)``) and hands to the
#: repositories: the writer's connection, inside the group's transaction.
Tx = sqlite3.Connection
#: A row read inside a transaction (by column name: ``row["id"]``).
Row = sqlite3.Row

#: the last held-through commits (their fsync) this long at most, by their median, and a write
#: that holds the event loop (``Store.write``'s ``hold_s``) holds it until its result; else
#: only until it has run
FAST_COMMIT_S = 0.002

#: How a caller whose write failed (``StoreError``: disk full, I/O error) retries it:
#: 0.05 s, doubling, at most 5 s, no jitter (one writer, nobody to fall in step with).
COMMIT_RETRY = Backoff(base_s=0.05, cap_s=5.0, jitter="none")


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    # The group commit runs each write inside a SAVEPOINT, so SQLite keeps the original of
    # every page a write changes in a statement sub-journal (to undo that write alone). By
    # default that is a temporary file (/var/tmp/etilqs_*): ~170 MB a day of disk writes for
    # the engine snapshot alone (docs/benchmarks.md, "day"). In memory it is at most the
    # pages one batch changes, freed at its commit.
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


class Store:
    """The gateway's SQLite store. Use as ``async with Store(path) as store``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._queue: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        # guards _thread/_reader against close(): nothing is queued behind the writer's stop,
        # and the reader is closed only once no query (API threads ...) runs on it
        self._gate = threading.Condition()
        self._reads = 0           # queries running on the reader connection
        self.commits = 0          # transactions committed (for metrics and benchmarks)
        self.writes = 0           # functions committed
        self.last_error: str | None = None   # last commit failure (disk full ...), for health
        self.disk_full = False    # the last commit failed because the disk is full
        self.commit_failures = 0  # transactions that could not commit (for metrics)
        self.held = 0             # writes that held the event loop (``write``'s ``hold_s``)
        #: how long the last COMMITs of writes that held the loop through their result took
        #: (seconds; mostly their fsync): their median decides (``commit_s``), so that one
        #: slow fsync does not end the holding
        self.commits_s: collections.deque[float] = collections.deque(maxlen=9)
        #: the writer is in a batch (a write then does not hold the loop: it would wait for
        #: that batch's fsync)
        self._busy = False

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self.path)
        try:
            new = conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is None
            found, now = migrate(conn)
        except BaseException:
            conn.close()
            raise
        if found != now and not new:
            log.info("store %s: schema upgraded from version %d to %d", self.path, found, now)
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('instance_id', ?)",
                     (uuid.uuid4().hex[:12],))
        self._thread = threading.Thread(target=self._writer, args=(conn,),
                                        name=f"store-writer[{self.path.name}]", daemon=True)
        self._thread.start()
        self._reader = _connect(self.path)

    def close(self, wait_s: float = 2.0) -> None:
        """Commit what is queued and stop the writer; close the reader once no query runs on
        it (threads of the API may still be reading; after ``wait_s`` it is left open for
        the process's exit rather than closed under them). Later calls: StoreError."""
        with self._gate:
            thread, self._thread = self._thread, None
            reader, self._reader = self._reader, None
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            thread.join(timeout=30)
        if reader is not None:
            with self._gate:
                idle = self._gate.wait_for(lambda: self._reads == 0, timeout=wait_s)
            if idle:
                reader.close()
            else:
                log.warning("store: %d queries still running %.0f s after close; their "
                            "connection is left open", self._reads, wait_s)

    async def __aenter__(self) -> Store:
        self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def free_bytes(self) -> int:
        """Free bytes on the store's filesystem (-1 when it cannot be read)."""
        try:
            return shutil.disk_usage(self.path.parent).free
        except OSError:
            return -1

    @property
    def instance_id(self) -> str:
        return self.get_meta("instance_id") or "unknown"

    # -- writing ---------------------------------------------------------------------
    def _writer(self, conn: sqlite3.Connection) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < 2000:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit_batch(conn, batch)
        conn.close()

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[tuple]) -> None:
        self._busy = True
        try:
            self._commit_batch_busy(conn, batch)
        finally:
            _ran(batch, ended=True)
            self._busy = False

    def _commit_batch_busy(self, conn: sqlite3.Connection, batch: list[tuple]) -> None:
        results: list[tuple[Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, _done in batch:
                conn.execute("SAVEPOINT w")
                try:
                    res = fn(conn)
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK TO w")
                    conn.execute("RELEASE w")
                    if _is_disk_error(exc):
                        raise
                    results.append((None, StoreError(f"store: {exc}")))
                    continue
                except Exception as exc:  # noqa: BLE001 - handed back to the caller, not hidden
                    conn.execute("ROLLBACK TO w")
                    conn.execute("RELEASE w")
                    results.append((None, exc))
                    continue
                conn.execute("RELEASE w")
                results.append((res, None))
            _ran(batch)           # the loop may go on: the fsync needs no GIL
            t0 = time.perf_counter()
            conn.execute("COMMIT")
            if any(isinstance(d, _AsyncDone) and d.through for _fn, d in batch):
                # measured while the loop is held: the commit itself, not a wait for the GIL
                self.commits_s.append(time.perf_counter() - t0)
            self._busy = False    # (before the results: a caller's next write may hold)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.commit_failures += 1
            full = (getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
                    or "full" in str(exc).lower())
            if full and not self.disk_full:   # health is state: log the transition once
                log.error("store: disk full at %s (%d bytes free); alarm-class messages are "
                          "not acknowledged until space is freed", self.path.parent,
                          self.free_bytes())
            self.disk_full = full
            log.error("store commit failed (%d writes not accepted): %s", len(batch), exc)
            self._busy = False
            err = StoreError(f"store commit failed: {exc}")
            _deliver([(done, None, err) for _fn, done in batch])
            return
        self.commits += 1
        self.writes += len(batch)
        if self.disk_full:
            log.warning("store: commits succeed again (disk space is back)")
        self.last_error = None
        self.disk_full = False
        _deliver([(done, res, exc) for (_fn, done), (res, exc) in zip(batch, results)])

    @property
    def commit_s(self) -> float:
        """The median of the last held-through COMMITs' durations (0 before any)."""
        return statistics.median(self.commits_s) if self.commits_s else 0.0

    async def write(self, fn: Callable[[sqlite3.Connection], T], *, hold_s: float = 0.0) -> T:
        """Run ``fn`` in the writer's transaction; return its result once durably committed.

        ``hold_s`` (an alarm's commit): when the writer is idle, hold the event loop at most
        this long, then wait as usual: until the result while the recent commits were fast
        (their fsync under :data:`FAST_COMMIT_S`), else until ``fn`` and the batch's other
        writes have run (the fsync, which needs no GIL, then runs while the loop goes on: an
        SD card's takes tens of ms). While the loop runs, the writer thread waits for the GIL
        at each SQLite call (up to the switch interval each time): an alarm's commit that
        takes ~0.5 ms alone took 5 ms (median) to 33 ms under the intake's load
        (docs/benchmarks.md, "path", sixth round)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        hold = hold_s > 0 and not self._busy
        # through the result while commits are fast; on a slow disk every 16th held write
        # still goes through, to measure the commit again with the GIL to itself
        through = hold and (self.commit_s < FAST_COMMIT_S or self.held % 16 == 15)
        done = _AsyncDone(loop, fut, threading.Event() if hold else None, through=through)
        with self._gate:
            if self._thread is None:
                raise StoreError("store is closed")
            self._queue.put((fn, done))
        if done.ready is not None:
            self.held += 1
            if done.ready.wait(hold_s) and done.box is not None:
                _settle(fut, *done.box)
        return await fut

    def write_sync(self, fn: Callable[[sqlite3.Connection], T], timeout: float = 30) -> T:
        """Blocking variant for code outside the event loop (CLI, tests)."""
        ev = threading.Event()
        box: list = []

        def done(res: Any, exc: BaseException | None) -> None:
            box.append((res, exc))
            ev.set()

        with self._gate:
            if self._thread is None:
                raise StoreError("store is closed")
            self._queue.put((fn, done))
        if not ev.wait(timeout):
            raise StoreError("store write timed out")
        res, exc = box[0]
        if exc is not None:
            raise exc
        return res

    # -- reading ---------------------------------------------------------------------
    def query(self, sql: str, params: tuple | dict = ()) -> list[dict]:
        with self._gate:
            reader = self._reader
            if reader is None:
                raise StoreError("store is closed")
            self._reads += 1
        try:
            return [dict(r) for r in reader.execute(sql, params).fetchall()]
        finally:
            with self._gate:
                self._reads -= 1
                if not self._reads:
                    self._gate.notify_all()

    def query_one(self, sql: str, params: tuple | dict = ()) -> dict | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def get_meta(self, key: str) -> Any:
        """The value (text, or bytes where bytes were set), None when not set."""
        row = self.query_one("SELECT value FROM meta WHERE key=?", (key,))
        return row["value"] if row else None

    async def set_meta(self, key: str, value: str | bytes) -> None:
        await self.write(lambda c: c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                             (key, value)))

    async def audit(self, actor: str, action: str, target: str = "", **detail: Any) -> None:
        await self.write(lambda c: record_audit(c, actor, action, target, **detail))


def lock_data_dir(data_dir: Path):
    """Hold an exclusive lock on ``data_dir`` for as long as the returned file stays open.

    The running gateway holds it, so a second gateway on the same data, or ``gateway
    restore`` into it, is refused instead of corrupting it. Returns None when the lock is
    held by another process.
    """
    import fcntl

    data_dir.mkdir(parents=True, exist_ok=True)
    fh = open(data_dir / "gateway.lock", "a+")  # noqa: SIM115 - lifetime is the caller's
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


class _AsyncDone:
    """Where the result of an async ``write`` goes (settled in bulk per event loop)."""

    __slots__ = ("box", "fut", "loop", "ready", "through")

    def __init__(self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future,
                 ready: threading.Event | None = None, *, through: bool = False) -> None:
        self.loop, self.fut = loop, fut
        #: a caller holding the loop (``hold_s``): set once the batch's writes have run, or
        #: (``through``) once ``box`` holds the result
        self.ready = ready
        self.through = through
        self.box: tuple[Any, BaseException | None] | None = None


def _ran(batch: list[tuple], *, ended: bool = False) -> None:
    """The batch's writes have run: release the callers holding the loop until then (and,
    ``ended``, every caller: a batch that ended without a result for them)."""
    for _fn, done in batch:
        if (isinstance(done, _AsyncDone) and done.ready is not None
                and (ended or not done.through)):
            done.ready.set()


def _deliver(items: list[tuple[Any, Any, BaseException | None]]) -> None:
    """Hand results back: ONE wake-up per event loop per batch (call_soon_threadsafe
    writes to the loop's self-pipe; once per write would cost a syscall per record)."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for done, res, exc in items:
        if isinstance(done, _AsyncDone):
            if done.ready is not None and done.through:
                done.box = (res, exc)
                done.ready.set()
            by_loop.setdefault(done.loop, []).append((done.fut, res, exc))
        else:
            done(res, exc)
    for loop, settles in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_many, settles)
        except RuntimeError:   # that loop is closed: nobody is waiting any more
            pass


def _settle_many(settles: list) -> None:
    for fut, res, exc in settles:
        _settle(fut, res, exc)


def _settle(fut: asyncio.Future, res: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(res)


def _is_disk_error(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "disk" in text or "full" in text or "i/o" in text or "readonly" in text
