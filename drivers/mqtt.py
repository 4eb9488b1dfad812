"""MQTT intake: subscribe to the device broker, decode payloads, hand readings to the pipeline.

Connection management and the asyncio socket integration come from aiomqtt. The receive path
does not use aiomqtt's message iterator: we install our own paho ``on_message`` callback on
the underlying paho client (``client._client``, aiomqtt's documented escape hatch) because

- we need paho's *manual acknowledgement*: for alarm-class messages the PUBACK must not go
  out before the reading is durably committed; aiomqtt acknowledges when a message enters
  its queue, so a crash between receipt and commit would lose an SOS;
- decoding in the callback avoids one object and one queue hop per message (the ingest
  benchmark measures this against a bare paho client).

Session: MQTT 3.1.1, fixed client id, ``clean_session=False``, QoS 1 subscriptions, so the
broker keeps what arrives while the gateway is down or restarting and redelivers anything
not acknowledged.

The alarm session (:class:`AlarmSession`, on unless gateway.yaml turns it off): a second
persistent session, on the same account, that subscribes the alarm devices' exact topics, so
an SOS has a broker queue and a connection of its own. Which session feeds which copy:
drivers/mqtt_split.py; docs/architecture.md "The alarm session".
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import select
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

from drivers import DECODE_ERROR, FIELD_ERROR_PREFIX, DecodeError, DecodeWatch, IntakeSink
from drivers import zigbee2mqtt as z2m
from drivers.mqtt_split import FENCE_TOPIC, AlarmSplit, parse_copy
from drivers.profiles import CARE_METRIC, HELP_METRIC, UNKNOWN_VALUE, Profile, decode_json
from gateway.kernel.clock import utc
from gateway.kernel.component import StateTracker
from gateway.kernel.metrics import MetricsSink
from gateway.kernel.model import ALARM_KINDS, Kind, Reading
from gateway.kernel.resilience import Backoff, RateLimitedLog

__all__ = ["HELD_METRICS", "LIFE_SAFETY_KINDS", "AlarmSession", "DeviceBinding", "MqttIntake",
           "is_alarm_device"]

log = logging.getLogger(__name__)
#: readings acknowledged (PUBACK) only once the gateway has saved them, besides the
#: alarm-class ones: a help key press (the gateway saves its help request first) and a
#: care key press (its care state first)
HELD_METRICS = frozenset({HELP_METRIC, CARE_METRIC})
#: the reading kinds that make a device an *alarm device*, read by the alarm session: what a
#: resident or a detector raises. Tamper and fault are alarm-class too, but almost every
#: battery sensor reports them (a motion sensor's tamper): they stay with the main session.
LIFE_SAFETY_KINDS = ALARM_KINDS - {Kind.TAMPER, Kind.FAULT}
#: the reading kinds of a meter (consumption, power): a device with one reports on a schedule
#: at telemetry rates and stays with the main session even when it can also flag a leak (on
#: the alarm session its readings would be most of that session's traffic, and an SOS would
#: queue behind them in a burst: docs/benchmarks.md "path", ninth round)
METER_KINDS = frozenset({Kind.ENERGY, Kind.ENERGY_EXPORT, Kind.POWER, Kind.CURRENT,
                         Kind.FREQUENCY, Kind.WATER_VOLUME, Kind.GAS_VOLUME})

#: MQTT packets read per turn of the event loop at most (fairness with the other tasks),
#: and for at most this long: before the buffered socket, 64 packets took up to 67 ms under
#: a loaded CPU, an alarm committed meanwhile waiting for the loop; through it the time
#: bound is the one that holds (docs/benchmarks.md "path")
READ_BURST = 256
READ_BURST_S = 0.004
#: how long the main session may hold back its reading while an alarm is committed, and how
#: often it looks again meanwhile. Time not held gives the allowance back at
#: ``ALARM_FIRST_GIVE_BACK`` of the pace a hold spends it: a third of the time at least it
#: reads, however holds and reads alternate (its broker queue must not overflow either: its
#: devices' tamper and leak alarms are in it too; a third of the gateway's ~16k/s is a
#: hundred times a community's traffic). At 1 (half the time) the bench's 10x burst missed
#: its 250 ms bar in four runs of four; at 0.5 in one of three (docs/benchmarks.md).
ALARM_FIRST_PAUSE_S = 0.25
ALARM_FIRST_GIVE_BACK = 0.5
ALARM_FIRST_POLL_S = 0.002
#: packets in one read of the alarm session that mean it has a backlog (the main session
#: then waits, ``ALARM_FIRST_PAUSE_S`` at most)
ALARM_BACKLOG_PACKETS = 32
#: topics per SUBSCRIBE packet (the alarm session subscribes each alarm device's topic)
SUBSCRIBE_BATCH = 500
#: the fence (drivers/mqtt_split.py): how often its loop looks, how often a copy is published
#: again until the main session passed one, when a move that takes longer is given up and
#: when it is tried again; how long the main session waits for the alarm session first
FENCE_TICK_S = 0.5
FENCE_REPEAT_S = 5.0
FENCE_WAIT_S = 60.0
FENCE_RETRY_S = 3600.0
ALARM_FIRST_S = 10.0
#: at the end of a connection, how long the buffered socket waits for the kernel to take
#: what is left (the last PUBACKs, the DISCONNECT) before closing
CLOSE_WAIT_S = 0.5


@dataclass(frozen=True, slots=True)
class DeviceBinding:
    """What the intake needs to know about the device behind a topic."""

    device_id: str
    device_type: str
    household_id: str | None
    grid_cell: str | None
    profile: Profile
    #: an alarm device (:func:`is_alarm_device`): its topic belongs to the alarm session
    alarm: bool = False


def is_alarm_device(profile: Profile) -> bool:
    """Whether a device with this profile raises what a person must answer (SOS, smoke, gas,
    water, panic, intrusion; a help or care key), so that its topic goes to the alarm
    session. A meter (``METER_KINDS``) is not, even with a leak field: its leak alarm takes
    the main session's durable path, as every alarm-class reading there does."""
    fields = profile.fields.values()
    return (any(f.kind in LIFE_SAFETY_KINDS or f.metric in HELD_METRICS for f in fields)
            and not any(f.kind in METER_KINDS for f in fields))


@dataclass(frozen=True, slots=True)
class AlarmSession:
    """The alarm session: its client id (it logs in with the main session's account), the
    file that keeps the split across restarts (None: in memory, tests only), and how old its
    subscription must be before a fence is published (at least the broker's
    ``autosave_interval``: a power cut cannot take the subscription back then)."""

    client_id: str
    state_path: Path | None = None
    delay_s: float = 150.0


class _Session:
    """One MQTT session of the intake: its account, its current connection and its state."""

    __slots__ = ("client_id", "username", "password", "alarm", "status", "paho", "out",
                 "online")

    def __init__(self, client_id: str, username: str | None, password: str | None, *,
                 alarm: bool, status: StateTracker) -> None:
        self.client_id, self.username, self.password = client_id, username, password
        self.alarm = alarm
        self.status = status
        self.paho: paho.Client | None = None
        #: the current connection's buffered socket (PUBACKs are written into it)
        self.out: _BufferedSocket | None = None
        self.online = False


class MqttIntake:
    """Reads devices from one broker. ``run()`` reconnects forever until cancelled."""

    def __init__(self, *, host: str, port: int, client_id: str, sink: IntakeSink,
                 bindings: dict[str, DeviceBinding], metrics: MetricsSink,
                 subscriptions: tuple[str, ...] = ("devices/#", "zigbee2mqtt/#"),
                 username: str | None = None, password: str | None = None,
                 keepalive: int = 30, max_payload_bytes: int = 8192,
                 on_unknown: Callable[[str, bytes], None] | None = None,
                 on_error: Callable[[str, str], None] | None = None,
                 decode_watch: DecodeWatch | None = None,
                 alarm_session: AlarmSession | None = None,
                 alarm_first: Callable[[], bool] | None = None,
                 commit_delay_s: float = 0.0, test_decode_fault: bytes = b""):
        self.host, self.port, self.client_id = host, port, client_id
        self.sink = sink
        self.bindings = bindings
        self.metrics = metrics
        self.subscriptions = subscriptions
        self.username, self._password = username, password
        self.keepalive = keepalive
        self.max_payload_bytes = max_payload_bytes
        self.on_unknown = on_unknown
        self.on_error = on_error or (lambda device_id, reason: None)
        self.decode_watch = decode_watch or DecodeWatch()
        # Fault injection for the redelivery test only (GATEWAY_TEST_COMMIT_DELAY_S): hold
        # alarm-class messages this long before handing them to the pipeline's commit.
        self.commit_delay_s = commit_delay_s
        # Fault injection for the decode-fault test only (GATEWAY_TEST_DECODE_FAULT, never in
        # production): decoding a bound device's payload that contains these bytes raises.
        self.test_decode_fault = test_decode_fault
        self.connected = asyncio.Event()
        self.status = StateTracker(f"mqtt intake {host}:{port}", "starting", logger=log)
        self._main = _Session(client_id, username, password, alarm=False, status=self.status)
        self._sessions = [self._main]
        self._alarm_spec = alarm_session
        #: with the alarm session: while this says an alarm is being committed, the main
        #: session reads nothing (for ``ALARM_FIRST_PAUSE_S`` at most): its telemetry waits
        #: at the broker, the alarm's commit gets the loop and the store
        self.alarm_first = alarm_first if alarm_session is not None else None
        #: when the alarm session last read a backlog (``ALARM_BACKLOG_PACKETS`` or more in
        #: one read; -inf: its last read was smaller): the main session holds back for
        #: ``ALARM_FIRST_PAUSE_S`` after it at most, also when the alarm socket then goes quiet
        #: (no read of the alarm session comes to clear it)
        self._alarm_backlog_at = -math.inf
        self._alarm: _Session | None = None
        if alarm_session is not None:
            self._alarm = _Session(alarm_session.client_id, username, password, alarm=True,
                                   status=StateTracker(f"mqtt alarm session {host}:{port}",
                                                       "starting", logger=log))
            self._sessions.append(self._alarm)
        #: made at run() from the bindings then (drivers/mqtt_split.py)
        self.split: AlarmSplit | None = None
        self.fence_topic = FENCE_TOPIC.format(client_id=client_id)
        # the main session's current connection: its cut (the first fence copy it saw:
        # sequence number, mid, qos, connection) until passed, and the alarm messages it fed
        # before the cut whose commit is outstanding
        self._main_cut: tuple[int, int, int, paho.Client | None] | None = None
        self._main_outstanding = 0
        # the alarm session's current connection: when it subscribed, whether the broker
        # kept its session (CONNACK)
        self._alarm_subscribed_at = 0.0
        self._alarm_session_present = False
        #: the alarm session is subscribed on its current connection
        self._alarm_ready = asyncio.Event()
        #: the main session may drop the copies the alarm session has: not after a main
        #: CONNACK that says the broker lost state until the alarm session subscribed again,
        #: nor after a move that could not be recorded (for the rest of the run)
        self._alarm_trusted = False
        self._split_unsaved = False
        self._main_session_present = False
        self._last_copy = 0.0
        self._first_copy = 0.0
        self._rlog = RateLimitedLog(log)
        self._reconnect = Backoff(base_s=0.5, cap_s=30.0)
        self._ingested_key = ("gateway_ingest_messages_total", (("transport", "mqtt"),))

    def rebind(self, bindings: dict[str, DeviceBinding]) -> None:
        """Swap the topic -> device table (installer edited the config); takes effect at once."""
        self.bindings = bindings

    def topics(self) -> list[str]:
        subs = self.subscriptions
        # "devices/#" covers every topic under "devices/": a prefix test (C speed) first, the
        # whole match only for what it leaves (57,000 bindings took ~50 ms of a start)
        under = tuple(s[:-1] for s in subs if s.endswith("/#") and "+" not in s)
        extra = [t for t in self.bindings
                 if not t.startswith(under) and not any(_covers(s, t) for s in subs)]
        return list(subs) + sorted(extra)

    async def run(self) -> None:
        if self._alarm is None:
            await self._run_session(self._main)
            return
        spec = self._alarm_spec
        assert spec is not None
        self.split = AlarmSplit(spec.state_path,
                                [t for t, b in self.bindings.items() if b.alarm],
                                self.bindings, self.fence_topic)
        async with asyncio.TaskGroup() as tg:
            for sess in self._sessions:
                tg.create_task(self._run_session(sess),
                               name="mqtt-alarm-session" if sess.alarm else "mqtt-session")
            tg.create_task(self._fence_loop(spec.delay_s), name="mqtt-alarm-fence")

    def _subscriptions(self, sess: _Session) -> list[str]:
        if not sess.alarm:
            topics = self.topics()
            if self.split is not None and not any(_covers(t, self.fence_topic) for t in topics):
                topics.append(self.fence_topic)
            return topics
        assert self.split is not None
        return self.split.subscriptions()

    async def _run_session(self, sess: _Session) -> None:
        delays = self._reconnect.delays()
        while True:
            try:
                if not sess.alarm and self._alarm is not None:
                    # the alarm session first (whether the broker kept its session decides
                    # what moves); without it the main session feeds every copy meanwhile
                    try:
                        await asyncio.wait_for(self._alarm_ready.wait(), ALARM_FIRST_S)
                    except TimeoutError:
                        log.warning("alarm session not connected after %.0f s: the main session"
                                    " feeds the alarm devices' copies meanwhile (a message "
                                    "may arrive twice)", ALARM_FIRST_S)
                client = aiomqtt.Client(
                    self.host, self.port, identifier=sess.client_id, clean_session=False,
                    keepalive=self.keepalive, username=sess.username, password=sess.password,
                    protocol=aiomqtt.ProtocolVersion.V311, timeout=10)
                # Before connecting: with a persistent session the broker resends what was
                # not acknowledged right after CONNACK, before any SUBSCRIBE. aiomqtt's own
                # handler would auto-acknowledge those into a queue nobody reads (lost SOS).
                mqttc = client._client  # noqa: SLF001 - see module docstring
                sess.paho = mqttc
                mqttc.manual_ack_set(True)
                self._wrap_connect(mqttc, sess)
                if sess.alarm:
                    mqttc.on_message = self._alarm_message
                else:
                    self._main_cut, self._main_outstanding = None, 0
                    mqttc.on_message = self._main_message
                async with client:
                    self._read_in_bursts(client, sess)
                    if sess.alarm:
                        self._alarm_connected()
                    elif self._alarm is not None:
                        self._main_connected()
                    topics = self._subscriptions(sess)
                    for i in range(0, len(topics), SUBSCRIBE_BATCH):
                        await client.subscribe([(t, 1) for t in topics[i:i + SUBSCRIBE_BATCH]])
                    if sess.alarm:
                        self._alarm_subscribed_at = time.monotonic()
                        if self.split is not None and self.split.stale:
                            await client.unsubscribe(self.split.stale)
                            try:
                                self.split.unsubscribed()
                            except OSError as exc:
                                self._rlog.error(("alarm-split", "save"), "alarm session: "
                                                 "cannot record the unsubscribe: %s", exc)
                        self._alarm_trusted = not self._split_unsaved
                        self._alarm_ready.set()
                    sess.status.set("online")
                    sess.online = True
                    if all(x.online for x in self._sessions):
                        self.connected.set()
                    delays = self._reconnect.delays()
                    await _wait_disconnected(client)
                raise aiomqtt.MqttError("disconnected")    # asked to (a forced reconnect)
            except (aiomqtt.MqttError, OSError) as exc:   # OSError: a socket read failed
                sess.online = False
                if sess.alarm:
                    self._alarm_ready.clear()
                    self._alarm_trusted = False
                self.connected.clear()
                sess.status.set("offline", str(exc))
                self.metrics.inc("gateway_driver_reconnects_total",
                                 driver="mqtt-alarm" if sess.alarm else "mqtt")
                await asyncio.sleep(next(delays))

    # -- the split (drivers/mqtt_split.py) -----------------------------------------------
    def _wrap_connect(self, mqttc: paho.Client, sess: _Session) -> None:
        """Record whether the broker kept the session (CONNACK), beside aiomqtt's handler."""
        on_connect: Any = mqttc.on_connect

        def connected(client: paho.Client, userdata: Any, flags: Any, *rest: Any) -> None:
            present = bool(getattr(flags, "session_present", False))
            if sess.alarm:
                self._alarm_session_present = present
            else:
                self._main_session_present = present
            on_connect(client, userdata, flags, *rest)

        mqttc.on_connect = connected

    def _alarm_connected(self) -> None:
        """After the alarm session's CONNACK: a broker that no longer has its session lost
        what it queued for it, and its subscriptions: every alarm topic moves again (and the
        alarm session is trusted once it has subscribed again). With its session, its
        subscriptions route already: trusted now, so the main session need not wait for
        the alarm session's SUBSCRIBEs (thousands of topics) before it connects."""
        if not self._alarm_session_present:
            self._demote()
            return
        self._alarm_trusted = not self._split_unsaved
        self._alarm_ready.set()

    def _main_connected(self) -> None:
        """After the main session's CONNACK: a broker without the main session lost state,
        so it may have lost the alarm session too, whose connection may not have noticed
        yet: every alarm topic moves again, and the alarm session connects again."""
        if self._main_session_present or not self._demote():
            return
        alarm = self._alarm
        if alarm is not None and alarm.paho is not None and alarm.paho.is_connected():
            alarm.paho.disconnect()

    def _demote(self) -> bool:
        """Every alarm topic moves again (True), unless none has moved or is moving."""
        split = self.split
        if split is None or not (split.established or split.copies):
            return False
        self._alarm_trusted = False
        if not split.demote():
            self._split_unsaved = True      # the main session feeds every copy from now on
        cut, self._main_cut = self._main_cut, None
        if cut is not None and self._main.paho is cut[3]:
            self._ack(self._main, cut[1], cut[2])     # the old epoch's copy
        return True

    async def _fence_loop(self, delay_s: float) -> None:
        """Publish fence copies while topics are in transition: the first once both sessions
        are connected and the alarm session's subscription is older than ``delay_s``, then
        every ``FENCE_REPEAT_S`` until the main session has passed one (a full queue may
        drop a copy). A move the main session has not made within ``FENCE_WAIT_S`` of the
        first copy (a broker that refuses the fence's topic) is given up: said, the epoch
        started again without copies, so the main session alone feeds those topics (no
        doubles, as with one session), tried again after ``FENCE_RETRY_S``."""
        retry_at = 0.0
        while True:
            await asyncio.sleep(FENCE_TICK_S)
            split, mqttc, alarm = self.split, self._main.paho, self._alarm
            if split is None or alarm is None or mqttc is None or not split.in_transition:
                self._first_copy = 0.0
                continue
            now = time.monotonic()
            if (not (self._main.online and alarm.online and self._alarm_trusted)
                    or self._main_cut is not None or now < retry_at):
                continue
            if self._first_copy and now - self._first_copy > FENCE_WAIT_S:
                log.warning("alarm session: the main session has not received the fence on %s"
                            " after %.0f s (%d copies); does the broker let this account write "
                            "it? (deploy/mosquitto/mqtt-accounts.py) The %d alarm topic(s) stay"
                            " with the main session; trying again in %.0f s", self.fence_topic,
                            now - self._first_copy, split.copies, len(split.pending),
                            FENCE_RETRY_S)
                try:
                    split.restart_epoch()
                except OSError as exc:
                    self._rlog.error(("alarm-split", "save"), "alarm session: cannot record "
                                     "the fence: %s", exc)
                    self._split_unsaved = True        # the main session feeds every copy
                self._first_copy, retry_at = 0.0, now + FENCE_RETRY_S
                continue
            if now - self._alarm_subscribed_at < delay_s or now - self._last_copy < FENCE_REPEAT_S:
                continue
            try:
                payload = split.next_copy()
            except OSError as exc:
                self._rlog.error(("alarm-split", "save"), "alarm session: cannot record the "
                                 "fence: %s", exc)
                continue
            mqttc.publish(self.fence_topic, payload, qos=1)
            self._last_copy = now
            self._first_copy = self._first_copy or now

    def _main_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        split = self.split
        if split is not None:
            topic = msg.topic
            if topic in split.established:
                if self._alarm_has_it():
                    self._ack(self._main, msg.mid, msg.qos)   # the alarm session feeds it
                    return
            elif topic in split.pending:
                if msg.qos and self._main_cut is not None and self._alarm_has_it():
                    self._ack(self._main, msg.mid, msg.qos)   # after the cut: the alarm's
                    return
                self._on_message(self._main, msg,
                                 before_cut=bool(msg.qos) and self._main_cut is None)
                return
            elif topic == self.fence_topic:
                self._main_fence_copy(msg)
                return
        self._on_message(self._main, msg)

    def _alarm_has_it(self) -> bool:
        """The alarm session has (or will get) what its subscriptions route: it is connected
        and trusted (see ``_alarm_trusted``)."""
        return self._alarm_trusted and self._alarm_ready.is_set()

    def _main_fence_copy(self, msg: paho.MQTTMessage) -> None:
        split = self.split
        assert split is not None
        copy = parse_copy(bytes(msg.payload))
        if (copy is None or copy[0] != split.nonce or not split.in_transition
                or self._main_cut is not None):
            self._ack(self._main, msg.mid, msg.qos)   # another epoch's, or a later copy
            return
        self._main_cut = (copy[1], msg.mid, msg.qos, self._main.paho)
        self._pass_main_cut()

    def _pass_main_cut(self) -> None:
        """Once every alarm message fed before the cut is committed: the topics established
        (recorded), then the copy acknowledged."""
        cut, split = self._main_cut, self.split
        if cut is None or self._main_outstanding or split is None or not split.in_transition:
            return
        seq, mid, qos, conn = cut
        if self._main.paho is not conn:
            return
        try:
            split.pass_main(seq)
        except OSError as exc:
            # not passed: the copy stays unacknowledged (it comes again on the next
            # connection); meanwhile both sessions feed these topics
            self._main_cut = None
            self._rlog.error(("alarm-split", "save"), "alarm session: cannot record the main "
                             "session's cut: %s", exc)
            return
        self._main_cut = None
        self._ack(self._main, mid, qos)

    def _alarm_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        split, alarm = self.split, self._alarm
        assert split is not None and alarm is not None
        topic = msg.topic
        if topic in split.established:
            self._on_message(alarm, msg)
        elif topic in split.pending:
            if split.copies:
                self._on_message(alarm, msg)      # routed after a copy may be past the cut
            else:
                # no copy published yet: routed before any cut, the main session feeds it
                self._ack(alarm, msg.mid, msg.qos)
        else:
            # a fence copy, or a subscription of an earlier start not yet undone (the main
            # session has those)
            self._ack(alarm, msg.mid, msg.qos)

    def _read_in_bursts(self, client: aiomqtt.Client, sess: _Session) -> None:
        """Replace aiomqtt's socket reader (one MQTT packet per event-loop turn) with one
        that reads up to ``READ_BURST`` packets (for ``READ_BURST_S`` at most) while data
        is there, through a :class:`_BufferedSocket` (paho reads a packet in three
        ``recv`` calls and writes each PUBACK in a ``send`` of its own: a system call
        each, and the GIL released and taken again each time). A turn of the loop costs
        more than decoding a message, so under load this takes in roughly twice what
        aiomqtt's reader does (see the ingest and path benchmarks). Errors end the
        connection as aiomqtt's reader does (the run loop then reconnects with backoff)."""
        mqttc = sess.paho
        sock = mqttc.socket() if mqttc is not None else None
        if mqttc is None or sock is None:
            return
        fd = sock.fileno()
        if hasattr(sock, "setsockopt"):
            # PUBACKs are tiny: without NODELAY, Nagle holds them for the peer's delayed ACK
            # (tens of ms), which stalls the broker's in-flight window and delays alarms
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loop = asyncio.get_running_loop()
        disconnected = client._disconnected  # noqa: SLF001

        over: list[BaseException] = []

        def failed(exc: BaseException) -> None:
            # this connection is over: nothing more is read from it or written to it (an
            # alarm's PUBACK of it is dropped: _ack), and the run loop reconnects. Once only:
            # after the close, the descriptor's number may be a newer connection's.
            if over:
                return
            over.append(exc)
            if not disconnected.done():
                disconnected.set_exception(exc)
            loop.remove_reader(fd)
            buffered.abort()

        buffered = _BufferedSocket(sock, loop, failed)
        sess.out = buffered
        mqttc._sock = buffered  # noqa: SLF001 - paho reads and writes through it from now on

        # one burst per turn of the loop: the socket's readable event and the burst
        # scheduled for bytes already read would otherwise each start one
        again: list[asyncio.Handle] = []

        alarm_first = self.alarm_first
        pause: Callable[[], bool] | None = None
        if not sess.alarm and self._alarm is not None:
            def pause() -> bool:
                return (time.perf_counter() - self._alarm_backlog_at < ALARM_FIRST_PAUSE_S
                        or (alarm_first is not None and alarm_first()))
        # the hold's allowance (s): a hold spends it, time not held gives it back at half
        # that pace, up to ALARM_FIRST_PAUSE_S: held 250 ms at most in one go and two
        # thirds of the time at most however the holds and reads alternate (an alarm
        # storm); when it was counted; whether the main session was held since
        allowance = [ALARM_FIRST_PAUSE_S, time.perf_counter(), False]

        def hold() -> bool:
            now = time.perf_counter()
            left, then, held = allowance
            left = left - (now - then) if held else min(
                ALARM_FIRST_PAUSE_S, left + ALARM_FIRST_GIVE_BACK * (now - then))
            # (with no allowance left, pause() is not even asked)
            held = left > 0 and pause is not None and pause()
            allowance[:] = [left, now, held]
            return held

        def read_burst() -> None:
            if again:
                return          # this turn's burst is scheduled already
            if pause is not None and hold():
                # not watched meanwhile (a readable socket would wake the loop at every
                # turn); looked at again shortly
                loop.remove_reader(fd)
                again.append(loop.call_later(ALARM_FIRST_POLL_S, resume))
                return
            until = time.perf_counter() + READ_BURST_S
            n = 0
            try:
                for n in range(1, READ_BURST + 1):
                    mqttc.loop_read()
                    if mqttc.socket() is not buffered:
                        return          # the connection closed (paho dropped the socket)
                    if not buffered.pending():
                        return          # the rest comes with the socket's next readable event
                    if n == READ_BURST or time.perf_counter() > until:
                        # bytes already read (or inside TLS) raise no readable event: the
                        # rest on the next turn
                        again.append(loop.call_soon(burst_again))
                        return
            except Exception as exc:  # noqa: BLE001 - any read failure ends this connection
                failed(exc)
            finally:
                if sess.alarm:
                    # a backlog of the alarm devices: the main session waits for it
                    self._alarm_backlog_at = (time.perf_counter() if n >= ALARM_BACKLOG_PACKETS
                                              else -math.inf)

        def burst_again() -> None:
            again.clear()
            read_burst()

        def resume() -> None:
            again.clear()
            if over or mqttc.socket() is not buffered:
                return          # the connection ended meanwhile
            loop.add_reader(fd, read_burst)
            read_burst()

        def write() -> None:
            try:
                mqttc.loop_write()
            except Exception as exc:  # noqa: BLE001 - as aiomqtt's writer: ends this connection
                failed(exc)

        def write_soon(_client: object, _userdata: object, _sock: object) -> None:
            # paho queued a packet (it asks once until written): hand it to the buffer this
            # turn; the buffer sends what this turn queued in one system call
            loop.call_soon(write)

        def settle() -> None:
            # aiomqtt's writer callback for this socket (if one is still registered, or
            # its registration still queued before this) goes: the buffer writes from now on
            if not buffered.waiting:
                loop.remove_writer(fd)
            write()

        mqttc.on_socket_register_write = write_soon
        mqttc.on_socket_unregister_write = None
        loop.call_soon(settle)
        loop.remove_reader(fd)
        loop.add_reader(fd, read_burst)

    def split_state(self) -> dict[str, Any] | None:
        """The alarm session's split for the health endpoint (None: one session)."""
        if self.split is None:
            return None
        out = self.split.to_json()
        if self.split.in_transition:
            out["main_at_cut"] = self._main_cut is not None
        return out

    @property
    def state(self) -> str:
        """``starting``, ``online`` or ``offline`` (the health endpoint shows it): online
        when every session is (an alarm session that is down is an intake that is not
        ready: the alarm devices' messages wait at the broker)."""
        states = [x.status.value for x in self._sessions]
        for bad in ("offline", "starting"):
            if bad in states:
                return bad
        return states[0]

    def _on_message(self, sess: _Session, msg: paho.MQTTMessage, *,
                    before_cut: bool = False) -> None:
        """Decode one message and offer its readings; acknowledged at once, or after the
        commit when alarm-class (``before_cut``: the main session's alarm message ahead of
        its fence cut, counted until then: :meth:`_pass_main_cut`)."""
        topic = msg.topic
        payload = bytes(msg.payload)    # paho: bytes | bytearray; a bytes is not copied
        mid, qos = msg.mid, msg.qos
        self.metrics.counters[self._ingested_key] += 1    # inc() without the label sort
        try:
            readings = self._decode(topic, payload)
        except Exception as exc:  # noqa: BLE001 - see below
            # A message our own handling failed on (a bug, not a DecodeError) must not stop
            # the intake: left unacknowledged, the broker would redeliver it after every
            # reconnect and wedge the gateway. Counted, logged with topic and a sample, acked.
            # (A bound device's decoding is caught in _decode: the device gets a fault.)
            self.metrics.inc("gateway_rejected_total", reason=DECODE_ERROR, transport="mqtt")
            self._rlog.error((DECODE_ERROR, topic), "cannot decode %s (%d bytes, starts %r):"
                             " %s: %s", topic, len(payload), payload[:80], type(exc).__name__,
                             exc)
            readings = []
        if not readings:
            self._ack(sess, mid, qos)   # a bad message is answered (counted), never redelivered forever
            return
        if any(r.is_alarm_class or r.metric in HELD_METRICS for r in readings):
            # acknowledged after the commit, on the connection it came on, or not at all: a
            # packet id of a newer connection may name another message (the broker
            # redelivers this one on its session)
            conn = sess.paho
            if before_cut:
                self._main_outstanding += 1

            def ack() -> None:
                if sess.paho is not conn:
                    return
                self._ack(sess, mid, qos)
                if before_cut:
                    self._main_outstanding -= 1
                    self._pass_main_cut()

            if self.commit_delay_s:
                asyncio.get_running_loop().call_later(
                    self.commit_delay_s, self.sink.offer, readings, ack)
                return
            self.sink.offer(readings, ack)
        else:
            self.sink.offer(readings, None)
            self._ack(sess, mid, qos)

    def _ack(self, sess: _Session, mid: int, qos: int) -> None:
        mqttc = sess.paho
        if not qos or mqttc is None:
            return
        sock = mqttc.socket()
        if qos == 1 and isinstance(sock, _BufferedSocket) and sock is sess.out:
            # PUBACK (4 bytes) straight into this connection's buffer: paho's ack() builds
            # and queues a packet dict per message (8 % of the intake's time, "path")
            sock.send(b"\x40\x02" + mid.to_bytes(2, "big"))
        else:
            mqttc.ack(mid, qos)

    def _decode(self, topic: str, payload: bytes) -> list[Reading]:
        binding = self.bindings.get(topic)
        if binding is None:
            base, _, leaf = topic.rpartition("/")
            parent = self.bindings.get(base)
            if parent is not None:
                if leaf == "availability":
                    return self._availability(parent, topic, payload)
                return []          # <device>/set, /get ...: commands to the device, not ours
            if topic.startswith("zigbee2mqtt/bridge/"):
                if topic == z2m.BRIDGE_DEVICES:
                    self._bridge_devices(payload)
                return []
            if leaf == "availability":
                return []          # availability of a device nobody bound: not a problem
            self._reject("unknown_device", topic, "no device is bound to this topic")
            if self.on_unknown is not None:
                self.on_unknown(topic, payload[:512])
            return []
        if len(payload) > self.max_payload_bytes:
            self._reject("oversize", f"{topic} (device {binding.device_id})",
                         f"payload of {len(payload)} bytes exceeds {self.max_payload_bytes}")
            self.on_error(binding.device_id, "oversize")
            return []
        problems: list[DecodeError] = []
        try:
            if self.test_decode_fault and self.test_decode_fault in payload:
                raise RuntimeError("decoder failure injected by GATEWAY_TEST_DECODE_FAULT "
                                   "(tests only)")
            readings = decode_json(binding.profile, binding.device_id, payload, utc(),
                                   where=f"{topic} (device {binding.device_id})",
                                   device_type=binding.device_type,
                                   household_id=binding.household_id,
                                   grid_cell=binding.grid_cell, problems=problems)
        except DecodeError as exc:
            # no reading at all; if a field raised (a bug of ours), that is why it counts
            bug = exc if exc.reason == DECODE_ERROR else next(
                (p for p in problems if p.reason == DECODE_ERROR), None)
            if bug is not None:
                self._decode_failed(binding, topic, payload, bug.__cause__ or bug)
                return []
            # a value a map does not know is that field's problem, whatever else was wrong
            self._bad_fields(binding, topic, [p for p in problems if p.reason == UNKNOWN_VALUE])
            self._reject(exc.reason, exc.where, exc.detail)
            self.on_error(binding.device_id, exc.reason)
            return []
        except Exception as exc:  # noqa: BLE001 - our decoding failed: fault, counted, acked
            self._decode_failed(binding, topic, payload, exc)
            return []
        if problems:
            # a field that could not be read, or whose value a map does not know
            # (unknown_value: an action of a newer firmware), costs that field only: counted
            # per field, never a lost message (even when it was all the message had)
            self._bad_fields(binding, topic, problems)
            if any(p.reason == DECODE_ERROR for p in problems):
                return readings
        self.decode_watch.ok(binding.device_id)
        return readings

    def _decode_failed(self, binding: DeviceBinding, topic: str, payload: bytes,
                       exc: BaseException, *, field: str = "") -> None:
        """Our decoding raised on a message of a bound device (not a DecodeError): the
        message (or only ``field`` of it) is lost, counted (``gateway_rejected_total`` or
        ``gateway_bad_fields_total`` with reason ``decode_error``), told to device health,
        and the device is put in fault ``decode_error`` (logged once per cause there)."""
        if field:
            self.metrics.inc("gateway_bad_fields_total", reason=DECODE_ERROR, field=field,
                             transport="mqtt")
            self.on_error(binding.device_id, FIELD_ERROR_PREFIX + DECODE_ERROR)
            where = f"{topic} field {field!r}"
        else:
            self.metrics.inc("gateway_rejected_total", reason=DECODE_ERROR, transport="mqtt")
            self.on_error(binding.device_id, DECODE_ERROR)
            where = f"{topic} ({len(payload)} bytes, starts {payload[:80]!r})"
        self.decode_watch.failed(binding.device_id, "mqtt", exc, where)

    def _availability(self, binding: DeviceBinding, topic: str,
                      payload: bytes) -> list[Reading]:
        return self._bound(binding, topic, payload, lambda: [z2m.availability_reading(
            binding.device_id, payload[:256], utc(),
            where=f"{topic} (device {binding.device_id})")])

    def _bound(self, binding: DeviceBinding, topic: str, payload: bytes,
               decode: Callable[[], list[Reading]]) -> list[Reading]:
        """Run ``decode``; bind its readings to the device's site, or count its error."""
        try:
            readings = decode()
        except DecodeError as exc:
            self._reject(exc.reason, exc.where, exc.detail)
            self.on_error(binding.device_id, exc.reason)
            return []
        except Exception as exc:  # noqa: BLE001 - our decoding failed: fault, counted, acked
            self._decode_failed(binding, topic, payload, exc)
            return []
        return [r.with_site(household_id=binding.household_id, grid_cell=binding.grid_cell,
                            device_type=binding.device_type) for r in readings]

    def _bridge_devices(self, payload: bytes) -> None:
        """Zigbee devices the coordinator knows but no device of the site is bound to."""
        if len(payload) > z2m.MAX_BRIDGE_BYTES:
            self._reject("oversize", z2m.BRIDGE_DEVICES, f"{len(payload)} bytes")
            return
        try:
            entries = z2m.bridge_devices(payload)
        except DecodeError as exc:
            self._reject(exc.reason, exc.where, exc.detail)
            return
        for entry in entries:
            if entry["topic"] not in self.bindings and self.on_unknown is not None:
                self.on_unknown(entry["topic"], json.dumps(
                    {k: v for k, v in entry.items() if k != "topic"},
                    ensure_ascii=False).encode())

    def _bad_fields(self, binding: DeviceBinding, topic: str,
                    problems: list[DecodeError]) -> None:
        """Fields of a delivered message that gave no reading: counted per reason and field
        in ``gateway_bad_fields_total`` (not ``gateway_rejected_total``: the message was not
        lost), logged (rate-limited) and told to ``on_error`` as ``field:<reason>``. A field
        our decoding raised on (``decode_error``) puts the device in fault instead of a log
        line per message (:meth:`_decode_failed`)."""
        device_id = binding.device_id
        for p in problems:
            if p.reason == DECODE_ERROR:
                self._decode_failed(binding, topic, b"", p.__cause__ or p, field=p.field)
                continue
            self.metrics.inc("gateway_bad_fields_total", reason=p.reason, field=p.field,
                             transport="mqtt")
            self._rlog.warning(("field", p.reason, p.where), "bad field %s: %s [%s] (the message's "
                               "other fields were kept)", p.where, p.detail, p.reason)
            self.on_error(device_id, FIELD_ERROR_PREFIX + p.reason)

    def _reject(self, reason: str, where: str, detail: str) -> None:
        self.metrics.inc("gateway_rejected_total", reason=reason, transport="mqtt")
        self._rlog.warning((reason, where), "rejected %s: %s [%s]", where, detail, reason)


class _BufferedSocket:
    """The intake's socket as paho sees it: reads fill a buffer with one ``recv`` of up to
    64 KiB (hundreds of small PUBLISH packets) and paho's small reads are served from it;
    writes are collected and sent at the end of the event loop's turn in one ``send`` (the
    rest, if the kernel takes less, when the socket is writable). Everything else is the
    socket's own. Used on the event loop thread only. ``close`` sends what is collected
    first (a DISCONNECT or a PUBACK queued last is not dropped)."""

    __slots__ = ("_sock", "_loop", "_failed", "_in", "_pos", "_out", "_flushing", "_waiting")

    def __init__(self, sock: paho.SocketLike, loop: asyncio.AbstractEventLoop,
                 failed: Callable[[BaseException], None]) -> None:
        self._sock = sock
        self._loop = loop
        self._failed = failed
        self._in = b""
        self._pos = 0
        self._out = bytearray()
        self._flushing = False      # a send is scheduled for this turn
        self._waiting = False       # a writer callback waits for the socket to be writable

    def recv(self, n: int) -> bytes:
        data: bytes = self._in
        pos = self._pos
        left = len(data) - pos
        if not left:
            data = self._sock.recv(65536)   # BlockingIOError / SSLWantReadError: nothing yet
            if not data:
                return data                 # end of stream: paho closes the connection
            pos, left = 0, len(data)
            self._in = data
        if n >= left:
            self._in, self._pos = b"", 0
            return data[pos:] if pos else data
        self._pos = pos + n
        return data[pos:pos + n]

    def pending(self) -> int:
        """Bytes read but not yet taken (and, for TLS, decrypted bytes inside the SSL
        object): neither makes the socket readable again."""
        inner = getattr(self._sock, "pending", None)
        return len(self._in) - self._pos + (inner() if inner is not None else 0)

    def send(self, data: bytes | bytearray | memoryview) -> int:
        self._out += data
        if not self._flushing and not self._waiting:
            self._flushing = True
            self._loop.call_soon(self._flush)
        return len(data)

    def _flush(self) -> None:
        self._flushing = False
        if self._waiting or not self._out:
            return
        try:
            sent = self._sock.send(self._out)
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            sent = 0
        except OSError as exc:
            self._out.clear()
            self._failed(exc)
            return
        del self._out[:sent]
        if self._out:
            self._waiting = True
            self._loop.add_writer(self._sock.fileno(), self._writable)

    @property
    def waiting(self) -> bool:
        """A writer callback waits for the socket to take the rest of what was written."""
        return self._waiting

    def _writable(self) -> None:
        self._waiting = False
        self._loop.remove_writer(self._sock.fileno())
        self._flush()

    def close(self) -> None:
        """Send what is collected (waiting up to ``CLOSE_WAIT_S`` for a backed-up socket:
        the last PUBACKs and paho's DISCONNECT), then close."""
        if self._waiting:
            self._waiting = False
            self._loop.remove_writer(self._sock.fileno())
        until = time.monotonic() + CLOSE_WAIT_S
        writable = select.poll()
        writable.register(self._sock.fileno(), select.POLLOUT)
        while self._out and time.monotonic() < until:
            try:
                del self._out[:self._sock.send(self._out)]
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError,
                    ssl.SSLWantReadError):
                writable.poll(max(1, int((until - time.monotonic()) * 1000)))
            except OSError:
                break
        self._out.clear()
        self._sock.close()

    def abort(self) -> None:
        """The connection failed: drop what is collected and close the socket."""
        if self._waiting:
            self._waiting = False
            self._loop.remove_writer(self._sock.fileno())
        self._out.clear()
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


async def _wait_disconnected(client: aiomqtt.Client) -> None:
    # aiomqtt resolves this future (with an exception) when the connection drops.
    fut = client._disconnected  # noqa: SLF001
    await asyncio.shield(fut)


def _covers(sub: str, topic: str) -> bool:
    s, t = sub.split("/"), topic.split("/")
    for i, part in enumerate(s):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(s) == len(t)
