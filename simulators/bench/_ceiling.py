"""The ceiling of the whole-path benchmark, in a process of its own (for its own RSS): a bare
paho client that resumes a persistent QoS 1 session and only counts ``on_message`` calls.

``python -m simulators.bench._ceiling PORT CLIENT_ID N [TIMEOUT_S]`` prints one JSON line:
``rate`` (messages per second from CONNACK to the N-th message), ``cpu_us_per_msg`` (the
process's CPU time over the same span, per message), ``rss_mb`` (peak).
"""

from __future__ import annotations

import json
import sys
import threading
import time

import paho.mqtt.client as paho


def count(port: int, client_id: str, n: int, timeout: float) -> tuple[float, float]:
    """Messages per second and CPU microseconds per message."""
    done = threading.Event()
    got = 0
    t0 = cpu0 = 0.0

    def on_connect(*_a) -> None:
        nonlocal t0, cpu0
        t0, cpu0 = time.perf_counter(), time.process_time()

    def on_message(_c, _u, _m) -> None:
        nonlocal got
        got += 1
        if got >= n:
            done.set()

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    c.on_connect = on_connect
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        if not done.wait(timeout):
            raise SystemExit(f"bare paho received {got} of {n} within {timeout} s")
        return n / (time.perf_counter() - t0), 1e6 * (time.process_time() - cpu0) / n
    finally:
        c.disconnect()
        c.loop_stop()


def _peak_rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


if __name__ == "__main__":
    port, cid, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    rate, cpu = count(port, cid, n, float(sys.argv[4]) if len(sys.argv) > 4 else 120.0)
    print(json.dumps({"rate": rate, "cpu_us_per_msg": round(cpu, 1),
                      "rss_mb": round(_peak_rss_mb(), 1)}))
