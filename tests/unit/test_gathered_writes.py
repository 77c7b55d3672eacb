"""pika's plaintext connections send their queued frames together (actors/gathered_writes.py)."""

from __future__ import annotations

import socket
from collections import deque

import pytest
from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport

import actors  # noqa: F401  (a service process: the broker's module installs the gathering)
from actors.gathered_writes import _produce_gathered


class CountingSocket:
    """One end of a socket pair that counts the system calls sending takes, and may take only
    `accept` bytes before the kernel's buffer is "full" (EAGAIN)."""

    def __init__(self, sock: socket.socket, accept: int | None = None):
        self.sock, self.accept, self.calls = sock, accept, 0

    def _take(self, data: bytes) -> int:
        self.calls += 1
        if self.accept is not None:
            if self.accept == 0:
                raise BlockingIOError(11, "Resource temporarily unavailable")
            data = data[: self.accept]
            self.accept -= len(data)
        return self.sock.send(data)

    def send(self, data) -> int:
        return self._take(bytes(data))

    def sendmsg(self, buffers) -> int:
        return self._take(b"".join(bytes(buffer) for buffer in buffers))


class Transport:
    """What pika's `_produce` uses of its transport: the queue of frames, its byte count, the socket."""

    _sigint_safe_send = staticmethod(lambda sock, data: sock.send(data))  # what pika's own `_produce` calls

    def __init__(self, sock, frames: list[bytes]):
        self._sock = sock
        self._tx_buffers = deque(frames)
        self._tx_buffered_byte_count = sum(len(frame) for frame in frames)


@pytest.fixture()
def pair():
    sender, receiver = socket.socketpair()
    yield sender, receiver
    sender.close()
    receiver.close()


def received(receiver: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += receiver.recv(size - len(data))
    return data


def test_a_publishs_three_frames_leave_in_one_system_call_in_order(pair):
    sender, receiver = pair
    frames = [b"method-frame", b"header-frame", b"body" * 10_000]
    sock = CountingSocket(sender)
    transport = Transport(sock, frames)
    _AsyncPlaintextTransport._produce(transport)
    assert sock.calls == 1
    assert not transport._tx_buffers and transport._tx_buffered_byte_count == 0
    assert received(receiver, sum(map(len, frames))) == b"".join(frames)


def test_what_a_short_send_left_stays_queued_in_order_and_counted_then_goes(pair):
    sender, receiver = pair
    frames = [b"a" * 10, b"b" * 10, b"c" * 10]
    transport = Transport(CountingSocket(sender, accept=15), frames)
    with pytest.raises(BlockingIOError):  # the caller waits for the socket to be writable again
        _produce_gathered(transport)
    assert b"".join(bytes(frame) for frame in transport._tx_buffers) == b"b" * 5 + b"c" * 10
    assert transport._tx_buffered_byte_count == 15
    transport._sock = CountingSocket(sender)
    _produce_gathered(transport)
    assert transport._tx_buffered_byte_count == 0
    assert received(receiver, 30) == b"".join(frames)


def test_more_frames_than_one_call_may_carry_all_leave_in_order(pair):
    sender, receiver = pair
    frames = [bytes([index % 256]) for index in range(3000)]  # more than the kernel's 1024 buffers a call
    sock = CountingSocket(sender)
    transport = Transport(sock, frames)
    _produce_gathered(transport)
    assert sock.calls == 3
    assert received(receiver, 3000) == b"".join(frames)
