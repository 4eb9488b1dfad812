"""The pipeline between drivers and the alarm book.

Two paths, so that alarms never wait behind telemetry:

- **alarm-class** readings (SOS, smoke, gas, ...) are written to the store's ``inbox`` in a
  group commit and only then acknowledged to the device (MQTT PUBACK). If the commit fails
  (disk full), they are kept in memory unacknowledged and retried; the broker still holds them.
  After the commit they are fed to the rule engine, and the resulting alarm changes are
  committed together with marking the inbox rows processed. On start-up, inbox rows not yet
  processed are fed again, so a crash between acknowledgement and alarm loses nothing.
  A restore that changes nothing (a Zigbee2MQTT sensor sends ``tamper: false`` in every
  report; no alarm or fault of it is open) goes with the telemetry while nothing of its
  device is on this way (``Pipeline._restates``): there is nothing in it to lose.
- **telemetry** goes through a bounded in-memory queue; when it is full the reading is shed
  and counted (``gateway_shed_total``).
- readings a :class:`DurableWriter` takes (a help key press: ``gateway.help_requests``) go
  the alarm-class way, and the writer records them (the help request) in the SAME
  transaction as their inbox rows: acknowledged only once saved, never written twice (a
  recovered inbox row is fed to the engine only).

``gateway_readings_total{kind}`` counts readings as they are fed to the rule engine;
``gateway_readings_processed_total`` counts them once the alarm changes they made are
committed (what the ``path`` benchmark waits for).

The rule engine is synchronous and only touched from the event loop thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import lzma
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway import StoreError
from gateway.alarms import AlarmBook
from gateway.metrics import Metrics
from gateway.model import Kind, Reading, utc
from gateway.store import COMMIT_RETRY, Store, Tx, inbox

__all__ = ["DurableWriter", "Pipeline"]

log = logging.getLogger(__name__)
#: seconds of telemetry fed to the rules per turn of the event loop at most
TELEMETRY_SLICE_S = 0.005
#: an alarm-class commit (the inbox's, the alarm changes') holds the event loop this long
#: at most, so that the store's writer thread runs without waiting for the GIL
#: (``Store.write``'s ``hold_s``); then it is awaited as any other write
ALARM_HOLD_S = 0.02


class DurableWriter(Protocol):
    """Readings that are acknowledged only once something of their own is saved."""

    def takes(self, reading: Reading) -> bool:
        """Whether ``reading`` is one of this writer's (it then goes the durable way)."""
        ...

    def write(self, conn: Tx, readings: list[Reading]) -> Any:
        """Record ``readings`` in the inbox's transaction (run again if the commit is
        retried); must not raise for a reading it cannot take (log and skip it)."""
        ...

    def committed(self, written: Any) -> None:
        """After the commit, before the acknowledgement: what :meth:`write` returned."""
        ...


@dataclass(slots=True)
class _Pending:
    readings: list[Reading]
    ack: Callable[[], None] | None
    received: float = field(default_factory=time.monotonic)


#: the counter of readings fed to the rules, by kind (its key per kind, made once)
_READINGS_KEY = {k: ("gateway_readings_total", (("kind", k.value),)) for k in Kind}


class Pipeline:
    """Owns the durable intake, the rule engine's feed/tick loop and engine snapshots."""

    def __init__(self, store: Store, engine, book: AlarmBook, metrics: Metrics, *,
                 telemetry_queue: int = 20_000, tick_s: float = 1.0,
                 snapshot_every_s: float = 30.0,
                 on_reading: Callable[[Reading], None] | None = None,
                 writers: Sequence[DurableWriter] = ()):
        self.store = store
        self.engine = engine
        self.book = book
        self.metrics = metrics
        self.tick_s = tick_s
        self.snapshot_every_s = snapshot_every_s
        self.on_reading = on_reading or (lambda r: None)
        self.writers = tuple(writers)
        self._durable: list[_Pending] = []
        self._durable_ready = asyncio.Event()
        #: an alarm's inbox commit or its rules' apply is under way (``alarm_work``)
        self._alarm_busy = 0
        #: device -> its readings offered or recovered the durable way and not yet applied
        self._in_flight: dict[str, int] = {}
        self._alarm_q: asyncio.Queue[tuple[list[int], list[Reading], float]] = asyncio.Queue()
        self._telemetry_q: asyncio.Queue[Reading] = asyncio.Queue(maxsize=telemetry_queue)
        self._work = asyncio.Event()
        self.last_tick = 0.0
        metrics.gauge("gateway_telemetry_queue_depth", lambda: self._telemetry_q.qsize(),
                      "readings waiting for the rule engine")
        metrics.gauge("gateway_alarm_queue_depth",
                      lambda: self._alarm_q.qsize() + len(self._durable),
                      "alarm-class readings waiting for commit or rules")

    # -- intake (called from driver callbacks on the loop thread) ---------------------
    def offer(self, readings: list[Reading], ack: Callable[[], None] | None,
              durable: bool = False) -> None:
        """``durable``: every reading goes through the inbox commit before ``ack`` (a source
        that resends until acknowledged and whose every event matters, e.g. an alarm
        receiver); otherwise only alarm-class readings do and telemetry is acked at once."""
        alarm: list[Reading] = []
        telemetry: list[Reading] = []
        if durable:
            alarm = list(readings)
        else:
            for r in readings:      # one pass: the hot path of telemetry
                (alarm if r.is_alarm_class or self._kept(r) else telemetry).append(r)
            q = self._telemetry_q
            if (alarm and (q.maxsize <= 0 or q.qsize() + len(alarm) + len(telemetry)
                           <= q.maxsize) and self._restates(alarm)):
                telemetry = alarm + telemetry       # in the message's order: alarm-class first
                alarm = []
        for r in telemetry:
            try:
                self._telemetry_q.put_nowait(r)
            except asyncio.QueueFull:
                self.metrics.inc("gateway_shed_total", reason="telemetry_queue_full")
        if alarm:
            flight = self._in_flight
            for r in alarm:
                flight[r.device_id] = flight.get(r.device_id, 0) + 1
            self._durable.append(_Pending(alarm, ack))
            self._durable_ready.set()
        elif ack is not None:
            ack()
        self._work.set()

    def alarm_work(self) -> bool:
        """An alarm-class reading is offered and not yet applied: the MQTT intake's main
        session holds back its telemetry meanwhile (drivers/mqtt.py ``alarm_first``)."""
        return bool(self._durable) or self._alarm_busy > 0 or not self._alarm_q.empty()

    def _restates(self, readings: list[Reading]) -> bool:
        """Restores that change nothing (``Engine.repeats_nothing``: a Zigbee2MQTT sensor's
        ``tamper: false`` in every report, nothing of the sensor open), all of a message's
        alarm-class readings, while nothing of their device is on the durable way: they go
        with the telemetry, acknowledged at once (when the queue has room: never shed, so
        they keep their device alive for supervision as before). Lost in a crash they change
        nothing; a reading of the device offered after them and fed first, stamped the same
        time with another value, makes them stale (``Engine.feed_repeat``)."""
        flight, engine = self._in_flight, self.engine
        for r in readings:
            if (r.value is not False or not r.is_alarm_class or r.device_id in flight
                    or not engine.repeats_nothing(r) or self._kept(r)):
                return False
        return True

    def _kept(self, reading: Reading) -> bool:
        for w in self.writers:
            if w.takes(reading):
                return True
        return False

    # -- tasks ------------------------------------------------------------------------
    async def run(self) -> None:
        await self.recover()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._committer(), name="pipeline-commit")
            tg.create_task(self._processor(), name="pipeline-rules")
            tg.create_task(self._ticker(), name="pipeline-tick")

    async def recover(self) -> None:
        """Feed inbox rows accepted before a crash/restart but not yet processed."""
        rows = inbox.unprocessed(self.store)
        for row in rows:
            reading = Reading.from_json(json.loads(row["reading"]))
            # the snapshot may have been taken after this reading was fed and before its
            # actions committed: it must not be taken for a duplicate of itself
            self.engine.rewind(reading.device_id, reading.kind, reading.ts)
            self._in_flight[reading.device_id] = self._in_flight.get(reading.device_id, 0) + 1
            self._alarm_q.put_nowait(([row["seq"]], [reading], time.monotonic()))
        if rows:
            log.warning("recovering %d accepted alarm-class readings not yet processed",
                        len(rows))
            self._work.set()

    async def _committer(self) -> None:
        failures = 0
        while True:
            await self._durable_ready.wait()
            self._durable_ready.clear()
            batch, self._durable = self._durable, []
            if not batch:
                continue
            self._alarm_busy += 1
            try:
                seqs, written = await self.store.write(
                    lambda c: self._accept(c, batch),  # noqa: B023 (awaited here)
                    hold_s=ALARM_HOLD_S)
            except StoreError as exc:
                # Not acknowledged: the device/broker still has them. Keep and retry.
                self.metrics.inc("gateway_store_errors_total", stage="inbox")
                log.error("cannot accept %d alarm-class messages: %s (retrying)", len(batch), exc)
                self._durable = batch + self._durable
                self._alarm_busy -= 1
                await asyncio.sleep(COMMIT_RETRY.delay(failures))
                failures += 1
                self._durable_ready.set()
                continue
            except BaseException:
                self._alarm_busy -= 1
                raise
            self._alarm_busy -= 1
            failures = 0
            for writer, done in zip(self.writers, written):
                writer.committed(done)
            for pending, seq_list in zip(batch, seqs):
                if pending.ack is not None:
                    pending.ack()
                self._alarm_q.put_nowait((seq_list, pending.readings, pending.received))
            self.metrics.inc("gateway_accepted_alarm_messages_total", len(batch))
            self._work.set()

    async def _processor(self) -> None:
        while True:
            await self._work.wait()
            self._work.clear()
            while not self._alarm_q.empty() or not self._telemetry_q.empty():
                if not self._alarm_q.empty():
                    await self._process_alarms()
                    if not self._alarm_q.empty():
                        # more than a pass (a recovery's backlog): a held commit returns
                        # without a turn of the loop, so give the intake and the API one
                        await asyncio.sleep(0)
                    continue
                await self._process_telemetry(500)

    async def _process_alarms(self) -> None:
        actions: list = []
        seqs: list[int] = []
        started: list[float] = []
        devices: list[str] = []
        now = utc()
        self._alarm_busy += 1
        try:
            while not self._alarm_q.empty() and len(seqs) < 500:
                seq_list, readings, received = self._alarm_q.get_nowait()
                for r in readings:
                    actions.extend(self._feed(r, now))
                    devices.append(r.device_id)
                seqs.extend(seq_list)
                started.append(received)
            await self._apply(actions, seqs)
        finally:
            self._alarm_busy -= 1
        flight = self._in_flight
        for d in devices:
            n = flight.pop(d, 1) - 1
            if n > 0:
                flight[d] = n
        fed = len(devices)
        self.metrics.inc("gateway_readings_processed_total", fed)
        done = time.monotonic()
        for t0 in started:
            self.metrics.observe("gateway_alarm_latency_seconds", done - t0)

    async def _process_telemetry(self, limit: int) -> None:
        """Feed up to ``limit`` telemetry readings, for :data:`TELEMETRY_SLICE_S` at most:
        an alarm's commit and the intake wait for the loop meanwhile."""
        actions: list = []
        fed = 0
        now = utc()
        until = time.perf_counter() + TELEMETRY_SLICE_S
        for _ in range(limit):
            if self._telemetry_q.empty() or not self._alarm_q.empty():
                break
            r = self._telemetry_q.get_nowait()
            # alarm-class here: a restore that changed nothing when offered (_restates),
            # which readings of its device offered after it may have overtaken (feed_repeat)
            actions.extend(self._feed(r, now, r.is_alarm_class))
            fed += 1
            if not fed & 31 and time.perf_counter() > until:
                break
        if actions:
            await self._apply(actions, [])
        if fed:
            self.metrics.inc("gateway_readings_processed_total", fed)
        if not actions:
            await asyncio.sleep(0)  # let intake callbacks run between batches

    def _feed(self, reading: Reading, now, repeat: bool = False) -> list:
        # inc() without building and sorting the label per reading
        self.metrics.counters[_READINGS_KEY[reading.kind]] += 1
        self.on_reading(reading)
        return (self.engine.feed_repeat if repeat else self.engine.feed)(reading, now)

    async def _apply(self, actions: list, seqs: list[int]) -> None:
        """Commit ``actions`` with the engine's alarm bookkeeping changed by them (taken in
        the same step as the feed/tick that made them, so batches reach the store in the
        order they were made) and the inbox rows behind them; retry until it commits."""
        engine = self.engine
        journal = engine.book.journal()
        failures = 0
        while True:
            try:
                changes = await self.book.apply(actions, seqs, journal,
                                                hold_s=ALARM_HOLD_S if seqs else 0.0)
                break
            except StoreError as exc:
                # The readings are in the inbox (or were telemetry): keep trying, never drop.
                self.metrics.inc("gateway_store_errors_total", stage="alarms")
                log.error("cannot commit %d alarm actions: %s (retrying)", len(actions), exc)
                await asyncio.sleep(COMMIT_RETRY.delay(failures))
                failures += 1
        for ch in changes:
            if ch.reopened:   # the engine took it for an update: its bookkeeping restarts
                log.info("alarm %s raised anew for %s (the previous one was resolved)",
                         ch.alarm_id, ch.key)
                more = self.engine.reopened(ch.key, ch.rule_id, utc())
                await self._apply(more, [])

    async def _ticker(self) -> None:
        last_snapshot = time.monotonic()
        while True:
            await asyncio.sleep(self.tick_s)
            self.last_tick = time.monotonic()
            actions = self.engine.tick(utc())
            if actions or self.engine.book.dirty:   # (staff's ack/resolve: bookkeeping only)
                await self._apply(actions, [])
            if self.last_tick - last_snapshot >= self.snapshot_every_s:
                await self.save_snapshot()
                last_snapshot = self.last_tick

    async def save_snapshot(self) -> None:
        """Save the engine's state (streams, rules' timers and windows, learned baselines).
        Alarm and fault bookkeeping is in it too, but at start the store's wins
        (``Engine.adopt_store``)."""
        try:
            text = json.dumps(self.engine.snapshot(), separators=(",", ":")).encode()
            # compressing takes ~20 ms for 5,000 devices: off the loop (the text is immutable)
            await self.store.set_meta("rules_snapshot",
                                      await asyncio.to_thread(_compress_snapshot, text))
        except StoreError as exc:
            log.error("cannot save rule engine snapshot: %s", exc)


    def _accept(self, conn: Tx, batch: list[_Pending]) -> tuple[list[list[int]], list[Any]]:
        """The batch's inbox rows and what each durable writer records of it: one
        transaction."""
        seqs = _insert_inbox(conn, batch)
        readings = [r for pending in batch for r in pending.readings]
        written = [w.write(conn, [r for r in readings if w.takes(r)]) for w in self.writers]
        return seqs, written


def _insert_inbox(conn: Tx, batch: list[_Pending]) -> list[list[int]]:
    now = utc().isoformat()
    return [[inbox.accept(conn, now, r.device_id, json.dumps(r.to_json(), ensure_ascii=False))
             for r in pending.readings] for pending in batch]


def encode_snapshot(snapshot: dict) -> bytes:
    """The engine's snapshot as stored in ``meta``: JSON, xz-compressed (LZMA preset 0,
    ~20 ms). 5,000 devices' snapshot is ~880 KB of JSON once every device has reported,
    ~64 KB compressed (zlib's level 1 made 124 KB); written every 30 s with its checkpoint
    copy it was most of an SD card's daily writes (docs/benchmarks.md, day)."""
    return _compress_snapshot(json.dumps(snapshot, separators=(",", ":")).encode())


def _compress_snapshot(text: bytes) -> bytes:
    return lzma.compress(text, preset=0)


def decode_snapshot(value: str | bytes) -> dict:
    """A stored snapshot: xz (:func:`encode_snapshot`), zlib (stores written before xz) or
    plain JSON text (stores written before the compression)."""
    if isinstance(value, bytes):
        value = (lzma.decompress(value) if value.startswith(b"\xfd7zXZ\x00")
                 else zlib.decompress(value)).decode()
    return json.loads(value)
