"""Ready after a power cut (issue 18, part 4): from process start to ``/readyz`` 200.

``python -m simulators.bench ready [--quick] [--households 10000] [--alarms 50000]``

The real gateway process (``gateway run``) on a generated community of ``--households``
(about 5.7 devices each: 56,955 devices for 10,000), its MQTT broker and the simulated case
system, with a data directory filled directly (fast, not through the service):

* the store: ``--alarms`` alarms of the last month in the history (resolved, each with its
  raised/acknowledged/resolved events and a sent outbox row) and 20 still open;
* the embedded telemetry (``telemetry.db``): ``--raw-rows`` raw points of the last 48 h and
  ``--rollup-rows`` five-minute rollups spread over the last 30 days (the electricity and
  water meters' series), as the service's writer leaves them.

The power cut: the gateway is started once, takes traffic for a few seconds and is killed
with SIGKILL (no snapshot at stop, WAL files left behind as a power cut leaves them); then
``--rounds`` times: start, time to ``/readyz`` 200 (polled every 20 ms), SIGKILL. Reported:
each round and the median, with the start-up phases from the gateway's log (site loaded,
heap settled, MQTT online). Bar 5 s, goal 2 s. Baseline in the same run: the same start of
the example site (a handful of devices, an empty data directory's size of work) —
``ratio_to_small_site``. The gateway runs with its bytecode written once, as an installed
one has it (:func:`_installed`).
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path


from simulators.bench._rig import Workload, community_rig, publish_all, uptime
from simulators.bench.crash import GatewayProc

__all__ = ["add_args", "run"]


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--households", type=int, default=10_000)
    p.add_argument("--alarms", type=int, default=50_000)
    p.add_argument("--raw-rows", type=int, default=2_000_000)
    p.add_argument("--rollup-rows", type=int, default=4_000_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--one-session", action="store_true",
                   help="the gateway without its alarm session (before issue 18's eighth round)")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--code", type=Path, default=None,
                   help="run the gateway from this checkout (PYTHONPATH), e.g. a git worktree "
                        "of an earlier commit: the before of a before/after")


def run(args: argparse.Namespace) -> dict:
    if args.quick:
        args.households, args.alarms = min(args.households, 1000), min(args.alarms, 5000)
        args.raw_rows, args.rollup_rows, args.rounds = 100_000, 200_000, 2
    out: dict = {"load_before": uptime(), "households": args.households,
                 "alarm_history": args.alarms, "code": str(args.code or "this checkout"),
                 "alarm_session": not args.one_session}
    t = time.perf_counter()
    with community_rig("bench-ready-", args.households, args.workdir,
                       alarm_session=not args.one_session) as rig:
        community, work = rig.community, rig.work
        out["devices"] = len(community.devices)
        env = _installed(work, args.code)
        gw = rig.gateway(env)
        gw.token("duty", "bench-ready")          # creates and migrates the store
        _alarm_history(work / "data" / "gateway.db", community, args.alarms)
        meters = [d.id for d in community.devices
                  if d.type in ("water_meter", "electricity_meter")]
        _telemetry(work / "data" / "telemetry.db", meters, args.raw_rows, args.rollup_rows)
        out["generate_s"] = round(time.perf_counter() - t, 1)
        out["data_mb"] = {p.name: round(p.stat().st_size / 1e6, 1)
                          for p in (work / "data").iterdir() if p.suffix == ".db"}
        # before the cut: up, some traffic, SIGKILL
        gw.start()
        gw.wait_ready(300)
        publish_all(rig.broker.port, Workload(community).messages(2000, seed=3))
        time.sleep(2.0)
        gw.kill()
        rounds = [_start(gw) for _ in range(args.rounds)]
        small = _small_site(work, rig.broker.port, env)
    ready = [r["ready_s"] for r in rounds]
    out.update({"ready_s": round(statistics.median(ready), 2), "rounds": rounds,
                "small_site_ready_s": small,
                "ratio_to_small_site": round(statistics.median(ready) / small, 1),
                "bar_s": 5.0, "goal_s": 2.0, "meets_bar": statistics.median(ready) <= 5.0,
                "load_after": uptime()})
    return out


def _start(gw: GatewayProc) -> dict:
    mark = gw.log.stat().st_size if gw.log.exists() else 0
    t0 = time.time()
    gw.start()
    ready_at = gw.wait_ready(300)
    phases = _phases(gw.log, mark, t0)
    gw.kill()
    return {"ready_s": round(ready_at - t0, 2), **phases}


#: log lines of a start, in order: the phase ends at the line's time
_MARKS = {"heap_settled_s": "start-up heap settled", "mqtt_online_s": "-> online"}


def _phases(log: Path, offset: int, t0: float) -> dict:
    out: dict = {}
    with open(log, encoding="utf-8", errors="replace") as fh:
        fh.seek(offset)
        for line in fh:
            for key, text in _MARKS.items():
                if key not in out and text in line and ("mqtt" in line or key != "mqtt_online_s"):
                    t = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                    out[key] = round(t - t0, 2)
    return out


def _installed(work: Path, code: Path | None) -> dict:
    """The gateway's environment as an installed one has it: its modules' bytecode compiled
    once (``deploy/install.sh``'s pip compiles it at install), not again at every start. A
    development checkout's environment may forbid writing it (``PYTHONDONTWRITEBYTECODE``,
    as this one's does): every start then compiled the project's ~170 modules (~0.2 s).
    The first process (``gateway token``) and the start before the cut write it here."""
    env = {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(work / "pycache")}
    if code is not None:
        env["PYTHONPATH"] = str(code)
    return env


def _small_site(work: Path, port: int, env: dict) -> float:
    """The baseline: the example site (a few devices) from an empty data directory."""
    import shutil

    site = work / "small-site"
    shutil.copytree(Path(__file__).resolve().parents[2] / "edge_config" / "examples" / "tianlin",
                    site)
    text = (site / "gateway.yaml").read_text(encoding="utf-8")
    (site / "gateway.yaml").write_text(text.replace("port: 1883", f"port: {port}"),
                                       encoding="utf-8")
    uplinks = site / "uplinks.yaml"
    uplinks.write_text("{}\n", encoding="utf-8")   # no case system
    gw = GatewayProc(site, work / "small-data", env)
    t0 = time.time()
    gw.start()
    try:
        return round(gw.wait_ready(120) - t0, 2)
    finally:
        gw.kill()


# ----------------------------------------------------------------------------- data

def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds")


def _alarm_history(db: Path, community, n: int) -> None:
    """``n`` resolved alarms over the last 30 days (events and a sent outbox row each) and
    20 open ones, written straight into the store's tables."""
    rng = random.Random(7)
    callers = [d for d in community.devices if d.type in ("emergency_caller", "smoke_detector")]
    now = datetime.now(timezone.utc)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN")
        alarms, events, outbox = [], [], []
        for i in range(n + 20):
            d = rng.choice(callers)
            sos = d.type == "emergency_caller"
            t = now - timedelta(seconds=rng.uniform(60, 30 * 86400)) if i < n else \
                now - timedelta(minutes=i - n + 1)
            resolved = i < n
            alarms.append((i + 1, f"{'sos' if sos else 'smoke'}:{d.id}:{i}", "sos" if sos else
                           "smoke", "emergency" if sos else "fire", "critical",
                           "resolved" if resolved else "raised", d.id, d.household,
                           d.grid_cell, f"紧急呼叫：{d.household}", f"Emergency call: {d.household}",
                           "true", _iso(t), _iso(t), _iso(t + timedelta(minutes=9)),
                           "duty" if resolved else None,
                           _iso(t + timedelta(minutes=2)) if resolved else None,
                           "duty" if resolved else None,
                           _iso(t + timedelta(minutes=9)) if resolved else None,
                           "handled" if resolved else None, f"GC-{i:06d}",
                           "closed" if resolved else "accepted"))
            events.append((i + 1, _iso(t), "raised", "rule", "{}"))
            if resolved:
                events.append((i + 1, _iso(t + timedelta(minutes=2)), "acknowledged", "duty",
                               "{}"))
                events.append((i + 1, _iso(t + timedelta(minutes=9)), "resolved", "duty", "{}"))
            outbox.append((i + 1, json.dumps({"alarm_id": i + 1}), _iso(t)))
        conn.executemany(
            "INSERT INTO alarms (id, key, rule_id, category, severity, state, device_id, "
            "household_id, grid_cell, message_zh, message_en, value, occurred_at, raised_at, "
            "updated_at, ack_by, ack_at, resolved_by, resolved_at, resolve_reason, case_id, "
            "case_status) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", alarms)
        conn.executemany("INSERT INTO alarm_events (alarm_id, ts, action, actor, detail) "
                         "VALUES (?,?,?,?,?)", events)
        cols = [r[1] for r in conn.execute("PRAGMA table_info(outbox)")]
        _outbox(conn, cols, outbox)
        conn.execute("COMMIT")
    finally:
        conn.close()


def _outbox(conn: sqlite3.Connection, cols: list[str], rows: list[tuple]) -> None:
    """Delivered case-create rows (``kind`` where the store version has it)."""
    kind = ["kind"] if "kind" in cols else []
    names = kind + ["alarm_id", "topic", "idempotency_key", "payload", "created_at",
                    "attempts", "state", "delivered_at"]
    conn.executemany(f"INSERT INTO outbox ({', '.join(names)}) VALUES "
                     f"({', '.join('?' * len(names))})",
                     [(["alarm"] if kind else []) + [a, "case.create", f"bench-{a}", p, t, 1,
                                                     "delivered", t] for a, p, t in rows])


def _telemetry(db: Path, meters: list[str], raw_rows: int, rollup_rows: int) -> None:
    """telemetry.db as the service's writer leaves it: the schema of gateway/telemetry.py
    (created by ``EmbeddedTelemetry``), raw points of the last 48 h in time order and
    five-minute rollups over the last 30 days, generated inside SQLite."""
    from gateway.telemetry import EmbeddedTelemetry

    EmbeddedTelemetry(db).close()
    now = time.time()
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO series (id, device, metric) VALUES (?, ?, 'value')",
                         list(enumerate(meters, start=1)))
        k = len(meters)
        conn.execute(
            "WITH RECURSIVE n(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM n WHERE x < ?) "
            "INSERT INTO points SELECT ? - 172800.0 + (x / ?) * (172800.0 / (? / ?)), "
            "x % ? + 1, x % 1000 FROM n",
            (raw_rows - 1, now, k, raw_rows, k, k))
        buckets = max(1, rollup_rows // k)
        step = max(300, int(30 * 86400 / buckets) // 300 * 300)
        conn.execute(
            "WITH RECURSIVE n(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM n WHERE x < ?) "
            "INSERT OR IGNORE INTO rollups (series, bucket, n, sum, min, max, last) "
            "SELECT x % ? + 1, "
            "(CAST(? AS INTEGER) / 300) * 300 - (x / ?) * ?, 5, 5.0, 1.0, 1.0, 1.0 FROM n",
            (rollup_rows - 1, k, now, k, step))
        conn.execute("COMMIT")
    finally:
        conn.close()
