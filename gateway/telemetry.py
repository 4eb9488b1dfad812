"""Telemetry: readings to a time-series server, or to an embedded SQLite file by default.

Telemetry is the cheap path: it may be shed under overload, alarms never are (they take the
durable inbox path in gateway/pipeline.py and never wait for anything here).

- :class:`TelemetrySink` takes readings from the pipeline without blocking
  (``offer``), keeps them in a bounded buffer (beyond it: shed and counted,
  ``gateway_shed_total{reason="telemetry_buffer_full"}``) and writes them in batches of at
  most ``batch_lines`` (<= 5,000) from its one writer thread. A failing server keeps the
  batch at the head of the buffer and is retried with capped backoff; the buffer bounds the
  memory. The writer (its SQLite connection, its HTTP client) is used and closed by that
  thread only: at stop its close is queued behind a write still running, never run beside
  it (a stop used to close the connection under a running INSERT: a segfault).
- :class:`InfluxWriter`: influxdb-client, line protocol, gzip, to InfluxDB 2/3 (or anything
  that speaks ``/api/v2/write``, e.g. VictoriaMetrics).
- :class:`EmbeddedTelemetry`: the default when no InfluxDB is configured. A SEPARATE SQLite
  file (``DATA_DIR/telemetry.db``, WAL, ``synchronous=NORMAL``, written every
  ``embedded.flush_s``, 30 s: a power cut may lose that much telemetry and the open rollup
  buckets) so telemetry never competes with alarm commits for the store's writer or its
  fsyncs. Raw points are appended, kept ``raw_retention_h`` hours and at most
  ``max_raw_rows`` rows (oldest first); a reading equal to its series' last stored point is
  not stored again until ``raw_repeat_s`` (600 s) has passed since that point (a door that
  stays shut, a motion sensor that saw nobody, a battery at 90 %: the raw series is a step
  series, see :meth:`EmbeddedTelemetry.series`); every reading also counts in its
  ``rollup_s`` bucket (count, mean, min, max, last), kept in memory until the bucket closes,
  then written once (by series id), kept ``rollup_retention_d`` days. Everything is written in time order: an SD card's
  budget (docs/benchmarks.md, "day").

Line protocol: measurement = reading kind, tags ``site, device, device_type, household,
grid_cell, metric``, field ``value`` (float, or boolean for on/off kinds), time in ns.
String readings (door access ids, button names) are events, not telemetry: not written.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import sqlite3
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from gateway import GatewayError
from gateway.kernel.component import StateTracker
from gateway.kernel.resilience import Backoff
from gateway.metrics import Metrics
from gateway.model import Reading

__all__ = ["EmbeddedTelemetry", "InfluxWriter", "TelemetryError", "TelemetrySink", "build_sink",
           "TelemetryWriter", "to_line"]

log = logging.getLogger(__name__)


class TelemetryError(GatewayError):
    """A telemetry batch could not be written; ``retryable`` says whether to try again."""

    def __init__(self, msg: str, *, retryable: bool) -> None:
        super().__init__(msg)
        self.retryable = retryable


class TelemetryWriter(Protocol):
    def write_readings(self, readings: list[Reading]) -> None:
        """Write one batch (called from a worker thread); raise TelemetryError."""

    def close(self) -> None: ...


_TAG_ESC = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": " "})
_MEAS_ESC = str.maketrans({",": r"\,", " ": r"\ ", "\n": " "})


def to_line(r: Reading, site: str) -> str | None:
    """One reading as an InfluxDB line, or None when it is not telemetry (string, no value)."""
    v = r.value
    if v is None or isinstance(v, str):
        return None
    field = ("true" if v else "false") if isinstance(v, bool) else repr(float(v))
    tags = [("site", site), ("device", r.device_id), ("device_type", r.device_type),
            ("household", r.household_id), ("grid_cell", r.grid_cell), ("metric", r.metric)]
    tag_s = "".join(f",{k}={str(val).translate(_TAG_ESC)}" for k, val in tags if val)
    ns = int(r.ts.timestamp() * 1_000_000) * 1000
    return f"{r.kind.value.translate(_MEAS_ESC)}{tag_s} value={field} {ns}"


class InfluxWriter:
    """Synchronous writer with influxdb-client (used from the sink's worker thread).

    Also usable directly (``write(lines)``) and as a context manager.
    """

    def __init__(self, url: str, *, org: str, bucket: str, token: str | None, site: str = "",
                 gzip: bool = True, timeout_s: float = 10.0, ca_file: str | None = None):
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        # token=None: no Authorization header (the client's `token: str = None` means Optional)
        self._client = InfluxDBClient(url=url, token=token,  # type: ignore[arg-type]
                                      org=org, enable_gzip=gzip, timeout=int(timeout_s * 1000),
                                      ssl_ca_cert=ca_file or None)
        self._api = self._client.write_api(write_options=SYNCHRONOUS)
        self.bucket, self.org, self.site = bucket, org, site

    def write(self, lines: list[str]) -> None:
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError

        if not lines:
            return
        try:
            # WritePrecision's members are plain str, its annotation names the class
            self._api.write(bucket=self.bucket, org=self.org, record="\n".join(lines),
                            write_precision="ns")  # type: ignore[arg-type]
        except ApiException as exc:
            retryable = exc.status is None or exc.status >= 500 or exc.status in (408, 429)
            raise TelemetryError(f"time-series server answered {exc.status}: "
                                 f"{str(exc.reason)[:200]}", retryable=retryable) from None
        except (HTTPError, OSError) as exc:
            raise TelemetryError(f"time-series server unreachable: {type(exc).__name__}",
                                 retryable=True) from None

    def write_readings(self, readings: list[Reading]) -> None:
        self.write([ln for ln in (to_line(r, self.site) for r in readings) if ln])

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> InfluxWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Written in time order only (an SD card's budget, docs/benchmarks.md "day"): raw points are
# appended to ``points`` with no index at all (a series by its small integer id from
# ``series``: ~25 bytes a point; an index per series would dirty a page per series in every
# batch), retention by rowid; rollups keyed by bucket first, then the series id (~23 bytes
# a row; by device and metric names it was ~46), written once per closed bucket. A file made
# by an earlier version keeps its ``raw`` table (read and pruned until empty, then dropped;
# its per-series index dropped on open) and its ``rollup`` table keyed (bucket, device,
# metric) (read and pruned by retention until empty, then dropped).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (id INTEGER PRIMARY KEY, device TEXT NOT NULL,
                                   metric TEXT NOT NULL, UNIQUE (device, metric));
CREATE TABLE IF NOT EXISTS points (ts REAL NOT NULL, series INTEGER NOT NULL,
                                   value REAL NOT NULL);
DROP INDEX IF EXISTS raw_series;
CREATE TABLE IF NOT EXISTS rollups (
    bucket INTEGER NOT NULL, series INTEGER NOT NULL,
    n INTEGER NOT NULL, sum REAL NOT NULL, min REAL NOT NULL, max REAL NOT NULL,
    last REAL NOT NULL, PRIMARY KEY (bucket, series)) WITHOUT ROWID;
"""

_ROLLUP_UPSERT = (
    "INSERT INTO rollups (series, bucket, n, sum, min, max, last) "
    "VALUES (?,?,?,?,?,?,?) ON CONFLICT DO UPDATE SET n=n+excluded.n, "
    "sum=sum+excluded.sum, min=min(min, excluded.min), max=max(max, excluded.max), "
    "last=excluded.last")


def _full(exc: sqlite3.Error) -> bool:
    """The disk (or the file's size limit) is full: retrying the batch would not help."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(
        exc).lower()


class EmbeddedTelemetry:
    """Recent telemetry in its own SQLite file with downsampling and retention.

    Not thread-safe: the sink uses it (and closes it) from its one writer thread only.
    """

    def __init__(self, path: str | Path, *, raw_retention_h: float = 48.0,
                 rollup_s: int = 300, rollup_retention_d: float = 90.0,
                 max_raw_rows: int = 2_000_000, prune_every_s: float = 60.0,
                 raw_repeat_s: float = 600.0, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.raw_retention_s = raw_retention_h * 3600
        self.rollup_s = rollup_s
        self.rollup_retention_s = rollup_retention_d * 86400
        self.max_raw_rows = max_raw_rows
        self.prune_every_s = prune_every_s
        self.raw_repeat_s = raw_repeat_s
        #: by series id: time and value of its last stored raw point (-inf: none since the
        #: start); 16 bytes a series, no object per series
        self._last_ts = array("d")
        self._last_v = array("d")
        self._clock = clock
        self._last_prune = clock()
        #: rollups of the buckets still open: (series id, bucket) -> [n, sum, min, max,
        #: last]; about one entry per series (and bucket boundary) in memory
        self._open: dict[tuple[int, int], list[float]] = {}
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        # appends touch the tables' last pages only: 512 KiB of page cache, not SQLite's
        # 2 MiB default (which the appended pages would fill within minutes and keep)
        self._conn.execute("PRAGMA cache_size=-512")
        self._conn.executescript(_SCHEMA)
        self._series: dict[tuple[str, str], int] = {
            (d, m): i for i, d, m in self._conn.execute("SELECT id, device, metric FROM series")}
        #: the highest series id in ``_series`` (None: to be found again, after a rollback)
        self._top: int | None = None
        #: an earlier version's ``raw`` table, read and pruned until it is empty
        self._legacy = self._has_table("raw")
        #: an earlier version's ``rollup`` table (by device and metric), read and pruned until
        #: it is empty
        self._legacy_rollup = self._has_table("rollup")

    def _has_table(self, name: str) -> bool:
        return self._conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                                  (name,)).fetchone() is not None

    def write_readings(self, readings: list[Reading]) -> None:
        """Append the batch's raw points and fold them into their rollup buckets, kept in
        memory until a bucket has closed (``bucket + rollup_s`` passed by the clock), then
        written once: one transaction. A raw point is stored when its value differs from
        the series' last stored one, or ``raw_repeat_s`` after that one (every reading
        counts in the rollups all the same). A power cut loses the open buckets' rollups
        (at most ``rollup_s``) and the batch not yet written, never an alarm. A batch that
        fails changes nothing here (its retry counts nowhere twice)."""
        series = self._series
        got: list[tuple[float, int, float]] = []     # (time, series id, value)
        new: list[tuple[int, tuple[str, str]]] = []  # (index in got, series) not yet made
        for r in readings:
            v = r.value
            if v is None or isinstance(v, str):
                continue
            key = (r.device_id, r.metric)
            sid = series.get(key, -1)
            if sid < 0:
                new.append((len(got), key))
            got.append((r.ts.timestamp(), sid, float(v)))
        closed = self._closed(self._clock())
        if not got and not closed:
            return
        undo: list[tuple[int, float, float]] = []
        made: list[tuple[str, str]] = []
        try:
            with self._conn:  # one transaction per batch, its new series with it
                self._conn.execute("BEGIN")
                if new:
                    made = self._make_series([key for _i, key in new])
                    for i, key in new:
                        ts, _sid, v = got[i]
                        got[i] = (ts, series[key], v)
                self._conn.executemany("INSERT INTO points VALUES (?,?,?)",
                                       self._changed(got, undo))
                if closed:
                    self._conn.executemany(_ROLLUP_UPSERT, closed)
        except BaseException as exc:
            for key in made:    # rolled back with the batch (their ids may come again)
                series.pop(key, None)
            self._top = None
            for sid, ts, v in reversed(undo):
                self._last_ts[sid], self._last_v[sid] = ts, v
            for sid, b, n, total, lo, hi, last in closed:   # not written: keep them
                self._fold((sid, b), [n, total, lo, hi, last])
            if isinstance(exc, sqlite3.Error):
                raise TelemetryError(f"telemetry.db: {exc}", retryable=not _full(exc)) from None
            raise
        self._fold_batch(got)
        if self._clock() - self._last_prune >= self.prune_every_s:
            try:
                self.prune()
            except sqlite3.Error as exc:   # the batch is stored: retention tries again later
                log.error("telemetry.db: pruning failed: %s", exc)

    def _make_series(self, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Ids for new series (device, metric), in the caller's transaction; the series
        made (to be forgotten if that transaction fails)."""
        top = self._top
        if top is None:     # not the whole dict's max per batch: a first drain makes many
            top = max(self._series.values(), default=0)
        self._conn.executemany("INSERT OR IGNORE INTO series (device, metric) VALUES (?, ?)",
                               keys)
        made = {(d, m): i for i, d, m in self._conn.execute(
            "SELECT id, device, metric FROM series WHERE id > ?", (top,))}
        if any(k not in made and k not in self._series for k in keys):   # (never: ours alone)
            raise sqlite3.OperationalError("a new series got no id")
        self._series.update(made)
        self._top = max(made.values(), default=top)
        return list(made)

    def _fold_batch(self, got: list[tuple[float, int, float]]) -> None:
        """Count a written batch in its rollup buckets (still open ones in memory)."""
        step, open_ = self.rollup_s, self._open
        for ts, sid, fv in got:
            key = (sid, int(ts // step) * step)
            agg = open_.get(key)
            if agg is None:
                open_[key] = [1, fv, fv, fv, fv]
            else:
                agg[0] += 1
                agg[1] += fv
                if fv < agg[2]:
                    agg[2] = fv
                if fv > agg[3]:
                    agg[3] = fv
                agg[4] = fv

    def _changed(self, got: list[tuple[float, int, float]],
                 undo: list[tuple[int, float, float]]) -> list[tuple[float, int, float]]:
        """The raw points to store of ``got``: a value that differs from its series' last
        stored point, or the same value ``raw_repeat_s`` after it. ``undo`` gets each
        series' previous last point (restored when the transaction fails)."""
        out = []
        last_ts, last_v, repeat = self._last_ts, self._last_v, self.raw_repeat_s
        for row in got:
            ts, sid, v = row
            if sid >= len(last_ts):
                grow = array("d", [-math.inf]) * (sid + 1 - len(last_ts))
                last_ts.extend(grow)
                last_v.extend(grow)
            if v == last_v[sid] and ts - last_ts[sid] < repeat:
                continue
            undo.append((sid, last_ts[sid], last_v[sid]))
            last_ts[sid], last_v[sid] = ts, v
            out.append(row)
        return out

    def _closed(self, now: float, everything: bool = False) -> list[tuple]:
        """Take the rollups of the buckets that have closed (all with ``everything``) out of
        memory, as rows for ``_ROLLUP_UPSERT`` (series id, bucket, n, sum, min, max, last),
        oldest bucket first."""
        step = self.rollup_s
        done = [k for k in self._open if everything or k[1] + step <= now]
        return [(*k, *self._open.pop(k)) for k in sorted(done, key=lambda k: k[1])]

    def _fold(self, key: tuple[int, int], agg: list[float]) -> None:
        have = self._open.get(key)
        if have is None:
            self._open[key] = agg
            return
        self._open[key] = [have[0] + agg[0], have[1] + agg[1], min(have[2], agg[2]),
                           max(have[3], agg[3]), have[4]]

    def flush_rollups(self) -> None:
        """Write the open buckets' rollups as they are (at close, and before a query); a
        later part of the same bucket is added to the row."""
        closed = self._closed(self._clock(), everything=True)
        if closed:
            try:
                with self._conn:
                    self._conn.execute("BEGIN")
                    self._conn.executemany(_ROLLUP_UPSERT, closed)
            except sqlite3.Error:
                for sid, b, n, total, lo, hi, last in closed:   # not written: keep them
                    self._fold((sid, b), [n, total, lo, hi, last])
                raise

    def prune(self) -> dict[str, int]:
        """Apply retention and the row bound; returns rows deleted per table. Points are
        appended in arrival order, so both are a rowid range (no index to keep)."""
        now = self._clock()
        self._last_prune = now
        c = self._conn
        lo, hi = c.execute("SELECT min(rowid), max(rowid) FROM points").fetchone()
        raw = 0
        if hi is not None:
            cut = max(self._first_at(lo, hi, now - self.raw_retention_s),
                      hi - self.max_raw_rows + 1)
            raw = c.execute("DELETE FROM points WHERE rowid < ?", (cut,)).rowcount
        if self._legacy:
            n, self._legacy = self._prune_legacy("raw", "ts", now - self.raw_retention_s)
            raw += n
        roll = c.execute("DELETE FROM rollups WHERE bucket < ?",
                         (now - self.rollup_retention_s,)).rowcount
        if self._legacy_rollup:
            n, self._legacy_rollup = self._prune_legacy("rollup", "bucket",
                                                        now - self.rollup_retention_s)
            roll += n
        return {"raw": raw, "rollup": roll}

    def _prune_legacy(self, table: str, column: str, before: float) -> tuple[int, bool]:
        """An earlier version's ``table``: its rows older than ``before`` deleted, the table
        dropped once it is empty. Returns the rows deleted and whether the table is left."""
        c = self._conn
        deleted = c.execute(f"DELETE FROM {table} WHERE {column} < ?", (before,)).rowcount
        if c.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None:
            return deleted, True
        c.execute(f"DROP TABLE {table}")
        return deleted, False

    def _first_at(self, lo: int, hi: int, ts: float) -> int:
        """The first rowid whose point is at ``ts`` or later (``hi + 1``: none), by bisection
        over the rowids (points come in time order, give or take a device's clock)."""
        c = self._conn
        while lo <= hi:
            mid = (lo + hi) // 2
            row = c.execute("SELECT rowid, ts FROM points WHERE rowid >= ? ORDER BY rowid "
                            "LIMIT 1", (mid,)).fetchone()
            if row is None or row[1] >= ts:
                hi = mid - 1
            else:
                lo = row[0] + 1
        return lo

    def series(self, device: str, metric: str, since: float, until: float | None = None,
               *, rollup: bool = False) -> list[tuple]:
        """Raw ``(ts, value)`` points, or rollup ``(bucket, n, mean, min, max, last)`` rows.
        Raw points are not indexed by series: this reads the file's points (tools, tests).

        The raw series is a step series: a point is a reading whose value differed from the
        point before it, or repeated it ``raw_repeat_s`` after it; the value holds from a
        point to the next. No point for longer than ``raw_repeat_s`` (plus the device's
        reporting interval) means no reading came (a silent device, the gateway down);
        readings in between that repeated the value are counted in the rollups only."""
        until = self._clock() + 1e9 if until is None else until
        if rollup:
            return self._rollups(device, metric, int(since // self.rollup_s) * self.rollup_s,
                                 until)
        out = [tuple(r) for r in self._conn.execute(
            "SELECT ts, value FROM raw WHERE device=? AND metric=? AND ts >= ? AND ts < ?",
            (device, metric, since, until))] if self._legacy else []
        sid = self._series.get((device, metric))
        if sid is not None:
            out += [tuple(r) for r in self._conn.execute(
                "SELECT ts, value FROM points WHERE series=? AND ts >= ? AND ts < ?",
                (sid, since, until))]
        return sorted(out)

    def _rollups(self, device: str, metric: str, since: int, until: float) -> list[tuple]:
        self.flush_rollups()
        sid = self._series.get((device, metric))
        rows = [] if sid is None else self._conn.execute(
            "SELECT bucket, n, sum, min, max, last FROM rollups WHERE series=? AND bucket >= ? "
            "AND bucket < ?", (sid, since, until)).fetchall()
        if self._legacy_rollup:   # older first: a bucket in both tables was begun there
            rows = self._conn.execute(
                "SELECT bucket, n, sum, min, max, last FROM rollup WHERE device=? AND metric=? "
                "AND bucket >= ? AND bucket < ?", (device, metric, since, until)).fetchall() + rows
        merged: dict[int, list] = {}
        for bucket, n, total, lo, hi, last in rows:
            have = merged.get(bucket)
            merged[bucket] = [n, total, lo, hi, last] if have is None else [
                have[0] + n, have[1] + total, min(have[2], lo), max(have[3], hi), last]
        return [(b, n, total / n, lo, hi, last)
                for b, (n, total, lo, hi, last) in sorted(merged.items())]

    def counts(self) -> dict[str, int]:
        raw = self._conn.execute("SELECT count(*) FROM points").fetchone()[0]
        if self._legacy:
            raw += self._conn.execute("SELECT count(*) FROM raw").fetchone()[0]
        roll = self._conn.execute("SELECT count(*) FROM rollups").fetchone()[0]
        if self._legacy_rollup:
            roll += self._conn.execute("SELECT count(*) FROM rollup").fetchone()[0]
        return {"raw": raw, "rollup": roll}

    def close(self) -> None:
        try:
            self.flush_rollups()
        except sqlite3.Error as exc:
            log.warning("telemetry.db: open rollup buckets not written at close: %s", exc)
        self._conn.close()


class TelemetrySink:
    """Bounded buffer in front of a writer; ``offer`` never blocks. ``run()`` until cancelled."""

    def __init__(self, writer: TelemetryWriter, metrics: Metrics, *, name: str,
                 buffer_lines: int = 100_000, batch_lines: int = 5000, flush_s: float = 1.0,
                 stop_wait_s: float = 5.0):
        if not 1 <= batch_lines <= 5000:
            raise ValueError("batch_lines must be within 1..5000")
        self.writer = writer
        self.metrics = metrics
        self.name = name
        self.batch_lines = batch_lines
        self.flush_s = flush_s
        self.stop_wait_s = stop_wait_s     # at stop: how long to wait for a running write
        self._buf: deque[Reading] = deque()
        self._max = buffer_lines
        self._ready = asyncio.Event()
        self._backoff = Backoff(base_s=0.5, cap_s=30.0)
        self.status = StateTracker(f"telemetry {name}:", "ok", logger=log)
        self.written = 0
        metrics.gauge("gateway_telemetry_buffer", lambda: len(self._buf),
                      "telemetry readings waiting to be written")

    def offer(self, reading: Reading) -> None:
        if reading.value is None or isinstance(reading.value, str):
            return
        if len(self._buf) >= self._max:
            self.metrics.inc("gateway_shed_total", reason="telemetry_buffer_full")
            return
        self._buf.append(reading)
        if len(self._buf) >= self.batch_lines:
            self._ready.set()

    async def run(self) -> None:
        """Write batches until cancelled; then close the writer (on its thread, after the
        write in flight, waiting at most ``stop_wait_s`` for that)."""
        worker = _WriterThread(self.writer, self.name)
        failures = 0
        try:
            while True:
                if len(self._buf) < self.batch_lines:
                    try:
                        async with asyncio.timeout(self.flush_s):
                            await self._ready.wait()
                    except TimeoutError:
                        pass
                self._ready.clear()
                while self._buf:
                    batch = [self._buf[i] for i in range(min(self.batch_lines,
                                                             len(self._buf)))]
                    try:
                        await worker.write(batch)
                    except TelemetryError as exc:
                        self.metrics.inc("gateway_telemetry_errors_total", sink=self.name,
                                         retryable=str(exc.retryable).lower())
                        if not exc.retryable:   # the server refused this batch: drop it, counted
                            self._drop(len(batch), "telemetry_refused")
                            self.status.set(f"refused: {exc}")
                            continue
                        failures += 1
                        self.status.set(f"retrying: {exc}")
                        await asyncio.sleep(self._backoff.delay(min(failures - 1, 30)))
                        continue
                    self._drop(len(batch), None)
                    failures = 0
                    self.status.set("ok")
        finally:
            await worker.close(self.stop_wait_s)

    def _drop(self, n: int, shed_reason: str | None) -> None:
        for _ in range(n):
            self._buf.popleft()
        if shed_reason:
            self.metrics.inc("gateway_shed_total", n, reason=shed_reason)
        else:
            self.written += n
            self.metrics.inc("gateway_telemetry_written_total", n, sink=self.name)

    @property
    def state(self) -> str:
        """``ok``, ``retrying: <error>`` or ``refused: <error>`` (the health endpoint shows it)."""
        return self.status.value


class _WriterThread:
    """The one thread that uses a writer: its batches, then its close, in that order.

    Cancelling the coroutine that awaits a write does not stop the write (a thread cannot be
    interrupted); so the close is queued behind it on the same thread instead of being run
    beside it, and a SQLite connection or HTTP client is never closed under a running call.
    A daemon thread: a write hanging on a dead server does not hold up the process's exit.
    """

    def __init__(self, writer: TelemetryWriter, name: str) -> None:
        self.writer, self.name = writer, name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._work, name=f"telemetry-writer[{name}]",
                                        daemon=True)
        self._thread.start()

    def write(self, batch: list[Reading]) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self._jobs.put((batch, fut))
        return fut

    async def close(self, wait_s: float) -> None:
        """Queue the close behind any write; wait up to ``wait_s`` for both to be done."""
        self._jobs.put(None)
        if not await asyncio.to_thread(self._closed.wait, wait_s):
            log.warning("telemetry %s: a write still runs %.0f s after stop; its thread "
                        "closes the writer when it ends", self.name, wait_s)

    def _work(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                batch, fut = job
                exc: BaseException | None = None
                try:
                    self.writer.write_readings(batch)
                except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
                    exc = e
                try:
                    fut.get_loop().call_soon_threadsafe(_settle, fut, exc)
                except RuntimeError:     # the loop is closed: nobody waits for this any more
                    pass
        finally:
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001 - a failing close must not hide the stop
                log.exception("telemetry %s: closing the writer failed", self.name)
            self._closed.set()


def _settle(fut: asyncio.Future, exc: BaseException | None) -> None:
    if fut.done():               # the awaiting task was cancelled (the stop)
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)


def build_sink(cfg, data_dir: Path, metrics: Metrics, site_id: str,
               secret: Callable[[object, str], str]) -> TelemetrySink | None:
    """The sink for ``uplinks.yaml`` ``telemetry`` (edge_config.schema.TelemetryConfig):
    InfluxDB when configured, else the embedded SQLite file; None when disabled."""
    if not cfg.enabled:
        return None
    writer: TelemetryWriter
    if cfg.influxdb is not None:
        ix = cfg.influxdb
        token = secret(ix.token, "telemetry.influxdb.token") if ix.token else None
        writer = InfluxWriter(ix.url, org=ix.org, bucket=ix.bucket, token=token, site=site_id,
                              timeout_s=ix.timeout_s, ca_file=ix.ca_file)
        name = "influxdb"
    else:
        e = cfg.embedded
        writer = EmbeddedTelemetry(Path(data_dir) / "telemetry.db",
                                   raw_retention_h=e.raw_retention_h, rollup_s=e.rollup_s,
                                   rollup_retention_d=e.rollup_retention_d,
                                   max_raw_rows=e.max_raw_rows, raw_repeat_s=e.raw_repeat_s)
        name = "embedded"
    return TelemetrySink(writer, metrics, name=name, buffer_lines=cfg.buffer_lines,
                         batch_lines=cfg.batch_lines,
                         flush_s=cfg.flush_s if cfg.influxdb is not None else _embedded_flush_s(cfg))


def _embedded_flush_s(cfg) -> float:
    """``embedded.flush_s`` where it is written; else the section's ``flush_s`` where that is
    written (sites written before ``embedded.flush_s`` existed); else 30 s (the default)."""
    if "flush_s" in cfg.embedded.model_fields_set or "flush_s" not in cfg.model_fields_set:
        return cfg.embedded.flush_s
    return cfg.flush_s
