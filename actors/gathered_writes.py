"""pika's plaintext connections, sending what waits in one system call instead of one per frame.

pika queues every frame it writes (a publish is three: method, header,
body; an ack is one) and, when the socket is writable, sends them with one
`send` each. So a publish cost three system calls and three TCP segments,
and a burst of acks one of each per message, each segment also parsed on its
own by RabbitMQ. Here the queued frames leave together through `sendmsg`
(scatter-gather: nothing is copied to join them), as many as the kernel takes
at once. Measured (bench/RESULTS.md): API + workers -10% CPU a request under
`bench.run`, RabbitMQ -18%.

The bytes on the wire are the same, in the same order; only the system calls
and segments change. TLS connections (`amqps://`) keep pika's own sending:
an SSL socket has no `sendmsg`.
"""

from __future__ import annotations

import itertools

from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport, _AsyncTransportBase

from pipeline.csv_sink import IOV_MAX

# Checked at import, so that a pika release that renamed what this relies on fails at start, not on a
# connection. `_produce` must still be the base class's (the one this replaces), not an override.
if _AsyncPlaintextTransport._produce is not _AsyncTransportBase._produce:
    raise ImportError("pika's plaintext transport sends in a way of its own now: see actors/gathered_writes")


def _produce_gathered(self: _AsyncPlaintextTransport) -> None:
    """pika's `_produce`, one `sendmsg` for every queued frame at a time.

    As pika's: send until nothing waits, or raise what the socket raised (EAGAIN included, which
    the caller takes as "wait until writable"); what did not go out stays queued, in order, and
    `_tx_buffered_byte_count` always counts it.
    """
    buffers = self._tx_buffers
    while buffers:
        sent = self._sock.sendmsg(itertools.islice(buffers, IOV_MAX))
        self._tx_buffered_byte_count -= sent
        while sent:
            first = buffers[0]
            if sent >= len(first):
                buffers.popleft()
                sent -= len(first)
            else:  # a short send: the rest of this frame goes first next time, without a copy
                buffers[0] = memoryview(first)[sent:]
                sent = 0


def gather_writes() -> None:
    """Make every plaintext pika connection of this process send its queued frames together."""
    _AsyncPlaintextTransport._produce = _produce_gathered
