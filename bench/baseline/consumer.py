"""Baseline consumer: an aio_pika consumer writing one message at a time, as the demos do.

`json.loads` the body, `csv.writer.writerow` one row per pred (same columns as
ours, so the harness can check it), flush to the OS, ack. Never fsynced. For
the benchmark's latency figures it also notes `message_id time` per message in
a line-buffered side file.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import time

import aio_pika

from bench.baseline.api import QUEUE
from pipeline.rows import COLUMNS


async def main() -> None:
    csv_path = os.environ["CSV_PATH"]
    prefetch = int(os.environ.get("BASELINE_PREFETCH", "32"))
    connection = await aio_pika.connect_robust(os.environ["RABBITMQ_URL"])
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=prefetch)
    queue = await channel.declare_queue(QUEUE, durable=False)
    with open(csv_path, "a", newline="", encoding="utf-8") as out, open(f"{csv_path}.times", "a", buffering=1) as times:
        writer = csv.writer(out)
        if out.tell() == 0:
            writer.writerow(COLUMNS)
        async with queue.iterator() as messages:
            async for message in messages:
                envelope = json.loads(message.body)
                payload, message_id = envelope["payload"], envelope["message_id"]
                preds = payload["data"]["preds"]
                for index, pred in enumerate(preds):
                    writer.writerow(
                        [
                            message_id, index, len(preds), payload["device_id"], payload["client_id"],
                            payload["created_at"], payload["data"]["license_id"], repr(pred["prob"]),
                            json.dumps(pred["tags"]), pred["image_frame"],
                        ]
                    )  # fmt: skip
                out.flush()
                times.write(f"{message_id} {time.time()}\n")
                await message.ack()


if __name__ == "__main__":
    asyncio.run(main())
