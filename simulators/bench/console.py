"""Console benchmark: the board in Chromium with 1,000 open alarms and 5,000 devices.

A real Mosquitto, a real gateway process and Debian's Chromium (Playwright). A generated site
has 2,500 households with an emergency caller and a smoke detector each (5,000 devices). The
*loaded* run first raises ``--open`` alarms by SOS presses over MQTT, then opens the console
and measures:

- ``page_ready_ms``: from navigation (already logged in) to every open alarm drawn;
- ``p99_publish_to_draw_ms``: for ``--presses`` further SOS presses, one at a time, the delay
  from the MQTT publish to the alarm's card drawn in the page (``window.__drawn``; both clocks
  are this machine's wall clock).

The *baseline* is the same measurement on an empty board (same site, fresh store), in the
same run; ratios are loaded / baseline.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import paho.mqtt.client as paho

from gateway.broker import Mosquitto, free_port, stop_process, wait_port

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
EXAMPLE = Path(__file__).resolve().parents[2] / "edge_config" / "examples" / "tianlin"


def add_args(parser) -> None:
    parser.add_argument("--households", type=int, default=2500, help="2 devices each")
    parser.add_argument("--open", type=int, default=1000, help="open alarms on the board")
    parser.add_argument("--presses", type=int, default=100, help="measured SOS presses")


def _site(dest: Path, households: int, mqtt_port: int) -> None:
    dest.mkdir(parents=True)
    shutil.copy(EXAMPLE / "rules.yaml", dest / "rules.yaml")
    (dest / "gateway.yaml").write_text(f"mqtt:\n  host: 127.0.0.1\n  port: {mqtt_port}\n")
    (dest / "uplinks.yaml").write_text("{}\n")
    cells = [{"code": f"310104-900-{c:02d}", "name": f"第{c}网格", "grid_member": f"网格员{c}"}
             for c in range(10)]
    hh = [{"id": f"h-{i:04d}", "address": f"测试路{i // 100}号{i % 100:02d}室",
           "grid_cell": cells[i % 10]["code"], "lives_alone": i % 3 == 0,
           "contacts": [{"name": "联系人", "relation": "子女", "phone": f"1380000{i:04d}"}]}
          for i in range(households)]
    site = {"site": {"id": "bench", "name": "基准社区", "timezone": "Asia/Shanghai"},
            "grid_cells": cells, "households": hh}
    devices = []
    for i in range(households):
        devices.append({"id": f"caller-{i:04d}", "type": "emergency_caller",
                        "household": f"h-{i:04d}", "mqtt": {"topic": f"devices/caller-{i:04d}"}})
        devices.append({"id": f"smoke-{i:04d}", "type": "smoke_detector",
                        "household": f"h-{i:04d}", "mqtt": {"topic": f"devices/smoke-{i:04d}"}})
    # JSON is valid YAML: no dumper needed for generated files
    (dest / "site.yaml").write_text(json.dumps(site, ensure_ascii=False))
    (dest / "devices.yaml").write_text(json.dumps({"devices": devices}))


class _Gateway:
    def __init__(self, site: Path, data: Path):
        self.site, self.data = site, data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.password = secrets.token_urlsafe(12)
        gw = str(Path(sys.executable).parent / "gateway")
        subprocess.run([gw, "user", "add", "--username", "duty", "--role", "duty",
                        "--password-stdin", "--data", str(data)], input=self.password + "\n",
                       text=True, check=True, capture_output=True, timeout=60)
        self.token = subprocess.run([gw, "token", "create", "--role", "admin", "--name", "bench",
                                     "--data", str(data)], text=True, check=True,
                                    capture_output=True, timeout=60).stdout.strip()
        self.log = open(data / "gateway.log", "wb")
        self.proc = subprocess.Popen([gw, "run", "--config", str(site), "--data", str(data),
                                      "--port", str(self.port)], stdout=self.log,
                                     stderr=self.log)
        wait_port(self.port, timeout=60)
        self.wait(lambda: httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200, 60)

    def wait(self, cond, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if cond():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"timed out after {timeout} s (gateway log: {self.data}/gateway.log)")

    def open_count(self) -> int:
        r = httpx.get(f"{self.url}/api/alarms", params={"state": "open", "limit": 5000},
                      headers={"Authorization": f"Bearer {self.token}"}, timeout=30)
        return len(r.json()["alarms"])

    def alarm_ids(self) -> dict[str, int]:
        r = httpx.get(f"{self.url}/api/alarms", params={"state": "open", "limit": 5000},
                      headers={"Authorization": f"Bearer {self.token}"}, timeout=30)
        return {a["device_id"]: a["id"] for a in r.json()["alarms"]}

    def stop(self) -> None:
        stop_process(self.proc, grace_s=20)
        self.log.close()


def _publisher(port: int) -> paho.Client:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def _press(c: paho.Client, device: str) -> None:
    c.publish(f"devices/{device}", json.dumps({"event": "sos"}), qos=1).wait_for_publish(10)


def _p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def _measure(browser, work: Path, broker: Mosquitto, households: int, preload: int,
             presses: int) -> dict:
    site, data = work / "site", work / "data"
    _site(site, households, broker.port)
    data.mkdir()
    gw = _Gateway(site, data)
    pub = _publisher(broker.port)
    try:
        for i in range(preload):
            pub.publish(f"devices/caller-{i:04d}", json.dumps({"event": "sos"}), qos=1)
        gw.wait(lambda: gw.open_count() >= preload, 120)
        ctx = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        page.goto(gw.url + "/")
        page.fill("#login input[name=username]", "duty")
        page.fill("#login input[name=password]", gw.password)
        page.click("#login button[type=submit]")
        page.wait_for_selector("#app:not([hidden])", timeout=30_000)
        t0 = time.perf_counter()
        page.reload()
        page.wait_for_function(f"() => document.querySelectorAll('#alarms .alarm').length "
                               f">= {preload} && document.querySelector('#n-open')", timeout=60_000)
        ready_ms = (time.perf_counter() - t0) * 1000
        published: dict[str, float] = {}
        for j in range(presses):
            device = f"caller-{preload + j:04d}"
            published[device] = time.time() * 1000
            _press(pub, device)
            page.wait_for_function(f"() => document.querySelectorAll('#alarms .alarm').length "
                                   f">= {preload + j + 1}", timeout=10_000)
        drawn = page.evaluate("window.__drawn")
        ids = gw.alarm_ids()
        delays = [drawn[str(ids[d])] - t for d, t in published.items()
                  if d in ids and str(ids[d]) in drawn]
        ctx.close()
        return {"page_ready_ms": round(ready_ms, 1), "samples": len(delays),
                "p50_publish_to_draw_ms": round(_p(delays, 0.5), 1),
                "p99_publish_to_draw_ms": round(_p(delays, 0.99), 1),
                "max_publish_to_draw_ms": round(max(delays), 1) if delays else None}
    finally:
        pub.loop_stop()
        pub.disconnect()
        gw.stop()


def run(args) -> dict:
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        raise SystemExit("Chromium is not installed (bash deploy/quickstart.sh test installs it)")
    presses = min(args.presses, 30) if args.quick else args.presses
    work = Path(tempfile.mkdtemp(prefix="bench-console-"))
    broker = Mosquitto(workdir=work / "mosquitto").start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                base = _measure(browser, work / "baseline", broker, args.households, 0, presses)
                loaded = _measure(browser, work / "loaded", broker, args.households, args.open,
                                  presses)
            finally:
                browser.close()
    finally:
        broker.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "devices": args.households * 2, "open_alarms": args.open, "presses": presses,
        "page_ready_ms": loaded["page_ready_ms"],
        "p50_publish_to_draw_ms": loaded["p50_publish_to_draw_ms"],
        "p99_publish_to_draw_ms": loaded["p99_publish_to_draw_ms"],
        "max_publish_to_draw_ms": loaded["max_publish_to_draw_ms"],
        "goal_p99_ms": 500, "goal_met": loaded["p99_publish_to_draw_ms"] <= 500,
        "baseline_empty_board": base,
        "ratio_p99_vs_empty_board": round(loaded["p99_publish_to_draw_ms"]
                                          / max(base["p99_publish_to_draw_ms"], 1e-9), 2),
        "ratio_page_ready_vs_empty_board": round(loaded["page_ready_ms"]
                                                 / max(base["page_ready_ms"], 1e-9), 2),
    }
