"""The MQTT intake's buffered socket (drivers.mqtt._BufferedSocket), on a real socket pair.

paho reads a packet in three small ``recv`` calls and writes each PUBACK with a ``send`` of
its own; the intake hands it a socket that reads 64 KiB at a time and sends what one turn of
the event loop wrote in one go. What the broker and paho see must not change: every byte in
order, nothing held back at the end of a turn, nothing dropped when the socket is slow to
take it or when the connection closes.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from drivers.mqtt import _BufferedSocket


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.settimeout(5)
    return a, b


class _Counting:
    """A socket that counts the system calls made through it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.recvs, self.sends = sock, 0, 0

    def recv(self, n: int) -> bytes:
        self.recvs += 1
        return self.sock.recv(n)

    def send(self, data) -> int:
        self.sends += 1
        return self.sock.send(data)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


async def test_small_reads_are_served_from_one_receive_in_order():
    a, peer = _pair()
    counted = _Counting(a)
    failures: list[BaseException] = []
    buf = _BufferedSocket(counted, asyncio.get_running_loop(), failures.append)
    packets = [bytes([0x30, 5]) + b"%05d" % i for i in range(300)]
    peer.sendall(b"".join(packets))     # a socket pair: in the receive buffer on return
    got = []
    for _ in packets:       # paho's way: the command byte, the length byte, the rest
        head = buf.recv(1) + buf.recv(1)
        got.append(head + buf.recv(head[1]))
    assert got == packets
    assert counted.recvs == 1           # 2,100 bytes: one system call, not 900
    assert buf.pending() == 0
    with pytest.raises(BlockingIOError):
        buf.recv(1)                     # nothing more: paho's "try again later"
    peer.close()
    assert buf.recv(1) == b""           # end of stream reaches paho as it is
    assert not failures
    buf.close()


async def test_a_packet_split_across_receives_comes_whole():
    a, peer = _pair()
    buf = _BufferedSocket(a, asyncio.get_running_loop(), lambda exc: None)
    peer.sendall(b"\x30\x0aab")
    assert buf.recv(1) == b"\x30" and buf.recv(1) == b"\x0a"
    assert buf.recv(10) == b"ab"        # what is there; paho asks again for the rest
    peer.sendall(b"cdefghij")
    assert buf.recv(8) == b"cdefghij"
    buf.close()
    peer.close()


async def test_writes_of_one_turn_go_out_in_one_send_at_its_end():
    a, peer = _pair()
    counted = _Counting(a)
    buf = _BufferedSocket(counted, asyncio.get_running_loop(), lambda exc: None)
    pubacks = [bytes([0x40, 2, i >> 8, i & 0xFF]) for i in range(200)]
    for p in pubacks:
        assert buf.send(p) == 4         # paho counts it written
    assert counted.sends == 0           # not yet: the end of this turn
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert counted.sends == 1
    assert peer.recv(65536) == b"".join(pubacks)
    buf.close()
    peer.close()


async def test_what_the_kernel_does_not_take_at_once_follows_in_order():
    a, peer = _pair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    failures: list[BaseException] = []
    buf = _BufferedSocket(a, asyncio.get_running_loop(), failures.append)
    data = bytes(range(256)) * 4096     # 1 MiB: far more than the socket buffers hold
    for i in range(0, len(data), 1000):
        buf.send(data[i:i + 1000])
    received = bytearray()
    peer.setblocking(False)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while len(received) < len(data) and loop.time() < deadline:
        await asyncio.sleep(0.001)      # the buffer's writer callback runs meanwhile
        try:
            received += peer.recv(65536)
        except BlockingIOError:
            pass
    assert bytes(received) == data
    assert not buf.waiting and not failures
    buf.close()
    peer.close()


async def test_close_sends_what_was_written_first():
    a, peer = _pair()
    buf = _BufferedSocket(a, asyncio.get_running_loop(), lambda exc: None)
    buf.send(b"\x40\x02\x00\x07")       # a PUBACK written in the turn that closes
    buf.send(b"\xe0\x00")               # DISCONNECT
    buf.close()
    assert peer.recv(100) == b"\x40\x02\x00\x07\xe0\x00"
    assert peer.recv(100) == b""
    await asyncio.sleep(0)              # the scheduled send finds nothing left: no error
    peer.close()


async def test_a_failed_send_ends_the_connection():
    a, peer = _pair()
    failures: list[BaseException] = []
    buf = _BufferedSocket(a, asyncio.get_running_loop(), failures.append)
    peer.close()
    a.shutdown(socket.SHUT_WR)
    buf.send(b"\x40\x02\x00\x01")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(failures) == 1 and isinstance(failures[0], OSError)
    a.close()


async def test_close_waits_for_a_backed_up_socket_to_take_the_last_packets():
    """The broker reads slowly: the PUBACKs written last and paho's DISCONNECT still reach
    it (a review found them dropped by a close that tried one send)."""
    import threading

    a, peer = _pair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    buf = _BufferedSocket(a, asyncio.get_running_loop(), lambda exc: None)
    backlog = b"\x40\x02\x00\x01" * 50_000            # 200 kB: far more than the buffers
    buf.send(backlog)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert buf.waiting                                 # the kernel took only part of it
    buf.send(b"\x40\x02\x12\x34")                      # the PUBACK of a committed alarm
    buf.send(b"\xe0\x00")                              # DISCONNECT: paho closes at once
    got = bytearray()

    def read_slowly() -> None:
        while chunk := peer.recv(8192):
            got.extend(chunk)

    reader = threading.Thread(target=read_slowly)
    reader.start()
    buf.close()
    reader.join(5)
    assert bytes(got) == backlog + b"\x40\x02\x12\x34\xe0\x00"
    peer.close()
