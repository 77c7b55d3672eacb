"""The Dramatiq floor's worker module (`dramatiq bench.floor_worker`, started by bench/floor.py).

A stock RabbitmqBroker and one actor that does nothing but write one byte, so the run can count
the messages taken; or, as the "sink" rung, that also writes the payload's rows through our sink
(group commit, fsync, ledger), as the ingest actor does. Messages are decoded with our encoder.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import CurrentMessage

from bench.floor import ACTOR, QUEUE, our_encoder
from pipeline.csv_sink import CsvSink
from pipeline.rows import encode_rows


#: "none": no middleware at all; "defaults": Dramatiq's own list (AgeLimit ... Retries); "sink": our
#: rows and sink (pipeline/), with only CurrentMessage, for the message id they are written under.
_variant = os.environ["FLOOR_MIDDLEWARE"]
_middleware = {"none": [], "defaults": None, "sink": [CurrentMessage()]}[_variant]
dramatiq.set_encoder(our_encoder())
dramatiq.set_broker(RabbitmqBroker(url=os.environ["FLOOR_RABBITMQ_URL"], middleware=_middleware))
#: Opened before the CLI forks its processes: every process appends to the one file, a byte a message.
_taken = os.open(os.environ["FLOOR_TAKEN"], os.O_WRONLY | os.O_APPEND)
_sink = CsvSink(os.environ["FLOOR_CSV"]) if _variant == "sink" else None


@dramatiq.actor(actor_name=ACTOR, queue_name=QUEUE)
def floor_noop(payload: dict) -> None:
    if _sink is not None:
        message_id = CurrentMessage.get_current_message().message_id
        data, rows = encode_rows(message_id, payload)
        _sink.append(message_id, data, rows)
    os.write(_taken, b"x")
