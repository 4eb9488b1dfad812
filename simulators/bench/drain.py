"""Backlog drain rate: queued cases to the simulated case system, telemetry to the
time-series server.

Case system: a backlog of ``--cases`` alarms (alarm + history + outbox row each, raised
through the real alarm book) is drained by the real forwarder to the simulated case system
running as its own process over loopback HTTP. Baseline in the same run: the same forwarder
with one request in flight (``window=1``) on the first ``--baseline-cases`` rows.

Time series: ``--lines`` telemetry points through the gateway's InfluxDB writer
(influxdb-client, gzip, batches of 5,000 lines) into VictoriaMetrics
(/usr/bin/victoria-metrics, its /api/v2/write). Baseline: batches of 100 lines, no gzip.

Both report per-second rates and the time a 1.8M-event backlog would take at that rate.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from gateway.metrics import Metrics

__all__ = ["add_args", "run"]

BACKLOG_GOAL = 1_800_000


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cases", type=int, default=200_000, help="backlog of alarms to drain")
    p.add_argument("--baseline-cases", type=int, default=2000)
    p.add_argument("--window", type=int, default=64, help="requests in flight")
    p.add_argument("--lines", type=int, default=1_800_000, help="telemetry points")
    p.add_argument("--no-tsdb", action="store_true", help="skip the time-series part")


def run(args: argparse.Namespace) -> dict:
    if args.quick:
        args.cases, args.baseline_cases, args.lines = 10_000, 500, 200_000
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-drain-") as tmp:
        out.update(asyncio.run(_cases(Path(tmp), args)))
        if not args.no_tsdb:
            out.update(_tsdb(Path(tmp), args))
    return out


async def _cases(tmp: Path, args: argparse.Namespace) -> dict:
    from gateway.alarms import AlarmBook
    from gateway.forwarder import CaseForwarder
    from gateway.site import load_site
    from gateway.store import Store, outbox
    from gateway.uplink.case_system import CaseSystemClient
    from simulators.bench._backlog import fill_backlog, start_case_system

    site = load_site(Path(__file__).resolve().parents[2] / "edge_config/examples/tianlin")
    sim = start_case_system(tmp / "sim")
    store = Store(tmp / "gateway.db")
    store.open()
    try:
        book = AlarmBook(store, site)
        total = args.baseline_cases + args.cases
        t0 = time.perf_counter()
        await fill_backlog(book, total, per_tx=1000)
        fill_s = time.perf_counter() - t0

        async def drain(window: int, rows: int) -> float:
            client = CaseSystemClient(sim.url, sim.key_id, sim.secret, timeout=10)
            fwd = CaseForwarder(store, client, Metrics(), window=window)
            sent = 0
            t = time.perf_counter()
            async with client:
                while sent < rows:
                    n = await fwd.step()
                    assert fwd.state != "idle" or n, "backlog ran dry"
                    sent += n
            return sent / (time.perf_counter() - t)

        base = await drain(1, args.baseline_cases)
        rate = await drain(args.window, args.cases)
        left, failed = outbox.pending_count(store), outbox.failed_count(store)
    finally:
        store.close()
        sim.stop()
    return {"cases_backlog": args.cases, "cases_window": args.window,
            "cases_per_s": round(rate), "cases_per_s_one_in_flight": round(base),
            "cases_ratio": round(rate / base, 2),
            "cases_1p8M_backlog_s": round(BACKLOG_GOAL / rate),
            "cases_left_pending": left, "cases_failed": failed,
            "backlog_fill_per_s": round(total / fill_s)}


def _tsdb(tmp: Path, args: argparse.Namespace) -> dict:
    from gateway.model import Kind, Reading, utc
    from gateway.telemetry import InfluxWriter, to_line
    from simulators.victoria import VictoriaMetrics

    t0 = utc() - timedelta(hours=1)
    kinds = (Kind.POWER, Kind.VOLTAGE, Kind.TEMPERATURE, Kind.ENERGY)

    def lines(n: int, tag: str) -> list[str]:
        out = [to_line(Reading(f"meter-{i % 500}", kinds[i % 4], float(i % 1000),
                               t0 + timedelta(milliseconds=i), household_id=f"h-{i % 500}",
                               device_type="electricity_meter"), site=tag)
               for i in range(n)]
        return [ln for ln in out if ln is not None]   # all n: numbers are telemetry

    with VictoriaMetrics(tmp / "vm") as vm:
        def push(batch_lines: int, gzip: bool, n: int, tag: str) -> float:
            data = lines(n, tag)
            with InfluxWriter(vm.url, org="bench", bucket="bench", token=None,
                              gzip=gzip, timeout_s=30) as w:
                t = time.perf_counter()
                for lo in range(0, n, batch_lines):
                    w.write(data[lo:lo + batch_lines])
                return n / (time.perf_counter() - t)

        base = push(100, False, min(50_000, args.lines), "base")
        rate = push(5000, True, args.lines, "bench")
    return {"tsdb_lines": args.lines, "tsdb_lines_per_s": round(rate),
            "tsdb_lines_per_s_batch100_plain": round(base), "tsdb_ratio": round(rate / base, 2),
            "tsdb_1p8M_backlog_s": round(BACKLOG_GOAL / rate, 1)}
