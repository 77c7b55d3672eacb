"""Dramatiq messages as JSON, encoded and decoded with orjson.

The payloads carry ~8 KB base64 frames, so the standard library's json was a
visible share of the API's and the workers' CPU. The bytes are still plain
JSON, so either side can read messages written by Dramatiq's JSONEncoder.
"""

from __future__ import annotations

import orjson
from dramatiq.encoder import Encoder, MessageData
from dramatiq.errors import DecodeError


class OrjsonEncoder(Encoder):
    def encode(self, data: MessageData) -> bytes:
        return orjson.dumps(data)

    def decode(self, data: bytes) -> MessageData:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as error:
            # The size, not the bytes: this text reaches logs, and logs never carry payloads.
            raise DecodeError(f"failed to decode a message of {len(data)} bytes: {error}", data, error) from None
