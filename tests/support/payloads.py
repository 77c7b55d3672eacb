"""Random valid payloads like the public demos send: 1-10 preds with ~8 KB base64 frames."""

from __future__ import annotations

import base64
import random
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

HOSTILE_TAGS = ["a,b", 'quote"d', "new\nline", "cr\rhere", "=1+2", "@SUM(A1)", "-3", "ünïcødé ✓", "tab\tin", "", "'"]


def random_payload(rng: random.Random, *, frame_bytes: int = 6 * 1024, frames: Sequence[str] | None = None) -> dict:
    """A valid /api body; frames of `frame_bytes` random bytes (8 KB once in base64).

    A load client passes `frames`, a pool encoded once, so that it does not spend its CPU on base64.
    """
    created = datetime(2023, 2, 13, tzinfo=timezone.utc) + timedelta(seconds=rng.randrange(10**7))
    created_at = created.strftime("%Y-%m-%d %H:%M:%S.%f") if rng.random() < 0.5 else created.isoformat()
    preds = [
        {
            "image_frame": rng.choice(frames) if frames else random_frame(rng, frame_bytes),
            "prob": rng.random(),
            "tags": rng.sample(HOSTILE_TAGS, rng.randrange(0, 4)),
        }
        for _ in range(rng.randint(1, 10))
    ]
    return {
        "device_id": f"device-{rng.randrange(1000)}",
        "client_id": rng.choice(["acme", "=cmd|' /C calc'!A0", "client, with comma"]),
        "created_at": created_at,
        "data": {"license_id": f"lic-{rng.randrange(100)}", "preds": preds},
    }


def random_frame(rng: random.Random, frame_bytes: int = 6 * 1024) -> str:
    return base64.b64encode(rng.randbytes(frame_bytes)).decode()
