"""A community's ordinary day, and what it costs a Raspberry Pi (issue 18, part 3).

``python -m simulators.bench day [--quick] [--minutes 30] [--households 880]``

The real gateway process (``gateway run``: embedded telemetry on, as by default, the
simulated case system, its API) on a generated community of ``--households`` (880: 5,001
devices), at real time (no scaling: the figures are per real minute and per day):

* every sensor and meter reports once a minute (motion, door contacts, water meters,
  electricity meters with energy and power, entrance readers), spread evenly over the
  minute; QoS 1. Smoke detectors and emergency callers report only their hourly heartbeat,
  as such devices do: a ``smoke: false`` once a minute from each detector would be
  alarm-class traffic (every such reading takes the durable inbox path, two commits with
  an fsync each: ~29 fsyncs/s for 880 detectors, measured while writing this benchmark);
* hourly battery heartbeats of every battery device (motion, door, smoke, callers), spread
  over the hour;
* ``--alarms-per-hour`` SOS presses (4), at even times.

After ``--warmup-s`` (60 s; quick 3 s) the run measures for ``--minutes`` (quick 0.67):
resident memory every 5 s (steady: the median of the window's second half; and the peak),
CPU as % of one core (``/proc/PID/stat`` utime + stime over the window), bytes written
(``/proc/PID/io`` ``write_bytes``: what reached the block layer, and ``wchar``: what the
process asked to write) and the data directory's growth, both extrapolated to a day. Then,
for ``--strace-s`` (60 s; quick 4 s) after the window, ``strace -f -c -e
trace=fsync,fdatasync,sync_file_range`` is attached to the process: fsyncs per minute (apart
from the window, because ptrace slows every system call of the process and would distort the
CPU figure). Bars: steady RSS <= 150 MB (goal 100), writes <= 1 GB/day (goal 200 MB/day);
CPU is reported (goal <= 3 %).

``--quick`` (3 s warm-up, a 40 s window, 4 s of strace) finishes in under a minute with
the set-up and the stop; its writes per day miss what comes every few minutes or less often
(the rollups of a closed five-minute bucket, WAL checkpoints) and its memory is the first
minute's: a smoke test, not the figure (docs/benchmarks.md, "day").
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho

from simulators.bench._rig import ProcStats, Rig, community_rig, uptime, wait_alarm_split
from simulators.community import DeviceSpec

__all__ = ["add_args", "run"]


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--households", type=int, default=880, help="880: 5,001 devices")
    p.add_argument("--one-session", action="store_true",
                   help="the gateway without its alarm session (before issue 18's eighth round)")
    p.add_argument("--minutes", type=float, default=30.0, help="measured window, real time")
    p.add_argument("--warmup-s", type=float, default=60.0)
    p.add_argument("--strace-s", type=float, default=60.0, help="fsync count after the window")
    p.add_argument("--alarms-per-hour", type=float, default=4.0)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--telemetry-flush-s", type=float, default=None,
                   help="uplinks.yaml telemetry flush_s (default: the gateway's default)")


def run(args: argparse.Namespace) -> dict:
    if args.quick:
        args.minutes, args.warmup_s, args.strace_s = 40 / 60, 3.0, 4.0
    out: dict = {"load_before": uptime(), "households": args.households,
                 "minutes": round(args.minutes, 2)}
    flush = args.telemetry_flush_s
    out["telemetry"] = {"flush_s": flush} if flush else "defaults"
    out["alarm_session"] = not args.one_session
    with community_rig("bench-day-", args.households, args.workdir,
                       alarm_session=not args.one_session,
                       telemetry={"flush_s": flush} if flush else None) as rig:
        out["devices"] = len(rig.community.devices)
        gw = rig.gateway()
        gw.token("duty", "bench-day")
        gw.start()
        try:
            gw.wait_ready(300)
            wait_alarm_split(gw.url)        # the alarm devices' one-time move, before the day
            assert gw.proc is not None
            stats = ProcStats(gw.proc.pid)
            stop = threading.Event()
            traffic = _Traffic(rig, args.alarms_per_hour, stop)
            traffic.start()
            time.sleep(args.warmup_s)
            out.update(_window(stats, rig.work / "data", args.minutes * 60, traffic))
            out["fsync"] = _fsyncs(gw.proc.pid, args.strace_s)
            stop.set()
            traffic.join(30)
            out["messages_sent"] = traffic.sent
            out["alarms_sent"] = traffic.alarms
        finally:
            gw.stop()
    out["load_after"] = uptime()
    out["bars"] = {"steady_rss_mb": 150, "write_mb_per_day": 1000}
    out["goals"] = {"steady_rss_mb": 100, "write_mb_per_day": 200, "cpu_pct_one_core": 3}
    out["meets_bars"] = {"steady_rss": out["steady_rss_mb"] <= 150,
                         "writes": out["write_bytes_mb_per_day"] <= 1000}
    return out


class _Traffic(threading.Thread):
    """The community's day on the wire (see the module docstring), until ``stop``."""

    def __init__(self, rig: Rig, alarms_per_hour: float, stop: threading.Event):
        super().__init__(name="day-traffic", daemon=True)
        self.port, self.stop = rig.broker.port, stop
        devices = rig.community.devices
        self.minutely = [d for d in devices if d.type not in ("emergency_caller",
                                                              "smoke_detector")]
        self.hourly = [d for d in devices if d.type in ("motion_sensor", "door_contact",
                                                        "smoke_detector", "emergency_caller")]
        self.callers = [d for d in devices if d.type == "emergency_caller"]
        self.alarm_every = 3600.0 / alarms_per_hour if alarms_per_hour > 0 else float("inf")
        self.rng = random.Random(11)
        self.sent = self.alarms = 0

    def _payload(self, d: DeviceSpec, i: int) -> dict:
        r = self.rng
        if d.type == "motion_sensor":
            return {"occupancy": r.random() < 0.3}
        if d.type == "door_contact":
            return {"contact": r.random() < 0.9}
        if d.type == "water_meter":
            return {"volume_m3": round(100 + i * 1e-3, 3)}
        if d.type == "electricity_meter":
            return {"energy_kwh": round(1000 + i * 1e-2, 2), "power_w": round(r.uniform(50, 3e3))}
        if d.type == "door_access":
            return {"result": "granted"}
        return {"battery": 90}

    def run(self) -> None:
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-day",
                        clean_session=True)
        c.max_inflight_messages_set(1000)
        c.connect("127.0.0.1", self.port)
        c.loop_start()
        # (time offset within its period, device, kind): minutely and hourly schedules
        per_min = 60.0 / max(1, len(self.minutely))
        per_hour = 3600.0 / max(1, len(self.hourly))
        t0 = time.monotonic()
        k_min = k_hour = k_alarm = 0
        try:
            while not self.stop.is_set():
                now = time.monotonic() - t0
                while k_min * per_min <= now:
                    d = self.minutely[k_min % len(self.minutely)]
                    c.publish(d.topic, json.dumps(self._payload(d, k_min)), qos=1)
                    k_min += 1
                    self.sent += 1
                while k_hour * per_hour <= now:
                    d = self.hourly[k_hour % len(self.hourly)]
                    c.publish(d.topic, json.dumps({"battery": 80 + k_hour % 20}), qos=1)
                    k_hour += 1
                    self.sent += 1
                while (k_alarm + 0.5) * self.alarm_every <= now:
                    d = self.callers[k_alarm % len(self.callers)]
                    c.publish(d.topic, json.dumps({"action": "emergency"} if d.shape == "z2m"
                                                  else {"event": "sos"}), qos=1)
                    k_alarm += 1
                    self.alarms += 1
                    self.sent += 1
                self.stop.wait(0.05)
        finally:
            c.disconnect()
            c.loop_stop()


def _dir_bytes(data: Path) -> int:
    return sum(p.stat().st_size for p in data.rglob("*") if p.is_file())


def _window(stats: ProcStats, data: Path, seconds: float, traffic: _Traffic) -> dict:
    io0, cpu0, size0, sent0 = stats.io(), stats.cpu_s(), _dir_bytes(data), traffic.sent
    t0 = time.monotonic()
    rss: list[float] = []
    while (elapsed := time.monotonic() - t0) < seconds:
        rss.append(stats.rss_mb())
        time.sleep(min(5.0, max(0.0, seconds - elapsed)))
    wall = time.monotonic() - t0
    io1, cpu1, size1 = stats.io(), stats.cpu_s(), _dir_bytes(data)
    day = 86400.0 / wall
    steady = rss[len(rss) // 2:] or rss
    return {"window_s": round(wall, 1),
            "messages_per_s": round((traffic.sent - sent0) / wall, 1),
            "steady_rss_mb": round(statistics.median(steady), 1),
            "peak_rss_mb": round(stats.peak_rss_mb(), 1),
            "cpu_pct_one_core": round(100 * (cpu1 - cpu0) / wall, 2),
            "write_bytes_mb_per_day": round((io1["write_bytes"] - io0["write_bytes"]) * day / 1e6,
                                            1),
            "wchar_mb_per_day": round((io1["wchar"] - io0["wchar"]) * day / 1e6, 1),
            "data_dir_growth_mb_per_day": round((size1 - size0) * day / 1e6, 1),
            "data_dir_mb": round(size1 / 1e6, 1)}


def _fsyncs(pid: int, seconds: float) -> dict:
    """fsync-family calls of the process (all threads) per minute, counted by strace."""
    strace = shutil.which("strace")
    if strace is None:
        return {"method": "strace not installed", "per_min": None}
    proc = subprocess.Popen([strace, "-f", "-c", "-e", "trace=fsync,fdatasync,sync_file_range",
                             "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(seconds)
    proc.send_signal(signal.SIGINT)
    try:
        _o, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _o, err = proc.communicate()
    calls: dict[str, int] = {}
    for line in err.splitlines():
        parts = line.split()
        if parts and parts[-1] in ("fsync", "fdatasync", "sync_file_range"):
            calls[parts[-1]] = int(parts[3])   # % time, seconds, usecs/call, calls
    total = sum(calls.values())
    return {"method": f"strace -f -c for {seconds:.0f} s after the window", "calls": calls,
            "per_min": round(total * 60 / seconds, 1)}
