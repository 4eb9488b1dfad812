"""VictoriaMetrics (Debian package ``victoria-metrics``) as a time-series server for tests
and benchmarks: it accepts InfluxDB's ``/api/v2/write`` line protocol, the same requests
influxdb-client sends to InfluxDB 2/3, and exports points at ``/api/v1/export``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx

from gateway.broker import free_port, stop_process, wait_port

__all__ = ["VICTORIA_BIN", "VictoriaMetrics"]

VICTORIA_BIN = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"


class VictoriaMetrics:
    """``with VictoriaMetrics(workdir) as vm:`` a server on 127.0.0.1:``vm.port``."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> VictoriaMetrics:
        if not Path(VICTORIA_BIN).exists():
            raise RuntimeError("victoria-metrics is not installed (apt-get install "
                               "victoria-metrics; deploy/quickstart.sh test does it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [VICTORIA_BIN, f"-httpListenAddr=127.0.0.1:{self.port}",
             f"-storageDataPath={self.workdir}", "-retentionPeriod=100y",
             "-search.disableCache", "-loggerLevel=ERROR"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, timeout=30)
        return self

    def stop(self) -> None:
        stop_process(self.proc, grace_s=15)
        self.proc = None

    def export(self, match: str) -> list[dict]:
        """Every series matching the selector, as VictoriaMetrics' JSON lines export."""
        httpx.get(f"{self.url}/internal/force_flush", timeout=10)
        r = httpx.get(f"{self.url}/api/v1/export", params={"match[]": match}, timeout=30)
        r.raise_for_status()
        return [json.loads(ln) for ln in r.text.splitlines() if ln.strip()]

    def __enter__(self) -> VictoriaMetrics:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
