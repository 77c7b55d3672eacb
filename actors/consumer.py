"""Dramatiq's RabbitMQ consumer, with the acks of a burst sent in one go.

Dramatiq acks each message from the worker thread that ran it by handing
`channel.basic_ack` to the consumer thread (`add_callback_threadsafe`): one
wake-up of that thread per message, and one blocking flush of the socket per
ack. In the worker profile (bench/RESULTS.md) that was about a tenth of a
worker's time. Here the worker threads queue their delivery tags and only
the first of a burst wakes the consumer thread, which then sends every
queued ack and flushes once.

Every tag is still acked on its own (no `multiple=True`), only after its
message was processed, and on the consumer's own channel: what RabbitMQ
sees is the same, only batched in time and in TCP writes.
"""

from __future__ import annotations

import threading

import pika
from dramatiq.brokers.rabbitmq import _RabbitmqConsumer
from dramatiq.errors import ConnectionClosed


class BatchedAckConsumer(_RabbitmqConsumer):
    def __init__(self, *args, **kwargs):
        #: The enqueue time (ms) of the newest message this consumer took: in a FIFO queue, what is
        #: still ready was enqueued after it (actors.stats reports it for "oldest ready").
        self.newest_taken: int | None = None
        self._acks: list[int] = []
        self._acks_lock = threading.Lock()
        self._acks_scheduled = False
        super().__init__(*args, **kwargs)

    def __next__(self):
        message = super().__next__()
        if message is not None:  # the newest: a retry or a replay keeps its first, older timestamp
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
        """On the consumer thread (inside pika's I/O loop): every queued ack, one flush."""
        with self._acks_lock:
            tags, self._acks = self._acks, []
            self._acks_scheduled = False
        if not tags:
            return
        channel = self.channel
        for tag in tags[:-1]:
            # The underlying channel queues the frame; the public basic_ack below flushes them all.
            channel._impl.basic_ack(tag)
        channel.basic_ack(tags[-1])
