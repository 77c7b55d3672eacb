"""Imported into the workers by a fault test (WORKER_EXTRA_MODULES).

SIGKILLs its worker process once, right after a message's rows are committed
and before Dramatiq acks it: the worst moment for exactly-once. The killed
message's id is written to CRASH_MARKER, which also stops any further kill.
"""

from __future__ import annotations

import os
import signal
import threading

import dramatiq
from dramatiq.middleware import Middleware

MARKER = os.environ["CRASH_MARKER"]
AFTER_MESSAGES = int(os.environ.get("CRASH_AFTER_MESSAGES", "20"))


class CrashBeforeAck(Middleware):
    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if message.actor_name != "write_detection_rows" or exception is not None:
            return
        with self.lock:
            self.count += 1
            if self.count < AFTER_MESSAGES:
                return
            try:
                marker = os.open(MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(marker, message.message_id.encode())
            os.fsync(marker)
            os.kill(os.getpid(), signal.SIGKILL)


dramatiq.get_broker().add_middleware(CrashBeforeAck())
