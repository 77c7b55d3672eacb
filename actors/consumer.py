"""Dramatiq's RabbitMQ consumer, with the acks of a burst sent in one go.

Dramatiq acks each message from the worker thread that ran it by handing
`channel.basic_ack` to the consumer thread (`add_callback_threadsafe`): one
wake-up of that thread per message, and one blocking flush of the socket per
ack. In the worker profile (bench/RESULTS.md) that was about a tenth of a
worker's time. Here the worker threads queue their delivery tags and only
the first of a burst wakes the consumer thread, which then queues every
ack on the channel for pika's I/O loop to write in one go.

Every tag is still acked on its own (no `multiple=True`), only after its
message was processed, and on the consumer's own channel: what RabbitMQ
sees is the same, only batched in time and in TCP writes.

Reads are sized for our messages (`read_whole_messages`): pika reads its
socket 4 KiB at a time, so a ~40 KB message took ten `recv` calls, each
releasing the GIL and taking it back against the worker threads.

And the message proxies it hands out carry their message's fields
(`with_fields_at_hand`): Dramatiq's proxy finds them through `__getattr__`,
which Python calls only after an ordinary lookup has failed and built an
AttributeError, ten times the cost of the lookup, for each of the dozens of
reads of `message_id`, `options` or `actor_name` that the middleware make of
every message.
"""

from __future__ import annotations

import dataclasses
import threading

import pika
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import _RabbitmqConsumer
from dramatiq.message import Message
from dramatiq.errors import ConnectionClosed
from pika.adapters.utils.io_services_utils import _AsyncTransportBase

#: Bytes pika asks of a socket per read in a process that consumes: a whole ~40 KB message at once.
RECV_BYTES = 64 * 1024

# Checked at import, so that a pika release without the attribute fails at start, not silently.
if not isinstance(getattr(_AsyncTransportBase, "_MAX_RECV_BYTES", None), int):
    raise ImportError("pika's transports have no _MAX_RECV_BYTES any more: see actors/consumer.read_whole_messages")


#: A message's fields: a frozen dataclass's, so a copy of each can never go stale.
_MESSAGE_FIELDS = tuple(field.name for field in dataclasses.fields(Message))
if not Message.__dataclass_params__.frozen:  # checked at import, as above
    raise ImportError("Dramatiq's Message is no longer frozen: see actors/consumer.with_fields_at_hand")


def with_fields_at_hand(proxy: MessageProxy) -> MessageProxy:
    """The proxy, with its message's fields in its own attributes rather than behind `__getattr__`.

    Measured in-process: `proxy.message_id` 412 ns through `__getattr__`, 39 ns as an attribute.
    What reads them sees the same objects (`options` is the message's own dict).
    """
    message = proxy._message
    attributes = vars(proxy)
    for name in _MESSAGE_FIELDS:
        attributes.setdefault(name, getattr(message, name))
    return proxy


def read_whole_messages(size: int = RECV_BYTES) -> None:
    """Make every pika connection of this process read up to `size` bytes per `recv`.

    pika has no parameter for it; its transports read `_MAX_RECV_BYTES` (4096) at a time. A
    worker made ~12 `recv` calls a message with it and 1.6 with 64 KiB, and its futex calls (the
    GIL changing hands) went from ~14 to ~11.5 a message (bench/RESULTS.md). Set by the consumer,
    so only processes that consume take it: the API's connections read confirms, small frames
    that pika cuts off the front of its buffer one by one, copying the rest each time, which a
    larger read makes worse, not better.
    """
    _AsyncTransportBase._MAX_RECV_BYTES = size


class BatchedAckConsumer(_RabbitmqConsumer):
    def __init__(self, *args, **kwargs):
        #: The enqueue time (ms) of the newest message this consumer took: in a FIFO queue, what is
        #: still ready was enqueued after it (actors.stats reports it for "oldest ready").
        self.newest_taken: int | None = None
        self._acks: list[int] = []
        self._acks_lock = threading.Lock()
        self._acks_scheduled = False
        read_whole_messages()  # before the connection is made
        super().__init__(*args, **kwargs)

    def __next__(self):
        message = super().__next__()
        if message is not None:  # the newest: a retry or a replay keeps its first, older timestamp
            with_fields_at_hand(message)
            self.newest_taken = max(self.newest_taken or 0, message.message_timestamp)
        return message

    def ack(self, message) -> None:
        try:
            self.known_tags.remove(message._tag)
        except KeyError:  # as Dramatiq's: a tag of a channel that has since been reset
            self.logger.warning("Failed to ack message: not in known tags.")
            return
        with self._acks_lock:
            self._acks.append(message._tag)
            if self._acks_scheduled:
                return  # the consumer thread will send it with the others
            self._acks_scheduled = True
        try:
            self.connection.add_callback_threadsafe(self._send_acks)
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as error:
            raise ConnectionClosed(error) from None

    def _send_acks(self) -> None:
        """On the consumer thread (inside pika's I/O loop): every queued ack, for that loop to write."""
        with self._acks_lock:
            tags, self._acks = self._acks, []
            self._acks_scheduled = False
        # The underlying channel only queues each frame; pika's I/O loop writes them at its next
        # flush. This callback runs inside the consumer's `__next__`, which polls again (emptying
        # the output buffer) until its timeout; if the timeout has just passed, the next `__next__`
        # writes them, or Dramatiq's `close`, whose channel close frame is queued behind them. The
        # public `basic_ack` would flush at once, nested: 2-7% of a worker's CPU (bench/RESULTS.md).
        channel = self.channel._impl
        for tag in tags:
            channel.basic_ack(tag)
