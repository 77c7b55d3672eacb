"""What a message's size costs RabbitMQ: persistent publishes with confirms, then consumed and acked.

    .venv/bin/python -m bench.broker_bytes                       # 10,000 messages of 45,700 and 34,300 bytes
    .venv/bin/python -m bench.broker_bytes --sizes 45700 34300 1000 --messages 5000

The question behind it (issue #12): a binary message encoding would carry
the frames as raw bytes, a quarter fewer bytes than base64 inside JSON
(45.7 KB -> 34.3 KB for the benchmark's payloads), but decoding base64 in the
API and encoding it again in the worker costs Python CPU. This measures the
other side of that trade, the broker's: `beam.smp`'s CPU per message at each
size, for the same publish-confirm-consume-ack path the service uses, on a
vhost of its own. Sizes alternate over `--repeat` rounds (the machine is noisy)
and the medians are printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pika

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.procstat import rabbitmq_cpu_seconds  # noqa: E402
from tests.support.rabbit import create_vhost, delete_vhost, vhost_url  # noqa: E402

QUEUE = "bytes"
#: The consumer's prefetch, as the workers'. (Publishes here wait for each confirm in turn, which
#: costs the broker the same per message at every size: the difference between sizes is the bytes.)
WINDOW = 256


def one_round(url: str, size: int, messages: int) -> dict[str, float]:
    body = os.urandom(size)
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.queue_declare(QUEUE, durable=True)
        channel.queue_purge(QUEUE)
        channel.confirm_delivery()
        properties = pika.BasicProperties(delivery_mode=2)
        broker_before, started = rabbitmq_cpu_seconds(), time.perf_counter()
        for _ in range(messages):
            channel.basic_publish("", QUEUE, body, properties)  # blocks on its confirm (pika's way)
        published = time.perf_counter()
        channel.basic_qos(prefetch_count=WINDOW)
        consumed = 0
        for method, _properties, _body in channel.consume(QUEUE, inactivity_timeout=10):
            if method is None:
                raise RuntimeError(f"only {consumed} of {messages} messages came back within 10 s")
            consumed += 1
            channel.basic_ack(method.delivery_tag)
            if consumed == messages:
                break
        channel.cancel()
        broker_after, finished = rabbitmq_cpu_seconds(), time.perf_counter()
    finally:
        connection.close()
    if broker_before is None or broker_after is None:
        raise SystemExit("no beam.smp process found: is RabbitMQ running on this machine?")
    return {
        "broker_us_per_message": 1e6 * (broker_after - broker_before) / messages,
        "publish_s": published - started,
        "consume_s": finished - published,
    }


def main(argv: list[str] | None = None) -> dict[int, list[dict[str, float]]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[45_700, 34_300])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    vhost = create_vhost("bench-bytes")
    results: dict[int, list[dict[str, float]]] = {size: [] for size in args.sizes}
    try:
        for round_number in range(args.repeat):
            for size in args.sizes:
                result = one_round(vhost_url(vhost), size, args.messages)
                results[size].append(result)
                print(f"round {round_number + 1}, {size:,} bytes: RabbitMQ {result['broker_us_per_message']:.0f} us "
                      f"of CPU a message (publish {result['publish_s']:.1f} s, consume {result['consume_s']:.1f} s)")
    finally:
        delete_vhost(vhost)
    for size, rounds in results.items():
        figures = sorted(r["broker_us_per_message"] for r in rounds)
        print(f"median, {size:,} bytes: RabbitMQ {figures[len(figures) // 2]:.0f} us of CPU a message")
    return results


if __name__ == "__main__":
    main()
