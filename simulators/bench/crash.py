"""Crash consistency: ``kill -9`` the real gateway at random moments while devices press,
cancel, raise and clear, staff acknowledge and resolve, and escalations fall due; then check
what a user can observe.

``python -m simulators.bench crash [--seed N] [--kills 25] [--quick]``; the quick CI variant
is ``tests/test_crash_consistency.py`` (same code, :func:`run_suite`).

Everything runs as real processes on loopback: Mosquitto, the simulated case system, and
``gateway run`` on a copy of the example site (edge_config/examples/tianlin) changed so that
the run exercises every path quickly:

- extra emergency callers and smoke detectors on the example's households;
- ``sos``: as in the example (a cancel, ``sos: false``, clears the alarm, which stays open for
  staff); ``smoke``: ``auto_resolve_on_clear: true`` (``smoke: false`` resolves the alarm);
- ``flapping: null`` on both, so that the frequent raise/clear churn of the run is not held
  open as flapping (documented in docs/rules.md; that suppression is not under test here);
- escalation tiers after 0 s, 4 s and 8 s; where the gateway has it,
  ``stop_escalation_at: never`` (the simulated case system accepts a case at once, and an
  accepted case would otherwise stop escalation beyond the first tier).

The gateway is touched only through its public surfaces: device messages over MQTT (QoS 1;
an action counts once the broker's PUBACK reached the publishing device), the HTTP API with
a bearer token (staff: ``/api/alarms``, ack, resolve; ``/api/devices/{id}/readings``;
``/readyz``; ``/metrics``) and the case system's ``GET /_sim/cases``. One CLI call before the
first start creates the token.

Workload (threads, each with its own ``random.Random`` derived from the seed; every loop is
bounded in count and time):

- *devices* (they start once the gateway has subscribed for the first time: before that the
  broker has no session to keep their messages in): one publisher walks random devices; a
  caller presses (``{"sos": true}``) or cancels (``{"sos": false}``), a smoke detector reports
  ``{"smoke": true|false}``. Every message carries a device timestamp ``ts`` (unique and
  increasing per device): the profile's documented ``ts`` field, which also lets the rule
  engine drop a QoS 1 redelivery of a message it has already seen (same time and value:
  docs/rules.md, "Readings"), and which becomes the alarm's ``occurred_at``.
- *staff*: picks a device whose alarm is open in the model, locks the device (no device
  message in between), publishes a *barrier* on the device's topic (``{"tamper": false}``:
  alarm-class, so it takes the same durable path and order as the device's other messages,
  and no rule of the crash site reacts to it), waits until ``/api/devices/{id}/readings``
  shows it (so every earlier message of the device has been fed to the rules), finds the
  device's open alarm in ``/api/alarms`` and acknowledges or resolves it with a unique note
  (a gateway that answers 409 ``ack_required`` gets the acknowledgement first). A request
  cut off by a kill is *ambiguous*; after the final restart the note on the alarm tells
  whether it took effect.
- *kills*: the main thread starts the gateway, waits for ``/readyz`` (or, now and then, kills
  it while it is still starting), keeps it up for a random while (now and then only until
  a staff command is sent, then 0-30 ms), and ``SIGKILL``s it; it
  stays down for a random while (devices keep publishing: the broker holds the messages for
  the gateway's persistent session). The first cycle and, at random, some later ones end with
  ``SIGTERM`` instead (an operator's restart), which saves the rule engine's snapshot; the full
  run also keeps the gateway up past the 30 s periodic snapshot now and then. So later
  starts restore snapshots that are more or less stale, which is what crashes leave behind.

After the last kill the workload stops, the gateway starts a last time, and the run waits
(bounded) for the escalation window, for a barrier on every device and for the outbox to
drain, then reads every alarm with its events and the case system's cases.

Invariants checked (each counted in ``failures``; any count above zero fails the run):

(a) *presses*. The log of each device is cut into *episodes*: an episode starts with the
    first trigger (press, ``smoke: true``) after the previous episode ended and ends with a
    staff resolve that took effect or, for smoke, an effective ``smoke: false`` (auto-
    resolve). Each episode must have its own alarm: a new id whose ``occurred_at`` is the
    ``ts`` of one of the episode's triggers (``lost_episodes`` otherwise; its triggers count
    as ``lost_presses``). Every trigger must be recorded on the alarm (one ``raised``,
    ``retriggered`` or ``updated`` event each; missing ones are ``lost_presses``) and the
    alarm's ``count`` must cover them (``count_short``). More is allowed and reported
    (``count_excess``): a kill between the gateway's commit and its PUBACK makes the broker
    redeliver a message the gateway already took, and the engine only recognises that copy
    when its state saw the first one. An alarm whose ``occurred_at`` matches no trigger, or
    a second alarm for one episode, is ``extra_alarms``. When a smoke episode has no alarm of
    its own but its raises were recorded on the previous episode's alarm (the alarm was
    still open: a documented update, not a loss), the loss is the previous episode's clear
    (``lost_auto_resolves``).
(b) *clears*. A cancel of an SOS that was active must appear as a ``cleared`` event on the
    alarm (``lost_clears`` counts missing ones); when the episode's last device action is
    such a cancel the alarm shows ``cleared_at``, and when the resident pressed again after a
    cancel it does not (``cleared_but_pressed_again``: the board would show an active call
    as cancelled). A ``smoke: false`` that ends an episode must leave the alarm resolved by
    ``device`` (``lost_auto_resolves``). An episode still going at the end must have its
    alarm open (``wrongly_resolved``). A staff acknowledge or resolve answered 200 must be on
    the alarm at the end, found by its note (``lost_staff_actions``).
(c) *escalations*. At every restart, from the moment ``/readyz`` answers 200: every open,
    unacknowledged alarm must show (``escalation_tier``) every tier whose due time
    (``occurred_at`` + tier ``after``) had passed by then, within 5 s (``escalations_late``;
    alarms that appear in those 5 s, from messages the broker held, are included; if the
    gateway is killed again before 5 s pass, the alarm is ``escalations_inconclusive``, not a
    failure). Once settled at the end, every open unacknowledged alarm shows every tier due
    more than 2 s before (``escalations_missing_final``). A tier seen never goes down
    (``escalation_regressed``). Tiers notified twice are reported (``escalations_repeated``).
(d) *cases*. Once the outbox is drained (``gateway_outbox_pending`` 0): at most one case per
    gateway alarm (``duplicate_cases``: cases whose idempotency key names an alarm that
    already has one), every alarm has a case and carries its ``case_id``
    (``alarms_without_case``), no case names an unknown alarm (``orphan_cases``), and the
    case of every resolved alarm got a ``resolved`` update and that of every cleared SOS
    a ``cleared`` update (``case_updates_missing``).

Figures (kills, presses, alarms, cancels applied, escalation checks and the largest delay
after a restart, cases and create requests, staff commands, ...) and ``failures`` (with up
to 5 ``examples`` each) are returned as one dict; ``ok`` is false when any failure count is
above zero or the run could not settle or drain (the command then exits 1). With
``--workdir`` the evidence (every device's log, every alarm with its events, the cases, the
escalation checks) is kept in ``evidence.json`` next to the gateway's log.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho

__all__ = ["Options", "add_args", "run", "run_suite"]

EXAMPLE = Path(__file__).resolve().parents[2] / "edge_config" / "examples" / "tianlin"
TIERS_S = (0.0, 4.0, 8.0)
ESCALATION_GRACE_S = 5.0       # (c): a tier due while down must show within this after ready
FINAL_TIER_MARGIN_S = 2.0      # (c) at the end: the engine ticks every second
FAILURE_KEYS = ("lost_episodes", "lost_presses", "count_short", "extra_alarms", "lost_clears",
                "cleared_but_pressed_again", "lost_auto_resolves", "wrongly_resolved",
                "lost_staff_actions",
                "escalations_late", "escalations_missing_final", "escalation_regressed",
                "duplicate_cases", "alarms_without_case", "orphan_cases",
                "case_updates_missing")


def _log(msg: str) -> None:
    print(f"[crash] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- options

@dataclass
class Options:
    seed: int = 0
    kills: int = 25
    quick: bool = False
    callers: int = 6                  # emergency callers (3 of the example + extras)
    smokes: int = 4                   # smoke detectors (3 of the example + extras)
    uptime_s: tuple[float, float] = (0.5, 6.0)
    downtime_s: tuple[float, float] = (0.3, 5.0)
    early_kill_p: float = 0.15        # kill while still starting (before /readyz)
    aim_at_staff_p: float = 0.3       # kill just as a staff command is sent
    graceful_p: float = 0.15          # a later cycle ends with SIGTERM (snapshot saved)
    long_uptime_p: float = 0.12       # stay up past the 30 s periodic snapshot
    long_uptime_s: tuple[float, float] = (31.0, 36.0)
    device_gap_s: tuple[float, float] = (0.04, 0.3)
    staff_gap_s: tuple[float, float] = (0.2, 0.9)
    workdir: Path | None = None       # keep everything there (default: a temp dir, removed)
    progress: bool = True

    @classmethod
    def quick_options(cls, seed: int = 0, kills: int = 5, **kw) -> Options:
        """Under a minute on two cores: a few kills, no long uptimes, one SIGTERM (the
        first cycle's, so that later starts restore a snapshot that has grown stale)."""
        return cls(seed=seed, kills=kills, quick=True, callers=5, smokes=4,
                   uptime_s=(0.8, 3.5), downtime_s=(0.3, 3.5), long_uptime_p=0.0,
                   graceful_p=0.0, **kw)


def add_args(p: argparse.ArgumentParser, kills: int = 25, quick_kills: int = 5) -> None:
    """The options of a kill -9 benchmark (this one's, and simulators/bench/crash_care.py's)."""
    p.add_argument("--seed", type=int, default=0, help="random.Random seed of the run")
    p.add_argument("--kills", type=int, default=None,
                   help=f"SIGKILLs of the gateway (default {kills}; --quick: {quick_kills})")
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep site, data, logs here (default: a temporary directory)")


def run(args: argparse.Namespace) -> dict:
    if args.quick:
        opts = Options.quick_options(seed=args.seed, kills=args.kills or 5)
    else:
        opts = Options(seed=args.seed, kills=args.kills or 25)
    opts.workdir = args.workdir
    return run_suite(opts)


def run_suite(opts: Options) -> dict:
    """Run the whole suite; the report dict (``ok``, ``failures``, figures)."""
    return in_workdir(opts.workdir, "bench-crash-", lambda work: CrashRun(opts, work).run())


def in_workdir(workdir: Path | None, prefix: str, run_in: Callable[[Path], dict]) -> dict:
    """``run_in(workdir)``, or in a temporary directory removed afterwards."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        return run_in(workdir)
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        return run_in(Path(tmp))


# ----------------------------------------------------------------------------- helpers

def _us(dt: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (exact; for matching times)."""
    delta = dt - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _parse_us(text: str) -> int:
    return _us(datetime.fromisoformat(text))


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us // 1_000_000, timezone.utc).replace(
        microsecond=us % 1_000_000).isoformat(timespec="microseconds")


def _json(res: httpx.Response) -> dict:
    try:
        body = res.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def _until(cond, timeout: float, interval: float = 0.05):
    """``cond()`` truthy within ``timeout`` s: its value; else None (bounded poll)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def _keep_escalating() -> str:
    """``stop_escalation_at: never`` where the gateway has that setting (docs/case-system.md:
    by default a case the grid accepted stops escalation beyond the first tier; the simulated
    case system accepts at once, which would leave no later tier to check)."""
    from edge_config.schema import CaseSystemUplink

    if "stop_escalation_at" in CaseSystemUplink.model_fields:
        return "  stop_escalation_at: never\n"
    return ""


def _site(dest: Path, opts: Options, mqtt_port: int, case_url: str) -> list[tuple[str, str]]:
    """The crash site; returns ``[(device_id, "caller"|"smoke")]``."""
    from ruamel.yaml import YAML

    shutil.copytree(EXAMPLE, dest)
    # the local broker saves every second (gateway.broker): the alarm devices move to the
    # alarm session 2 s after its subscription, so kills land before, during and after moves
    (dest / "gateway.yaml").write_text(
        f"mqtt:\n  host: 127.0.0.1\n  port: {mqtt_port}\n  max_payload_bytes: 4096\n"
        "  alarm_fence_delay_s: 2\n")
    (dest / "uplinks.yaml").write_text(
        f"case_system:\n  url: {case_url}\n  key_id: tianlin-07\n"
        f"  secret_env: CASE_SYSTEM_SECRET\n  timeout_s: 2\n{_keep_escalating()}")
    yaml = YAML(typ="safe")
    rules = yaml.load((EXAMPLE / "rules.yaml").read_text(encoding="utf-8"))
    for rule in rules["rules"]:
        if rule["id"] == "sos":
            assert rule["auto_resolve_on_clear"] is False and rule["clear_when"]["value"] is False
            rule["flapping"] = None
        elif rule["id"] == "smoke":
            rule["auto_resolve_on_clear"] = True
            rule["flapping"] = None
    rules["escalation"]["tiers"] = [
        {"name": name, "after": f"{int(after)}s", "notify": [name]}
        for name, after in zip(("grid_member", "duty_officer", "street_office"), TIERS_S)]
    (dest / "rules.yaml").write_text(json.dumps(rules, ensure_ascii=False))  # JSON is YAML
    devices = yaml.load((EXAMPLE / "devices.yaml").read_text(encoding="utf-8"))["devices"]
    households = ["h-7-101", "h-7-302", "h-9-201"]
    have = {"emergency_caller": sum(d["type"] == "emergency_caller" for d in devices),
            "smoke_detector": sum(d["type"] == "smoke_detector" for d in devices)}
    for dtype, want, prefix in (("emergency_caller", opts.callers, "caller-x"),
                                ("smoke_detector", opts.smokes, "smoke-x")):
        for i in range(want - have[dtype]):
            dev_id = f"{prefix}-{i + 1}"
            devices.append({"id": dev_id, "type": dtype, "household": households[i % 3],
                            "mqtt": {"topic": f"devices/{dev_id}"}})
    (dest / "devices.yaml").write_text(json.dumps({"devices": devices}, ensure_ascii=False))
    out, n = [], {"emergency_caller": 0, "smoke_detector": 0}
    for d in devices:
        if n[d["type"]] < (opts.callers if d["type"] == "emergency_caller" else opts.smokes):
            n[d["type"]] += 1
            out.append((d["id"], "caller" if d["type"] == "emergency_caller" else "smoke"))
    return out


# ----------------------------------------------------------------------------- processes

class GatewayProc:
    """``gateway run`` as a real process: start, wait for /readyz, SIGKILL, SIGTERM."""

    def __init__(self, site: Path, data: Path, env: dict):
        from gateway.broker import free_port

        self.site, self.data = site, data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, **env)
        self.bin = str(Path(sys.executable).parent / "gateway")
        self.proc: subprocess.Popen | None = None
        self.log = data.parent / "gateway.log"
        self.up = threading.Event()       # serving and ready; cleared before any kill/stop

    def token(self, role: str, name: str) -> str:
        self.data.mkdir(parents=True, exist_ok=True)
        res = subprocess.run([self.bin, "token", "create", "--role", role, "--name", name,
                              "--data", str(self.data)], capture_output=True, text=True,
                             env=self.env, timeout=60)
        if res.returncode != 0:
            raise RuntimeError(f"gateway token create failed: {res.stderr}")
        return res.stdout.strip()

    def start(self) -> None:
        with open(self.log, "ab") as logf:
            logf.write(f"\n===== start {time.strftime('%H:%M:%S')} =====\n".encode())
            logf.flush()
            self.proc = subprocess.Popen(
                [self.bin, "run", "--config", str(self.site), "--data", str(self.data),
                 "--port", str(self.port)], env=self.env, stdout=logf, stderr=logf)

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Wall time at which /readyz first answered 200."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as c:
            while True:
                if self.proc is None or self.proc.poll() is not None:
                    raise RuntimeError(f"gateway exited during start-up; see {self.log}:\n"
                                       f"{self.log_tail()}")
                try:
                    if c.get(f"{self.url}/readyz").status_code == 200:
                        t = time.time()
                        self.up.set()
                        return t
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gateway not ready after {timeout} s:\n{self.log_tail()}")
                time.sleep(0.02)

    def kill(self) -> None:
        self.up.clear()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        self.up.clear()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise RuntimeError("gateway did not stop within 20 s of SIGTERM") from None
        self.proc = None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Publisher:
    """One MQTT client for every simulated device: per-device order is the broker's order."""

    def __init__(self, port: int):
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="crash-devices")
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self._lock = threading.Lock()

    def publish(self, topic: str, payload: dict, timeout: float = 10.0) -> bool:
        """True once the broker acknowledged (PUBACK) the QoS 1 message."""
        with self._lock:
            info = self.c.publish(topic, json.dumps(payload), qos=1)
        try:
            info.wait_for_publish(timeout=timeout)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def killing_run(work: Path, setup: Callable[[int, Any], tuple[GatewayProc, Publisher]],
                kill_loop: Callable[[], None], stop: threading.Event,
                threads: Callable[[], list[threading.Thread]],
                final: Callable[[], dict]) -> dict:
    """The frame of a kill -9 run: Mosquitto and the simulated case system started,
    ``setup(broker port, case system)`` (the site, the gateway process, the publisher),
    ``kill_loop()`` (which starts the workload ``threads``), then ``stop`` set and the threads
    joined, ``final()``'s report; whatever happens, everything stopped in reverse order.
    ``elapsed_s`` added to the report."""
    from gateway.broker import Mosquitto
    from simulators.bench._backlog import start_case_system

    t0 = time.monotonic()
    broker = Mosquitto(workdir=work / "mosquitto").start()
    sim = start_case_system(work / "sim", key_id="tianlin-07")
    gw = pub = None
    try:
        gw, pub = setup(broker.port, sim)
        try:
            kill_loop()
        finally:
            stop.set()
            for t in threads():
                if t.is_alive():
                    t.join(30)
        report = final()
    finally:
        if gw is not None:
            try:
                gw.stop()
            except RuntimeError as exc:
                _log(str(exc))
        if pub is not None:
            pub.close()
        sim.stop()
        broker.cleanup()
    report["elapsed_s"] = round(time.monotonic() - t0, 1)
    return report


# ----------------------------------------------------------------------------- model

@dataclass
class StaffOp:
    kind: str                 # ack | resolve
    alarm_id: int
    note: str
    status: str               # ok | ambiguous | refused
    http: int | None = None   # the answer's status code (None: no answer)
    applied: bool | None = None   # decided at the end for ambiguous ones


@dataclass
class Device:
    id: str
    kind: str                 # caller | smoke
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_us: int = 0
    active: bool = False      # the model's view: an alarm of this device is active (engine)
    open_episode: bool = False
    log: list = field(default_factory=list)   # ("on"|"off", ts_us) | ("staff", StaffOp)
    tainted: int = 0          # publishes without PUBACK: the device is left out of (a)/(b)

    @property
    def topic(self) -> str:
        return f"devices/{self.id}"

    @property
    def rule(self) -> str:
        return "sos" if self.kind == "caller" else "smoke"

    @property
    def payload_key(self) -> str:
        return "sos" if self.kind == "caller" else "smoke"

    def next_ts(self) -> int:
        us = max(int(time.time() * 1_000_000), self.last_us + 1)
        self.last_us = us
        return us


# ----------------------------------------------------------------------------- the run

class CrashRun:
    def __init__(self, opts: Options, work: Path):
        self.o = opts
        self.work = work
        self.rng = random.Random(opts.seed)
        self.rng_kill = random.Random(self.rng.getrandbits(64))
        self.rng_dev = random.Random(self.rng.getrandbits(64))
        self.rng_staff = random.Random(self.rng.getrandbits(64))
        self.model_lock = threading.Lock()
        self.stop_workload = threading.Event()
        self.devices: list[Device] = []
        self.ops = 0
        self.diag: dict[str, int] = {
            "staff_barrier_timeouts": 0, "staff_no_open_alarm": 0, "staff_refused": 0,
            "staff_ack_required": 0, "staff_interrupted": 0,
            "staff_ambiguous": 0, "staff_acks": 0, "staff_resolves": 0, "unacked_publishes": 0,
            "cancels_without_alarm": 0, "barriers": 0}
        self.esc: list[dict] = []                 # (c) per (restart, alarm)
        self.max_tier: dict[int, int] = {}        # highest escalation_tier seen per alarm
        self.regressed: set[int] = set()
        self.kills = self.graceful = self.early = self.restarts = self.aimed = 0
        self.staff_posting = threading.Event()    # set as a staff command is sent
        self.t_down: float | None = None          # wall time of the last kill/stop
        self.t0 = time.monotonic()

    def log(self, msg: str) -> None:
        if self.o.progress:
            _log(f"{time.monotonic() - self.t0:6.1f} s  {msg}")

    # -- top level -------------------------------------------------------------------
    def run(self) -> dict:
        self.t0 = time.monotonic()

        def setup(broker_port: int, sim: Any) -> tuple[GatewayProc, Publisher]:
            devices = _site(self.work / "site", self.o, broker_port, sim.url)
            self.devices = [Device(d, k) for d, k in devices]
            self.gw = GatewayProc(self.work / "site", self.work / "data",
                                  {"CASE_SYSTEM_SECRET": sim.secret})
            self.token = self.gw.token("duty", "crash-staff")
            self.sim_url = sim.url
            self.pub = Publisher(broker_port)
            self.log(f"seed {self.o.seed}: {len(self.devices)} devices, {self.o.kills} kills; "
                     f"work dir {self.work}")
            self.threads = [threading.Thread(target=self._devices_loop, name="crash-devices"),
                            threading.Thread(target=self._staff_loop, name="crash-staff")]
            return self.gw, self.pub

        return killing_run(self.work, setup, self._kill_loop, self.stop_workload,
                           lambda: self.threads, self._final)

    # -- kills -----------------------------------------------------------------------
    def _kill_loop(self) -> None:
        gw, r = self.gw, self.rng_kill
        cycle = 0
        max_cycles = 3 * self.o.kills + 2
        while self.kills < self.o.kills and cycle < max_cycles:
            cycle += 1
            gw.start()
            t_start = time.monotonic()
            if cycle > 1 and r.random() < self.o.early_kill_p:
                time.sleep(r.uniform(0.05, 1.5))    # a moment during start-up / recovery
                gw.kill()
                self.kills += 1
                self.early += 1
                self.t_down = time.time()
                self.log(f"cycle {cycle}: SIGKILL {time.monotonic() - t_start:.2f} s after "
                         f"spawn (before /readyz); kills {self.kills}/{self.o.kills}")
                time.sleep(r.uniform(*self.o.downtime_s))
                continue
            t_ready = gw.wait_ready()
            ready_s = time.monotonic() - t_start
            self.restarts += 1
            if cycle == 1:
                # Devices start once the gateway has subscribed: its persistent session then
                # exists and the broker keeps what they publish while it is down. (A message
                # published before any subscriber exists is dropped by the broker.)
                for t in self.threads:
                    t.start()
            long = cycle > 1 and r.random() < self.o.long_uptime_p
            uptime = r.uniform(*(self.o.long_uptime_s if long else self.o.uptime_s))
            kill_at = time.monotonic() + uptime
            graceful = cycle == 1 or r.random() < self.o.graceful_p
            aim = not graceful and r.random() < self.o.aim_at_staff_p
            delay = r.uniform(0.0, 0.03)
            watch = threading.Thread(target=self._watch_escalations, args=(t_ready,),
                                     name="crash-escalations")
            watch.start()
            if aim:
                # kill while a staff command is on the wire: between its commit and its
                # answer, or before the engine heard of it
                self.staff_posting.clear()
                if self.staff_posting.wait(max(0.0, kill_at - time.monotonic())):
                    time.sleep(delay)
                    self.aimed += 1
            else:
                time.sleep(max(0.0, kill_at - time.monotonic()))
            if graceful:
                gw.stop()
                self.graceful += 1
            else:
                gw.kill()
                self.kills += 1
            up_s = time.monotonic() - (kill_at - uptime)
            watch.join(10)
            self.t_down = time.time()
            self.log(f"cycle {cycle}: ready {ready_s:.1f} s after spawn; "
                     f"{'SIGTERM' if graceful else 'SIGKILL'} after {up_s:.1f} s up"
                     f"{' (as a staff command was sent)' if aim and up_s < uptime else ''}; "
                     f"kills {self.kills}/{self.o.kills}")
            time.sleep(r.uniform(*self.o.downtime_s))

    # -- (c) escalations after a restart ----------------------------------------------
    def _watch_escalations(self, t_ready: float, final: bool = False) -> None:
        """(c): poll the open alarms for ESCALATION_GRACE_S after /readyz (in a thread of its
        own while the main thread times the kill; a kill ends it early): every raised alarm
        must show each tier due by ``t_ready``. Alarms that appear during the window
        (messages the broker held while the gateway was down) are checked too."""
        t_down = self.t_down
        end = time.monotonic() + ESCALATION_GRACE_S
        killed = False
        pending: dict[int, dict] = {}
        with httpx.Client(base_url=self.gw.url, timeout=2.0,
                          headers={"Authorization": f"Bearer {self.token}"}) as api:
            for _ in range(1000):
                if time.monotonic() > end:
                    break
                if not self.gw.up.is_set():
                    killed = True
                    break
                now = time.time()    # what the answer shows was so by now at the latest
                try:
                    alarms = api.get("/api/alarms", params={"state": "open",
                                                            "limit": 5000}).json()["alarms"]
                except (httpx.HTTPError, ValueError, KeyError):
                    alarms = None
                for a in alarms or ():
                    self._note_tier(a)
                    rec = pending.get(a["id"])
                    if rec is not None and rec["outcome"]:
                        continue
                    occurred = _parse_us(a["occurred_at"]) / 1e6
                    due = [occurred + s for s in TIERS_S if occurred + s <= t_ready]
                    if not due:
                        continue
                    if rec is None:
                        rec = pending[a["id"]] = {
                            "alarm": a["id"], "expected": len(due), "final": final,
                            "due_while_down": t_down is not None and any(d > t_down
                                                                         for d in due),
                            "outcome": None, "delay_s": None}
                    rec["tier"] = a["escalation_tier"]
                    if a["state"] != "raised":
                        rec["outcome"] = "acknowledged"
                    elif a["escalation_tier"] >= rec["expected"]:
                        rec["outcome"] = "ok"
                        rec["delay_s"] = round(max(0.0, now - t_ready), 3)
                if alarms is not None:
                    open_ids = {a["id"] for a in alarms}
                    for aid, rec in pending.items():    # resolved meanwhile: nothing to show
                        if rec["outcome"] is None and aid not in open_ids:
                            rec["outcome"] = "resolved"
                time.sleep(0.1)
        for rec in pending.values():
            if rec["outcome"] is None:
                rec["outcome"] = "inconclusive" if killed else "late"
            self.esc.append(rec)

    def _note_tier(self, a: dict) -> None:
        tier = a.get("escalation_tier") or 0
        best = self.max_tier.get(a["id"], 0)
        if tier < best:
            self.regressed.add(a["id"])
        else:
            self.max_tier[a["id"]] = tier

    # -- workload: devices ------------------------------------------------------------
    def _devices_loop(self) -> None:
        r = self.rng_dev
        deadline = time.monotonic() + 3600
        for _ in range(1_000_000):
            if self.stop_workload.is_set() or time.monotonic() > deadline:
                return
            time.sleep(r.uniform(*self.o.device_gap_s))
            dev = r.choice(self.devices)
            roll = r.random()
            if not dev.lock.acquire(blocking=False):
                continue            # staff is working on this device
            try:
                if dev.kind == "caller":
                    on = roll < (0.45 if dev.active else 0.85)
                else:
                    on = roll < (0.4 if dev.active else 0.85)
                us = dev.next_ts()
                ok = self.pub.publish(dev.topic, {dev.payload_key: on, "ts": _iso(us)})
                with self.model_lock:
                    if not ok:
                        dev.tainted += 1
                        self.diag["unacked_publishes"] += 1
                        continue
                    dev.log.append(("on" if on else "off", us))
                    if on:
                        dev.active = dev.open_episode = True
                    elif dev.active:
                        dev.active = False
                        if dev.kind == "smoke":
                            dev.open_episode = False      # auto-resolve
                    else:
                        self.diag["cancels_without_alarm"] += 1
            finally:
                dev.lock.release()

    # -- workload: staff --------------------------------------------------------------
    def _staff_loop(self) -> None:
        r = self.rng_staff
        deadline = time.monotonic() + 3600
        with httpx.Client(timeout=2.0, headers={"Authorization": f"Bearer {self.token}"}) as api:
            for _ in range(100_000):
                if self.stop_workload.is_set() or time.monotonic() > deadline:
                    return
                time.sleep(r.uniform(*self.o.staff_gap_s))
                with self.model_lock:
                    candidates = [d for d in self.devices if d.open_episode and not d.tainted]
                if not candidates or not self.gw.up.is_set():
                    continue
                dev = r.choice(candidates)
                kind = "ack" if r.random() < 0.3 else "resolve"
                reason = r.choice(["handled", "false_alarm"])
                if not dev.lock.acquire(timeout=5):
                    continue
                try:
                    self._staff_op(api, dev, kind, reason)
                finally:
                    dev.lock.release()

    def _staff_op(self, api: httpx.Client, dev: Device, kind: str, reason: str) -> None:
        base = self.gw.url
        us = dev.next_ts()
        if not self.pub.publish(dev.topic, {"tamper": False, "ts": _iso(us)}):
            self.diag["unacked_publishes"] += 1
            return
        self.diag["barriers"] += 1

        def barrier_seen() -> bool:
            if not self.gw.up.is_set():
                return True
            try:
                res = api.get(f"{base}/api/devices/{dev.id}/readings")
                return res.status_code == 200 and any(
                    x["kind"] == "tamper" and _parse_us(x["ts"]) == us
                    for x in res.json()["readings"])
            except (httpx.HTTPError, ValueError, KeyError):
                return False

        seen = _until(barrier_seen, 4.0)
        if not self.gw.up.is_set():
            self.diag["staff_interrupted"] += 1      # the gateway was killed meanwhile
            return
        if not seen:
            self.diag["staff_barrier_timeouts"] += 1
            return

        def open_alarm() -> dict | None:
            try:
                res = api.get(f"{base}/api/alarms", params={"state": "open", "limit": 5000})
                for a in res.json()["alarms"]:
                    if a["device_id"] == dev.id and a["rule_id"] == dev.rule:
                        return a
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            return None

        alarm = _until(open_alarm, 1.5)
        if alarm is None:
            if self.gw.up.is_set():
                self.diag["staff_no_open_alarm"] += 1
            return
        if kind == "ack" and alarm["state"] != "raised":
            kind = "resolve"
        res = self._post_op(api, dev, alarm["id"], kind, reason)
        if res is not None and kind == "resolve" and res.status_code == 409 \
                and _json(res).get("code") == "ack_required":
            # a gateway that wants a critical alarm acknowledged before it is resolved
            # (409 ack_required): as a duty officer does, acknowledge it, then resolve
            res = self._post_op(api, dev, alarm["id"], "ack", reason)
            if res is not None and res.status_code == 200:
                self._post_op(api, dev, alarm["id"], "resolve", reason)

    def _post_op(self, api: httpx.Client, dev: Device, alarm_id: int, kind: str,
                 reason: str) -> httpx.Response | None:
        """One staff command with a unique note, logged in the device's model (device
        locked by the caller). None when the answer was lost (the gateway was killed)."""
        self.ops += 1
        note = f"crash-op-{self.ops}"
        path = f"{self.gw.url}/api/alarms/{alarm_id}/{kind}"
        body = {"note": note} if kind == "ack" else {"reason": reason, "note": note}
        res = None
        try:
            self.staff_posting.set()
            res = api.post(path, json=body)
            status = "ok" if res.status_code == 200 else "refused"
        except httpx.HTTPError:
            status = "ambiguous"    # decided at the end by the note on the alarm
        op = StaffOp(kind, alarm_id, note, status, http=res.status_code if res else None)
        with self.model_lock:
            dev.log.append(("staff", op))
            if status == "refused":
                assert res is not None   # refused: the API answered
                ack_first = res.status_code == 409 and _json(res).get("code") == "ack_required"
                self.diag["staff_ack_required" if ack_first else "staff_refused"] += 1
            elif status == "ambiguous":
                self.diag["staff_ambiguous"] += 1
            self.diag["staff_acks" if kind == "ack" else "staff_resolves"] += 1
            if kind == "resolve" and status == "ok":
                dev.active = dev.open_episode = False
        return res

    # -- the end -----------------------------------------------------------------------
    def _final(self) -> dict:
        gw = self.gw
        gw.start()
        t_ready = gw.wait_ready()
        self.restarts += 1
        self.log("final restart: ready; watching escalations, then settling")
        self._watch_escalations(t_ready, final=True)
        api = httpx.Client(base_url=gw.url, timeout=5.0,
                           headers={"Authorization": f"Bearer {self.token}"})
        try:
            settled = self._settle(api)
            self.log(f"settled: {settled}; waiting for the outbox to drain")
            drained = _until(lambda: _metric(api.get("/metrics").text,
                                             "gateway_outbox_pending") == 0, 60.0, 0.2)
            metrics = api.get("/metrics").text
            t_final = time.time()
            alarms = api.get("/api/alarms", params={"limit": 5000}).json()["alarms"]
            for a in alarms:
                self._note_tier(a)
            full = {}
            for a in alarms:
                full[a["id"]] = api.get(f"/api/alarms/{a['id']}").json()
            cases = httpx.get(f"{self.sim_url}/_sim/cases", timeout=10).json()
        finally:
            api.close()
        self.log(f"collected {len(full)} alarms and {cases['count']} cases")
        report = self._evaluate(full, cases, metrics, t_final, settled, bool(drained))
        if self.o.workdir is not None:        # the evidence behind the figures, for a reader
            evidence = {"devices": {d.id: [[e[0], _iso(e[1])] if e[0] != "staff" else
                                           ["staff", vars(e[1])] for e in d.log]
                                    for d in self.devices},
                        "alarms": full, "cases": cases, "escalation_checks": self.esc}
            (self.work / "evidence.json").write_text(
                json.dumps(evidence, ensure_ascii=False, indent=1, default=str))
        return report

    def _settle(self, api: httpx.Client) -> bool:
        """Barrier on every device: each one's last message has reached the rules."""
        marks = {}
        for dev in self.devices:
            us = dev.next_ts()
            if self.pub.publish(dev.topic, {"tamper": False, "ts": _iso(us)}):
                marks[dev.id] = us

        def all_seen() -> bool:
            for dev_id, us in list(marks.items()):
                try:
                    res = api.get(f"/api/devices/{dev_id}/readings")
                    if any(x["kind"] == "tamper" and _parse_us(x["ts"]) == us
                           for x in res.json()["readings"]):
                        del marks[dev_id]
                except (httpx.HTTPError, ValueError, KeyError):
                    return False
            return not marks

        ok = bool(_until(all_seen, 30.0, 0.1))
        time.sleep(0.5)      # the alarm commit after the rules took the last reading
        if not ok:
            self.log(f"settle: barrier not seen for {sorted(marks)}")
        return ok

    # -- evaluation --------------------------------------------------------------------
    def _evaluate(self, alarms: dict[int, dict], cases: dict, metrics: str, t_final: float,
                  settled: bool, drained: bool) -> dict:
        fail = dict.fromkeys(FAILURE_KEYS, 0)
        examples: dict[str, list] = {k: [] for k in FAILURE_KEYS}

        def bad(key: str, /, n: int = 1, **example) -> None:   # an example may have a "key"
            if n <= 0:
                return
            fail[key] += n
            if len(examples[key]) < 5:
                examples[key].append(example)

        figures = {"presses": 0, "smoke_raises": 0, "cancels": 0, "cancels_effective": 0,
                   "cancels_applied": 0, "smoke_clears_effective": 0,
                   "smoke_clears_applied": 0, "episodes": 0, "count_excess": 0,
                   "staff_ops_effective": 0, "tainted_devices": 0, "escalations_repeated": 0}

        # decide ambiguous staff ops by the note on the alarm
        for dev in self.devices:
            for entry in dev.log:
                if entry[0] != "staff":
                    continue
                op: StaffOp = entry[1]
                a = alarms.get(op.alarm_id)
                on_alarm = a is not None and (
                    a.get("resolve_note") == op.note if op.kind == "resolve"
                    else a.get("ack_note") == op.note)
                if op.status == "ok":
                    op.applied = True
                    if not on_alarm:
                        bad("lost_staff_actions", device=dev.id, alarm=op.alarm_id,
                            op=op.kind, note=op.note)
                elif op.status == "ambiguous":
                    op.applied = on_alarm
                else:
                    op.applied = False
                figures["staff_ops_effective"] += int(bool(op.applied))

        by_key: dict[tuple[str, str], list[dict]] = {}
        for a in alarms.values():
            by_key.setdefault((a["device_id"], a["rule_id"]), []).append(a)
        known = {d.id for d in self.devices}
        for (dev_id, rule), lst in by_key.items():
            if dev_id not in known:
                for a in lst:
                    bad("extra_alarms", alarm=a["id"], device=dev_id, rule=rule,
                        why="not a device of the run")

        for dev in self.devices:
            episodes = self._episodes(dev)
            figures["episodes"] += len(episodes)
            for ep in episodes:
                figures["presses" if dev.kind == "caller" else "smoke_raises"] += len(ep["on"])
                if dev.kind == "caller":
                    figures["cancels_effective"] += ep["clears"]
                elif ep["close"] and ep["close"][0] == "device":
                    figures["smoke_clears_effective"] += 1
            if dev.kind == "caller":
                figures["cancels"] += sum(1 for e in dev.log if e[0] == "off")
            if dev.tainted:
                figures["tainted_devices"] += 1
                continue
            self._check_device(dev, episodes, by_key.get((dev.id, dev.rule), []), bad, figures)
            for (dev_id, rule), lst in by_key.items():
                if dev_id == dev.id and rule != dev.rule:
                    for a in lst:
                        bad("extra_alarms", alarm=a["id"], device=dev_id, rule=rule,
                            why="rule the run never triggers")

        # (c) escalations
        late = [e for e in self.esc if e["outcome"] == "late"]
        for e in late:
            bad("escalations_late", alarm=e["alarm"], expected_tier=e["expected"],
                shown_tier=e["tier"], due_while_down=e["due_while_down"], final=e["final"])
        for a in alarms.values():
            if a["state"] != "raised":
                continue
            occurred = _parse_us(a["occurred_at"]) / 1e6
            expected = sum(1 for s in TIERS_S if occurred + s <= t_final - FINAL_TIER_MARGIN_S)
            if a["escalation_tier"] < expected:
                bad("escalations_missing_final", alarm=a["id"], device=a["device_id"],
                    expected_tier=expected, shown_tier=a["escalation_tier"],
                    age_s=round(t_final - occurred, 1))
        for a in alarms.values():
            tiers = [e["detail"].get("tier", 0) for e in a.get("events", ())
                     if e["action"] == "escalated"]
            figures["escalations_repeated"] += sum(
                1 for k, t in enumerate(tiers) if any(t <= u for u in tiers[:k]))
        for aid in sorted(self.regressed):
            bad("escalation_regressed", alarm=aid, highest_seen=self.max_tier.get(aid))

        # (d) cases
        per_alarm: dict[int, list[dict]] = {}
        for c in cases["cases"]:
            try:
                _prefix, alarm_id, n = c["idempotency_key"].rsplit("-", 2)
                per_alarm.setdefault(int(alarm_id), []).append(c)
            except ValueError:
                bad("orphan_cases", case=c["case_id"], key=c["idempotency_key"])
        for aid, cs in per_alarm.items():
            if aid not in alarms:
                bad("orphan_cases", n=len(cs), alarm=aid, cases=[c["case_id"] for c in cs])
            bad("duplicate_cases", n=len(cs) - 1, alarm=aid, cases=[c["case_id"] for c in cs])
        for aid, a in alarms.items():
            if a.get("test"):
                continue
            cs = per_alarm.get(aid, [])
            if not cs or a.get("case_id") not in {c["case_id"] for c in cs}:
                bad("alarms_without_case", alarm=aid, case_id=a.get("case_id"),
                    cases=[c["case_id"] for c in cs])
                continue
            case = next(c for c in cs if c["case_id"] == a["case_id"])
            kinds = {u.get("kind") for u in case.get("updates", [])}
            # a clear recorded on an alarm already resolved (after_resolved) is history only
            cleared = sum(1 for e in a.get("events", []) if e["action"] == "cleared"
                          and not (e.get("detail") or {}).get("after_resolved"))
            if a["state"] == "resolved" and "resolved" not in kinds:
                bad("case_updates_missing", alarm=aid, case=case["case_id"], missing="resolved")
            if cleared and a.get("resolved_by") != "device" and "cleared" not in kinds:
                bad("case_updates_missing", alarm=aid, case=case["case_id"], missing="cleared")

        esc_checked = [e for e in self.esc if e["outcome"] in ("ok", "late")]
        delays = [e["delay_s"] for e in self.esc if e["outcome"] == "ok"]
        down_delays = [e["delay_s"] for e in self.esc
                       if e["outcome"] == "ok" and e["due_while_down"]]
        report = {
            "seed": self.o.seed, "kills": self.kills, "kills_before_ready": self.early,
            "kills_aimed_at_staff_commands": self.aimed,
            "graceful_restarts": self.graceful, "restarts_checked": self.restarts,
            "devices": len(self.devices),
            **figures,
            "alarms": len(alarms),
            "alarms_open": sum(a["state"] != "resolved" for a in alarms.values()),
            "escalations_checked": len(esc_checked),
            "escalations_due_while_down": sum(e["due_while_down"] for e in esc_checked),
            "escalations_inconclusive": sum(e["outcome"] == "inconclusive" for e in self.esc),
            "escalation_max_delay_after_ready_s": max(delays, default=None),
            "escalation_max_delay_due_while_down_s": max(down_delays, default=None),
            "cases": cases["count"], "case_create_requests": cases["create_requests_total"],
            "outbox_drained": drained, "outbox_failed": _metric(metrics,
                                                                "gateway_outbox_failed"),
            "settled": settled,
            **self.diag,
            "failures": fail,
            "failed_assertions": sorted(k for k, v in fail.items() if v),
            "examples": {k: v for k, v in examples.items() if v},
        }
        report["ok"] = not any(fail.values()) and settled and drained
        return report

    def _episodes(self, dev: Device) -> list[dict]:
        """The device's log cut into episodes (see the module docstring)."""
        episodes: list[dict] = []
        cur: dict | None = None
        active = False
        for entry in dev.log:
            what = entry[0]
            if what == "on":
                if cur is None:
                    cur = {"on": [], "clears": 0, "last_off": False, "close": None,
                           "clear_ts": []}
                cur["on"].append(entry[1])
                cur["last_off"] = False
                active = True
            elif what == "off":
                if cur is not None and active:
                    active = False
                    cur["clears"] += 1
                    cur["last_off"] = True
                    cur["clear_ts"].append(entry[1])
                    if dev.kind == "smoke":
                        cur["close"] = ("device", entry[1])
                        episodes.append(cur)
                        cur = None
            else:
                op: StaffOp = entry[1]
                if op.kind == "resolve" and op.applied and cur is not None:
                    cur["close"] = ("staff", op.alarm_id, op.note)
                    episodes.append(cur)
                    cur = None
                    active = False
        if cur is not None:
            episodes.append(cur)
        return episodes

    def _check_device(self, dev: Device, episodes: list[dict], alarms: list[dict], bad,
                      figures: dict) -> None:
        alarms = sorted(alarms, key=lambda a: a["id"])
        ep_of_ts = {us: i for i, ep in enumerate(episodes) for us in ep["on"]}
        own: dict[int, list[dict]] = {}
        for a in alarms:
            i = ep_of_ts.get(_parse_us(a["occurred_at"]))
            if i is None:
                bad("extra_alarms", alarm=a["id"], device=dev.id,
                    occurred_at=a["occurred_at"], why="matches no trigger of the device")
                continue
            own.setdefault(i, []).append(a)
        groups: list[tuple[dict, list[int]]] = []     # (alarm, episode indexes)
        for i, ep in enumerate(episodes):
            mine = own.get(i, [])
            if mine:
                for extra in mine[1:]:
                    bad("extra_alarms", alarm=extra["id"], device=dev.id,
                        why=f"second alarm for one episode (first {mine[0]['id']})")
                groups.append((mine[0], [i]))
                continue
            prev_close = episodes[i - 1]["close"] if i else None
            if groups and groups[-1][1][-1] == i - 1 and prev_close \
                    and prev_close[0] == "device":
                a, idx = groups[-1]
                carried = sum(len(episodes[j]["on"]) for j in idx) + len(ep["on"])
                if _hits(a) >= carried:
                    # The previous episode ended with smoke: false, yet this episode's raises
                    # reached its alarm: the alarm was still open, so they are not lost;
                    # what was lost is that clear (its auto-resolve).
                    bad("lost_auto_resolves", device=dev.id, alarm=a["id"],
                        why="a later raise was recorded on it: the clear never resolved it")
                    idx.append(i)
                    continue
            bad("lost_episodes", device=dev.id, presses=len(ep["on"]),
                first_press=_iso(ep["on"][0]),
                previous_alarm=groups[-1][0]["id"] if groups else None,
                previous_end=prev_close[0] if prev_close else None)
            bad("lost_presses", n=len(ep["on"]), device=dev.id, why="episode without alarm",
                first_press=_iso(ep["on"][0]))
        for a, idx in groups:
            eps = [episodes[j] for j in idx]
            carried = sum(len(e["on"]) for e in eps)
            hits = _hits(a)
            if hits < carried:
                bad("lost_presses", n=carried - hits, device=dev.id, alarm=a["id"],
                    presses=carried, recorded_on_alarm=hits, why="no trace on the alarm")
            if a["count"] < min(hits, carried):
                bad("count_short", n=min(hits, carried) - a["count"], device=dev.id,
                    alarm=a["id"], count=a["count"], presses=carried, recorded_on_alarm=hits)
            figures["count_excess"] += max(0, a["count"] - carried)
            last = eps[-1]
            close = last["close"]
            if close is None:
                if a["state"] == "resolved":
                    bad("wrongly_resolved", device=dev.id, alarm=a["id"],
                        resolved_by=a.get("resolved_by"), reason=a.get("resolve_reason"))
            elif close[0] == "device":
                if a["state"] != "resolved" or a.get("resolved_by") != "device" \
                        or not a.get("cleared_at"):
                    bad("lost_auto_resolves", device=dev.id, alarm=a["id"], state=a["state"],
                        resolved_by=a.get("resolved_by"), cleared_at=a.get("cleared_at"))
                else:
                    figures["smoke_clears_applied"] += 1
            if dev.kind == "caller":
                want = sum(e["clears"] for e in eps)
                got = sum(1 for e in a.get("events", []) if e["action"] == "cleared")
                figures["cancels_applied"] += min(want, got)
                if got < want:
                    bad("lost_clears", n=want - got, device=dev.id, alarm=a["id"],
                        cancels=want, cleared_events=got)
                elif last["last_off"] and not a.get("cleared_at"):
                    bad("lost_clears", device=dev.id, alarm=a["id"],
                        why="last action a cancel, but cleared_at is empty")
                if want and not last["last_off"] and a.get("cleared_at"):
                    # pressed again after a cancel: the alarm is active again (docs/rules.md:
                    # "a new trigger updates it"); showing it cancelled misleads the board
                    bad("cleared_but_pressed_again", device=dev.id, alarm=a["id"],
                        cleared_at=a["cleared_at"])


def _hits(alarm: dict) -> int:
    """Triggers recorded on an alarm: its ``raised``, ``retriggered`` and ``updated`` events
    (with flapping off, each is one trigger the rules applied to it)."""
    return sum(1 for e in alarm.get("events", ())
               if e["action"] in ("raised", "retriggered", "updated"))
