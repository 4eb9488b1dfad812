"""The whole-path benchmark's background load, in a process of its own: a paced QoS 1
publisher that writes pre-encoded MQTT 3.1.1 PUBLISH packets on a plain socket, one ``send``
per 10 ms slice, and reads the broker's PUBACKs only to discard them.

Why not paho, in the measuring process: at 6,500 messages/s its ``publish`` took about 0.7 of
a core of the same two cores the gateway ran on, and its GIL held up the threads that take an
alarm's publish time and read the live stream, so the harness's own waits were measured as
the gateway's latency (docs/benchmarks.md, "path"). Devices in a community are other
machines; the broker and the gateway see the same QoS 1 packets either way.

``python -m simulators.bench._paced MESSAGES_FILE PORT RATE:SECONDS [RATE:SECONDS ...]``:
``MESSAGES_FILE`` holds ``marshal.dumps`` of a list of (topic, payload) pairs, published in
turn (cycled). The process connects, prints ``ready``, waits for a line on stdin, then runs
each phase and prints one JSON line: the rate achieved in each phase.
"""

from __future__ import annotations

import json
import marshal
import socket
import sys
import time
from collections.abc import Callable

CLIENT_ID = b"bench-load"


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _connect_packet() -> bytes:
    body = (b"\x00\x04MQTT\x04\x02\x00\x3c"                 # MQTT 3.1.1, clean session, 60 s
            + len(CLIENT_ID).to_bytes(2, "big") + CLIENT_ID)
    return b"\x10" + _remaining_length(len(body)) + body


def _encoded(messages: list[tuple[str, bytes]]) -> list[tuple[bytes, bytes]]:
    """Each message as (fixed header + topic, payload): the packet id goes between."""
    out = []
    for topic, payload in messages:
        t = topic.encode()
        head = (b"\x32" + _remaining_length(2 + len(t) + 2 + len(payload))
                + len(t).to_bytes(2, "big") + t)
        out.append((head, payload))
    return out


def _drain(sock: socket.socket) -> None:
    """Read and discard what the broker sent (PUBACKs) without waiting."""
    while True:
        try:
            if not sock.recv(1 << 20):
                raise ConnectionError("the broker closed the connection")
        except BlockingIOError:
            return


def paced(port: int, messages: list[tuple[str, bytes]], phases: list[tuple[float, float]],
          go: Callable[[], None] = lambda: None) -> list[float]:
    """Publish ``messages`` (cycled) at QoS 1, ``rate`` per second for ``seconds`` per phase,
    in 10 ms slices; returns the rate achieved in each phase."""
    packets = _encoded(messages)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(_connect_packet())
    connack = sock.recv(4)
    if connack[:1] != b"\x20" or connack[3:4] != b"\x00":
        raise ConnectionError(f"the broker refused the load publisher: {connack!r}")
    sock.setblocking(False)
    achieved = []
    i = 0
    try:
        go()
        for rate, seconds in phases:
            t0 = time.perf_counter()
            sent = 0
            while True:
                now = time.perf_counter() - t0
                if now >= seconds:
                    break
                due = int(rate * min(now + 0.01, seconds))
                chunk: list[bytes] = []
                while sent < due:
                    head, payload = packets[i % len(packets)]
                    chunk += (head, (i % 65535 + 1).to_bytes(2, "big"), payload)
                    sent += 1
                    i += 1
                sock.setblocking(True)
                sock.sendall(b"".join(chunk))
                sock.setblocking(False)
                _drain(sock)
                time.sleep(max(0.0, t0 + (sent / rate) - time.perf_counter()))
            achieved.append(sent / max(1e-9, time.perf_counter() - t0))
    finally:
        try:
            sock.setblocking(True)
            sock.sendall(b"\xe0\x00")              # DISCONNECT
        except OSError:
            pass
        sock.close()
    return achieved


def _ready() -> None:
    print("ready", flush=True)
    sys.stdin.readline()


def main(argv: list[str]) -> int:
    path, port, *spec = argv
    with open(path, "rb") as fh:
        messages = marshal.load(fh)
    phases = [(float(r), float(s)) for r, s in (x.split(":") for x in spec)]
    print(json.dumps({"achieved": paced(int(port), messages, phases, _ready)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
