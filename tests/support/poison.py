"""Imported into the workers by the poison-message test (WORKER_EXTRA_MODULES).

Makes every message of device `poison-device` fail inside the actor, as a
downstream fault would, until the file POISON_FIXED exists: the operator's fix.
Messages of `fatal-device` fail with an error the actor declares in `throws`,
which Dramatiq does not retry.
(A middleware cannot do this: Dramatiq logs and ignores errors of before-hooks.)
"""

from __future__ import annotations

import os

import actors.ingest

FIXED_MARKER = os.environ["POISON_FIXED"]
_encode_rows = actors.ingest.encode_rows


class DownstreamFault(RuntimeError):
    pass


class PermanentFault(ValueError):
    """Declared in the actor's `throws`: Dramatiq gives up at once, without retries."""


def encode_rows_or_fail(message_id, payload):
    if payload.get("device_id") == "poison-device" and not os.path.exists(FIXED_MARKER):
        raise DownstreamFault("poison-device cannot be stored until the fix")
    if payload.get("device_id") == "fatal-device":
        raise PermanentFault("fatal-device is refused for good")
    return _encode_rows(message_id, payload)


actors.ingest.encode_rows = encode_rows_or_fail
actors.ingest.write_detection_rows.options["throws"] = (PermanentFault,)
