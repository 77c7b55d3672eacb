"""Imported into the workers by the crash-loop test (WORKER_EXTRA_MODULES).

A detection of device `crash-device` SIGKILLs the worker process that runs
it, as an OOM kill or a segfault would, every time it is delivered. Each
start is appended to CRASH_STARTS first, so the test can count the runs.
"""

from __future__ import annotations

import os
import signal

import actors.ingest

STARTS = os.environ["CRASH_STARTS"]
_encode_rows = actors.ingest.encode_rows


def encode_rows_or_die(message_id, payload):
    if payload.get("device_id") == "crash-device":
        with open(STARTS, "a") as starts:
            starts.write(message_id + "\n")
            starts.flush()
            os.fsync(starts.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    return _encode_rows(message_id, payload)


actors.ingest.encode_rows = encode_rows_or_die
